"""Lowering precision: the float-emulation semantics made explicit as a program.

`lower_precision(graph, "bf16")` returns a float32 graph in which every float value is a value of
the target format: inputs pass through `lax.reduce_precision`, constants and literals are rounded
once when the graph is built, and every float equation that can leave the format (arithmetic,
transcendentals, dots, convolutions, reductions, conversions) is followed by `reduce_precision`.
Dots and convolutions run at `Precision.HIGHEST` with float32 accumulation and are rounded once,
as tensor cores do; sums are rounded once. Selections, comparisons, shape ops and exact maps
(`max`, `neg`, `abs`, ...) keep format values in the format and get no rounding.

XLA keeps `reduce_precision` (it is not folded away like an `astype` round trip), so the lowered
graph computes the same numbers eagerly, under `jax.jit` and on every backend: bit for bit what
the `float[FORMAT]` semantics computes for the original graph (that is the pass's claim).

`relax_rounding` is used by `validate` to bound the lowered graph: each `reduce_precision(v)` is
replaced by ``v + e * t`` with a fresh input `t` in [-1, 1] and ``e = u*M + eta`` where M bounds
|v| over the box (an interval pass over ``v + (u|v| + eta) * t`` gives it): a sound enclosure of
the rounding (RNE to p bits: error <= u|v| = 2^-p |v| for normal results, <= eta below the
normal range), affine in the noise, which CROWN propagates exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import HIGHER_ORDER, Graph, InputError, Semantics, compat, eval_jaxpr
from ..interpret import Format, get_format
from ._build import at, bind_rule, emit, is_traced, kernel_p, pass_semantics, rewrite, single
from ._passes import _check_graph
from ._promises import Promise

compat.register_exclusion(__file__)


_FP32 = get_format("fp32")
_FORMATS_HINT = (
    "use 'bf16', 'fp16', 'e5m2', 'e4m3', 'e3m4' or 'eXmY' (IEEE-like: exponent bits 2..8, "
    "mantissa bits 0..22, with infinities; fnuz/fn variants are not what lax.reduce_precision "
    "rounds to)"
)


def float_format(fmt) -> Format:
    """The `tljax.interpret.Format` that `lax.reduce_precision` rounds to, from a `Format` or a
    name in the one registry (``"bf16"``/``"bfloat16"``, ``"fp16"``, ``"e5m2"``, ``"e4m3"``,
    ``"e3m4"``, ``"eXmY"``): IEEE-like (RNE, subnormals, infinities), narrower than float32."""
    try:
        f = get_format(fmt)
    except InputError:
        raise InputError(f"unknown float format {fmt!r}; {_FORMATS_HINT}") from None
    ieee = Format(f.exponent_bits, f.mantissa_bits, name=f.name)
    if f != ieee or not (2 <= f.exponent_bits <= 8 and 0 <= f.mantissa_bits <= 22):
        raise InputError(
            f"float format {fmt!r} ({f.describe()}) is not one lowering can emulate; "
            f"{_FORMATS_HINT}"
        )
    return f


def _eta(f: Format) -> float:
    """Absolute rounding error bound below the normal range (half the subnormal spacing).

    At least float32's smallest normal 2^-126: XLA:CPU flushes float32 subnormals (a bf16
    subnormal is one), so a tiny value may become 0.
    """
    return max(f.eta, _FP32.tiny)


# Float values in, the same float values (moved, selected) or exact maps of them out.
_KEEPS_FORMAT = frozenset(compat.primitives_by_name(
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice", "dynamic_slice",
    "dynamic_update_slice", "gather", "scatter", "concatenate", "pad", "rev", "select_n", "copy",
    "stop_gradient", "sort", "top_k", "split", "optimization_barrier", "eq", "ne", "lt", "le", "gt",
    "ge", "is_finite", "argmax", "argmin", "neg", "abs", "sign", "floor", "ceil", "round", "max",
    "min", "clamp", "reduce_max", "reduce_min", "cummax", "cummin", "reduce_window_max",
    "reduce_window_min", "reduce_precision", "stack", "unstack",
))  # fmt: skip
_LINEAR = frozenset([lax.dot_general_p, lax.conv_general_dilated_p])
_HIGHEST = lax.Precision.HIGHEST


def _is_float(dtype) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _rp(x, f: Format):
    return lax.reduce_precision(x, exponent_bits=f.exponent_bits, mantissa_bits=f.mantissa_bits)


def lower_precision(graph: Graph, fmt="bf16", *, accumulate: str = "fp32") -> Graph:
    """The graph as it computes when every float operation runs in `fmt` (emulated in float32).

    Args:
      graph: the graph (float32 arithmetic).
      fmt: target format: ``"bf16"``, ``"fp16"``, ``"e5m2"``, ``"e4m3"``, ``"e3m4"``, ``"eXmY"``.
      accumulate: accumulator of dots, convolutions and sums: only ``"fp32"`` (float32
        accumulation, one rounding of the result) is supported.

    Returns:
      A float32 `Graph` with explicit `reduce_precision` equations. `tljax.kernel` equations are
      replaced by their lowered reference (an implementation computes in its own precision).

    Promise: float execution of the result equals ``tljax.evaluate(graph, x,
    semantics="float[FMT]")`` bit for bit; the real-number deviation from the original is
    whatever the format's rounding makes it (`validate` certifies a bound over a box).

    Example:
      >>> low = tljax.transforms.lower_precision(g, "bf16")
      >>> tljax.transforms.validate(g, low, box)   # emulation check + certified bf16 error
    """
    _check_graph(graph, "lower_precision")
    f = float_format(fmt)
    if accumulate not in ("fp32", "float32", "f32"):
        raise InputError(
            f"lower_precision: accumulate={accumulate!r} is not supported; only 'fp32' (float32 "
            "accumulation, rounded once). For accumulation in the format use "
            "tljax.evaluate(g, x, semantics='float[...,acc=target]')"
        )
    stats = {"roundings": 0}

    def rnd(x):
        stats["roundings"] += 1
        return _rp(x, f)

    def lift(value, aval):
        dt = getattr(aval, "dtype", None)
        a = np.asarray(value)
        if (dt is not None and not _is_float(dt)) or not _is_float(a.dtype):
            return value
        with jax.ensure_compile_time_eval():
            return np.asarray(_rp(jnp.asarray(value), f))  # constants are rounded once, here

    def prepare(x, aval):
        return rnd(x) if _is_float(aval.dtype) else x

    def round_outs(ctx, outs):
        return [
            rnd(o) if _is_float(a.dtype) else o for o, a in zip(outs, ctx.out_avals, strict=True)
        ]

    def linear(ctx, *invals, **params):
        params = dict(params, precision=(_HIGHEST, _HIGHEST))
        out_dt = ctx.out_avals[0].dtype
        if _is_float(out_dt) and np.dtype(out_dt).itemsize < 4:
            params["preferred_element_type"] = np.dtype(np.float32)
        outs = emit(ctx, invals, params=params)
        with at(ctx.eqn):
            return single(ctx, round_outs(ctx, outs))

    def arith(ctx, *invals, **params):
        outs = emit(ctx, invals)
        with at(ctx.eqn):
            return single(ctx, round_outs(ctx, outs))

    rules = {p: bind_rule for p in _KEEPS_FORMAT}
    rules.update({p: linear for p in _LINEAR})
    kp = kernel_p()
    if kp is not None:  # a kernel runs its reference in the format (what float[...] interprets)
        rules[kp] = lambda ctx, *invals, **params: HIGHER_ORDER[kp](ctx, list(invals))
    sem = pass_semantics(f"lower_precision[{f.name}]", rules=rules, default_rule=arith, lift=lift)
    claim = Promise(emulates=f"float[{f.name}]", note=f"{f.name} arithmetic, float32 accumulation")
    return rewrite(
        graph, sem, name=f"lower_precision[{f.name}]", claim=claim, prepare=prepare, stats=stats
    )


# ----------------------------------------------------------------------------------------------
# Relaxation for bounding: rounding sites become bounded noise inputs.


def _relax_semantics(noise, scales, counter, sites):
    """Walker semantics turning each `reduce_precision(v)` into bounded noise around `v`.

    With `scales` (a flat vector `e`): ``v + e * t`` (affine in the noise; `e` must bound the
    rounding error at every point of the box). Without: ``v + (u|v| + eta) * t``. `noise` is the
    flat vector `t` (None: count only); `counter[0]` the next unused entry; `sites` collects
    ``(pre-rounding value, Format)``.
    """

    def rp(ctx, x, *, exponent_bits, mantissa_bits, **params):
        f = Format(int(exponent_bits), int(mantissa_bits))
        shape = ctx.in_avals[0].shape
        n = int(np.prod(shape))
        k = counter[0]
        counter[0] += n
        sites.append((x, f))
        if noise is None:
            return x
        t = noise[k : k + n].reshape(shape).astype(x.dtype)
        if scales is not None:
            return x + jnp.asarray(scales[k : k + n], x.dtype).reshape(shape) * t
        return x + (f.unit_roundoff * jnp.abs(x) + _eta(f)) * t

    # Not traceable: scans are unrolled, so each iteration's roundings get their own noise.
    return Semantics(
        "transform:relax_rounding",
        rules={lax.reduce_precision_p: rp},
        default_rule=bind_rule,
        is_abstract=is_traced,
        recurse=True,
        traceable=False,
    )


@dataclasses.dataclass(frozen=True)
class Relaxed:
    """A graph with its roundings replaced by noise inputs (see `relax_rounding`).

    Attributes:
      graph: the graph (with `reduce_precision` equations).
      n: number of noise entries (one per rounded element and execution).
      formats: per noise entry block, ``(size, tljax.interpret.Format)`` in evaluation order.
    """

    graph: Graph
    n: int
    formats: tuple

    def __call__(self, leaves, t, *, scales=None, sites: bool = False):
        """Outputs of the graph at `leaves` with noise `t` (and the site values if `sites`)."""
        jaxpr, consts = compat.open_jaxpr(self.graph.closed_jaxpr)
        counter, found = [0], []
        outs = eval_jaxpr(_relax_semantics(t, scales, counter, found), jaxpr, consts, list(leaves))
        return (outs, [v for v, _ in found]) if sites else outs

    def error_scales(self, site_magnitudes: np.ndarray) -> np.ndarray:
        """Per-entry error bounds ``u*M + eta`` from bounds `M` of |site values| (flat, in
        order)."""
        u = (
            np.concatenate([np.full(size, f.unit_roundoff) for size, f in self.formats])
            if self.formats
            else np.zeros(0)
        )
        eta = (
            np.concatenate([np.full(size, _eta(f)) for size, f in self.formats])
            if self.formats
            else np.zeros(0)
        )
        e = u * np.asarray(site_magnitudes, np.float64) + eta
        return (e * (1 + 2.0**-20)).astype(np.float32)  # float32 storage must not round e down

    def overflow(self) -> np.ndarray:
        """Per-entry magnitude from which the rounding gives infinity."""
        return (
            np.concatenate([np.full(size, f.overflow_threshold) for size, f in self.formats])
            if self.formats
            else np.zeros(0)
        )


def relax_rounding(graph: Graph) -> Relaxed:
    """The graph with each `reduce_precision` replaced by noise (sound for round-to-nearest).

    For every input and every execution there is a noise vector `t` in [-1, 1]^n with which the
    relaxed graph reproduces the rounded program exactly (error of RNE to p bits <= u|v| + eta,
    u = 2^-p), as long as no rounding overflows. So bounds of the relaxed graph over
    (box) x [-1, 1]^n contain the lowered program's values. Scans are unrolled.
    """
    jaxpr, consts = compat.open_jaxpr(graph.closed_jaxpr)
    counter, found = [0], []
    jax.make_jaxpr(
        lambda *a: eval_jaxpr(_relax_semantics(None, None, counter, found), jaxpr, consts, list(a))
    )(*[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in graph.in_avals])
    formats = tuple((int(np.prod(v.shape)), f) for v, f in found)
    return Relaxed(graph, counter[0], formats)


def has_rounding(graph: Graph) -> bool:
    return lax.reduce_precision_p in graph.primitives()
