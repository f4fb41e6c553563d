"""Sampling a box of states: a full grid plus uniform random points.

Samples can *refute* "f(state) ≥ 0 on the box" but never prove it. The statements themselves
(`check_nonnegative_numeric`, `policy_region_claim`, `certify_policy_region`) are in
`tljax.proofs`, which may use `tljax.bound`; `tljax.rl` builds on core only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tljax.core import InvalidBoxError


def _check_box(lower, upper, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    lower = np.asarray(lower, dtype=dtype)
    upper = np.asarray(upper, dtype=dtype)
    if lower.shape != upper.shape or lower.ndim != 1:
        raise InvalidBoxError(
            f"box: `lower` {lower.shape} and `upper` {upper.shape} must be equal 1-D shapes."
        )
    bad = [
        (i, float(lo), float(hi))
        for i, (lo, hi) in enumerate(zip(lower, upper, strict=True))
        if not lo <= hi
    ]
    if bad:
        raise InvalidBoxError(
            f"box: lower > upper (or NaN) at (index, lower, upper) = {bad}; swap or fix the bounds."
        )
    return lower, upper


def sample_box(
    key: jax.Array, lower, upper, *, grid_points_per_dim: int = 9, num_random: int = 100_000
) -> jax.Array:
    """A full grid (`grid_points_per_dim`^d points, corners included) plus uniform random points."""
    lower, upper = _check_box(lower, upper)
    axes = [
        np.linspace(lo, hi, grid_points_per_dim, dtype=np.float32)
        for lo, hi in zip(lower, upper, strict=True)
    ]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(lower))
    rand = jax.random.uniform(key, (num_random, len(lower)), jnp.float32, lower, upper)
    return jnp.concatenate([jnp.asarray(grid), rand], axis=0)
