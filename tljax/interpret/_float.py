"""`float[FORMAT]`: evaluate a jaxpr as if every floating-point op ran in a target format.

Each arithmetic equation is computed in a wider storage precision (float32, or float64 where
needed) and its result is rounded ONCE to the target format with the bit-pattern kernel of
`tljax.interpret._rounding`. Inputs, closed-over constants and literals are rounded on entry, so
every float value the walker carries is a value of the format. Structural, comparison and integer
equations pass through unchanged.

What "as if in the format" means here, per family:

* ``+ - × ÷ √`` (add, sub, mul, div, sqrt, add_any) with ``p <= 11`` (fp16, bf16, fp8, tf32) are
  computed in float32 and rounded: **correctly rounded**, since float32 holds ``2p + 2`` bits
  (no harmful double rounding). Wider formats (``p > 11``) are computed in float64 (needs
  ``jax_enable_x64``); fp32 with round-to-nearest is float32 itself.
* Transcendentals (exp, log, tanh, logistic, erf, sin, pow, rsqrt, ...) are
  ``round(libm_f32(x))``: what hardware frameworks do, but **not correctly rounded** near ties
  (XLA's float32 exp/tanh/erf are off by 1–6 ulp of float32, NUMERICS.md §1.1).
* ``max, min, neg, abs, sign, floor, ceil, round, clamp, reduce_max/min, cummax/cummin`` map format
  values to format values; they are rounded to nearest (an identity) and never draw random bits.
* ``dot_general`` / ``conv_general_dilated``: products are exact (``2p <= 24``); by default they are
  accumulated in the storage precision at ``Precision.HIGHEST`` in XLA's order and the result is
  rounded once, as tensor cores do (bf16 inputs, fp32 accumulation). ``accumulate="target"`` (or
  any narrower format) instead adds the products one at a time in contraction-index order,
  ``s = round_acc(s + a_k·b_k)`` with each step correctly rounded (the addition is done in the
  storage precision rounded to odd, via TwoSum, then rounded once to the accumulator): a
  `lax.scan` over the contraction index, **slow** (one step per contracted element; for a conv
  one full convolution per kernel entry, ordered by (input feature, spatial offsets) as laid out
  in the kernel's dimension numbers). The result is then rounded to the target format.
* ``reduce_sum`` and ``cumsum`` follow the same option: by default they are summed in the storage
  precision and rounded **once**; with an accumulation format they round after every addition, in
  index order. ``reduce_prod``, ``cumprod``, ``cumlogsumexp``, ``reduce_window_sum`` and
  ``scatter-add`` always round once.
* ``convert_element_type`` to a float dtype rounds to the target format (integers exactly, even
  above 2^24). The emulation is **dtype-blind**: an op whose declared dtype is bf16 still runs
  in the target format, and a cast to bf16 in the program is just a rounding to the target.
  Outputs come back in the program's dtype when it holds every value of the format.
* Overflow: a result beyond the storage range (``exp(100)`` is inf in float32) is rounded as the
  huge finite value it stands for, so directed modes give ±xmax toward zero. An infinity caused
  by an infinite operand (``-inf - m``) is exact and stays infinite. Formats without infinities
  (``overflow="nan"``, e4m3fn) turn overflows into NaN like ml_dtypes, but **keep the
  infinities that are values of the program** (the -inf of a max identity or an attention mask),
  so masked softmax and max-pooling work; contractions count any infinite result as overflow.
* Inputs: a numpy float64 input of a float32 program is converted to float32 first (as JAX does
  for that program under jit, so eager and jit agree), then rounded into the format.
  ``round_inputs=False`` skips the rounding of inputs known to be in the format already.

XLA:CPU facts that matter (NUMERICS.md §1.1): XLA:CPU flushes float32 subnormals (FTZ/DAZ). Only
formats whose subnormals are float32 subnormals are affected, i.e. bf16 (``|x| < 2^-126``): the
kernel writes them correctly, but the next XLA op reads them as 0, and an op whose exact result is
below 2^-126 returns 0. Use ``compute="float64"`` (needs x64) for true bf16 subnormals, or
``ftz_out=True`` to flush every target subnormal on purpose, like FTZ hardware. XLA:CPU's
float32 <-> float64 converts flush subnormals too (measured), so tljax converts between the two
on the bit pattern. XLA's FMA contraction cannot reach across the rounding (a bit operation sits
between ``a*b`` and ``+ c``). TwoSum in the accumulate path loses its residual when that is a
float32 subnormal (FTZ), which can misround partial sums near 2^-126 (bf16 only).

Stochastic rounding (``rounding="stochastic"``, explicit ``key``): each rounding site (equation) of
one evaluation gets ``fold_in(key, n)`` with ``n`` its position in the trace order of that
evaluation (counted from 0 at every `evaluate`); inside a `scan` or `while` the iteration number
is folded in as well, so iterations draw fresh bits; the accumulate-in-format dot folds in the step.
Bits are ``jax.random.bits`` of that key (``random_bits="jax"``, default, portable) or a murmur3
counter hash of it (``random_bits="hash"``, cheaper on CPU for large arrays, NUMERICS.md §2.4;
not cryptographic). Inputs, constants and literals are lifted with round-to-nearest so that a
constant has one value. A key given to `float_semantics` outside `jax.jit` is a constant of the
compiled program (every call draws the same bits); build the semantics inside the jitted function
from a key argument for fresh draws per call. Under ``jax.vmap`` an unbatched key gives every
batch element the same bits; fold the batch index in.

Example:
  >>> f = lambda x, w: jax.nn.relu(x @ w)
  >>> y = tljax.evaluate(f, x, w, semantics="float[bf16]")
  >>> fast = jax.jit(lambda x, w: tljax.evaluate(f, x, w, semantics="float[bf16]"))
"""

