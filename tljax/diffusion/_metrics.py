"""Distances between two samples of points: Gaussian-kernel MMD and sliced Wasserstein."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tljax.core import InputError


def _check_points(where, x, y, same_size=False):
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InputError(
            f"{where}: expected two point sets of shape (n, d) and (m, d), got {x.shape} and "
            f"{y.shape}."
        )
    if same_size and x.shape[0] != y.shape[0]:
        raise InputError(
            f"{where}: both samples must have the same size, got {x.shape[0]} and {y.shape[0]}; "
            "subsample the larger one."
        )
    return x, y


def _sq_dists(x, y):
    return jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)


def median_bandwidth(x) -> jax.Array:
    """Median heuristic: the median Euclidean distance between distinct points of `x` (n, d)."""
    x, _ = _check_points("median_bandwidth", x, x)
    d = jnp.sqrt(_sq_dists(x, x))
    iu = jnp.triu_indices(x.shape[0], k=1)
    return jnp.median(d[iu])


def mmd_gaussian(x, y, *, bandwidth) -> jax.Array:
    """Squared maximum mean discrepancy with k(u, v) = exp(-||u - v||^2 / (2 h^2)).

    The biased (V-statistic) estimate of Gretton et al. (2012):
    MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y), means over all pairs including i = j.
    It is >= 0 and is 0 when the two samples are equal as multisets.

    Args:
      x: points of shape `(n, d)`.
      y: points of shape `(m, d)`.
      bandwidth: kernel width h > 0 (e.g. `median_bandwidth(data)`).

    Returns:
      Scalar MMD^2.
    """
    x, y = _check_points("mmd_gaussian", x, y)
    g = 1.0 / (2.0 * jnp.asarray(bandwidth, x.dtype) ** 2)
    kxx = jnp.mean(jnp.exp(-g * _sq_dists(x, x)))
    kyy = jnp.mean(jnp.exp(-g * _sq_dists(y, y)))
    kxy = jnp.mean(jnp.exp(-g * _sq_dists(x, y)))
    return kxx + kyy - 2.0 * kxy


def sliced_wasserstein(x, y, *, key: jax.Array, num_projections: int = 128) -> jax.Array:
    """Sliced 2-Wasserstein distance between two equal-size samples (Rabin et al. 2011).

    SW_2 = sqrt(mean_k W_2^2(<theta_k, x>, <theta_k, y>)) with `num_projections` directions
    theta_k uniform on the unit sphere; in 1-D, W_2^2 between equal-size empirical measures is the
    mean squared difference of the sorted values.

    Args:
      x: points of shape `(n, d)`.
      y: points of shape `(n, d)`.
      key: PRNG key for the directions.
      num_projections: number of directions.

    Returns:
      Scalar SW_2.
    """
    x, y = _check_points("sliced_wasserstein", x, y, same_size=True)
    theta = jax.random.normal(key, (x.shape[1], num_projections), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    px = jnp.sort(x @ theta, axis=0)
    py = jnp.sort(y @ theta, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))
