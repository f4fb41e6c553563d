"""The affine method's symbol window (`Problem.bounds("affine", symbols=W)`): evicted symbols move
to the remainders of the nodes still in use, so the bounds stay sound for every window size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.bounds import Box, prepare


def _program(seed, width=6):
    rng = np.random.default_rng(seed)
    W1 = jnp.asarray(rng.normal(size=(width, 2)) * 1.5, jnp.float32)
    b1 = jnp.asarray(rng.normal(size=width), jnp.float32)
    W2 = jnp.asarray(rng.normal(size=(width, width)) * 0.8, jnp.float32)
    w3 = jnp.asarray(rng.normal(size=width), jnp.float32)

    def u(z):
        return w3 @ jnp.tanh(W2 @ jnp.tanh(W1 @ z + b1))

    def f(z):
        # a Burgers-like residual: products of derivatives, second order
        ex = jnp.zeros_like(z).at[1].set(1.0)
        et = jnp.zeros_like(z).at[0].set(1.0)
        (v, vx), (_, vxx) = jax.jvp(lambda w: jax.jvp(u, (w,), (ex,)), (z,), (ex,))
        vt = jax.jvp(u, (z,), (et,))[1]
        return jnp.stack([vt + v * vx - 0.01 * vxx, v * v])

    return f


@pytest.mark.parametrize(
    "seed, window, float_sound",
    [(0, 1, True), (1, 13, True), (0, None, True), (1, 1, False), (0, 13, False)],
)
def test_window_bounds_contain_samples(seed, window, float_sound):
    f = _program(seed)
    rng = np.random.default_rng(100 + seed)
    for centre, half in (([0.3, -0.2], 0.05), ([2.0, -3.0], 0.5), ([0.0, 0.0], 1e-6)):
        lo = jnp.asarray(np.asarray(centre) - half, jnp.float32)
        hi = jnp.asarray(np.asarray(centre) + half, jnp.float32)
        p = prepare(f, Box(lo, hi), float_sound=float_sound)
        ((bl, bh),) = p.bounds("affine", symbols=window)
        bl, bh = np.asarray(bl), np.asarray(bh)
        assert np.all(np.isfinite(bl)) and np.all(np.isfinite(bh))
        pts = rng.uniform(np.asarray(lo), np.asarray(hi), (4000, 2)).astype(np.float32)
        pts = np.concatenate([pts, np.asarray([lo, hi, [lo[0], hi[1]], [hi[0], lo[1]]])])
        if float_sound:
            vals = np.asarray(jax.jit(jax.vmap(f))(jnp.asarray(pts)), np.float64)
        else:
            with jax.enable_x64(True):
                vals = np.asarray(jax.vmap(f)(jnp.asarray(pts, jnp.float64)))
            slack = 1e-5 * (1 + np.abs(vals))  # unsound mode: plain float bound computation
            vals_lo, vals_hi = vals + slack, vals - slack
            assert np.all(vals_lo >= bl) and np.all(vals_hi <= bh)
            continue
        assert np.all(vals >= bl), (window, centre, (vals.min(0), bl))
        assert np.all(vals <= bh), (window, centre, (vals.max(0), bh))


def test_window_trades_tightness_for_memory():
    f = _program(0)
    lo = jnp.asarray([0.3, -0.2], jnp.float32)
    p = prepare(f, Box(lo, lo + 0.02))
    widths = {}
    for w in (1, 40, None):
        ((bl, bh),) = p.bounds("affine", symbols=w)
        widths[w] = float(bh[0] - bl[0])
    # the full budget keeps every correlation; a window of one symbol keeps almost none
    assert widths[None] <= widths[40] * (1 + 1e-6) <= widths[1] * (1 + 1e-6)
    assert widths[None] < widths[1]


@pytest.mark.parametrize("symbols", [pytest.param(None, marks=pytest.mark.long), 13])  # None: 23 s
def test_float32_program_under_x64_stays_float32(symbols):
    """With jax_enable_x64 on, a float32 program's zonotope stays float32 (a remainder built
    from two Python scalars was float64 and broke the next equation) and contains samples;
    `floor` takes the concretize path."""
    f = _program(3)
    g = lambda z: jnp.concatenate([f(z), jnp.floor(3.0 * z)])  # noqa: E731
    lo = jnp.asarray([0.2, -0.4], jnp.float32)
    hi = jnp.asarray([0.25, -0.3], jnp.float32)
    with jax.enable_x64(True):
        ((l, h),) = prepare(g, Box(lo, hi)).bounds("affine", symbols=symbols)
        assert l.dtype == h.dtype == jnp.float32
        pts = lo + jax.random.uniform(jax.random.PRNGKey(0), (4096, 2), jnp.float32) * (hi - lo)
        vals = np.asarray(jax.vmap(g)(pts))
    assert np.all(vals >= np.asarray(l)) and np.all(vals <= np.asarray(h))
