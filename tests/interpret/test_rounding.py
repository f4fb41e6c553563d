"""The bit-pattern rounding kernel against independent references.

References: ml_dtypes casts (round to nearest even) and a brute-force rounding that enumerates the
target format's values and searches them with np.searchsorted (every mode, custom formats).
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import tljax
from tljax.core import InputError
from tljax.interpret._rounding import Format, add_round_to_odd, get_format, round_to_format

ML = {
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
}
EXTRA_ML = {
    "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
}
DIRECTED = ("toward_zero", "up", "down")


def _rnd(x, fmt, mode="nearest", **kw):
    return np.asarray(jax.jit(lambda v: round_to_format(v, fmt, mode, **kw))(np.asarray(x)))


def _same(ours, ref):
    """Bitwise equal, with any NaN equal to any NaN (payloads are not modelled)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    u = ours.view(np.uint32 if ours.dtype == np.float32 else np.uint64)
    v = ref.view(np.uint32 if ref.dtype == np.float32 else np.uint64)
    return (u == v) | (np.isnan(ours) & np.isnan(ref))


def _assert_same(x, ours, ref, what):
    ok = _same(ours, ref)
    if not ok.all():
        i = np.nonzero(~ok)[0][:8]
        raise AssertionError(
            f"{what}: {int((~ok).sum())} mismatches of {ok.size}; first: x={x[i]!r} "
            f"ours={np.asarray(ours)[i]!r} ref={np.asarray(ref)[i]!r}"
        )


# ------------------------------------------------------------------------------------------
# Independent references.


def _ml_cast(x, dtype) -> np.ndarray:
    """ml_dtypes' round trip float32 -> dtype -> float32 (the reference for round to nearest)."""
    with np.errstate(all="ignore"):
        return np.asarray(x).astype(dtype).astype(np.float32)


def _values_from_ml(dtype) -> np.ndarray:
    n = np.iinfo(np.uint16 if np.dtype(dtype).itemsize == 2 else np.uint8).max + 1
    with np.errstate(all="ignore"):  # the NaN patterns
        return np.arange(n, dtype=np.uint16 if n > 256 else np.uint8).view(dtype).astype(np.float64)


def _values_from_spec(fmt: Format) -> np.ndarray:
    """Every finite value of `fmt`, from its definition (sign, significand M, exponent)."""
    m = fmt.mantissa_bits
    vals = [0.0]
    if fmt.subnormals:
        vals += [math.ldexp(k, fmt.emin - m) for k in range(1, 1 << m)]
    for e in range(fmt.emin, fmt.emax + 1):
        for M in range(1 << m, 1 << (m + 1)):
            v = math.ldexp(M, e - m)
            if v <= fmt.xmax:
                vals.append(v)
    pos = np.array(vals)
    return np.concatenate([-pos, pos])


def _significand(v: np.ndarray, fmt: Format) -> np.ndarray:
    """Integral significand M of |v| in the format's grid (v = M·2^(max(e, emin) - m))."""
    a = np.abs(np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0))
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    q = np.maximum(e, fmt.emin) - fmt.mantissa_bits
    return np.round(a / np.exp2(q)).astype(np.int64)


def brute_round(x, fmt: Format, mode: str, finite_values: np.ndarray | None = None) -> np.ndarray:
    """Rounds float32/float64 `x` to `fmt` by searching the sorted set of its values."""
    with np.errstate(all="ignore"):
        return _brute_round(x, fmt, mode, finite_values)


