"""Floating-point formats and the bit-pattern rounding kernel behind `float[FORMAT]` emulation.

A value of a target format (bf16, fp16, fp8, any custom (exponent, mantissa) format) is stored in
a float32 (or float64) array. `round_to_format` rounds such an array to the nearest value of the
format, in any of five modes, with integer operations on the bit pattern (NUMERICS.md §2.2):

* ``a = |bits(x)|``; ``s`` = how many low bits of the storage significand the target cannot hold
  (``T - m``, plus how far the exponent lies below the target's ``emin`` when the result is
  subnormal in the target);
* the mode chooses an increment (``half + lsb`` for nearest-even, all ones for "away", random bits
  for stochastic), ``r = (a + add) & ~mask``; a carry into the exponent field is exactly the
  rounding up to the next binade;
* magnitudes below the smallest positive target value (``s > T``) are decided by integer compares;
* overflow, infinities, NaN, signed zero and an optional flush-to-zero are applied last.

Nothing here is a float operation, so XLA can neither fold the rounding away (as it may fold an
``astype(bf16).astype(f32)`` round trip) nor flush it (XLA:CPU flushes f32 subnormals, FTZ/DAZ).

Pitfall handled: when ``s == T`` the kept least significant bit is the *hidden* bit, not the low bit
of the exponent field; reading ``(a >> s) & 1`` there sends e.g. the e4m3fn tie 1.5·2^-9 to 2^-9.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import math
import re
from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from ..core import InputError, compat

compat.register_exclusion(__file__)

ROUNDING_MODES = ("nearest", "toward_zero", "up", "down", "stochastic")
_MODE_ALIASES = {
    "nearest": "nearest",
    "rne": "nearest",
    "rn": "nearest",
    "toward_zero": "toward_zero",
    "rtz": "toward_zero",
    "rz": "toward_zero",
    "up": "up",
    "rup": "up",
    "ru": "up",
    "down": "down",
    "rdown": "down",
    "rd": "down",
    "stochastic": "stochastic",
    "sr": "stochastic",
}
SHORT_MODE_NAMES = {
    "nearest": "rne",
    "toward_zero": "rtz",
    "up": "rup",
    "down": "rdown",
    "stochastic": "sr",
}
_OVERFLOW = ("inf", "saturate", "nan")


def canonical_rounding(rounding: str) -> str:
    """The canonical name of a rounding mode (``"rtz"`` -> ``"toward_zero"``), or InputError."""
    mode = _MODE_ALIASES.get(str(rounding).lower())
    if mode is None:
        raise InputError(
            f"unknown rounding mode {rounding!r}; use one of {ROUNDING_MODES} "
            f"(short names: {sorted(set(_MODE_ALIASES) - set(ROUNDING_MODES))})"
        )
    return mode


@dataclasses.dataclass(frozen=True)
class Format:
    """A binary floating-point format: sign, `exponent_bits`, `mantissa_bits` (explicit bits).

    Values are ``±2^e · 1.f`` for ``emin <= e``, up to `xmax`, plus subnormals ``±2^emin · 0.f``
    when `subnormals` is true, signed zeros (unless `neg_zero` is false), and NaN. Infinities exist
    when `overflow` is ``"inf"``.

    Args:
      exponent_bits: width of the exponent field (1..11).
      mantissa_bits: explicit significand bits ``m``; the precision is ``p = m + 1`` (0..52).
      subnormals: gradual underflow. Without it the smallest positive value is ``2^emin`` and a
        magnitude below it rounds to 0 or ``2^emin`` (round-to-nearest sends the tie
        ``2^(emin-1)`` to 0).
      overflow: what a finite result beyond `xmax` becomes: ``"inf"`` (IEEE), ``"saturate"``
        (±xmax; infinite inputs saturate too, like CUDA's ``satfinite``) or ``"nan"`` (the fp8
        ``fn`` formats, which have no infinity: ±inf inputs become NaN as well). Directed modes
        never overflow away from their direction: rounding toward zero gives ±xmax.
      xmax: the largest finite value. Default: IEEE, ``2^emax·(2 - 2^-m)`` with the top exponent
        field reserved. ``Format(4, 3, xmax=448.0, overflow="nan")`` is float8_e4m3fn.
      bias: exponent bias; default ``2^(exponent_bits-1) - 1`` (fnuz formats use one more).
      neg_zero: whether -0 exists; the fnuz formats have none (a negative result that rounds to
        zero is +0, and NaN is encoded with the sign bit set).
      name: short name used in semantics names (``"bf16"``); default ``"e{E}m{M}"``.

    Example:
      >>> e4m3fn = Format(4, 3, xmax=448.0, overflow="nan", name="e4m3fn")
      >>> e4m3fn.emin, e4m3fn.smin, e4m3fn.precision
      (-6, 0.001953125, 4)
    """

    exponent_bits: int
    mantissa_bits: int
    subnormals: bool = True
    overflow: str = "inf"
    xmax: float | None = None
    bias: int | None = None
    neg_zero: bool = True
    name: str | None = None

    def __post_init__(self):
        e, m = self.exponent_bits, self.mantissa_bits
        if not (isinstance(e, int) and 1 <= e <= 11):
            raise InputError(f"Format: exponent_bits must be an int in 1..11, got {e!r}")
        if not (isinstance(m, int) and 0 <= m <= 52):
            raise InputError(f"Format: mantissa_bits must be an int in 0..52, got {m!r}")
        if self.overflow not in _OVERFLOW:
            raise InputError(f"Format: overflow must be one of {_OVERFLOW}, got {self.overflow!r}")
        bias = (1 << (e - 1)) - 1 if self.bias is None else int(self.bias)
        object.__setattr__(self, "bias", bias)
        top = (1 << e) - 1 - bias  # exponent of the all-ones field
        if self.xmax is None:
            emax = top - 1
            object.__setattr__(self, "xmax", math.ldexp(2.0 - math.ldexp(1.0, -m), emax))
        xmax = float(self.xmax)
        object.__setattr__(self, "xmax", xmax)
        frac, ex = math.frexp(xmax)  # xmax = frac·2^ex, frac in [0.5, 1)
        if not (math.isfinite(xmax) and xmax > 0 and (frac * (1 << (m + 1))).is_integer()):
            raise InputError(
                f"Format: xmax={xmax!r} is not a positive value with {m + 1} significant bits"
            )
        if not (1 - bias <= ex - 1 <= top):
            raise InputError(
                f"Format: xmax={xmax!r} needs exponent {ex - 1}, outside [{1 - bias}, {top}] for "
                f"{e} exponent bits and bias {bias}"
            )
        if self.name is None:
            object.__setattr__(self, "name", f"e{e}m{m}")

    @property
    def precision(self) -> int:
        """Significand bits including the hidden bit, ``p = m + 1``."""
        return self.mantissa_bits + 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest positive normal value, ``1 - bias``."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of `xmax`."""
        return math.frexp(self.xmax)[1] - 1

    @property
    def smin(self) -> float:
        """Smallest positive value: ``2^(emin-m)`` with subnormals, else ``2^emin``."""
        return math.ldexp(1.0, self.emin - (self.mantissa_bits if self.subnormals else 0))

    @property
    def tiny(self) -> float:
        """Smallest positive normal value, ``2^emin`` (numpy's ``finfo.smallest_normal``)."""
        return math.ldexp(1.0, self.emin)

    @ft.cached_property
    def max_finite(self) -> Fraction:
        """`xmax` as an exact `Fraction` (for exact rounding and overflow checks)."""
        return Fraction(self.xmax)

    @property
    def overflow_threshold(self) -> float:
        """``xmax`` plus half an ulp of ``xmax``: round-to-nearest overflows (to inf, NaN or xmax,
        see `overflow`) every magnitude above it, and the tie itself when xmax's last
        significand bit is odd (all IEEE formats; e4m3fn's tie 464 rounds to 448). For fp64
        the float is inf."""
        return self.xmax + math.ldexp(1.0, self.emax - self.mantissa_bits - 1)

    @property
    def unit_roundoff(self) -> float:
        """``u = 2^-p``, the relative error bound of round-to-nearest in the normal range."""
        return math.ldexp(1.0, -self.precision)

    @property
    def eta(self) -> float:
        """Absolute error bound of round-to-nearest below the normal range: half the subnormal
        spacing, ``2^(emin-p)``, with subnormals; ``2^(emin-1)`` (the tie that goes to 0)
        without. A program that flushes subnormals needs its own allowance (at least `tiny`)."""
        return math.ldexp(1.0, self.emin - (self.precision if self.subnormals else 1))

    @property
    def dtype(self) -> np.dtype | None:
        """The numpy / ml_dtypes dtype holding exactly this registered format's values, or None
        (a format that is not a registry entry, or one without a dtype, like tf32)."""
        name = _DTYPE_NAMES.get(self.name)
        if name is None or FORMATS.get(self.name) != self:
            return None
        return np.dtype(getattr(ml_dtypes, name, None) or name)

    @property
    def has_inf(self) -> bool:
        return self.overflow == "inf"

    def describe(self) -> str:
        return (
            f"{self.name}: p={self.precision}, emin={self.emin}, xmax={self.xmax!r}, "
            f"smin={self.smin!r}, subnormals={self.subnormals}, overflow={self.overflow}"
        )


