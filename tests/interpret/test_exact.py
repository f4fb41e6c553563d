"""Tests of the `exact` semantics.

Oracles are independent of the implementation: plain-Python `fractions.Fraction` computations
(loops, no numpy matmul), JAX itself on data whose float32 results are exact (small dyadics, so
XLA's answer IS the real answer), `ml_dtypes` rounding, and mpmath at 200 bits for enclosures.
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import ml_dtypes
import mpmath
import numpy as np
import pytest
from flax import nnx
from jax import lax

import tljax
from tljax.core import InputError, Semantics, UnsupportedPrimitiveError, iter_eqns
from tljax.interpret import get_semantics
from tljax.interpret._exact import (
    Enclosure,
    ExactArray,
    ExactDomainError,
    exact_semantics,
    exact_to_float,
    is_exact,
    to_sympy,
    ulp_distance,
)

HERE = "test_exact.py"


def ev(fn, *args, semantics="exact"):
    return tljax.evaluate(fn, *args, semantics=semantics)


# ----------------------------------------------------------------------------------------------
# Independent Fraction helpers (plain Python).


def fr(a) -> np.ndarray:
    """numpy array -> object array of Fractions, via Python's own float -> Fraction."""
    a = np.asarray(a)
    out = np.empty(a.shape, dtype=object)
    for i in np.ndindex(*a.shape):
        v = a[i]
        out[i] = Fraction(int(v)) if a.dtype.kind in "iub" else Fraction(float(v))
    return out


def fmatmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n, k = a.shape
    k2, m = b.shape
    assert k == k2
    out = np.empty((n, m), dtype=object)
    for i in range(n):
        for j in range(m):
            s = Fraction(0)
            for t in range(k):
                s += a[i, t] * b[t, j]
            out[i, j] = s
    return out


def frelu(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for i in np.ndindex(*a.shape):
        out[i] = a[i] if a[i] > 0 else Fraction(0)
    return out


def assert_exact_equal(got, expected):
    assert isinstance(got, ExactArray), type(got)
    exp = np.asarray(expected, dtype=object)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    for i in np.ndindex(*exp.shape):
        assert got[i] == exp[i], (i, got[i], exp[i])


def mp_frac(x: Fraction):
    return mpmath.mpf(x.numerator) / x.denominator


def mp_to_fraction(v) -> Fraction:
    sign, man, exp, _ = mpmath.mpf(v)._mpf_  # value = (-1)**sign * man * 2**exp, exactly
    return (-1) ** sign * Fraction(int(man)) * Fraction(2) ** int(exp)


def assert_encloses(got, expected_mp):
    assert isinstance(got, Enclosure), type(got)
    exp = np.asarray(expected_mp, dtype=object)
    assert got.shape == exp.shape
    lo, hi = got.lower, got.upper
    for i in np.ndindex(*exp.shape):
        v = mp_to_fraction(exp[i])
        assert lo[i] <= v <= hi[i], (i, float(lo[i]), float(v), float(hi[i]))


# ----------------------------------------------------------------------------------------------
# Lifting and results.


def test_lift_is_exact_for_every_float_format():
    vals = np.array([0.1, -3.5, 1e-45, 3.4e38, -0.0, 2.0**-126, 1 / 3, 1e-40, 65504.0, 6e-8])
    for dt in (np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn):
        with np.errstate(over="ignore"):  # 3.4e38 overflows the narrow formats on purpose
            x = vals.astype(dt)
        x = x[np.isfinite(x.astype(np.float64))]
        got = ev(lambda a: a, jnp.asarray(x))
        assert_exact_equal(got, fr(x))
        assert got.source_dtype == np.dtype(dt)
    with jax.enable_x64(True):
        got = ev(lambda a: a * 1.0, vals)
    assert_exact_equal(got, fr(vals))
    assert got.source_dtype == np.float64


def test_int_bool_outputs_are_exact_python_ints():
    got = ev(lambda a: (a * 3, a > 0), np.array([-2, 0, 7], np.int32))
    assert got[0].tolist() == [-6, 0, 21] and all(type(v) is int for v in got[0].flat)
    assert got[1].tolist() == [False, False, True] and all(type(v) is bool for v in got[1].flat)
    assert is_exact(got)


def test_rational_inputs_are_accepted_on_a_traced_graph():
    g = tljax.trace(lambda a: a * 3.0 + 1.0, jnp.zeros(2, jnp.float32))
    got = ev(g, np.array([Fraction(1, 3), Fraction(-2, 7)], dtype=object))
    assert_exact_equal(got, [Fraction(2), Fraction(1, 7)])


def test_result_helpers():
    y = ev(lambda a: a / 3.0, jnp.float32(1.0))
    assert y[()] == Fraction(1, 3)
    assert exact_to_float(y, np.float32) == np.float32(1) / np.float32(3)
    assert exact_to_float(y).dtype == np.float64 and float(exact_to_float(y)) == 1 / 3
    assert exact_to_float(y, ml_dtypes.bfloat16) == np.float32(1 / 3).astype(ml_dtypes.bfloat16)
    assert str(to_sympy(y)[()]) == "1/3"
    # 0.33333334f is 1/3 + 1/(3*2**25); one float32 ulp near 1/3 is 2**-25.
    d = ulp_distance(y, np.float32(1) / np.float32(3))
    assert float(d) == pytest.approx(1 / 3, rel=1e-15)
    assert (
        float(ulp_distance(np.array(Fraction(1), dtype=object), ml_dtypes.bfloat16(1.0078125)))
        == 1.0
    )
    # Correct rounding of a tie to even in float32: 1 + 2**-24 is halfway between 1 and 1+2**-23.
    assert exact_to_float(
        np.array(Fraction(2**24 + 1, 2**24), dtype=object), np.float32
    ) == np.float32(1.0)


def test_exact_to_float_overflow_and_subnormals():
    big = np.array([Fraction(2) ** 200, -(Fraction(2) ** 200), Fraction(3, 2**150)], dtype=object)
    out = exact_to_float(big, np.float32)
    assert out[0] == np.inf and out[1] == -np.inf
    assert out[2] == np.float32(2.0**-149) * 2  # 3·2^-150 rounds (tie) to the even 2·2^-149


@pytest.mark.parametrize(
    "dt",
    [
        np.float16,
        ml_dtypes.bfloat16,
        ml_dtypes.float8_e5m2,
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e4m3fnuz,
        ml_dtypes.float8_e3m4,
        ml_dtypes.float6_e3m2fn,  # not a registry entry: its format is read from finfo
        ml_dtypes.float8_e4m3b11fnuz,  # ditto
    ],
)
def test_exact_to_float_rounds_like_ml_dtypes(dt):
    """Exact rounding through the one `Format` type, against ml_dtypes' cast from float32 (one
    round to nearest even), over normal and subnormal magnitudes below the largest value."""
    fi = ml_dtypes.finfo(dt)
    rng = np.random.default_rng(3)
    lo, hi = np.log2(float(fi.smallest_subnormal)) - 1, np.log2(float(fi.max))
    x = (2.0 ** rng.uniform(lo, hi, 400) * rng.choice([-1, 1], 400)).astype(np.float32)
    x = x[np.abs(x.astype(np.float64)) <= float(fi.max)]
    got = exact_to_float(np.array([Fraction(float(v)) for v in x], dtype=object), dt)
    np.testing.assert_array_equal(got.astype(np.float64), x.astype(dt).astype(np.float64))


# ----------------------------------------------------------------------------------------------
# Models against plain-Python Fraction references.


def _mlp_params(rng, sizes):
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.standard_normal(b) * 0.1).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def _mlp(params, x):
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def _mlp_ref(params, x):
    h = fr(x).reshape(1, -1)
    for i, (w, b) in enumerate(params):
        h = fmatmul(h, fr(w)) + fr(b).reshape(1, -1)
        if i < len(params) - 1:
            h = frelu(h)
    return h.reshape(-1)