def _brute_round(x, fmt, mode, finite_values):
    x = np.asarray(x)
    xf = x.astype(np.float64)
    if finite_values is None:
        finite_values = _values_from_spec(fmt)
    fv = finite_values[np.isfinite(finite_values)]
    vals = np.unique(fv)  # merges ±0
    top = fmt.xmax
    ulp_top = math.ldexp(1.0, fmt.emax - fmt.mantissa_bits)
    virt = top + ulp_top  # the next grid value if the exponent range were unbounded
    ext = np.concatenate([[-virt], vals, [virt]])
    with np.errstate(invalid="ignore"):
        hi_i = np.clip(np.searchsorted(ext, xf, side="left"), 0, len(ext) - 1)
        lo_i = np.clip(np.searchsorted(ext, xf, side="right") - 1, 0, len(ext) - 1)
    lo, hi = ext[lo_i], ext[hi_i]
    over_val = {"inf": np.inf, "nan": np.nan, "saturate": top}[fmt.overflow]
    pos = xf > 0
    if mode == "down":
        out = np.where(xf < -top, -over_val, np.minimum(lo, top))
    elif mode == "up":
        out = np.where(xf > top, over_val, np.maximum(hi, -top))
    elif mode == "toward_zero":
        out = np.where(pos, np.minimum(lo, top), np.maximum(hi, -top))
    else:
        dlo, dhi = xf - lo, hi - xf
        M_lo = np.where(np.abs(lo) == virt, 0, _significand(lo, fmt))  # 2^(emax+1): even
        M_hi = np.where(np.abs(hi) == virt, 0, _significand(hi, fmt))
        if (
            fmt.overflow != "inf"
            or fmt.xmax != Format(fmt.exponent_bits, fmt.mantissa_bits, bias=fmt.bias).xmax
        ):
            # virt is a plain next grid value (e.g. 480 for e4m3fn): its significand decides
            M_lo = np.where(np.abs(lo) == virt, _significand(np.abs(lo), fmt) % 2 + 0, M_lo)
            M_hi = np.where(np.abs(hi) == virt, _significand(np.abs(hi), fmt) % 2 + 0, M_hi)
        # A tie between two even significands (0 and 2^emin without subnormals) goes to 0.
        lo_even = (M_lo % 2 == 0) & ((M_hi % 2 != 0) | (np.abs(lo) < np.abs(hi)))
        out = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo_even, lo, hi)))
        out = np.where(np.abs(out) >= virt, np.sign(xf) * over_val, out)
    out = np.where(
        np.isinf(xf),
        np.sign(xf) * {"inf": np.inf, "nan": np.nan, "saturate": top}[fmt.overflow],
        out,
    )
    out = np.where(np.isnan(xf), np.nan, out)
    # A zero result keeps the sign of x (none when the format has no -0).
    out = np.where(out == 0, np.copysign(0.0, xf) if fmt.neg_zero else 0.0, out)
    return out.astype(x.dtype)


def _f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def edge_cases(fmt: Format, finite_values: np.ndarray) -> np.ndarray:
    """Specials, every target value, midpoints (ties) and their f32 neighbours, overflow edges."""
    specials = _f32(
        [
            0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00800000,
            0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFFC00000,
            0x7FFFFFFF, 0xFF812345, 0x3F800000, 0xBF800000, 0x00400000, 0x00000003,
        ]
    )  # fmt: skip
    v = np.unique(finite_values[np.isfinite(finite_values)])
    top = fmt.xmax
    virt = top + math.ldexp(1.0, fmt.emax - fmt.mantissa_bits)
    ext = np.concatenate([[-virt], v, [virt]])
    mids = (ext[:-1] + ext[1:]) / 2
    pts = np.concatenate([ext, mids, [2 * virt, -2 * virt]])
    with np.errstate(all="ignore"):
        pts32 = pts.astype(np.float32)
    pts32 = pts32[pts32.astype(np.float64) == pts]  # exactly representable ties only
    near = np.concatenate(
        [pts32, np.nextafter(pts32, np.float32(np.inf)), np.nextafter(pts32, np.float32(-np.inf))]
    )
    return np.concatenate([specials, near]).astype(np.float32)


def random_f32(n: int, seed: int) -> np.ndarray:
    return (
        np.random.default_rng(seed)
        .integers(0, 2**32, size=n, dtype=np.uint64)
        .astype(np.uint32)
        .view(np.float32)
    )


