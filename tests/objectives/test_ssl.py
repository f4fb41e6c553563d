"""Self-supervised objectives against numpy re-implementations, closed forms and the claims."""

import doctest
import re
from fractions import Fraction

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tljax.proofs.claims.objectives as oc
from tljax.core import InputError
from tljax.objectives import _ssl
from tljax.objectives._ssl import (
    barlow_twins_cross_correlation,
    barlow_twins_loss,
    barlow_twins_loss_from_correlation,
    ema_target,
    ema_update,
    jepa_loss,
    jepa_predictive_loss,
    mae_loss,
    mae_num_kept,
    mae_random_masking,
    patchify,
    vicreg_covariance_term,
    vicreg_loss,
    vicreg_terms,
    vicreg_variance_term,
)
from tljax.proofs import registry, run_claim

# ------------------------------------------------------------------------------------------------
# MAE
# ------------------------------------------------------------------------------------------------


def test_patchify_matches_loops():
    img = np.arange(4 * 6 * 2, dtype=np.float32).reshape(4, 6, 2)
    got = np.asarray(patchify(jnp.asarray(img), 2))
    want = [
        img[r : r + 2, c : c + 2, :].reshape(-1) for r in range(0, 4, 2) for c in range(0, 6, 2)
    ]
    np.testing.assert_array_equal(got, np.stack(want))
    with pytest.raises(InputError, match=re.escape("image sides (4, 6) must be multiples")):
        patchify(img, 4)


@pytest.mark.parametrize(
    "length, ratio, kept",
    [
        (196, 0.75, 49),
        (10, 0.15, 8),
        (6, 0.75, 2),
        (2, 0.75, 0),
        (10, 0.25, 8),
        (7, 0.5, 4),
        (5, 0.5, 2),
        (3, 0.0, 3),
        (3, 1.0, 0),
        (10, Fraction(1, 3), 7),
    ],
)
def test_mae_num_kept_rounds_half_to_even_on_the_decimal(length, ratio, kept):
    # Expected values by hand: 196*0.25 = 49; 10*0.85 = 8.5 -> 8; 6*0.25 = 1.5 -> 2;
    # 2*0.25 = 0.5 -> 0; 7*0.5 = 3.5 -> 4; 5*0.5 = 2.5 -> 2; 10*2/3 = 6.67 -> 7.
    assert mae_num_kept(length, ratio) == kept


def test_mae_num_kept_errors():
    with pytest.raises(InputError, match="mask_ratio must lie in \\[0, 1\\]"):
        mae_num_kept(10, 1.5)
    with pytest.raises(InputError, match="positive int"):
        mae_num_kept(0, 0.5)
    with pytest.raises(InputError, match="finite"):
        mae_num_kept(10, float("nan"))


@pytest.mark.parametrize("length", [1, 2, 7, 49, 196])
def test_mae_random_masking_jax_path_counts(length):
    # The JAX path on a sample of lengths, all 20 ratios (the claim covers 1..256 via numpy).
    key = jax.random.key(length)
    for k in range(20):
        ratio = k / 20
        info = mae_random_masking(key, length, ratio)
        kept = mae_num_kept(length, ratio)
        assert info.keep_indices.shape == (kept,)
        assert info.masked_indices.shape == (length - kept,)
        assert int(info.mask.sum()) == length - kept
        m = np.asarray(info.mask)
        assert (
            not m[np.asarray(info.keep_indices)].any() and m[np.asarray(info.masked_indices)].all()
        )


def test_mae_masking_restores_order_and_is_per_key():
    info = mae_random_masking(jax.random.key(0), 16, 0.75)
    order = jnp.concatenate([info.keep_indices, info.masked_indices])
    assert sorted(np.asarray(order).tolist()) == list(range(16))
    np.testing.assert_array_equal(np.asarray(order[info.ranks]), np.arange(16))
    batch = jax.vmap(lambda k: mae_random_masking(k, 16, 0.75))(
        jax.random.split(jax.random.key(1), 8)
    )
    assert batch.mask.shape == (8, 16)
    np.testing.assert_array_equal(np.asarray(batch.mask.sum(1)), np.full(8, 12))
    assert len({tuple(r) for r in np.asarray(batch.keep_indices).tolist()}) > 1
    again = jax.vmap(lambda k: mae_random_masking(k, 16, 0.75))(
        jax.random.split(jax.random.key(1), 8)
    )
    np.testing.assert_array_equal(np.asarray(again.mask), np.asarray(batch.mask))


