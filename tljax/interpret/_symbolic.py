"""The symbolic semantics: a jaxpr evaluated over sympy expressions (real-number meaning).

Values are numpy ``object`` arrays whose elements are sympy expressions (a 0-d array for a
scalar). Constants and literals become exact sympy numbers (floats via ``as_integer_ratio``, so
``0.1f`` is the rational 13421773/134217728, never a decimal); booleans become sympy
``true``/``false`` or relations; piecewise operations (``max``, ``abs``, ``select_n``) become
``Max``/``Abs``/``Piecewise``. Integer ops are mathematical integers (no int32 wrap-around) and
no float rounding happens anywhere (``reduce_precision`` of a number is the one rounding): this
is the meaning of the program over the reals. Index-like operands (gather/dynamic_slice indices,
argmax, sort keys) must be concrete; a ``cond`` on a symbolic predicate becomes a ``Piecewise``
over its branches; a ``while`` loop needs a concrete predicate. Windowed ops and convolutions
read which elements meet from JAX itself (a 0/1 Jacobian of the op), then add no arithmetic of
their own.

The semantics is host-side Python: it is NOT traceable (no `jax.jit`/`jax.grad` over it); it
evaluates the jaxpr of a function, which may itself be a `jax.grad` or `jax.jvp` jaxpr.

Example:
  >>> import tljax.proofs._symbolic_api as S
  >>> x = S.symbols("x", (2,))
  >>> S.symbolic(lambda v: jnp.sum(v * v), x)
  x_0**2 + x_1**2
"""

from __future__ import annotations

import fractions
import functools as ft
import itertools
import math
import threading

import numpy as np
import sympy
from jax import lax

from ..core import Semantics, UnsupportedPrimitiveError, compat
from ._registry import register_semantics

compat.register_exclusion(__file__)

# ----------------------------------------------------------------------------------------------
# Values.


def to_sympy(v):
    """One scalar (Python/numpy number, bool, Fraction or sympy object) as an exact sympy object."""
    if isinstance(v, sympy.Basic):
        return v
    if isinstance(v, bool | np.bool_):
        return sympy.true if bool(v) else sympy.false
    if isinstance(v, int | np.integer):
        return sympy.Integer(int(v))
    if isinstance(v, fractions.Fraction):
        return sympy.Rational(v.numerator, v.denominator)
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return sympy.nan
        if math.isinf(f):
            return sympy.oo if f > 0 else -sympy.oo
        # Exact value of the float in its own precision; float(v) is exact for f16/bf16/f32.
        n, d = f.as_integer_ratio()
        return sympy.Rational(n, d)
    if hasattr(v, "numerator") and hasattr(v, "denominator"):  # flint.fmpq, fmpz and friends
        return sympy.Rational(int(v.numerator), int(v.denominator))
    if hasattr(v, "dtype"):  # ml_dtypes scalars (bfloat16, float8)
        return to_sympy(float(v))
    raise TypeError(f"cannot convert {type(v).__name__} {v!r} to an exact sympy value")


def as_object_array(x) -> np.ndarray:
    """`x` (array, scalar, nested list) as a numpy object array of sympy objects."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        arr = x
    elif isinstance(x, sympy.Basic):
        arr = np.empty((), dtype=object)
        arr[()] = x
        return arr
    else:
        arr = np.asarray(x)
        if arr.dtype != object:
            # float16/bfloat16 go through float, which is exact for them.
            flat = [to_sympy(v) for v in arr.reshape(-1).tolist()]
            out = np.empty(arr.shape, dtype=object)
            out.reshape(-1)[:] = flat if flat else []
            return out
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = to_sympy(arr[idx])
    return out


def _lift(value, aval):
    del aval
    return as_object_array(np.asarray(value) if not isinstance(value, np.ndarray) else value)


def _to_concrete(value):
    """Python numbers (bool, int, Fraction) when every element is a number, else None."""
    arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        e = arr[idx]
        if e is sympy.true or e is sympy.false:
            out[idx] = bool(e)
        elif isinstance(e, sympy.Integer):
            out[idx] = int(e)
        elif isinstance(e, sympy.Rational):
            out[idx] = fractions.Fraction(int(e.p), int(e.q))
        elif isinstance(e, bool | int | fractions.Fraction):
            out[idx] = e
        else:
            return None
    return out


def _is_abstract(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == object


def _obj(x) -> np.ndarray:
    """Wraps a rule's result (object array or single sympy object) as an object array."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return x
    return as_object_array(x)


def _map(f, *arrays) -> np.ndarray:
    """Elementwise `f` over broadcast object arrays (scalar literals broadcast in jaxprs)."""
    arrays = [_obj(a) for a in arrays]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    arrays = [np.broadcast_to(a, shape) for a in arrays]
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        out[idx] = f(*(a[idx] for a in arrays))
    return out


def _int_value(x, what: str, ctx) -> int:
    """A concrete integer from a scalar value (dynamic_slice start indices and the like)."""
    e = _obj(x).reshape(-1)
    if e.size != 1:
        raise ValueError(f"{what} must be a scalar, got shape {np.shape(x)}")
    v = e[0]
    if isinstance(v, sympy.Integer) or (isinstance(v, sympy.Rational) and v.q == 1):
        return int(v)
    raise UnsupportedPrimitiveError(
        f"semantics 'symbolic': {what} of {ctx.primitive.name!r} must be a concrete integer, "
        f"got {v}\n  {ctx.where()}\n  (substitute concrete values for the symbols the index "
        "depends on before evaluating)"
    )


def _is_bool(aval) -> bool:
    return aval is not None and np.dtype(aval.dtype) == np.bool_


