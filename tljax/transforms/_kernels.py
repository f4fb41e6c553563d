"""Substituting a declared `tljax.kernel` for calls of its reference function."""

from __future__ import annotations

import jax.tree_util as jtu

from ..core import HIGHER_ORDER, Graph, InputError, Kernel, compat
from ._build import at, pass_semantics, rewrite
from ._passes import _check_graph
from ._promises import Promise

compat.register_exclusion(__file__)

_CALLS = compat.CALL_PRIMITIVES


def _signature(jaxpr) -> list:
    """Primitive names and params of a jaxpr's equations, for a structural comparison."""
    inner, _ = compat.open_jaxpr(jaxpr)
    out = []
    for e in inner.eqns:
        sub_params = {s.param for s in compat.sub_jaxprs(e)}
        params = {k: v for k, v in e.params.items() if k not in sub_params}
        subs = [_signature(s.jaxpr) for s in compat.sub_jaxprs(e)]
        out.append(
            (e.primitive.name, repr(sorted(params.items())), subs, [str(v.aval) for v in e.invars])
        )
    return out


def substitute_kernels(graph: Graph, kernels) -> Graph:
    """Replaces calls of a kernel's reference function by the kernel equation.

    A call-like equation (`jax.jit`, closed_call, custom_jvp/vjp) whose function name is a
    kernel's name (or its reference's ``__name__``) and whose operands match the reference's
    signature becomes one `kernel` equation: execution then runs the kernel's implementation for
    the platform, every tljax semantics its reference. Other calls are inlined, as by `inline`.

    Args:
      graph: the graph.
      kernels: a `tljax.kernel` `Kernel`, a list of them, or ``{function name: Kernel}``.

    Returns:
      The new graph; `stats["substituted"]` counts replaced calls and `stats["same_reference"]`
      whether every replaced call's jaxpr is structurally the kernel's reference jaxpr.

    Promise: exact when every replaced call is structurally the reference (the tljax meaning is the
    reference's); floats are not bitwise: the implementation promises its declared tolerance at
    the kernel's outputs (`tljax.core.kernel_contracts(graph)` lists the contracts).
    """
    _check_graph(graph, "substitute_kernels")
    if isinstance(kernels, Kernel):
        kernels = [kernels]
    if isinstance(kernels, dict):
        table = dict(kernels)
    else:
        table = {}
        for k in kernels:
            table[k.name] = k
            table.setdefault(getattr(k.reference, "__name__", k.name), k)
    bad = [k for k in table.values() if not isinstance(k, Kernel)]
    if bad:
        raise InputError(
            f"substitute_kernels expects tljax kernels, got {[type(b).__name__ for b in bad]}"
        )
    stats = {"substituted": 0, "same_reference": True, "kernels": []}

    def call_rule(prim):
        def rule(ctx, *invals, **params):
            k = table.get(compat.call_name(ctx.eqn))
            if k is not None:
                try:
                    ref = k.reference_jaxpr(*invals)
                except Exception:  # noqa: BLE001 - operands do not fit the kernel: keep the call
                    ref = None
                if ref is not None and [str(v.aval) for v in compat.open_jaxpr(ref)[0].outvars] == [
                    str(v.aval) for v in ctx.eqn.outvars
                ]:
                    sub = compat.sub_jaxpr(ctx.eqn, "call").jaxpr
                    stats["same_reference"] &= _signature(sub) == _signature(ref)
                    stats["substituted"] += 1
                    if k.name not in stats["kernels"]:
                        stats["kernels"].append(k.name)
                    with at(ctx.eqn):
                        return jtu.tree_leaves(k(*invals))
            return HIGHER_ORDER[prim](ctx, list(invals))

        return rule

    sem = pass_semantics("substitute_kernels", rules={p: call_rule(p) for p in _CALLS})

    def claim(st):
        n = st["substituted"]
        note = (
            f"{n} call(s) now run kernel(s) {st['kernels']}; implementations meet declared "
            "tolerances (contracts)"
        )
        return Promise(exact=bool(st["same_reference"]), note=note)

    return rewrite(graph, sem, name="substitute_kernels", claim=claim, stats=stats)
