"""Structural passes: inlining, dead-code elimination, common-subexpression elimination and
constant folding. Each is a small rule table over the one walker (see `_build`)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from jax import lax

from ..core import HIGHER_ORDER, Graph, compat, eval_eqn
from ..interpret import get_semantics
from ._build import (
    at,
    bind_rule,
    emit_constant,
    is_traced,
    kernel_p,
    pass_semantics,
    recursing_prims,
    rewrite,
    single,
)
from ._promises import Promise

compat.register_exclusion(__file__)

# Sub-jaxprs that run once on the equation's own operands (jit, closed_call, custom_jvp/vjp, remat).
_CALL_ROLES = ("call", "remat")


def _call_body(eqn):
    """The open body of a call-like equation, or None for any other equation."""
    subs = [s for s in compat.sub_jaxprs(eqn) if s.role in _CALL_ROLES]
    return subs[0].jaxpr if subs else None


def _check_graph(graph, what: str) -> Graph:
    if not isinstance(graph, Graph):
        raise TypeError(
            f"tljax.transforms.{what} expects a tljax.Graph, got {type(graph).__name__}; "
            "make one with tljax.trace(fn, *example_args)"
        )
    return graph


# ----------------------------------------------------------------------------------------------
# Inline


def inline(graph: Graph, *, kernels: bool = False) -> Graph:
    """Inlines every call-like equation (jit, custom_jvp/vjp wrappers, closed_call, remat).

    Loops (`scan`, `while`) and `cond` with a traced index stay; calls inside their bodies are
    inlined too. Custom derivative rules of inlined `custom_jvp`/`custom_vjp` functions are lost
    (differentiating the flat graph differentiates the primal code). `tljax.kernel` equations are
    kept unless `kernels=True`, which replaces each by its reference jaxpr.

    Promise: exact and bitwise (eager): the same equations run on the same values. With inlined
    kernels only exact: tljax semantics read the reference either way, but execution now runs
    the reference instead of the kernel's implementation.

    Example:
      >>> flat = tljax.transforms.inline(tljax.trace(lambda x: jax.nn.relu(x), x))
      >>> flat.census()
      Counter({'max': 1})
    """
    _check_graph(graph, "inline")
    kp = kernel_p()
    stats = {}
    rules = {}
    if kernels and kp is not None:
        stats["kernels_inlined"] = 0

        def walk_kernel(ctx, *invals, **params):
            stats["kernels_inlined"] += 1
            return HIGHER_ORDER[kp](ctx, list(invals))

        rules[kp] = walk_kernel

    def claim(st):
        if st.get("kernels_inlined"):
            return Promise(
                exact=True, note=f"{st['kernels_inlined']} kernel(s) replaced by their reference"
            )
        return Promise.exact_and_bitwise()

    sem = pass_semantics("inline", rules=rules)
    return rewrite(graph, sem, name="inline", claim=claim, stats=stats)


# ----------------------------------------------------------------------------------------------
# Dead-code elimination


class _Dead:
    """Placeholder for the output of an equation that nothing live reads."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<dead>"


_DEAD = _Dead()


def _mark_live(jaxpr, live_out, live_ids: set) -> list[bool]:
    """Marks live equations (by id) of `jaxpr` given which outputs are live; returns invar liveness.

    Liveness flows into call bodies per output; loop and cond bodies are kept whole (all their
    outputs live). An equation reached from several call sites is live if live at any of them.
    """
    live_vars: set = set()
    for v, flag in zip(jaxpr.outvars, live_out, strict=True):
        if flag and not compat.is_literal(v):
            live_vars.add(v)
    for eqn in reversed(jaxpr.eqns):
        outs_live = [(not compat.is_dropvar(v)) and v in live_vars for v in eqn.outvars]
        if not any(outs_live) and not eqn.effects:
            continue
        live_ids.add(id(eqn))
        sub = _call_body(eqn)
        if sub is not None:
            if len(sub.invars) == len(eqn.invars) and len(sub.outvars) == len(eqn.outvars):
                ins_live = _mark_live(
                    sub, outs_live if not eqn.effects else [True] * len(outs_live), live_ids
                )
            else:  # unexpected layout: keep everything
                _mark_live(sub, [True] * len(sub.outvars), live_ids)
                ins_live = [True] * len(eqn.invars)
        else:
            for sub in _loop_bodies(eqn):
                _mark_live(sub, [True] * len(sub.outvars), live_ids)
            ins_live = [True] * len(eqn.invars)
        for v, flag in zip(eqn.invars, ins_live, strict=True):
            if flag and not compat.is_literal(v):
                live_vars.add(v)
    return [v in live_vars for v in jaxpr.invars]


