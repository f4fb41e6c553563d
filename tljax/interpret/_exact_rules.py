"""Rule table of the exact semantics (see `tljax.interpret._exact` for the semantics itself).

Elementwise rules live here, array rules (reductions, dot/conv, windows, indexing, sorting) in
`_exact_arrays`, helpers both use in `_exact_common`; `build_rules` assembles the table. Rules take
and return `Dy` / `Q` / `Ball` values (`_exact_values`). Conventions:

* Real-number meaning: no rounding anywhere. `convert_element_type` to a float dtype keeps the
  exact value; `reduce_precision` is the one primitive that rounds (RNE to its format).
* Integer dtypes are two's-complement integers of their width (results wrap like XLA's);
  float-to-int conversion truncates and refuses values outside the target range.
* Transcendental functions return `flint.arb` enclosures at the semantics' precision.
* Anything with no real value (x/0, log 0, an undecidable comparison of overlapping balls)
  raises `ExactDomainError` with the equation's location.
"""

from __future__ import annotations

import functools as ft
import operator
from fractions import Fraction

import flint
import jax
import numpy as np
from flint import arb, fmpq, fmpz

from ..core import InputError, compat
from . import _exact_arrays as A
from ._exact_common import (
    _arb_lo_hi,
    _ball_minmax,
    _ball_of_interval,
    _ball_unary,
    _check,
    _fail,
    _finite_ball,
    _fmt_index,
    _is_int_dtype,
    _out_dtype,
    _precision,
    wrap_int,
)
from ._exact_results import round_rne
from ._exact_values import (
    Ball,
    Dy,
    ExactDomainError,
    Poison,
    Q,
    demote,
    dyadicize,
    is_float_dtype,
    make,
    maxabs,
    normalize,
    obj,
    payload,
    rebuild,
    settle,
    shl,
    small,
    to_ball,
    to_ints,
    to_q,
    unify,
)
from ._rounding import Format

compat.register_exclusion(__file__)
lax = jax.lax

_MAX_POW_BITS = 1 << 22  # refuse integer powers whose result would exceed ~4M bits


# ----------------------------------------------------------------------------------------------
# Integer wrap-around (two's complement of the output dtype; `wrap_int` is in `_exact_common`).


def _int_result(rule):
    """Wraps integer outputs of an arithmetic rule to the output dtype."""

    @ft.wraps(rule)
    def wrapped(ctx, *args, **params):
        out = rule(ctx, *args, **params)
        dt = _out_dtype(ctx)
        if _is_int_dtype(dt):
            return wrap_int(out, dt)
        return out

    return wrapped


# ----------------------------------------------------------------------------------------------
# Elementwise arithmetic.


def _ball_binop(ctx, a: np.ndarray, b: np.ndarray, f) -> Ball:
    with flint.ctx.workprec(_precision(ctx)):
        out = f(a, b)
    return Ball(np.asarray(out, dtype=object))


def _add_like(sign: int):
    def rule(ctx, x, y, **params):
        del params
        cls, (a, b), e = unify(x, y)
        if cls is Dy:
            if small(a, b):
                return Dy(a + b if sign > 0 else a - b, e)
            a, b = obj(a), obj(b)
            return Dy(a + b if sign > 0 else a - b, e)
        if cls is Ball:
            return _ball_binop(ctx, a, b, operator.add if sign > 0 else operator.sub)
        return Q(np.asarray(a + b if sign > 0 else a - b, dtype=object))

    return _int_result(rule)


def _mul(ctx, x, y, **params):
    del params
    _check(ctx, x, y)
    if isinstance(x, Dy) and isinstance(y, Dy):
        a, b = x.m, y.m
        if a.dtype != object and b.dtype != object and maxabs(a) * maxabs(b) < (1 << 62):
            return Dy(a * b, x.e + y.e)
        return Dy(obj(a) * obj(b), x.e + y.e)
    cls, (a, b), _ = unify(x, y)
    if cls is Ball:
        return _ball_binop(ctx, a, b, operator.mul)
    return dyadicize(Q(np.asarray(a * b, dtype=object)))


def _zero_positions(payload_arr) -> np.ndarray:
    return np.argwhere(np.asarray(payload_arr == 0, dtype=bool).reshape(np.shape(payload_arr)))