def _mae_loss_numpy(pred, target, mask, norm):
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    total, count = 0.0, 0
    for i in range(len(mask)):
        if not mask[i]:
            continue
        tgt = target[i]
        if norm:
            mean = tgt.sum() / tgt.size
            var = ((tgt - mean) ** 2).sum() / (tgt.size - 1)
            tgt = (tgt - mean) / np.sqrt(var + 1e-6)
        total += ((pred[i] - tgt) ** 2).mean()
        count += 1
    return total / count


@pytest.mark.parametrize("norm", [False, True])
def test_mae_loss_matches_numpy_and_ignores_visible_patches(norm):
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(10, 12)), rng.normal(2.0, 3.0, size=(10, 12))
    mask = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0], dtype=bool)
    got = float(
        mae_loss(
            jnp.asarray(pred, jnp.float32),
            jnp.asarray(target, jnp.float32),
            mask,
            norm_pix_loss=norm,
        )
    )
    np.testing.assert_allclose(got, _mae_loss_numpy(pred, target, mask, norm), rtol=1e-5)
    pred2 = pred.copy()
    pred2[~mask] += 100.0
    got2 = float(
        mae_loss(
            jnp.asarray(pred2, jnp.float32),
            jnp.asarray(target, jnp.float32),
            mask,
            norm_pix_loss=norm,
        )
    )
    assert got2 == pytest.approx(got, rel=1e-6)


def test_mae_loss_with_nothing_masked_is_zero_and_differentiable():
    x = jnp.ones((4, 3))
    assert float(mae_loss(x, 2 * x, jnp.zeros(4, bool))) == 0.0
    g = jax.grad(lambda p: mae_loss(p, 2 * x, jnp.zeros(4, bool)))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    with pytest.raises(InputError, match="mask of shape \\(L,\\)"):
        mae_loss(x, x, jnp.zeros(3, bool))


# ------------------------------------------------------------------------------------------------
# JEPA
# ------------------------------------------------------------------------------------------------


def test_jepa_losses_match_numpy():
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) * 2
    d = p - t
    np.testing.assert_allclose(
        float(jepa_loss(jnp.asarray(p), jnp.asarray(t))), np.mean(d**2), rtol=1e-5
    )
    for beta in (0.5, 1.0, 3.0):
        want = np.mean(
            [0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta for x in d.ravel()]
        )
        got = jepa_loss(jnp.asarray(p), jnp.asarray(t), kind="smooth_l1", beta=beta)
        np.testing.assert_allclose(float(got), want, rtol=1e-5)
    tn = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5)
    got = jepa_loss(jnp.asarray(p), jnp.asarray(t), normalize_targets=True)
    np.testing.assert_allclose(float(got), np.mean((p - tn) ** 2), rtol=1e-4)


def test_jepa_gradient_never_reaches_the_target_encoder():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(2), 4)
    ctx = eqx.nn.Linear(3, 4, key=k1)
    pred = eqx.nn.Linear(4, 4, key=k2)
    tgt = eqx.nn.Linear(3, 4, key=k3)
    x = jax.random.normal(k4, (3,))

    def loss(models):
        c, p, t = models
        return jepa_predictive_loss(c, p, t, x, 2 * x, kind="smooth_l1")

    grads = eqx.filter_grad(loss)((ctx, pred, tgt))
    assert float(jnp.abs(grads[0].weight).sum()) > 0 and float(jnp.abs(grads[1].weight).sum()) > 0
    assert (
        float(jnp.abs(grads[2].weight).sum()) == 0.0 and float(jnp.abs(grads[2].bias).sum()) == 0.0
    )
    # Also for the bare loss: d/d targets is zero.
    g = jax.grad(lambda t: jepa_loss(jnp.ones(3), t))(jnp.zeros(3))
    np.testing.assert_array_equal(np.asarray(g), np.zeros(3))


def test_ema_update_and_pair():
    target = {"w": jnp.array([1.0, 2.0]), "n": 3}
    online = {"w": jnp.array([3.0, 6.0]), "n": 7}
    new = ema_update(target, online, 0.75)
    np.testing.assert_allclose(np.asarray(new["w"]), [1.5, 3.0])
    assert new["n"] == 3  # non-array leaves come from the target
    g = jax.grad(lambda o: ema_update({"w": jnp.zeros(2)}, {"w": o}, 0.5)["w"].sum())(jnp.ones(2))
    np.testing.assert_array_equal(np.asarray(g), np.zeros(2))

    ema = ema_target(optax.linear_schedule(0.5, 1.0, 2))
    st = ema.init({"w": jnp.zeros(2)})
    st = jax.jit(ema.update)({"w": jnp.ones(2)}, st)  # decay 0.5
    st = ema.update({"w": jnp.ones(2)}, st)  # decay 0.75
    np.testing.assert_allclose(np.asarray(st.params["w"]), [0.625, 0.625])
    assert int(st.count) == 2


