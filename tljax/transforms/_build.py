"""Building graphs by re-emission: a pass is a semantics whose values are tracers.

`rewrite(graph, sem, ...)` evaluates the graph with the ONE walker (`tljax.core.eval_jaxpr`)
under `sem` while `jax.make_jaxpr` traces the evaluation. A rule that re-binds its primitive
re-emits the equation; a rule may instead emit other primitives, return a concrete array (the
value becomes a constant), reuse an earlier value (CSE) or return a placeholder that nothing reads
(DCE). The walker inlines call-like primitives (jit, custom_jvp/vjp, closed_call, remat) and,
since pass semantics are traceable, re-binds `cond`/`scan`/`while` with interpreted bodies, so
every pass also applies inside loop bodies. Each equation is re-emitted under its original
source location and name stack, so the new graph keeps layer names and error locations.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import jax
import numpy as np
from jax.extend import source_info_util

from ..core import (
    HIGHER_ORDER,
    Context,
    Graph,
    Semantics,
    TljaxError,
    bind,
    compat,
    eval_jaxpr,
    iter_eqns,
)
from ..core import kernel_p as _kernel_p
from ._promises import Promise
from ._provenance import PassRecord, record_pass

compat.register_exclusion(__file__)


def is_traced(v) -> bool:
    """Whether a value is a tracer of the graph being built (as opposed to a concrete array)."""
    return isinstance(v, jax.core.Tracer)


def at(eqn):
    """Context manager: equations bound inside get `eqn`'s source location and name stack."""
    si = getattr(eqn, "source_info", None)
    if si is None:
        return contextlib.nullcontext()
    try:
        return source_info_util.user_context(si.traceback, name_stack=si.name_stack)
    except Exception:  # noqa: BLE001 - location is best effort, never a new failure
        return contextlib.nullcontext()


def emit(ctx: Context, invals, *, prim=None, params=None) -> list:
    """Re-binds the equation of `ctx` (or `prim` with `params`) on `invals`; returns a list."""
    with at(ctx.eqn):
        if prim is None and params is None:
            return bind(ctx.eqn, list(invals))
        prim = prim or ctx.primitive
        p = dict(ctx.eqn.params if params is None else params)
        out = prim.bind(*invals, **compat.bind_params(prim, p))
        return list(out) if prim.multiple_results else [out]


def emit_constant(ctx: Context, invals, *, max_size: int | None = None) -> list | None:
    """The equation evaluated now, by JAX, when no operand is traced: its outputs become
    constants of the new graph. None (emit it instead) for traced operands, effects, or an output
    with more than `max_size` elements."""
    if ctx.eqn.effects or any(is_traced(v) for v in invals):
        return None
    if max_size is not None and any(int(np.prod(v.aval.shape)) > max_size for v in ctx.eqn.outvars):
        return None
    with jax.ensure_compile_time_eval():
        return emit(ctx, invals)


def single(ctx: Context, outs: list):
    """A rule's return value from a list of outputs."""
    return outs if ctx.primitive.multiple_results else outs[0]


def bind_rule(ctx: Context, *invals, **params):
    """The identity pass rule: re-emit the equation unchanged."""
    del params
    return single(ctx, emit(ctx, invals))


def count_eqns(graph_or_jaxpr) -> int:
    jaxpr = graph_or_jaxpr.jaxpr if isinstance(graph_or_jaxpr, Graph) else graph_or_jaxpr
    return sum(1 for _ in iter_eqns(jaxpr))


def _aval_struct(a):
    return jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=bool(getattr(a, "weak_type", False)))


def kernel_p():
    """The `tljax.kernel` primitive (kept a function for the passes that call it)."""
    return _kernel_p


def recursing_prims() -> list:
    """The higher-order primitives a pass recurses into: calls and loops, not kernels."""
    kp = kernel_p()
    return [p for p in HIGHER_ORDER if p is not kp]