from __future__ import annotations

import dataclasses
import functools as ft
import math
import re
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import InputError, Semantics, bind, compat, unsupported
from ._registry import register_semantics_factory
from ._rounding import (
    F32,
    F64,
    SHORT_MODE_NAMES,
    Format,
    add_round_to_odd,
    apply_rounding,
    canonical_rounding,
    contains,
    convert_exact,
    dtype_format,
    fits,
    get_format,
    is_native,
    storage_for,
)

compat.register_exclusion(__file__)


# ----------------------------------------------------------------------------------------------
# Configuration and per-op randomness.


class _Stream:
    """Per-rounding-site random words for stochastic rounding (see the module docstring)."""

    def __init__(self, key, kind: str):
        self.key = key
        self.kind = kind
        self._local = threading.local()

    def _state(self):
        st = self._local
        if not hasattr(st, "count"):
            st.count, st.fresh, st.salts = 0, True, []
        return st

    def begin(self):
        """Marks an evaluation boundary: the next site is number 0 again."""
        self._state().fresh = True

    def position(self):
        """The thread's state with the evaluation-boundary reset applied."""
        st = self._state()
        if st.fresh:
            st.count, st.fresh = 0, False
        return st

    def site_key(self):
        st = self.position()
        k = jax.random.fold_in(self.key, st.count)
        st.count += 1
        for salt in st.salts:
            k = jax.random.fold_in(k, salt)
        return k

    def bits(self, key, shape, uint_dtype):
        if self.kind == "jax":
            return jax.random.bits(key, shape, uint_dtype)
        return _hash_bits(key, shape, uint_dtype)


def _fmix32(h):
    # murmur3's finaliser: a bijective avalanche on uint32.
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _hash_bits(key, shape, uint_dtype):
    words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    words = jnp.ravel(words).astype(np.uint32)
    w0, w1 = words[0], words[-1]
    n = math.prod(shape)
    idx = lax.iota(np.uint32, n)
    lo = _fmix32(_fmix32(idx * np.uint32(0x9E3779B9) + w0) ^ w1)
    if np.dtype(uint_dtype) == np.uint32:
        return lo.reshape(shape)
    hi = _fmix32(_fmix32(idx * np.uint32(0x7FEB352D) + w1) ^ w0)
    return ((hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)).reshape(shape)


@dataclasses.dataclass(frozen=True, eq=False)
class FloatOptions:
    """The configuration a `float[...]` semantics' rules read (``semantics.options``).

    Attributes:
      format: the target `Format`.
      rounding: canonical rounding mode.
      accumulate: accumulator `Format` for dot/conv/reduce_sum/cumsum, or None for the storage
        precision (round once).
      ftz_out: flush target subnormals to zero after every rounding.
      storage: numpy dtype holding values (float32 or float64).
      stream: random source for stochastic rounding, else None.
    """

    format: Format
    rounding: str
    accumulate: Format | None
    ftz_out: bool
    storage: Any
    stream: _Stream | None

    @property
    def lift_mode(self) -> str:
        return "nearest" if self.rounding == "stochastic" else self.rounding


def _x64_enabled() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


_X64_MSG = (
    "{what} needs float64 compute, but jax_enable_x64 is off. Enable it before tracing "
    "(`jax.config.update('jax_enable_x64', True)` or `with jax.enable_x64(True):`)."
)


