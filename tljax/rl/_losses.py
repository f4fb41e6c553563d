"""Policy-gradient losses: REINFORCE, the PPO clipped surrogate, value loss and entropy loss.

Unbatched over one trajectory of T steps (rlax convention; `jax.vmap` for batches), each
returning a scalar mean over time. Losses are to be *minimised*.

References:
  Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
  learning", Machine Learning 8 (1992) (REINFORCE).
  Schulman et al., "Proximal policy optimization algorithms", arXiv:1707.06347 (2017) (PPO).
  Mnih et al., "Asynchronous methods for deep reinforcement learning", ICML 2016 (entropy bonus).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tljax.rl._checks import check_equal_shapes, check_ranks


def policy_gradient_loss(
    logits_t: jax.Array,
    a_t: jax.Array,
    adv_t: jax.Array,
    w_t: jax.Array | None = None,
    *,
    use_stop_gradient: bool = True,
) -> jax.Array:
    """REINFORCE loss −(1/T) Σ_t w_t Â_t log π(a_t | s_t).

    Its gradient is minus the likelihood-ratio policy gradient estimate.

    Arguments:
      - `logits_t`: unnormalised action log-probabilities, shape (T, A).
      - `a_t`: actions taken, int shape (T,).
      - `adv_t`: advantages (or returns), shape (T,); gradients through them are stopped by default.
      - `w_t`: per-step weights (e.g. a mask), shape (T,); default ones.

    Returns:
      scalar loss.
    """
    w_t = jnp.ones_like(adv_t) if w_t is None else w_t
    check_ranks(
        "policy_gradient_loss",
        {"logits_t": (logits_t, 2), "a_t": (a_t, 1), "adv_t": (adv_t, 1), "w_t": (w_t, 1)},
    )
    check_equal_shapes("policy_gradient_loss", {"a_t": a_t, "adv_t": adv_t, "w_t": w_t})
    adv_t = jax.lax.stop_gradient(adv_t) if use_stop_gradient else adv_t
    log_pi = jnp.take_along_axis(jax.nn.log_softmax(logits_t), a_t[:, None], axis=-1)[:, 0]
    return -jnp.mean(log_pi * adv_t * w_t)


def clipped_surrogate_objective(
    prob_ratios_t: jax.Array, adv_t: jax.Array, epsilon: float | jax.Array
) -> jax.Array:
    """PPO's per-step clipped objective L(ρ, Â) = min(ρ Â, clip(ρ, 1−ε, 1+ε) Â) (elementwise).

    Facts (claims "rl: PPO ..."): L ≤ ρÂ for all ρ, Â; and ∂L/∂ρ = 0 where the clip binds
    (ρ > 1+ε with Â > 0, or ρ < 1−ε with Â < 0), ∂L/∂ρ = Â elsewhere (away from the kinks).
    """
    clipped = jnp.clip(prob_ratios_t, 1.0 - epsilon, 1.0 + epsilon)
    return jnp.minimum(prob_ratios_t * adv_t, clipped * adv_t)


def clipped_surrogate_loss(
    prob_ratios_t: jax.Array,
    adv_t: jax.Array,
    epsilon: float | jax.Array,
    *,
    use_stop_gradient: bool = True,
) -> jax.Array:
    """PPO clipped surrogate loss −(1/T) Σ_t min(ρ_t Â_t, clip(ρ_t, 1−ε, 1+ε) Â_t).

    Arguments:
      - `prob_ratios_t`: ρ_t = π_θ(a_t|s_t) / π_old(a_t|s_t), shape (T,).
      - `adv_t`: advantages, shape (T,) (gradients stopped by default).
      - `epsilon`: clip range ε (0.2 in the paper).

    Returns:
      scalar loss.
    """
    check_ranks(
        "clipped_surrogate_loss", {"prob_ratios_t": (prob_ratios_t, 1), "adv_t": (adv_t, 1)}
    )
    check_equal_shapes("clipped_surrogate_loss", {"prob_ratios_t": prob_ratios_t, "adv_t": adv_t})
    adv_t = jax.lax.stop_gradient(adv_t) if use_stop_gradient else adv_t
    return -jnp.mean(clipped_surrogate_objective(prob_ratios_t, adv_t, epsilon))


def value_loss(
    v_t: jax.Array,
    target_t: jax.Array,
    *,
    v_old_t: jax.Array | None = None,
    clip_epsilon: float | None = None,
    use_stop_gradient: bool = True,
) -> jax.Array:
    """Squared-error value loss (1/T) Σ_t ½ (target_t − v_t)², optionally PPO-clipped.

    With `v_old_t` and `clip_epsilon`, the PPO2 variant max(½(target − v)², ½(target − v_clip)²),
    v_clip = v_old + clip(v − v_old, −ε, ε), is used (Schulman et al. 2017 code; Andrychowicz et
    al., "What matters in on-policy RL", 2021, find it rarely helps).

    Arguments:
      - `v_t`: predicted values, shape (T,).
      - `target_t`: regression targets (e.g. λ-returns), shape (T,); gradients stopped by default.
    """
    check_ranks("value_loss", {"v_t": (v_t, 1), "target_t": (target_t, 1)})
    check_equal_shapes("value_loss", {"v_t": v_t, "target_t": target_t})
    target_t = jax.lax.stop_gradient(target_t) if use_stop_gradient else target_t
    sq = 0.5 * (target_t - v_t) ** 2
    if v_old_t is not None and clip_epsilon is not None:
        check_equal_shapes("value_loss", {"v_t": v_t, "v_old_t": v_old_t})
        v_clip = v_old_t + jnp.clip(v_t - v_old_t, -clip_epsilon, clip_epsilon)
        sq = jnp.maximum(sq, 0.5 * (target_t - v_clip) ** 2)
    return jnp.mean(sq)


def entropy_loss(logits_t: jax.Array, w_t: jax.Array | None = None) -> jax.Array:
    """Negative mean entropy −(1/T) Σ_t w_t H(π(·|s_t)), H(p) = −Σ_a p_a log p_a.

    Adding c·entropy_loss to the loss rewards exploration.

    Arguments:
      - `logits_t`: shape (T, A).
      - `w_t`: weights, shape (T,); default ones.
    """
    w_t = jnp.ones(logits_t.shape[:1], logits_t.dtype) if w_t is None else w_t
    check_ranks("entropy_loss", {"logits_t": (logits_t, 2), "w_t": (w_t, 1)})
    log_p = jax.nn.log_softmax(logits_t)
    p = jnp.exp(log_p)
    # p log p → 0 as p → 0; `where` keeps -inf logits from producing 0·(−inf) = nan.
    ent = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)
    return -jnp.mean(ent * w_t)
