"""Helpers shared by the exact semantics' elementwise rules (`_exact_rules`) and array rules
(`_exact_arrays`): failures with location, precision, dtypes, integer wrap-around, balls.

Their own module so that `_exact_rules` (which builds the table) can import `_exact_arrays` at the
top and `_exact_arrays` need not import `_exact_rules` (no import cycle).
"""

from __future__ import annotations

import flint
import numpy as np
from flint import arb, fmpq

from ..core import InputError, compat
from ._exact_results import arb_exact_fraction
from ._exact_values import Ball, Dy, ExactDomainError, Poison, demote, obj, shl, to_ball

compat.register_exclusion(__file__)

DEFAULT_PRECISION = 128


def _fail(ctx, msg: str, cls=ExactDomainError):
    err = cls(f"{msg}\n  {ctx.where()}")
    err.tljax_located = True
    raise err


def _precision(ctx) -> int:
    opts = ctx.semantics.options
    return int(getattr(opts, "precision", DEFAULT_PRECISION) or DEFAULT_PRECISION)


def _out_dtype(ctx, k: int = 0):
    return np.dtype(ctx.out_avals[k].dtype)


def _is_int_dtype(dt) -> bool:
    return np.dtype(dt).kind in "iu"


def _check(ctx, *vals):
    for v in vals:
        if isinstance(v, Poison):
            _fail(ctx, v.message, InputError)


def _fmt_index(idx) -> str:
    return str(tuple(int(i) for i in idx))


def wrap_int(v, dtype) -> Dy:
    dt = np.dtype(dtype)
    if not isinstance(v, Dy):
        raise ExactDomainError(f"an integer ({dt}) result is not an exact integer")
    m = shl(v.m, v.e) if v.e > 0 else v.m
    if v.e < 0:
        m = obj(m) >> -v.e  # callers only pass integral values here
    bits = dt.itemsize * 8
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dt.kind == "i" else (0, (1 << bits) - 1)
    if m.size == 0:
        return Dy(m.astype(np.int64) if m.dtype == object else m, 0)
    if m.dtype != object:
        if int(m.min()) >= lo and int(m.max()) <= hi:
            return Dy(m, 0)
    elif min(m.flat) >= lo and max(m.flat) <= hi:
        return Dy(demote(m), 0)
    span = 1 << bits
    mm = ((obj(m) - lo) % span) + lo
    return Dy(demote(mm), 0)


def _arb_lo_hi(b: arb) -> tuple[fmpq, fmpq]:
    mid, rad = arb_exact_fraction(b.mid()), arb_exact_fraction(b.rad())
    lo, hi = mid - rad, mid + rad
    return fmpq(lo.numerator, lo.denominator), fmpq(hi.numerator, hi.denominator)


def _ball_of_interval(lo, hi) -> arb:
    if lo == hi:
        return arb(lo) if lo.q != 1 else arb(lo.p)
    return arb(lo).union(arb(hi))


def _ball_minmax(ctx, a, b, is_max: bool) -> Ball:
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape, dtype=object)
    with flint.ctx.workprec(_precision(ctx)):
        for i in np.ndindex(*a.shape):
            (alo, ahi), (blo, bhi) = _arb_lo_hi(a[i]), _arb_lo_hi(b[i])
            if is_max:
                out[i] = _ball_of_interval(max(alo, blo), max(ahi, bhi))
            else:
                out[i] = _ball_of_interval(min(alo, blo), min(ahi, bhi))
    return Ball(out)


def _finite_ball(ctx, v: Ball, name: str) -> Ball:
    for i in np.ndindex(*v.shape):
        if not v.b[i].is_finite():
            _fail(
                ctx,
                f"{name} has no finite real value at index {_fmt_index(i)} (enclosure {v.b[i]}); "
                "the "
                "argument is outside the function's domain or its enclosure is too wide "
                "(raise the precision with semantics='exact[256]')",
            )
    return v


def _ball_unary(ctx, x, f, name: str) -> Ball:
    _check(ctx, x)
    xb = to_ball(x).b
    with flint.ctx.workprec(_precision(ctx)):
        out = (
            np.asarray(np.frompyfunc(f, 1, 1)(xb), dtype=object).reshape(xb.shape)
            if xb.size
            else xb
        )
    return _finite_ball(ctx, Ball(out), name)