def _loop_bodies(eqn):
    return [s.jaxpr for s in compat.sub_jaxprs(eqn)] if eqn.primitive in HIGHER_ORDER else []


def dce(graph: Graph) -> Graph:
    """Removes equations whose results no output depends on (dead-code elimination).

    Equations with effects (e.g. `debug_print`) are kept. Liveness follows values through call
    bodies (which are inlined); inside loop and cond bodies every body output counts as live. The
    graph's inputs are kept even when unused (the signature does not change); constants that no
    live equation reads disappear.

    Promise: exact and bitwise (eager).
    """
    _check_graph(graph, "dce")
    live_ids: set = set()
    _mark_live(graph.jaxpr, [True] * len(graph.jaxpr.outvars), live_ids)
    stats = {"removed": 0}

    def dead_or(fn):
        def rule(ctx, *invals, **params):
            if id(ctx.eqn) not in live_ids and not ctx.eqn.effects:
                stats["removed"] += 1
                return [_DEAD] * len(ctx.eqn.outvars) if ctx.primitive.multiple_results else _DEAD
            return fn(ctx, *invals, **params)

        return rule

    rules = {
        p: dead_or(lambda ctx, *invals, _p=p, **params: HIGHER_ORDER[_p](ctx, list(invals)))
        for p in recursing_prims()
    }
    sem = pass_semantics("dce", rules=rules, default_rule=dead_or(bind_rule))
    return rewrite(graph, sem, name="dce", claim=Promise.exact_and_bitwise(), stats=stats)


# ----------------------------------------------------------------------------------------------
# Common-subexpression elimination


def _freeze(x):
    """A hashable stand-in for a param value (raises TypeError when there is none)."""
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
    if isinstance(x, list | tuple):
        return (type(x).__name__, tuple(_freeze(v) for v in x))
    if isinstance(x, np.ndarray):
        return ("nd", x.dtype.str, x.shape, x.tobytes())
    hash(x)
    return x


_SMALL = 64  # concrete operands up to this size are compared by value, larger ones by identity


def _operand_key(v):
    if is_traced(v):
        return ("t", id(v))
    a = np.asarray(v)
    if a.size <= _SMALL:
        return ("v", a.dtype.str, a.shape, a.tobytes())
    return ("o", id(v))


def cse(graph: Graph) -> Graph:
    """Merges equations with the same primitive, params and operands (common subexpressions).

    Operands are the same when they are the same value of the graph, or equal small constants
    (literals are compared by value). Equations with effects are never merged. Calls are inlined,
    so subexpressions are found across function boundaries; inside loop bodies merging happens
    within each body.

    Promise: exact and bitwise (eager): a pure equation gives the same result on the same operands.
    """
    _check_graph(graph, "cse")
    table: dict = {}
    keep: list = []  # holds operands alive, so ids in keys are never reused during the pass
    stats = {"merged": 0}

    def rule(ctx, *invals, **params):
        if ctx.eqn.effects:
            return bind_rule(ctx, *invals)
        try:
            key = (ctx.primitive, _freeze(params), tuple(_operand_key(v) for v in invals))
            hash(key)
        except TypeError:
            return bind_rule(ctx, *invals)
        hit = table.get(key)
        if hit is not None:
            stats["merged"] += 1
            return hit
        out = bind_rule(ctx, *invals)
        table[key] = out
        keep.append(invals)
        return out

    sem = pass_semantics("cse", default_rule=rule)
    return rewrite(graph, sem, name="cse", claim=Promise.exact_and_bitwise(), stats=stats)


# ----------------------------------------------------------------------------------------------
# Constant folding

