"""`numpy`: evaluate a jaxpr on the host with numpy, no XLA compilation.

What a first call needs: compiling a bound program costs seconds (XLA), evaluating it once op by
op with numpy costs milliseconds. The values are IEEE arithmetic in the program's dtypes:

* ``+ - × ÷ √``, comparisons, min/max, selections, conversions and every structural primitive
  give exactly what XLA gives on normal numbers. Subnormals are kept (gradual underflow), where
  XLA:CPU flushes them to zero: never less accurate, and a result that XLA would flush differs by
  less than the smallest normal.
* ``dot_general``, ``conv_general_dilated`` and ``reduce_sum`` accumulate in the operands' dtype in
  numpy's order (BLAS, pairwise; a convolution kernel tap by tap); XLA's order differs, so sums
  differ by rounding (both within the a-priori error bound of any order that `tljax.bounds`
  charges).
* Transcendentals (exp, log, tanh, logistic, sin, pow, ...) of float32 operands are computed in
  float64 and rounded once to float32: within one ulp, more accurate than XLA's float32
  implementations (1-6 ulp, NUMERICS.md §1.1).
* ``integer_pow`` multiplies by repeated squaring as XLA's lowering does.

Primitives without a rule are reported by `numpy_covers`; callers fall back to compiling.

Example:
  >>> tljax.evaluate(lambda x: jnp.tanh(x) @ w, x, semantics="numpy")
"""

from __future__ import annotations

import numpy as np

from ..core import HIGHER_ORDER, Semantics, compat, eval_closed, iter_eqns
from ._registry import register_semantics

compat.register_exclusion(__file__)


def _quiet():
    # inf / NaN arithmetic is data here, as in XLA (a fresh context per use: thread-safe)
    return np.errstate(all="ignore")


def _out_dtype(ctx, k: int = 0):
    return np.dtype(ctx.out_avals[k].dtype)


def _cast(ctx, x, k: int = 0):
    return np.asarray(x).astype(_out_dtype(ctx, k), copy=False)


def _ieee(f):
    """An operation numpy computes correctly rounded (or exactly) in the operands' dtype."""

    def rule(ctx, *xs, **params):
        del params
        with _quiet():
            return _cast(ctx, f(*xs))

    return rule


def _wide(f):
    """A transcendental: computed in float64 and rounded once to the result's dtype."""

    def rule(ctx, *xs, **params):
        del params
        dt = _out_dtype(ctx)
        if dt.itemsize <= 4:
            xs = [np.asarray(x, np.float64) for x in xs]
        with _quiet():
            return np.asarray(f(*xs)).astype(dt)

    return rule


def _sign(x):
    return np.where(x == 0, x, np.sign(x))  # keeps -0.0, as XLA does


def _div(a, b):
    if np.issubdtype(np.asarray(a).dtype, np.integer):  # C division: rounds toward zero
        q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
        return np.where((a < 0) != (b < 0), -q, q)
    return a / b


def _round(ctx, x, *, rounding_method=0, **params):
    del params
    if int(rounding_method) == 1:  # to nearest even
        return _cast(ctx, np.rint(x))
    return _cast(ctx, np.sign(x) * np.floor(np.abs(x) + 0.5))


def _integer_pow(ctx, x, *, y, **params):
    del params
    with _quiet():
        return _powi(ctx, x, y)


def _powi(ctx, x, y):
    # XLA's lowering: binary exponentiation, one rounding per multiplication
    n, base, acc = abs(int(y)), np.asarray(x), None
    while n:
        if n & 1:
            acc = base if acc is None else acc * base
        n >>= 1
        if n:
            base = base * base
    one = np.ones_like(np.asarray(x))
    acc = one if acc is None else acc
    return _cast(ctx, one / acc if int(y) < 0 else acc)


def _special(name: str):
    def f(x):
        import scipy.special  # only where a program needs it (~0.2 s to import)

        return getattr(scipy.special, name)(x)

    return f


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _convert(ctx, x, *, new_dtype, **params):
    del params
    x = np.asarray(x)
    dt = np.dtype(new_dtype)
    if np.issubdtype(dt, np.integer) and np.issubdtype(x.dtype, np.floating):
        info = np.iinfo(dt)  # XLA: toward zero, saturating, NaN -> 0
        x = np.nan_to_num(np.clip(np.trunc(x), info.min, info.max), nan=0.0)
    return x.astype(dt)


def _bitcast(ctx, x, *, new_dtype, **params):
    del params
    return np.array(x, order="C").view(np.dtype(new_dtype))  # (0-d stays 0-d)


