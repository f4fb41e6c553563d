"""Argument checks for the unbatched RL functions (chex-style, every offender listed).

The checks run at trace time on static shapes, so they cost nothing under `jax.jit`. A failure
names the function, each offending argument with its shape, and what to do (usually: call the
function on one trajectory and `jax.vmap` it over the batch).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from tljax.core import ShapeMismatchError

_VMAP_HINT = (
    "these functions are unbatched (rlax convention): pass one trajectory and use jax.vmap for "
    "batches"
)


def _shape(x) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


def check_ranks(where: str, ranks: Mapping[str, tuple[object, int | set[int]]]) -> None:
    """Raises `ShapeMismatchError` listing every argument whose rank is not the expected one.

    Args:
      where: the public function name, used in the message.
      ranks: argument name -> (value, expected rank or set of allowed ranks).
    """
    bad = []
    for name, (value, rank) in ranks.items():
        allowed = {rank} if isinstance(rank, int) else set(rank)
        if jnp.ndim(value) not in allowed:
            want = " or ".join(str(r) for r in sorted(allowed))
            bad.append(
                f"`{name}` has shape {_shape(value)} (rank {jnp.ndim(value)}), expected rank {want}"
            )
    if bad:
        raise ShapeMismatchError(f"{where}: " + "; ".join(bad) + f". Fix: {_VMAP_HINT}.")


def check_equal_shapes(where: str, named: Mapping[str, object]) -> None:
    """Raises `ShapeMismatchError` when the named arguments do not all have the same shape."""
    shapes = {name: _shape(v) for name, v in named.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"`{n}` {s}" for n, s in shapes.items())
        raise ShapeMismatchError(
            f"{where}: arguments must have equal shapes, got {listing}. "
            "Fix: align them along the time axis (one entry per step)."
        )