def _check_nonzero(ctx, y, what: str):
    if isinstance(y, Ball):
        bad = [i for i in np.ndindex(*y.shape) if y.b[i].contains(0)]
        if bad:
            _fail(
                ctx,
                f"{what}: the divisor's enclosure contains 0 at index {_fmt_index(bad[0])} "
                f"({y.b[bad[0]]}); raise the precision (semantics='exact[256]') if the divisor is "
                "not really 0, else guard the division",
            )
        return
    zeros = _zero_positions(payload(y))
    if len(zeros):
        shown = ", ".join(_fmt_index(i) for i in zeros[:5])
        _fail(
            ctx,
            f"{what}: division by zero at index {shown} ({len(zeros)} zero divisor"
            f"{'s' if len(zeros) > 1 else ''}); the exact semantics has no value for x/0. Guard "
            "the "
            "divisor, e.g. jnp.where(d == 0, 1, d)",
        )


def _trunc_div_ints(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def f(x, y):
        x, y = int(x), int(y)
        q = abs(x) // abs(y)
        return q if (x >= 0) == (y >= 0) else -q

    return np.asarray(np.frompyfunc(f, 2, 1)(a, b), dtype=object)


def _div(ctx, x, y, **params):
    del params
    _check(ctx, x, y)
    _check_nonzero(ctx, y, "div")
    if _is_int_dtype(_out_dtype(ctx)):
        a, b = np.broadcast_arrays(to_ints(x), to_ints(y))
        return wrap_int(Dy(_trunc_div_ints(a, b), 0), _out_dtype(ctx))
    if isinstance(y, Dy) and isinstance(x, Dy) and y.m.size == 1 and abs(int(y.m.flat[0])) == 1:
        # Division by ±2**k (mean over 2**k elements, /2): stays dyadic, no rationals.
        s = int(y.m.flat[0])
        return Dy(x.m if s == 1 else -x.m, x.e - y.e)
    cls, (a, b), _ = unify(x, y)
    if cls is Ball:
        return _ball_binop(ctx, a, b, operator.truediv)
    if cls is Dy:
        a, b = to_q(Dy(a, 0)).q, to_q(Dy(b, 0)).q
    out = np.asarray(np.frompyfunc(operator.truediv, 2, 1)(a, b), dtype=object)
    return dyadicize(Q(out.reshape(np.broadcast_shapes(np.shape(a), np.shape(b)))))


def _rem(ctx, x, y, **params):
    del params
    _check(ctx, x, y)
    _check_nonzero(ctx, y, "rem")
    if _is_int_dtype(_out_dtype(ctx)):
        a, b = np.broadcast_arrays(to_ints(x), to_ints(y))
        q = _trunc_div_ints(a, b)
        return wrap_int(Dy(obj(a) - obj(b) * q, 0), _out_dtype(ctx))
    if isinstance(x, Ball) or isinstance(y, Ball):
        _fail(ctx, "rem of an enclosure is not supported (it is discontinuous)", ExactDomainError)
    cls, (a, b), e = unify(x, y)
    if cls is Dy:
        a, b = np.broadcast_arrays(a, b)
        q = _trunc_div_ints(a, b)
        return Dy(demote(obj(a) - obj(b) * q), e)

    def f(u, w):
        t = u / w
        tq = int(t.p) // int(t.q) if t >= 0 else -((-int(t.p)) // int(t.q))
        return u - w * tq

    out = np.asarray(np.frompyfunc(f, 2, 1)(a, b), dtype=object)
    return dyadicize(Q(out.reshape(np.broadcast_shapes(np.shape(a), np.shape(b)))))


@_int_result
def _neg(ctx, x, **params):
    del params
    _check(ctx, x)
    if isinstance(x, Dy):
        return Dy(-x.m, x.e)
    if isinstance(x, Q):
        return Q(np.asarray(-x.q, dtype=object))
    return Ball(np.asarray(-x.b, dtype=object))


@_int_result
def _abs(ctx, x, **params):
    del params
    _check(ctx, x)
    if isinstance(x, Dy):
        return Dy(np.abs(x.m), x.e)
    if isinstance(x, Q):
        return Q(np.asarray(np.abs(x.q), dtype=object))
    with flint.ctx.workprec(_precision(ctx)):
        return Ball(np.asarray(np.frompyfunc(abs, 1, 1)(x.b), dtype=object).reshape(x.shape))


def _sign_scalar(v) -> int:
    return (v > 0) - (v < 0)


def _sign(ctx, x, **params):
    del params
    _check(ctx, x)
    if isinstance(x, Dy):
        m = x.m if x.m.dtype != object else np.frompyfunc(_sign_scalar, 1, 1)(x.m)
        return Dy(np.sign(np.asarray(m)).astype(np.int64).reshape(x.shape), 0)
    if isinstance(x, Q):
        return Dy(
            np.asarray(np.frompyfunc(_sign_scalar, 1, 1)(x.q), dtype=object)
            .astype(np.int64)
            .reshape(x.shape),
            0,
        )
    return _ball_monotone(ctx, x, lambda v: fmpq(_sign_scalar(v)))


def _minmax(is_max: bool):
    def rule(ctx, x, y, **params):
        del params
        # max(x, -inf) = x and min(x, +inf) = x: the one use of an infinity with a real value.
        ident = -1 if is_max else 1
        for a, b in ((x, y), (y, x)):
            if isinstance(a, Poison) and a.inf_sign == ident and not isinstance(b, Poison):
                shape = np.broadcast_shapes(a.shape, b.shape)
                return rebuild(b, np.broadcast_to(payload(b), shape))
        _check(ctx, x, y)
        cls, (a, b), e = unify(x, y)
        if cls is Ball:
            return _ball_minmax(ctx, a, b, is_max)
        if cls is Dy and a.dtype != object and b.dtype != object:
            return Dy(np.maximum(a, b) if is_max else np.minimum(a, b), e)
        out = np.maximum(obj(a), obj(b)) if is_max else np.minimum(obj(a), obj(b))
        return make(cls, np.asarray(out, dtype=object), e)

    return rule


def _ball_monotone(ctx, x: Ball, f, *, exact_ok: bool = True, increasing: bool = True):
    """Applies a monotone exact function to both ends of each ball; exact when they agree."""
    out = np.empty(x.shape, dtype=object)
    decided = True
    with flint.ctx.workprec(_precision(ctx)):
        for i in np.ndindex(*x.shape):
            lo, hi = _arb_lo_hi(x.b[i])
            flo, fhi = f(lo), f(hi)
            if not increasing:
                flo, fhi = fhi, flo
            if flo == fhi:
                out[i] = flo
            else:
                decided = False
                out[i] = (flo, fhi)
        if decided and exact_ok:
            return dyadicize(Q(out))
        for i in np.ndindex(*x.shape):
            v = out[i]
            out[i] = _ball_of_interval(*v) if isinstance(v, tuple) else _ball_of_interval(v, v)
    return Ball(out)


# ----------------------------------------------------------------------------------------------
# Comparisons and logic.


def _cmp(op):
    def rule(ctx, x, y, **params):
        del params
        cls, (a, b), _ = unify(x, y)
        if cls is Ball:
            return Dy(_ball_compare(ctx, a, b, op), 0)
        if cls is Dy and a.dtype != object and b.dtype != object:
            return Dy(op(a, b).astype(np.int64), 0)
        out = np.asarray(op(obj(a), obj(b)), dtype=bool)
        return Dy(out.astype(np.int64), 0)

    return rule


def _ball_compare(ctx, a, b, op) -> np.ndarray:
    a, b = np.broadcast_arrays(a, b)
    out = np.zeros(a.shape, np.int64)
    for i in np.ndindex(*a.shape):
        u, w = a[i], b[i]
        if op in (operator.eq, operator.ne):
            if u.is_exact() and w.is_exact():
                r = u.mid() == w.mid()
            elif not u.overlaps(w):
                r = False
            else:
                _undecidable(ctx, op, i, u, w)
            out[i] = r if op is operator.eq else not r
            continue
        if op(u, w):  # arb comparisons are True only when certain
            out[i] = 1
        elif _negate(op)(u, w):
            out[i] = 0
        else:
            _undecidable(ctx, op, i, u, w)
    return out


def _negate(op):
    return {
        operator.lt: operator.ge,
        operator.le: operator.gt,
        operator.gt: operator.le,
        operator.ge: operator.lt,
    }[op]


def _undecidable(ctx, op, i, u, w):
    _fail(
        ctx,
        f"comparison {op.__name__} of overlapping enclosures cannot be decided at index "
        f"{_fmt_index(i)}: {u} vs {w}. Raise the precision (semantics='exact[256]'), or keep "
        "transcendental values out of comparisons",
    )


def _bitwise(op):
    def rule(ctx, x, y, **params):
        del params
        a, b = to_ints(x), to_ints(y)
        out = Dy(np.asarray(op(a, b), dtype=object), 0)
        return (
            wrap_int(out, _out_dtype(ctx))
            if _is_int_dtype(_out_dtype(ctx))
            else Dy(demote(out.m), 0)
        )

    return rule


def _not(ctx, x, **params):
    del params
    dt = _out_dtype(ctx)
    a = to_ints(x)
    if dt == np.bool_:
        return Dy(np.asarray(a == 0).astype(np.int64), 0)
    return wrap_int(Dy(np.asarray(~a, dtype=object), 0), dt)


def _select_n(ctx, pred, *cases, **params):
    del params
    _check(ctx, pred)
    p = to_ints(pred)
    if p is None:
        _fail(ctx, "select_n predicate is not an exact integer/bool")
    p = np.asarray(p.astype(np.int64))
    cls, arrs, e = unify(*cases)
    if len(arrs) == 1:
        return make(cls, arrs[0], e)
    shape = np.broadcast_shapes(p.shape, *(a.shape for a in arrs))
    dtype = object if any(a.dtype == object for a in arrs) else arrs[0].dtype
    arrs = [np.broadcast_to(a.astype(dtype) if a.dtype != dtype else a, shape) for a in arrs]
    p = np.broadcast_to(p, shape)
    if len(arrs) == 2:
        out = np.where(p != 0, arrs[1], arrs[0])
    else:
        out = np.choose(np.clip(p, 0, len(arrs) - 1), arrs)
    return make(cls, out, e)


def _clamp(ctx, lo, x, hi, **params):
    del params
    mx = _minmax(True)(ctx, x, lo)
    return _minmax(False)(ctx, mx, hi)


def _is_finite(ctx, x, **params):
    del params
    _check(ctx, x)
    return Dy(np.ones(x.shape, np.int64), 0)  # exact values and certified balls are finite


# ----------------------------------------------------------------------------------------------
# Powers.


def _int_pow_exact(ctx, x, k: np.ndarray):
    """x**k elementwise for exact x and integer k (object array, broadcastable)."""
    if isinstance(x, Dy):
        m, kk = np.broadcast_arrays(x.m, k)
        kmax = max((abs(int(v)) for v in kk.flat), default=0)
        bits = max((int(v).bit_length() for v in m.flat), default=0)
        if kmax * max(bits, 1) > _MAX_POW_BITS or kmax * abs(x.e) > _MAX_POW_BITS:
            _fail(ctx, f"integer power with exponent {kmax} is too large to evaluate exactly")
        if all(int(v) >= 0 for v in kk.flat):
            mm = np.asarray(np.frompyfunc(lambda a, b: int(a) ** int(b), 2, 1)(m, kk), dtype=object)
            ek = np.asarray(obj(kk) * x.e, dtype=object)  # 0-d: the product is a Python int
            if ek.size == 0:
                return Dy(mm.reshape(m.shape), 0)
            e0 = min(int(v) for v in ek.flat)
            mm = np.asarray(mm << (ek - e0), dtype=object).reshape(m.shape)
            return normalize(Dy(demote(mm), e0))
    q = to_q(x)
    a, kk = np.broadcast_arrays(q.q, k)
    zero_neg = [i for i in np.ndindex(*a.shape) if a[i] == 0 and int(kk[i]) < 0]
    if zero_neg:
        _fail(
            ctx,
            f"0 raised to a negative power at index {_fmt_index(zero_neg[0])} (division by zero)",
        )
    out = np.asarray(np.frompyfunc(lambda u, n: u ** int(n), 2, 1)(a, kk), dtype=object).reshape(
        a.shape
    )
    return dyadicize(Q(out))


def _integer_pow(ctx, x, *, y, **params):
    del params
    _check(ctx, x)
    if isinstance(x, Ball):
        with flint.ctx.workprec(_precision(ctx)):
            return Ball(
                np.asarray(np.frompyfunc(lambda a: a ** int(y), 1, 1)(x.b), dtype=object).reshape(
                    x.shape
                )
            )
    out = _int_pow_exact(ctx, x, np.asarray(int(y), dtype=object))
    return wrap_int(out, _out_dtype(ctx)) if _is_int_dtype(_out_dtype(ctx)) else out


def _square(ctx, x, **params):
    return _integer_pow(ctx, x, y=2, **params)


def _one_minus_square(ctx, x, **params):
    """1 - x**2 exactly (JAX 0.11+ emits it in the derivatives of tanh, asin, acos, atanh)."""
    one = Dy(np.asarray(1, dtype=np.int64), 0)
    return _add_like(-1)(ctx, one, _square(ctx, x, **params))


def _pow(ctx, x, y, **params):
    del params
    _check(ctx, x, y)
    k = to_ints(y)
    if k is not None:
        if isinstance(x, Ball):
            a, kk = np.broadcast_arrays(x.b, k)
            with flint.ctx.workprec(_precision(ctx)):
                out = np.asarray(np.frompyfunc(lambda u, n: u ** int(n), 2, 1)(a, kk), dtype=object)
            return _finite_ball(ctx, Ball(out.reshape(a.shape)), "pow")
        return _int_pow_exact(ctx, x, k)
    xb, yb = to_ball(x).b, to_ball(y).b
    a, b = np.broadcast_arrays(xb, yb)
    out = np.empty(a.shape, dtype=object)
    with flint.ctx.workprec(_precision(ctx)):
        for i in np.ndindex(*a.shape):
            if a[i].is_zero():
                if b[i] > 0:
                    out[i] = arb(0)
                    continue
                _fail(
                    ctx, f"pow(0, y) with y <= 0 or undecided at index {_fmt_index(i)} (y = {b[i]})"
                )
            if not a[i] > 0:
                _fail(
                    ctx,
                    f"pow(x, y) with non-integer y needs x > 0, got x = {a[i]} at index "
                    f"{_fmt_index(i)} (y = {b[i]}); the real power is undefined there",
                )
            out[i] = a[i] ** b[i]
    return _finite_ball(ctx, Ball(out), "pow")


def _exp2(ctx, x, **params):
    params.pop("accuracy", None)
    two = Dy(np.asarray(1, dtype=np.int64), 1)
    return _pow(ctx, two, x)


def _exact_sqrt_scalar(v: fmpq):
    if v < 0:
        return None
    p, q = fmpz(v.p), fmpz(v.q)
    rp, rq = p.isqrt(), q.isqrt()
    if rp * rp == p and rq * rq == q:
        return fmpq(rp, rq)
    return None


def _sqrt_like(inverse: bool):
    def rule(ctx, x, **params):
        params.pop("accuracy", None)
        _check(ctx, x)
        name = "rsqrt" if inverse else "sqrt"
        if not isinstance(x, Ball):
            q = to_q(x).q
            neg = [i for i in np.ndindex(*q.shape) if q[i] < 0]
            if neg:
                _fail(
                    ctx, f"{name} of a negative number at index {_fmt_index(neg[0])} ({q[neg[0]]})"
                )
            if inverse:
                _check_nonzero(ctx, x, name)
            roots = [_exact_sqrt_scalar(v) for v in q.flat]
            if all(r is not None for r in roots):  # perfect squares stay exact
                out = np.empty(q.shape, dtype=object)
                out.flat[:] = [1 / r if inverse else r for r in roots]
                return dyadicize(Q(out))
        return _ball_unary(ctx, x, (lambda a: a.rsqrt()) if inverse else (lambda a: a.sqrt()), name)

    return rule


# ----------------------------------------------------------------------------------------------
# Transcendental functions: certified enclosures.


def _logistic(a: arb) -> arb:
    return 1 / (1 + (-a).exp())


def _cbrt(a: arb) -> arb:
    if a.is_zero():
        return arb(0)
    if a > 0:
        return a.root(3)
    if a < 0:
        return -((-a).root(3))
    return arb("nan")


_UNARY_BALL = {
    "exp": lambda a: a.exp(),
    "log": lambda a: a.log() if a > 0 else arb("nan"),
    "log1p": lambda a: a.log1p() if a > -1 else arb("nan"),
    "expm1": lambda a: a.expm1(),
    "tanh": lambda a: a.tanh(),
    "logistic": _logistic,
    "sin": lambda a: a.sin(),
    "cos": lambda a: a.cos(),
    "tan": lambda a: a.tan(),
    "asin": lambda a: a.asin(),
    "acos": lambda a: a.acos(),
    "atan": lambda a: a.atan(),
    "sinh": lambda a: a.sinh(),
    "cosh": lambda a: a.cosh(),
    "asinh": lambda a: a.asinh(),
    "acosh": lambda a: a.acosh(),
    "atanh": lambda a: a.atanh(),
    "erf": lambda a: a.erf(),
    "erfc": lambda a: a.erfc(),
    "erf_inv": lambda a: a.erfinv(),
    "lgamma": lambda a: a.lgamma(),
    "digamma": lambda a: a.digamma(),
    "cbrt": _cbrt,
}


def _transcendental(name: str):
    f = _UNARY_BALL[name]

    def rule(ctx, x, **params):
        del params  # `accuracy` (and any future hint) does not change the real function
        return _ball_unary(ctx, x, f, name)

    rule.__name__ = f"_{name}"
    return rule


def _atan2(ctx, y, x, **params):
    del params
    _check(ctx, x, y)
    a, b = np.broadcast_arrays(to_ball(y).b, to_ball(x).b)
    with flint.ctx.workprec(_precision(ctx)):
        out = np.asarray(np.frompyfunc(arb.atan2, 2, 1)(a, b), dtype=object).reshape(a.shape)
    return _finite_ball(ctx, Ball(out), "atan2")


# ----------------------------------------------------------------------------------------------
# Rounding-like ops.


def _floor_dy(m: np.ndarray, k: int) -> np.ndarray:
    return m >> k if m.dtype != object else obj(m) >> k


def _round_fmpq(v: fmpq, method: int) -> fmpz:
    f = v.floor()
    r = v - f
    half = fmpq(1, 2)
    if r > half:
        return f + 1
    if r < half:
        return f
    if method == 0:  # ties away from zero
        return f + 1 if v > 0 else f
    return f + 1 if int(f) & 1 else f  # ties to even


def _rounding(kind: str):
    def exact_f(v: fmpq, method=1):
        if kind == "floor":
            return fmpq(v.floor())
        if kind == "ceil":
            return fmpq(v.ceil())
        return fmpq(_round_fmpq(v, method))

    def rule(ctx, x, **params):
        method = int(params.pop("rounding_method", 1))
        _check(ctx, x)
        if isinstance(x, Ball):
            return _ball_monotone(ctx, x, lambda v: exact_f(v, method))
        if isinstance(x, Dy):
            if x.e >= 0:
                return x
            k = -x.e
            m = x.m
            if kind == "floor":
                return Dy(demote(_floor_dy(m, k)), 0)
            if kind == "ceil":
                return Dy(demote(-_floor_dy(-m, k)), 0)
        q = to_q(x).q
        out = np.asarray(
            np.frompyfunc(lambda v: exact_f(v, method), 1, 1)(q), dtype=object
        ).reshape(q.shape)
        return dyadicize(Q(out))

    return rule


def _trunc_value(ctx, x):
    """Truncation toward zero of an exact or decidable value (for float -> int conversion)."""
    if isinstance(x, Ball):
        x = _ball_monotone(ctx, x, lambda v: fmpq(v.floor() if v >= 0 else v.ceil()))
        if isinstance(x, Ball):
            bad = next(i for i in np.ndindex(*x.shape) if not x.b[i].is_exact())
            _fail(
                ctx,
                f"conversion to an integer is undecidable at index {_fmt_index(bad)}: the "
                "enclosure "
                f"{x.b[bad]} straddles an integer (raise the precision with "
                "semantics='exact[256]')",
            )
    if isinstance(x, Dy):
        if x.e >= 0:
            return Dy(shl(x.m, x.e), 0)
        k = -x.e
        m = obj(x.m)
        return Dy(
            np.asarray(
                np.frompyfunc(lambda v: int(v) >> k if v >= 0 else -((-int(v)) >> k), 1, 1)(m),
                dtype=object,
            ).reshape(m.shape),
            0,
        )
    q = x.q
    out = np.asarray(
        np.frompyfunc(lambda v: int(v.floor()) if v >= 0 else int(v.ceil()), 1, 1)(q), dtype=object
    )
    return Dy(out.reshape(q.shape), 0)


def _convert_element_type(ctx, x, *, new_dtype, weak_type=False, sharding=None, **params):
    del weak_type, sharding, params
    _check(ctx, x)
    dt = np.dtype(new_dtype)
    if is_float_dtype(dt):
        return x  # the real-number meaning: a cast to a float type does not round
    if dt == np.bool_:
        if isinstance(x, Ball):
            z = _ball_compare(ctx, x.b, np.asarray(arb(0), dtype=object), operator.ne)
            return Dy(z, 0)
        return Dy(np.asarray(payload(x) != 0, dtype=bool).reshape(x.shape).astype(np.int64), 0)
    if _is_int_dtype(dt):
        src = np.dtype(ctx.in_avals[0].dtype)
        t = _trunc_value(ctx, x)
        if is_float_dtype(src):
            bits = dt.itemsize * 8
            lo, hi = (
                (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
                if dt.kind == "i"
                else (0, (1 << bits) - 1)
            )
            bad = [i for i in np.ndindex(*t.shape) if not lo <= int(t.m[i]) <= hi]
            if bad:
                _fail(
                    ctx,
                    f"converting to {dt}: value {int(t.m[bad[0]])} at index {_fmt_index(bad[0])} "
                    "is "
                    f"outside [{lo}, {hi}] (XLA's result is implementation-defined there)",
                )
        return wrap_int(t, dt)
    _fail(ctx, f"conversion to {dt} is not supported by the exact semantics", NotImplementedError)


def _reduce_precision(ctx, x, *, exponent_bits, mantissa_bits, **params):
    del params
    _check(ctx, x)
    fmt = Format(int(exponent_bits), int(mantissa_bits))  # IEEE-like, what XLA rounds to

    def rnd(v: fmpq) -> fmpq:
        r, q = round_rne(int(v.p), int(v.q), fmt)
        val = Fraction(r) * Fraction(2) ** q
        if abs(val) > fmt.max_finite:
            raise OverflowError(v)
        return fmpq(val.numerator, val.denominator)

    try:
        if isinstance(x, Ball):
            return _ball_monotone(ctx, x, rnd)
        q = to_q(x).q
        out = np.asarray(np.frompyfunc(rnd, 1, 1)(q), dtype=object).reshape(q.shape)
    except OverflowError as err:
        _fail(
            ctx,
            f"reduce_precision to {fmt.name}: {err.args[0]} rounds to infinity (beyond the "
            "format's "
            f"largest finite value {float(fmt.max_finite)!r}); infinity is not a real number",
        )
    return dyadicize(Q(out))


# ----------------------------------------------------------------------------------------------
# The table.


def _refuse(reason: str):
    def rule(ctx, *args, **params):
        del args, params
        _fail(
            ctx,
            f"semantics 'exact' refuses primitive {ctx.primitive.name!r}: {reason}",
            NotImplementedError,
        )

    return rule


def build_rules() -> dict:
    """The exact semantics' table ``{Primitive: rule}`` (primitives this JAX lacks are skipped)."""
    by_name = {
        # elementwise arithmetic
        "add": _add_like(+1),
        "sub": _add_like(-1),
        "add_jaxvals": _add_like(+1),
        "mul": _int_result(_mul),
        "div": _div,
        "rem": _rem,
        "neg": _neg,
        "abs": _abs,
        "sign": _sign,
        "max": _minmax(True),
        "min": _minmax(False),
        "clamp": _clamp,
        "integer_pow": _integer_pow,
        "square": _square,
        "one_minus_square": _one_minus_square,
        "pow": _pow,
        "exp2": _exp2,
        "sqrt": _sqrt_like(False),
        "rsqrt": _sqrt_like(True),
        "atan2": _atan2,
        "is_finite": _is_finite,
        # comparisons, logic, selection
        "eq": _cmp(operator.eq),
        "ne": _cmp(operator.ne),
        "lt": _cmp(operator.lt),
        "le": _cmp(operator.le),
        "gt": _cmp(operator.gt),
        "ge": _cmp(operator.ge),
        "and": _bitwise(operator.and_),
        "or": _bitwise(operator.or_),
        "xor": _bitwise(operator.xor),
        "not": _not,
        "select_n": _select_n,
        # rounding and conversion
        "floor": _rounding("floor"),
        "ceil": _rounding("ceil"),
        "round": _rounding("round"),
        "convert_element_type": _convert_element_type,
        "reduce_precision": _reduce_precision,
        # reductions and scans
        "reduce_sum": A._reduce_sum,
        "reduce_prod": A._reduce_prod,
        "reduce_max": A._reduce_minmax(True),
        "reduce_min": A._reduce_minmax(False),
        "reduce_and": A._reduce_logic("and"),
        "reduce_or": A._reduce_logic("or"),
        "reduce_xor": A._reduce_logic("xor"),
        "argmax": A._arg_minmax(True),
        "argmin": A._arg_minmax(False),
        "cumsum": A._cumulative("sum"),
        "cumprod": A._cumulative("prod"),
        "cummax": A._cumulative("max"),
        "cummin": A._cumulative("min"),
        "cumlogsumexp": A._cumlogsumexp,
        # products and windows
        "dot_general": A._dot_general,
        "conv_general_dilated": A._conv_general_dilated,
        "reduce_window_sum": A._reduce_window("sum"),
        "reduce_window_max": A._reduce_window("max"),
        "reduce_window_min": A._reduce_window("min"),
        # structure and indexing
        "broadcast_in_dim": A._struct(A._bcast),
        "reshape": A._struct(A._reshape_p),
        "transpose": A._struct(A._transpose_p),
        "squeeze": A._struct(A._squeeze_p),
        "slice": A._struct(A._slice_p),
        "rev": A._struct(A._rev_p),
        "tile": A._struct(A._tile_p),
        "dynamic_slice": A._dynamic_slice,
        "dynamic_update_slice": A._dynamic_update_slice,
        "gather": A._gather,
        "scatter": A._scatter("set"),
        "scatter_add": A._scatter("add"),
        "scatter_max": A._scatter("max"),
        "scatter_min": A._scatter("min"),
        "concatenate": A._concatenate,
        "stack": A._stack,
        "split": A._split,
        "unstack": A._unstack,
        "pad": A._pad,
        "iota": A._iota,
        "sort": A._sort,
        # identities
        "copy": A._identity,
        "stop_gradient": A._identity,
        "sharding_constraint": A._identity,
        "optimization_barrier": A._identity_multi,
        # refusals (a clear message instead of "no rule")
        "nextafter": _refuse(
            "the next float after a real number depends on a float format the exact semantics "
            "does not round to; evaluate it under 'reference' or a float semantics"
        ),
        "bitcast_convert_type": _refuse("reinterpreting bits has no real-number meaning"),
    }
    for name in _UNARY_BALL:
        by_name[name] = _transcendental(name)
    table = {}
    for name, rule in by_name.items():
        p = compat.primitive_by_name(name)
        if p is not None:
            table[p] = _entry(rule, infinite_ok=name in ("max", "min"))
    dp = compat.primitive_by_name("device_put")
    if dp is not None:
        table[dp] = _entry(A._identity_multi if dp.multiple_results else A._identity)
    return table


def _entry(rule, *, infinite_ok: bool = False):
    """Every rule: poisoned constants raise here, with location; balls use the precision."""

    @ft.wraps(rule)
    def wrapped(ctx, *args, **params):
        for v in args:
            if isinstance(v, Poison) and not infinite_ok:
                _fail(ctx, v.message, InputError)
        with flint.ctx.workprec(_precision(ctx)):
            out = rule(ctx, *args, **params)
        # Radius-0 balls are exact values (exp(0), sin(x) * 0): continue exactly.
        if isinstance(out, list):
            return [settle(v) for v in out]
        return settle(out)

    wrapped.exact_rule = rule
    return wrapped