def _in_range_f32(fmt: Format, n: int, seed: int) -> np.ndarray:
    """Random float32 patterns whose exponents lie within the format's range (plus a margin)."""
    rng = np.random.default_rng(seed)
    lo_e = max(fmt.emin - fmt.mantissa_bits - 3, -149)
    e = rng.integers(lo_e, fmt.emax + 3, size=n)
    mant = rng.integers(0, 1 << 23, size=n)
    sign = rng.integers(0, 2, size=n)
    x = np.ldexp(1.0 + mant / 2.0**23, e) * np.where(sign == 1, -1.0, 1.0)
    with np.errstate(over="ignore"):  # exponents past float32's range become ±inf
        return x.astype(np.float32)


# ------------------------------------------------------------------------------------------
# Round to nearest even: bit-identical to ml_dtypes.


@pytest.mark.parametrize("name", sorted(ML))
def test_nearest_matches_ml_dtypes_on_edge_cases(name):
    fmt, dt = get_format(name), ML[name]
    x = edge_cases(fmt, _values_from_ml(dt))
    _assert_same(x, _rnd(x, fmt), _ml_cast(x, dt), f"{name} edge cases")


@pytest.mark.parametrize("name", sorted(ML))
def test_nearest_matches_ml_dtypes_on_random_bit_patterns(name):
    fmt, dt = get_format(name), ML[name]
    x = random_f32(1_000_000, seed=hash(name) % 1000)
    _assert_same(x, _rnd(x, fmt), _ml_cast(x, dt), f"{name} random patterns")


@pytest.mark.parametrize("name", sorted(EXTRA_ML))
def test_nearest_matches_ml_dtypes_other_fp8(name):
    fmt, dt = get_format(name), EXTRA_ML[name]
    x = np.concatenate([edge_cases(fmt, _values_from_ml(dt)), random_f32(200_000, seed=7)])
    _assert_same(x, _rnd(x, fmt), _ml_cast(x, dt), name)


def test_hidden_bit_lsb_tie_at_s_equal_23():
    # e4m3fn: 1.5·2^-9 lies halfway between 2^-9 (odd: the hidden bit) and 2^-8; the exponent
    # field's LSB is even there, which a naive (a >> 23) & 1 would read.
    x = np.array([1.5 * 2.0**-9, -1.5 * 2.0**-9, 2.5 * 2.0**-9], np.float32)
    out = _rnd(x, "e4m3fn")
    np.testing.assert_array_equal(out, np.array([2.0**-8, -(2.0**-8), 2.0**-8], np.float32))
    np.testing.assert_array_equal(out, _ml_cast(x, ml_dtypes.float8_e4m3fn))


def test_overflow_policies_known_values():
    e4m3fn = get_format("e4m3fn")
    x = np.array([448, 464, 465, 480, -465, np.inf, -np.inf], np.float32)
    out = _rnd(x, e4m3fn)
    np.testing.assert_array_equal(out[:2], [448, 448])  # 464 is a tie: to 448 (even)
    assert np.isnan(out[2:]).all()
    sat = Format(5, 2, overflow="saturate", name="e5m2sat")
    out = _rnd(np.array([1e6, -1e6, np.inf, -np.inf, 57344], np.float32), sat)
    np.testing.assert_array_equal(out, [57344, -57344, 57344, -57344, 57344])
    bf = _rnd(np.array([3.39e38, np.float32(np.finfo(np.float32).max)], np.float32), "bf16")
    assert np.isinf(bf[1]) and bf[0] == np.float32(ml_dtypes.finfo(ml_dtypes.bfloat16).max)


# ------------------------------------------------------------------------------------------
# Every mode against the brute-force reference.