def test_mlp_matches_fraction_reference():
    rng = np.random.default_rng(0)
    params = _mlp_params(rng, [12, 10, 8, 4])
    x = rng.standard_normal(12).astype(np.float32)
    got = ev(_mlp, params, x)
    assert_exact_equal(got, _mlp_ref(params, x))
    # The float32 program is close to, but not equal to, the real value.
    assert np.allclose(exact_to_float(got), np.asarray(_mlp(params, x)), rtol=1e-4, atol=1e-5)


def test_mlp_with_closed_over_constants_in_jit():
    rng = np.random.default_rng(1)
    params = _mlp_params(rng, [6, 5, 3])
    x = rng.standard_normal((2, 6)).astype(np.float32)
    got = ev(jax.jit(lambda a: _mlp(params, a)), x)
    assert_exact_equal(got, np.stack([_mlp_ref(params, x[i]) for i in range(2)]))


def _conv_ref(x, w, stride, padding, rhs_dil, groups):
    """NCHW x OIHW, non-negative padding, plain loops."""
    n, _, h, wd = x.shape
    o, ci, kh, kw = w.shape
    (pt, pb), (pl, pr) = padding
    hp, wp = h + pt + pb, wd + pl + pr
    eh, ew = (kh - 1) * rhs_dil[0] + 1, (kw - 1) * rhs_dil[1] + 1
    oh, ow = (hp - eh) // stride[0] + 1, (wp - ew) // stride[1] + 1
    og = o // groups
    out = np.empty((n, o, oh, ow), dtype=object)
    for b in range(n):
        for f in range(o):
            g = f // og
            for i in range(oh):
                for j in range(ow):
                    s = Fraction(0)
                    for cc in range(ci):
                        for di in range(kh):
                            for dj in range(kw):
                                yy = i * stride[0] + di * rhs_dil[0] - pt
                                xx = j * stride[1] + dj * rhs_dil[1] - pl
                                if 0 <= yy < h and 0 <= xx < wd:
                                    s += x[b, g * ci + cc, yy, xx] * w[f, cc, di, dj]
                    out[b, f, i, j] = s
    return out


