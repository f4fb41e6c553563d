"""Max pooling as pairwise maxima: the one decomposition the bound tape records and the search's
ReLU taps mirror (both number its ReLUs alike)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax


def window_slices(v, win, strides, out_shape) -> list:
    """The strided slices of `v`, one per offset of the window `win` (unpadded, undilated)."""
    out = []
    for off in np.ndindex(*win):
        limit = tuple(o + (n - 1) * s + 1 for o, n, s in zip(off, out_shape, strides, strict=True))
        out.append(lax.slice(v, tuple(off), limit, strides))
    return out


def tree_max(v, maximum=None):
    """max over the leading axis of `v` as a balanced tree of pairwise maxima (`maximum`,
    default `jnp.maximum`): halves compared, an odd last element carried to the next level."""
    maximum = jnp.maximum if maximum is None else maximum
    while v.shape[0] > 1:
        h = v.shape[0] // 2
        m = maximum(v[:h], v[h : 2 * h])
        v = jnp.concatenate([m, v[2 * h :]]) if v.shape[0] % 2 else m
    return v[0]