def _choose_storage(fmt: Format, rounding: str, acc: Format | None, compute) -> Any:
    def ok32(f: Format, mode: str) -> bool:
        # float32 compute then one rounding is exact for p <= 11; fp32 itself only to nearest.
        return fits(f, F32) and (f.precision <= 11 or (is_native(f, F32) and mode == "nearest"))

    narrow = ok32(fmt, rounding) and (acc is None or fits(acc, F32))
    if compute is None:
        storage = np.float32 if narrow else np.float64
    else:
        storage = np.dtype(compute).type
        if storage not in (np.float32, np.float64):
            raise InputError(f"compute must be 'float32' or 'float64', got {compute!r}")
        if storage is np.float32 and not narrow:
            raise InputError(
                f"format {fmt.describe()} with rounding {rounding!r} cannot be emulated exactly in "
                "float32 (needs p <= 11 and the float32 range); use compute='float64'"
            )
    if storage is np.float64:
        if not fits(fmt, F64) or (acc is not None and not fits(acc, F64)):
            raise InputError(f"format {fmt.describe()} does not fit in float64 storage")
        if is_native(fmt, F64) and rounding != "nearest":
            raise InputError(
                f"fp64 with rounding {rounding!r} would need wider than float64 compute; only "
                "round-to-nearest fp64 is supported"
            )
        if not _x64_enabled():
            raise InputError(_X64_MSG.format(what=f"format {fmt.name!r} (rounding {rounding!r})"))
    return storage


# ----------------------------------------------------------------------------------------------
# Rounding helpers used by the rules.


def _opts(ctx) -> FloatOptions:
    return ctx.semantics.options


def _is_inexact(aval_or_dtype) -> bool:
    dt = getattr(aval_or_dtype, "dtype", aval_or_dtype)
    try:
        return bool(jnp.issubdtype(dt, jnp.inexact))
    except TypeError:
        return False


def _is_float_aval(aval) -> bool:
    dt = getattr(aval, "dtype", None)
    if dt is None or not _is_inexact(dt):
        return False
    if jnp.issubdtype(dt, jnp.complexfloating):
        raise InputError(f"float emulation does not model complex values (dtype {dt})")
    return True


def _to_storage(x, opts: FloatOptions):
    x = jnp.asarray(x)
    if x.dtype != opts.storage:
        x = convert_exact(x, opts.storage)
        if x.dtype != opts.storage:
            raise InputError(_X64_MSG.format(what=f"storage dtype {np.dtype(opts.storage).name}"))
    return x


def _round(opts: FloatOptions, x, *, mode=None, fmt=None, key=None):
    """Rounds a storage array to `fmt` (default: the target) with `mode` (default: configured)."""
    mode = mode or opts.rounding
    fmt = fmt or opts.format
    rbits = None
    if mode == "stochastic":
        st = storage_for(x.dtype)
        if key is None:
            key = opts.stream.site_key()
        rbits = opts.stream.bits(key, x.shape, st.uint_dtype)
    return apply_rounding(x, fmt, mode, rbits, opts.ftz_out)


def _fl(ctx, x, operands=()):
    """The result of one arithmetic equation, rounded to the target format.

    `operands` tell an infinity that the op produced from an infinite operand (exact: ``inf - 1``)
    from one the storage precision produced by overflowing (``exp(100)``). The latter is rounded
    as the huge finite value it stands for, so that directed modes give ±xmax toward zero and a
    format without infinities gives NaN; the former stays an infinity (or NaN, per the format).
    Contractions (dot, conv) pass no operands, to avoid a pass over the weights: an infinite
    result there always counts as an overflow.
    """
    opts = _opts(ctx)
    x = _to_storage(x, opts)
    fmt = opts.format
    if not (fmt.overflow == "nan" or (opts.rounding in _DIRECTED and fmt.overflow != "saturate")):
        return _round(opts, x)  # both kinds of infinity round alike
    operands = [jnp.asarray(v) for v in operands if _is_inexact(jnp.asarray(v))]
    rbits = None
    if opts.rounding == "stochastic":
        rbits = opts.stream.bits(opts.stream.site_key(), x.shape, storage_for(x.dtype).uint_dtype)
    return _round_overflow_aware(x, operands, rbits, fmt, opts.rounding, opts.ftz_out)


@ft.partial(jax.jit, static_argnums=(3, 4, 5))
def _round_overflow_aware(x, operands, rbits, fmt, mode, ftz_out):
    inf_in = jnp.zeros(x.shape, bool)
    for v in operands:
        if v.ndim == 0 or v.shape == x.shape:
            inf_in = inf_in | jnp.isinf(v)
        else:  # a reduction, contraction, gather: any infinite operand element
            inf_in = inf_in | jnp.any(jnp.isinf(v))
    big = jnp.copysign(jnp.asarray(np.finfo(x.dtype).max, x.dtype), x)
    r = apply_rounding(jnp.where(jnp.isinf(x) & ~inf_in, big, x), fmt, mode, rbits, ftz_out)
    if fmt.overflow == "nan":
        r = jnp.where(jnp.isinf(x) & inf_in, x, r)  # kept: e.g. the -inf of a masked softmax
    return r


_DIRECTED = ("toward_zero", "up", "down")


