"""Linear recurrences, DiagonalSSM, selective_scan, SelectiveSSM and MambaBlock."""

import cmath
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax.layers as tl


def randn(seed, shape):
    """Standard normal test data from numpy (jax.random would compile a kernel per shape)."""
    if not isinstance(seed, int):  # a PRNG key: derive a seed from its bits
        seed = int(np.asarray(jax.random.key_data(seed)).sum())
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def randbool(seed, p, shape):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def fraction_recurrence(a, b, h0):
    """h_t = a_t h_{t-1} + b_t elementwise, exactly (Fractions or Python complex of Fractions)."""
    h, out = h0, []
    for a_t, b_t in zip(a, b, strict=True):
        h = [x * y + z for x, y, z in zip(a_t, h, b_t, strict=True)]
        out.append(h)
    return out


def dyadic(rng, shape, choices):
    return rng.choice(np.array(choices, np.float32), size=shape)


def test_recurrences_agree_exactly_with_fractions_on_dyadic_inputs():
    rng = np.random.default_rng(0)
    L, D = 12, 5
    # a in {0, ±1/2, ±1}, b in multiples of 1/8: every product and sum fits in float32 exactly.
    a = dyadic(rng, (L, D), [-1.0, -0.5, 0.0, 0.5, 1.0])
    b = dyadic(rng, (L, D), np.arange(-8, 9) / 8)
    h0 = dyadic(rng, (D,), np.arange(-8, 9) / 8)
    seq = np.asarray(jax.jit(tl.linear_recurrence_sequential)(a, b, h0))
    par = np.asarray(jax.jit(tl.linear_recurrence_parallel)(a, b, h0))

    def F(x):
        return Fraction(float(x))

    exact = fraction_recurrence(
        [[F(x) for x in row] for row in a], [[F(x) for x in row] for row in b], [F(x) for x in h0]
    )
    assert [[F(x) for x in row] for row in seq] == exact
    assert [[F(x) for x in row] for row in par] == exact


def test_recurrences_agree_exactly_for_complex_dyadic_inputs():
    rng = np.random.default_rng(1)
    L, D = 9, 3
    units = [1, -1, 1j, -1j, 0.5, 0.5j, 0]
    a = np.array(rng.choice(units, size=(L, D)), np.complex64)
    b = (
        dyadic(rng, (L, D), np.arange(-4, 5) / 4) + 1j * dyadic(rng, (L, D), np.arange(-4, 5) / 4)
    ).astype(np.complex64)
    h0 = np.zeros(D, np.complex64)
    seq = np.asarray(tl.linear_recurrence_sequential(a, b, h0))
    par = np.asarray(tl.linear_recurrence_parallel(a, b, h0))

    # Exact reference with Gaussian rationals (pairs of Fractions).
    def F(z):
        return (Fraction(float(z.real)), Fraction(float(z.imag)))

    h = [(Fraction(0), Fraction(0))] * D
    for t in range(L):
        new = []
        for d in range(D):
            (ar, ai), (hr, hi), (br, bi) = F(a[t, d]), h[d], F(b[t, d])
            new.append((ar * hr - ai * hi + br, ar * hi + ai * hr + bi))
        h = new
        assert [F(z) for z in seq[t]] == h
        assert [F(z) for z in par[t]] == h


def test_recurrences_agree_on_random_floats_and_broadcast_h0():
    a = 0.75 + 0.25 * jnp.tanh(randn(0, (64, 4, 3)))
    b = randn(jax.random.key(1), (64, 4, 3))
    seq, par = jax.jit(
        lambda a, b: (
            tl.linear_recurrence_sequential(a, b, 1.0),
            tl.linear_recurrence_parallel(a, b, 1.0),
        )
    )(a, b)
    np.testing.assert_allclose(seq, par, rtol=1e-5, atol=1e-5)
    # Independent loop in float64.
    h = np.ones((4, 3))
    for t in range(64):
        h = np.asarray(a[t], np.float64) * h + np.asarray(b[t], np.float64)
    np.testing.assert_allclose(seq[-1], h, rtol=1e-4, atol=1e-4)
    assert "associative" not in str(jax.make_jaxpr(tl.linear_recurrence_sequential)(a, b, 1.0))
    assert "scan" in str(jax.make_jaxpr(tl.linear_recurrence_sequential)(a, b, 1.0))


def test_recurrence_shape_errors():
    with pytest.raises(ValueError, match=r"must broadcast to b \(4, 3\)"):
        tl.linear_recurrence_parallel(jnp.ones((4, 2)), jnp.ones((4, 3)), 0.0)


def diagonal_ssm_reference(ssm, u):
    """Complex128 numpy reference of ZOH discretisation and the recurrence."""
    dt = np.exp(np.asarray(ssm.log_dt, np.float64))[:, None]
    a = -np.exp(np.asarray(ssm.log_neg_a, np.float64))
    if ssm.a_imag is not None:
        a = a + 1j * np.asarray(ssm.a_imag, np.float64)
        b = np.asarray(ssm.b_real, np.float64) + 1j * np.asarray(ssm.b_imag, np.float64)
        c = np.asarray(ssm.c_real, np.float64) + 1j * np.asarray(ssm.c_imag, np.float64)
    else:
        b, c = np.asarray(ssm.b_real, np.float64), np.asarray(ssm.c_real, np.float64)
    abar = np.exp(dt * a)
    bbar = (abar - 1) / a * b
    x = np.zeros_like(abar)
    ys = []
    for u_t in np.asarray(u, np.float64):
        x = abar * x + bbar * u_t[:, None]
        y = (c * x).sum(-1)
        ys.append((2 * y.real if ssm.a_imag is not None else y) + np.asarray(ssm.d) * u_t)
    return np.array(ys)


