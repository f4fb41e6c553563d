"""`float[FORMAT]` semantics against independent references (ml_dtypes, numpy, brute force)."""

from __future__ import annotations

import itertools
import math
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax import lax

import tljax
from tljax.core import InputError, UnsupportedPrimitiveError
from tljax.interpret._float import float_semantics, rules

ML = {
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
}


def ml_round(x, dtype):
    """ml_dtypes' rounding of float32 values (RNE; float64 inputs go through float32)."""
    with np.errstate(all="ignore"):
        return np.asarray(x).astype(np.float32).astype(dtype).astype(np.float32)


def q64(x, dtype):
    """`ml_round` as float64 (the operands' exact values)."""
    with np.errstate(all="ignore"):  # NaN payload casts
        return ml_round(x, dtype).astype(np.float64)


def rne_from_f64(z, dtype):
    """Round-to-nearest-even of float64 `z` to `dtype`, directly (no float32 step): the nearest of
    the enumerated finite values, ties to the even bit pattern. For in-range values only."""
    n = 1 << (8 * np.dtype(dtype).itemsize)
    pats = np.arange(n, dtype=np.uint16 if n > 256 else np.uint8)
    with np.errstate(all="ignore"):
        vals = pats.view(dtype).astype(np.float64)
    keep = np.isfinite(vals) & ~((vals == 0) & np.signbit(vals))
    vals, pats = vals[keep], pats[keep]
    order = np.argsort(vals)
    vals, pats = vals[order], pats[order]
    z = np.asarray(z, np.float64)
    hi = np.clip(np.searchsorted(vals, z), 1, len(vals) - 1)
    lo = hi - 1
    dlo, dhi = z - vals[lo], vals[hi] - z
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (pats[hi] % 2 == 0))
    out = np.where(pick_hi, vals[hi], vals[lo])
    return np.where(out == 0, np.copysign(0.0, z), out).astype(np.float32)


def bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    u = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize]
    same = a.view(u) == b.view(u)
    if np.issubdtype(a.dtype, np.floating) or a.dtype == ml_dtypes.bfloat16:
        same |= np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32))
    return bool(np.all(same))


def emulate(fn, *args, semantics, jit=True):
    if jit:
        return jax.jit(lambda *a: tljax.evaluate(fn, *a, semantics=semantics))(*args)
    return tljax.evaluate(fn, *args, semantics=semantics)