def test_jepa_errors():
    with pytest.raises(InputError, match="kind must be 'l2' or 'smooth_l1'"):
        jepa_loss(jnp.ones(2), jnp.ones(2), kind="l1")
    with pytest.raises(InputError, match="same shape"):
        jepa_loss(jnp.ones(2), jnp.ones(3))


# ------------------------------------------------------------------------------------------------
# VICReg and Barlow Twins
# ------------------------------------------------------------------------------------------------


def _vicreg_numpy(za, zb, conv):
    za, zb = np.asarray(za, np.float64), np.asarray(zb, np.float64)
    _n, d = za.shape
    inv = np.mean((za - zb) ** 2)

    def var_term(z):
        std = np.sqrt(np.var(z, axis=0, ddof=1) + 1e-4)
        return np.mean(np.maximum(0.0, 1.0 - std))

    def cov_term(z):
        c = np.cov(z, rowvar=False)  # unbiased, written independently
        return (np.sum(c**2) - np.sum(np.diag(c) ** 2)) / d

    v = var_term(za) + var_term(zb)
    v = v / 2 if conv == "official" else v
    cov = cov_term(za) + cov_term(zb)
    return inv, v, cov, 25 * inv + 25 * v + cov


@pytest.mark.parametrize("conv", ["official", "paper"])
def test_vicreg_matches_numpy(conv):
    rng = np.random.default_rng(3)
    za = rng.normal(size=(32, 8)) * np.linspace(0.2, 2.0, 8)
    zb = za + 0.3 * rng.normal(size=(32, 8))
    got = vicreg_terms(
        jnp.asarray(za, jnp.float32), jnp.asarray(zb, jnp.float32), variance_convention=conv
    )
    want = _vicreg_numpy(za, zb, conv)
    np.testing.assert_allclose([float(x) for x in got], want, rtol=1e-4)
    assert float(
        vicreg_loss(jnp.asarray(za), jnp.asarray(zb), variance_convention=conv)
    ) == pytest.approx(want[3], rel=1e-4)


def test_vicreg_paper_variance_is_twice_official():
    z = jax.random.normal(jax.random.key(4), (16, 5)) * 0.3
    off = vicreg_terms(z, z * 0.5).variance
    pap = vicreg_terms(z, z * 0.5, variance_convention="paper").variance
    np.testing.assert_allclose(float(pap), 2 * float(off), rtol=1e-6)


def test_vicreg_default_collapse_closed_form():
    # All rows equal: Var = 0, std = sqrt(1e-4) = 0.01, loss = 25 * (1 - 0.01) = 24.75.
    z = jnp.tile(jnp.array([[0.3, -1.0, 2.0]]), (8, 1))
    t = vicreg_terms(z, z)
    assert float(t.invariance) == 0.0 and float(t.covariance) == 0.0
    np.testing.assert_allclose(float(t.loss), 24.75, rtol=1e-6)
    np.testing.assert_allclose(
        float(vicreg_terms(z, z, variance_convention="paper").loss), 49.5, rtol=1e-6
    )


def test_vicreg_single_branch_terms():
    z = jnp.array([[0.0, 0.0], [2.0, 2.0]])
    # Var = 2 per dim, std = sqrt(2.0001) > 1: variance term 0; covariance C_01 = 2: c = 2*4/2 = 4.
    assert float(vicreg_variance_term(z)) == 0.0
    np.testing.assert_allclose(float(vicreg_covariance_term(z)), 4.0, rtol=1e-6)
    with pytest.raises(InputError, match="n >= 2"):
        vicreg_variance_term(jnp.ones((1, 3)))
    with pytest.raises(InputError, match="variance_convention"):
        vicreg_terms(z, z, variance_convention="mean")


def _barlow_numpy(za, zb, lam=0.0051, eps=1e-5):
    za, zb = np.asarray(za, np.float64), np.asarray(zb, np.float64)
    n, d = za.shape

    def bn(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)  # biased variance

    c = np.einsum("ni,nj->ij", bn(za), bn(zb)) / n
    loss = sum((1 - c[i, i]) ** 2 for i in range(d))
    loss += lam * sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return c, loss


