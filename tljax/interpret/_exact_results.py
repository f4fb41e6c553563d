"""What the exact semantics hands to users: `ExactArray`, `Enclosure` and helpers on them.

`tljax.evaluate(fn, x, semantics="exact")` returns per output leaf either an `ExactArray` (a
numpy object array of `fractions.Fraction`; Python ints / bools for integer / bool outputs) or,
when a transcendental function was involved, an `Enclosure` (a numpy object array of
`flint.arb` balls, each certified to contain the real value).
"""

from __future__ import annotations

from fractions import Fraction

import jax.tree_util as jtu
import numpy as np
from flint import arb, fmpq, fmpz

from ..core import InputError, compat
from ._rounding import Format
from ._rounding import dtype_format as _dtype_format

compat.register_exclusion(__file__)


# ----------------------------------------------------------------------------------------------
# Rounding of exact rationals to binary floating-point formats (RNE, with subnormals).


def format_of_dtype(dtype) -> Format:
    """The `Format` of a float dtype for exact rounding: the registry's, else one derived from
    ``ml_dtypes.finfo`` (`tljax.interpret._rounding.dtype_format`); InputError for other dtypes."""
    dt = np.dtype(dtype)
    fmt = _dtype_format(dt, derive=True)
    if fmt is None:
        raise InputError(f"{dt} is not a floating-point dtype")
    return fmt


def floor_log2(n: int, d: int) -> int:
    """floor(log2(n/d)) for positive ints n, d."""
    k = n.bit_length() - d.bit_length()
    if k >= 0:
        if n < (d << k):
            k -= 1
    elif (n << -k) < d:
        k -= 1
    return k


def round_rne(n: int, d: int, fmt: Format) -> tuple[int, int]:
    """Rounds the rational n/d (d > 0) to `fmt` with round-to-nearest-even: returns (r, q), the
    value r * 2**q. Overflow is not handled here (see `overflows`)."""
    if n == 0:
        return 0, 0
    s = -1 if n < 0 else 1
    n = abs(n)
    k = floor_log2(n, d)
    q = max(k, fmt.emin) - (fmt.precision - 1)
    num, den = (n, d << q) if q >= 0 else (n << -q, d)
    r, rem = divmod(num, den)
    if 2 * rem > den or (2 * rem == den and r & 1):
        r += 1
    return s * r, q


def overflows(r: int, q: int, fmt: Format) -> bool:
    v = Fraction(abs(r)) * (Fraction(2) ** q)
    return v > fmt.max_finite


def ulp_of(n: int, d: int, fmt: Format) -> Fraction:
    """The unit in the last place of n/d in `fmt` (the spacing of the format around the value)."""
    if n == 0:
        return Fraction(2) ** (fmt.emin - fmt.precision + 1)
    k = floor_log2(abs(n), d)
    return Fraction(2) ** (max(k, fmt.emin) - fmt.precision + 1)


def _as_fraction(x) -> Fraction:
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool | np.bool_):
        return Fraction(int(x))
    if isinstance(x, int | np.integer | fmpz):
        return Fraction(int(x))
    if isinstance(x, fmpq):
        return Fraction(int(x.p), int(x.q))
    if isinstance(x, float | np.floating) or type(x).__module__.startswith("ml_dtypes"):
        f = float(x)
        if not np.isfinite(f):
            raise InputError(f"{f!r} is not a real number")
        return Fraction(*f.as_integer_ratio())
    if isinstance(x, arb):
        raise InputError("an arb ball is an enclosure, not an exact value; use Enclosure.mid")
    raise InputError(f"cannot read a {type(x).__name__} ({x!r}) as an exact number")


# ----------------------------------------------------------------------------------------------
# Result arrays.