def _pairs(n, seed):
    rng = np.random.default_rng(seed)
    scale = np.exp2(rng.integers(-20, 20, size=(2, n)))
    x, y = (rng.standard_normal((2, n)) * scale).astype(np.float32)
    raw = (
        rng.integers(0, 2**32, size=(2, n // 10), dtype=np.uint64)
        .astype(np.uint32)
        .view(np.float32)
    )
    return np.concatenate([x, raw[0]]), np.concatenate([y, raw[1]])


# ------------------------------------------------------------------------------------------
# Elementwise arithmetic is correctly rounded (p <= 11: float32 compute + one rounding).

BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


@pytest.mark.parametrize("name", sorted(ML))
@pytest.mark.parametrize("op", [*BINARY, "sqrt"])
def test_elementwise_is_correctly_rounded(name, op):
    dt = ML[name]
    x, y = _pairs(100_000, seed=len(op) + len(name))
    xq, yq = q64(x, dt), q64(y, dt)
    with np.errstate(all="ignore"):
        if op == "sqrt":
            x, xq = np.abs(x), np.abs(xq)
            exact = np.sqrt(xq)
            fn = jnp.sqrt
            ours = np.asarray(emulate(fn, x, semantics=f"float[{name}]"))
        else:
            exact = BINARY[op](xq, yq)
            fn = getattr(
                jnp, {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide"}[op]
            )
            ours = np.asarray(emulate(fn, x, y, semantics=f"float[{name}]"))
    # float64 holds the exact +,-,*,/,sqrt of these operands to within a rounding that the
    # float32 step of ml_dtypes' cast cannot turn into a wrong result (53 >= 2·24 + 2).
    ref = ml_round(exact, dt)
    keep = np.ones(x.shape, bool)
    if name == "bf16":
        # XLA:CPU flushes float32 subnormals (FTZ/DAZ): bf16 subnormal operands and results are
        # covered by test_bf16_subnormals_* below.
        with np.errstate(all="ignore"):

            def tiny(v):
                return (np.abs(v) < 2.0**-126) & (v != 0)

            keep = ~(tiny(xq) | tiny(exact) | (tiny(yq) if op != "sqrt" else False))
    assert bits_equal(ours[keep], ref[keep]), f"{op} under float[{name}]"
    assert keep.mean() > 0.9


def test_transcendentals_are_rounded_float32_libm():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(20_000) * 3).astype(np.float32)
    xq = ml_round(x, ml_dtypes.bfloat16)
    for fn in (jnp.exp, jnp.tanh, jax.nn.sigmoid, jnp.sin, lambda v: jnp.log(jnp.abs(v)), lax.erf):
        ours = np.asarray(emulate(fn, x, semantics="float[bf16]", jit=False))
        assert bits_equal(ours, ml_round(np.asarray(fn(jnp.asarray(xq))), ml_dtypes.bfloat16))


FP32_OPS = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "sqrt": lambda x, y: jnp.sqrt(jnp.abs(x)),
    "rsqrt": lambda x, y: lax.rsqrt(jnp.abs(x)),
    "exp": lambda x, y: jnp.exp(x),
    "log": lambda x, y: jnp.log(jnp.abs(x)),
    "log1p": lambda x, y: jnp.log1p(jnp.abs(x)),
    "expm1": lambda x, y: jnp.expm1(x),
    "tanh": lambda x, y: jnp.tanh(x),
    "logistic": lambda x, y: jax.nn.sigmoid(x),
    "sin": lambda x, y: jnp.sin(x),
    "cos": lambda x, y: jnp.cos(x),
    "erf": lambda x, y: lax.erf(x),
    "pow": lambda x, y: jnp.abs(x) ** y,
    "integer_pow": lambda x, y: x**3,
    "max": lambda x, y: jnp.maximum(x, y),
    "abs_neg": lambda x, y: -jnp.abs(x),
    "int_to_float": lambda x, y: (x * 1e7).astype(jnp.int32).astype(jnp.float32) + 0.5,
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_fp32_equals_reference_for_elementwise_ops(jit):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(4096) * 4).astype(np.float32)
    y = (rng.standard_normal(4096)).astype(np.float32)
    for name, fn in FP32_OPS.items():
        ours = emulate(fn, x, y, semantics="float[fp32]", jit=jit)
        ref = emulate(fn, x, y, semantics="reference", jit=jit)
        assert bits_equal(ours, ref), name
        assert bits_equal(ours, (jax.jit(fn) if jit else fn)(jnp.asarray(x), jnp.asarray(y))), name


# ------------------------------------------------------------------------------------------
# Whole programs.


def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def _mlp_args(batch=8, dims=(784, 256, 256, 256, 10), seed=0):
    rng = np.random.default_rng(seed)
    params = [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (0.1 * rng.standard_normal(b)).astype(np.float32),
        )
        for a, b in itertools.pairwise(dims)
    ]
    return params, rng.standard_normal((batch, dims[0])).astype(np.float32)


@pytest.mark.parametrize(
    "sem",
    [
        "float[bf16]",
        "float[e4m3fn]",
        "float[bf16,sr,seed=3]",
        "float[e5m2,acc=fp16]",
    ],
)
def test_mlp_jit_equals_eager(sem):
    params, x = _mlp_args()
    g = tljax.trace(mlp, params, x)
    eager = tljax.evaluate(g, params, x, semantics=sem)
    jitted = jax.jit(lambda p, v: tljax.evaluate(g, p, v, semantics=sem))(params, x)
    assert eager.dtype == np.float32 and eager.shape == (8, 10)
    assert bits_equal(eager, jitted)
    fmt = re.match(r"float\[(\w+)", sem).group(1)
    assert bits_equal(np.asarray(eager), ml_round(eager, ML[fmt]))  # values of the format
    ref = np.asarray(mlp(params, x))
    assert not np.array_equal(np.asarray(eager), ref)
    assert np.allclose(np.asarray(eager), ref, atol=0.5)