def _single(ctx, outs):
    return outs if ctx.primitive.multiple_results else outs[0]


def _float_out(ctx) -> bool:
    return any(_is_float_aval(a) for a in ctx.out_avals)


# ----------------------------------------------------------------------------------------------
# Rule families.


def _move(ctx, *invals, **params):
    """Structural / selection / comparison ops: values move, none is created. Bound as is."""
    del params
    return _single(ctx, bind(ctx.eqn, invals))


def _arith(ctx, *invals, **params):
    """Computed in the storage precision (the equation re-bound), then rounded once."""
    del params
    if not _float_out(ctx):
        return _single(ctx, bind(ctx.eqn, invals))
    opts = _opts(ctx)
    invals = [_to_storage(v, opts) if _is_inexact(jnp.asarray(v)) else v for v in invals]
    outs = bind(ctx.eqn, invals)
    outs = [
        _fl(ctx, o, invals) if _is_float_aval(a) else o
        for o, a in zip(outs, ctx.out_avals, strict=True)
    ]
    return _single(ctx, outs)


def _keep_inf(opts: FloatOptions, x, rounded):
    """Formats without infinities (overflow="nan"): an infinity that is a *value in the program*
    (the -inf identity of max, a mask) is kept rather than made NaN; only overflow follows the
    format's policy."""
    if opts.format.overflow != "nan":
        return rounded
    return jnp.where(jnp.isinf(x), x, rounded)


def _exact(ctx, *invals, **params):
    """Ops mapping format values to format values; rounded to nearest (an identity), no RNG."""
    del params
    outs = bind(ctx.eqn, invals)
    opts = _opts(ctx)
    outs = [
        _keep_inf(opts, o, _round(opts, o, mode="nearest")) if _is_float_aval(a) else o
        for o, a in zip((_to_storage(o, opts) for o in outs), ctx.out_avals, strict=True)
    ]
    return _single(ctx, outs)


