"""Array rules of the exact semantics: reductions, scans, dot/conv, windows, indexing, sorting.

Split from `_exact_rules` (elementwise rules; the table is built there); the helpers both use are
in `_exact_common`, so this module does not import `_exact_rules`.
"""

from __future__ import annotations

import flint
import numpy as np
from flint import arb, arb_mat, fmpq, fmpq_mat, fmpz_mat

from ..core import compat
from . import _exact_struct as st
from ._exact_common import (
    _arb_lo_hi,
    _ball_minmax,
    _ball_unary,
    _check,
    _fail,
    _fmt_index,
    _is_int_dtype,
    _out_dtype,
    _precision,
    wrap_int,
)
from ._exact_values import (
    Ball,
    Dy,
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
    to_ints,
    unify,
)

compat.register_exclusion(__file__)

# ----------------------------------------------------------------------------------------------
# Reductions and scans.


def _reduce_sum(ctx, x, *, axes, out_sharding=None, **params):
    del out_sharding, params
    _check(ctx, x)
    axes = tuple(int(a) for a in axes)
    if isinstance(x, Dy):
        n = int(np.prod([x.shape[a] for a in axes])) if axes else 1
        if x.m.dtype != object and maxabs(x.m) * max(n, 1) < (1 << 62):
            out = Dy(np.sum(x.m, axis=axes, dtype=np.int64), x.e)
        else:
            out = Dy(
                np.asarray(np.sum(obj(x.m), axis=axes), dtype=object).reshape(
                    _reduced(x.shape, axes)
                ),
                x.e,
            )
        return wrap_int(out, _out_dtype(ctx)) if _is_int_dtype(_out_dtype(ctx)) else out
    arr = payload(x)
    zero = fmpq(0) if isinstance(x, Q) else arb(0)
    with flint.ctx.workprec(_precision(ctx)):
        out = np.asarray(np.sum(arr, axis=axes, initial=zero), dtype=object).reshape(
            _reduced(x.shape, axes)
        )
    return rebuild(x, out)


def _reduced(shape, axes) -> tuple:
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def _reduce_prod(ctx, x, *, axes, out_sharding=None, **params):
    del out_sharding, params
    _check(ctx, x)
    axes = tuple(int(a) for a in axes)
    if isinstance(x, Dy):
        n = int(np.prod([x.shape[a] for a in axes])) if axes else 1
        out = np.asarray(np.prod(obj(x.m), axis=axes, initial=1), dtype=object).reshape(
            _reduced(x.shape, axes)
        )
        res = normalize(Dy(demote(out), x.e * n))
        return wrap_int(res, _out_dtype(ctx)) if _is_int_dtype(_out_dtype(ctx)) else res
    arr = payload(x)
    one = fmpq(1) if isinstance(x, Q) else arb(1)
    with flint.ctx.workprec(_precision(ctx)):
        out = np.asarray(np.prod(arr, axis=axes, initial=one), dtype=object).reshape(
            _reduced(x.shape, axes)
        )
    return dyadicize(Q(out)) if isinstance(x, Q) else Ball(out)


def _reduce_minmax(is_max: bool):
    def rule(ctx, x, *, axes, out_sharding=None, **params):
        del out_sharding, params
        _check(ctx, x)
        axes = tuple(int(a) for a in axes)
        if any(x.shape[a] == 0 for a in axes):
            _fail(ctx, "max/min over an empty axis is ±inf, which is not a real number")
        if isinstance(x, Ball):
            acc = None
            moved = np.moveaxis(x.b, axes, tuple(range(len(axes)))).reshape(
                (-1,) + _reduced(x.shape, axes)
            )
            for k in range(moved.shape[0]):
                acc = moved[k] if acc is None else _ball_minmax(ctx, acc, moved[k], is_max).b
            return Ball(np.asarray(acc, dtype=object).reshape(_reduced(x.shape, axes)))
        arr = payload(x)
        f = np.max if is_max else np.min
        out = f(arr, axis=axes)
        out = np.asarray(out, dtype=arr.dtype).reshape(_reduced(x.shape, axes))
        return rebuild(x, out)

    return rule