def _select_n(ctx, pred, *cases, **params):
    pred = np.asarray(pred)
    if pred.dtype == np.bool_:
        return _cast(ctx, np.where(pred, cases[1], cases[0]) if len(cases) > 1 else cases[0])
    return _cast(ctx, np.choose(pred.astype(np.int64), [np.asarray(c) for c in cases]))


def _clamp(ctx, lo, x, hi, **params):
    return _cast(ctx, np.minimum(np.maximum(x, lo), hi))


def _broadcast_in_dim(ctx, x, *, shape, broadcast_dimensions, **params):
    del params
    x = np.asarray(x)
    src = [1] * len(shape)
    for d, n in zip(broadcast_dimensions, x.shape, strict=True):
        src[d] = n
    return np.broadcast_to(x.reshape(src), tuple(shape))


def _reshape(ctx, x, *, new_sizes, dimensions=None, **params):
    del params
    x = np.asarray(x)
    if dimensions is not None:
        x = np.transpose(x, dimensions)
    return x.reshape(tuple(new_sizes))


def _squeeze(ctx, x, *, dimensions, **params):
    return np.squeeze(np.asarray(x), axis=tuple(dimensions))


def _expand_dims(ctx, x, *, dimensions, **params):
    return np.expand_dims(np.asarray(x), tuple(dimensions))


def _transpose(ctx, x, *, permutation, **params):
    return np.transpose(np.asarray(x), permutation)


def _rev(ctx, x, *, dimensions, **params):
    return np.flip(np.asarray(x), axis=tuple(dimensions))


def _concatenate(ctx, *xs, dimension, **params):
    return _cast(ctx, np.concatenate([np.asarray(x) for x in xs], axis=dimension))


def _stack(ctx, *xs, axis, **params):
    return _cast(ctx, np.stack([np.asarray(x) for x in xs], axis=axis))


def _split(ctx, x, *, sizes, axis, **params):
    cuts = np.cumsum(sizes)[:-1]
    return np.split(np.asarray(x), cuts, axis=axis)


def _pad(ctx, x, value, *, padding_config, **params):
    x, v = np.asarray(x), np.asarray(value)
    # interior padding first, then (possibly negative) edges
    for d, (_, _, interior) in enumerate(padding_config):
        if interior and x.shape[d] > 1:
            n = x.shape[d]
            shape = list(x.shape)
            shape[d] = n + (n - 1) * interior
            out = np.full(shape, v, x.dtype)
            idx = [slice(None)] * x.ndim
            idx[d] = slice(None, None, interior + 1)
            out[tuple(idx)] = x
            x = out
    for d, (lo, hi, _) in enumerate(padding_config):
        widths = [(0, 0)] * x.ndim
        widths[d] = (max(lo, 0), max(hi, 0))
        x = np.pad(x, widths, constant_values=v)
        idx = [slice(None)] * x.ndim
        idx[d] = slice(-min(lo, 0), x.shape[d] + min(hi, 0))
        x = x[tuple(idx)]
    return _cast(ctx, x)


def _slice(ctx, x, *, start_indices, limit_indices, strides=None, **params):
    strides = strides or (1,) * len(start_indices)
    idx = tuple(
        slice(s, e, st) for s, e, st in zip(start_indices, limit_indices, strides, strict=True)
    )
    return np.asarray(x)[idx]


def _starts(shape, sizes, indices):
    # XLA clamps start indices so that the slice fits
    return [
        int(np.clip(int(np.asarray(i)), 0, n - z))
        for n, z, i in zip(shape, sizes, indices, strict=True)
    ]


def _dynamic_slice(ctx, x, *indices, slice_sizes, **params):
    x = np.asarray(x)
    st = _starts(x.shape, slice_sizes, indices)
    return x[tuple(slice(s, s + z) for s, z in zip(st, slice_sizes, strict=True))]


def _dynamic_update_slice(ctx, x, update, *indices, **params):
    x, update = np.array(x), np.asarray(update)
    st = _starts(x.shape, update.shape, indices)
    x[tuple(slice(s, s + z) for s, z in zip(st, update.shape, strict=True))] = update
    return x


def _iota(ctx, *, dtype, shape, dimension, **params):
    del params
    r = np.arange(shape[dimension], dtype=np.dtype(dtype))
    view = [1] * len(shape)
    view[dimension] = shape[dimension]
    return np.broadcast_to(r.reshape(view), tuple(shape))


