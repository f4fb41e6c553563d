"""Forward process q(x_t | x_0), posterior q(x_{t-1} | x_t, x_0) and prediction conversions.

All functions take arrays of any shape `x` and a time `t` that is either a scalar (one time for the
whole array) or an integer array of the leading axes' shape (one time per example). They are pure
and traceable (jit, vmap, grad, lax.scan).

Notation: a_t = sqrt(alpha_bar_t), s_t = sqrt(1 - alpha_bar_t), so x_t = a_t x_0 + s_t eps.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from tljax.core import InputError

from ._schedule import Schedule, StepCoefficients, _at, check_timesteps, posterior_coefficients

PARAMETERIZATIONS = ("epsilon", "x0", "v", "score")


def q_mean_variance(schedule: Schedule, x_0, t) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

    Args:
      schedule: the noise schedule.
      x_0: clean data, any shape.
      t: time in 0..T (0 gives the data itself), scalar or one per leading-axis example.

    Returns:
      `(mean, variance)`; `mean` has the shape of `x_0`, `variance` broadcasts against it.
    """
    check_timesteps("q_mean_variance", schedule, t, lowest=0)
    x_0 = jnp.asarray(x_0)
    a2 = _at(schedule.alpha_bars, t, x_0.ndim)
    return jnp.sqrt(a2) * x_0, _at(schedule.one_minus_alpha_bars, t, x_0.ndim)


def q_sample(schedule: Schedule, x_0, t, noise) -> jax.Array:
    """Draws x_t ~ q(x_t | x_0) as sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise.

    Args:
      schedule: the noise schedule.
      x_0: clean data, any shape.
      t: time in 0..T, scalar or one per leading-axis example.
      noise: standard normal noise of the shape of `x_0` (explicit, so the caller owns the key).

    Returns:
      x_t, shape of `x_0`.

    Examples:
      >>> from tljax.diffusion import linear_schedule
      >>> sched = linear_schedule(100)
      >>> x_t = q_sample(sched, jnp.ones(3), 5, jnp.zeros(3))
      >>> bool(jnp.allclose(x_t, jnp.sqrt(sched.alpha_bars[5])))
      True
    """
    mean, var = q_mean_variance(schedule, x_0, t)
    return mean + jnp.sqrt(var) * noise


def q_posterior_mean_variance(schedule: Schedule, x_0, x_t, t) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

        mean     = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) * x_0
                 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * x_t
        variance = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t

    Args:
      schedule: the noise schedule.
      x_0: clean data (or a prediction of it).
      x_t: the noisy sample at time t, same shape.
      t: time in 1..T, scalar or one per leading-axis example.

    Returns:
      `(mean, variance)`; `variance` broadcasts against `x_t`.
    """
    check_timesteps("q_posterior_mean_variance", schedule, t)
    x_t = jnp.asarray(x_t)
    coef_x0, coef_xt, var = posterior_coefficients(_consecutive(schedule, t, x_t.ndim), jnp.sqrt)
    return coef_x0 * x_0 + coef_xt * x_t, var


def _consecutive(schedule: Schedule, t, ndim: int) -> StepCoefficients:
    """Step t -> t-1 coefficients from the tables, shaped to broadcast against rank `ndim`."""
    t = jnp.asarray(t)
    return StepCoefficients(
        alpha_bar_t=_at(schedule.alpha_bars, t, ndim),
        alpha_bar_s=_at(schedule.alpha_bars, t - 1, ndim),
        one_minus_alpha_bar_t=_at(schedule.one_minus_alpha_bars, t, ndim),
        one_minus_alpha_bar_s=_at(schedule.one_minus_alpha_bars, t - 1, ndim),
        ratio=_at(schedule.alphas, t, ndim),
        one_minus_ratio=_at(schedule.betas, t, ndim),
    )


def convert_core(a: Any, s: Any, x_t: Any, prediction: Any, source: str, target: str) -> Any:
    """Converts a prediction between parameterisations using only `+ - * /`.

    With x_t = a x_0 + s eps and a^2 + s^2 = 1 (a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t)):

        epsilon: eps
        x0:      x_0 = (x_t - s eps) / a
        v:       v = a eps - s x_0  (Salimans & Ho 2022);  x_0 = a x_t - s v,  eps = s x_t + a v
        score:   grad log q(x_t | x_0) = -eps / s;         eps = -s score

    Works on jax/numpy arrays and on sympy expressions (the symbolic claims call it).

    Args:
      a: sqrt(alpha_bar_t).
      s: sqrt(1 - alpha_bar_t).
      x_t: the noisy sample.
      prediction: the quantity in the `source` parameterisation.
      source: one of `PARAMETERIZATIONS`.
      target: one of `PARAMETERIZATIONS`.

    Returns:
      The same quantity in the `target` parameterisation.
    """
    _check_parameterization("convert_core", source)
    _check_parameterization("convert_core", target)
    if source == target:
        return prediction
    eps, x_0 = _eps_and_x0(a, s, x_t, prediction, source)
    if target == "epsilon":
        return eps
    if target == "x0":
        return x_0
    if target == "v":
        return a * eps - s * x_0
    return -eps / s


def _eps_and_x0(a, s, x_t, p, source):
    if source == "epsilon":
        return p, (x_t - s * p) / a
    if source == "x0":
        return (x_t - a * p) / s, p
    if source == "v":
        return s * x_t + a * p, a * x_t - s * p
    eps = -s * p
    return eps, (x_t - s * eps) / a


def _check_parameterization(where: str, name: str) -> None:
    if name not in PARAMETERIZATIONS:
        raise InputError(
            f"{where}: unknown parameterisation {name!r}; use one of {PARAMETERIZATIONS}."
        )


def convert_prediction(
    schedule: Schedule, x_t, t, prediction, *, source: str, target: str
) -> jax.Array:
    """Converts a model prediction at time t between epsilon, x0, v and score.

    See `convert_core` for the formulas. Conversions to x0 divide by sqrt(alpha_bar_t), and to or
    from score by sqrt(1 - alpha_bar_t), so t = 0 (no noise) is excluded.

    Args:
      schedule: the noise schedule.
      x_t: the noisy sample.
      t: time in 1..T, scalar or one per leading-axis example.
      prediction: array of the shape of `x_t`, in the `source` parameterisation.
      source: one of "epsilon", "x0", "v", "score".
      target: one of "epsilon", "x0", "v", "score".

    Returns:
      The prediction in the `target` parameterisation.

    Examples:
      >>> from tljax.diffusion import linear_schedule
      >>> sched = linear_schedule(100)
      >>> x0, eps = jnp.array([1.0]), jnp.array([0.5])
      >>> x_t = q_sample(sched, x0, 3, eps)
      >>> v = convert_prediction(sched, x_t, 3, eps, source="epsilon", target="v")
      >>> back = convert_prediction(sched, x_t, 3, v, source="v", target="x0")
      >>> bool(jnp.allclose(back, x0, atol=1e-5))
      True
    """
    check_timesteps("convert_prediction", schedule, t)
    x_t = jnp.asarray(x_t)
    a = jnp.sqrt(_at(schedule.alpha_bars, t, x_t.ndim))
    s = jnp.sqrt(_at(schedule.one_minus_alpha_bars, t, x_t.ndim))
    return convert_core(a, s, x_t, prediction, source, target)