ARITH_PRIMITIVES = compat.primitives_by_name(
    "add", "sub", "mul", "div", "rem", "pow", "atan2", "integer_pow", "square", "one_minus_square",
    "sqrt", "rsqrt", "cbrt", "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin",
    "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erf", "erfc",
    "erf_inv", "lgamma", "digamma", "igamma", "igammac", "polygamma", "bessel_i0e", "bessel_i1e",
    "reduce_precision", "reduce_prod", "cumprod", "cumlogsumexp", "reduce_window_sum",
    "reduce_window", "scatter_add", "scatter_mul", "select_and_scatter_add", "add_jaxvals",
)  # fmt: skip
EXACT_PRIMITIVES = compat.primitives_by_name(
    "neg", "abs", "sign", "floor", "ceil", "round", "max", "min", "clamp", "reduce_max",
    "reduce_min", "cummax", "cummin", "reduce_window_max", "reduce_window_min", "scatter_max",
    "scatter_min",
)  # fmt: skip
MOVE_PRIMITIVES = compat.primitives_by_name(
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice", "dynamic_slice",
    "dynamic_update_slice", "gather", "scatter", "concatenate", "pad", "rev", "select_n", "copy",
    "stop_gradient", "sort", "top_k", "split", "optimization_barrier", "eq", "ne", "lt",
    "le", "gt", "ge", "is_finite", "argmax", "argmin",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# One-off rules.


def _int_to_storage(x, opts: FloatOptions):
    """Integers as storage floats that round correctly to the format afterwards.

    Wide integers are split in halves that convert exactly and added rounded to odd, so that the
    later rounding to a narrower format is not a double rounding. For the storage's own format
    XLA's convert is already the correctly rounded result.
    """
    x = jnp.asarray(x)
    storage = opts.storage
    st = storage_for(storage)
    width = np.iinfo(x.dtype).bits if jnp.issubdtype(x.dtype, jnp.integer) else 1
    if width <= st.mant + 1 or is_native(opts.format, st):
        return x.astype(storage)
    if width > 2 * (st.mant + 1):
        return x.astype(storage)  # int64 into float32: converted by XLA (may double-round)
    half = width // 2
    lo_mask = np.array((1 << half) - 1).astype(x.dtype)
    hi = x & ~lo_mask
    lo = x & lo_mask
    return add_round_to_odd(hi.astype(storage), lo.astype(storage))


def _convert_element_type(ctx, x, *, new_dtype, weak_type, sharding):
    del weak_type, sharding
    if not _is_inexact(new_dtype):
        return bind(ctx.eqn, [x])[0]
    _is_float_aval(ctx.out_avals[0])  # complex check
    opts = _opts(ctx)
    xa = jnp.asarray(x)
    if _is_inexact(xa):
        xa = _to_storage(xa, opts)
        return _keep_inf(opts, xa, _round(opts, xa))  # a cast moves an infinity, no overflow
    return _fl(ctx, _int_to_storage(xa, opts))


def _iota(ctx, **params):
    del params
    out = bind(ctx.eqn, [])[0]
    if not _is_float_aval(ctx.out_avals[0]):
        return out
    return _fl(ctx, out)


def _bitcast_convert_type(ctx, x, *, new_dtype):
    in_aval = ctx.in_avals[0]
    if _is_inexact(in_aval.dtype):
        x = convert_exact(x, in_aval.dtype)
    out = bind(ctx.eqn, [x])[0]
    return _fl(ctx, out) if _is_inexact(new_dtype) else out


_HIGHEST = lax.Precision.HIGHEST


def _accumulate_step(opts: FloatOptions, acc: Format, key, step):
    """``s, term -> round_acc(s + term)`` with one rounding per addition (round-to-odd first)."""

    def add(s, term):
        k = None
        if opts.rounding == "stochastic":
            k = jax.random.fold_in(key, step)
        return _round(opts, add_round_to_odd(s, term), fmt=acc, key=k)

    return add


def _scan_accumulate(opts: FloatOptions, terms_fn, n: int, init):
    """``s_0 = init; s_{k+1} = round_acc(s_k + terms_fn(k))`` for k < n, by `lax.scan`."""
    acc = opts.accumulate
    key = opts.stream.site_key() if opts.rounding == "stochastic" else None

    def body(s, k):
        return _accumulate_step(opts, acc, key, k)(s, terms_fn(k)), None

    s, _ = lax.scan(body, init, jnp.arange(n, dtype=np.int32))
    return s


def _finish_acc(ctx, out):
    if _opts(ctx).accumulate == _opts(ctx).format:
        return out  # every partial sum is already a value of the format
    return _fl(ctx, out)


def _float_inputs(opts, *xs):
    """Operands of a float dot/conv in storage; integer operands are converted into the format."""
    return [
        _to_storage(x, opts)
        if _is_inexact(jnp.asarray(x))
        else _round(opts, _int_to_storage(x, opts), mode=opts.lift_mode)
        for x in xs
    ]


def _dot_general(
    ctx, lhs, rhs, *, dimension_numbers, precision, preferred_element_type, out_sharding=None
):
    del precision, preferred_element_type, out_sharding
    if not _float_out(ctx):
        return bind(ctx.eqn, [lhs, rhs])[0]
    opts = _opts(ctx)
    lhs, rhs = _float_inputs(opts, lhs, rhs)
    if opts.accumulate is None:
        out = lax.dot_general(
            lhs, rhs, dimension_numbers, precision=_HIGHEST, preferred_element_type=opts.storage
        )
        return _fl(ctx, out)
    (lc, rc), (lb, rb) = dimension_numbers
    lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    B = math.prod(lhs.shape[d] for d in lb)
    M = math.prod(lhs.shape[d] for d in lf)
    N = math.prod(rhs.shape[d] for d in rf)
    K = math.prod(lhs.shape[d] for d in lc)
    L = jnp.transpose(lhs, (*lc, *lb, *lf)).reshape(K, B, M, 1)
    R = jnp.transpose(rhs, (*rc, *rb, *rf)).reshape(K, B, 1, N)
    init = jnp.zeros((B, M, N), opts.storage)
    # Products are exact (2p <= storage precision); the sum is rounded after every addition.
    out = _scan_accumulate(opts, lambda k: L[k] * R[k], K, init)
    shape = [lhs.shape[d] for d in lb] + [lhs.shape[d] for d in lf] + [rhs.shape[d] for d in rf]
    return _finish_acc(ctx, out.reshape(shape))


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
    precision,
    preferred_element_type,
    out_sharding=None,
):
    del precision, preferred_element_type, out_sharding
    if not _float_out(ctx):
        return bind(ctx.eqn, [lhs, rhs])[0]
    opts = _opts(ctx)
    lhs, rhs = _float_inputs(opts, lhs, rhs)

    def conv(kernel):
        return lax.conv_general_dilated(
            lhs,
            kernel,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision=_HIGHEST,
            preferred_element_type=opts.storage,
        )

    if opts.accumulate is None:
        return _fl(ctx, conv(rhs))
    # One kernel entry (input feature, spatial offset) per step: each output then receives exactly
    # one product, computed exactly by the convolution itself (inf·0 gives NaN, as in any conv).
    axes = tuple(dimension_numbers.rhs_spec[1:])
    order = sorted(range(len(axes)), key=lambda i: axes[i])
    entry_shape = [rhs.shape[a] for a in axes]
    n = math.prod(entry_shape)
    zero = jnp.zeros((), opts.storage)

    def term(k):
        onehot = (lax.iota(np.int32, n) == k).reshape(entry_shape).transpose(order)
        mask = lax.broadcast_in_dim(onehot, rhs.shape, tuple(sorted(axes)))
        return conv(jnp.where(mask, rhs, zero))

    init = jnp.zeros(jax.eval_shape(conv, rhs).shape, opts.storage)
    return _finish_acc(ctx, _scan_accumulate(opts, term, n, init))