def _program(x, xs):
    @jax.jit
    def inner(v):
        return jnp.where(v > 0, v * 1.1, v / 3.0)

    @jax.custom_vjp
    def cube(v):
        return v * v * v

    cube.defvjp(lambda v: (cube(v), v), lambda v, g: (3 * v * v * g,))

    y = jax.nn.relu(inner(x)) + cube(x)
    y = lax.cond(y.sum() > 0, lambda v: v * 0.7, lambda v: v + 1.0, y)
    c, ys = lax.scan(lambda c, u: (c * 0.9 + u, c), y, xs)
    c = lax.fori_loop(0, jnp.int32(xs.shape[0]) - 1, lambda i, v: v * 1.01 + 0.5, c)  # while
    c = jax.checkpoint(lambda v: jnp.sin(v) * v)(c)
    return c, ys, jnp.argmax(ys, axis=0)


def test_higher_order_program_fp32_equals_reference_and_bf16_jit_equals_eager():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(16).astype(np.float32)
    xs = rng.standard_normal((5, 16)).astype(np.float32)
    g = tljax.trace(_program, x, xs)
    prims = {e.primitive.name for e in g.jaxpr.eqns}
    assert {"jit", "custom_vjp_call", "cond", "scan", "while", "remat2"} <= prims
    ref = tljax.evaluate(g, x, xs, semantics="reference")
    for a, b in zip(
        jax.tree.leaves(tljax.evaluate(g, x, xs, semantics="float[fp32]")),
        jax.tree.leaves(ref),
        strict=True,
    ):
        assert bits_equal(a, b)
    eager = tljax.evaluate(g, x, xs, semantics="float[bf16]")
    jitted = jax.jit(lambda *a: tljax.evaluate(g, *a, semantics="float[bf16]"))(x, xs)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        assert bits_equal(a, b)
    assert eager[2].dtype == ref[2].dtype


def test_scan_rounds_every_step_like_a_python_loop():
    rng = np.random.default_rng(5)
    xs = rng.standard_normal(64).astype(np.float32)
    c, ys = emulate(
        lambda xs: lax.scan(lambda c, u: (c * 0.9 + u, c), jnp.float32(0), xs),
        xs,
        semantics="float[bf16]",
    )
    bf = ml_dtypes.bfloat16
    xq, k, cur, want = ml_round(xs, bf), ml_round(np.float32(0.9), bf), np.float32(0), []
    for u in xq:
        want.append(cur)
        cur = ml_round(ml_round(np.float32(cur * k), bf) + u, bf)
    assert bits_equal(np.asarray(ys), np.array(want, np.float32))
    assert bits_equal(np.asarray(c), np.float32(cur))


# ------------------------------------------------------------------------------------------
# Accumulation formats.


def test_dot_default_rounds_once_exact_sums():
    # Small integers: every product and partial sum is exact in float32, so the result must be the
    # exact dot product rounded once.
    rng = np.random.default_rng(6)
    a = rng.integers(-40, 40, size=(7, 300)).astype(np.float32)
    b = rng.integers(-40, 40, size=(300, 5)).astype(np.float32)
    out = emulate(jnp.matmul, a, b, semantics="float[bf16]")
    exact = a.astype(np.int64) @ b.astype(np.int64)
    assert bits_equal(out, rne_from_f64(exact.astype(np.float64), ml_dtypes.bfloat16))


def _sequential_dot(a, b, acc_dtype):
    """Reference for accumulate-in-format: s = round_acc(s + a_k·b_k), k in order, from float64."""
    s = np.zeros((a.shape[0], b.shape[1]), np.float64)
    for k in range(a.shape[1]):
        s = rne_from_f64(s + np.outer(a[:, k], b[k]).astype(np.float64), acc_dtype).astype(
            np.float64
        )
    return s


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_dot_accumulate_in_target_matches_sequential_loop(jit):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 48)).astype(np.float32)
    b = rng.standard_normal((48, 5)).astype(np.float32)
    bf = ml_dtypes.bfloat16
    ref = _sequential_dot(
        ml_round(a, bf).astype(np.float64), ml_round(b, bf).astype(np.float64), bf
    )
    out = emulate(jnp.matmul, a, b, semantics="float[bf16,acc=target]", jit=jit)
    assert bits_equal(out, ref.astype(np.float32))
    default = emulate(jnp.matmul, a, b, semantics="float[bf16]", jit=jit)
    assert not bits_equal(out, default)  # per-add rounding is visibly different


