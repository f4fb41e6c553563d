"""Statements "f(state) ≥ 0 for every state in a box": sampled evidence, or a certified claim.

`check_nonnegative_numeric` samples a grid plus uniform random points: it can *refute* a claim (a
sampled counterexample is a real one, up to float evaluation of `f`) but never *prove* it, so its
evidence is "numeric". `policy_region_claim` makes the policy's region claim with method
"certified-bound" by default: its check runs `certify_policy_region` (`tljax.bound` with input
splitting), which proves the claim over every state of the box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tljax.core._errors import InputError, InvalidBoxError
from tljax.proofs import Claim, Evidence

CARTPOLE_STATE_NAMES = ("x", "x_dot", "theta", "theta_dot")


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


def check_nonnegative_numeric(
    fn: Callable[[jax.Array], jax.Array],
    lower: Sequence[float],
    upper: Sequence[float],
    *,
    key: jax.Array | None = None,
    grid_points_per_dim: int = 9,
    num_random: int = 100_000,
    names: Sequence[str] | None = None,
) -> Evidence:
    """Numeric evidence for "fn(s) ≥ 0 for all s in [lower, upper]": evaluates `fn` on samples.

    Arguments:
      - `fn`: scalar function of one point (vmapped here).
      - `lower`, `upper`: the box, 1-D.
      - `key`: PRNG key for the random points (default `jax.random.key(0)`).
      - `grid_points_per_dim`, `num_random`: sampling density.
      - `names`: coordinate names for the counterexample.

    Returns:
      `Evidence(holds, detail, counterexample)`; `holds` means "no sampled point violates it" (not a
      proof); the counterexample is the sampled point with the most negative value, as a dict.
    """
    key = jax.random.key(0) if key is None else key
    pts = sample_box(
        key, lower, upper, grid_points_per_dim=grid_points_per_dim, num_random=num_random
    )
    vals = np.asarray(jax.jit(jax.vmap(fn))(pts))
    i = int(np.argmin(vals))
    n_bad = int(np.sum(vals < 0))
    names = names or [f"s{j}" for j in range(pts.shape[1])]
    worst = {n: float(v) for n, v in zip(names, np.asarray(pts[i]), strict=True)}
    detail = (
        f"numeric only: {len(vals)} sampled states ({grid_points_per_dim}^{pts.shape[1]} grid + {num_random} "
        f"uniform), min value {vals[i]:.4g}, {n_bad} negative"
    )
    if n_bad:
        return Evidence(False, detail, {**worst, "value": float(vals[i])})
    return Evidence(True, detail + f"; closest to violation at {worst}")


def policy_region_claim(
    params,
    lower: Sequence[float],
    upper: Sequence[float],
    *,
    name: str,
    prefer: int = 1,
    method: str = "certified-bound",
    timeout: float = 120.0,
    **sampling,
) -> Claim:
    """A (not registered) claim: in the state box, the cart-pole policy prefers action `prefer`.

    With `method="certified-bound"` (default) the check is `certify_policy_region`: it holds when
    logit(prefer) > logit(other) is certified at every state of the box (float32 program and real
    network), it fails with a counterexample state when one is confirmed, and it fails without one
    when the `timeout` runs out ("unknown"). With `method="numeric"` the check samples the box
    (`check_nonnegative_numeric`): "prefers" then means logit(prefer) − logit(other) ≥ 0 at every
    sample (a tie has probability zero), evidence but not proof. Run it with `c.check()`, or
    `tljax.proofs.register(c)` and then `tljax.proofs.check(name)`.

    Arguments:
      - `params`: actor-critic parameters from `train_ppo`.
      - `lower`, `upper`: the box over (x, ẋ, θ, θ̇).
      - `name`: claim name.
      - `prefer`: 1 (push right) or 0 (push left).
      - `method`: "certified-bound" or "numeric".
      - `timeout`: the certification budget in seconds.
      - `sampling`: passed to `check_nonnegative_numeric` (numeric method only).
    """
    from tljax.rl._certify import certify_policy_region
    from tljax.rl._ppo import policy_logit_margin_fn  # local: _ppo imports optax, keep this light

    if method not in ("certified-bound", "numeric"):
        raise InputError(
            f"policy_region_claim: method must be 'certified-bound' or 'numeric', got {method!r}"
        )
    if prefer not in (0, 1) or isinstance(prefer, bool):
        raise InputError(f"policy_region_claim: prefer must be 0 or 1, got {prefer!r}")
    if sampling and method != "numeric":
        raise InputError(
            f"policy_region_claim: sampling options {sorted(sampling)} only apply to method='numeric'"
        )
    lower, upper = _check_box(lower, upper, np.float64)
    margin = policy_logit_margin_fn(params)
    sign = 1.0 if prefer == 1 else -1.0
    box = ", ".join(
        f"{n} ∈ [{lo:.4g}, {hi:.4g}]"
        for n, lo, hi in zip(CARTPOLE_STATE_NAMES, lower, upper, strict=True)
    )
    action = "push right (+10 N)" if prefer == 1 else "push left (−10 N)"

    def check_numeric() -> Evidence:
        return check_nonnegative_numeric(
            lambda s: sign * margin(s), lower, upper, names=CARTPOLE_STATE_NAMES, **sampling
        )

    def check_certified() -> Evidence:
        res = certify_policy_region(params, lower, upper, action=prefer, timeout=timeout)
        if res.verdict == "refuted":
            cex = {
                n: float(v) for n, v in zip(CARTPOLE_STATE_NAMES, res.counterexample, strict=True)
            }
            return Evidence(False, res.detail, {**cex, "value": res.counterexample_margin})
        return Evidence(res.certified, res.detail)

    return Claim(
        name,
        f"for every cart-pole state with {box}, the policy's preferred action is {action}",
        method,
        check_certified if method == "certified-bound" else check_numeric,
        about="tljax.rl.policy_logit_margin_fn",
        tags=("rl", "ppo", "certified" if method == "certified-bound" else "numeric"),
    )
