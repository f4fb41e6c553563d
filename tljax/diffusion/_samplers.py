"""Samplers as pure `(init, step)` pairs, in the style of optax's `GradientTransformation`.

A sampler holds no state. `init(x_T, key)` returns a `SamplerState` (a NamedTuple, hence a pytree)
and `step(model_fn, state)` returns the next state, so a sampler runs inside `jax.jit` and
`lax.scan`; `sample` is that scan. `model_fn(x_t, t)` receives the whole current sample `x_t` (any
shape, e.g. a batch `(n, d)`) and `t` as an int32 scalar in 1..T, and returns a prediction of the
shape of `x_t` in the sampler's `parameterization` ("epsilon", "x0", "v" or "score").

Every sampler walks a decreasing grid of times `timesteps = (T, ..., 0)`; step i goes from
`timesteps[i]` to `timesteps[i + 1]` and the final state holds the sample at time 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tljax.core import InputError

from ._process import _check_parameterization, _consecutive, _eps_and_x0
from ._schedule import Schedule, StepCoefficients, posterior_coefficients

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


class SamplerState(NamedTuple):
    """State of every sampler.

    Attributes:
      x: the current sample, at time `timesteps[i]`.
      key: PRNG key for the noise of the remaining steps (unused by deterministic samplers).
      i: int32 scalar, the number of steps taken so far.
    """

    x: jax.Array
    key: jax.Array
    i: jax.Array


class Sampler(NamedTuple):
    """A sampler: a pair of pure functions plus its static time grid.

    Attributes:
      init: `init(x_T, key) -> SamplerState`; `x_T` is the starting noise.
      step: `step(model_fn, state) -> SamplerState`, one move down the time grid.
      num_steps: number of `step` calls from T to 0 (static).
      timesteps: the time grid `(T, ..., 0)` as a tuple of ints (static).
    """

    init: Callable[[jax.Array, jax.Array], SamplerState]
    step: Callable[[ModelFn, SamplerState], SamplerState]
    num_steps: int
    timesteps: tuple[int, ...]


def _init(x_T, key) -> SamplerState:
    return SamplerState(jnp.asarray(x_T), key, jnp.zeros((), jnp.int32))


def _draw_normal(state: SamplerState) -> tuple[jax.Array, jax.Array]:
    """Splits the state's key and draws N(0, I) noise of the sample's shape (shared by samplers
    so that DDPM and DDIM(eta=1) see the same noise for the same key)."""
    key, sub = jax.random.split(state.key)
    return key, jax.random.normal(sub, state.x.shape, state.x.dtype)


def _predict(schedule, model_fn, x, t, parameterization, clip_x0):
    """Model call at scalar time t, returned as (eps_hat, x0_hat)."""
    pred = model_fn(x, t)
    if pred.shape != x.shape:
        raise InputError(
            f"model_fn returned shape {pred.shape} for a sample of shape {x.shape}; it must return "
            "a prediction of the same shape as x_t."
        )
    a = jnp.sqrt(schedule.alpha_bars[t])
    s = jnp.sqrt(schedule.one_minus_alpha_bars[t])
    eps, x0 = _eps_and_x0(a, s, x, pred, parameterization)
    if clip_x0 is not None:
        # Clip the data prediction and make eps consistent with it (as in the DDPM image code).
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = (x - a * x0) / s
    return eps, x0


def _check_common(where, schedule, parameterization, clip_x0):
    if not isinstance(schedule, Schedule):
        raise InputError(
            f"{where}: expected a tljax.diffusion.Schedule, got {type(schedule).__name__}."
        )
    _check_parameterization(where, parameterization)
    if clip_x0 is not None and not clip_x0 > 0:
        raise InputError(f"{where}: clip_x0 must be positive or None, got {clip_x0!r}.")


def ddpm_sampler(
    schedule: Schedule,
    *,
    variance: str = "beta_tilde",
    parameterization: str = "epsilon",
    clip_x0: float | None = None,
) -> Sampler:
    """Ancestral sampling of Ho et al. (2020), Algorithm 2, over all T steps.

    x_{t-1} = mu_tilde(x0_hat, x_t) + sigma_t z, where mu_tilde is the posterior mean of
    q(x_{t-1} | x_t, x_0) evaluated at the model's x0_hat (for the epsilon parameterisation and no
    clipping this equals (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t)), and
    z ~ N(0, I) except at the last step t = 1, which adds no noise.

    Args:
      schedule: the noise schedule (T = `schedule.num_steps` steps are taken).
      variance: sigma_t^2 choice: "beta_tilde" (the posterior variance, the paper's lower bound) or
        "beta" (beta_t, the upper bound); the paper reports similar samples for both.
      parameterization: what `model_fn` predicts.
      clip_x0: if set, clip x0_hat to [-clip_x0, clip_x0] (e.g. 1.0 for images in [-1, 1]).

    Returns:
      A `Sampler` with `num_steps = T`.
    """
    _check_common("ddpm_sampler", schedule, parameterization, clip_x0)
    if variance not in ("beta_tilde", "beta"):
        raise InputError(
            f"ddpm_sampler: variance must be 'beta_tilde' or 'beta', got {variance!r}."
        )
    T = schedule.num_steps

    def step(model_fn: ModelFn, state: SamplerState) -> SamplerState:
        t = jnp.int32(T) - state.i
        _, x0 = _predict(schedule, model_fn, state.x, t, parameterization, clip_x0)
        coef_x0, coef_xt, beta_tilde = posterior_coefficients(
            _consecutive(schedule, t, 0), jnp.sqrt
        )
        var = beta_tilde if variance == "beta_tilde" else schedule.betas[t]
        key, z = _draw_normal(state)
        sigma = jnp.where(t > 1, jnp.sqrt(var), jnp.zeros_like(var))
        x_prev = coef_x0 * x0 + coef_xt * state.x + sigma * z
        return SamplerState(x_prev, key, state.i + 1)

    return Sampler(_init, step, T, tuple(range(T, -1, -1)))


def ddim_coefficients(c: StepCoefficients, eta: Any, sqrt: Callable[[Any], Any]):
    """DDIM update coefficients for a step t -> s (Song, Meng & Ermon 2021, eqs. 12 and 16).

        sigma^2 = eta^2 (1 - alpha_bar_s) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_s)
        x_s     = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat + sigma z

    With eta = 1 and s = t - 1, sigma^2 is the DDPM posterior variance beta_tilde_t and the mean
    equals the DDPM posterior mean at x0_hat (claim "ddim eta=1 is the ddpm posterior"). Works on
    arrays and sympy expressions.

    Returns:
      `(coef_x0, coef_eps, sigma2)`.
    """
    sigma2 = eta**2 * c.one_minus_alpha_bar_s / c.one_minus_alpha_bar_t * c.one_minus_ratio
    return sqrt(c.alpha_bar_s), sqrt(c.one_minus_alpha_bar_s - sigma2), sigma2


def spaced_timesteps(num_train_steps: int, num_steps: int) -> tuple[int, ...]:
    """An evenly spaced decreasing grid (T, ..., 0) with `num_steps` steps, rounded to integers.

    Args:
      num_train_steps: T.
      num_steps: number of steps, 1 <= num_steps <= T.

    Returns:
      A strictly decreasing tuple of `num_steps + 1` ints from T to 0.

    Examples:
      >>> spaced_timesteps(1000, 4)
      (1000, 750, 500, 250, 0)
    """
    if not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= num_train_steps:
        raise InputError(
            f"num_steps must be an int in [1, T={num_train_steps}], got {num_steps!r}."
        )
    grid = np.rint(np.linspace(num_train_steps, 0, num_steps + 1)).astype(int)
    return tuple(int(v) for v in grid)


def _grid(where: str, schedule: Schedule, num_steps, timesteps) -> tuple[int, ...]:
    T = schedule.num_steps
    if timesteps is None:
        return spaced_timesteps(T, T if num_steps is None else num_steps)
    if num_steps is not None:
        raise InputError(f"{where}: pass num_steps or timesteps, not both.")
    grid = tuple(int(v) for v in timesteps)
    ok = (
        len(grid) >= 2
        and grid[-1] == 0
        and grid[0] <= T
        and all(a > b for a, b in itertools.pairwise(grid))
    )
    if not ok:
        raise InputError(
            f"{where}: timesteps must be strictly decreasing integers from at most T={T} down to "
            f"0, got {grid[:6]}{'...' if len(grid) > 6 else ''}. Use spaced_timesteps(T, n) for "
            "an evenly spaced grid."
        )
    return grid


def ddim_sampler(
    schedule: Schedule,
    *,
    num_steps: int | None = None,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
    parameterization: str = "epsilon",
    clip_x0: float | None = None,
) -> Sampler:
    """DDIM sampling (Song, Meng & Ermon 2021) on a possibly strided time grid.

    See `ddim_coefficients` for the update. eta = 0 is the deterministic DDIM sampler; eta = 1 on
    the full grid is DDPM ancestral sampling with the beta_tilde variance (the same noise draws
    give the same trajectory as `ddpm_sampler(schedule)` up to float rounding). Values of eta in
    (0, 1] interpolate; the square root's argument is clamped at 0 for eta > 1.

    Args:
      schedule: the noise schedule.
      num_steps: number of evenly spaced steps (default T); see `spaced_timesteps`.
      timesteps: explicit decreasing grid ending at 0 (instead of `num_steps`).
      eta: stochasticity, >= 0.
      parameterization: what `model_fn` predicts.
      clip_x0: if set, clip x0_hat to [-clip_x0, clip_x0].

    Returns:
      A `Sampler`.
    """
    _check_common("ddim_sampler", schedule, parameterization, clip_x0)
    if not eta >= 0:
        raise InputError(f"ddim_sampler: eta must be >= 0, got {eta!r}.")
    grid = _grid("ddim_sampler", schedule, num_steps, timesteps)
    grid_arr = np.asarray(grid, dtype=np.int32)

    def step(model_fn: ModelFn, state: SamplerState) -> SamplerState:
        tab = jnp.asarray(grid_arr)
        t, s = tab[state.i], tab[state.i + 1]
        eps, x0 = _predict(schedule, model_fn, state.x, t, parameterization, clip_x0)
        c = schedule.step_coefficients(t, s)
        coef_x0, coef_eps, sigma2 = ddim_coefficients(
            c, eta, lambda v: jnp.sqrt(jnp.maximum(v, 0.0))
        )
        key, z = _draw_normal(state)
        x_s = coef_x0 * x0 + coef_eps * eps + jnp.sqrt(sigma2) * z
        return SamplerState(x_s, key, state.i + 1)

    return Sampler(_init, step, len(grid) - 1, grid)


def probability_flow_sampler(
    schedule: Schedule,
    *,
    method: str = "heun",
    num_steps: int | None = None,
    timesteps: Sequence[int] | None = None,
    parameterization: str = "epsilon",
) -> Sampler:
    """Integrates the probability-flow ODE of the VP SDE (Song et al. 2021) with Euler or Heun.

    The VP SDE dx = -beta(tau) x / 2 dtau + sqrt(beta(tau)) dW has marginals
    q(x_tau | x_0) = N(sqrt(alpha_bar) x_0, (1 - alpha_bar) I); its probability-flow ODE is
    dx/dtau = -beta(tau) / 2 * (x + grad log p_tau(x)), with grad log p = -eps_hat / sqrt(1 -
    alpha_bar). Under the change of variables x_bar = x / sqrt(alpha_bar) and noise level
    sigma = sqrt((1 - alpha_bar) / alpha_bar) the same ODE reads

        d x_bar / d sigma = eps_hat(x, t),    x = x_bar / sqrt(1 + sigma^2)

    (Song, Meng & Ermon 2021, section 4.3; Karras et al. 2022, section 3), and this is the form
    integrated here, on the schedule's time grid (the model is called at integer t only). With
    d = sigma_s - sigma_t: Euler x_bar_s = x_bar_t + d eps_hat(x_t, t), which is exactly the
    DDIM update with eta = 0; Heun averages eps_hat at x_t and at the Euler point x_e (time s),
    except on the last step to s = 0, where sigma_0 = 0 and Heun falls back to Euler (Karras et
    al. 2022, Algorithm 1). Integrating in sigma rather than in t keeps the drift smooth: in t the
    drift carries beta(t) and 1/sqrt(1 - alpha_bar_t), which change fastest near t = 0. The
    sampler is deterministic: the key is unused.

    Args:
      schedule: the noise schedule.
      method: "euler" or "heun".
      num_steps: number of evenly spaced steps (default T).
      timesteps: explicit decreasing grid ending at 0 (instead of `num_steps`).
      parameterization: what `model_fn` predicts.

    Returns:
      A `Sampler`.
    """
    _check_common("probability_flow_sampler", schedule, parameterization, None)
    if method not in ("euler", "heun"):
        raise InputError(
            f"probability_flow_sampler: method must be 'euler' or 'heun', got {method!r}."
        )
    grid = _grid("probability_flow_sampler", schedule, num_steps, timesteps)
    grid_arr = np.asarray(grid, dtype=np.int32)

    def scales(t):
        a = jnp.sqrt(schedule.alpha_bars[t])
        return a, jnp.sqrt(schedule.one_minus_alpha_bars[t]) / a

    def step(model_fn: ModelFn, state: SamplerState) -> SamplerState:
        tab = jnp.asarray(grid_arr)
        t, s = tab[state.i], tab[state.i + 1]
        (a_t, sig_t), (a_s, sig_s) = scales(t), scales(s)
        eps_t, _ = _predict(schedule, model_fn, state.x, t, parameterization, None)
        x_bar = state.x / a_t
        x_bar_e = x_bar + (sig_s - sig_t) * eps_t
        if method == "euler":
            return SamplerState(a_s * x_bar_e, state.key, state.i + 1)
        # At s = 0 there is no noise level to evaluate the corrector at: evaluate at max(s, 1)
        # to keep the traced computation finite and keep the Euler point instead.
        s_eval = jnp.maximum(s, 1)
        eps_s, _ = _predict(schedule, model_fn, a_s * x_bar_e, s_eval, parameterization, None)
        x_bar_h = x_bar + (sig_s - sig_t) * 0.5 * (eps_t + eps_s)
        return SamplerState(a_s * jnp.where(s > 0, x_bar_h, x_bar_e), state.key, state.i + 1)

    return Sampler(_init, step, len(grid) - 1, grid)


def sample(
    sampler: Sampler,
    model_fn: ModelFn,
    key: jax.Array,
    shape: Sequence[int],
    *,
    dtype=jnp.float32,
    trajectory: bool = False,
):
    """Runs a sampler from x_T ~ N(0, I) to time 0 with `lax.scan`.

    Traceable: wrap it in `jax.jit` (with `sampler`, `model_fn` closed over or static) to compile
    the whole loop.

    Args:
      sampler: a `Sampler` (e.g. `ddim_sampler(schedule, num_steps=50)`).
      model_fn: `model_fn(x_t, t) -> prediction`, `t` an int32 scalar.
      key: PRNG key; split into the starting noise and the sampler's key.
      shape: shape of the sample (e.g. `(num_samples, dim)`).
      dtype: floating dtype of the sample.
      trajectory: also return the stacked states `x` after every step.

    Returns:
      The sample at time 0, or `(sample, xs)` with `xs` of shape `(num_steps, *shape)` if
      `trajectory` is true.

    Examples:
      >>> from tljax.diffusion import linear_schedule, ddim_sampler
      >>> sched = linear_schedule(100)
      >>> x = sample(ddim_sampler(sched, num_steps=10), lambda x, t: jnp.zeros_like(x),
      ...            jax.random.key(0), (4, 2))
      >>> x.shape
      (4, 2)
    """
    k_noise, k_run = jax.random.split(key)
    x_T = jax.random.normal(k_noise, tuple(shape), dtype)
    state = sampler.init(x_T, k_run)

    def body(st, _):
        new = sampler.step(model_fn, st)
        return new, (new.x if trajectory else None)

    final, xs = lax.scan(body, state, None, length=sampler.num_steps)
    return (final.x, xs) if trajectory else final.x