def test_dot_general_batched_accumulate_wider_format():
    rng = np.random.default_rng(8)
    a = rng.standard_normal((3, 4, 20)).astype(np.float32)
    b = rng.standard_normal((3, 20, 2)).astype(np.float32)
    out = np.asarray(
        emulate(
            lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b, semantics="float[e4m3fn,acc=fp16]"
        )
    )
    e4 = ml_dtypes.float8_e4m3fn
    aq, bq = ml_round(a, e4).astype(np.float64), ml_round(b, e4).astype(np.float64)
    for i in range(3):
        s = _sequential_dot(aq[i], bq[i], np.float16)
        assert bits_equal(out[i], ml_round(s, e4))  # fp16 partial sums, one final e4m3fn rounding


def test_sum_stagnates_with_target_accumulation():
    x = np.full(301, 2.0**-9, np.float32)
    x[0] = 1.0
    acc = emulate(jnp.sum, x, semantics="float[bf16,acc=target]")
    wide = emulate(jnp.sum, x, semantics="float[bf16]")
    assert float(acc) == 1.0  # 1 + 2^-9 is a tie that rounds back to 1, 300 times
    assert float(wide) == float(ml_round(np.float32(1 + 300 * 2.0**-9), ml_dtypes.bfloat16))


def test_reduce_sum_and_cumsum_accumulate_in_order():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 40)).astype(np.float32)
    bf = ml_dtypes.bfloat16
    xq = ml_round(x, bf).astype(np.float64)
    s = np.zeros(5)
    partial = []
    for k in range(40):
        s = rne_from_f64(s + xq[:, k], bf).astype(np.float64)
        partial.append(s)
    out = emulate(lambda v: v.sum(axis=1), x, semantics="float[bf16,acc=bf16]")
    assert bits_equal(out, s.astype(np.float32))
    cs = emulate(lambda v: jnp.cumsum(v, axis=1), x, semantics="float[bf16,acc=target]")
    assert bits_equal(cs, np.stack(partial, axis=1).astype(np.float32))


def _conv_ref(x, w, groups, acc_dtype=None):
    """NHWC x HWIO 'VALID' stride-1 conv by loops. With `acc_dtype`, the sum is rounded after every
    addition, over (input feature, kh, kw) in that order (the order the semantics documents)."""
    _, h, wd, _ = x.shape
    kh, kw, cg, cout = w.shape
    og = cout // groups
    out = np.zeros((x.shape[0], h - kh + 1, wd - kw + 1, cout), np.float64)
    for o in range(cout):
        g = o // og
        for c in range(cg):
            for i in range(kh):
                for j in range(kw):
                    term = x[:, i : i + h - kh + 1, j : j + wd - kw + 1, g * cg + c] * w[i, j, c, o]
                    out[..., o] += term
                    if acc_dtype is not None:
                        out[..., o] = rne_from_f64(out[..., o], acc_dtype)
    return out


@pytest.mark.parametrize("acc", [None, "target"])
def test_conv_matches_loop_reference(acc):
    rng = np.random.default_rng(10)
    groups = 2
    if acc is None:  # small integers: exact sums, one rounding
        x = rng.integers(-8, 8, size=(2, 6, 5, 4)).astype(np.float32)
        w = rng.integers(-8, 8, size=(3, 2, 2, 6)).astype(np.float32)
    else:
        x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
        w = rng.standard_normal((3, 2, 2, 6)).astype(np.float32)

    def conv(x, w):
        return lax.conv_general_dilated(
            x,
            w,
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )

    bf = ml_dtypes.bfloat16
    sem = "float[bf16]" if acc is None else "float[bf16,acc=target]"
    out = emulate(conv, x, w, semantics=sem)
    xq, wq = ml_round(x, bf).astype(np.float64), ml_round(w, bf).astype(np.float64)
    ref = _conv_ref(xq, wq, groups, None if acc is None else bf)
    assert bits_equal(out, rne_from_f64(ref, bf))


# ------------------------------------------------------------------------------------------
# Stochastic rounding through the semantics.


def _sr(seed, **kw):
    return float_semantics("bf16", rounding="stochastic", key=jax.random.key(seed), **kw)


