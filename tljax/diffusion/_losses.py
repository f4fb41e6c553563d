"""Training losses of diffusion models: epsilon-prediction, v-prediction, denoising score matching.

Each loss takes the clean data `x_0`, the times `t` and the noise explicitly, so it is a
deterministic function (draw `t` and the noise with `training_inputs`). `x_0` may have any shape;
`t` is a scalar or one time per example along the leading axes; `model_fn(x_t, t)` receives `t`
exactly as given. Every loss returns the mean over all elements, i.e. the mean over examples of
the per-example mean squared error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tljax.core import InputError

from ._process import q_sample
from ._schedule import Schedule, _at, check_timesteps


def training_inputs(key: jax.Array, schedule: Schedule, x_0) -> tuple[jax.Array, jax.Array]:
    """Draws one time per example, uniform on {1, ..., T}, and standard normal noise.

    Args:
      key: PRNG key.
      schedule: the noise schedule.
      x_0: a batch of data with the examples along axis 0.

    Returns:
      `(t, noise)`: int32 `t` of shape `(x_0.shape[0],)` and `noise` of the shape of `x_0`.
    """
    x_0 = jnp.asarray(x_0)
    if x_0.ndim == 0:
        raise InputError("training_inputs: x_0 must have a leading batch axis, got a scalar.")
    k_t, k_n = jax.random.split(key)
    t = jax.random.randint(k_t, (x_0.shape[0],), 1, schedule.num_steps + 1, dtype=jnp.int32)
    return t, jax.random.normal(k_n, x_0.shape, x_0.dtype)


def _check_shape(where, pred, target):
    if pred.shape != target.shape:
        raise InputError(
            f"{where}: model_fn returned shape {pred.shape}, expected {target.shape} (the shape "
            "of x_t)."
        )


def epsilon_loss(schedule: Schedule, model_fn, x_0, t, noise) -> jax.Array:
    """Ho et al. (2020) simple loss: mean ||eps - eps_theta(x_t, t)||^2 with x_t ~ q(x_t | x_0).

    Args:
      schedule: the noise schedule.
      model_fn: `model_fn(x_t, t) -> eps_hat`.
      x_0: clean data.
      t: times in 1..T (scalar or per example).
      noise: the eps used to make x_t, shape of `x_0`.

    Returns:
      Scalar mean squared error.
    """
    check_timesteps("epsilon_loss", schedule, t)
    x_t = q_sample(schedule, x_0, t, noise)
    pred = model_fn(x_t, t)
    _check_shape("epsilon_loss", pred, x_t)
    return jnp.mean((pred - noise) ** 2)


def v_loss(schedule: Schedule, model_fn, x_0, t, noise) -> jax.Array:
    """v-prediction loss (Salimans & Ho 2022): mean ||v - v_theta(x_t, t)||^2.

    v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0.

    Args:
      schedule: the noise schedule.
      model_fn: `model_fn(x_t, t) -> v_hat`.
      x_0: clean data.
      t: times in 1..T (scalar or per example).
      noise: the eps used to make x_t.

    Returns:
      Scalar mean squared error.
    """
    check_timesteps("v_loss", schedule, t)
    x_0 = jnp.asarray(x_0)
    a = jnp.sqrt(_at(schedule.alpha_bars, t, x_0.ndim))
    s = jnp.sqrt(_at(schedule.one_minus_alpha_bars, t, x_0.ndim))
    x_t = a * x_0 + s * noise
    pred = model_fn(x_t, t)
    _check_shape("v_loss", pred, x_t)
    return jnp.mean((pred - (a * noise - s * x_0)) ** 2)


def score_matching_loss(
    schedule: Schedule, model_fn, x_0, t, noise, *, weighting: str = "variance"
) -> jax.Array:
    """Denoising score matching (Vincent 2011; Song & Ermon 2019) on the schedule's kernels.

    The target is the score of q(x_t | x_0): -eps / sqrt(1 - alpha_bar_t). With
    weighting "variance" the squared error is multiplied by lambda_t = 1 - alpha_bar_t (Song &
    Ermon's lambda(sigma) = sigma^2), which makes it mean ||sqrt(1 - alpha_bar_t) s_theta + eps||^2,
    i.e. the epsilon loss for eps_hat = -sqrt(1 - alpha_bar_t) s_theta; "none" uses lambda_t = 1.

    Args:
      schedule: the noise schedule.
      model_fn: `model_fn(x_t, t) -> score_hat`.
      x_0: clean data.
      t: times in 1..T (scalar or per example).
      noise: the eps used to make x_t.
      weighting: "variance" or "none".

    Returns:
      Scalar weighted mean squared error.
    """
    check_timesteps("score_matching_loss", schedule, t)
    if weighting not in ("variance", "none"):
        raise InputError(
            f"score_matching_loss: weighting must be 'variance' or 'none', got {weighting!r}."
        )
    x_0 = jnp.asarray(x_0)
    a = jnp.sqrt(_at(schedule.alpha_bars, t, x_0.ndim))
    var = _at(schedule.one_minus_alpha_bars, t, x_0.ndim)
    s = jnp.sqrt(var)
    x_t = a * x_0 + s * noise
    pred = model_fn(x_t, t)
    _check_shape("score_matching_loss", pred, x_t)
    if weighting == "variance":
        return jnp.mean((s * pred + noise) ** 2)
    return jnp.mean((pred + noise / s) ** 2)
