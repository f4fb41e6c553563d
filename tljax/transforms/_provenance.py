"""Graph-level metadata of transformations: a side table keyed by the `Graph` object.

`Graph` is a frozen dataclass owned by the core; its identity (``eq=False``) is a stable key, and
a weak table lets graphs be freed as usual.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping
from typing import Any

from ._promises import Promise, compose


@dataclasses.dataclass(frozen=True)
class PassRecord:
    """One pass application.

    Attributes:
      name: the pass (``"cse"``, ``"fold_affine"``, ...).
      claim: what the pass promises.
      seconds: time the pass took.
      input_name: name of the graph it transformed.
      input_id: ``id()`` of that graph (to find where a chain starts).
      stats: pass-specific counts (equations before/after, merged, folded, ...).
    """

    name: str
    claim: Promise
    seconds: float
    input_name: str
    input_id: int
    stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        st = ", ".join(
            f"{k}={len(v) if isinstance(v, list | tuple) else v}" for k, v in self.stats.items()
        )
        return f"{self.name} ({self.seconds * 1e3:.0f} ms; {st}) claims {self.claim.describe()}"


@dataclasses.dataclass(frozen=True)
class Provenance:
    """How a graph was made: the passes (oldest first) and the validations attached to it."""

    passes: tuple[PassRecord, ...] = ()
    validations: tuple = ()

    def claim_since(self, original) -> Promise | None:
        """Composed claim of the passes applied after `original`; None if it is not an ancestor."""
        for k, rec in enumerate(self.passes):
            if rec.input_id == id(original):
                return compose(r.claim for r in self.passes[k:])
        return None

    def passes_since(self, original) -> tuple[PassRecord, ...]:
        for k, rec in enumerate(self.passes):
            if rec.input_id == id(original):
                return self.passes[k:]
        return ()

    def __str__(self) -> str:
        lines = [f"{len(self.passes)} pass(es):"] + [f"  {p}" for p in self.passes]
        lines.append(f"{len(self.validations)} validation(s)")
        for v in self.validations:
            lines.append(f"  {v.verdict}: {v.summary()}")
        return "\n".join(lines)


_TABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def provenance(graph) -> Provenance:
    """The transformation history of `graph` (empty for a graph made by `tljax.trace`).

    Example:
      >>> g2 = tljax.transforms.cse(tljax.transforms.inline(g))
      >>> [p.name for p in tljax.transforms.provenance(g2).passes]
      ['inline', 'cse']
    """
    return _TABLE.get(graph, Provenance())


def record_pass(new_graph, input_graph, rec: PassRecord) -> None:
    """Attaches `rec` to `new_graph`, after the history of `input_graph`."""
    before = provenance(input_graph)
    _TABLE[new_graph] = Provenance(before.passes + (rec,), ())


def attach_validation(graph, validation) -> None:
    p = provenance(graph)
    _TABLE[graph] = dataclasses.replace(p, validations=p.validations + (validation,))