def test_stochastic_reproducible_and_fresh_per_site():
    x = np.full(4096, 1.0 + 2.0**-7, np.float32)  # a bf16 value; 3x is not

    def f(x):
        return x * 3.0, x * 3.0  # two rounding sites with the same exact result

    sem = _sr(0)
    a1, b1 = tljax.evaluate(f, x, semantics=sem)
    a2, b2 = tljax.evaluate(f, x, semantics=sem)
    assert bits_equal(a1, a2) and bits_equal(b1, b2)  # the same key: the same draws
    assert not bits_equal(a1, b1)  # another site: other bits
    a3, _ = tljax.evaluate(f, x, semantics=_sr(1))
    assert not bits_equal(a1, a3)
    aj, bj = jax.jit(lambda v: tljax.evaluate(f, v, semantics=sem))(x)
    assert bits_equal(a1, aj) and bits_equal(b1, bj)


def test_stochastic_scan_iterations_draw_fresh_bits():
    xs = np.full((6, 2048), 1.0 + 2.0**-7, np.float32)
    ys = np.asarray(
        emulate(lambda xs: lax.scan(lambda c, u: (c, u * 3.0), 0.0, xs)[1], xs, semantics=_sr(2))
    )
    assert len({r.tobytes() for r in ys}) == 6
    ws = np.asarray(
        emulate(
            lambda x: lax.fori_loop(0, jnp.int32(2), lambda i, c: c * 1.001, x),
            xs[0],
            semantics=_sr(2),
        )
    )
    assert ws.shape == (2048,)


@pytest.mark.parametrize("random_bits", ["jax", "hash"])
def test_stochastic_product_is_unbiased(random_bits):
    n = 100_000
    x = np.full(n, 1.0 + 2.0**-7, np.float32)  # a bf16 value; x·x = 1 + 2^-6 + 2^-14
    out = np.asarray(emulate(lambda v: v * v, x, semantics=_sr(5, random_bits=random_bits))).astype(
        np.float64
    )
    exact = (1.0 + 2.0**-7) ** 2
    lo, hi = 1.0 + 2.0**-6, 1.0 + 2.0**-6 + 2.0**-7
    assert set(np.unique(out).tolist()) == {lo, hi}
    q = (exact - lo) / (hi - lo)  # = 2^-7·... exactly 1/128
    assert abs((out == hi).sum() - n * q) <= 4 * math.sqrt(n * q * (1 - q))


# ------------------------------------------------------------------------------------------
# Conversions, subnormals, outputs, errors.


def test_int_to_float_conversion_is_rounded_once():
    n = np.int32(2**24 + 2**16 + 1)  # above the bf16 midpoint; float32 would first make it a tie
    out = emulate(lambda v: v.astype(jnp.float32), n, semantics="float[bf16]")
    assert float(out) == 2.0**24 + 2.0**17
    assert (
        float(ml_round(np.float32(n), ml_dtypes.bfloat16)) == 2.0**24
    )  # the double rounding avoided


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="documents XLA:CPU's FTZ")
def test_bf16_subnormals_flushed_by_xla_cpu_and_ftz_out():
    a = np.float32(2.0**-70)
    b = np.float32(2.0**-60 * 1.5)  # a·b = 1.5·2^-130: a bf16 subnormal
    assert float(emulate(jnp.multiply, a, b, semantics="float[bf16]")) == 0.0  # XLA:CPU FTZ
    # A subnormal input survives lifting (integer kernel), unless ftz_out flushes it.
    s = np.float32(1.5 * 2.0**-130)
    assert float(emulate(lambda v: v, s, semantics="float[bf16]")) == float(s)
    assert float(emulate(lambda v: v, s, semantics="float[bf16,ftz]")) == 0.0


def test_bf16_subnormals_exact_with_float64_compute():
    with jax.enable_x64(True):
        a = np.float32(2.0**-70)
        b = np.float32(2.0**-60 * 1.5)
        out = emulate(jnp.multiply, a, b, semantics="float[bf16,compute=float64]")
        assert out.dtype == np.float32 and float(out) == 1.5 * 2.0**-130
        rng = np.random.default_rng(11)
        x = (rng.standard_normal(20_000) * 2.0**-66).astype(np.float32)
        y = (rng.standard_normal(20_000) * 2.0**-62).astype(np.float32)
        bf = ml_dtypes.bfloat16
        exact = ml_round(x, bf).astype(np.float64) * ml_round(y, bf).astype(np.float64)  # exact
        ours = emulate(jnp.multiply, x, y, semantics="float[bf16,compute=float64]")
        assert bits_equal(ours, ml_round(exact, bf))
        assert (np.abs(exact) < 2.0**-126).mean() > 0.5


