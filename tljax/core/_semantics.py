"""A semantics is data: a rule table keyed by primitive plus a few hooks. The walker does the
rest."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np


def _identity_lift(value, aval):
    del aval
    return value


def _never_abstract(value) -> bool:
    del value
    return False


@dataclasses.dataclass(frozen=True)
class Semantics:
    """One meaning of a jaxpr.

    Attributes:
      name: short name used in errors and tables (``"exact"``, ``"float[bf16]"``, ``"interval"``).
      rules: ``{Primitive: rule}``; a rule is ``rule(ctx, *invals, **params) -> value | list``.
      lift: turns a concrete array (literal, closed-over constant) into a value of this semantics;
        ``lift(array, aval)``.
      is_abstract: whether a value carries the semantics (an interval, an exact array, ...) as
        opposed to a plain concrete array; only used with ``concrete_passthrough``.
      concrete_passthrough: equations whose inputs are all concrete are bound with JAX directly
        (index arithmetic and constant folding need no rules).
      default_rule: used for first-order primitives without a table entry (reference semantics).
      recurse: recurse into higher-order primitives (jit, cond, scan, ...). When False they go to
        the table / default rule like any other primitive.
      traceable: values are plain JAX arrays and rules are JAX code, so the walker re-binds
        cond/scan/while with interpreted bodies (keeps loops rolled under jit).
      call_rules: ``{function name: rule}`` for call-like equations (jit, custom_jvp_call, ...)
        that the semantics wants to handle as one unit, e.g. ``"relu"``.
      to_concrete: the value as a numpy array if it is concrete (cond index, while predicate),
        else None.
      join: ``join(list of output lists) -> output list``, to merge the branches of a `cond` whose
        index is not concrete; None means such a cond is an error.
      branch_indices: ``branch_indices(index_value, n_branches) -> list[int]`` of branches a
        non-concrete index can take.
      options: semantics-specific configuration (float format, precision, ...), read by rules.
      lift_input: converts a user input leaf (with its aval) at the boundary; default `lift`.
      finalize: converts an output value (with its aval) for the user; default identity.
      host_rules: with ``concrete_passthrough``, rules that compute an all-concrete equation on
        the host instead of binding it with JAX (which compiles a kernel per primitive and shape);
        only for primitives whose host result is XLA's bit for bit.
    """

    name: str
    rules: Mapping[Any, Callable] = dataclasses.field(default_factory=dict)
    lift: Callable[[Any, Any], Any] = _identity_lift
    is_abstract: Callable[[Any], bool] = _never_abstract
    concrete_passthrough: bool = False
    default_rule: Callable | None = None
    recurse: bool = True
    traceable: bool = False
    call_rules: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
    to_concrete: Callable[[Any], np.ndarray | None] | None = None
    join: Callable[[list], list] | None = None
    branch_indices: Callable[[Any, int], list] | None = None
    options: Any = None
    lift_input: Callable[[Any, Any], Any] | None = None
    finalize: Callable[[Any, Any], Any] | None = None
    host_rules: Mapping[Any, Callable] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "rules", MappingProxyType(dict(self.rules)))
        object.__setattr__(self, "host_rules", MappingProxyType(dict(self.host_rules)))
        object.__setattr__(self, "call_rules", MappingProxyType(dict(self.call_rules)))

    def derive(
        self, *, name: str | None = None, rules: Mapping | None = None, **changes
    ) -> Semantics:
        """A variant: `rules` are merged over this table, other fields replaced."""
        new_rules = dict(self.rules)
        if rules:
            new_rules.update(rules)
        return dataclasses.replace(self, name=name or self.name, rules=new_rules, **changes)

    def concrete(self, value) -> np.ndarray | None:
        """The value as a concrete numpy array, or None when it is abstract or traced."""
        if self.to_concrete is not None:
            return self.to_concrete(value)
        if self.is_abstract(value):
            return None
        try:
            return np.asarray(value)
        except Exception:  # noqa: BLE001 - tracers cannot be made concrete
            return None

    def __repr__(self) -> str:
        return f"Semantics({self.name!r}, {len(self.rules)} rules)"