# Equations that move, select or compare values, or map float values to float values exactly:
# folding them never changes a real value.
_EXACT_OPS = frozenset(
    compat.primitives_by_name(
        "reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice",
        "dynamic_slice", "dynamic_update_slice", "gather", "concatenate", "pad", "rev",
        "select_n", "copy", "stop_gradient", "neg", "abs", "max", "min", "clamp",
        "sign", "floor", "ceil", "round", "eq", "ne", "lt", "le", "gt", "ge", "iota",
        "reduce_max", "reduce_min", "argmax", "argmin", "is_finite", "sort", "stack",
        "unstack",
    )
)  # fmt: skip

_VERIFY_LIMIT = 4096  # larger folded results are not checked with the exact semantics


def _is_float(aval) -> bool:
    return np.issubdtype(np.dtype(aval.dtype), np.inexact)


def _folds_exactly(eqn, invals, outs) -> bool:
    """Whether the folded float results equal the exact real results of the equation."""
    if eqn.primitive in _EXACT_OPS:
        return True
    if eqn.primitive is lax.convert_element_type_p:
        src, dst = eqn.invars[0].aval.dtype, eqn.outvars[0].aval.dtype
        if (
            np.issubdtype(dst, np.inexact)
            and np.dtype(dst).itemsize >= np.dtype(src).itemsize
            and np.issubdtype(src, np.inexact)
        ):
            return True
    if not any(_is_float(v.aval) for v in eqn.outvars):
        return True  # integer and bool arithmetic: the exact semantics wraps around like XLA
    if sum(int(np.prod(v.aval.shape)) for v in eqn.outvars) > _VERIFY_LIMIT:
        return False
    ex = get_semantics("exact")
    try:
        vals = [
            ex.lift(np.asarray(v), a)
            for v, a in zip(invals, [x.aval for x in eqn.invars], strict=True)
        ]
        res = eval_eqn(ex, eqn, vals)
        fins = [ex.finalize(r, v.aval) for r, v in zip(res, eqn.outvars, strict=True)]
    except Exception:  # noqa: BLE001 - no exact rule / domain error: treat as inexact
        return False
    for fin, o in zip(fins, outs, strict=True):
        if type(fin).__name__ == "Enclosure":
            return False
        got = np.asarray(o)
        for e, g in zip(np.asarray(fin, dtype=object).flat, got.flat, strict=True):
            g = float(g) if np.issubdtype(got.dtype, np.inexact) else int(g)
            if isinstance(g, float) and not np.isfinite(g):
                return False
            if Fraction(e) != Fraction(g):
                return False
    return True


def fold_constant(ctx, invals, stats: dict, *, max_size: int | None = None) -> list | None:
    """`emit_constant`, counting folds in `stats["folded"]` and listing the folds that change a
    real value in `stats["inexact"]` (checked with the exact semantics)."""
    outs = emit_constant(ctx, invals, max_size=max_size)
    if outs is None:
        return None
    stats["folded"] = stats.get("folded", 0) + 1
    if not _folds_exactly(ctx.eqn, invals, outs):
        stats.setdefault("inexact", []).append(
            f"{ctx.primitive.name} {compat.source_line(ctx.eqn)}"
        )
    return outs