def _is_int(aval) -> bool:
    return aval is not None and np.issubdtype(np.dtype(aval.dtype), np.integer)


# ----------------------------------------------------------------------------------------------
# Rule construction helpers. Rules accept only the params they know: a param added by a JAX
# upgrade is an error naming it, not silently ignored.


def _check_params(ctx, params: dict, known: frozenset):
    extra = set(params) - known
    if extra:
        raise UnsupportedPrimitiveError(
            f"semantics 'symbolic': primitive {ctx.primitive.name!r} has params {sorted(extra)} "
            f"that its rule does not know (known: {sorted(known)})\n  {ctx.where()}\n  "
            "(a newer JAX added them: teach tljax/interpret/_symbolic.py what they mean)"
        )


def _elementwise(f, known=("accuracy",)):
    """A rule applying scalar function `f(*elements)` elementwise; params are ignored (listed)."""
    known = frozenset(known)

    def rule(ctx, *xs, **params):
        _check_params(ctx, params, known)
        return _map(f, *xs)

    rule.__name__ = getattr(f, "__name__", "elementwise")
    return rule


def _trunc(z):
    """Rounding toward zero (C integer division / float->int conversion)."""
    if z.is_number and z.is_comparable:
        return sympy.Integer(int(sympy.floor(z)) if z >= 0 else int(sympy.ceiling(z)))
    return sympy.Piecewise((sympy.floor(z), z >= 0), (sympy.ceiling(z), True))


def _as_bool(e):
    """A boolean sympy value from a select/logic operand."""
    if e is sympy.true or e is sympy.false or isinstance(e, sympy.logic.boolalg.Boolean):
        return e
    return sympy.Ne(e, 0)


# ----------------------------------------------------------------------------------------------
# Arithmetic and comparisons.


def _add(ctx, x, y):
    if _is_bool(ctx.out_avals[0]):
        return _map(lambda a, b: sympy.Or(a, b), x, y)
    return _map(lambda a, b: a + b, x, y)


def _sub(ctx, x, y):
    return _map(lambda a, b: a - b, x, y)


def _mul(ctx, x, y, *, out_dtype=None):
    del out_dtype  # exact arithmetic has no accumulation type
    if _is_bool(ctx.out_avals[0]):
        return _map(lambda a, b: sympy.And(a, b), x, y)
    return _map(lambda a, b: a * b, x, y)


def _div(ctx, x, y):
    if _is_int(ctx.out_avals[0]):
        return _map(lambda a, b: _trunc(a / b), x, y)
    return _map(lambda a, b: a / b, x, y)


def _rem(ctx, x, y):
    # C fmod / integer remainder: the sign follows the dividend.
    return _map(lambda a, b: a - b * _trunc(a / b), x, y)


def _pow(ctx, x, y):
    return _map(lambda a, b: a**b, x, y)


def _integer_pow(ctx, x, *, y):
    return _map(lambda a: a ** sympy.Integer(int(y)), x)


def _max(ctx, x, y):
    if _is_bool(ctx.out_avals[0]):
        return _map(sympy.Or, x, y)
    return _map(sympy.Max, x, y)


def _min(ctx, x, y):
    if _is_bool(ctx.out_avals[0]):
        return _map(sympy.And, x, y)
    return _map(sympy.Min, x, y)


def _clamp(ctx, lo, x, hi):
    return _map(lambda a, v, b: sympy.Min(sympy.Max(v, a), b), lo, x, hi)


def _cmp(rel, bool_rel=None):
    def rule(ctx, x, y):
        if bool_rel is not None and _is_bool(ctx.in_avals[0]):
            return _map(bool_rel, x, y)
        return _map(rel, x, y)

    rule.__name__ = getattr(rel, "__name__", "cmp")
    return rule


def _logic(bool_op, int_op):
    def rule(ctx, *xs):
        if _is_bool(ctx.out_avals[0]):
            return _map(lambda *a: bool_op(*(_as_bool(e) for e in a)), *xs)

        def on_ints(*a):
            if all(isinstance(e, sympy.Integer) for e in a):
                return sympy.Integer(int_op(*(int(e) for e in a)))
            raise UnsupportedPrimitiveError(
                f"semantics 'symbolic': bitwise {ctx.primitive.name!r} on non-concrete integers "
                f"{a}\n  {ctx.where()}\n  (bit operations have no closed form over symbols)"
            )

        return _map(on_ints, *xs)

    return rule


def _not_int(a):
    return ~a


def _sign(a):
    return sympy.sign(a)


def _round(ctx, x, *, rounding_method):
    away = int(rounding_method) == int(lax.RoundingMethod.AWAY_FROM_ZERO)

    def f(a):
        if away:
            return sympy.sign(a) * sympy.floor(sympy.Abs(a) + sympy.Rational(1, 2))
        if isinstance(a, sympy.Rational):
            return sympy.Integer(round(fractions.Fraction(int(a.p), int(a.q))))  # half to even
        raise UnsupportedPrimitiveError(
            f"semantics 'symbolic': round-half-to-even of a non-rational {a}\n  {ctx.where()}\n  "
            "(substitute concrete values, or use rounding_method=AWAY_FROM_ZERO)"
        )

    return _map(f, x)


def _is_finite(ctx, x):
    def f(a):
        if a.is_finite is True:
            return sympy.true
        if a.is_finite is False or a is sympy.nan:
            return sympy.false
        raise UnsupportedPrimitiveError(
            f"semantics 'symbolic': cannot decide whether {a} is finite\n  {ctx.where()}\n  "
            "(declare symbols real=True, which sympy treats as finite)"
        )

    return _map(f, x)