class ExactArray(np.ndarray):
    """Exact output of the exact semantics: an object array of `fractions.Fraction`.

    Integer / bool outputs hold Python ints / bools. `source_dtype` is the dtype the program gave
    the output (float32, int32, ...).

    Example:
      >>> y = tljax.evaluate(lambda x: x * 3.0, jnp.float32(0.1), semantics="exact")
      >>> y[()]                      # 3 * float32(0.1), exactly
      Fraction(40265319, 134217728)
      >>> y.to_float()               # correctly rounded to float64
    """

    source_dtype: np.dtype | None

    def __new__(cls, values, source_dtype=None):
        arr = np.asarray(values, dtype=object).view(cls)
        arr.source_dtype = np.dtype(source_dtype) if source_dtype is not None else None
        return arr

    def __array_finalize__(self, obj):
        self.source_dtype = getattr(obj, "source_dtype", None)

    def to_float(self, dtype=np.float64) -> np.ndarray:
        """Correctly rounded (RNE) conversion to `dtype` (see `exact_to_float`)."""
        return exact_to_float(self, dtype)

    def to_sympy(self) -> np.ndarray:
        return to_sympy(self)

    def ulp_distance(self, computed, dtype=None) -> np.ndarray:
        return ulp_distance(self, computed, dtype=dtype)


class Enclosure(np.ndarray):
    """Certified enclosures: an object array of `flint.arb` balls, each containing the real value.

    `lower` / `upper` / `mid` / `rad` are `ExactArray`s of Fractions (exact endpoints).

    Example:
      >>> y = tljax.evaluate(jnp.exp, jnp.float32(1.0), semantics="exact")
      >>> y.lower[()] < Fraction(27183, 10000) < y.upper[()]
      False
      >>> y.contains(np.exp(1.0))   # float64's e is within 1 ulp of e, not in a 128-bit ball
      array(False)
    """

    source_dtype: np.dtype | None

    def __new__(cls, balls, source_dtype=None):
        arr = np.asarray(balls, dtype=object).view(cls)
        arr.source_dtype = np.dtype(source_dtype) if source_dtype is not None else None
        return arr

    def __array_finalize__(self, obj):
        self.source_dtype = getattr(obj, "source_dtype", None)

    def _map(self, f) -> ExactArray:
        base = np.asarray(self).view(np.ndarray)
        out = np.empty(base.shape, dtype=object)
        out.flat[:] = [f(b) for b in base.flat]
        return ExactArray(out, self.source_dtype)

    @property
    def mid(self) -> ExactArray:
        return self._map(lambda b: arb_exact_fraction(b.mid()))

    @property
    def rad(self) -> ExactArray:
        return self._map(lambda b: arb_exact_fraction(b.rad()))

    @property
    def lower(self) -> ExactArray:
        return self._map(lambda b: arb_exact_fraction(b.mid()) - arb_exact_fraction(b.rad()))

    @property
    def upper(self) -> ExactArray:
        return self._map(lambda b: arb_exact_fraction(b.mid()) + arb_exact_fraction(b.rad()))

    @property
    def width(self) -> np.ndarray:
        """2·radius as float64 (for reports)."""
        return np.asarray(
            [float(2 * arb_exact_fraction(b.rad())) for b in np.asarray(self).flat]
        ).reshape(self.shape)

    def contains(self, x) -> np.ndarray:
        """Whether each ball contains the corresponding exact value of `x` (floats read exactly)."""
        xs = np.broadcast_to(np.asarray(x, dtype=object), self.shape)
        lo, hi = self.lower, self.upper
        out = np.empty(self.shape, dtype=bool)
        for idx in np.ndindex(*self.shape):
            v = _as_fraction(xs[idx])
            out[idx] = lo[idx] <= v <= hi[idx]
        return out

    def to_float(self, dtype=np.float64) -> np.ndarray:
        """The midpoints, correctly rounded to `dtype`."""
        return exact_to_float(self.mid, dtype)

    def to_sympy(self) -> np.ndarray:
        return to_sympy(self)


def arb_exact_fraction(a: arb) -> Fraction:
    """The value of an exact arb (a midpoint or radius) as a Fraction."""
    m, e = a.man_exp()
    m, e = int(m), int(e)
    return Fraction(m << e) if e >= 0 else Fraction(m, 1 << -e)


# ----------------------------------------------------------------------------------------------
# Public helpers.