@pytest.mark.parametrize("complex_", [True, False])
def test_diagonal_ssm_matches_reference_in_both_modes(complex_):
    par = tl.DiagonalSSM(3, 4, complex=complex_, dt_min=0.05, dt_max=0.5, key=jax.random.key(0))
    seq = tl.DiagonalSSM(
        3, 4, complex=complex_, mode="sequential", dt_min=0.05, dt_max=0.5, key=jax.random.key(0)
    )
    u = randn(jax.random.key(1), (20, 3))
    out_par, out_seq = jax.jit(lambda u: (par(u), seq(u)))(u)
    assert out_par.shape == (20, 3)
    np.testing.assert_allclose(out_par, out_seq, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_par, diagonal_ssm_reference(par, u), rtol=1e-4, atol=1e-4)
    prims = {e.primitive.name for e in jax.make_jaxpr(par)(u).eqns}
    assert not any("complex" in p or p in ("real", "imag") for p in prims)  # real graph only
    assert all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(par))


def test_diagonal_ssm_init_values():
    ssm = tl.DiagonalSSM(2, 3, key=jax.random.key(0))
    a = -np.exp(np.asarray(ssm.log_neg_a)) + 1j * np.asarray(ssm.a_imag)
    np.testing.assert_allclose(
        a[0], [-0.5 + 0j, -0.5 + 1j * cmath.pi, -0.5 + 2j * cmath.pi], rtol=1e-6
    )
    real = tl.DiagonalSSM(2, 3, complex=False, key=jax.random.key(0))
    np.testing.assert_allclose(-np.exp(np.asarray(real.log_neg_a))[0], [-1, -2, -3], rtol=1e-6)
    with pytest.raises(ValueError, match="mode must be one of"):
        tl.DiagonalSSM(2, 3, mode="fft", key=jax.random.key(0))


def test_selective_scan_matches_loop_and_modes():
    L, D, N = 11, 3, 4
    k = jax.random.split(jax.random.key(2), 6)
    u = randn(k[0], (L, D))
    delta = jax.nn.softplus(randn(k[1], (L, D)))
    A = -jnp.exp(randn(k[2], (D, N)))
    B = randn(k[3], (L, N))
    C = randn(k[4], (L, N))
    Dskip = randn(k[5], (D,))
    run = jax.jit(
        lambda *a: (
            tl.selective_scan(*a, mode="parallel"),
            tl.selective_scan(*a, mode="sequential"),
        )
    )
    par, seq = run(u, delta, A, B, C, Dskip)
    np.testing.assert_allclose(par, seq, rtol=1e-5, atol=1e-5)

    def f64(x):
        return np.asarray(x, np.float64)

    h = np.zeros((D, N))
    ys = []
    for t in range(L):
        h = (
            np.exp(f64(delta)[t][:, None] * f64(A)) * h
            + f64(delta)[t][:, None] * f64(B)[t][None, :] * f64(u)[t][:, None]
        )
        ys.append(h @ f64(C)[t] + f64(Dskip) * f64(u)[t])
    np.testing.assert_allclose(par, np.array(ys), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected u \(L, D\), delta \(L, D\)"):
        tl.selective_scan(u, delta, A, B[:, :2], C)


def test_selective_ssm_and_mamba_block():
    s6p = tl.SelectiveSSM(8, 4, key=jax.random.key(0))
    s6s = tl.SelectiveSSM(8, 4, mode="sequential", key=jax.random.key(0))
    block = tl.MambaBlock(8, state_size=4, key=jax.random.key(1))
    u = randn(jax.random.key(3), (10, 8))
    changed = u.at[6:].set(3.0)

    @jax.jit
    def run(u, changed):
        grad = jax.grad(lambda m: m(u).sum())(s6p)
        yb, yb_changed = jax.vmap(block)(jnp.stack([u, changed]))
        return s6p(u), s6s(u), yb, yb_changed, grad

    yp, ys, yb, yb_changed, g = run(u, changed)
    np.testing.assert_allclose(yp, ys, rtol=1e-5, atol=1e-5)
    # softplus(dt bias) is the sampled initial step, inside [dt_min, dt_max].
    dt0 = jax.nn.softplus(s6p.dt_proj.bias)
    assert bool(((dt0 >= 1e-3 * 0.999) & (dt0 <= 0.1 * 1.001)).all())
    assert yb.shape == (10, 8)
    np.testing.assert_allclose(yb_changed[:6], yb[:6], rtol=1e-6, atol=1e-6)  # causal
    assert not np.allclose(yb_changed[6:], yb[6:])
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(g))


def test_recurrences_under_tljax_exact_semantics():
    """Integration with tljax.evaluate(..., semantics="exact")."""
    import tljax

    evaluate = getattr(tljax, "evaluate", None)
    if evaluate is None:
        pytest.skip("tljax.evaluate is not available in this checkout")
    rng = np.random.default_rng(3)
    a = dyadic(rng, (7, 2), [-1.0, -0.5, 0.0, 0.5, 1.0])
    b = dyadic(rng, (7, 2), np.arange(-8, 9) / 8)
    h0 = dyadic(rng, (2,), np.arange(-8, 9) / 8)

    def F(x):
        return Fraction(float(x))

    expected = fraction_recurrence(
        [[F(x) for x in row] for row in a], [[F(x) for x in row] for row in b], [F(x) for x in h0]
    )
    for fn in (tl.linear_recurrence_sequential, tl.linear_recurrence_parallel):
        out = np.asarray(evaluate(fn, a, b, h0, semantics="exact"))
        assert [[Fraction(x) for x in row] for row in out] == expected