def _reduce_sum(ctx, x, *, axes, out_sharding=None):
    del out_sharding
    if not _float_out(ctx):
        return bind(ctx.eqn, [x])[0]
    opts = _opts(ctx)
    x = _to_storage(x, opts)
    if opts.accumulate is None or not axes:
        return _fl(ctx, bind(ctx.eqn, [x])[0], (x,))
    rest = [d for d in range(x.ndim) if d not in axes]
    K = math.prod(x.shape[d] for d in axes)
    xt = jnp.transpose(x, (*axes, *rest)).reshape(K, *[x.shape[d] for d in rest])
    init = jnp.zeros(xt.shape[1:], opts.storage)
    return _finish_acc(ctx, _scan_accumulate(opts, lambda k: xt[k], K, init))


def _cumsum(ctx, x, *, axis, reverse):
    if not _float_out(ctx):
        return bind(ctx.eqn, [x])[0]
    opts = _opts(ctx)
    x = _to_storage(x, opts)
    if opts.accumulate is None:
        return _fl(ctx, bind(ctx.eqn, [x])[0], (x,))
    acc = opts.accumulate
    key = opts.stream.site_key() if opts.rounding == "stochastic" else None
    xs = jnp.moveaxis(x, axis, 0)

    def body(s, kx):
        k, xk = kx
        s = _accumulate_step(opts, acc, key, k)(s, xk)
        return s, s

    steps = jnp.arange(xs.shape[0], dtype=np.int32)
    _, ys = lax.scan(body, jnp.zeros(xs.shape[1:], opts.storage), (steps, xs), reverse=reverse)
    return _finish_acc(ctx, jnp.moveaxis(ys, 0, axis))


def _default(ctx, *invals, **params):
    """Integer/bool/key-only equations cannot see the float format: bound as is. Others: error."""
    del params
    avals = [*ctx.in_avals, *ctx.out_avals]
    if any(_is_float_aval(a) for a in avals):
        raise unsupported(ctx.semantics, ctx.eqn, ctx.path)
    if ctx.eqn.effects and not ctx.eqn.outvars:
        return []  # e.g. debug_print: executed only by the reference semantics
    return _single(ctx, bind(ctx.eqn, invals))


# Stochastic rounding only: scan/while bodies fold the iteration number into every site's key.


def _scan_sr(ctx, *invals, **params):
    stream = _opts(ctx).stream
    n_consts, n_carry = compat.scan_layout(params)
    consts, carry, xs = (
        invals[:n_consts],
        invals[n_consts : n_consts + n_carry],
        invals[n_consts + n_carry :],
    )
    sub = compat.sub_jaxpr(ctx.eqn, "body")
    jaxpr, body_consts = sub.jaxpr, sub.consts
    state = stream.position()
    start = state.count

    def step(c, x):
        i, c = c[0], c[1:]
        state.count = start  # a re-trace numbers the body's sites the same way
        state.salts.append(i)
        try:
            out = ctx.walk(jaxpr, body_consts, [*consts, *c, *x], label="scan")
        finally:
            state.salts.pop()
        return (i + 1, *out[:n_carry]), tuple(out[n_carry:])

    (_, *c), ys = lax.scan(
        step,
        (jnp.int32(0), *carry),
        tuple(xs),
        length=int(params["length"]),
        reverse=bool(params["reverse"]),
    )
    return [*c, *ys]


def _while_sr(ctx, *invals, **params):
    stream = _opts(ctx).stream
    nc, nb = compat.while_layout(params)
    cconsts, bconsts, carry = invals[:nc], invals[nc : nc + nb], invals[nc + nb :]
    csub, bsub = compat.sub_jaxpr(ctx.eqn, "cond"), compat.sub_jaxpr(ctx.eqn, "body")
    cj, cjc = csub.jaxpr, csub.consts
    bj, bjc = bsub.jaxpr, bsub.consts
    state = stream.position()
    start = state.count

    def cond(c):
        return ctx.walk(cj, cjc, [*cconsts, *c[1:]], label="while[cond]")[0]

    def body(c):
        i = c[0]
        state.count = start
        state.salts.append(i)
        try:
            out = ctx.walk(bj, bjc, [*bconsts, *c[1:]], label="while[body]")
        finally:
            state.salts.pop()
        return (i + 1, *out)

    _, *out = lax.while_loop(cond, body, (jnp.int32(0), *carry))
    return list(out)