def _select_n(ctx, which, *cases):
    bool_pred = _is_bool(ctx.in_avals[0])

    def f(p, *cs):
        if bool_pred:
            if len(cs) == 1:
                return cs[0]
            return sympy.Piecewise((cs[1], _as_bool(p)), (cs[0], True))
        pieces = [(c, sympy.Eq(p, k)) for k, c in enumerate(cs[:-1])]
        return sympy.Piecewise(*pieces, (cs[-1], True))

    return _map(f, which, *cases)


def _convert_element_type(ctx, x, *, new_dtype, weak_type, sharding):
    del weak_type, sharding
    src, dst = ctx.in_avals[0], np.dtype(new_dtype)
    if dst == np.bool_:
        return x if _is_bool(src) else _map(lambda a: sympy.Ne(a, 0), x)
    if _is_bool(src):
        return _map(lambda a: sympy.Piecewise((sympy.Integer(1), a), (sympy.Integer(0), True)), x)
    if np.issubdtype(dst, np.integer) and not _is_int(src):
        return _map(_trunc, x)
    return x  # real semantics: float<->float and int->float change no value


def _identity(ctx, x, **params):
    _check_params(ctx, params, frozenset())
    return x


# ----------------------------------------------------------------------------------------------
# Linear algebra and reductions.


def _dot_general(
    ctx, lhs, rhs, *, dimension_numbers, precision, preferred_element_type, out_sharding=None
):
    del precision, preferred_element_type, out_sharding  # exact: no precision or accumulation type
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = (tuple(int(a) for a in t) for t in (lc, rc, lb, rb))
    lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    lt = np.transpose(lhs, (*lb, *lf, *lc))
    rt = np.transpose(rhs, (*rb, *rc, *rf))
    bshape = [lhs.shape[d] for d in lb]
    lfs, rfs = [lhs.shape[d] for d in lf], [rhs.shape[d] for d in rf]
    k = int(np.prod([lhs.shape[d] for d in lc], dtype=np.int64))
    B, M, N = (
        int(np.prod(bshape, dtype=np.int64)),
        int(np.prod(lfs, dtype=np.int64)),
        int(np.prod(rfs, dtype=np.int64)),
    )
    l3 = lt.reshape(B, M, k)
    r3 = rt.reshape(B, k, N)
    out = np.empty((B, M, N), dtype=object)
    for b, i, j in itertools.product(range(B), range(M), range(N)):
        out[b, i, j] = sympy.Add(*(l3[b, i, t] * r3[b, t, j] for t in range(k)))
    return out.reshape(*bshape, *lfs, *rfs)


def _reducer(combine, empty):
    def rule(ctx, x, *, axes, out_sharding=None):
        del out_sharding
        axes = tuple(int(a) for a in axes)
        keep = [d for d in range(x.ndim) if d not in axes]
        xt = np.transpose(x, (*keep, *axes))
        n = int(np.prod([x.shape[d] for d in axes], dtype=np.int64))
        flat = xt.reshape(*[x.shape[d] for d in keep], n)
        out = np.empty(flat.shape[:-1], dtype=object)
        is_bool = _is_bool(ctx.in_avals[0])
        for idx in np.ndindex(out.shape):
            row = list(flat[idx])
            out[idx] = combine(*row, is_bool=is_bool) if row else empty(is_bool)
        return out

    return rule


def _combine_sum(*a, is_bool):
    return sympy.Or(*a) if is_bool else sympy.Add(*a)


def _combine_max(*a, is_bool):
    return sympy.Or(*a) if is_bool else sympy.Max(*a)


def _combine_min(*a, is_bool):
    return sympy.And(*a) if is_bool else sympy.Min(*a)


def _combine_prod(*a, is_bool):
    return sympy.And(*a) if is_bool else sympy.Mul(*a)


def _combine_and(*a, is_bool):
    return sympy.And(*(_as_bool(e) for e in a))


def _combine_or(*a, is_bool):
    return sympy.Or(*(_as_bool(e) for e in a))


def _arg_extremum(largest: bool):
    def rule(ctx, x, *, axes, index_dtype):
        del index_dtype
        conc = _to_concrete(x)
        if conc is None:
            raise UnsupportedPrimitiveError(
                f"semantics 'symbolic': {ctx.primitive.name} of non-concrete values has no closed "
                f"form\n  {ctx.where()}\n  (substitute concrete values for the symbols, or rewrite "
                "with a comparison whose outcome you fix)"
            )
        (axis,) = axes
        xt = np.moveaxis(x, int(axis), -1)
        out = np.empty(xt.shape[:-1], dtype=object)
        for idx in np.ndindex(out.shape):
            row = list(xt[idx])
            best = 0
            for i, v in enumerate(row):
                if (v > row[best]) if largest else (v < row[best]):  # first extremum wins, as XLA
                    best = i
            out[idx] = sympy.Integer(best)
        return out

    return rule


def _cumulative(combine, bool_combine=None):
    def rule(ctx, x, *, axis, reverse):
        xt = np.moveaxis(x, int(axis), -1)
        out = np.empty(xt.shape, dtype=object)
        n = xt.shape[-1]
        order = range(n - 1, -1, -1) if reverse else range(n)
        f = bool_combine if (bool_combine is not None and _is_bool(ctx.in_avals[0])) else combine
        for idx in np.ndindex(xt.shape[:-1]):
            acc = None
            for i in order:
                acc = xt[idx + (i,)] if acc is None else f(acc, xt[idx + (i,)])
                out[idx + (i,)] = acc
        return np.moveaxis(out, -1, int(axis))

    return rule