def _reduce_logic(op):
    def rule(ctx, x, *, axes, **params):
        del params
        a = to_ints(x)
        axes = tuple(int(ax) for ax in axes)
        b = np.asarray(a.astype(np.int64) != 0) if a.size else np.zeros(a.shape, bool)
        if op == "and":
            out = np.all(b, axis=axes)
        elif op == "or":
            out = np.any(b, axis=axes)
        else:
            out = np.bitwise_xor.reduce(b, axis=axes) if axes else b
        return Dy(np.asarray(out).astype(np.int64), 0)

    return rule


def _arg_minmax(is_max: bool):
    def rule(ctx, x, *, axes, index_dtype, **params):
        del params
        _check(ctx, x)
        (axis,) = (int(a) for a in axes)
        if x.shape[axis] == 0:
            _fail(ctx, "argmax/argmin over an empty axis")
        if isinstance(x, Ball):
            return Dy(_ball_argminmax(ctx, x.b, axis, is_max), 0)
        arr = payload(x)
        out = np.argmax(arr, axis=axis) if is_max else np.argmin(arr, axis=axis)
        return Dy(np.asarray(out).astype(np.int64), 0)

    return rule


def _ball_argminmax(ctx, b: np.ndarray, axis: int, is_max: bool) -> np.ndarray:
    moved = np.moveaxis(b, axis, -1)
    out = np.zeros(moved.shape[:-1], np.int64)
    for i in np.ndindex(*moved.shape[:-1]):
        row = moved[i]
        ends = [_arb_lo_hi(v) for v in row]
        if is_max:
            best = max(range(len(row)), key=lambda j: ends[j][0])
            lo_best = ends[best][0]
            rivals = [j for j in range(len(row)) if j != best and ends[j][1] >= lo_best]
        else:
            best = min(range(len(row)), key=lambda j: ends[j][1])
            hi_best = ends[best][1]
            rivals = [j for j in range(len(row)) if j != best and ends[j][0] <= hi_best]
        # Ties between identical exact values go to the first index, as in XLA.
        rivals = [
            j
            for j in rivals
            if not (row[j].is_exact() and row[best].is_exact() and row[j].mid() == row[best].mid())
        ]
        first = min(
            [best]
            + [
                j
                for j in range(len(row))
                if row[j].is_exact() and row[best].is_exact() and row[j].mid() == row[best].mid()
            ]
        )
        if rivals:
            _fail(
                ctx,
                f"argmax/argmin undecidable at index {_fmt_index(i)}: enclosures {row[best]} and "
                f"{row[rivals[0]]} overlap (raise the precision with semantics='exact[256]')",
            )
        out[i] = first
    return out


def _cumulative(kind: str):
    def rule(ctx, x, *, axis, reverse, **params):
        del params
        _check(ctx, x)
        axis = int(axis)
        arr = payload(x)
        if reverse:
            arr = np.flip(arr, axis)
        if isinstance(x, Ball) and kind in ("max", "min"):
            moved = np.moveaxis(arr, axis, 0)
            outs = [moved[0]]
            for k in range(1, moved.shape[0]):
                outs.append(_ball_minmax(ctx, outs[-1], moved[k], kind == "max").b)
            out = np.moveaxis(np.stack(outs) if outs else moved, 0, axis)
            res = Ball(np.asarray(out, dtype=object))
        elif kind == "prod":
            res = _cumprod(ctx, x, arr, axis)
        else:
            with flint.ctx.workprec(_precision(ctx)):
                if kind == "sum":
                    if (
                        isinstance(x, Dy)
                        and arr.dtype != object
                        and maxabs(arr) * max(arr.shape[axis], 1) < (1 << 62)
                    ):
                        out = np.cumsum(arr, axis=axis)
                    else:
                        out = np.cumsum(obj(arr), axis=axis)
                else:
                    f = np.maximum if kind == "max" else np.minimum
                    out = f.accumulate(arr, axis=axis) if arr.size else arr
            res = rebuild(x, np.asarray(out, dtype=out.dtype))
        if reverse:
            res = rebuild(res, np.flip(payload(res), axis))
        return wrap_int(res, _out_dtype(ctx)) if _is_int_dtype(_out_dtype(ctx)) else res

    return rule