def _ieee(e: int, m: int, name: str) -> Format:
    return Format(e, m, name=name)


# THE registry of named float formats (interpret, transforms and bounds all resolve names here,
# through `get_format`). Keys are the canonical names, equal to each format's `name`.
FORMATS: dict[str, Format] = {
    "fp64": _ieee(11, 52, "fp64"),
    "fp32": _ieee(8, 23, "fp32"),
    "tf32": _ieee(8, 10, "tf32"),
    "fp16": _ieee(5, 10, "fp16"),
    "bf16": _ieee(8, 7, "bf16"),
    "e5m2": _ieee(5, 2, "e5m2"),
    "e4m3": _ieee(4, 3, "e4m3"),
    "e3m4": _ieee(3, 4, "e3m4"),
    "e4m3fn": Format(4, 3, xmax=448.0, overflow="nan", name="e4m3fn"),
    "e4m3fnuz": Format(4, 3, xmax=240.0, bias=8, overflow="nan", neg_zero=False, name="e4m3fnuz"),
    "e5m2fnuz": Format(
        5, 2, xmax=57344.0, bias=16, overflow="nan", neg_zero=False, name="e5m2fnuz"
    ),
}
# The numpy / ml_dtypes dtype of each registered format that has one; its name is an alias.
_DTYPE_NAMES = {
    "fp64": "float64",
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "e5m2": "float8_e5m2",
    "e4m3": "float8_e4m3",
    "e3m4": "float8_e3m4",
    "e4m3fn": "float8_e4m3fn",
    "e4m3fnuz": "float8_e4m3fnuz",
    "e5m2fnuz": "float8_e5m2fnuz",
}
# Every other spelling of a registered name, in this one place.
_ALIASES = {dtype: key for key, dtype in _DTYPE_NAMES.items()} | {
    "f64": "fp64",
    "f32": "fp32",
    "f16": "fp16",
    "half": "fp16",
}