def _cumlogsumexp(ctx, x, *, axis, reverse):
    e = _map(sympy.exp, x)
    s = _cumulative(lambda a, b: a + b)(ctx, e, axis=axis, reverse=reverse)
    return _map(sympy.log, s)


# ----------------------------------------------------------------------------------------------
# Structural operations (no arithmetic: object-array reshuffles).


def _copy_array(a) -> np.ndarray:
    return np.array(a, dtype=object, copy=True)


def _reshape(ctx, x, *, new_sizes, dimensions, sharding=None):
    del sharding
    if dimensions is not None:
        x = np.transpose(x, dimensions)
    return _copy_array(x.reshape(tuple(int(s) for s in new_sizes)))


def _broadcast_in_dim(ctx, x, *, shape, broadcast_dimensions, sharding=None):
    del sharding
    shape = tuple(int(s) for s in shape)
    expanded = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        expanded[int(d)] = x.shape[i]
    return _copy_array(np.broadcast_to(x.reshape(expanded), shape))


def _transpose(ctx, x, *, permutation):
    return _copy_array(np.transpose(x, tuple(int(p) for p in permutation)))


def _squeeze(ctx, x, *, dimensions):
    return _copy_array(np.squeeze(x, axis=tuple(int(d) for d in dimensions)))


def _expand_dims(ctx, x, *, dimensions):
    return _copy_array(np.expand_dims(x, tuple(int(d) for d in dimensions)))


def _rev(ctx, x, *, dimensions):
    return _copy_array(np.flip(x, axis=tuple(int(d) for d in dimensions)) if dimensions else x)


def _slice(ctx, x, *, start_indices, limit_indices, strides):
    strides = strides or (1,) * x.ndim
    idx = tuple(
        slice(int(s), int(l), int(st))
        for s, l, st in zip(start_indices, limit_indices, strides, strict=True)
    )
    return _copy_array(x[idx])


def _clamped_starts(ctx, operand_shape, starts, sizes):
    out = []
    for k, (s, n, size) in enumerate(zip(starts, operand_shape, sizes, strict=True)):
        v = _int_value(s, f"start index {k}", ctx)
        out.append(min(max(v, 0), n - size))  # XLA clamps so the slice stays in bounds
    return out


def _dynamic_slice(ctx, x, *starts, slice_sizes):
    sizes = [int(s) for s in slice_sizes]
    st = _clamped_starts(ctx, x.shape, starts, sizes)
    return _copy_array(x[tuple(slice(a, a + n) for a, n in zip(st, sizes, strict=True))])


def _dynamic_update_slice(ctx, x, update, *starts):
    st = _clamped_starts(ctx, x.shape, starts, update.shape)
    out = _copy_array(x)
    out[tuple(slice(a, a + n) for a, n in zip(st, update.shape, strict=True))] = update
    return out


def _concatenate(ctx, *xs, dimension):
    return np.concatenate([_obj(a) for a in xs], axis=int(dimension))


def _stack(ctx, *xs, axis):
    return np.stack([_obj(a) for a in xs], axis=int(axis))


def _unstack(ctx, x, *, axis):
    return [_copy_array(p) for p in np.moveaxis(x, int(axis), 0)]


def _split(ctx, x, *, sizes, axis):
    bounds = np.cumsum([int(s) for s in sizes])[:-1]
    return [_copy_array(p) for p in np.split(x, bounds, axis=int(axis))]


def _pad(ctx, x, padval, *, padding_config):
    pv = _obj(padval).reshape(-1)[0]
    out = x
    for axis, (lo, hi, interior) in enumerate(padding_config):
        lo, hi, interior = int(lo), int(hi), int(interior)
        n = out.shape[axis]
        core = max(n + (n - 1) * interior, 0)
        shape = list(out.shape)
        shape[axis] = core + max(lo, 0) + max(hi, 0)
        new = np.full(shape, pv, dtype=object)
        sl = [slice(None)] * out.ndim
        sl[axis] = slice(max(lo, 0), max(lo, 0) + core, interior + 1)
        new[tuple(sl)] = out
        # Negative padding removes elements from the ends.
        sl2 = [slice(None)] * out.ndim
        sl2[axis] = slice(max(-lo, 0), shape[axis] - max(-hi, 0))
        out = new[tuple(sl2)]
    return _copy_array(out)


def _iota(ctx, *, dtype, shape, dimension, sharding=None):
    del dtype, sharding
    shape = tuple(int(s) for s in shape)
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        out[idx] = sympy.Integer(idx[int(dimension)])
    return out


def _mode_name(mode) -> str:
    s = str(mode).upper()
    for name in ("FILL_OR_DROP", "PROMISE_IN_BOUNDS", "ONE_HOT", "CLIP"):
        if name in s:
            return name
    return s


def _concrete_indices(ctx, indices) -> np.ndarray:
    conc = _to_concrete(indices)
    if conc is None or not all(isinstance(v, int) for v in conc.reshape(-1)):
        raise UnsupportedPrimitiveError(
            f"semantics 'symbolic': {ctx.primitive.name} needs concrete integer indices\n  "
            f"{ctx.where()}\n  (indexing by a symbolic value has no closed form; substitute it)"
        )
    return conc.astype(np.int64)


