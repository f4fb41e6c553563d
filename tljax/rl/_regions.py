"""Statements "f(state) ≥ 0 for every state in a box", checked by dense sampling (numeric evidence).

This is the placeholder until `tljax.bound` can certify such statements: sampling a grid plus
uniform random points can *refute* a claim (a sampled counterexample is a real one, up to float
evaluation of `f`) but never *prove* it, so the evidence is registered with method "numeric".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tljax.core._errors import InvalidBoxError
from tljax.proofs import Claim, Evidence

CARTPOLE_STATE_NAMES = ("x", "x_dot", "theta", "theta_dot")


def _check_box(lower, upper) -> tuple[np.ndarray, np.ndarray]:
    lower = np.asarray(lower, dtype=np.float32)
    upper = np.asarray(upper, dtype=np.float32)
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
    **sampling,
) -> Claim:
    """A (not registered) numeric claim: in the state box, the cart-pole policy prefers action `prefer`.

    "Prefers action 1" means logit(1) − logit(0) ≥ 0 everywhere in the box (ties count as
    preferring; a tie has probability zero under sampling). Run it with
    `c.check()`, or `tljax.proofs.register(c)` and then `tljax.proofs.check(name)`.
    The method is "numeric" until `tljax.bound` replaces the sampling by a certified bound on
    `policy_logit_margin_fn(params)` over the same box.

    Arguments:
      - `params`: actor-critic parameters from `train_ppo`.
      - `lower`, `upper`: the box over (x, ẋ, θ, θ̇).
      - `name`: claim name.
      - `prefer`: 1 (push right) or 0 (push left).
      - `sampling`: passed to `check_nonnegative_numeric`.
    """
    from tljax.rl._ppo import policy_logit_margin_fn  # local: _ppo imports optax, keep this light

    lower, upper = _check_box(lower, upper)
    margin = policy_logit_margin_fn(params)
    sign = 1.0 if prefer == 1 else -1.0
    box = ", ".join(
        f"{n} ∈ [{lo:.4g}, {hi:.4g}]"
        for n, lo, hi in zip(CARTPOLE_STATE_NAMES, lower, upper, strict=True)
    )
    action = "push right (+10 N)" if prefer == 1 else "push left (−10 N)"

    def check() -> Evidence:
        return check_nonnegative_numeric(
            lambda s: sign * margin(s), lower, upper, names=CARTPOLE_STATE_NAMES, **sampling
        )

    return Claim(
        name,
        f"for every cart-pole state with {box}, the policy's preferred action is {action}",
        "numeric",
        check,
        about="tljax.rl.policy_logit_margin_fn",
        tags=("rl", "ppo", "numeric"),
    )