def get_format(spec) -> Format:
    """A `Format` from a `Format`, a name (``"bf16"``, ``"e4m3fn"``, ``"e6m9"``) or a numpy dtype.

    ``"eXmY"`` is the IEEE-like format with X exponent and Y mantissa bits (infinities, subnormals).

    Example:
      >>> get_format("bf16").precision, get_format("e6m9").emin
      (8, -30)
    """
    if isinstance(spec, Format):
        return spec
    if not isinstance(spec, str):
        try:
            spec = np.dtype(spec).name
        except TypeError:
            raise InputError(
                f"cannot make a float format from {spec!r}; pass a name or a Format"
            ) from None
    key = _ALIASES.get(spec.strip().lower(), spec.strip().lower())
    if key in FORMATS:
        return FORMATS[key]
    m = re.fullmatch(r"e(\d+)m(\d+)", key)
    if m:
        return Format(int(m.group(1)), int(m.group(2)))
    raise InputError(
        f"unknown float format {spec!r}; known: {sorted(FORMATS)}, 'eXmY' for IEEE-like formats, "
        "or pass tljax.interpret.Format(exponent_bits, mantissa_bits, ...)"
    )


# ----------------------------------------------------------------------------------------------
# Storage formats: the float dtype that holds target values, seen as unsigned integers.


@dataclasses.dataclass(frozen=True)
class _Storage:
    float_dtype: type
    uint_dtype: type
    width: int
    mant: int  # explicit significand bits T
    bias: int

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def format(self) -> Format:
        return FORMATS["fp32"] if self.width == 32 else FORMATS["fp64"]

    def bits(self, value: float) -> int:
        """The bit pattern of a float that this storage holds exactly."""
        v = np.asarray(value, dtype=np.float64).astype(self.float_dtype)
        if float(v) != value:
            raise AssertionError(
                f"{value!r} is not exactly representable in {self.float_dtype.__name__}"
            )
        return int(v.view(self.uint_dtype))


