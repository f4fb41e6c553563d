"""Certified training (IBP / CROWN-IBP) on scikit-learn's bundled digits (no download)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tljax.layers as tl
from tljax.objectives._certified import (
    apply_model,
    beta_schedule,
    certified_loss,
    certify,
    crown_ibp_loss,
    eps_schedule,
    ibp_loss,
    kappa_schedule,
    margin_lower_bounds,
    margin_spec,
)
from tljax.objectives._losses import cross_entropy
from tljax.objectives._training import train


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:1437], perm[1437:]
    return tuple(jnp.asarray(a) for a in (x[tr], y[tr], x[te], y[te]))


def test_schedules_are_pure_functions_of_the_step():
    assert float(eps_schedule(0, 0.05, 10, 20)) == 0.0
    assert float(eps_schedule(10, 0.05, 10, 20)) == 0.0
    assert float(eps_schedule(20, 0.05, 10, 20)) == pytest.approx(0.025)
    assert float(eps_schedule(1000, 0.05, 10, 20)) == pytest.approx(0.05)
    assert float(kappa_schedule(0, 10, 20)) == 1.0
    assert float(kappa_schedule(30, 10, 20)) == pytest.approx(0.5)
    assert float(beta_schedule(5, 10, 20)) == 1.0
    assert float(beta_schedule(40, 10, 20)) == 0.0
    # traceable: a jitted schedule of a traced step
    assert float(jax.jit(lambda s: eps_schedule(s, 0.1, 0, 10))(jnp.int32(5))) == pytest.approx(
        0.05
    )


def test_margin_spec():
    c = margin_spec(jnp.array([2, 0]), 4)
    z = jnp.array([1.0, 2.0, 5.0, 3.0])
    np.testing.assert_allclose(c[0] @ z, [4.0, 3.0, 0.0, 2.0])
    np.testing.assert_allclose(c[1] @ z, [0.0, -1.0, -4.0, -2.0])


def test_losses_are_sound_and_ordered(digits):
    xtr, ytr, _, _ = digits
    m = tl.MLP(64, [32], 10, key=jax.random.key(0))
    x, y = xtr[:32], ytr[:32]
    natural = cross_entropy(jax.vmap(m)(x), y, reduction="none")
    for eps in (0.0, 0.02):
        ibp = ibp_loss(apply_model, m, x, y, eps, reduction="none", float_sound=True)
        cibp = crown_ibp_loss(apply_model, m, x, y, eps, 1.0, reduction="none", float_sound=True)
        assert bool(jnp.all(ibp >= natural)), (eps, float(jnp.min(ibp - natural)))
        assert bool(jnp.all(cibp >= natural))
        assert bool(jnp.all(cibp <= ibp + 1e-6))  # CROWN-IBP is at least as tight as IBP
    # float_sound=False (training mode): sound up to float32 rounding
    ibp = ibp_loss(apply_model, m, x, y, 0.02, reduction="none")
    assert bool(jnp.all(ibp >= natural - 1e-5))
    # bound ordering of the margins: IBP <= CROWN-IBP <= CROWN (lower bounds)
    lo = {
        k: margin_lower_bounds(apply_model, m, x, y, 0.02, method=k)
        for k in ("ibp", "crown-ibp", "crown")
    }
    assert bool(jnp.all(lo["ibp"] <= lo["crown-ibp"] + 1e-5))
    assert bool(jnp.all(lo["crown-ibp"] <= lo["crown"] + 1e-4))


def test_losses_are_differentiable(digits):
    xtr, ytr, _, _ = digits
    m = tl.MLP(64, [32], 10, key=jax.random.key(0))
    x, y = xtr[:16], ytr[:16]
    for f in (
        lambda p: ibp_loss(apply_model, p, x, y, 0.05),
        lambda p: crown_ibp_loss(apply_model, p, x, y, 0.05, 0.5),
    ):
        g = jax.jit(jax.grad(f))(m)
        leaves = jax.tree_util.tree_leaves(g)
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
        assert sum(float(jnp.abs(a).sum()) for a in leaves) > 0

    # matches finite differences along a random direction
    def f(p):
        return ibp_loss(apply_model, p, x, y, 0.05)

    g = jax.grad(f)(m)
    d = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.key(3), a.shape), m)
    h = 1e-2
    plus = jax.tree_util.tree_map(lambda a, b: a + h * b, m, d)
    minus = jax.tree_util.tree_map(lambda a, b: a - h * b, m, d)
    fd = (float(f(plus)) - float(f(minus))) / (2 * h)
    an = sum(
        float(jnp.vdot(a, b))
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(d), strict=True)
    )
    assert fd == pytest.approx(an, rel=0.05, abs=1e-2)


def test_ibp_training_certifies_more(digits):
    xtr, ytr, xte, yte = digits
    opt = optax.adam(3e-3)
    kw = dict(epochs=8, batch_size=64, key=jax.random.key(1), progress=False)
    init = tl.MLP(64, [64], 10, key=jax.random.key(0))

    def natural(model, batch, key):
        return cross_entropy(jax.vmap(model)(batch[0]), batch[1])

    std, _, _ = train(init, natural, opt, (xtr, ytr), **kw)
    loss = certified_loss(apply_model, method="ibp", eps=0.1, warmup_steps=22, ramp_steps=88)
    (rob, steps), _, _ = train(init, loss, opt, (xtr, ytr), state=jnp.int32(0), **kw)
    assert int(steps) == 8 * 22
    x, y = xte[:128], yte[:128]
    acc = float(jnp.mean(jnp.argmax(jax.vmap(rob)(x), -1) == y))
    # Float-sound IBP certification: a standard-trained net is hardly IBP-certifiable at 0.05,
    # the IBP-trained one largely is. (Float-sound CROWN already certifies most test points of
    # a small standard-trained MLP at 0.05 on digits, see bench/certified_training.py.)
    c_std = float(np.mean(certify(apply_model, std, x, y, 0.05, method="ibp")))
    c_rob = float(np.mean(certify(apply_model, rob, x, y, 0.05, method="ibp")))
    c_rob_crown = float(np.mean(certify(apply_model, rob, x, y, 0.05)))
    assert acc > 0.7
    assert c_rob > c_std + 0.3, (c_std, c_rob)
    assert c_rob_crown >= c_rob - 1e-9  # CROWN certifies at least what IBP does here