def _gather(
    ctx,
    operand,
    indices,
    *,
    dimension_numbers,
    slice_sizes,
    indices_are_sorted,
    unique_indices,
    mode,
    fill_value,
):
    del indices_are_sorted, unique_indices
    dn = dimension_numbers
    if tuple(getattr(dn, "operand_batching_dims", ())):
        raise UnsupportedPrimitiveError(
            f"semantics 'symbolic': gather with batching dims is not supported\n  {ctx.where()}"
        )
    idx = _concrete_indices(ctx, indices)
    offset_dims = tuple(int(d) for d in dn.offset_dims)
    collapsed = tuple(int(d) for d in dn.collapsed_slice_dims)
    start_map = tuple(int(d) for d in dn.start_index_map)
    sizes = tuple(int(s) for s in slice_sizes)
    out_shape = tuple(ctx.out_avals[0].shape)
    batch_dims = [d for d in range(len(out_shape)) if d not in offset_dims]
    window_operand_dims = [d for d in range(operand.ndim) if d not in collapsed]
    m = _mode_name(mode)
    fill = sympy.nan if fill_value is None else to_sympy(fill_value)
    if fill_value is None and _is_int(ctx.out_avals[0]):
        fill = sympy.Integer(np.iinfo(np.dtype(ctx.out_avals[0].dtype)).min)
    out = np.empty(out_shape, dtype=object)
    for o in np.ndindex(out_shape):
        g = tuple(o[d] for d in batch_dims)
        start_vec = idx[g] if idx.ndim > 0 else idx
        start = [0] * operand.ndim
        oob = False
        for k, d in enumerate(start_map):
            s = int(start_vec[k])
            if s < 0 or s + sizes[d] > operand.shape[d]:
                oob = True
            start[d] = min(max(s, 0), operand.shape[d] - sizes[d])
        if oob and m == "FILL_OR_DROP":
            out[o] = fill
            continue
        full = list(start)
        for od, wd in zip(offset_dims, window_operand_dims, strict=True):
            full[wd] += o[od]
        out[o] = operand[tuple(full)]
    return out


def _scatter(combine):
    def rule(
        ctx,
        operand,
        indices,
        updates,
        *,
        dimension_numbers,
        indices_are_sorted,
        unique_indices,
        mode,
        update_jaxpr,
        update_consts,
    ):
        del indices_are_sorted, unique_indices, update_jaxpr, update_consts
        dn = dimension_numbers
        if tuple(getattr(dn, "operand_batching_dims", ())):
            raise UnsupportedPrimitiveError(
                "semantics 'symbolic': scatter with batching dims is not supported\n  "
                + ctx.where()
            )
        idx = _concrete_indices(ctx, indices)
        window_dims = tuple(int(d) for d in dn.update_window_dims)
        inserted = tuple(int(d) for d in dn.inserted_window_dims)
        to_operand = tuple(int(d) for d in dn.scatter_dims_to_operand_dims)
        scatter_dims = [d for d in range(updates.ndim) if d not in window_dims]
        window_operand_dims = [d for d in range(operand.ndim) if d not in inserted]
        window_sizes = [updates.shape[d] for d in window_dims]
        full_window = [1] * operand.ndim
        for wd, size in zip(window_operand_dims, window_sizes, strict=True):
            full_window[wd] = size
        m = _mode_name(mode)
        out = _copy_array(operand)
        for u in np.ndindex(updates.shape):
            g = tuple(u[d] for d in scatter_dims)
            start_vec = idx[g] if idx.ndim > 0 else idx
            start = [0] * operand.ndim
            oob = False
            for k, d in enumerate(to_operand):
                s = int(start_vec[k])
                if s < 0 or s + full_window[d] > operand.shape[d]:
                    oob = True
                start[d] = min(max(s, 0), operand.shape[d] - full_window[d]) if m == "CLIP" else s
            if oob and m != "CLIP":
                continue  # FILL_OR_DROP (and undefined PROMISE_IN_BOUNDS) drop the update
            full = list(start)
            for wd, ud in zip(window_operand_dims, window_dims, strict=True):
                full[wd] += u[ud]
            t = tuple(full)
            out[t] = combine(out[t], updates[u])
        return out

    return rule


def _tile(ctx, x, *, reps):
    return _copy_array(np.tile(x, tuple(int(r) for r in reps)))


def _placement_identity(ctx, *xs, **params):
    # device_put / optimization_barrier / sharding_constraint: their params (devices,
    # shardings, layouts) say where a value lives, never what it is.
    del params
    return list(xs) if ctx.primitive.multiple_results else xs[0]


def _sort(ctx, *operands, dimension, is_stable, num_keys):
    del is_stable  # a stable sort of concrete keys is what Python's sorted does
    concs = [_to_concrete(o) for o in operands[:num_keys]]
    if any(c is None for c in concs):
        raise UnsupportedPrimitiveError(
            "semantics 'symbolic': sort of non-concrete keys has no closed form\n  "
            f"{ctx.where()}\n  "
            "(substitute concrete values for the symbols, or sort by a key you fix)"
        )
    axis = int(dimension)
    moved = [np.moveaxis(o, axis, -1) for o in operands]
    keys = [np.moveaxis(c, axis, -1) for c in concs]
    outs = [np.empty(m.shape, dtype=object) for m in moved]
    for idx in np.ndindex(moved[0].shape[:-1]):
        n = moved[0].shape[-1]
        order = sorted(range(n), key=lambda i: tuple(k[idx + (i,)] for k in keys))
        for m, o in zip(moved, outs, strict=True):
            o[idx] = [m[idx + (i,)] for i in order]
    return [np.moveaxis(o, -1, axis) for o in outs]


# Windowed and convolution ops: their index structure is read off JAX itself (a Jacobian of the
# op on zeros, whose entries are exactly 0 or 1), then applied to the symbolic values. So these
# rules trust JAX for *which* elements meet, and add no arithmetic of their own.


def _structure_jacobian(f, *shapes) -> np.ndarray:
    import jax

    zeros = [np.zeros(s, np.float32) for s in shapes]
    if len(shapes) == 1:
        jac = jax.jacfwd(f)(zeros[0])
    else:
        jac = jax.jacfwd(lambda a: jax.jacfwd(lambda b: f(a, b))(zeros[1]))(zeros[0])
    return np.asarray(jac)