def pass_semantics(
    name: str, *, rules=None, default_rule=bind_rule, lift=None, options=None
) -> Semantics:
    """A traceable semantics for a pass: recursion into calls and loops, tracers as values.

    A `tljax.kernel` equation is an opaque unit for passes: unless `rules` say otherwise it goes
    to `default_rule` like a first-order equation (re-emitted, so the kernel survives).
    """
    kw = {} if lift is None else {"lift": lift}
    rules = dict(rules or {})
    kp = kernel_p()
    if kp is not None:
        rules.setdefault(kp, default_rule)
    return Semantics(
        f"transform:{name}",
        rules=rules,
        default_rule=default_rule,
        is_abstract=is_traced,
        recurse=True,
        traceable=True,
        options=options,
        **kw,
    )


def rebuild(graph: Graph, sem: Semantics, *, name: str, prepare=None, finish=None) -> Graph:
    """The graph that `sem`'s rules emit while the walker evaluates `graph` (no provenance)."""
    jaxpr, consts = compat.open_jaxpr(graph.closed_jaxpr)

    def flat(*leaves):
        vals = (
            list(leaves)
            if prepare is None
            else [prepare(v, a) for v, a in zip(leaves, graph.in_avals, strict=True)]
        )
        outs = eval_jaxpr(sem, jaxpr, consts, vals)
        if finish is not None:
            outs = [finish(o) for o in outs]
        return [_as_output(o, k, name) for k, o in enumerate(outs)]

    closed, _ = compat.make_jaxpr(flat, *[_aval_struct(a) for a in graph.in_avals])
    new_avals = [v.aval for v in compat.open_jaxpr(closed)[0].outvars]
    bad = [
        f"output {k}: {a.str_short()} became {b.str_short()}"
        for k, (a, b) in enumerate(zip(graph.out_avals, new_avals, strict=True))
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype
    ]
    if bad:
        raise TljaxError(
            f"pass {name!r} changed the output signature of {graph.name!r}: "
            + "; ".join(bad)
            + ". This is a bug in the pass; report it with the graph (print(graph))."
        )
    return Graph(
        closed,
        graph.in_tree,
        graph.in_mask,
        graph.static_leaves,
        graph.out_tree,
        name=f"{graph.name}|{name}",
    )


def _as_output(o, k, name):
    if is_traced(o) or isinstance(o, np.ndarray | np.generic | jax.Array):
        return o
    raise TljaxError(
        f"pass {name!r} left a {type(o).__name__} as output {k} of the graph instead of an array; "
        "this is a bug in the pass (its finish step must materialise symbolic values)"
    )


def rewrite(
    graph: Graph,
    sem: Semantics,
    *,
    name: str,
    claim: Promise | Callable[[dict], Promise],
    prepare=None,
    finish=None,
    stats: dict | None = None,
) -> Graph:
    """Runs a pass semantics over `graph` and records the pass in the new graph's provenance.

    Args:
      graph: the input `Graph`.
      sem: the pass semantics (see `pass_semantics`).
      name: the pass name (also appended to the graph name, ``"mlp|cse"``).
      claim: the pass's `Promise`, or a function of the filled-in `stats` returning it (for passes
        whose promise depends on what they did, e.g. constant folding).
      prepare: ``prepare(leaf, aval)`` applied to every input before the walk.
      finish: applied to every output value after the walk.
      stats: a dict the rules fill in while the graph is built; recorded with the pass.

    Returns:
      The new `Graph` (same inputs and output structure).
    """
    stats = {} if stats is None else stats
    t0 = time.perf_counter()
    new = rebuild(graph, sem, name=name, prepare=prepare, finish=finish)
    seconds = time.perf_counter() - t0
    stats = {"eqns_before": count_eqns(graph), "eqns_after": count_eqns(new), **stats}
    c = claim(stats) if callable(claim) else claim
    record_pass(new, graph, PassRecord(name, c, seconds, graph.name, id(graph), stats))
    return new