def _cumprod(ctx, x, arr, axis):
    if isinstance(x, Dy):
        n = arr.shape[axis]
        m = np.cumprod(obj(arr), axis=axis)
        if x.e >= 0 or n == 0:
            counts = np.arange(1, n + 1).reshape([-1 if i == axis else 1 for i in range(arr.ndim)])
            out = np.asarray(m << (obj(counts) * x.e), dtype=object) if x.e >= 0 else m
            return Dy(demote(np.broadcast_to(out, arr.shape).copy()), 0)
        # Position k has exponent e*(k+1); share e*n by shifting earlier positions left.
        shifts = (-x.e) * (n - 1 - np.arange(n))
        shifts = obj(shifts.reshape([-1 if i == axis else 1 for i in range(arr.ndim)]))
        return Dy(demote(np.asarray(m << shifts, dtype=object)), x.e * n)
    with flint.ctx.workprec(_precision(ctx)):
        out = np.cumprod(arr, axis=axis)
    return rebuild(x, np.asarray(out, dtype=object))


def _cumlogsumexp(ctx, x, *, axis, reverse, **params):
    del params
    e = _ball_unary(ctx, x, lambda a: a.exp(), "cumlogsumexp")
    s = _cumulative("sum")(ctx, e, axis=axis, reverse=reverse)
    return _ball_unary(ctx, s, lambda a: a.log(), "cumlogsumexp")


# ----------------------------------------------------------------------------------------------
# Matrix products: dot_general and conv_general_dilated.