def _reduce_window(combine, empty, init_of_padding):
    def rule(ctx, x, *, window_dimensions, window_strides, padding, base_dilation, window_dilation):
        from jax import lax as _lax

        params = dict(
            window_dimensions=window_dimensions,
            window_strides=window_strides,
            padding=padding,
            base_dilation=base_dilation,
            window_dilation=window_dilation,
        )
        m = _structure_jacobian(lambda a: _lax.reduce_window_sum_p.bind(a, **params), x.shape)
        out_shape = tuple(ctx.out_avals[0].shape)
        m = m.reshape(int(np.prod(out_shape, dtype=np.int64)), x.size)
        # Window size including padding positions: a window that sees padding also sees init.
        full = int(np.prod([int(w) for w in window_dimensions], dtype=np.int64))
        flat = x.reshape(-1)
        out = np.empty(m.shape[0], dtype=object)
        for o in range(m.shape[0]):
            members = [flat[i] for i in np.nonzero(m[o])[0]]
            if len(members) < full and init_of_padding is not None:
                members.append(init_of_padding)
            out[o] = combine(*members) if members else empty
        return out.reshape(out_shape)

    return rule


def _window_members(
    x_shape,
    out_shape,
    window_dimensions,
    window_strides,
    padding,
    base_dilation=None,
    window_dilation=None,
):
    """Per output element: the flat operand indices in its window, and whether it sees padding."""
    from jax import lax as _lax

    nd = len(x_shape)
    params = dict(
        window_dimensions=tuple(window_dimensions),
        window_strides=tuple(window_strides),
        padding=tuple(tuple(p) for p in padding),
        base_dilation=tuple(base_dilation or (1,) * nd),
        window_dilation=tuple(window_dilation or (1,) * nd),
    )
    m = _structure_jacobian(lambda a: _lax.reduce_window_sum_p.bind(a, **params), x_shape)
    m = m.reshape(int(np.prod(out_shape, dtype=np.int64)), int(np.prod(x_shape, dtype=np.int64)))
    full = int(np.prod([int(w) for w in window_dimensions], dtype=np.int64))
    return [(list(np.nonzero(row)[0]), len(np.nonzero(row)[0]) < full) for row in m]


def _selected(ops, k, select_prim):
    """Condition: member k is the one selected (first member winning `select_prim` against all)."""
    ge = select_prim is lax.ge_p
    conds = []
    for j, o in enumerate(ops):
        if j == k:
            continue
        # Earlier members win ties: k must beat earlier ones strictly, later ones weakly.
        if j < k:
            conds.append(ops[k] > o if ge else ops[k] < o)
        else:
            conds.append(ops[k] >= o if ge else ops[k] <= o)
    return sympy.And(*conds)


def _select_and_gather_add(
    ctx,
    tangents,
    operand,
    *,
    select_prim,
    window_dimensions,
    window_strides,
    padding,
    base_dilation,
    window_dilation,
):
    out_shape = tuple(ctx.out_avals[0].shape)
    members = _window_members(
        operand.shape,
        out_shape,
        window_dimensions,
        window_strides,
        padding,
        base_dilation,
        window_dilation,
    )
    of, tf = operand.reshape(-1), tangents.reshape(-1)
    out = np.empty(len(members), dtype=object)
    for o, (idx, _) in enumerate(members):
        ops = [of[i] for i in idx]
        if not idx:
            out[o] = sympy.Integer(0)  # only padding (operand -inf/+inf, tangent 0)
            continue
        pieces = [(tf[i], _selected(ops, k, select_prim)) for k, i in enumerate(idx[:-1])]
        out[o] = sympy.Piecewise(*pieces, (tf[idx[-1]], True))
    return out.reshape(out_shape)


def _select_and_scatter_add(
    ctx, source, operand, *, select_prim, window_dimensions, window_strides, padding
):
    members = _window_members(
        operand.shape, source.shape, window_dimensions, window_strides, padding
    )
    of, sf = operand.reshape(-1), source.reshape(-1)
    acc = [[] for _ in range(of.size)]
    for o, (idx, _) in enumerate(members):
        ops = [of[i] for i in idx]
        for k, i in enumerate(idx):
            cond = sympy.true if len(idx) == 1 else _selected(ops, k, select_prim)
            acc[i].append(sympy.Piecewise((sf[o], cond), (0, True)))
    out = np.empty(of.size, dtype=object)
    for i, terms in enumerate(acc):
        out[i] = sympy.Add(*terms)
    return out.reshape(operand.shape)


def _conv_general_dilated(ctx, lhs, rhs, **params):
    from jax import lax as _lax

    known = {
        "window_strides",
        "padding",
        "lhs_dilation",
        "rhs_dilation",
        "dimension_numbers",
        "feature_group_count",
        "batch_group_count",
        "precision",
        "preferred_element_type",
    }
    _check_params(ctx, {k: v for k, v in params.items() if k != "out_sharding"}, frozenset(known))
    bind_params = {k: v for k, v in params.items() if k != "preferred_element_type"}
    bind_params["preferred_element_type"] = None

    def conv(a, b):
        return _lax.conv_general_dilated_p.bind(a, b, **bind_params)

    c = _structure_jacobian(conv, lhs.shape, rhs.shape)  # axes: out, rhs, lhs
    out_shape = tuple(ctx.out_avals[0].shape)
    c = c.reshape(int(np.prod(out_shape, dtype=np.int64)), rhs.size, lhs.size).transpose(0, 2, 1)
    lf, rf = lhs.reshape(-1), rhs.reshape(-1)
    out = np.empty(c.shape[0], dtype=object)
    for o in range(c.shape[0]):
        ii, jj = np.nonzero(c[o])
        out[o] = sympy.Add(
            *(sympy.Integer(int(c[o, i, j])) * lf[i] * rf[j] for i, j in zip(ii, jj, strict=True))
        )
    return out.reshape(out_shape)