def _reduce(f):
    def rule(ctx, x, *, axes, **params):
        del params
        with _quiet():
            return _cast(ctx, f(np.asarray(x), axis=tuple(axes)))

    return rule


def _argminmax(f):
    def rule(ctx, x, *, axes, index_dtype, **params):
        del params
        return f(np.asarray(x), axis=axes[0]).astype(np.dtype(index_dtype))

    return rule


def _cumulative(f):
    def rule(ctx, x, *, axis, reverse, **params):
        del params
        x = np.asarray(x)
        with _quiet():
            if reverse:
                return _cast(ctx, np.flip(f(np.flip(x, axis), axis=axis), axis))
            return _cast(ctx, f(x, axis=axis))

    return rule


def _dot_general(ctx, a, b, *, dimension_numbers, **params):
    del params
    (lc, rc), (lb, rb) = dimension_numbers
    a, b = np.asarray(a), np.asarray(b)
    dt = _out_dtype(ctx)
    if np.issubdtype(dt, np.floating):
        a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    lf = [d for d in range(a.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(b.ndim) if d not in rc and d not in rb]
    # (batch, free, contracted) @ (batch, contracted, free): BLAS batched matmul
    at = np.transpose(a, [*lb, *lf, *lc])
    bt = np.transpose(b, [*rb, *rc, *rf])
    nb = int(np.prod([a.shape[d] for d in lb], dtype=np.int64))
    m = int(np.prod([a.shape[d] for d in lf], dtype=np.int64))
    k = int(np.prod([a.shape[d] for d in lc], dtype=np.int64))
    n = int(np.prod([b.shape[d] for d in rf], dtype=np.int64))
    with _quiet():
        out = np.matmul(at.reshape(nb, m, k), bt.reshape(nb, k, n))
    shape = [a.shape[d] for d in lb] + [a.shape[d] for d in lf] + [b.shape[d] for d in rf]
    return _cast(ctx, out.reshape(shape))


def _base(a, dilation, padding):
    """`a` with zeros between its elements (XLA's base / lhs dilation), padded at the edges
    (negative padding crops)."""
    shape = tuple((n - 1) * d + 1 if n else 0 for n, d in zip(a.shape, dilation, strict=True))
    base = np.zeros(shape, a.dtype)
    base[tuple(slice(None, None, int(d)) for d in dilation)] = a
    base = np.pad(base, [(max(int(lo), 0), max(int(hi), 0)) for lo, hi in padding])
    return base[
        tuple(
            slice(max(-int(lo), 0), base.shape[i] - max(-int(hi), 0))
            for i, (lo, hi) in enumerate(padding)
        )
    ]


def _taps(shape, window, strides, dilation):
    """The output shape of windows over an array of `shape`, and per window tap the slices of
    the array that tap reads for every output position (empty when the output is)."""
    out = tuple(
        max((n - (w - 1) * d - 1) // int(s) + 1, 0)
        for n, w, d, s in zip(shape, window, dilation, strides, strict=True)
    )
    if 0 in out:
        return out, []
    taps = [
        tuple(
            slice(t * d, t * d + (m - 1) * int(s) + 1, int(s))
            for t, d, m, s in zip(tap, dilation, out, strides, strict=True)
        )
        for tap in np.ndindex(*window)
    ]
    return out, taps


def _reduce_window_sum(
    ctx, x, *, window_dimensions, window_strides, padding, base_dilation, window_dilation, **params
):
    del params
    base = _base(np.asarray(x), base_dilation, padding)
    out, taps = _taps(base.shape, window_dimensions, window_strides, window_dilation)
    acc = np.zeros(out, _out_dtype(ctx))
    with _quiet():
        for window in taps:
            acc += base[window]
    return _cast(ctx, acc)


def _conv_general_dilated(ctx, lhs, rhs, **params):
    """XLA's convolution, one BLAS product per kernel tap (memory of the operands and output
    only: no window table), accumulated in the output dtype."""
    dimension_numbers, window_strides = params["dimension_numbers"], params["window_strides"]
    padding, lhs_dilation, rhs_dilation = (
        params[k] for k in ("padding", "lhs_dilation", "rhs_dilation")
    )
    g, bg = int(params["feature_group_count"]), int(params["batch_group_count"])
    dt = _out_dtype(ctx)
    a = np.transpose(np.asarray(lhs), dimension_numbers.lhs_spec)  # (N, C, *spatial)
    k = np.transpose(np.asarray(rhs), dimension_numbers.rhs_spec)  # (O, I, *kernel)
    if np.issubdtype(dt, np.floating):
        a, k = a.astype(dt, copy=False), k.astype(dt, copy=False)
    nsp = a.ndim - 2
    one = (1,) * nsp
    base = _base(a, (1, 1, *(lhs_dilation or one)), [(0, 0), (0, 0), *padding])
    osp, taps = _taps(base.shape[2:], k.shape[2:], window_strides, rhs_dilation or one)
    n, c = base.shape[:2]
    o = k.shape[0]
    out = np.zeros((n // bg, o) + osp, dt)
    lead = (slice(None), slice(None))
    with _quiet():
        for tap, window in zip(np.ndindex(*k.shape[2:]), taps, strict=False):
            x = base[lead + window].reshape(n, c, -1)  # (N, C, P): what this tap reads
            w = k[lead + tap]  # (O, I)
            if bg > 1:  # output feature block j reads batch block j
                r = np.matmul(w.reshape(bg, 1, o // bg, c), x.reshape(bg, n // bg, c, -1))
                out += np.swapaxes(r, 0, 1).reshape(out.shape)
            else:  # output feature block j reads input feature block j
                r = np.matmul(w.reshape(1, g, o // g, c // g), x.reshape(n, g, c // g, -1))
                out += r.reshape(out.shape)
    return _cast(ctx, np.transpose(out, np.argsort(dimension_numbers.out_spec)))


def _unstack(ctx, x, *, axis, **params):
    return list(np.moveaxis(np.asarray(x), int(axis), 0))


def _copy(ctx, x, **params):
    del params
    return np.asarray(x)


def _not(ctx, x, **params):
    x = np.asarray(x)
    return np.logical_not(x) if x.dtype == np.bool_ else np.invert(x)


def _shift_right_logical(ctx, x, s, **params):
    x = np.asarray(x)
    u = np.dtype(f"uint{8 * x.dtype.itemsize}")
    return _cast(ctx, np.right_shift(x.view(u), np.asarray(s).astype(u)).view(x.dtype))


def _lift(value, aval):
    a = np.asarray(value)
    if aval is not None and hasattr(aval, "dtype") and a.dtype != aval.dtype:
        a = a.astype(aval.dtype)
    return a


# Every rule takes **params: a JAX version that adds a parameter (a sharding) must not break it.
def _rules() -> dict:
    by_name = {
        "add": _ieee(np.add),
        "add_any": _ieee(np.add),
        "sub": _ieee(np.subtract),
        "mul": _ieee(np.multiply),
        "div": _ieee(_div),
        "rem": _ieee(np.fmod),
        "neg": _ieee(np.negative),
        "abs": _ieee(np.abs),
        "sign": _ieee(_sign),
        "max": _ieee(np.maximum),
        "min": _ieee(np.minimum),
        "sqrt": _ieee(np.sqrt),
        "floor": _ieee(np.floor),
        "ceil": _ieee(np.ceil),
        "round": _round,
        "nextafter": _ieee(np.nextafter),
        "is_finite": _ieee(np.isfinite),
        "integer_pow": _integer_pow,
        "exp": _wide(np.exp),
        "exp2": _wide(np.exp2),
        "log": _wide(np.log),
        "log1p": _wide(np.log1p),
        "expm1": _wide(np.expm1),
        "tanh": _wide(np.tanh),
        "logistic": _wide(_logistic),
        "sin": _wide(np.sin),
        "cos": _wide(np.cos),
        "tan": _wide(np.tan),
        "atan": _wide(np.arctan),
        "asin": _wide(np.arcsin),
        "acos": _wide(np.arccos),
        "sinh": _wide(np.sinh),
        "cosh": _wide(np.cosh),
        "asinh": _wide(np.arcsinh),
        "acosh": _wide(np.arccosh),
        "atanh": _wide(np.arctanh),
        "erf": _wide(_special("erf")),
        "erfc": _wide(_special("erfc")),
        "erf_inv": _wide(_special("erfinv")),
        "lgamma": _wide(_special("gammaln")),
        "digamma": _wide(_special("digamma")),
        "atan2": _wide(np.arctan2),
        "pow": _wide(np.power),
        "rsqrt": _wide(lambda x: 1.0 / np.sqrt(x)),
        "cbrt": _wide(np.cbrt),
        "eq": _ieee(np.equal),
        "ne": _ieee(np.not_equal),
        "lt": _ieee(np.less),
        "le": _ieee(np.less_equal),
        "gt": _ieee(np.greater),
        "ge": _ieee(np.greater_equal),
        "and": _ieee(np.bitwise_and),
        "or": _ieee(np.bitwise_or),
        "xor": _ieee(np.bitwise_xor),
        "not": _not,
        "shift_left": _ieee(np.left_shift),
        "shift_right_arithmetic": _ieee(np.right_shift),
        "shift_right_logical": _shift_right_logical,
        "select_n": _select_n,
        "clamp": _clamp,
        "convert_element_type": _convert,
        "bitcast_convert_type": _bitcast,
        "broadcast_in_dim": _broadcast_in_dim,
        "reshape": _reshape,
        "squeeze": _squeeze,
        "expand_dims": _expand_dims,
        "transpose": _transpose,
        "rev": _rev,
        "concatenate": _concatenate,
        "pad": _pad,
        "slice": _slice,
        "dynamic_slice": _dynamic_slice,
        "dynamic_update_slice": _dynamic_update_slice,
        "iota": _iota,
        "copy": _copy,
        "reduce_sum": _reduce(np.sum),
        "reduce_max": _reduce(np.max),
        "reduce_min": _reduce(np.min),
        "reduce_prod": _reduce(np.prod),
        "reduce_and": _reduce(np.all),
        "reduce_or": _reduce(np.any),
        "argmax": _argminmax(np.argmax),
        "argmin": _argminmax(np.argmin),
        "cumsum": _cumulative(np.cumsum),
        "cumprod": _cumulative(np.cumprod),
        "cummax": _cumulative(np.maximum.accumulate),
        "cummin": _cumulative(np.minimum.accumulate),
        "dot_general": _dot_general,
        "conv_general_dilated": _conv_general_dilated,
        "reduce_window_sum": _reduce_window_sum,
        "unstack": _unstack,
        "stop_gradient": _copy,
        "split": _split,
        "stack": _stack,
        "optimization_barrier": lambda ctx, *xs, **params: [np.asarray(x) for x in xs],
        "square": _ieee(np.square),
        "one_minus_square": _ieee(lambda x: (1 + x) * (1 - x)),
    }
    # primitives this JAX version lacks (split, square: 0.10; one_minus_square: 0.11+) are skipped
    table = {compat.primitive_by_name(n): r for n, r in by_name.items()}
    table.pop(None, None)
    return table


def _concrete(value):
    return np.asarray(value)


numpy_semantics = Semantics(
    "numpy",
    rules=_rules(),
    lift=_lift,
    recurse=True,
    traceable=False,
    to_concrete=_concrete,
)
register_semantics(numpy_semantics)


# Primitives whose numpy result is XLA:CPU's bit for bit (up to the sign of a zero; tested in
# tests/interpret/test_numpy_semantics.py): safe for constants of a program, which must be the
# values the program computes. Sums, dots and transcendentals are not (order, libm).
_XLA_EXACT = frozenset(
    "add sub mul div rem neg abs sign max min sqrt floor ceil round nextafter is_finite "
    "integer_pow square eq ne lt le gt ge and or xor not shift_left shift_right_arithmetic "
    "shift_right_logical select_n clamp convert_element_type bitcast_convert_type "
    "broadcast_in_dim reshape squeeze transpose rev concatenate pad slice dynamic_slice "
    "dynamic_update_slice iota copy reduce_max reduce_min reduce_and reduce_or argmax argmin "
    "cummax cummin split stack stop_gradient".split()
)


def xla_exact_rules() -> dict:
    """The numpy rules of primitives whose results are XLA's bit for bit (`Semantics.host_rules`
    for constant folding without compiling)."""
    return {p: r for p, r in numpy_semantics.rules.items() if p.name in _XLA_EXACT}


def numpy_covers(jaxpr) -> list[str]:
    """Names of the primitives of `jaxpr` (and its sub-jaxprs) the numpy semantics has no rule
    for; empty when it can evaluate the whole program."""
    rules = numpy_semantics.rules
    missing = set()
    for e in iter_eqns(jaxpr):
        if e.primitive not in rules and e.primitive not in HIGHER_ORDER:
            missing.add(e.primitive.name)
    return sorted(missing)


def evaluate_numpy(closed, leaves: list) -> list:
    """The outputs of a closed jaxpr on concrete input leaves, computed by numpy."""
    invars = compat.open_jaxpr(closed)[0].invars
    vals = [_lift(x, v.aval) for x, v in zip(leaves, invars, strict=True)]
    return eval_closed(numpy_semantics, closed, vals)