F32 = _Storage(np.float32, np.uint32, 32, 23, 127)
F64 = _Storage(np.float64, np.uint64, 64, 52, 1023)


def storage_for(dtype) -> _Storage:
    dt = np.dtype(dtype)
    if dt == np.float32:
        return F32
    if dt == np.float64:
        return F64
    raise InputError(f"float emulation stores values in float32 or float64, got dtype {dt}")


def fits(fmt: Format, storage: _Storage) -> bool:
    """Whether every value of `fmt` is a value of `storage` (and the kernel's assumptions hold)."""
    return (
        fmt.mantissa_bits <= storage.mant
        and fmt.emin >= storage.emin
        and fmt.emin - fmt.mantissa_bits >= storage.emin - storage.mant
        and fmt.xmax <= float(np.finfo(storage.float_dtype).max)
    )


def is_native(fmt: Format, storage: _Storage) -> bool:
    """Whether `fmt` is exactly the storage's own IEEE format (rounding is then the identity)."""
    nat = storage.format
    return (
        fmt.mantissa_bits == nat.mantissa_bits
        and fmt.emin == nat.emin
        and fmt.xmax == nat.xmax
        and fmt.subnormals
        and fmt.overflow == "inf"
        and fmt.neg_zero
    )


def contains(outer: Format, inner: Format) -> bool:
    """Whether every value of `inner` is a value of `outer`."""
    return (
        outer.mantissa_bits >= inner.mantissa_bits
        and outer.emin <= inner.emin
        and outer.smin <= inner.smin
        and outer.xmax >= inner.xmax
        and (outer.has_inf or not inner.has_inf)
        and (outer.neg_zero or not inner.neg_zero)
        and (
            outer.subnormals
            or not inner.subnormals
            or inner.emin - inner.mantissa_bits >= outer.emin
        )
    )