BRUTE_FORMATS = {
    "bf16": (get_format("bf16"), lambda: _values_from_ml(ml_dtypes.bfloat16)),
    "fp16": (get_format("fp16"), lambda: _values_from_ml(np.float16)),
    "e4m3fn": (get_format("e4m3fn"), lambda: _values_from_ml(ml_dtypes.float8_e4m3fn)),
    "e5m2": (get_format("e5m2"), lambda: _values_from_ml(ml_dtypes.float8_e5m2)),
    "e4m3fnuz": (get_format("e4m3fnuz"), lambda: _values_from_ml(ml_dtypes.float8_e4m3fnuz)),
    "e5m2_nosub": (Format(5, 2, subnormals=False), None),
    "e4m3_sat": (Format(4, 3, overflow="saturate"), None),
    "e8m3_nosub": (Format(8, 3, subnormals=False), None),
    "e6m5": (Format(6, 5), None),
}


@pytest.mark.parametrize("mode", ("nearest", *DIRECTED))
@pytest.mark.parametrize("name", sorted(BRUTE_FORMATS))
def test_modes_match_brute_force(name, mode):
    fmt, values = BRUTE_FORMATS[name]
    fv = values() if values else _values_from_spec(fmt)
    x = np.concatenate(
        [edge_cases(fmt, fv), _in_range_f32(fmt, 100_000, seed=3), random_f32(50_000, seed=4)]
    )
    _assert_same(x, _rnd(x, fmt, mode), brute_round(x, fmt, mode, fv), f"{name} {mode}")


def test_brute_force_value_sets_agree_with_ml_dtypes():
    # The spec-built value set (used for custom formats) is the one ml_dtypes enumerates.
    for name, dt in [
        ("bf16", ml_dtypes.bfloat16),
        ("e4m3fn", ml_dtypes.float8_e4m3fn),
        ("e5m2", ml_dtypes.float8_e5m2),
    ]:
        ml = _values_from_ml(dt)
        np.testing.assert_array_equal(
            np.unique(_values_from_spec(get_format(name))), np.unique(ml[np.isfinite(ml)])
        )


def test_nosubnormal_tie_goes_to_zero_and_ftz_out():
    fmt = Format(5, 2, subnormals=False)
    emin = fmt.emin
    x = np.array(
        [2.0**emin * 0.5, 2.0**emin * 0.51, -(2.0**emin) * 0.75, 2.0**emin * 0.49], np.float32
    )
    np.testing.assert_array_equal(
        _rnd(x, fmt), np.array([0, 2.0**emin, -(2.0**emin), 0], np.float32)
    )
    e5m2 = get_format("e5m2")
    sub = np.array([2.0**-16, -(2.0**-15), 2.0**-14, 2.0**-14 * (1 - 2**-5)], np.float32)
    out = _rnd(sub, e5m2, ftz_out=True)
    np.testing.assert_array_equal(out, np.array([0, -0.0, 2.0**-14, 2.0**-14], np.float32))
    assert np.signbit(out[1])


def test_float64_storage_matches_brute_force():
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        x = np.concatenate(
            [
                rng.integers(0, 2**63, size=100_000, dtype=np.int64).view(np.float64),
                np.ldexp(rng.random(100_000) + 0.5, rng.integers(-140, 130, size=100_000)),
                np.array(
                    [1 + 2.0**-8 + 2.0**-40, 1 + 2.0**-8, 1 + 2.0**-8 - 2.0**-60, 2.0**-134 * 1.5]
                ),
            ]
        )
        with np.errstate(invalid="ignore"):  # NaN patterns
            x = x * np.where(rng.random(x.size) < 0.5, -1.0, 1.0)
        for name, mode in [
            ("bf16", "nearest"),
            ("bf16", "toward_zero"),
            ("fp32", "nearest"),
            ("fp32", "up"),
            ("fp16", "down"),
        ]:
            fmt = get_format(name)
            if name == "fp32":
                # The float32 grid is too large to enumerate: numpy's correctly rounded cast is the
                # reference for nearest, and "up" steps it once where it fell below x.
                with np.errstate(all="ignore"):
                    f32 = x.astype(np.float32)
                    ref = f32.astype(np.float64)
                    if mode == "up":
                        ref = np.where(
                            ref < x, np.nextafter(f32, np.float32(np.inf)).astype(np.float64), ref
                        )
            else:
                ref = brute_round(x, fmt, mode, _values_from_ml(ML[name]))
            ours = np.asarray(
                jax.jit(lambda v, fmt=fmt, mode=mode: round_to_format(v, fmt, mode))(x)
            )
            assert ours.dtype == np.float64
            _assert_same(x, ours, ref, f"float64 -> {name} {mode}")
        # Direct rounding from float64: 1 + 2^-8 + 2^-40 is above the bf16 tie (ml_dtypes, which
        # goes through float32, returns 1.0 here).
        assert float(round_to_format(np.float64(1 + 2.0**-8 + 2.0**-40), "bf16")) == 1 + 2.0**-7