def test_fp64_and_directed_fp32_need_x64():
    with pytest.raises(InputError, match=re.escape("jax_enable_x64 is off")):
        float_semantics("fp64")
    with pytest.raises(InputError, match="jax_enable_x64 is off"):
        tljax.evaluate(lambda v: v + 1, np.float32(1), semantics="float[fp32,rtz]")
    with jax.enable_x64(True):
        x = np.array([1.0, 2.0], np.float32)
        y = np.float32(3.0)
        out = emulate(lambda v, w: v / w, x, y, semantics="float[fp32,rtz]")
        assert out.dtype == np.float32
        assert float(out[0]) == float(
            np.nextafter(np.float32(1 / 3), np.float32(0))
        )  # RN(1/3) rounds up
        out64 = emulate(lambda v: v / 3.0, np.array([1.0]), semantics="float[fp64]")
        assert out64.dtype == np.float64 and float(out64[0]) == 1 / 3


def test_output_dtypes_follow_the_program():
    x = jnp.arange(4, dtype=jnp.float32) / 3

    def f(v):
        return v.astype(jnp.bfloat16) * 2, jnp.argmax(v), v * 2

    a, i, b = tljax.evaluate(f, x, semantics="float[bf16]")
    assert a.dtype == jnp.bfloat16 and i.dtype == jnp.int32 and b.dtype == jnp.float32
    a, _, b = tljax.evaluate(f, x, semantics="float[fp16]")
    assert a.dtype == jnp.float32  # bf16 cannot hold every fp16 value: storage dtype


def test_integer_only_and_random_primitives_pass_through():
    def f(key, x):
        noise = jax.random.normal(key, x.shape)
        return x + noise, jnp.argsort(jnp.arange(5)[::-1]), (jnp.arange(6) >> 1).sum()

    key = jax.random.key(0)
    x = jnp.ones(8, jnp.float32)
    out, idx, s = tljax.evaluate(f, key, x, semantics="float[bf16]")
    np.testing.assert_array_equal(np.asarray(idx), [4, 3, 2, 1, 0])
    assert int(s) == 6
    assert bits_equal(out, ml_round(out, ml_dtypes.bfloat16))


def test_unsupported_float_primitive_is_an_error_with_location():
    with pytest.raises(
        UnsupportedPrimitiveError,
        match=r"semantics 'float\[bf16\]' has no rule for primitive 'nextafter'",
    ):
        tljax.evaluate(lambda v: lax.nextafter(v, v + 1), np.float32(1), semantics="float[bf16]")


def test_names_options_and_errors():
    assert tljax.get_semantics("float[bf16,rtz]").options.rounding == "toward_zero"
    sem = tljax.get_semantics("float[bf16,acc=fp32]")
    assert sem.options.accumulate is None and sem.traceable  # fp32 accumulation is the default path
    assert tljax.get_semantics("float[bf16,acc=target]").options.accumulate.name == "bf16"
    assert float_semantics("e4m3fn", rounding="up").name == "float[e4m3fn,rup]"
    with pytest.raises(InputError, match=r"unknown option 'fast'"):
        tljax.get_semantics("float[bf16,fast]")
    with pytest.raises(InputError, match=r"needs a seed"):
        tljax.get_semantics("float[bf16,sr]")
    with pytest.raises(InputError, match=r"unknown float format 'bf17'"):
        tljax.get_semantics("float[bf17]")
    with pytest.raises(InputError, match="needs an explicit PRNG key"):
        float_semantics("bf16", rounding="stochastic")


def test_grad_and_vmap_through_the_semantics():
    def f(v):
        return v * 3.0

    g = jax.grad(lambda v: tljax.evaluate(f, v, semantics="float[bf16]").sum())(jnp.ones(3) * 1.001)
    np.testing.assert_array_equal(np.asarray(g), [3.0, 3.0, 3.0])  # straight-through rounding
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    v = jax.vmap(lambda r: tljax.evaluate(f, r, semantics="float[e5m2]"))(x)
    assert bits_equal(v, emulate(f, x, semantics="float[e5m2]"))


def test_rule_table_covers_the_families():
    names = {p.name for p in rules}
    wanted = [
        "add", "mul", "div", "sqrt", "exp", "tanh", "logistic", "erf", "integer_pow", "max", "abs",
        "dot_general", "conv_general_dilated", "reduce_sum", "reduce_max", "cumsum", "reshape",
        "broadcast_in_dim", "transpose", "select_n", "gather", "concatenate", "pad", "lt",
        "convert_element_type", "iota", "argmax", "add_any", "square", "exp2",
    ]  # fmt: skip
    for n in wanted:
        assert n in names, n