def _matmul(cls, a: np.ndarray, b: np.ndarray, ctx) -> np.ndarray:
    """(M, K) @ (K, N) exactly: numpy int64 when it cannot overflow, else flint matrices."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0 or k == 0:
        zero = 0 if cls is Dy else (fmpq(0) if cls is Q else arb(0))
        out = np.empty((m, n), dtype=object if cls is not Dy else np.int64)
        out[...] = zero
        return out
    if cls is Dy:
        if a.dtype != object and b.dtype != object and maxabs(a) * maxabs(b) * k < (1 << 62):
            return a @ b
        res = fmpz_mat(m, k, _int_list(a)) * fmpz_mat(k, n, _int_list(b))
    elif cls is Q:
        res = fmpq_mat(m, k, list(a.ravel())) * fmpq_mat(k, n, list(b.ravel()))
    else:
        with flint.ctx.workprec(_precision(ctx)):
            res = arb_mat(m, k, list(a.ravel())) * arb_mat(k, n, list(b.ravel()))
    out = np.empty(m * n, dtype=object)
    out[:] = res.entries()
    return out.reshape(m, n)


def _int_list(a: np.ndarray) -> list:
    # int64 -> Python ints directly (no object array in between); object arrays as they are.
    return a.ravel().tolist() if a.dtype != object else list(a.ravel())


def _operands(x, y):
    """Payloads for a bilinear op: Dy x Dy keep their own exponents (product exponent = sum)."""
    if isinstance(x, Dy) and isinstance(y, Dy):
        return Dy, x.m, y.m, x.e + y.e
    cls, (a, b), _ = unify(x, y)
    return cls, a, b, 0


def _finish_matmul(cls, out, e):
    if cls is Dy:
        return Dy(out, e)
    if cls is Q:
        return dyadicize(Q(out))
    return Ball(out)


def _dot_general(
    ctx,
    x,
    y,
    *,
    dimension_numbers,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
    **params,
):
    del precision, preferred_element_type, out_sharding, params
    _check(ctx, x, y)
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(d) for d in t) for t in (lc, rc, lb, rb))
    cls, a, b, e = _operands(x, y)
    lf = [d for d in range(a.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(b.ndim) if d not in rc and d not in rb]
    bshape = [a.shape[d] for d in lb]
    nb = int(np.prod(bshape)) if bshape else 1
    mshape, nshape = [a.shape[d] for d in lf], [b.shape[d] for d in rf]
    mm, nn = int(np.prod(mshape)) if mshape else 1, int(np.prod(nshape)) if nshape else 1
    kk = int(np.prod([a.shape[d] for d in lc])) if lc else 1
    at = np.transpose(a, list(lb) + lf + list(lc)).reshape(nb, mm, kk)
    bt = np.transpose(b, list(rb) + list(rc) + rf).reshape(nb, kk, nn)
    outs = [_matmul(cls, at[i], bt[i], ctx) for i in range(nb)]
    dtype = object if any(o.dtype == object for o in outs) or not outs else np.int64
    out = np.stack([o.astype(dtype) for o in outs]) if outs else np.empty((0, mm, nn), dtype=dtype)
    out = out.reshape(tuple(bshape + mshape + nshape))
    res = _finish_matmul(cls, out, e)
    return wrap_int(res, _out_dtype(ctx)) if _is_int_dtype(_out_dtype(ctx)) else res


def _zero_of(cls):
    return 0 if cls is Dy else (fmpq(0) if cls is Q else arb(0))


def _conv_general_dilated(
    ctx,
    lhs,
    rhs,
    *,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    batch_group_count,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
    **params,
):
    del precision, preferred_element_type, out_sharding, params
    _check(ctx, lhs, rhs)
    cls, a, k, e = _operands(lhs, rhs)
    lhs_spec, rhs_spec, out_spec = (
        dimension_numbers.lhs_spec,
        dimension_numbers.rhs_spec,
        dimension_numbers.out_spec,
    )
    a = np.transpose(a, lhs_spec)  # (N, C, *spatial)
    k = np.transpose(k, rhs_spec)  # (O, I, *kernel spatial)
    nsp = a.ndim - 2
    n, c = a.shape[:2]
    o, i_ch = k.shape[:2]
    ksp = k.shape[2:]
    pad = [(0, 0), (0, 0)] + [tuple(p) for p in padding]
    wins, mask = st.windows(
        a,
        (1, 1) + tuple(ksp),
        (1, 1) + tuple(window_strides),
        pad,
        (1, 1) + tuple(lhs_dilation or (1,) * nsp),
        (1, 1) + tuple(rhs_dilation or (1,) * nsp),
    )
    if mask is not None:
        wins = np.where(mask, wins, _zero_of(cls))
        if wins.dtype != object and a.dtype == object:
            wins = wins.astype(object)
    # wins: (N, C, *out_sp, 1, 1, *ksp) -> (N, C, *out_sp, *ksp)
    wins = wins.reshape(wins.shape[: 2 + nsp] + tuple(ksp))
    out_sp = wins.shape[2 : 2 + nsp]
    p = int(np.prod(out_sp)) if out_sp else 1
    kp = int(np.prod(ksp)) if ksp else 1
    g, bg = int(feature_group_count), int(batch_group_count)
    results = []
    if bg > 1:
        nb, ob = n // bg, o // bg
        for j in range(bg):
            part = wins[j * nb : (j + 1) * nb]  # (nb, C, *out_sp, *ksp)
            lhs_m = np.transpose(
                part, [1] + list(range(2 + nsp, 2 + 2 * nsp)) + [0] + list(range(2, 2 + nsp))
            )
            lhs_m = lhs_m.reshape(c * kp, nb * p)
            ker = k[j * ob : (j + 1) * ob].reshape(ob, i_ch * kp)
            res = _matmul(cls, ker, lhs_m, ctx).reshape((ob, nb) + tuple(out_sp))
            results.append(np.swapaxes(res, 0, 1))
        out = np.concatenate(
            [r.astype(object) if r.dtype != results[0].dtype else r for r in results], axis=1
        )
    else:
        cg, og = c // g, o // g
        for j in range(g):
            part = wins[:, j * cg : (j + 1) * cg]  # (N, cg, *out_sp, *ksp)
            lhs_m = np.transpose(
                part, [1] + list(range(2 + nsp, 2 + 2 * nsp)) + [0] + list(range(2, 2 + nsp))
            )
            lhs_m = lhs_m.reshape(cg * kp, n * p)
            ker = k[j * og : (j + 1) * og].reshape(og, i_ch * kp)
            res = _matmul(cls, ker, lhs_m, ctx).reshape((og, n) + tuple(out_sp))
            results.append(np.swapaxes(res, 0, 1))
        dtype = object if any(r.dtype == object for r in results) else results[0].dtype
        out = np.concatenate([r.astype(dtype) for r in results], axis=1)
    out = np.transpose(out, np.argsort(out_spec))
    res = _finish_matmul(cls, out, e)
    return wrap_int(res, _out_dtype(ctx)) if _is_int_dtype(_out_dtype(ctx)) else res


def _reduce_window(kind: str):
    def rule(
        ctx,
        x,
        *,
        window_dimensions,
        window_strides,
        padding,
        base_dilation,
        window_dilation,
        **params,
    ):
        del params
        _check(ctx, x)
        arr = payload(x)
        wins, mask = st.windows(
            arr, window_dimensions, window_strides, padding, base_dilation, window_dilation
        )
        r = x.m.ndim if isinstance(x, Dy) else arr.ndim
        waxes = tuple(range(r, 2 * r))
        if kind == "sum":
            if mask is not None:
                wins = np.where(mask, wins, _zero_of(type(x)))
            summed = Dy(wins, x.e) if isinstance(x, Dy) else rebuild(x, wins)
            return _reduce_sum(ctx, summed, axes=waxes)
        # max / min: padding holds -inf/+inf, i.e. it is skipped; an all-padding window has no
        # value.
        if mask is not None and not mask.reshape(mask.shape[:r] + (-1,)).any(axis=-1).all():
            _fail(
                ctx, f"reduce_window_{kind}: a window lies entirely in padding (its value is ±inf)"
            )
        if isinstance(x, Ball) or mask is not None:
            flat = wins.reshape(wins.shape[:r] + (-1,))
            fm = mask.reshape(flat.shape) if mask is not None else None
            out = np.empty(flat.shape[:-1], dtype=object)
            for i in np.ndindex(*flat.shape[:-1]):
                vals = [flat[i + (j,)] for j in range(flat.shape[-1]) if fm is None or fm[i + (j,)]]
                if isinstance(x, Ball):
                    acc = np.asarray(vals[0], dtype=object)
                    for v in vals[1:]:
                        acc = _ball_minmax(ctx, acc, np.asarray(v, dtype=object), kind == "max").b
                    out[i] = acc[()]
                else:
                    out[i] = max(vals) if kind == "max" else min(vals)
            if isinstance(x, Dy) and arr.dtype != object:
                out = out.astype(np.int64)
            return rebuild(x, out)
        f = np.max if kind == "max" else np.min
        return rebuild(x, np.asarray(f(wins, axis=waxes), dtype=arr.dtype))

    return rule


# ----------------------------------------------------------------------------------------------
# Structural ops: the same numpy code for every layout.


def _struct(f):
    def rule(ctx, x, **params):
        _check(ctx, x)
        return rebuild(x, f(payload(x), **params))

    rule.__name__ = f"_{f.__name__}"
    return rule


def _bcast(a, *, shape, broadcast_dimensions, sharding=None, **params):
    del sharding, params
    return st.broadcast_in_dim(a, shape, broadcast_dimensions)


def _reshape_p(a, *, new_sizes, dimensions=None, sharding=None, **params):
    del sharding, params
    return st.reshape(a, new_sizes, dimensions)


def _transpose_p(a, *, permutation, **params):
    del params
    return np.transpose(a, permutation)


def _squeeze_p(a, *, dimensions, **params):
    del params
    return np.squeeze(a, axis=tuple(int(d) for d in dimensions)) if dimensions else a


def _slice_p(a, *, start_indices, limit_indices, strides=None, **params):
    del params
    return st.slice_(a, start_indices, limit_indices, strides)


def _rev_p(a, *, dimensions, **params):
    del params
    return np.flip(a, axis=tuple(int(d) for d in dimensions)) if dimensions else a


def _tile_p(a, *, reps, **params):
    del params
    return np.tile(a, tuple(int(r) for r in reps))


def _identity(ctx, x, **params):
    del params
    _check(ctx, x)
    return x


def _identity_multi(ctx, *xs, **params):
    del params
    _check(ctx, *xs)
    return list(xs)


def _concrete_ints(ctx, vals) -> list[int]:
    out = []
    for v in vals:
        _check(ctx, v)
        iv = to_ints(v)
        if iv is None:
            _fail(ctx, "an index operand is not an exact integer")
        out.append(int(np.asarray(iv).reshape(())[()]) if np.ndim(iv) == 0 else iv)
    return out


def _dynamic_slice(ctx, x, *idx, slice_sizes, **params):
    del params
    starts = _concrete_ints(ctx, idx)
    return rebuild(x, st.dynamic_slice(payload(x), starts, slice_sizes))


def _dynamic_update_slice(ctx, x, update, *idx, **params):
    del params
    starts = _concrete_ints(ctx, idx)
    cls, (a, u), e = unify(x, update)
    if a.dtype != u.dtype:
        a, u = obj(a), obj(u)
    return make(cls, st.dynamic_update_slice(a, u, starts), e)


def _concatenate(ctx, *xs, dimension, **params):
    del params
    cls, arrs, e = unify(*xs)
    if len({a.dtype for a in arrs}) > 1:
        arrs = [obj(a) for a in arrs]
    return make(cls, np.concatenate(arrs, axis=int(dimension)), e)


def _stack(ctx, *xs, axis, **params):
    del params
    cls, arrs, e = unify(*xs)
    if len({a.dtype for a in arrs}) > 1:
        arrs = [obj(a) for a in arrs]
    return make(cls, np.stack(arrs, axis=int(axis)), e)


def _split(ctx, x, *, sizes, axis, **params):
    del params
    _check(ctx, x)
    cuts = np.cumsum([int(s) for s in sizes])[:-1]
    return [rebuild(x, p) for p in np.split(payload(x), cuts, axis=int(axis))]


def _unstack(ctx, x, *, axis, **params):
    del params
    _check(ctx, x)
    arr = payload(x)
    return [rebuild(x, np.take(arr, i, axis=int(axis))) for i in range(arr.shape[int(axis)])]


def _pad(ctx, x, padval, *, padding_config, **params):
    del params
    cls, (a, pv), e = unify(x, padval)
    if a.dtype != pv.dtype:
        a, pv = obj(a), obj(pv)
    return make(cls, st.pad(a, pv.reshape(())[()], padding_config), e)


def _iota(ctx, *, dtype, shape, dimension, sharding=None, **params):
    del sharding, params, dtype
    return Dy(np.array(st.iota(shape, int(dimension))), 0)


def _gather(
    ctx,
    operand,
    indices,
    *,
    dimension_numbers,
    slice_sizes,
    mode,
    fill_value=None,
    indices_are_sorted=False,
    unique_indices=False,
    **params,
):
    del indices_are_sorted, unique_indices, params
    _check(ctx, operand, indices)
    idx = to_ints(indices)
    arr = payload(operand)
    index, mask, _ = st.gather_indices(
        arr.shape, np.asarray(idx, dtype=np.int64), dimension_numbers, slice_sizes, mode
    )
    out = arr[index]
    if mask is not None:
        fill = _gather_fill(ctx, operand, fill_value, mask)
        out = np.where(mask, out, fill)
        if out.dtype != arr.dtype:
            out = out.astype(arr.dtype) if arr.dtype != object else out.astype(object)
    return rebuild(operand, out)


def _gather_fill(ctx, operand, fill_value, mask):
    dt = np.dtype(ctx.in_avals[0].dtype)
    if fill_value is not None and not (
        isinstance(fill_value, float) and not np.isfinite(fill_value)
    ):
        if not isinstance(operand, Dy) or operand.e != 0 or not float(fill_value).is_integer():
            _fail(
                ctx, "gather with a non-integer fill_value is not supported by the exact semantics"
            )
        return int(fill_value)
    if is_float_dtype(dt):
        bad = np.argwhere(~mask)[0]
        _fail(
            ctx,
            f"gather index out of bounds at output index {_fmt_index(bad)}: in 'fill' mode JAX "
            "returns NaN there, which has no real value (check the indices or use mode='clip')",
        )
    if dt == np.bool_:
        return 1
    info = np.iinfo(dt)
    return int(info.min) if dt.kind == "i" else int(info.max)


def _scatter(kind: str):
    def rule(
        ctx,
        operand,
        indices,
        updates,
        *,
        dimension_numbers,
        mode,
        update_jaxpr=None,
        update_consts=(),
        indices_are_sorted=False,
        unique_indices=False,
        **params,
    ):
        del update_jaxpr, update_consts, indices_are_sorted, unique_indices, params
        _check(ctx, operand, indices, updates)
        cls, (a, u), e = unify(operand, updates)
        if a.dtype != u.dtype:
            a, u = obj(a), obj(u)
        idx = np.asarray(to_ints(indices), dtype=np.int64)
        index, keep = st.scatter_indices(a.shape, idx, u.shape, dimension_numbers, mode)
        if keep is not None:
            index = tuple(i[keep] for i in index)
            u = u[keep]
        out = np.array(a, copy=True)
        if kind == "set":
            out[index] = u
        elif kind == "add":
            if out.dtype != object and (maxabs(out) + maxabs(u) * max(u.size, 1)) >= (1 << 62):
                out, u = obj(out), obj(u)
            with flint.ctx.workprec(_precision(ctx)):
                np.add.at(out, index, u)
        elif cls is Ball:
            _fail(ctx, f"scatter-{kind} on enclosures is not supported")
        else:
            (np.maximum if kind == "max" else np.minimum).at(out, index, u)
        res = make(cls, out, e)
        return (
            wrap_int(res, _out_dtype(ctx)) if _is_int_dtype(_out_dtype(ctx)) and cls is Dy else res
        )

    return rule


def _sort(ctx, *operands, dimension, is_stable, num_keys, **params):
    del is_stable, params  # Python's sort is stable, which is also right for unstable sorts
    _check(ctx, *operands)
    dim, keys = int(dimension), operands[: int(num_keys)]
    if any(isinstance(v, Ball) for v in keys):
        _fail(ctx, "sorting enclosures is not supported (the order may be undecidable)")
    # Within one key tensor Dy mantissas share the exponent, so they compare like the values.
    moved_keys = [np.moveaxis(payload(v), dim, -1) for v in keys]
    perm = np.empty(moved_keys[0].shape, dtype=np.int64)
    for i in np.ndindex(*moved_keys[0].shape[:-1]):
        rows = [mk[i] for mk in moved_keys]
        perm[i] = sorted(range(len(rows[0])), key=lambda j, rows=rows: tuple(r[j] for r in rows))
    outs = []
    for v in operands:
        arr = np.moveaxis(payload(v), dim, -1)
        outs.append(rebuild(v, np.moveaxis(np.take_along_axis(arr, perm, axis=-1), -1, dim)))
    return outs