def constant_fold(graph: Graph, *, max_size: int = 1 << 16) -> Graph:
    """Evaluates equations whose operands are all constants (with JAX, eagerly) into constants.

    Also resolves a `cond` whose index is constant and evaluates a whole `scan`/`while` whose
    operands are constants. Equations with effects, and results with more than `max_size`
    elements (a broadcast would store a large constant), are kept.

    Promise: bitwise (eager): JAX computes each folded value exactly as the original's equation
    would. Exact too when every folded float result equals its real value (structural ops,
    selections, comparisons, integer ops, and float arithmetic that the `exact` semantics checks
    to be exact); otherwise (e.g. a folded `rsqrt(var + eps)`) the real meaning moves by the
    rounding of the folded constants, and the claim is a rounding-level tolerance
    (`ROUNDING_TOLERANCE`). `stats["inexact"]` lists those equations.

    Args:
      graph: the graph.
      max_size: largest folded result (elements) to store as a constant.
    """
    _check_graph(graph, "constant_fold")
    stats: dict = {"folded": 0, "inexact": []}

    def fold(ctx, invals):
        return fold_constant(ctx, invals, stats, max_size=max_size)

    def rule(ctx, *invals, **params):
        outs = fold(ctx, invals)
        return bind_rule(ctx, *invals) if outs is None else single(ctx, outs)

    def higher(p):
        def r(ctx, *invals, **params):
            outs = fold(ctx, invals)
            return HIGHER_ORDER[p](ctx, list(invals)) if outs is None else outs

        return r

    sem = pass_semantics(
        "constant_fold", rules={p: higher(p) for p in recursing_prims()}, default_rule=rule
    )

    def claim(st):
        if not st["inexact"]:
            return Promise.exact_and_bitwise()
        a, r = ROUNDING_TOLERANCE
        return Promise(
            bitwise=True, atol=a, rtol=r,
            note=f"{len(st['inexact'])} folded equation(s) round their real value",
        )  # fmt: skip

    out = rewrite(graph, sem, name="constant_fold", claim=claim, stats=stats)
    return out


ROUNDING_TOLERANCE = (2.0**-16, 2.0**-16)
"""(atol, rtol) promised by passes that round constants to float32 (constant folding of inexact
ops, affine folding): a rounding-level budget, about 2^8 float32 roundings relative to the output
(and to 1 near zero). It is a stated engineering bound, not derived per graph; the certified
deviation that `validate` computes over a box is the rigorous figure."""


# ----------------------------------------------------------------------------------------------
# Unrolling


def unroll(graph: Graph, *, max_length: int = 1024) -> Graph:
    """Unrolls every `scan` with at most `max_length` steps into straight-line equations.

    Step `i` reads ``x[i]`` with `slice`/`squeeze`, runs the body (inlined), and the stacked
    outputs are built with `broadcast_in_dim` + `concatenate`, primitives every tljax semantics
    and the bound recorder know. `reverse=True` scans run their steps backwards. Longer scans,
    `while` loops and `cond`s stay (calls inside them are inlined).

    Promise: exact. Not bitwise: XLA compiles a rolled loop body as one computation (it may fuse or
    contract ``a*b+c`` to an FMA there), while unrolled equations run one by one.
    """
    _check_graph(graph, "unroll")
    stats = {"unrolled": 0, "steps": 0}

    def scan_rule(ctx, *invals, **params):
        length, reverse = int(params["length"]), bool(params["reverse"])
        if length > max_length:
            return HIGHER_ORDER[compat.scan_p](ctx, list(invals))
        n_consts, n_carry = compat.scan_layout(params)
        consts = invals[:n_consts]
        carry = list(invals[n_consts : n_consts + n_carry])
        xs = invals[n_consts + n_carry :]
        sub = compat.sub_jaxpr(ctx.eqn, "body")
        body, body_consts = sub.jaxpr, sub.consts
        y_avals = [v.aval for v in ctx.eqn.outvars[n_carry:]]
        ys: list[list] = [[] for _ in y_avals]
        stats["unrolled"] += 1
        with at(ctx.eqn):
            for i in range(length - 1, -1, -1) if reverse else range(length):
                x_i = [lax.index_in_dim(x, i, keepdims=False) for x in xs]
                out = ctx.walk(body, body_consts, [*consts, *carry, *x_i], label=f"scan[step {i}]")
                carry = out[:n_carry]
                for acc, y in zip(ys, out[n_carry:], strict=True):
                    acc.append(y)
                stats["steps"] += 1
            stacked = []
            for acc, a in zip(ys, y_avals, strict=True):
                if reverse:
                    acc.reverse()
                if not acc:
                    stacked.append(np.zeros(a.shape, a.dtype))
                else:
                    stacked.append(lax.concatenate([lax.expand_dims(y, (0,)) for y in acc], 0))
        return [*carry, *stacked]

    sem = pass_semantics("unroll", rules={compat.scan_p: scan_rule})
    claim = Promise(exact=True, note="scans unrolled")
    return rewrite(graph, sem, name="unroll", claim=claim, stats=stats)
