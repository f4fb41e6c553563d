"""Values of the exact semantics: dyadic tensors, rational tensors, certified enclosures.

Three internal layouts, from fastest to most general (a tensor is promoted only when an operation
needs it):

* `Dy` — dyadic: an integer array `m` and ONE exponent `e`; the values are ``m * 2**e``. Every
  float is dyadic, and +, -, *, max, ReLU, comparisons keep tensors dyadic, so an affine/ReLU net
  is integer matrix algebra (`flint.fmpz_mat`). `m` is an ``int64`` array while the values are
  small (structural ops and comparisons are then vectorised numpy) and an ``object`` array of
  Python ints / `flint.fmpz` otherwise.
* `Q` — rational: an object array of `flint.fmpq`, for division and other non-dyadic results.
* `Ball` — an object array of `flint.arb` balls: certified enclosures from transcendental
  functions, at the semantics' precision. Once a ball enters, downstream ops propagate balls.

Nothing here rounds: conversions from floats decompose the IEEE bit pattern exactly.
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from flint import arb, arf, fmpq, fmpz

from ..core import InputError, TljaxError, compat

compat.register_exclusion(__file__)

_I64_LIMIT = 1 << 62  # int64 fast paths keep |m| below this so one more +/- cannot overflow
_EXACT_SCALARS = (int, fmpz, fmpq, Fraction, bool, np.integer, np.bool_)


class ExactDomainError(TljaxError, ArithmeticError):
    """An operation has no real-number value here (x/0, log of 0, an undecidable comparison)."""


class Dy:
    """A dyadic tensor ``m * 2**e`` (``m``: int64 or object array of ints; ``e``: Python int)."""

    __slots__ = ("e", "m")

    def __init__(self, m: np.ndarray, e: int = 0):
        # numpy ufuncs return scalars for 0-d inputs: keep payloads arrays of int64 or object.
        m = np.asarray(m)
        if m.dtype != np.int64 and m.dtype != object:
            if m.dtype.kind == "b" or (m.dtype.kind in "iu" and m.dtype != np.uint64):
                m = m.astype(np.int64)
            elif m.dtype == np.uint64:
                m = m.astype(object)
            else:
                raise TypeError(f"dyadic mantissas must be integers, got {m.dtype}")
        self.m = m
        self.e = int(e)

    @property
    def shape(self) -> tuple:
        return self.m.shape

    def __repr__(self) -> str:
        return f"Dy(shape={self.shape}, e={self.e}, m.dtype={self.m.dtype})"


class Q:
    """A rational tensor: an object array of `flint.fmpq`."""

    __slots__ = ("q",)

    def __init__(self, q: np.ndarray):
        self.q = np.asarray(q, dtype=object)

    @property
    def shape(self) -> tuple:
        return self.q.shape

    def __repr__(self) -> str:
        return f"Q(shape={self.shape})"


class Ball:
    """An enclosure tensor: an object array of `flint.arb` (midpoint-radius balls)."""

    __slots__ = ("b",)

    def __init__(self, b: np.ndarray):
        self.b = np.asarray(b, dtype=object)

    @property
    def shape(self) -> tuple:
        return self.b.shape

    def __repr__(self) -> str:
        return f"Ball(shape={self.shape})"


class Poison:
    """A constant that has no exact value (NaN/inf). Raises, with location, where it is used."""

    __slots__ = ("inf_sign", "message", "shape")

    def __init__(self, message: str, shape: tuple = (), inf_sign: int = 0):
        self.message = message
        self.shape = tuple(shape)
        # +1 / -1 when every entry is +inf / -inf: the identity of min / max (softmax's initial).
        self.inf_sign = inf_sign

    def __repr__(self) -> str:
        return f"Poison({self.message!r})"


VALUE_TYPES = (Dy, Q, Ball, Poison)


def is_value(v) -> bool:
    return isinstance(v, VALUE_TYPES)


# ----------------------------------------------------------------------------------------------
# Small vectorised helpers on integer arrays.


def obj(m: np.ndarray) -> np.ndarray:
    """The array as an object array of Python ints (no copy when it already is one)."""
    m = np.asarray(m)
    if m.dtype == object:
        return m
    return m.astype(object)


def maxabs(m: np.ndarray) -> int:
    """max |m| as a Python int (0 for an empty array)."""
    if m.size == 0:
        return 0
    if m.dtype == object:
        return int(max(abs(int(x)) for x in m.flat)) if m.size < 64 else int(np.max(np.abs(m)))
    return int(np.max(np.abs(m)))


def small(*ms: np.ndarray, bound: int = _I64_LIMIT) -> bool:
    """Whether every array is int64 and the sum of their max magnitudes stays below `bound`."""
    if any(m.dtype == object for m in ms):
        return False
    return sum(maxabs(m) for m in ms) < bound


def shl(m: np.ndarray, k: int) -> np.ndarray:
    """``m * 2**k`` for ``k >= 0``, exactly (int64 while it fits)."""
    if k == 0:
        return m
    if k < 0:
        raise ValueError("shl needs k >= 0")
    if m.dtype != object and k < 62 and maxabs(m) < (_I64_LIMIT >> k):
        return np.asarray(m << k)
    return np.asarray(obj(m) << k, dtype=object)


def bitlen(m: np.ndarray) -> np.ndarray:
    """Per-element bit length of |m| (0 for 0), as an int64 array."""
    if m.dtype != object:
        a = np.abs(m.astype(np.int64))
        out = np.zeros(a.shape, np.int64)
        nz = a != 0
        # float64 rounding can push 2**k - 1 (k > 53) up to 2**k: correct those entries below.
        out[nz] = np.frexp(a[nz].astype(np.float64))[1]
        big = nz & (a >= (1 << 53))
        if big.any():
            out[big] = [int(x).bit_length() for x in a[big]]
        return out
    return (
        np.asarray(np.frompyfunc(lambda x: int(x).bit_length(), 1, 1)(m), dtype=object)
        .astype(np.int64)
        .reshape(m.shape)
    )


def trailing_zeros(m: np.ndarray) -> int:
    """min over nonzero entries of the number of trailing zero bits (0 if all are zero)."""
    if m.size == 0:
        return 0
    if m.dtype != object:
        nz = m[m != 0]
        if nz.size == 0:
            return 0
        low = np.bitwise_or.reduce(nz) & -np.bitwise_or.reduce(nz)
        return int(low).bit_length() - 1
    acc = 0
    for x in m.flat:
        acc |= int(x)
    return (acc & -acc).bit_length() - 1 if acc else 0


def normalize(v: Dy) -> Dy:
    """Removes common trailing zero bits (keeps ints small after e.g. a division by 2)."""
    tz = trailing_zeros(v.m)
    if tz == 0:
        return v
    return Dy(v.m >> tz, v.e + tz)


def demote(m: np.ndarray) -> np.ndarray:
    """An object int array back to int64 when every entry is small (cheap vectorised ops after)."""
    if m.dtype == object and m.size and maxabs(m) < _I64_LIMIT:
        return m.astype(np.int64)
    return m


# ----------------------------------------------------------------------------------------------
# Lifting numpy data exactly.


def is_float_dtype(dtype) -> bool:
    return bool(jnp.issubdtype(np.dtype(dtype), jnp.floating))


def _nonfinite_report(f: np.ndarray) -> str:
    bad = np.argwhere(~np.isfinite(f))
    shown = ", ".join(f"{tuple(int(i) for i in idx)}: {f[tuple(idx)]}" for idx in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return f"{len(bad)} non-finite entr{'y' if len(bad) == 1 else 'ies'} at index {shown}{more}"


def decompose_float(arr: np.ndarray) -> Dy:
    """Exact (m, e) decomposition of a finite float array of any binary format up to float64."""
    f = np.array(arr, dtype=np.float64, order="C")  # exact: every narrower format widens exactly
    b = f.view(np.int64)
    neg = b < 0
    big_e = (b >> 52) & 0x7FF
    frac = b & ((1 << 52) - 1)
    m = np.where(big_e > 0, frac | (1 << 52), frac)
    e = np.maximum(big_e, 1) - 1075
    nz = m != 0
    if not nz.any():
        return Dy(np.zeros(f.shape, np.int64), 0)
    # Strip trailing zeros so float32 data keeps 24-bit mantissas (smaller shifts, smaller ints).
    low = np.where(nz, m & -m, 1)
    tz = np.frexp(low.astype(np.float64))[1] - 1  # exact: `low` is a power of two
    m = m >> tz
    e = e + tz
    e0 = int(e[nz].min())
    sh = np.where(nz, e - e0, 0)
    top = int((bitlen(m) + sh)[nz].max())
    if top <= 62:
        mm = m << sh
    else:
        mm = m.astype(object) << sh.astype(object)
    mm = np.where(neg, -mm, mm)
    return Dy(mm.astype(object) if top > 62 else mm, e0)


def _from_object_array(a: np.ndarray):
    """Lifts an object array of exact scalars (Fraction, int, fmpq) or balls (arb)."""
    flat = list(a.flat)
    if all(isinstance(x, arb) for x in flat) and flat:
        return Ball(a.copy())
    if all(isinstance(x, _EXACT_SCALARS) for x in flat):
        if all(isinstance(x, int | fmpz | bool | np.integer | np.bool_) for x in flat):
            return Dy(np.array([int(x) for x in flat], dtype=object).reshape(a.shape), 0)
        q = np.empty(a.shape, dtype=object)
        q.flat[:] = [_to_fmpq(x) for x in flat]
        return dyadicize(Q(q))
    if all(isinstance(x, _EXACT_SCALARS + (arb, float, np.floating)) for x in flat):
        # A mix: exact scalars, floats (exact binary values) and balls.
        if any(isinstance(x, arb) for x in flat):
            b = np.empty(a.shape, dtype=object)
            b.flat[:] = [x if isinstance(x, arb) else to_arb_scalar(_to_fmpq(x)) for x in flat]
            return Ball(b)
        q = np.empty(a.shape, dtype=object)
        q.flat[:] = [_to_fmpq(x) for x in flat]
        return dyadicize(Q(q))
    bad = next(x for x in flat if not isinstance(x, _EXACT_SCALARS + (arb, float, np.floating)))
    raise InputError(
        f"an object array holds a {type(bad).__name__} ({bad!r}); the exact semantics accepts "
        "arrays of numbers, or object arrays of Fraction / int / flint.fmpq / flint.arb"
    )


def _to_fmpq(x) -> fmpq:
    if isinstance(x, fmpq):
        return x
    if isinstance(x, Fraction):
        return fmpq(x.numerator, x.denominator)
    if isinstance(x, float | np.floating):
        if not np.isfinite(x):
            raise InputError(f"non-finite value {x!r} has no exact value")
        n, d = float(x).as_integer_ratio()
        return fmpq(n, d)
    return fmpq(int(x))


def lift_array(value, aval=None, *, what: str = "constant") -> Dy | Q | Ball | Poison:
    """Converts a concrete array exactly; non-finite entries give a `Poison` (raised where used)."""
    if is_value(value):
        return value
    if isinstance(value, arb):
        return Ball(np.array(value, dtype=object).reshape(()))
    a = np.asarray(value)
    if aval is not None and a.dtype != object and a.dtype != np.dtype(aval.dtype):
        a = a.astype(aval.dtype)
    if a.dtype == object:
        return _from_object_array(a)
    kind = a.dtype.kind
    if kind == "b":
        return Dy(a.astype(np.int64), 0)
    if kind in "iu":
        if a.dtype == np.uint64 and a.size and int(a.max()) >= (1 << 62):
            return Dy(np.array([int(x) for x in a.flat], dtype=object).reshape(a.shape), 0)
        return Dy(a.astype(np.int64), 0)
    if is_float_dtype(a.dtype):
        if a.dtype.itemsize > 8:
            raise InputError(f"{a.dtype} arrays are not supported (wider than float64)")
        f = a.astype(np.float64)
        if not np.all(np.isfinite(f)):
            inf_sign = 1 if np.all(f == np.inf) else (-1 if np.all(f == -np.inf) else 0)
            return Poison(
                f"a {what} of the program ({a.dtype}{list(a.shape)}) has {_nonfinite_report(f)}; "
                "NaN and infinities are not real numbers, so the exact semantics has no value for "
                "them (replace them, e.g. use jnp.finfo(dtype).min instead of -inf in masks)",
                a.shape,
                inf_sign,
            )
        return decompose_float(a)
    raise InputError(f"{a.dtype} values are not supported by the exact semantics")


def lift_input(value, aval) -> Dy | Q | Ball:
    """Converts a user input leaf; NaN/inf or non-numeric leaves raise `InputError`."""
    if isinstance(value, jax.core.Tracer):
        raise InputError(
            "got a traced value: the exact semantics runs on the host with Python integers and "
            "cannot be traced; call tljax.evaluate(..., semantics='exact') outside "
            "jax.jit/vmap/grad"
        )
    if isinstance(value, str | bytes) or value is None:
        raise InputError(
            f"got a {type(value).__name__} where an array was expected ({aval}); the exact "
            "semantics needs arrays of float/int/bool, or object arrays of Fraction / flint.fmpq"
        )
    try:
        out = lift_array(value, aval if not _is_object(value) else None, what="input")
    except (TypeError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(
            f"cannot convert a {type(value).__name__} to an array ({err}); the exact semantics "
            "needs arrays of float/int/bool, or object arrays of Fraction / flint.fmpq"
        ) from err
    if isinstance(out, Poison):
        f = np.asarray(value).astype(np.float64)
        raise InputError(
            f"the value has {_nonfinite_report(f)}; "
            "the exact semantics evaluates real numbers, which have no NaN or infinity "
            "(clean the input first, e.g. with jnp.nan_to_num)"
        )
    if aval is not None and tuple(out.shape) != tuple(aval.shape):
        raise InputError(
            f"input has shape {tuple(out.shape)}, the program expects {tuple(aval.shape)}"
        )
    return out


def _is_object(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == object


# ----------------------------------------------------------------------------------------------
# Conversions between layouts.


def _fmpq_dyadic(m, e: int):
    return fmpq(int(m) << e) if e >= 0 else fmpq(int(m), 1 << -e)


def to_q(v) -> Q:
    """Promotes a Dy or Q to Q (exact)."""
    if isinstance(v, Q):
        return v
    e = v.e
    f = np.frompyfunc(lambda x: _fmpq_dyadic(x, e), 1, 1)
    out = f(v.m) if v.m.size else np.empty(v.shape, dtype=object)
    return Q(np.asarray(out, dtype=object).reshape(v.shape))


def to_arb_scalar(x) -> arb:
    """An exact scalar as an arb ball (exact when dyadic; otherwise rounded at the current
    precision)."""
    if isinstance(x, arb):
        return x
    if isinstance(x, fmpq) and x.q == 1:
        return arb(x.p)
    return arb(x)


def to_ball(v) -> Ball:
    """Promotes any value to Ball; dyadic entries become exact (radius 0) balls."""
    if isinstance(v, Ball):
        return v
    if isinstance(v, Dy):
        e = v.e
        f = np.frompyfunc(lambda x: arb(arf((int(x), e))), 1, 1)
    else:
        f = np.frompyfunc(to_arb_scalar, 1, 1)
    payload = v.m if isinstance(v, Dy) else v.q
    out = f(payload) if payload.size else np.empty(payload.shape, dtype=object)
    return Ball(np.asarray(out, dtype=object).reshape(payload.shape))


def settle(v):
    """A Ball whose balls all have radius 0 is exact: return it as a Dy (else unchanged)."""
    if not isinstance(v, Ball) or not all(x.is_exact() for x in v.b.flat):
        return v
    if v.b.size == 0:
        return Dy(np.zeros(v.shape, np.int64), 0)
    pairs = [x.mid().man_exp() for x in v.b.flat]
    nz = [int(e) for m, e in pairs if m != 0]
    e0 = min(nz) if nz else 0
    m = np.array([int(mm) << (int(e) - e0) if mm != 0 else 0 for mm, e in pairs], dtype=object)
    return normalize(Dy(demote(m.reshape(v.shape)), e0))


def _is_pow2(d) -> bool:
    d = int(d)
    return d & (d - 1) == 0


def dyadicize(v: Q) -> Dy | Q:
    """A Q whose denominators are all powers of two, as a Dy; otherwise unchanged."""
    if not isinstance(v, Q):
        return v
    flat = list(v.q.flat)
    if not all(_is_pow2(x.q) for x in flat):
        return v
    if not flat:
        return Dy(np.zeros(v.shape, np.int64), 0)
    ks = [int(x.q).bit_length() - 1 for x in flat]
    k = max(ks)
    m = np.array([int(x.p) << (k - kx) for x, kx in zip(flat, ks, strict=True)], dtype=object)
    return normalize(Dy(demote(m.reshape(v.shape)), -k))


def payload(v) -> np.ndarray:
    if isinstance(v, Dy):
        return v.m
    if isinstance(v, Q):
        return v.q
    if isinstance(v, Ball):
        return v.b
    raise TypeError(f"not an exact value: {v!r}")


def rebuild(like, arr: np.ndarray, e: int | None = None):
    """A value of the same layout as `like` with payload `arr`."""
    if isinstance(like, Dy):
        return Dy(arr, like.e if e is None else e)
    if isinstance(like, Q):
        return Q(arr)
    return Ball(arr)


def unify(*vals) -> tuple[type, list[np.ndarray], int]:
    """Brings values to one layout: (layout class, payloads, common exponent for Dy else 0)."""
    for v in vals:
        if isinstance(v, Poison):
            raise InputError(v.message)
    if any(isinstance(v, Ball) for v in vals):
        return Ball, [to_ball(v).b for v in vals], 0
    if any(isinstance(v, Q) for v in vals):
        return Q, [to_q(v).q for v in vals], 0
    es = [v.e for v in vals if v.m.size and (v.m.dtype == object or np.any(v.m))]
    e = min(es) if es else 0
    return Dy, [shl(v.m, v.e - e) if v.e >= e else v.m for v in vals], e


def make(cls, arr: np.ndarray, e: int = 0):
    if cls is Dy:
        return Dy(arr, e)
    return cls(arr)


# ----------------------------------------------------------------------------------------------
# Exact scalars and arrays for the user.


def fraction_of(m, e: int) -> Fraction:
    m = int(m)
    return Fraction(m << e) if e >= 0 else Fraction(m, 1 << -e)


def to_fractions(v) -> np.ndarray:
    """Object array of `fractions.Fraction` for a Dy or Q."""
    if isinstance(v, Dy):
        e = v.e
        f = np.frompyfunc(lambda x: fraction_of(x, e), 1, 1)
        arr = v.m
    else:
        f = np.frompyfunc(lambda x: Fraction(int(x.p), int(x.q)), 1, 1)
        arr = v.q
    out = f(arr) if arr.size else np.empty(arr.shape, dtype=object)
    return np.asarray(out, dtype=object).reshape(arr.shape)


def to_ints(v) -> np.ndarray | None:
    """Object array of Python ints when every entry is an integer, else None."""
    if isinstance(v, Dy):
        if v.e >= 0:
            return obj(shl(v.m, v.e))
        k = -v.e
        mask = (1 << k) - 1
        m = obj(v.m)
        if all(int(x) & mask == 0 for x in m.flat):
            return m >> k
        return None
    if isinstance(v, Q):
        if all(x.q == 1 for x in v.q.flat):
            return np.asarray(np.frompyfunc(lambda x: int(x.p), 1, 1)(v.q), dtype=object).reshape(
                v.shape
            )
        return None
    return None


def approx_f64_scaled(m: np.ndarray, exps) -> np.ndarray:
    """float64 approximation of m * 2**exps (exps: int or int array), safe for huge ints."""
    m = np.asarray(m)
    exps = np.asarray(exps, dtype=np.int64)
    if m.dtype != object and (m.size == 0 or maxabs(m) < (1 << 53)):
        return np.ldexp(m.astype(np.float64), exps)
    bl = bitlen(m)
    sh = np.maximum(bl - 60, 0)
    top = np.frompyfunc(lambda x, s: int(x) >> int(s) if x >= 0 else -((-int(x)) >> int(s)), 2, 1)(
        m, sh
    )
    return np.ldexp(np.asarray(top, dtype=object).astype(np.float64), sh + exps)


def approx_f64(v) -> np.ndarray:
    """float64 approximation (for messages and error tables; not correctly rounded)."""
    if isinstance(v, Dy):
        return approx_f64_scaled(v.m, v.e)
    if isinstance(v, Q):
        out = np.frompyfunc(lambda x: float(Fraction(int(x.p), int(x.q))), 1, 1)(v.q)
        return np.asarray(out, dtype=object).astype(np.float64).reshape(v.shape)
    out = np.frompyfunc(lambda x: float(x.mid()), 1, 1)(v.b)
    return np.asarray(out, dtype=object).astype(np.float64).reshape(v.shape)
