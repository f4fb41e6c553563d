"""alpha-CROWN optimises McCormick planes of products (convex combinations of the two lower and
the two upper planes, per row and element): tighter where the planes matter, every sampled
float32 point inside, and the exact checker re-derives the mixtures and rejects bad weights or
planes."""

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds import Box, Certificate, check


def _net(seed):
    rng = np.random.default_rng(seed)
    A = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    B = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    return lambda z: c @ ((A @ z + 0.3) * jnp.tanh(B @ z - 0.2))


def _box(seed, width=0.7):
    rng = np.random.default_rng(100 + seed)
    lo = rng.uniform(-1, 0.5, 3).astype(np.float32)
    return Box(jnp.asarray(lo), jnp.asarray(lo + width * rng.uniform(0.3, 1.0, 3), jnp.float32))


def _samples(f, box, n=20000, seed=0):
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    pts = lo + np.random.default_rng(seed).uniform(size=(n, lo.size)).astype(np.float32) * (hi - lo)
    return np.asarray(jax.jit(jax.vmap(f))(jnp.asarray(pts, jnp.float32)))


def _tamper(c, edit):
    d = {f.name: copy.deepcopy(getattr(c, f.name)) for f in dataclasses.fields(c)}
    edit(d)
    return Certificate(**d)


def test_weights_tighten_a_product_and_the_certificate_holds():
    """Measured on this net and box: upper bound of the first output 3.414 (CROWN) -> 2.626
    (alpha-CROWN with McCormick weights), sampled maximum 2.321."""
    f = _net(1)
    box = Box(jnp.asarray([0.2, -0.5, 0.1], jnp.float32), jnp.asarray([0.9, 0.3, 0.6], jnp.float32))
    cr = tljax.bound(f, box, method="crown")
    al = tljax.bound(f, box, method="alpha-crown", certificate=True)
    v = _samples(f, box)
    assert np.all(v >= np.asarray(al.lower)) and np.all(v <= np.asarray(al.upper))
    assert np.all(np.asarray(al.lower) >= np.asarray(cr.lower))
    assert np.all(np.asarray(al.upper) <= np.asarray(cr.upper))
    gap_cr = float(cr.upper[0]) - v[:, 0].max()
    gap_al = float(al.upper[0]) - v[:, 0].max()
    assert gap_al < 0.5 * gap_cr
    rep = check(al.certificate, f)
    assert rep.accepted, rep.reason
    keys = [k for p in al.certificate.passes for k, w in p["alphas"].items() if w.ndim == 3]
    assert keys, "no McCormick weights recorded"


@pytest.mark.parametrize("seed", range(6))
def test_weighted_planes_contain_samples(seed):
    f = _net(seed)
    box = _box(seed)
    b = tljax.bound(f, box, method="alpha-crown", alpha_iters=30)
    v = _samples(f, box, seed=seed)
    assert np.all(v >= np.asarray(b.lower)) and np.all(v <= np.asarray(b.upper))


@pytest.mark.long  # 30-50 s: the alpha-CROWN compile of a derivative program
def test_derivative_program_products_tighten():
    """A Burgers-like residual u_t + u u_x - 0.01 u_xx of a 6-unit tanh net (forward mode: the
    products u u_x and those inside u_xx): measured width 0.1714 (CROWN) -> 0.1487."""
    rng = np.random.default_rng(1)
    W1 = jnp.asarray(rng.normal(size=(6, 2)) * 2.0)
    b1 = jnp.asarray(rng.normal(size=6))
    w3 = jnp.asarray(rng.normal(size=6))

    def u(w):
        return w3 @ jnp.tanh(W1 @ w + b1)

    def f(z):
        ex, et = jnp.asarray([0.0, 1.0]), jnp.asarray([1.0, 0.0])
        (v, vx), (_, vxx) = jax.jvp(lambda w: jax.jvp(u, (w,), (ex,)), (z,), (ex,))
        vt = jax.jvp(u, (z,), (et,))[1]
        return (vt + v * vx - 0.01 * vxx).reshape(1)

    with jax.enable_x64(True):
        box = Box(jnp.asarray([0.2, -0.3]), jnp.asarray([0.3, -0.2]))
        cr = tljax.bound(f, box, method="crown", float_format="real")
        al = tljax.bound(f, box, method="alpha-crown", float_format="real")
        lo, hi = np.asarray(box.lower), np.asarray(box.upper)
        pts = lo + np.random.default_rng(0).uniform(size=(20000, 2)) * (hi - lo)
        v = np.asarray(jax.vmap(f)(jnp.asarray(pts)))
    assert np.all(v >= np.asarray(al.lower)) and np.all(v <= np.asarray(al.upper))
    assert float(al.upper[0] - al.lower[0]) < 0.95 * float(cr.upper[0] - cr.lower[0])


def test_tampered_weights_and_planes_rejected():
    f = _net(1)
    box = Box(jnp.asarray([0.2, -0.5, 0.1], jnp.float32), jnp.asarray([0.9, 0.3, 0.6], jnp.float32))
    c = tljax.bound(f, box, method="alpha-crown", certificate=True).certificate
    k, key = next(
        (k, key) for k, p in enumerate(c.passes) for key, w in p["alphas"].items() if w.ndim == 3
    )
    i = key.split(":")[1]

    def weight_over_one(d):
        d["passes"][k]["alphas"][key][0, 0, 0] = 1.5

    def weight_negative(d):
        d["passes"][k]["alphas"][key][0, 1, 0] = -0.25

    res = check(_tamper(c, weight_over_one), f)
    assert not res.accepted and "outside [0, 1]" in res.reason, res.reason
    res = check(_tamper(c, weight_negative), f)
    assert not res.accepted and "outside [0, 1]" in res.reason, res.reason
    # the B planes (arrays 6-8 lower, 9-11 upper) are checked at the corners like the A planes
    for a, what in [(8, "lower plane"), (11, "upper plane")]:

        def edit(d, a=a):
            d["passes"][k]["relax"][i][a][0] += 1e-2 if a == 8 else -1e-2

        res = check(_tamper(c, edit), f)
        assert not res.accepted and f"mul equation {i} index 0: {what}" in res.reason, res.reason