# ------------------------------------------------------------------------------------------
# Stochastic rounding.


@pytest.mark.parametrize(
    "name,x", [("bf16", 1.0 + 3 * 2.0**-10), ("bf16", -(2.0**-130) * 1.3), ("e4m3fn", 0.3)]
)
def test_stochastic_probability_is_exact_over_all_discarded_bit_values(name, x):
    # Supplying every value of the discarded bits once, the number of round-ups must equal the
    # discarded fraction exactly.
    fmt = get_format(name)
    x32 = np.float32(x)
    a = int(np.array(x32).view(np.uint32)) & 0x7FFFFFFF
    e = max(a >> 23, 1) - 127
    s = (23 - fmt.mantissa_bits) + max(0, fmt.emin - e)
    assert s <= 20
    words = np.arange(1 << s, dtype=np.uint32)
    out = _rnd(np.full(words.shape, x32), fmt, "stochastic", random_bits=words)
    toward = brute_round(np.array([x32]), fmt, "toward_zero")[0]
    away = brute_round(np.array([x32]), fmt, "down" if x < 0 else "up")[0]
    assert set(np.unique(out).tolist()) <= {float(toward), float(away)}
    frac = a & ((1 << s) - 1)
    assert int((out == away).sum()) == frac


@pytest.mark.parametrize(
    "name,x",
    [
        ("bf16", 1.0 + 2.0**-9),  # a quarter ulp above 1
        ("bf16", -3.14159),
        ("fp16", 1e-6),  # fp16 subnormal range
        ("e4m3fn", 0.3),
        ("e4m3fn", 2.0**-11),  # below smin = 2^-9: the tiny path, P(up) = 1/4
        ("e5m2", -(2.0**-18) * 1.7),  # tiny, negative
    ],
)
def test_stochastic_rounding_is_unbiased(name, x):
    fmt = get_format(name)
    n = 100_000
    x32 = np.float32(x)
    out = _rnd(np.full(n, x32), fmt, "stochastic", key=jax.random.key(11)).astype(np.float64)
    lo = float(brute_round(np.array([x32]), fmt, "down")[0])
    hi = float(brute_round(np.array([x32]), fmt, "up")[0])
    assert set(np.unique(out).tolist()) <= {lo, hi}
    q = (float(x32) - lo) / (hi - lo)  # exact P(round up)
    sd_count = math.sqrt(n * q * (1 - q))
    assert abs((out == hi).sum() - n * q) <= 4 * sd_count
    sd_mean = (hi - lo) * math.sqrt(q * (1 - q) / n)
    assert abs(out.mean() - float(x32)) <= 4 * sd_mean


def test_stochastic_keeps_representable_values_and_specials():
    v = _values_from_ml(ml_dtypes.bfloat16).astype(np.float32)
    out = _rnd(v, "bf16", "stochastic", key=jax.random.key(0))
    _assert_same(v, out, v, "bf16 values under SR")