rules: dict = {
    **{p: _arith for p in ARITH_PRIMITIVES},
    **{p: _exact for p in EXACT_PRIMITIVES},
    **{p: _move for p in MOVE_PRIMITIVES},
    lax.convert_element_type_p: _convert_element_type,
    lax.iota_p: _iota,
    lax.bitcast_convert_type_p: _bitcast_convert_type,
    lax.dot_general_p: _dot_general,
    lax.conv_general_dilated_p: _conv_general_dilated,
    lax.reduce_sum_p: _reduce_sum,
    lax.cumsum_p: _cumsum,
}
"""The rule table shared by every `float[...]` semantics; rules read ``semantics.options``."""

_SR_RULES = {compat.scan_p: _scan_sr, compat.while_p: _while_sr}


# ----------------------------------------------------------------------------------------------
# Constructor and names.


def _lift(opts: FloatOptions, value, aval):
    dtype = getattr(aval, "dtype", None)
    if dtype is not None and not _is_inexact(dtype):
        return jnp.asarray(value)
    # A numpy float64 value becomes float32 here when x64 is off, exactly as JAX converts it
    # for a float32 program under jit (so eager and jit agree), then is rounded to the format.
    x = jnp.asarray(value)
    if not _is_inexact(x):
        return _round(opts, _int_to_storage(x, opts), mode=opts.lift_mode)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise InputError(f"float emulation does not model complex values (dtype {x.dtype})")
    if x.dtype == np.float64 and opts.storage is np.float32:
        # Round from the wide value directly (a float64 -> float32 -> format chain double-rounds).
        r = apply_rounding(x, opts.format, opts.lift_mode, None, opts.ftz_out)
        return convert_exact(_keep_inf(opts, x, r), np.float32)
    x = _to_storage(x, opts)
    return _keep_inf(opts, x, _round(opts, x, mode=opts.lift_mode))


def _finalize(opts: FloatOptions, value, aval):
    dtype = getattr(aval, "dtype", None)
    if dtype is None or not _is_inexact(dtype):
        return value
    have = dtype_format(dtype)
    if (
        have is not None
        and np.dtype(dtype) != np.dtype(opts.storage)
        and contains(have, opts.format)
    ):
        return convert_exact(value, dtype)  # exact: every value of the format is a `dtype` value
    return value


def _semantics_name(
    fmt: Format, rounding: str, acc: Format | None, ftz_out: bool, storage, extra=()
) -> str:
    parts = [fmt.name]
    if rounding != "nearest":
        parts.append(SHORT_MODE_NAMES[rounding])
    if acc is not None:
        parts.append(f"acc={'target' if acc == fmt else acc.name}")
    if ftz_out:
        parts.append("ftz")
    if storage is not None:
        parts.append(f"compute={np.dtype(storage).name}")
    parts.extend(extra)
    return f"float[{','.join(parts)}]"


