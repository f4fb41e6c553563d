"""Temporal-difference learning: TD(0), Q-learning, TD(λ) errors and tabular TD(λ) in both views.

The error functions are unbatched like rlax (`jax.vmap` them over a batch). The tabular TD(λ)
functions apply the *offline* update (values held fixed during the episode, the total increment
applied at the end), for which the forward view (λ-returns) and the backward view (accumulating
eligibility traces) are algebraically identical:

    Σ_t α (G^λ_t − V(s_t)) 1[s = s_t]  =  Σ_t α δ_t z_t(s),   z_t = γ_{t−1} λ z_{t−1} + 1[s = s_t].

References:
  Sutton, "Learning to predict by the methods of temporal differences", Machine Learning 3 (1988).
  Watkins & Dayan, "Q-learning", Machine Learning 8 (1992).
  Sutton & Barto (2018), §12.1-12.2 (forward and backward views; equivalence of offline updates).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tljax.core import ShapeMismatchError
from tljax.rl._checks import check_equal_shapes, check_ranks
from tljax.rl._mdp import MDP
from tljax.rl._multistep import lambda_returns


def td_learning(
    v_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    *,
    stop_target_gradients: bool = True,
) -> jax.Array:
    """TD(0) error δ = r_t + γ_t v_t − v_{t−1} for one transition (all scalars).

    The target r_t + γ_t v_t is wrapped in `stop_gradient` by default, so ½δ² is a semi-gradient
    loss.
    """
    check_ranks(
        "td_learning",
        {"v_tm1": (v_tm1, 0), "r_t": (r_t, 0), "discount_t": (discount_t, 0), "v_t": (v_t, 0)},
    )
    target = r_t + discount_t * v_t
    target = jax.lax.stop_gradient(target) if stop_target_gradients else target
    return target - v_tm1


def q_learning(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    q_t: jax.Array,
    *,
    stop_target_gradients: bool = True,
) -> jax.Array:
    """Q-learning error δ = r_t + γ_t max_a q_t[a] − q_{t−1}[a_{t−1}] for one transition.

    Arguments:
      - `q_tm1`: action values at the previous state, shape (A,).
      - `a_tm1`: the action taken, int scalar.
      - `r_t`, `discount_t`: scalars.
      - `q_t`: action values at the next state, shape (A,).
    """
    check_ranks(
        "q_learning",
        {
            "q_tm1": (q_tm1, 1),
            "a_tm1": (a_tm1, 0),
            "r_t": (r_t, 0),
            "discount_t": (discount_t, 0),
            "q_t": (q_t, 1),
        },
    )
    check_equal_shapes("q_learning", {"q_tm1": q_tm1, "q_t": q_t})
    target = r_t + discount_t * jnp.max(q_t)
    target = jax.lax.stop_gradient(target) if stop_target_gradients else target
    return target - q_tm1[a_tm1]


def td_lambda(
    v_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    v_t: jax.Array,
    lambda_: jax.Array | float,
    *,
    stop_target_gradients: bool = True,
) -> jax.Array:
    """TD(λ) errors G^λ_t − v_{t−1}[t] along a trajectory, shape (T,) (see `lambda_returns`)."""
    check_ranks("td_lambda", {"v_tm1": (v_tm1, 1)})
    check_equal_shapes("td_lambda", {"v_tm1": v_tm1, "r_t": r_t})
    g = lambda_returns(r_t, discount_t, v_t, lambda_, stop_target_gradients=stop_target_gradients)
    return g - v_tm1


def _check_episode(where, v, s_t, r_t, discount_t):
    check_ranks(
        where, {"v": (v, 1), "s_t": (s_t, 1), "r_t": (r_t, 1), "discount_t": (discount_t, 1)}
    )
    check_equal_shapes(where, {"r_t": r_t, "discount_t": discount_t})
    if s_t.shape[0] != r_t.shape[0] + 1:
        raise ShapeMismatchError(
            f"{where}: `s_t` has shape {s_t.shape} but `r_t` has {r_t.shape}; pass the T+1 visited "
            f"states "
            "s_0..s_T (s_T is the bootstrap state; give it discount 0 if the episode terminated)."
        )
    if not jnp.issubdtype(jnp.asarray(s_t).dtype, jnp.integer):
        raise ShapeMismatchError(
            f"{where}: `s_t` must be integer state indices, got dtype {jnp.asarray(s_t).dtype}."
        )


def td_lambda_forward(
    v: jax.Array,
    s_t: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    lambda_: float | jax.Array,
    learning_rate: float | jax.Array,
) -> jax.Array:
    """Offline tabular TD(λ), forward view: V ← V + α Σ_t (G^λ_t − V(s_t)) e_{s_t}.

    The λ-returns use the values held fixed at the start of the episode.

    Arguments:
      - `v`: value table, shape (S,).
      - `s_t`: visited states s_0..s_T, int shape (T+1,).
      - `r_t`, `discount_t`: reward and discount of each transition s_t → s_{t+1}, shape (T,).
      - `lambda_`: λ ∈ [0, 1] (scalar).
      - `learning_rate`: α.

    Returns:
      the updated table, shape (S,).
    """
    _check_episode("td_lambda_forward", v, s_t, r_t, discount_t)
    g = lambda_returns(r_t, discount_t, v[s_t[1:]], lambda_)
    return v.at[s_t[:-1]].add(learning_rate * (g - v[s_t[:-1]]))


def td_lambda_backward(
    v: jax.Array,
    s_t: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    lambda_: float | jax.Array,
    learning_rate: float | jax.Array,
) -> jax.Array:
    """Offline tabular TD(λ), backward view with accumulating eligibility traces.

    z ← γ_{t−1} λ z + e_{s_t};  δ_t = r_t + γ_t V(s_{t+1}) − V(s_t);  ΔV += α δ_t z, with V fixed
    during the episode and ΔV added at the end. Equal to `td_lambda_forward` in exact arithmetic
    (claim "rl: forward and backward TD(lambda) agree").

    Arguments: as `td_lambda_forward`.
    """
    _check_episode("td_lambda_backward", v, s_t, r_t, discount_t)
    n = v.shape[0]
    delta = r_t + discount_t * v[s_t[1:]] - v[s_t[:-1]]
    # Decay applied before step t is γ_{t-1} λ; none before the first step.
    decay = jnp.concatenate([jnp.zeros((1,), v.dtype), discount_t[:-1] * lambda_])

    def step(carry, xs):
        z, dv = carry
        s, d, k = xs
        z = k * z + jax.nn.one_hot(s, n, dtype=v.dtype)
        return (z, dv + learning_rate * d * z), None

    init = (jnp.zeros_like(v), jnp.zeros_like(v))
    (_, dv), _ = jax.lax.scan(step, init, (s_t[:-1], delta, decay))
    return v + dv


def q_learning_tabular(
    key: jax.Array,
    mdp: MDP,
    *,
    num_steps: int,
    epsilon: float = 1.0,
    learning_rate_power: float = 0.8,
    s0: int = 0,
    q0: jax.Array | None = None,
) -> jax.Array:
    """Online tabular Q-learning on a finite MDP with an ε-greedy behaviour policy (`lax.scan`).

    Step size α = 1/n(s, a)^ω with ω = `learning_rate_power` ∈ (1/2, 1], which satisfies the
    Robbins-Monro conditions, so Q → Q* when every pair is visited infinitely often (Watkins & Dayan
    1992; Even-Dar & Mansour 2003 for the polynomial rate). With `epsilon = 1` the behaviour is
    uniformly random (fully off-policy).

    Arguments:
      - `key`: PRNG key.
      - `mdp`: the MDP to interact with.
      - `num_steps`: number of transitions (static).
      - `epsilon`: exploration rate.
      - `learning_rate_power`: ω.
      - `s0`: start state.
      - `q0`: initial table (S, A), default zeros.

    Returns:
      the learned table Q, shape (S, A).
    """
    n_s, n_a = mdp.n_states, mdp.n_actions
    q = jnp.zeros((n_s, n_a), mdp.P.dtype) if q0 is None else jnp.asarray(q0, mdp.P.dtype)
    counts = jnp.zeros((n_s, n_a), mdp.P.dtype)
    has_transition_rewards = mdp.R.ndim == 3

    def step(carry, k):
        q, counts, s = carry
        k_explore, k_action, k_next = jax.random.split(k, 3)
        a = jnp.where(
            jax.random.uniform(k_explore) < epsilon,
            jax.random.randint(k_action, (), 0, n_a),
            jnp.argmax(q[s]),
        )
        s_next = jax.random.choice(k_next, n_s, p=mdp.P[s, a])
        r = mdp.R[s, a, s_next] if has_transition_rewards else mdp.R[s, a]
        counts = counts.at[s, a].add(1)
        alpha = counts[s, a] ** (-learning_rate_power)
        delta = q_learning(q[s], a, r, mdp.gamma, q[s_next])
        return (q.at[s, a].add(alpha * delta), counts, s_next), None

    keys = jax.random.split(key, num_steps)
    (q, _, _), _ = jax.lax.scan(step, (q, counts, jnp.asarray(s0)), keys)
    return q