# ------------------------------------------------------------------------------------------
# API details.


def test_round_to_odd_addition():
    a = jnp.array([1.0, 1.0, 1.0, -1.0, 3.0], jnp.float32)
    b = jnp.array([2.0**-30, -(2.0**-30), 2.0**-23, -(2.0**-30), 0.0], jnp.float32)
    out = np.asarray(add_round_to_odd(a, b))
    expect = np.array([1 + 2.0**-23, 1 - 2.0**-24, 1 + 2.0**-23, -(1 + 2.0**-23), 3.0], np.float32)
    np.testing.assert_array_equal(out, expect)


def test_gradient_is_straight_through():
    g = jax.grad(lambda x: round_to_format(x, "bf16").sum())(jnp.array([1.001, 2.5], jnp.float32))
    np.testing.assert_array_equal(np.asarray(g), [1.0, 1.0])


def test_format_validation_and_errors():
    assert get_format("e4m3fn").smin == 2.0**-9
    assert get_format("e6m9") == Format(6, 9)
    with pytest.raises(InputError, match="unknown float format 'bf17'"):
        get_format("bf17")
    with pytest.raises(
        InputError, match=r"xmax=449.0 is not a positive value with 4 significant bits"
    ):
        Format(4, 3, xmax=449.0)
    with pytest.raises(InputError, match="unknown rounding mode 'nearest_away'"):
        round_to_format(jnp.float32(1), "bf16", "nearest_away")
    with pytest.raises(InputError, match="stochastic rounding needs `key=`"):
        round_to_format(jnp.float32(1), "bf16", "stochastic")
    with pytest.raises(InputError, match="does not fit in float32 storage"):
        round_to_format(jnp.float32(1), Format(11, 20))


def test_rounding_survives_jit_on_bf16_subnormals():
    # XLA:CPU flushes f32 subnormals in float ops; the kernel is integer-only, so bf16 subnormals
    # come out exactly (ml_dtypes agrees).
    x = np.array([2.0**-130 * 1.3, -(2.0**-133) * 0.75, 2.0**-127], np.float32)
    _assert_same(x, _rnd(x, "bf16"), _ml_cast(x, ml_dtypes.bfloat16), "bf16 subnormals")
    hlo = jax.jit(lambda v: round_to_format(v, "bf16")).lower(x).as_text()
    assert "bitcast_convert" in hlo


# ------------------------------------------------------------------------------------------
# Exhaustive sweep (nightly).


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ML))
def test_exhaustive_all_float32_patterns(name):
    fmt, dt = get_format(name), ML[name]
    f = jax.jit(lambda v: round_to_format(v, fmt))
    chunk = 1 << 24
    for start in range(0, 1 << 32, chunk):
        x = np.arange(start, start + chunk, dtype=np.uint64).astype(np.uint32).view(np.float32)
        ours = np.asarray(f(x))
        ok = _same(ours, _ml_cast(x, dt))
        assert ok.all(), f"{name}: {int((~ok).sum())} mismatches in chunk starting at {start:#x}"


# ------------------------------------------------------------------------------------------
# The one registry of float formats (interpret, transforms and bounds resolve names here).

REGISTRY_DTYPES = {
    "fp64": np.float64,
    "fp32": np.float32,
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3": ml_dtypes.float8_e4m3,
    "e3m4": ml_dtypes.float8_e3m4,
    "e4m3fn": ml_dtypes.float8_e4m3fn,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
}


def test_every_registered_format_with_a_dtype_is_checked():
    with_dtype = {k for k, f in tljax.interpret.FORMATS.items() if f.dtype is not None}
    assert with_dtype == set(REGISTRY_DTYPES)
    assert all(k == f.name for k, f in tljax.interpret.FORMATS.items())