def test_cnn_matches_fraction_reference():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 7, 6, 4)).astype(np.float32)  # NHWC
    w = (rng.standard_normal((3, 3, 2, 6)) * 0.3).astype(np.float32)  # HWIO, 2 groups of 2 in-ch
    b = (rng.standard_normal(6) * 0.1).astype(np.float32)
    wd = (rng.standard_normal((6, 3)) * 0.2).astype(np.float32)
    stride, padding, rdil = (2, 1), ((1, 2), (0, 1)), (1, 2)

    def cnn(x):
        y = lax.conv_general_dilated(
            x,
            w,
            stride,
            padding,
            rhs_dilation=rdil,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=2,
        )
        y = jax.nn.relu(y + b)
        y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
        y = lax.reduce_window(y, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
        return y.reshape(2, -1) @ wd

    got = ev(cnn, x)
    # Reference: NCHW loops, then pools and dense with loops.
    xr = fr(x).transpose(0, 3, 1, 2)
    wr = fr(w).transpose(3, 2, 0, 1)
    y = _conv_ref(xr, wr, stride, padding, rdil, 2) + fr(b).reshape(1, 6, 1, 1)
    y = frelu(y)
    n, c, h, wdt = y.shape
    ph, pw = -(-h // 2), -(-wdt // 2)  # SAME max pool, stride 2: windows clipped at the edge
    mp = np.empty((n, c, ph, pw), dtype=object)
    for i in np.ndindex(n, c, ph, pw):
        a, ch, p, q = i
        pad_h = max((ph - 1) * 2 + 2 - h, 0) // 2
        pad_w = max((pw - 1) * 2 + 2 - wdt, 0) // 2
        vals = [
            y[a, ch, yy, xx]
            for yy in range(p * 2 - pad_h, p * 2 - pad_h + 2)
            for xx in range(q * 2 - pad_w, q * 2 - pad_w + 2)
            if 0 <= yy < h and 0 <= xx < wdt
        ]
        mp[i] = max(vals)
    ah, aw = (ph - 2) // 2 + 1, (pw - 2) // 2 + 1
    ap = np.empty((n, c, ah, aw), dtype=object)
    for i in np.ndindex(n, c, ah, aw):
        a, ch, p, q = i
        ap[i] = (
            sum((mp[a, ch, 2 * p + u, 2 * q + v] for u in range(2) for v in range(2)), Fraction(0))
            / 4
        )
    flat = ap.transpose(0, 2, 3, 1).reshape(2, -1)
    assert_exact_equal(got, fmatmul(flat, fr(wd)))


def test_conv_geometry_matches_xla_on_exact_data():
    # Small integers: every float32 product and sum is exact, so XLA's answer is the real one.
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (4, 4, 6, 5)).astype(np.float32)
    w = rng.integers(-2, 3, (4, 4, 3, 2)).astype(np.float32)
    cases = [
        {"window_strides": (1, 2), "padding": ((2, -1), (1, 1)), "lhs_dilation": (2, 1)},
        {
            "window_strides": (2, 1),
            "padding": ((0, 0), (0, 0)),
            "rhs_dilation": (2, 1),
            "feature_group_count": 2,
        },
        {"window_strides": (1, 1), "padding": ((1, 0), (0, 2)), "batch_group_count": 2},
    ]
    for kw in cases:
        ww = w if kw.get("feature_group_count", 1) == 1 else w[:, :2]

        def f(a, ww=ww, kw=kw):
            return lax.conv_general_dilated(a, ww, **kw)

        assert_exact_equal(ev(f, x), fr(np.asarray(f(x))))


def test_attention_without_exp_matches_fraction_reference():
    rng = np.random.default_rng(4)
    t, d = 4, 4
    x = rng.standard_normal((t, d)).astype(np.float32)
    wq, wk, wv = (rng.standard_normal((d, d)).astype(np.float32) * 0.5 for _ in range(3))

    def attn(x):
        q, k, v = x @ wq, x @ wk, x @ wv
        s = jax.nn.relu(q @ k.T / jnp.sqrt(jnp.float32(d)))
        p = s / (s.sum(-1, keepdims=True) + 1.0)
        return p @ v

    got = ev(attn, x)
    xr = fr(x)
    q, k, v = fmatmul(xr, fr(wq)), fmatmul(xr, fr(wk)), fmatmul(xr, fr(wv))
    s = frelu(fmatmul(q, k.T) / 2)
    p = np.empty(s.shape, dtype=object)
    for i in range(t):
        den = sum(s[i], Fraction(0)) + 1
        for j in range(t):
            p[i, j] = s[i, j] / den
    assert_exact_equal(got, fmatmul(p, v))
    assert is_exact(got)


def test_softmax_attention_is_a_certified_enclosure():
    rng = np.random.default_rng(5)
    q, k = (
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal((5, 4)).astype(np.float32),
    )

    def f(q, k):
        return jax.nn.softmax(q @ k.T / 2.0, axis=-1)

    got = ev(f, q, k)
    assert not is_exact(got)
    s = fmatmul(fr(q), fr(k).T) / 2
    with mpmath.workprec(200):
        expected = np.empty(s.shape, dtype=object)
        for i in range(s.shape[0]):
            e = [mpmath.exp(mp_frac(v)) for v in s[i]]
            tot = mpmath.fsum(e)
            for j in range(s.shape[1]):
                expected[i, j] = e[j] / tot
        assert_encloses(got, expected)
    # The float64 computation lies within a few float64 ulps of the (128-bit) enclosure.
    s64 = np.asarray(q, np.float64) @ np.asarray(k, np.float64).T / 2
    p64 = np.exp(s64 - s64.max(-1, keepdims=True))
    p64 /= p64.sum(-1, keepdims=True)
    assert np.all(ulp_distance(got, p64) <= 16.0)
    assert np.all(got.width < 2.0**-100)


def test_flash_attention_equals_naive_attention_exactly_with_exp2():
    rng = np.random.default_rng(6)
    q = rng.integers(-2, 3, (3, 4)).astype(np.float32)
    k = rng.integers(-2, 3, (6, 4)).astype(np.float32)
    v = rng.standard_normal((6, 2)).astype(np.float32)

    def naive(q, k, v):
        s = q @ k.T
        p = jnp.exp2(s - s.max(-1, keepdims=True))
        return (p @ v) / p.sum(-1, keepdims=True)

    def flash(q, k, v):
        kb, vb = k.reshape(3, 2, 4), v.reshape(3, 2, 2)
        s0 = q @ kb[0].T
        m0 = s0.max(-1, keepdims=True)
        p0 = jnp.exp2(s0 - m0)
        carry = (m0, p0.sum(-1, keepdims=True), p0 @ vb[0])

        def step(c, blk):
            m, denom, acc = c
            kk, vv = blk
            s = q @ kk.T
            m_new = jnp.maximum(m, s.max(-1, keepdims=True))
            scale = jnp.exp2(m - m_new)
            p = jnp.exp2(s - m_new)
            return (m_new, denom * scale + p.sum(-1, keepdims=True), acc * scale + p @ vv), None

        (_, denom, acc), _ = lax.scan(step, carry, (kb[1:], vb[1:]))
        return acc / denom

    a, b = ev(naive, q, k, v), ev(flash, q, k, v)
    assert is_exact(a) and is_exact(b)
    assert_exact_equal(b, a)
    # Fraction reference with exact powers of two.
    s = fmatmul(fr(q), fr(k).T)
    ref = np.empty((3, 2), dtype=object)
    vr = fr(v)
    for i in range(3):
        m = max(s[i])
        p = [Fraction(2) ** int(sij - m) for sij in s[i]]
        for c in range(2):
            ref[i, c] = sum((p[j] * vr[j, c] for j in range(6)), Fraction(0)) / sum(p, Fraction(0))
    assert_exact_equal(a, ref)


def test_equinox_model_matches_fraction_reference():
    model = eqx.nn.MLP(5, 3, 7, 2, activation=jax.nn.relu, key=jax.random.key(0))
    x = np.random.default_rng(7).standard_normal(5).astype(np.float32)
    got = ev(model, x)
    h = fr(x).reshape(-1, 1)
    for i, layer in enumerate(model.layers):
        h = fmatmul(fr(layer.weight), h) + fr(layer.bias).reshape(-1, 1)
        if i < len(model.layers) - 1:
            h = frelu(h)
    assert_exact_equal(got, h.reshape(-1))
    # The module as an argument (its arrays are traced inputs) gives the same value.
    assert_exact_equal(ev(lambda m, a: m(a), model, x), h.reshape(-1))


class _NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(5, 6, rngs=rngs)
        self.l2 = nnx.Linear(6, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def test_flax_nnx_model_matches_fraction_reference():
    model = _NNXNet(nnx.Rngs(0))
    model.l1.bias[...] = jnp.full((6,), 0.125, jnp.float32)
    x = np.random.default_rng(8).standard_normal((2, 5)).astype(np.float32)
    got = ev(model, x)
    h = frelu(fmatmul(fr(x), fr(model.l1.kernel[...])) + fr(model.l1.bias[...]).reshape(1, -1))
    h = fmatmul(h, fr(model.l2.kernel[...])) + fr(model.l2.bias[...]).reshape(1, -1)
    assert_exact_equal(got, h)


_C = np.array([0.5, -1.25, 2.0], np.float32)


@jax.custom_vjp
def _triple(x):
    return x * 3.0


_triple.defvjp(lambda x: (_triple(x), None), lambda r, g: (g * 3.0,))


@jax.jit
def _inner(x):
    return x * _C + 1.0  # closed-over numpy constant inside jit


def _program(x, n):
    y = _inner(x)
    y = jax.nn.relu(y) + _triple(y)
    y = lax.cond(y.sum() > 0, lambda a: a * 2.0, lambda a: a - 1.0, y)
    y = lax.switch(n, [lambda a: a + 1.0, lambda a: a * a, lambda a: -a], y)

    def body(c, xi):
        return c * 0.5 + xi, c + xi

    c, ys = lax.scan(body, jnp.float32(0.25), y)
    c2, ys2 = lax.scan(body, c, ys, reverse=True)
    w = lax.while_loop(lambda s: s[0] < 5, lambda s: (s[0] + 1, s[1] * 1.5 + 0.125), (0, c2))
    f = lax.fori_loop(0, 3, lambda i, a: a + i * 0.5, w[1])
    g = jax.checkpoint(lambda a: jnp.sin(a) * 0.0 + a * a)(f)
    return jnp.where(ys2 > 0, ys2, g), g


def _program_ref(x, n):
    y = [xi * ci + 1 for xi, ci in zip(fr(x), fr(_C), strict=True)]
    y = [max(v, Fraction(0)) + 3 * v for v in y]
    y = [v * 2 for v in y] if sum(y) > 0 else [v - 1 for v in y]
    y = [[v + 1 for v in y], [v * v for v in y], [-v for v in y]][n]
    c, ys = Fraction(1, 4), []
    for v in y:
        c, out = c / 2 + v, c + v
        ys.append(out)
    ys2 = [None] * len(ys)
    for i in reversed(range(len(ys))):
        c, ys2[i] = c / 2 + ys[i], c + ys[i]
    for _ in range(5):
        c = c * Fraction(3, 2) + Fraction(1, 8)
    for i in range(3):
        c = c + Fraction(i, 2)
    g = c * c
    return [v if v > 0 else g for v in ys2], g


@pytest.mark.parametrize("n", [0, 1, 2])
def test_higher_order_program_matches_fraction_reference(n):
    x = np.array([0.75, -0.5, 1.5], np.float32)
    got = ev(_program, x, np.int32(n))
    ref = _program_ref(x, n)
    assert_exact_equal(got[0], ref[0])
    assert_exact_equal(got[1], ref[1])
    assert is_exact(got)  # sin(a)·0 is an exact zero ball, so the result stays exact


# ----------------------------------------------------------------------------------------------
# Per-primitive table. Oracles: "xla" = jax on exact-representable data (exact answer);
# "frac" = Python Fractions; "ball" = mpmath at 200 bits must lie in the enclosure.

D = np.array(
    [[1.5, -2.0, 0.25, 3.0], [-0.5, 4.0, -1.75, 0.0], [2.5, -3.25, 1.0, -0.125]], np.float32
)
E = np.array([[0.5, 2.0, -0.25, 1.0], [-1.5, -4.0, 0.75, 2.0], [3.0, 1.25, -1.0, 0.5]], np.float32)
P = np.array([[0.5, 1.5, 2.0, 0.25], [3.0, 0.75, 1.25, 4.0]], np.float32)  # positive
U = np.array([[0.25, -0.5, 0.75], [-0.125, 0.5, 0.375]], np.float32)  # in (-1, 1)
IA = np.array([[3, -7, 0, 12], [-1, 5, 9, -4]], np.int32)
JA = np.array([[2, 3, -5, 7], [4, -2, 3, 5]], np.int32)
X4 = np.arange(2 * 4 * 5 * 5, dtype=np.float32).reshape(2, 4, 5, 5) % 7 - 3
W4 = np.arange(6 * 2 * 3 * 3, dtype=np.float32).reshape(6, 2, 3, 3) % 5 - 2


def _mp_logistic(v):
    return 1 / (1 + mpmath.exp(-v))


CASES = [
    ("add_sub_mul", lambda a, b: (a + b, a - b, a * b), (D, E), "xla"),
    ("div", lambda a, b: a / b, (D, E), ("frac", lambda a, b: a / b)),
    ("div_by_pow2", lambda a: a / 8.0, (D,), "xla"),
    ("neg_abs_sign", lambda a: (-a, jnp.abs(a), jnp.sign(a)), (D,), "xla"),
    (
        "max_min_clamp",
        lambda a, b: (jnp.maximum(a, b), jnp.minimum(a, b), lax.clamp(-1.0, a, 2.0)),
        (D, E),
        "xla",
    ),
    ("max_identity_neg_inf", lambda a: jnp.max(a, axis=1, initial=-jnp.inf), (D,), "xla"),
    ("integer_pow_square", lambda a: (a**3, lax.square(a), lax.integer_pow(a, 0)), (D,), "xla"),
    ("integer_pow_negative", lambda a: a**-2, (E,), ("frac", lambda a: a**-2)),
    (
        "one_minus_square",  # JAX 0.11+ writes arctanh' with one_minus_square; 0.10 with sub/mul
        lambda a: jax.jvp(jnp.arctanh, (a,), (jnp.ones_like(a),))[1],
        (U,),
        ("frac", lambda a: 1 / (1 - a * a)),
    ),
    ("square_scalar", lambda a: (lax.square(a[0, 0]), a[0, 1] ** 3), (D,), "xla"),
    (
        "pow_integer_exponent",
        lambda a, b: a ** jnp.round(b),
        (P, E[:2]),
        ("frac", lambda a, b: a ** round(b)),
    ),
    (
        "pow2_and_exp2",
        lambda a: (2.0 ** (a * 4), jnp.exp2(a * 4)),
        (E,),
        ("frac", lambda a: (Fraction(2) ** int(a * 4),) * 2),
    ),
    (
        "sqrt_rsqrt_perfect_squares",
        lambda a: (jnp.sqrt(a * a), lax.rsqrt(a * a * 4)),
        (P,),
        ("frac", lambda a: (a, 1 / (2 * a))),
    ),
    (
        "sqrt_rsqrt_irrational",
        lambda a: (jnp.sqrt(a + 0.125), lax.rsqrt(a + 0.125)),
        (P,),
        (
            "ball",
            lambda a: (mpmath.sqrt(a + mpmath.mpf(1) / 8), 1 / mpmath.sqrt(a + mpmath.mpf(1) / 8)),
        ),
    ),
    (
        "pow_real_exponent",
        lambda a: a**0.3,
        (P,),
        ("ball", lambda a: a ** (mpmath.mpf(float(np.float32(0.3))))),
    ),
    (
        "exp_log_family",
        lambda a: (jnp.exp(a), jnp.log(a), jnp.log1p(a), jnp.expm1(a)),
        (P,),
        ("ball", lambda a: (mpmath.exp(a), mpmath.log(a), mpmath.log1p(a), mpmath.expm1(a))),
    ),
    (
        "tanh_logistic_erf",
        lambda a: (jnp.tanh(a), jax.nn.sigmoid(a), jsp.erf(a), jsp.erfc(a)),
        (E,),
        ("ball", lambda a: (mpmath.tanh(a), _mp_logistic(a), mpmath.erf(a), mpmath.erfc(a))),
    ),
    (
        "trig",
        lambda a: (jnp.sin(a), jnp.cos(a), jnp.tan(a), jnp.arctan(a), jnp.arctan2(a, a + 3.0)),
        (E,),
        (
            "ball",
            lambda a: (
                mpmath.sin(a),
                mpmath.cos(a),
                mpmath.tan(a),
                mpmath.atan(a),
                mpmath.atan2(a, a + 3),
            ),
        ),
    ),
    (
        "inverse_trig_hyperbolic",
        lambda a: (
            jnp.arcsin(a),
            jnp.arccos(a),
            jnp.arctanh(a),
            jnp.sinh(a),
            jnp.cosh(a),
            jnp.arcsinh(a),
        ),
        (U,),
        (
            "ball",
            lambda a: (
                mpmath.asin(a),
                mpmath.acos(a),
                mpmath.atanh(a),
                mpmath.sinh(a),
                mpmath.cosh(a),
                mpmath.asinh(a),
            ),
        ),
    ),
    (
        "acosh_cbrt_gamma",
        lambda a: (jnp.arccosh(a + 1.0), jnp.cbrt(a), jsp.gammaln(a), jsp.digamma(a)),
        (P,),
        (
            "ball",
            lambda a: (mpmath.acosh(a + 1), mpmath.cbrt(a), mpmath.loggamma(a), mpmath.digamma(a)),
        ),
    ),
    ("erf_inv", lambda a: jsp.erfinv(a), (U,), ("ball", lambda a: mpmath.erfinv(a))),
    ("cumlogsumexp", lambda a: lax.cumlogsumexp(a, axis=1), (P,), "ball_cumlogsumexp"),
    (
        "comparisons",
        lambda a, b: (a < b, a <= b, a > b, a >= b, a == b, a != b, a == b * 1.0),
        (D, E),
        "xla",
    ),
    (
        "select_n_where",
        lambda a, b: (
            jnp.where(a > b, a, b),
            lax.select_n(jnp.int32(2) * (a > 0) + (b > 0), a, b, a * b, a + b),
        ),
        (D, E),
        "xla",
    ),
    (
        "logic_bool_int",
        lambda i, j: (
            (i > 0) & (j > 0),
            (i > 0) | (j > 0),
            (i > 0) ^ (j > 0),
            ~(i > 0),
            i & j,
            i | j,
            i ^ j,
            ~i,
        ),
        (IA, JA),
        "xla",
    ),
    (
        "int_arith_wraps",
        lambda i, j: (
            i * j,
            i // j,
            lax.div(i, j),
            lax.rem(i, j),
            i * jnp.int32(2**30),
            -i,
            jnp.abs(i),
        ),
        (IA, JA),
        "xla",
    ),
    ("rem_float", lambda a, b: lax.rem(a, b), (D, E), ("frac", lambda a, b: a - b * int(a / b))),
    (
        "floor_ceil_round",
        lambda a: (
            jnp.floor(a * 3),
            jnp.ceil(a * 3),
            jnp.round(a * 2),
            lax.round(a * 2, lax.RoundingMethod.AWAY_FROM_ZERO),
            jnp.trunc(a * 3),
        ),
        (D,),
        "xla",
    ),
    (
        "convert",
        lambda a: (
            a.astype(jnp.int32),
            (a * 2).astype(jnp.int8),
            a.astype(bool),
            jnp.int32(7).astype(jnp.uint8),
            a.astype(jnp.bfloat16).astype(jnp.float32),
        ),
        (D,),
        "xla",
    ),
    (
        "convert_keeps_exact_value",
        lambda a: (a / 3.0).astype(jnp.bfloat16),
        (D,),
        ("frac", lambda a: a / 3),
    ),
    (
        "reduce_precision_rounds_like_ml_dtypes",
        lambda a: lax.reduce_precision(a / 3.0, 8, 7),
        (D,),
        "rp_bf16",
    ),
    ("reductions", lambda a: (a.sum(0), a.sum(), a.max(1), a.min(0), jnp.prod(a, 1)), (D,), "xla"),
    (
        "reduce_logic",
        lambda a: (
            jnp.all(a > -3.0, 1),
            jnp.any(a > 3.5, 0),
            lax.reduce_xor_p.bind(a > 0, axes=(1,)),
        ),
        (D,),
        "xla",
    ),
    (
        "argmax_argmin",
        lambda a: (jnp.argmax(a, 1), jnp.argmin(a, 0), jnp.argmax(jnp.zeros(3))),
        (D,),
        "xla",
    ),
    (
        "cumulative",
        lambda a: (
            jnp.cumsum(a, 1),
            jnp.cumprod(a, 0),
            lax.cummax(a, 1),
            lax.cummin(a, 0, reverse=True),
            lax.cumsum(a, 1, reverse=True),
        ),
        (D,),
        "xla",
    ),
    (
        "dot_general_dims",
        lambda a, b: (
            a @ b.T,
            jnp.einsum("ij,ij->i", a, b),
            jnp.einsum("bij,bkj->bik", a.reshape(3, 2, 2), b.reshape(3, 2, 2)),
            jnp.tensordot(a, b, ((0, 1), (0, 1))),
        ),
        (D, E),
        "xla",
    ),
    ("int_dot", lambda i, j: i @ j.T, (IA, JA), "xla"),
    (
        "structural",
        lambda a: (
            a.reshape(4, 3).T,
            a[None, :, None],
            jnp.squeeze(a[:, :1], 1),
            a[:, 1:4:2],
            jnp.flip(a, (0, 1)),
            lax.reshape(a, (4, 3), dimensions=(1, 0)),
            jnp.tile(a, (1, 2)),
            jnp.broadcast_to(a[:1], (2, 3, 4)),
        ),
        (D,),
        "xla",
    ),
    (
        "concat_stack_split",
        lambda a, b: (
            jnp.concatenate([a, b], 1),
            jnp.stack([a, b], 1),
            *jnp.split(a, [1, 3], 1),
            *lax.unstack(b, axis=0),
        ),
        (D, E),
        "xla",
    ),
    (
        "pad_negative_interior",
        lambda a: (
            lax.pad(a, 0.5, ((1, -1, 0), (2, 0, 1))),
            lax.pad(a, -1.0, ((0, 0, 2), (-2, 1, 0))),
        ),
        (D,),
        "xla",
    ),
    (
        "iota",
        lambda a: (jnp.arange(5), lax.broadcasted_iota(jnp.float32, (2, 3), 1) + a[:2, :3]),
        (D,),
        "xla",
    ),
    (
        "dynamic_slice_update",
        lambda a, i: (
            lax.dynamic_slice(a, (i, 1), (2, 2)),
            lax.dynamic_update_slice(a, jnp.ones((2, 2)), (i, 3)),
            a[i],
        ),
        (D, np.int32(2)),
        "xla",
    ),
    (
        "gather_take",
        lambda a: (
            a[jnp.array([2, 0])],
            a[:, jnp.array([3, 1, 3])],
            jnp.take_along_axis(a, jnp.array([[0], [1], [3]]), axis=1),
            jnp.take(a, jnp.array([5, -1]), mode="clip"),
        ),
        (D,),
        "xla",
    ),
    (
        "scatter",
        lambda a: (
            jnp.asarray(a).at[1].set(2.0),
            jnp.asarray(a).at[jnp.array([0, 0, 2])].add(1.0),
            jnp.asarray(a).at[:, 2].max(0.5),
            jnp.asarray(a).at[jnp.array([1, 1])].min(-9.0),
            jnp.asarray(a).at[7].set(5.0),
        ),
        (D,),
        "xla",
    ),
    (
        "sort_argsort",
        lambda a: (jnp.sort(a, 1), jnp.argsort(a, 0), jnp.sort(a.ravel())),
        (D,),
        "xla",
    ),
    (
        "reduce_window",
        lambda a: (
            lax.reduce_window(a, 0.0, lax.add, (2, 2), (1, 1), "SAME"),
            lax.reduce_window(a, -jnp.inf, lax.max, (2, 3), (1, 2), "SAME"),
            lax.reduce_window(a, jnp.inf, lax.min, (1, 2), (1, 1), "VALID"),
        ),
        (D,),
        "xla",
    ),
    (
        "identities",
        lambda a: (
            lax.stop_gradient(a),
            jnp.copy(a),
            lax.optimization_barrier(a),
            jax.device_put(a),
            lax.with_sharding_constraint(a, jax.sharding.SingleDeviceSharding(jax.devices()[0])),
            jnp.isfinite(a),
        ),
        (D,),
        "xla",
    ),
    (
        "conv",
        lambda a, w: lax.conv_general_dilated(a, w, (1, 2), "SAME", feature_group_count=2),
        (X4, W4),
        "xla",
    ),
    ("grad_add_any", lambda a: jax.grad(lambda y: (y * y * y).sum())(a), (D,), "xla"),
]


def _check_case(fn, args, oracle):
    got = jax.tree_util.tree_leaves(ev(fn, *args))
    if oracle == "xla":
        ref = jax.tree_util.tree_leaves(fn(*args))
        assert len(got) == len(ref)
        for g, r in zip(got, ref, strict=True):
            r = np.asarray(r)
            assert g.source_dtype == r.dtype, (g.source_dtype, r.dtype)
            assert_exact_equal(g, fr(r))
        return
    if oracle == "rp_bf16":
        (g,) = got
        x = fr(args[0])
        for i in np.ndindex(*x.shape):
            # RNE of the exact a/3 to bf16 equals ml_dtypes' rounding of the float64 nearest to
            # a/3 here (no double-rounding tie within these values), computed independently.
            assert g[i] == Fraction(float(np.float64(float(x[i] / 3)).astype(ml_dtypes.bfloat16)))
        return
    if oracle == "ball_cumlogsumexp":
        (g,) = got
        x = fr(args[0])
        with mpmath.workprec(200):
            exp = np.empty(x.shape, dtype=object)
            for r in range(x.shape[0]):
                for c in range(x.shape[1]):
                    exp[r, c] = mpmath.log(
                        mpmath.fsum(mpmath.exp(mp_frac(x[r, j])) for j in range(c + 1))
                    )
            assert_encloses(g, exp)
        return
    kind, f = oracle
    xs = [fr(a) for a in args]
    shape = xs[0].shape
    n_out = len(got)
    expected = [np.empty(shape, dtype=object) for _ in range(n_out)]
    with mpmath.workprec(200):
        for i in np.ndindex(*shape):
            vals = f(*[(mp_frac(x[i]) if kind == "ball" else x[i]) for x in xs])
            vals = vals if isinstance(vals, tuple) else (vals,)
            for k in range(n_out):
                expected[k][i] = vals[k]
        for g, e in zip(got, expected, strict=True):
            if kind == "ball":
                assert_encloses(g, e)
            else:
                assert_exact_equal(g, e)


@pytest.mark.parametrize("name,fn,args,oracle", CASES, ids=[c[0] for c in CASES])
def test_primitive_table(name, fn, args, oracle):
    _check_case(fn, args, oracle)


def _census(fn, args) -> set:
    g = tljax.trace(fn, *args)
    return {eqn.primitive for eqn in iter_eqns(g.jaxpr)}


REFUSALS = {
    "nextafter": (lambda a: lax.nextafter(a, a + 1.0), "next float after a real number"),
    "bitcast_convert_type": (
        lambda a: lax.bitcast_convert_type(a, jnp.int32),
        "reinterpreting bits",
    ),
}


def test_every_rule_in_the_table_is_exercised():
    covered = set()
    for _, fn, args, _ in CASES:
        covered |= _census(fn, args)
    for fn, _ in REFUSALS.values():
        covered |= _census(fn, (D,))
    table = get_semantics("exact").rules
    missing = sorted(p.name for p in table if p not in covered)
    assert not missing, f"rules without a test: {missing}"


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_primitives_say_why(name):
    fn, why = REFUSALS[name]
    with pytest.raises(
        NotImplementedError,
        match=re.escape(f"refuses primitive {name!r}: ") + ".*" + re.escape(why),
    ):
        ev(fn, D)


# ----------------------------------------------------------------------------------------------
# Enclosures and precision.


def test_enclosure_api_and_precision_option():
    y128 = ev(jnp.exp, jnp.float32(1.0))
    y256 = ev(jnp.exp, jnp.float32(1.0), semantics="exact[256]")
    y64 = ev(jnp.exp, jnp.float32(1.0), semantics=exact_semantics(64))
    with mpmath.workprec(400):
        e = mp_to_fraction(mpmath.e)
    for y, bits in ((y64, 64), (y128, 128), (y256, 256)):
        assert isinstance(y, Enclosure)
        assert y.contains(e)[()]
        assert y.lower[()] < e < y.upper[()]
        assert 0 < float(y.rad[()]) < 2.0 ** -(bits - 8)
    assert not y128.contains(np.float64(np.e))[()]  # float64 e is not the real e
    assert str(to_sympy(y128)[()]).startswith("Interval(")
    assert exact_to_float(y128) == np.float64(np.e)
    assert get_semantics("exact[256]").options.precision == 256


def test_enclosure_paths_of_order_and_rounding_ops():
    x = np.array([0.5, -1.0, 2.0, 1.25], np.float32)

    def f(a):
        e = jnp.exp(a)  # balls around e^0.5, e^-1, e^2, e^1.25
        return (
            jnp.argmax(e),
            jnp.argmin(e),
            e.max(),
            lax.cummax(e),
            jnp.maximum(e, 1.5),
            jnp.floor(e),
            e.astype(jnp.int32),
            jnp.sign(e - 2.0),
            e > 1.0,
            lax.reduce_precision(e, 8, 7),
        )

    am, ai, mx, cm, mx2, fl, ci, sg, gt, rp = ev(f, x)
    assert am.tolist() == 2 and ai.tolist() == 1  # decided although the values are balls
    with mpmath.workprec(200):
        ex = [mpmath.exp(mp_frac(Fraction(float(v)))) for v in x]
        assert_encloses(mx, np.array(ex[2], dtype=object))
        assert_encloses(cm, np.array([ex[0], ex[0], ex[2], ex[2]], dtype=object))
        assert_encloses(mx2, np.array([max(v, mpmath.mpf(1.5)) for v in ex], dtype=object))
    # Monotone, decidable results are exact again.
    assert_exact_equal(fl, [Fraction(int(mpmath.floor(v))) for v in ex])
    assert ci.tolist() == [int(v) for v in ex] and ci.source_dtype == np.int32
    assert_exact_equal(sg, [Fraction(-1), Fraction(-1), Fraction(1), Fraction(1)])
    assert gt.tolist() == [True, False, True, True]
    # Rounding of e^a to bf16 is decided and equals ml_dtypes' rounding of the float64 value.
    assert_exact_equal(rp, [Fraction(float(np.float64(v).astype(ml_dtypes.bfloat16))) for v in ex])
    with pytest.raises(ExactDomainError, match="sorting enclosures is not supported"):
        ev(lambda a: jnp.sort(jnp.exp(a)), x)


def test_exact_radius_zero_balls_become_exact_again():
    assert is_exact(ev(lambda a: jnp.exp(a * 0.0) * a, jnp.float32(3.0)))


# ----------------------------------------------------------------------------------------------
# Errors: what, where, what to do.


def test_nan_and_inf_inputs_name_leaf_and_index():
    x = np.array([1.0, np.nan, 2.0], np.float32)
    with pytest.raises(
        InputError, match=r"input leaf 0 \(float32\[3\]\).*index \(1,\): nan.*nan_to_num"
    ):
        ev(lambda a: a * 2.0, x)
    y = np.zeros((2, 2), np.float32)
    y[1, 0] = np.inf
    with pytest.raises(InputError, match=r"input leaf 1 \(float32\[2,2\]\).*index \(1, 0\): inf"):
        ev(lambda a, b: a.sum() + b.sum(), np.ones(3, np.float32), y)


def test_nan_constant_raises_where_it_is_used():
    c = np.array([1.0, np.nan], np.float32)

    def f(x):
        return x * c  # the constant's line must be in the message

    line = f.__code__.co_firstlineno + 1
    with pytest.raises(InputError, match=rf"index \(1,\): nan(.|\n)*at .*{HERE}:{line}"):
        ev(f, np.ones(2, np.float32))
    with pytest.raises(InputError, match=r"float32\[\].*inf"):
        ev(lambda x: jnp.where(x > 0, x, jnp.inf), np.ones(2, np.float32))


def test_division_by_zero_reports_index_and_location():
    def f(x, y):
        return x / y

    line = f.__code__.co_firstlineno + 1
    with pytest.raises(
        ExactDomainError,
        match=rf"division by zero at index \(1,\)(.|\n)*jnp.where(.|\n)*{HERE}:{line}",
    ):
        ev(f, np.ones(3, np.float32), np.array([1.0, 0.0, 2.0], np.float32))
    with pytest.raises(ExactDomainError, match="division by zero"):
        ev(lambda i: i // jnp.int32(0), np.ones(2, np.int32))


def test_domain_and_undecidable_errors_have_location():
    with pytest.raises(
        ExactDomainError, match=rf"log has no finite real value at index \(0,\)(.|\n)*{HERE}"
    ):
        ev(lambda a: jnp.log(a), np.array([-1.0], np.float32))
    # exp(log(2)) is a tiny ball around 2: comparing it with 2 cannot be decided.
    with pytest.raises(
        ExactDomainError,
        match=(
            r"comparison gt of overlapping enclosures cannot be decided(.|\n)*exact\[256\]"
            rf"(.|\n)*{HERE}"
        ),
    ):
        ev(lambda a: jnp.exp(jnp.log(a)) > 2.0, jnp.float32(2.0))
    with pytest.raises(ExactDomainError, match=r"gather index out of bounds.*mode='clip'"):
        ev(lambda a: jnp.take(a, jnp.array([5]), axis=0, mode="fill"), np.ones(3, np.float32))
    with pytest.raises(ExactDomainError, match=r"outside \[-128, 127\]"):
        ev(lambda a: a.astype(jnp.int8), np.array([300.0], np.float32))
    with pytest.raises(ExactDomainError, match="rounds to infinity"):
        ev(lambda a: lax.reduce_precision(a, 5, 10), np.array([1e6], np.float32))


def test_non_array_leaf_is_a_clear_error():
    g = tljax.trace(lambda a: a + 1.0, jnp.float32(0.0))
    with pytest.raises(InputError, match=r"input leaf 0 .*got a str where an array was expected"):
        ev(g, "abc")
    with pytest.raises(InputError, match=r"object array holds a dict"):
        ev(g, np.array({"a": 1}, dtype=object))


def test_tracing_the_exact_semantics_is_a_clear_error():
    f = jax.jit(lambda a: ev(lambda b: b * 2.0, a))
    with pytest.raises(InputError, match=r"cannot be traced.*outside jax.jit"):
        f(jnp.ones(2))


def test_unknown_primitive_is_unsupported():
    with pytest.raises(UnsupportedPrimitiveError, match="no rule for primitive 'population_count'"):
        ev(lambda i: lax.population_count(i), np.ones(2, np.int32))


def test_exact_is_registered_and_is_a_semantics():
    sem = get_semantics("exact")
    assert isinstance(sem, Semantics) and sem.name == "exact" and not sem.traceable