def round_fraction(q: fractions.Fraction, mantissa_bits: int, exponent_bits: int):
    """Round-to-nearest-even of a nonzero rational to a binary float format with `mantissa_bits`
    stored bits and `exponent_bits` exponent bits (IEEE layout: subnormals, overflow to inf).

    Returns the rounded value as a `Fraction` (0 when it underflows; the caller keeps the sign of
    zero) or ``±math.inf``.

    Example:
      >>> round_fraction(fractions.Fraction(1, 3), 23, 8)     # float32(1/3)
      Fraction(11184811, 33554432)
    """
    sign, a = (-1 if q < 0 else 1), abs(q)
    bias = (1 << (exponent_bits - 1)) - 1
    emin, emax = 1 - bias, bias
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if (a.numerator << max(-e, 0)) < (a.denominator << max(e, 0)):
        e -= 1  # now 2**e <= a < 2**(e+1)
    shift = max(e, emin) - mantissa_bits  # the quantum is 2**shift
    num, den = a.numerator, a.denominator
    if shift >= 0:
        den <<= shift
    else:
        num <<= -shift
    n, rest = divmod(num, den)
    if 2 * rest > den or (2 * rest == den and n % 2 == 1):
        n += 1
    r = fractions.Fraction(n) * fractions.Fraction(2) ** shift
    largest = (2 - fractions.Fraction(2) ** -mantissa_bits) * fractions.Fraction(2) ** emax
    if r > largest:
        return sign * math.inf
    return sign * r


def round_to_format(v, mantissa_bits: int, exponent_bits: int):
    """`round_fraction` on a sympy number; NaN, infinities and 0 pass through."""
    if v is sympy.nan or v in (sympy.oo, -sympy.oo) or v == 0:
        return v
    r = round_fraction(fractions.Fraction(int(v.p), int(v.q)), mantissa_bits, exponent_bits)
    if isinstance(r, float):
        return sympy.oo if r > 0 else -sympy.oo
    return sympy.Rational(r.numerator, r.denominator)


def _reduce_precision(ctx, x, *, exponent_bits, mantissa_bits):
    def f(a):
        if isinstance(a, sympy.Rational) or a in (sympy.oo, -sympy.oo, sympy.nan):
            return round_to_format(a, int(mantissa_bits), int(exponent_bits))
        raise UnsupportedPrimitiveError(
            f"semantics 'symbolic': reduce_precision (a rounding) of the non-rational {a} has no "
            f"closed form\n  {ctx.where()}\n  (substitute concrete values for the symbols)"
        )

    return _map(f, x)


# ----------------------------------------------------------------------------------------------
# The table.


def _logistic(a):
    return 1 / (1 + sympy.exp(-a))


def _cbrt(a):
    return sympy.sign(a) * sympy.Abs(a) ** sympy.Rational(1, 3)


_UNARY = {
    "neg": lambda a: -a,
    "abs": sympy.Abs,
    "sign": _sign,
    "floor": sympy.floor,
    "ceil": sympy.ceiling,
    "exp": sympy.exp,
    "exp2": lambda a: sympy.Integer(2) ** a,
    "log": sympy.log,
    "log1p": lambda a: sympy.log(1 + a),
    "expm1": lambda a: sympy.exp(a) - 1,
    "tanh": sympy.tanh,
    "logistic": _logistic,
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "asin": sympy.asin,
    "acos": sympy.acos,
    "atan": sympy.atan,
    "sinh": sympy.sinh,
    "cosh": sympy.cosh,
    "asinh": sympy.asinh,
    "acosh": sympy.acosh,
    "atanh": sympy.atanh,
    "sqrt": sympy.sqrt,
    "rsqrt": lambda a: 1 / sympy.sqrt(a),
    "cbrt": _cbrt,
    "erf": sympy.erf,
    "erfc": sympy.erfc,
    "erf_inv": sympy.erfinv,
    "square": lambda a: a**2,
    "one_minus_square": lambda a: 1 - a**2,  # JAX 0.11+ (tanh/asin/acos/atanh derivatives)
    "lgamma": sympy.loggamma,
    "digamma": sympy.digamma,
}
# Unary ops that carry no params at all (the others carry `accuracy`).
_NO_PARAMS = {"neg", "abs", "sign", "floor", "ceil", "square", "one_minus_square"}


