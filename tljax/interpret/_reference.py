"""The reference semantics: re-bind every primitive, exactly what JAX/XLA computes."""

from __future__ import annotations

from ..core import Semantics, bind


def _bind_rule(ctx, *invals, **params):
    del params
    out = bind(ctx.eqn, invals)
    return out if ctx.primitive.multiple_results else out[0]


reference = Semantics(
    "reference",
    default_rule=_bind_rule,
    recurse=False,  # a jit/scan/cond is bound whole, as eager JAX runs it
    traceable=True,
)