def test_barlow_twins_matches_numpy():
    rng = np.random.default_rng(5)
    za = rng.normal(size=(64, 6)) * 3 + 1
    zb = za + rng.normal(size=(64, 6))
    c_want, loss_want = _barlow_numpy(za, zb)
    fa, fb = jnp.asarray(za, jnp.float32), jnp.asarray(zb, jnp.float32)
    np.testing.assert_allclose(
        np.asarray(barlow_twins_cross_correlation(fa, fb)), c_want, atol=1e-5
    )
    np.testing.assert_allclose(float(barlow_twins_loss(fa, fb)), loss_want, rtol=1e-4)


def test_barlow_twins_is_invariant_to_per_dimension_affine_maps():
    z = jax.random.normal(jax.random.key(6), (128, 4))
    w = z + 0.5 * jax.random.normal(jax.random.key(7), (128, 4))
    scale, shift = jnp.array([0.5, 2.0, 10.0, 3.0]), jnp.array([1.0, -4.0, 0.0, 7.0])
    a = barlow_twins_loss(z, w, eps=0.0)
    b = barlow_twins_loss(z * scale + shift, w, eps=0.0)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-4)


def test_barlow_default_collapse_closed_form():
    z = jnp.tile(jnp.array([[0.3, -1.0, 2.0, 5.0]]), (8, 1))
    assert float(barlow_twins_loss(z, z)) == 4.0  # C = 0 exactly, loss = d
    with pytest.raises(InputError, match="square matrix"):
        barlow_twins_loss_from_correlation(jnp.ones((2, 3)))
    with pytest.raises(InputError, match="two branches have shapes"):
        barlow_twins_loss(jnp.ones((4, 2)), jnp.ones((4, 3)))


def test_losses_under_jit_and_strict_promotion():
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        z = jax.random.normal(jax.random.key(8), (16, 4))
        assert jnp.isfinite(jax.jit(vicreg_loss)(z, z + 1.0))
        assert jnp.isfinite(jax.jit(barlow_twins_loss)(z, z + 1.0))
        assert jnp.isfinite(jax.jit(lambda a, b: jepa_loss(a, b, kind="smooth_l1"))(z, z))
        info = mae_random_masking(jax.random.key(0), 16, 0.5)
        assert jnp.isfinite(jax.jit(mae_loss)(z, 2 * z, info.mask))


# ------------------------------------------------------------------------------------------------
# Claims
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", oc.CLAIMS, ids=lambda c: c.name)
def test_claim_holds(c):
    r = run_claim(c)
    assert r.error is None, r.error
    assert r.holds, r.evidence
    assert registry()[c.name] is c and "ssl" in c.tags


def test_biased_variance_is_refuted():
    def biased(z, *, gamma, eps):
        std = jnp.sqrt(jnp.var(z, axis=0) + eps)
        return jnp.mean(jnp.maximum(gamma - std, 0.0))

    ev = oc.check_vicreg_variance_zero_iff(biased)
    assert not ev.holds and ev.counterexample is not None
    assert "gamma^2" in ev.counterexample


def test_strict_hinge_is_refuted_on_the_boundary():
    # A variant that treats std == gamma as a violation (">" instead of ">=").
    def strict(z, *, gamma, eps):
        std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
        return jnp.mean(jnp.where(std > gamma, 0.0, 1.0))

    ev = oc.check_vicreg_variance_zero_iff(strict)
    assert not ev.holds and "boundary" in ev.detail


def test_truncating_kept_count_is_refuted():
    # The official MAE code's int() truncation disagrees with round(): first at L=1, ratio 0.05
    # (0.95 -> round 1, int 0).
    ev = oc.check_mae_counts(lambda n, r: int(n * (1 - r)))
    assert not ev.holds
    assert (ev.counterexample["L"], ev.counterexample["num_kept"], ev.counterexample["want"]) == (
        1,
        0,
        1,
    )


def test_wrong_barlow_loss_is_refuted():
    def no_lambda(c, *, lambda_):
        return barlow_twins_loss_from_correlation(c, lambda_=1.0)

    ev = oc.check_barlow_identity(loss_from_correlation=no_lambda)
    assert not ev.holds and ev.counterexample["i"] != ev.counterexample["j"]


def test_wrong_collapse_prediction_is_refuted():
    def paper_by_default(za, zb, **kw):
        kw["variance_convention"] = (
            "paper" if kw.get("variance_convention") == "official" else "official"
        )
        return vicreg_terms(za, zb, **kw)

    ev = oc.check_collapse(terms=paper_by_default)
    assert not ev.holds and "complete collapse" in ev.counterexample["case"]


def test_docstring_examples():
    result = doctest.testmod(_ssl, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