def _build_rules() -> dict:
    # Keyed by name here only to resolve the Primitive objects once; a primitive missing from
    # this JAX version is skipped (the census then shows it as unsupported).
    by_name = {
        name: _elementwise(f, known=() if name in _NO_PARAMS else ("accuracy",))
        for name, f in _UNARY.items()
    }
    by_name.update(
        {
            "add": _add,
            "add_any": _add,
            "sub": _sub,
            "mul": _mul,
            "div": _div,
            "rem": _rem,
            "pow": _pow,
            "integer_pow": _integer_pow,
            "max": _max,
            "min": _min,
            "clamp": _clamp,
            "atan2": _elementwise(sympy.atan2, known=()),
            "round": _round,
            "is_finite": _is_finite,
            "eq": _cmp(sympy.Eq, sympy.Equivalent),
            "ne": _cmp(sympy.Ne, sympy.Xor),
            "lt": _cmp(sympy.Lt),
            "le": _cmp(sympy.Le),
            "gt": _cmp(sympy.Gt),
            "ge": _cmp(sympy.Ge),
            "and": _logic(sympy.And, lambda a, b: a & b),
            "or": _logic(sympy.Or, lambda a, b: a | b),
            "xor": _logic(sympy.Xor, lambda a, b: a ^ b),
            "not": _logic(sympy.Not, _not_int),
            "select_n": _select_n,
            "convert_element_type": _convert_element_type,
            "stop_gradient": _identity,
            "copy": _identity,
            "dot_general": _dot_general,
            "reduce_sum": _reducer(_combine_sum, lambda b: sympy.false if b else sympy.Integer(0)),
            "reduce_max": _reducer(_combine_max, lambda b: sympy.false if b else -sympy.oo),
            "reduce_min": _reducer(_combine_min, lambda b: sympy.true if b else sympy.oo),
            "reduce_prod": _reducer(_combine_prod, lambda b: sympy.true if b else sympy.Integer(1)),
            "reduce_and": _reducer(_combine_and, lambda b: sympy.true),
            "reduce_or": _reducer(_combine_or, lambda b: sympy.false),
            "argmax": _arg_extremum(True),
            "argmin": _arg_extremum(False),
            "cumsum": _cumulative(lambda a, b: a + b, sympy.Or),
            "cumprod": _cumulative(lambda a, b: a * b, sympy.And),
            "cummax": _cumulative(sympy.Max, sympy.Or),
            "cummin": _cumulative(sympy.Min, sympy.And),
            "cumlogsumexp": _cumlogsumexp,
            "reshape": _reshape,
            "broadcast_in_dim": _broadcast_in_dim,
            "transpose": _transpose,
            "squeeze": _squeeze,
            "rev": _rev,
            "slice": _slice,
            "dynamic_slice": _dynamic_slice,
            "dynamic_update_slice": _dynamic_update_slice,
            "concatenate": _concatenate,
            "pad": _pad,
            "iota": _iota,
            "gather": _gather,
            "scatter-add": _scatter(lambda a, b: a + b),
            "scatter": _scatter(lambda a, b: b),
            "scatter-max": _scatter(sympy.Max),
            "scatter-min": _scatter(sympy.Min),
            "scatter-mul": _scatter(lambda a, b: a * b),
            "reduce_xor": _reducer(
                lambda *a, is_bool: sympy.Xor(*(_as_bool(e) for e in a)), lambda b: sympy.false
            ),
            "polygamma": _elementwise(sympy.polygamma, known=()),
            "sort": _sort,
            "reduce_window_sum": _reduce_window(lambda *a: sympy.Add(*a), sympy.Integer(0), None),
            "reduce_window_max": _reduce_window(sympy.Max, -sympy.oo, -sympy.oo),
            "reduce_window_min": _reduce_window(sympy.Min, sympy.oo, sympy.oo),
            "conv_general_dilated": _conv_general_dilated,
            "select_and_gather_add": _select_and_gather_add,
            "select_and_scatter_add": _select_and_scatter_add,
            "reduce_precision": _reduce_precision,
            "device_put": _placement_identity,
            "optimization_barrier": _placement_identity,
            "sharding_constraint": _placement_identity,
            "stack": _stack,
            "unstack": _unstack,
            "split": _split,
            "expand_dims": _expand_dims,
            "tile": _tile,
        }
    )
    out: dict = {}
    for name, rule in by_name.items():
        p = compat.primitive_by_name(name)
        if p is not None:
            out[p] = rule
    return out


rules = _build_rules()


# A cond whose branch index is symbolic evaluates every branch and joins them into a Piecewise.
# The walker's `join` hook sees only the branch outputs, so `branch_indices` pushes the index on a
# (thread-local) stack and `join` pops it; nested conds push and pop in matching order.
_COND_INDEX = threading.local()


def _index_stack() -> list:
    if not hasattr(_COND_INDEX, "stack"):
        _COND_INDEX.stack = []
    return _COND_INDEX.stack


def _branch_indices(index, n: int) -> list[int]:
    _index_stack().append(_obj(index).reshape(-1)[0])
    return list(range(n))


def _index_is(idx, k: int):
    """The condition `idx == k`, unfolded when idx is a Piecewise of constants (a cast bool)."""
    if isinstance(idx, sympy.Piecewise) and all(e.is_number for e, _ in idx.args):
        terms, earlier = [], []
        for e, c in idx.args:
            if e == k:
                terms.append(sympy.And(c, *(sympy.Not(b) for b in earlier)))
            earlier.append(c)
        return sympy.Or(*terms)
    return sympy.Eq(idx, k)


def _join(outs: list) -> list:
    idx = _index_stack().pop()
    n = len(outs)
    # XLA clamps the index into range: the last branch takes every index >= n - 1.
    conds = [_index_is(idx, k) for k in range(n - 1)]

    def pick(*elements):
        return sympy.Piecewise(*zip(elements[:-1], conds, strict=True), (elements[-1], True))

    return [_map(pick, *vals) for vals in zip(*outs, strict=True)]


symbolic = Semantics(
    "symbolic",
    rules=rules,
    lift=_lift,
    is_abstract=_is_abstract,
    concrete_passthrough=False,  # every constant is lifted: no float rounding sneaks in
    to_concrete=_to_concrete,
    join=_join,
    branch_indices=_branch_indices,
    traceable=False,
)

register_semantics(symbolic)


@ft.cache
def supported_primitive_names() -> tuple[str, ...]:
    """Names of the first-order primitives the symbolic semantics has rules for (sorted)."""
    return tuple(sorted(p.name for p in rules))
