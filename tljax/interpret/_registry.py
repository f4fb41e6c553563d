"""Semantics by name, `evaluate`, and `register_rule`."""

from __future__ import annotations

import re
from collections.abc import Callable

from ..core import (
    HIGHER_ORDER,
    Graph,
    InputError,
    Semantics,
    ShapeMismatchError,
    TljaxError,
    compat,
    eval_closed,
    iter_eqns,
    trace,
)

compat.register_exclusion(__file__)

_NAMED: dict[str, Semantics] = {}
_FACTORIES: list[tuple[re.Pattern, Callable[[re.Match], Semantics]]] = []


def register_semantics(sem: Semantics) -> Semantics:
    """Makes `sem` available by its name to `evaluate`, `compare` and `register_rule`."""
    _NAMED[sem.name] = sem
    return sem


def register_semantics_factory(pattern: str, factory: Callable[[re.Match], Semantics]) -> None:
    """Names matching `pattern` (a regex, e.g. ``r"float\\[(.+)\\]"``) are built by `factory`."""
    _FACTORIES.append((re.compile(pattern), factory))


def _load_builtin():
    # Importing the modules registers their semantics.
    from . import _reference  # noqa: F401

    for mod in ("_exact", "_float", "_symbolic"):
        try:
            __import__(f"{__package__}.{mod}")
        except ModuleNotFoundError as err:
            if not err.name or not err.name.endswith(mod):
                raise


def get_semantics(semantics: str | Semantics) -> Semantics:
    """Resolves a name (``"reference"``, ``"exact"``, ``"float[bf16]"``, ...) to a `Semantics`."""
    if isinstance(semantics, Semantics):
        return semantics
    if not isinstance(semantics, str):
        raise InputError(f"semantics must be a name or a Semantics, got {type(semantics).__name__}")
    _load_builtin()
    if semantics in _NAMED:
        return _NAMED[semantics]
    for pat, factory in _FACTORIES:
        m = pat.fullmatch(semantics)
        if m:
            sem = factory(m)
            _NAMED[semantics] = sem
            return sem
    raise InputError(
        f"unknown semantics {semantics!r}; known: {sorted(_NAMED)} and patterns "
        f"{[p.pattern for p, _ in _FACTORIES]}"
    )


def register_rule(semantics: str, primitive) -> Callable:
    """Decorator adding a rule ``rule(ctx, *invals, **params)`` to a named semantics' table.

    Example:
      >>> @tljax.register_rule("exact", jax.lax.sin_p)
      ... def _sin(ctx, x, *, accuracy): ...
    """

    def deco(rule):
        sem = get_semantics(semantics)
        _NAMED[sem.name] = sem.derive(rules={primitive: rule})
        return rule

    return deco


def run(graph: Graph, sem: Semantics, leaves: list) -> list:
    """Evaluates a graph's flat input leaves under `sem`; returns flat finalized outputs."""
    if not sem.traceable:
        _refuse_tracers(graph, sem, leaves)
    lift_in = sem.lift_input or sem.lift
    vals = []
    for k, (x, a) in enumerate(zip(leaves, graph.in_avals, strict=True)):
        try:
            vals.append(lift_in(x, a))
        except InputError as err:  # say which leaf: lift_input only sees the value
            what = a.str_short() if hasattr(a, "str_short") else str(a)
            raise InputError(f"input leaf {k} ({what}) of {graph.name!r}: {err}") from err
    out = eval_closed(sem, graph.closed_jaxpr, vals)
    if sem.finalize is not None:
        out = [sem.finalize(v, a) for v, a in zip(out, graph.out_avals, strict=True)]
    return out


def _refuse_tracers(graph: Graph, sem: Semantics, leaves) -> None:
    """A host-side semantics (exact, symbolic) needs every value concrete: inputs, and the
    constants the function closed over (a value of an enclosing `jax.jit` is a tracer there)."""
    import jax

    where = [f"input leaf {k}" for k, x in enumerate(leaves) if isinstance(x, jax.core.Tracer)]
    where += [
        f"a closed-over constant ({c.aval.str_short()})"
        for c in graph.consts
        if isinstance(c, jax.core.Tracer)
    ]
    if where:
        raise InputError(
            f"tljax.evaluate(..., semantics={sem.name!r}) of {graph.name!r} got traced values "
            f"({', '.join(where)}): it runs under jax.jit/vmap/grad, but the {sem.name} semantics "
            "computes on the host with exact numbers and cannot be traced. Call it outside jax.jit "
            "(outside the transformed function), on concrete arrays (pass the closed-over "
            "value as an input), or use semantics='reference' / 'float[...]' (traceable)."
        )


