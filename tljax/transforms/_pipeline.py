"""Running several passes in order."""

from __future__ import annotations

from collections.abc import Callable

from ..core import Graph, InputError
from ._fold import fold_affine
from ._passes import constant_fold, cse, dce, inline, unroll
from ._precision import lower_precision
from ._roundtrip import export_roundtrip

PASSES: dict[str, Callable[[Graph], Graph]] = {
    "inline": inline,
    "dce": dce,
    "cse": cse,
    "constant_fold": constant_fold,
    "fold_affine": fold_affine,
    "unroll": unroll,
    "lower_precision": lower_precision,
    "export_roundtrip": export_roundtrip,
}
"""Passes by name (`apply` accepts these names or any `Graph -> Graph` function)."""

SIMPLIFY = ("inline", "dce", "constant_fold", "cse", "fold_affine", "dce")
"""A pipeline that flattens, cleans and folds a model for verification."""


def apply(graph: Graph, *passes) -> Graph:
    """Runs `passes` (names from `PASSES` or functions `Graph -> Graph`) in order.

    Every intermediate graph records its pass, so `validate(graph, result)` checks the composed
    claim of the whole chain.

    Example:
      >>> flat = tljax.transforms.apply(g, *tljax.transforms.SIMPLIFY)
      >>> flat = tljax.transforms.apply(g, "inline", functools.partial(lower_precision, fmt="fp16"))
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"tljax.transforms.apply expects a tljax.Graph, got {type(graph).__name__}")
    for p in passes or SIMPLIFY:
        fn = PASSES.get(p) if isinstance(p, str) else p
        if fn is None or not callable(fn):
            raise InputError(
                f"unknown pass {p!r}; known: {sorted(PASSES)} or a function Graph -> Graph"
            )
        graph = fn(graph)
    return graph