def exact_to_float(a, dtype=np.float64) -> np.ndarray:
    """Correctly rounded (round-to-nearest-even) conversion of exact values to a float dtype.

    Args:
      a: an `ExactArray`, an object array / scalar of Fraction, int or fmpq, or an `Enclosure`
        (its midpoints are rounded).
      dtype: the target float dtype (float64, float32, float16, bfloat16, float8 formats...).

    Returns:
      A numpy array of `dtype`; values beyond the format's range become ±inf.

    Example:
      >>> exact_to_float(Fraction(1, 3), np.float32)
      array(0.33333334, dtype=float32)
    """
    if isinstance(a, Enclosure):
        a = a.mid
    fmt = format_of_dtype(dtype)
    arr = np.asarray(a, dtype=object)
    out = np.empty(arr.shape, dtype=np.float64)
    for idx in np.ndindex(*arr.shape):
        v = _as_fraction(arr[idx])
        r, q = round_rne(v.numerator, v.denominator, fmt)
        if overflows(r, q, fmt):
            out[idx] = np.inf if r > 0 else -np.inf
        else:
            # r * 2**q is representable in `dtype`, hence exactly in float64 too.
            out[idx] = float(Fraction(r) * Fraction(2) ** q)
    return out.astype(dtype)


def to_sympy(a) -> np.ndarray:
    """Exact values as an object array of `sympy.Rational`; an `Enclosure` gives `sympy.Interval`s.

    Example:
      >>> to_sympy(tljax.evaluate(lambda x: x / 3.0, jnp.float32(1.0), semantics="exact"))
      array(1/3, dtype=object)
    """
    import sympy

    if isinstance(a, Enclosure):
        lo, hi = a.lower, a.upper
        out = np.empty(a.shape, dtype=object)
        for idx in np.ndindex(*a.shape):
            out[idx] = sympy.Interval(
                sympy.Rational(lo[idx].numerator, lo[idx].denominator),
                sympy.Rational(hi[idx].numerator, hi[idx].denominator),
            )
        return out
    arr = np.asarray(a, dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(*arr.shape):
        v = _as_fraction(arr[idx])
        out[idx] = sympy.Rational(v.numerator, v.denominator)
    return out


def ulp_distance(exact, computed, dtype=None) -> np.ndarray:
    """Distance between exact values and computed floats, in units in the last place.

    The unit is the ulp of the exact value in the computed array's format (or `dtype`):
    ``|computed - exact| / ulp(exact)``, evaluated exactly and then rounded to float64. A
    non-finite computed value gives inf. For an `Enclosure`, the distance to the ball's midpoint
    plus its radius is used (an upper bound).

    Args:
      exact: `ExactArray`, `Enclosure`, or object array of Fractions.
      computed: float array (numpy or jax) with the same shape (or broadcastable).
      dtype: format whose ulp is the unit (default: `computed`'s dtype).

    Returns:
      float64 array of distances.

    Example:
      >>> ulp_distance(np.array([Fraction(1, 3)], dtype=object), np.float32([0.33333334]))
      array([0.33333333])
    """
    comp = np.asarray(computed)
    fmt = format_of_dtype(dtype if dtype is not None else comp.dtype)
    rad = None
    if isinstance(exact, Enclosure):
        rad = np.asarray(exact.rad, dtype=object)
        exact = exact.mid
    ex = np.asarray(exact, dtype=object)
    shape = np.broadcast_shapes(ex.shape, comp.shape)
    ex = np.broadcast_to(ex, shape)
    comp = np.broadcast_to(comp, shape)
    out = np.empty(shape, dtype=np.float64)
    for idx in np.ndindex(*shape):
        c = comp[idx]
        if not np.isfinite(float(c)):
            out[idx] = np.inf
            continue
        v = _as_fraction(ex[idx])
        d = abs(_as_fraction(c) - v)
        if rad is not None:
            d += _as_fraction(np.broadcast_to(rad, shape)[idx])
        out[idx] = float(d / ulp_of(v.numerator, v.denominator, fmt))
    return out


def is_exact(result) -> bool:
    """True when every leaf of an exact-semantics result is exact (no `Enclosure`).

    Example:
      >>> is_exact(tljax.evaluate(lambda x: 2 * x, jnp.ones(3), semantics="exact"))
      True
    """
    leaves = jtu.tree_leaves(result)
    return bool(leaves) and all(isinstance(x, ExactArray) for x in leaves)