def dtype_format(dtype, *, derive: bool = False) -> Format | None:
    """The `Format` of a numpy float dtype, when it is one tljax knows (else None).

    With `derive`, a float dtype outside the registry (``float4_e2m1fn``, ``float8_e8m0fnu``,
    ...) gets a `Format` read from ``ml_dtypes.finfo``: its precision, `emin` and `xmax` are
    exact (what exact rounding needs); its signed-zero and NaN encodings are not modelled.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    key = _ALIASES.get(dt.name)
    if key is not None or not derive:
        return FORMATS.get(key) if key else None
    try:
        fi = ml_dtypes.finfo(dt)
    except Exception:  # noqa: BLE001 - not a float dtype
        return None
    big = float(np.array(np.inf).astype(dt))  # what the dtype makes of an overflow
    return Format(
        int(fi.nexp),
        int(fi.nmant),
        subnormals=float(fi.smallest_subnormal) < float(fi.smallest_normal),
        overflow="inf" if math.isinf(big) else "nan" if math.isnan(big) else "saturate",
        xmax=float(fi.max),
        bias=1 - int(fi.minexp),
        name=dt.name,
    )


# ----------------------------------------------------------------------------------------------
# The kernel.


def _kernel(x, rbits, fmt: Format, mode: str, ftz_out: bool):
    st = storage_for(x.dtype)
    U = st.uint_dtype

    def c(v):
        return U(v)

    T, W, m = st.mant, st.width, fmt.mantissa_bits
    b = lax.bitcast_convert_type(x, U)
    sign = b & c(1 << (W - 1))
    a = b ^ sign
    inf_bits = st.bits(math.inf)
    is_nan = a > c(inf_bits)
    neg = sign != c(0)
    zero = jnp.zeros_like(a)
    one = c(1)

    # s = number of low significand bits to discard. The target ulp is 2^(max(e, emin) - m), the
    # storage ulp 2^(max(E,1) - bias - T). When the target's emin is the storage's (bf16, tf32),
    # s is the constant T - m (target subnormals are storage subnormals) and nothing is tiny.
    const_s = fmt.emin == st.emin
    if const_s:
        E = None
        sc = c(T - m)
        mask = c((1 << (T - m)) - 1)
        lsb = (a >> sc) & one  # T - m < T: never the hidden bit
        tiny = None if fmt.subnormals else a < c(st.bits(math.ldexp(1.0, fmt.emin)))
    else:
        E = lax.convert_element_type(a >> c(T), np.int32)  # biased storage exponent
        if fmt.subnormals:
            s = (T - m) + jnp.maximum(fmt.emin + st.bias - jnp.maximum(E, 1), 0)
            tiny = s > T  # |x| < smin: the bit trick would need bits above the significand
        else:
            s = jnp.full_like(E, T - m)
            tiny = a < c(st.bits(math.ldexp(1.0, fmt.emin)))
        sc = lax.convert_element_type(jnp.minimum(s, T), U)
        mask = (one << sc) - one
        # s == T: the kept LSB is the hidden bit (1 for a normal storage value), not the
        # exponent's LSB that (a >> T) & 1 would read.
        lsb = jnp.where(sc == c(T), lax.convert_element_type(E > 0, U), (a >> sc) & one)
    if mode == "nearest":
        add = (mask >> one) + lsb
        if not const_s:
            add = jnp.where(sc > c(0), add, zero)
    elif mode == "toward_zero":
        add = zero
    elif mode == "up":
        add = jnp.where(neg, zero, mask)
    elif mode == "down":
        add = jnp.where(neg, mask, zero)
    else:  # stochastic: P(up) = (discarded bits) / 2^s exactly
        add = rbits & mask
    r = (a + add) & ~mask

    if tiny is not None:
        smin_bits = c(st.bits(fmt.smin))
        nonzero = a != c(0)
        if mode == "nearest":
            half = fmt.smin / 2
            half_bits = st.bits(half) if half >= math.ldexp(1.0, st.emin - T) else 0
            r_tiny = jnp.where(a > c(half_bits), smin_bits, zero)  # the tie goes to 0 (even)
        elif mode == "toward_zero":
            r_tiny = zero
        elif mode == "up":
            r_tiny = jnp.where(nonzero & ~neg, smin_bits, zero)
        elif mode == "down":
            r_tiny = jnp.where(nonzero & neg, smin_bits, zero)
        else:
            # |x| = M·2^k < smin = 2^ls, so P(up) = M / 2^d with d = ls - k > 0: compare with W
            # random bits (exact while d <= W, else truncated to a resolution of 2^-W).
            if E is None:
                E = lax.convert_element_type(a >> c(T), np.int32)
            mant_mask = c((1 << T) - 1)
            M = jnp.where(E > 0, (a & mant_mask) | c(1 << T), a & mant_mask)
            d = int(math.log2(fmt.smin)) - (jnp.maximum(E, 1) - st.bias - T)
            left = lax.convert_element_type(jnp.clip(W - d, 0, W - 1), U)
            right = lax.convert_element_type(jnp.clip(d - W, 0, W - 1), U)
            thr = jnp.where(d <= W, M << left, jnp.where(d - W >= W, zero, M >> right))
            r_tiny = jnp.where(rbits < thr, smin_bits, zero)
        r = jnp.where(tiny, r_tiny, r)

    # Overflow. An infinite input rounds to itself (a has no low bits), so it lands here too;
    # only directed modes and the non-IEEE policies need to tell it apart from a finite overflow.
    xmax_bits = c(st.bits(fmt.xmax))
    over = r > xmax_bits
    if mode in ("nearest", "stochastic"):
        away = None  # always away from zero
    elif mode == "toward_zero":
        away = jnp.zeros_like(neg)
    elif mode == "up":
        away = ~neg
    else:
        away = neg
    if away is not None and fmt.overflow != "saturate":
        away = away | (a == c(inf_bits))  # an exact infinity is not rounded toward zero
    make_nan = is_nan
    if fmt.overflow == "inf":
        r = jnp.where(
            over, c(inf_bits) if away is None else jnp.where(away, c(inf_bits), xmax_bits), r
        )
    elif fmt.overflow == "saturate":
        r = jnp.where(over, xmax_bits, r)
    else:
        if away is None:
            make_nan = make_nan | over
        else:
            r = jnp.where(over & ~away, xmax_bits, r)
            make_nan = make_nan | (over & away)
    if ftz_out:
        r = jnp.where(r < c(st.bits(math.ldexp(1.0, fmt.emin))), zero, r)
    if not fmt.neg_zero:
        sign = jnp.where(r == c(0), zero, sign)
    qnan = 0x7FF8 << 48 if W == 64 else 0x7FC00000
    nan_bits = c(qnan | (1 << (W - 1))) if not fmt.neg_zero else sign | c(qnan)
    out = jnp.where(make_nan, nan_bits, sign | r)
    return lax.bitcast_convert_type(out, st.float_dtype)


@ft.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _round_ste(x, rbits, fmt, mode, ftz_out):
    return _kernel(x, rbits, fmt, mode, ftz_out)


@_round_ste.defjvp
def _round_ste_jvp(fmt, mode, ftz_out, primals, tangents):
    # Straight-through: the derivative of rounding is taken as 1 (the bit ops would give 0).
    x, rbits = primals
    return _round_ste(x, rbits, fmt, mode, ftz_out), tangents[0]


@ft.partial(jax.jit, static_argnums=(2, 3, 4))
def _round_jit(x, rbits, fmt, mode, ftz_out):
    return _round_ste(x, rbits, fmt, mode, ftz_out)


def round_to_format(
    x,
    fmt,
    rounding: str = "nearest",
    *,
    key=None,
    random_bits=None,
    ftz_out: bool = False,
):
    """Rounds every element of `x` to the nearest value of `fmt` (in the chosen direction).

    The result keeps `x`'s storage dtype (float32 or float64; narrower float inputs are widened to
    float32 exactly) and holds values of `fmt`. Computed with integer operations on the bit
    pattern, so it is exact, jittable, and immune to XLA's FTZ and convert folding. The gradient is
    straight-through (1), so emulated models can be differentiated.

    Args:
      x: float array.
      fmt: a `Format` or a format name (``"bf16"``, ``"fp16"``, ``"e4m3fn"``, ``"e5m2"``, ...).
      rounding: ``"nearest"`` (ties to even), ``"toward_zero"``, ``"up"``, ``"down"`` or
        ``"stochastic"`` (rounds up with probability equal to the discarded fraction of an ulp).
      key: PRNG key for stochastic rounding; the random words are
        ``jax.random.bits(key, x.shape, uint32 | uint64)``.
      random_bits: explicit random words (the storage's unsigned dtype, shape of `x`) instead of a
        key; one word per element.
      ftz_out: flush results below ``2^emin`` (the target's subnormals) to signed zero, as FTZ
        hardware does.

    Returns:
      An array of `x`'s storage dtype and shape.

    Example:
      >>> round_to_format(jnp.float32(1.0 + 2**-8), "bf16")  # a tie: to even
      Array(1., dtype=float32)
      >>> round_to_format(jnp.float32(1.0 + 2**-8), "bf16", "up")
      Array(1.0078125, dtype=float32)
    """
    fmt = get_format(fmt)
    mode = canonical_rounding(rounding)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputError(f"round_to_format expects a float array, got dtype {x.dtype}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    st = storage_for(x.dtype)
    if not fits(fmt, st):
        raise InputError(
            f"format {fmt.describe()} does not fit in {st.float_dtype.__name__} storage; "
            "round a float64 array (enable jax_enable_x64)"
        )
    if mode == "stochastic":
        if random_bits is None:
            if key is None:
                raise InputError(
                    "stochastic rounding needs `key=` (a jax.random key) or `random_bits=`"
                )
            random_bits = jax.random.bits(key, x.shape, st.uint_dtype)
        random_bits = jnp.asarray(random_bits)
        if random_bits.dtype != st.uint_dtype or random_bits.shape != x.shape:
            raise InputError(
                f"random_bits must be {np.dtype(st.uint_dtype).name}{list(x.shape)}, got "
                f"{random_bits.dtype}{list(random_bits.shape)}"
            )
    else:
        random_bits = None
    return apply_rounding(x, fmt, mode, random_bits, ftz_out)


def apply_rounding(x, fmt: Format, mode: str, rbits=None, ftz_out: bool = False):
    """`round_to_format` without argument checking: `x` float32/float64, `fmt` fits its storage."""
    st = storage_for(x.dtype)
    if is_native(fmt, st) and not ftz_out:
        return x  # every storage value is a value of the format
    if mode == "stochastic" and rbits is None:
        raise InputError("stochastic rounding needs random bits")
    if rbits is None:
        rbits = jnp.zeros((), st.uint_dtype)  # unused placeholder (keeps one jit signature)
    return _round_jit(x, rbits, fmt, mode, bool(ftz_out))


def add_round_to_odd(a, b):
    """``a + b`` in the storage precision, rounded to odd instead of to nearest.

    The sum is exact when it is representable; otherwise its last bit is forced to 1 (TwoSum gives
    the exact residual). A later rounding to a format with at least 2 fewer significand bits is then
    correctly rounded for every deterministic mode (Boldo & Melquiond 2008), which plain
    "add, then round" is not when one operand has more than half the storage bits (a product).
    Assumes no overflow and no flushed subnormal residual.

    Example:
      >>> add_round_to_odd(jnp.float32(1.0), jnp.float32(2**-30)) == 1.0 + 2**-23
      Array(True, dtype=bool)
    """
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    st = storage_for(s.dtype)
    U = st.uint_dtype
    bits = lax.bitcast_convert_type(s, U)
    fix = (err != 0) & ((bits & U(1)) == U(0)) & jnp.isfinite(s)
    grow = (err > 0) == (s > 0)  # residual points away from zero: step the magnitude up
    bits = jnp.where(fix, jnp.where(grow, bits + U(1), bits - U(1)), bits)
    return lax.bitcast_convert_type(bits, st.float_dtype)


def convert_exact(x, dtype):
    """`x.astype(dtype)` for float32 <-> float64 that keeps subnormals.

    XLA:CPU flushes float32 subnormals in its float32 <-> float64 converts (measured: both
    directions give 0 for 1.5·2^-130), so these two conversions are done on the bit patterns.
    Narrowing assumes the values are float32 values (true for every format that fits float32).
    Other dtype pairs use `astype`.

    Example:
      >>> convert_exact(jnp.float32(1.5 * 2**-130), jnp.float64)  # with x64 enabled
      Array(1.10203e-39, dtype=float64)
    """
    x = jnp.asarray(x)
    src, dst = np.dtype(x.dtype), np.dtype(dtype)
    if src == dst:
        return x
    if (src, dst) == (np.float32, np.float64):
        return _widen(x)
    if (src, dst) == (np.float64, np.float32):
        return _narrow(x)
    return x.astype(dst)


def _widen(x):
    u32, u64 = np.uint32, np.uint64
    b = lax.bitcast_convert_type(x, u32)
    sign = lax.convert_element_type(b >> u32(31), u64) << u64(63)
    E = b >> u32(23) & u32(0xFF)
    m = lax.convert_element_type(b & u32(0x7FFFFF), u64)
    Ew = lax.convert_element_type(E, u64)
    normal = ((Ew + u64(1023 - 127)) << u64(52)) | (m << u64(29))
    special = (u64(0x7FF) << u64(52)) | (m << u64(29))
    # A subnormal m·2^-149 with leading bit L: exponent L - 149, the bits below L shifted up.
    L = u64(63) - lax.convert_element_type(lax.clz(m), u64)
    sub = ((L + u64(1023 - 149)) << u64(52)) | ((m << (u64(52) - L)) & u64((1 << 52) - 1))
    out = jnp.where(
        E == u32(0xFF), special, jnp.where(E == u32(0), jnp.where(m == u64(0), u64(0), sub), normal)
    )
    return lax.bitcast_convert_type(out | sign, np.float64)


def _narrow(x):
    u32, u64, i64 = np.uint32, np.uint64, np.int64
    b = lax.bitcast_convert_type(x, u64)
    sign = lax.convert_element_type(b >> u64(63), u32) << u32(31)
    E = lax.convert_element_type(b >> u64(52) & u64(0x7FF), i64)
    m = b & u64((1 << 52) - 1)
    e = E - 1023
    normal = lax.convert_element_type(((e + 127) << 23).astype(u64) | (m >> u64(29)), u32)
    shift = lax.convert_element_type(jnp.clip(29 + (-126 - e), 0, 63), u64)
    sub = lax.convert_element_type((m | u64(1 << 52)) >> shift, u32)
    special = (
        u32(0xFF << 23)
        | lax.convert_element_type(m >> u64(29), u32)
        | jnp.where(m != u64(0), u32(1 << 22), u32(0))
    )
    out = jnp.where(
        E == 0x7FF, special, jnp.where(E == 0, u32(0), jnp.where(e < -126, sub, normal))
    )
    return lax.bitcast_convert_type(out | sign, np.float32)