def float_semantics(
    fmt,
    *,
    rounding: str = "nearest",
    accumulate=None,
    key=None,
    ftz_out: bool = False,
    compute=None,
    random_bits: str = "jax",
    round_inputs: bool = True,
    name: str | None = None,
) -> Semantics:
    """A semantics that evaluates every float op as if it ran in `fmt` (see the module docstring).

    Traceable: ``jax.jit(lambda x: tljax.evaluate(g, x, semantics=sem))`` compiles the whole
    emulated program to one XLA computation, the fast path (rounding fuses into the ops).

    Args:
      fmt: a `Format` or a name: ``"bf16"``, ``"fp16"``, ``"e4m3fn"``, ``"e5m2"``, ``"fp32"``,
        ``"fp64"``, ``"tf32"``, ``"e4m3"``, ``"e3m4"``, ``"e4m3fnuz"``, ``"e5m2fnuz"``, ``"eXmY"``.
      rounding: ``"nearest"`` (ties to even), ``"toward_zero"``, ``"up"``, ``"down"``,
        ``"stochastic"`` (needs `key`).
      accumulate: accumulator of dot_general, conv_general_dilated, reduce_sum and cumsum. None
        (default): the storage precision, rounded once at the end (tensor-core style). A format
        (``"fp32"``, ``"bf16"``) or ``"target"``: round after every addition (slow scan).
      key: PRNG key for stochastic rounding (``jax.random.key(0)``); ignored otherwise.
      ftz_out: flush results below ``2^emin`` to zero, like FTZ hardware.
      compute: ``"float32"`` or ``"float64"`` storage; default float32 when it is exact
        (``p <= 11``, or fp32 to nearest), else float64 (needs ``jax_enable_x64``).
      random_bits: ``"jax"`` (``jax.random.bits``) or ``"hash"`` (fast counter hash).
      round_inputs: round the user's inputs into the format on entry (default). False trusts
        them to be values of the format already (e.g. weights quantized once with
        `round_to_format`), which saves a pass over every weight on each call; a non-format input
        is then used as is by its first op (constants and literals are still rounded).
      name: semantics name; default like ``"float[bf16,rtz]"``.

    Returns:
      A `tljax.Semantics`. Outputs are arrays of the program's float dtype when that dtype holds
      every value of `fmt` (float32 for bf16/fp16/fp8), else of the storage dtype.

    Example:
      >>> sem = float_semantics("bf16", accumulate="target")
      >>> tljax.evaluate(lambda x: x.sum(), jnp.full(300, 2.0**-9).at[0].set(1.0), semantics=sem)
      Array(1., dtype=float32)
    """
    fmt = get_format(fmt)
    mode = canonical_rounding(rounding)
    if accumulate is None:
        acc = None
    elif isinstance(accumulate, str) and accumulate.lower() == "target":
        acc = fmt
    else:
        acc = get_format(accumulate)
    storage = _choose_storage(fmt, mode, acc, compute)
    if acc is not None and is_native(acc, storage_for(storage)):
        acc = None  # accumulating in the storage format is the default path
    if acc is not None and acc.precision > storage_for(storage).mant - 1:
        raise InputError(
            f"accumulator {acc.name!r} needs at least 2 fewer significand bits than the "
            f"{np.dtype(storage).name} compute precision; use compute='float64'"
        )
    stream = None
    if mode == "stochastic":
        if key is None:
            raise InputError(
                "stochastic rounding needs an explicit PRNG key: "
                "float_semantics(fmt, rounding='stochastic', key=jax.random.key(0))"
            )
        if random_bits not in ("jax", "hash"):
            raise InputError(f"random_bits must be 'jax' or 'hash', got {random_bits!r}")
        stream = _Stream(key, random_bits)
    opts = FloatOptions(fmt, mode, acc, bool(ftz_out), storage, stream)
    if name is None:
        extra = () if round_inputs else ("trusted_inputs",)
        name = _semantics_name(
            fmt, mode, acc, ftz_out, np.dtype(compute).type if compute else None, extra
        )

    def lift(value, aval):
        return _lift(opts, value, aval)

    def lift_input(value, aval):
        if stream is not None:
            stream.begin()
        if not round_inputs:
            x = jnp.asarray(value)
            return _to_storage(x, opts) if _is_inexact(x) else x
        return _lift(opts, value, aval)

    def finalize(value, aval):
        if stream is not None:
            stream.begin()
        return _finalize(opts, value, aval)

    table = dict(rules)
    if stream is not None:
        table.update(_SR_RULES)
    return Semantics(
        name,
        rules=table,
        lift=lift,
        lift_input=lift_input,
        finalize=finalize,
        default_rule=_default,
        traceable=True,
        options=opts,
    )


_OPTION = re.compile(r"(acc|compute|seed|random_bits)=(.+)")


def _from_name(match: re.Match) -> Semantics:
    """``float[FMT(,OPTION)*]``; options: a rounding (rne rtz rup rdown sr), ``acc=FMT|target``,
    ``ftz``, ``compute=float64``, ``seed=N`` (stochastic key), ``random_bits=hash``,
    ``trusted_inputs`` (``round_inputs=False``)."""
    full = match.group(0)
    fmt, *opts = [p.strip() for p in match.group(1).split(",")]
    kwargs: dict[str, Any] = {}
    for opt in opts:
        m = _OPTION.fullmatch(opt)
        if m:
            k, v = m.groups()
            if k == "acc":
                kwargs["accumulate"] = v
            elif k == "compute":
                kwargs["compute"] = v
            elif k == "random_bits":
                kwargs["random_bits"] = v
            else:
                try:
                    kwargs["key"] = jax.random.key(int(v))
                except ValueError:
                    raise InputError(f"{full!r}: seed must be an integer, got {v!r}") from None
        elif opt == "ftz":
            kwargs["ftz_out"] = True
        elif opt == "trusted_inputs":
            kwargs["round_inputs"] = False
        else:
            try:
                kwargs["rounding"] = canonical_rounding(opt)
            except InputError:
                raise InputError(
                    f"{full!r}: unknown option {opt!r}; options are a rounding mode "
                    "(rne, rtz, rup, rdown, sr), acc=FORMAT|target, ftz, compute=float64, seed=N, "
                    "random_bits=hash, trusted_inputs"
                ) from None
    if kwargs.get("rounding") == "stochastic" and "key" not in kwargs:
        raise InputError(
            f"{full!r}: stochastic rounding by name needs a seed, e.g. 'float[bf16,sr,seed=0]', "
            "or use tljax.interpret.float_semantics(fmt, rounding='stochastic', key=...)"
        )
    return float_semantics(fmt, name=full, **kwargs)


register_semantics_factory(r"float\[(.+)\]", _from_name)
