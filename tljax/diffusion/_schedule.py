"""Noise schedules of discrete-time Gaussian diffusion, as frozen pytrees of per-step tables.

Index convention (used everywhere in `tljax.diffusion`): tables have length T + 1 and are indexed by
the paper's t. Index 0 is the data itself (beta_0 = 0, alpha_bar_0 = 1); the noising steps are
t = 1..T, exactly as x_t in Ho et al. (2020). A model is therefore called with t in {1, ..., T}.

Tables are computed in float64 with numpy from float64 betas and stored as float32 arrays (the
`dtype` argument). `1 - alpha_bar_t` is computed by the recursion
v_t = alpha_t v_{t-1} + beta_t, whose terms are all positive, so it keeps full relative precision
for small t instead of cancelling in `1 - cumprod(alphas)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tljax.core import InputError


class StepCoefficients(NamedTuple):
    """Schedule quantities for one step from time t down to an earlier time s (s < t).

    Works with any numeric type that supports `+ - * /` (jax or numpy arrays, sympy expressions),
    so the same formulas serve the samplers and the symbolic claims.

    Attributes:
      alpha_bar_t: alpha_bar at t.
      alpha_bar_s: alpha_bar at s.
      one_minus_alpha_bar_t: 1 - alpha_bar_t (kept separately for precision).
      one_minus_alpha_bar_s: 1 - alpha_bar_s.
      ratio: alpha_bar_t / alpha_bar_s (alpha_t when s = t - 1).
      one_minus_ratio: 1 - ratio (beta_t when s = t - 1).
    """

    alpha_bar_t: Any
    alpha_bar_s: Any
    one_minus_alpha_bar_t: Any
    one_minus_alpha_bar_s: Any
    ratio: Any
    one_minus_ratio: Any


def posterior_coefficients(c: StepCoefficients, sqrt: Callable[[Any], Any]):
    """Coefficients of the Gaussian posterior q(x_s | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

    With ratio = alpha_bar_t / alpha_bar_s (= alpha_t for s = t - 1):

        mean     = sqrt(alpha_bar_s) (1 - ratio) / (1 - alpha_bar_t) * x_0
                 + sqrt(ratio) (1 - alpha_bar_s) / (1 - alpha_bar_t) * x_t
        variance = (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - ratio)        (beta_tilde)

    Args:
      c: the step's schedule quantities.
      sqrt: square root for the number type of `c` (`jnp.sqrt`, `np.sqrt`, `sympy.sqrt`).

    Returns:
      `(coef_x0, coef_xt, variance)`.
    """
    denom = c.one_minus_alpha_bar_t
    coef_x0 = sqrt(c.alpha_bar_s) * c.one_minus_ratio / denom
    coef_xt = sqrt(c.ratio) * c.one_minus_alpha_bar_s / denom
    variance = c.one_minus_alpha_bar_s / denom * c.one_minus_ratio
    return coef_x0, coef_xt, variance


class Schedule(eqx.Module):
    """Per-step tables of a variance-preserving diffusion, indexed by t = 0..T (0 = data).

    A frozen pytree: pass it through `jax.jit`, `jax.vmap` and `lax.scan` like any array tree.
    Build one with `linear_schedule`, `cosine_schedule` or `schedule_from_betas`.

    Attributes:
      betas: beta_t, shape `(T + 1,)`, `betas[0] = 0`.
      alphas: alpha_t = 1 - beta_t.
      alpha_bars: alpha_bar_t = prod_{s <= t} alpha_s, `alpha_bars[0] = 1`.
      one_minus_alpha_bars: 1 - alpha_bar_t (computed without cancellation).
      log_alpha_bars: log alpha_bar_t (used for strided steps, where alpha_bar_t / alpha_bar_s
        and its complement are taken as `exp` / `-expm1` of a difference of logs).
      beta_tildes: posterior variance beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
        * beta_t, `beta_tildes[0] = 0` and `beta_tildes[1] = 0`.
    """

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array
    one_minus_alpha_bars: jax.Array
    log_alpha_bars: jax.Array
    beta_tildes: jax.Array

    @property
    def num_steps(self) -> int:
        """T, the number of noising steps (static: read from the table shape)."""
        return self.betas.shape[0] - 1

    def step_coefficients(self, t, s) -> StepCoefficients:
        """Quantities for a step t -> s (integer arrays of one shape, s < t, traceable).

        For s = t - 1 the table values alpha_t and beta_t are used exactly; for a strided step the
        ratio alpha_bar_t / alpha_bar_s comes from the log table.
        """
        t = jnp.asarray(t)
        s = jnp.asarray(s)
        dlog = self.log_alpha_bars[t] - self.log_alpha_bars[s]
        consecutive = s == t - 1
        ratio = jnp.where(consecutive, self.alphas[t], jnp.exp(dlog))
        one_minus_ratio = jnp.where(consecutive, self.betas[t], -jnp.expm1(dlog))
        return StepCoefficients(
            alpha_bar_t=self.alpha_bars[t],
            alpha_bar_s=self.alpha_bars[s],
            one_minus_alpha_bar_t=self.one_minus_alpha_bars[t],
            one_minus_alpha_bar_s=self.one_minus_alpha_bars[s],
            ratio=ratio,
            one_minus_ratio=one_minus_ratio,
        )


def _tables_float64(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Float64 tables of length T + 1 from betas of length T (index 0 prepended)."""
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    one_minus = np.empty_like(betas)
    acc = 0.0
    for i in range(betas.shape[0]):
        # 1 - alpha_bar_t = alpha_t (1 - alpha_bar_{t-1}) + beta_t: a sum of positive terms.
        acc = alphas[i] * acc + betas[i]
        one_minus[i] = acc
    log_alpha_bars = np.cumsum(np.log1p(-betas))

    def with_zero_index(a, v):
        return np.concatenate([[v], a])

    out = {
        "betas": with_zero_index(betas, 0.0),
        "alphas": with_zero_index(alphas, 1.0),
        "alpha_bars": with_zero_index(alpha_bars, 1.0),
        "one_minus_alpha_bars": with_zero_index(one_minus, 0.0),
        "log_alpha_bars": with_zero_index(log_alpha_bars, 0.0),
    }
    c = StepCoefficients(
        alpha_bar_t=out["alpha_bars"][1:],
        alpha_bar_s=out["alpha_bars"][:-1],
        one_minus_alpha_bar_t=out["one_minus_alpha_bars"][1:],
        one_minus_alpha_bar_s=out["one_minus_alpha_bars"][:-1],
        ratio=alphas,
        one_minus_ratio=betas,
    )
    out["beta_tildes"] = with_zero_index(posterior_coefficients(c, np.sqrt)[2], 0.0)
    return out


def schedule_from_betas(betas, *, dtype=jnp.float32) -> Schedule:
    """A schedule from a custom array of betas.

    Args:
      betas: array-like of shape `(T,)` with beta_1..beta_T, each in the open interval (0, 1).
      dtype: floating dtype of the stored tables (computed in float64 first).

    Returns:
      A `Schedule` whose tables have length T + 1 (index 0 = data).

    Raises:
      InputError: if `betas` is not a non-empty 1-D array of finite values in (0, 1).

    Examples:
      >>> s = schedule_from_betas([0.1, 0.2])
      >>> s.num_steps, round(float(s.alpha_bars[2]), 6)
      (2, 0.72)
    """
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1 or b.shape[0] == 0:
        raise InputError(
            f"schedule_from_betas: betas must be a non-empty 1-D array, got shape {b.shape}. "
            "Pass beta_1..beta_T as a flat array."
        )
    bad = np.flatnonzero(~(np.isfinite(b) & (b > 0.0) & (b < 1.0)))
    if bad.size:
        shown = ", ".join(f"betas[{i}]={float(b[i])!r}" for i in bad[:5])
        more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
        raise InputError(
            f"schedule_from_betas: every beta must lie in the open interval (0, 1); offending: "
            f"{shown}{more}. Clip the schedule (e.g. np.clip(betas, 1e-8, 0.999))."
        )
    tables = _tables_float64(b)
    return Schedule(**{k: jnp.asarray(v, dtype=dtype) for k, v in tables.items()})


def linear_schedule(
    num_steps: int = 1000,
    beta_start: float | None = None,
    beta_end: float | None = None,
    *,
    dtype=jnp.float32,
) -> Schedule:
    """Linearly spaced betas (Ho et al. 2020): 1e-4 .. 0.02 over T = 1000 steps.

    For other T the default end points are scaled by 1000 / T (the rule of Nichol & Dhariwal's
    improved-DDPM code), which keeps alpha_bar_T near 4e-5 so x_T is close to N(0, I); at T = 1000
    they are exactly 1e-4 and 0.02. Pass `beta_start` / `beta_end` to override (required for
    T <= 20, where the scaled beta_end would reach 1).

    Args:
      num_steps: T, the number of noising steps (>= 1).
      beta_start: beta_1 (default 1e-4 * 1000 / T).
      beta_end: beta_T (default 0.02 * 1000 / T).
      dtype: floating dtype of the stored tables.

    Returns:
      A `Schedule`.

    Examples:
      >>> s = linear_schedule()
      >>> s.num_steps, float(s.betas[1]), float(s.betas[1000])
      (1000, 9.999999747378752e-05, 0.019999999552965164)
    """
    return schedule_from_betas(linear_betas(num_steps, beta_start, beta_end), dtype=dtype)


def linear_betas(
    num_steps: int = 1000, beta_start: float | None = None, beta_end: float | None = None
) -> np.ndarray:
    """The float64 betas of `linear_schedule` (same arguments), shape `(T,)`."""
    _check_num_steps("linear_schedule", num_steps)
    scale = 1000.0 / num_steps
    lo = 1e-4 * scale if beta_start is None else float(beta_start)
    hi = 0.02 * scale if beta_end is None else float(beta_end)
    if beta_end is None and hi >= 1.0:
        raise InputError(
            f"linear_schedule: with T={num_steps} the default beta_end 0.02 * 1000 / T = {hi:g} is "
            "not below 1 (the default scaling needs T >= 21); pass beta_start and beta_end."
        )
    return np.linspace(lo, hi, num_steps, dtype=np.float64)


def cosine_schedule(
    num_steps: int = 1000, *, s: float = 0.008, max_beta: float = 0.999, dtype=jnp.float32
) -> Schedule:
    """Cosine schedule of Nichol & Dhariwal (2021), eq. 17.

    f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), alpha_bar(t) = f(t) / f(0),
    beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), max_beta). The stored alpha_bar is then
    recomputed as the product of the clipped (1 - beta_t), so every table is consistent with the
    betas (after clipping the last steps it differs from f(t) / f(0)).

    Args:
      num_steps: T (>= 1).
      s: offset that keeps beta_t from being too small near t = 0 (paper: 0.008).
      max_beta: clip value of beta_t (paper: 0.999), avoiding the singularity at t = T.
      dtype: floating dtype of the stored tables.

    Returns:
      A `Schedule`.

    Examples:
      >>> sched = cosine_schedule(1000)
      >>> float(sched.betas[1000]) == float(jnp.float32(0.999))
      True
    """
    return schedule_from_betas(cosine_betas(num_steps, s=s, max_beta=max_beta), dtype=dtype)


def cosine_betas(num_steps: int = 1000, *, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """The float64 betas of `cosine_schedule` (same arguments), shape `(T,)`."""
    _check_num_steps("cosine_schedule", num_steps)
    if not 0.0 < max_beta < 1.0:
        raise InputError(f"cosine_schedule: max_beta must be in (0, 1), got {max_beta!r}.")
    steps = np.arange(num_steps + 1, dtype=np.float64)
    f = np.cos((steps / num_steps + s) / (1.0 + s) * (math.pi / 2.0)) ** 2
    alpha_bar = f / f[0]
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def _check_num_steps(where: str, num_steps) -> None:
    if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1:
        raise InputError(f"{where}: num_steps must be a positive int, got {num_steps!r}.")


def _at(table: jax.Array, t, ndim: int) -> jax.Array:
    """`table[t]` shaped to broadcast against an array of rank `ndim` whose leading axes are t's.

    `t` may be a scalar (one time for the whole array) or have the shape of the leading axes
    (one time per example). Ranks match, so this also works under rank-promotion "raise".
    """
    t = jnp.asarray(t)
    v = table[t]
    if v.ndim > ndim:
        raise InputError(
            f"t has shape {t.shape}, which has more axes than the array it indexes (rank {ndim}). "
            "Pass a scalar t or one t per example along the leading axes."
        )
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def check_timesteps(where: str, schedule: Schedule, t, *, lowest: int = 1) -> None:
    """Raises `InputError` if a concrete `t` lies outside [lowest, T]; traced `t` is not checked."""
    if isinstance(t, jax.core.Tracer):
        return
    arr = np.asarray(t)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{where}: t must be an integer time step, got dtype {arr.dtype}.")
    T = schedule.num_steps
    bad = (arr < lowest) | (arr > T)
    if np.any(bad):
        raise InputError(
            f"{where}: t must lie in [{lowest}, {T}] (index 0 is the data, T = "
            f"schedule.num_steps); got values {np.unique(arr[bad])[:5].tolist()}."
        )