def _trace_inputs(fn, inputs) -> Graph:
    try:
        return trace(fn, *inputs)
    except TljaxError:
        raise
    except (TypeError, ValueError, IndexError, KeyError) as err:
        import jax

        leaves = jax.tree_util.tree_leaves(inputs)
        shown = ", ".join(f"{type(x).__name__}{list(getattr(x, 'shape', ()))}" for x in leaves)
        name = getattr(fn, "__name__", type(fn).__name__)
        raise InputError(
            f"tljax.evaluate: tracing {name!r} on the given inputs ({shown}) failed with "
            f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}. Pass arrays (pytrees of "
            "arrays) of the shapes the function takes, and return arrays from it; if the inputs "
            "are right, the error is in the function itself (see the cause above)."
        ) from err


def evaluate(fn, *inputs, semantics: str | Semantics = "exact"):
    """Evaluates `fn(*inputs)` under a semantics; the output keeps `fn`'s pytree structure.

    Args:
      fn: a function, module or `Graph`.
      *inputs: the inputs (a `Graph` must get inputs shaped like its example).
      semantics: ``"reference"``, ``"exact"``, ``"float[bf16]"`` (any float format), or a
        configured `Semantics`.

    Returns:
      The outputs in the structure `fn` returns; their type depends on the semantics (arrays for
      reference/float, `tljax.interpret.ExactArray` results for exact).

    Example:
      >>> tljax.evaluate(lambda x: x * 3.0, jnp.float32(0.1), semantics="exact")
    """
    sem = get_semantics(semantics)
    graph = fn if isinstance(fn, Graph) else _trace_inputs(fn, inputs)
    try:
        leaves = graph.flatten_inputs(*inputs)
    except ShapeMismatchError as err:
        want = ", ".join(a.str_short() for a in graph.in_avals)
        raise ShapeMismatchError(
            f"tljax.evaluate: {err}\n  Pass inputs shaped like the example the Graph was traced "
            f"with ({want}), or trace the function again for the new shapes (tljax.trace(fn, x))."
        ) from err
    return graph.unflatten_outputs(run(graph, sem, leaves))


def coverage(fn=None, *example, semantics=("reference", "exact", "float[bf16]", "symbolic")) -> str:
    """Which primitives each semantics has a rule for, as a table.

    With `fn` (and example inputs), lists the primitives of that program's graph (from
    `Graph.census()`); without, the union of every listed semantics' table. A semantics with a
    default rule (reference) covers everything; higher-order primitives are recursed into by the
    walker and are always covered.

    Example:
      >>> print(tljax.interpret.coverage(model, x))
    """
    sems = [get_semantics(s) for s in semantics]
    if fn is not None:
        graph = fn if isinstance(fn, Graph) else trace(fn, *example)
        names = sorted(graph.census())
        prims = {e.primitive.name: e.primitive for e in iter_eqns(graph.jaxpr)}
    else:
        prims = {}
        for s in sems:
            prims.update({p.name: p for p in s.rules})
        names = sorted(prims)
    width = max([len(n) for n in names] + [9])
    lines = ["primitive".ljust(width) + "  " + "  ".join(s.name[:14].ljust(14) for s in sems)]
    missing = 0
    for n in names:
        p = prims[n]
        cells = []
        for s in sems:
            if p in s.rules:
                cells.append("rule")
            elif p in HIGHER_ORDER and s.recurse:
                cells.append("recursed")
            elif s.default_rule is not None:
                cells.append("default")
            else:
                cells.append("MISSING")
                missing += 1
        lines.append(n.ljust(width) + "  " + "  ".join(c.ljust(14) for c in cells))
    lines.append(f"{len(names)} primitives, {missing} missing rules")
    return "\n".join(lines)