@pytest.mark.parametrize("name", sorted(REGISTRY_DTYPES))
def test_registered_format_agrees_with_ml_dtypes_finfo(name):
    """Independent reference: ml_dtypes.finfo and ml_dtypes casts of the matching dtype."""
    dt = np.dtype(REGISTRY_DTYPES[name])
    fmt, fi = tljax.interpret.FORMATS[name], ml_dtypes.finfo(dt)
    assert fmt.dtype == dt
    assert get_format(name) is fmt and get_format(dt) is fmt and get_format(dt.name) is fmt
    assert fmt.precision == int(fi.nmant) + 1 and fmt.emin == int(fi.minexp)
    assert fmt.unit_roundoff == float(fi.eps) / 2  # eps = 2^(1-p) = 2u
    assert fmt.tiny == float(fi.smallest_normal)
    assert fmt.xmax == float(fi.max) and fmt.max_finite == Fraction(float(fi.max))
    assert fmt.smin == float(fi.smallest_subnormal)
    assert fmt.eta == float(fi.smallest_subnormal) / 2  # half the subnormal spacing
    if name != "fp64":  # fp64's threshold is not a float64 (it rounds to inf)
        t = np.float64(fmt.overflow_threshold)
        odd = (fmt.xmax / 2.0 ** (fmt.emax - fmt.mantissa_bits)) % 2 == 1
        with np.errstate(over="ignore"):
            assert not np.isfinite(float(np.nextafter(t, np.inf).astype(dt)))
            assert float(np.nextafter(t, 0.0).astype(dt)) == fmt.xmax
            assert np.isfinite(float(t.astype(dt))) == (not odd) == (name == "e4m3fn")


def test_one_registry_for_interpret_transforms_and_bounds():
    from tljax.bounds._float_model import PROGRAM_MODELS, ProgramModel
    from tljax.interpret._exact_results import format_of_dtype
    from tljax.transforms._precision import float_format

    for canonical, spellings in {
        "bf16": ("bf16", "bfloat16", "BFloat16", ml_dtypes.bfloat16),
        "fp16": ("fp16", "float16", "half", np.float16),
    }.items():
        fmt = tljax.interpret.FORMATS[canonical]
        for s in spellings:
            assert tljax.interpret.get_format(s) is fmt
            assert float_format(s) is fmt
            assert PROGRAM_MODELS[s] is PROGRAM_MODELS[canonical]
        assert format_of_dtype(fmt.dtype) is fmt
        model = PROGRAM_MODELS[canonical]
        assert model == ProgramModel.of(fmt)
        assert model.u_out == fmt.unit_roundoff and model.u_acc == 2.0**-24
        assert model.eta == max(fmt.tiny, 2.0**-126)
    assert sorted(PROGRAM_MODELS) == ["bf16", "fp16"]  # each format once, no alias rows
    assert "e4m3fn" not in PROGRAM_MODELS and "fp7" not in PROGRAM_MODELS
    assert not hasattr(tljax.transforms, "FloatFormat")
    with pytest.raises(AttributeError, match=r"tljax\.interpret\.Format"):
        tljax.transforms.FloatFormat  # noqa: B018


def test_derived_formats_of_unregistered_dtypes_follow_finfo():
    from tljax.interpret._exact_results import format_of_dtype

    for dt in (
        ml_dtypes.float4_e2m1fn,
        ml_dtypes.float6_e2m3fn,
        ml_dtypes.float6_e3m2fn,
        ml_dtypes.float8_e4m3b11fnuz,
        ml_dtypes.float8_e8m0fnu,
    ):
        fmt, fi = format_of_dtype(dt), ml_dtypes.finfo(dt)
        assert fmt.precision == int(fi.nmant) + 1 and fmt.emin == int(fi.minexp)
        assert fmt.max_finite == Fraction(float(fi.max)) and fmt.tiny == float(fi.smallest_normal)
        assert fmt.dtype is None  # not a registry entry
    with pytest.raises(InputError, match="int32 is not a floating-point dtype"):
        format_of_dtype(np.int32)