def test_stochastic_key_as_a_jit_argument():
    x = np.full(2048, 1.0 + 2.0**-7, np.float32)

    @jax.jit
    def run(v, key):
        return tljax.evaluate(
            lambda u: u * 3.0, v, semantics=float_semantics("bf16", rounding="stochastic", key=key)
        )

    a, b = run(x, jax.random.key(1)), run(x, jax.random.key(2))
    assert not bits_equal(a, b)  # fresh draws per key, one compiled program
    assert bits_equal(a, tljax.evaluate(lambda u: u * 3.0, x, semantics=_sr(1)))


def test_trusted_inputs_skip_input_rounding():
    params, x = _mlp_args(batch=2)
    g = tljax.trace(mlp, params, x)
    from tljax.interpret._rounding import round_to_format

    pre = jax.tree.map(lambda v: round_to_format(v, "bf16"), (params, x))
    trusted = tljax.evaluate(g, *pre, semantics="float[bf16,trusted_inputs]")
    assert bits_equal(trusted, tljax.evaluate(g, params, x, semantics="float[bf16]"))
    raw = tljax.evaluate(lambda v: v, x, semantics="float[bf16,trusted_inputs]")
    assert bits_equal(raw, x)  # taken as given


def test_overflow_in_storage_follows_the_rounding_direction():
    big = np.array([100.0, -100.0], np.float32)  # exp(100) overflows float32 itself
    bf_max = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    rtz = np.asarray(emulate(jnp.exp, big, semantics="float[bf16,rtz]"))
    np.testing.assert_array_equal(rtz, np.array([bf_max, 0.0], np.float32))  # toward zero: xmax
    assert np.isposinf(np.asarray(emulate(jnp.exp, big, semantics="float[bf16,rup]"))[0])
    assert np.isnan(np.asarray(emulate(jnp.exp, big, semantics="float[e4m3fn]"))[0])  # no inf
    np.testing.assert_array_equal(
        emulate(jnp.exp, big, semantics="float[e4m3fn,rtz]"), [448.0, 0.0]
    )


def test_infinities_in_the_program_survive_formats_without_inf():
    # e4m3fn has no infinity, but a -inf mask is a value of the program, not an overflow.
    y = np.array([1.0, -2.0, 3.0], np.float32)

    def f(v):
        return jax.nn.softmax(jnp.where(v > 0, v, -jnp.inf)), v - jnp.inf

    sm, shifted = emulate(f, y, semantics="float[e4m3fn]")
    assert np.all(np.isneginf(np.asarray(shifted)))
    e4 = ml_dtypes.float8_e4m3fn
    u = ml_round(np.exp(np.float32(1.0 - 3.0)), e4)  # exp(-2), then the sum and the division
    s = ml_round(np.float32(u + 1.0), e4)
    expect = ml_round(np.array([u / s, 0.0, 1.0 / s], np.float32), e4)
    assert bits_equal(sm, expect)


def _cnn(x, w, q):
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jax.nn.gelu(y)
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    y = y.reshape(y.shape[0], -1)
    a = jax.nn.softmax(y @ q, axis=-1)
    ln = (y - y.mean(-1, keepdims=True)) / jnp.sqrt(y.var(-1, keepdims=True) + 1e-5)
    masked = jnp.where(y > 0, y, -jnp.inf).max(-1)
    return (
        a,
        ln,
        jnp.linalg.norm(y),
        jax.nn.log_softmax(y),
        jnp.cumsum(y, 1),
        jnp.sort(y, 1),
        masked,
    )


def test_cnn_softmax_layernorm_jit_equals_eager():
    sem = "float[e4m3fn,rtz]"  # a format without inf, a directed mode: the trickiest paths
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    q = rng.standard_normal((64, 5)).astype(np.float32)
    g = tljax.trace(_cnn, x, w, q)
    eager = tljax.evaluate(g, x, w, q, semantics=sem)
    jitted = jax.jit(lambda *a: tljax.evaluate(g, *a, semantics=sem))(x, w, q)
    for a, b in zip(eager, jitted, strict=True):
        assert bits_equal(a, b)
