"""Finite MDPs as arrays, policies, Bellman operators, value and policy iteration.

An MDP with S states and A actions is the frozen pytree `MDP(P, R, gamma)`:

- `P[s, a, s′]` = Pr(s′ | s, a), shape (S, A, S), rows summing to 1;
- `R[s, a]` (expected reward) or `R[s, a, s′]` (reward of the transition), shapes (S, A) or
  (S, A, S);
- `gamma` ∈ [0, 1), the discount.

Policies are arrays too: a deterministic policy is an integer array `pi[s] ∈ {0..A-1}` of
shape (S,), a stochastic one a float array `pi[s, a]` of shape (S, A) with rows summing to 1.

Everything here is traceable JAX (`jit`, `vmap` over MDPs work); the exact rational counterparts
(policy evaluation by a linear solve over ℚ) live in `tljax.rl._exact`.

References:
  Puterman, *Markov Decision Processes* (1994), §6.2-6.4 (operators, value and policy iteration).
  Sutton & Barto, *Reinforcement Learning: An Introduction*, 2nd ed. (2018), ch. 4.
  Williams & Baird, "Tight performance bounds on greedy policies based on imperfect value
  functions" (1993), for the 2γ/(1-γ) greedy-policy bound.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tljax.core import InputError, ShapeMismatchError


class MDP(eqx.Module):
    """A finite MDP `(P, R, γ)` stored as arrays; a frozen pytree (all three fields are leaves).

    Arguments:
      - `P`: transition probabilities `P[s, a, s′]`, shape (S, A, S).
      - `R`: rewards, either `R[s, a]` of shape (S, A) or `R[s, a, s′]` of shape (S, A, S).
      - `gamma`: discount factor γ, a scalar in [0, 1).

    Shapes are checked at construction; values (non-negative rows summing to one, γ < 1) are checked
    by `MDP.validate()`, which needs concrete arrays and is called by the built-in environments.

    Example:
      >>> import jax.numpy as jnp
      >>> mdp = MDP(P=jnp.ones((2, 1, 2)) / 2, R=jnp.array([[0.0], [1.0]]), gamma=0.5)
      >>> mdp.n_states, mdp.n_actions
      (2, 1)
    """

    P: jax.Array
    R: jax.Array
    gamma: jax.Array

    def __init__(self, P, R, gamma):
        self.P = jnp.asarray(P, dtype=jnp.result_type(float))
        self.R = jnp.asarray(R, dtype=self.P.dtype)
        self.gamma = jnp.asarray(gamma, dtype=self.P.dtype)

    def __check_init__(self):
        if self.P.ndim != 3 or self.P.shape[0] != self.P.shape[2]:
            raise ShapeMismatchError(
                f"MDP: `P` must have shape (S, A, S) with P[s, a, s′] = Pr(s′ | s, a); got "
                f"{self.P.shape}."
            )
        s, a, _ = self.P.shape
        if self.R.shape not in ((s, a), (s, a, s)):
            raise ShapeMismatchError(
                f"MDP: `R` has shape {self.R.shape}, expected ({s}, {a}) for R[s, a] or "
                f"({s}, {a}, {s}) for R[s, a, s′] (matching `P`)."
            )
        if self.gamma.ndim != 0:
            raise ShapeMismatchError(
                f"MDP: `gamma` must be a scalar, got shape {self.gamma.shape}."
            )

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def expected_reward(self) -> jax.Array:
        """r(s, a) = Σ_s′ P(s′|s,a) R(s,a,s′) (or `R` itself when it is already R[s, a]); shape (S,
        A)."""
        if self.R.ndim == 2:
            return self.R
        return jnp.sum(self.P * self.R, axis=-1)

    def validate(self, atol: float = 1e-5) -> MDP:
        """Checks (host-side, concrete arrays) that `P` is stochastic and 0 ≤ γ < 1; returns `self`.

        Raises:
          InputError: listing every (s, a) whose row of `P` is negative or does not sum to 1 (within
            `atol`), or a γ outside [0, 1).
        """
        P = np.asarray(self.P, dtype=np.float64)
        problems = []
        neg = np.argwhere(P < 0)
        if neg.size:
            problems.append(
                f"negative probabilities at (s, a, s′) = {[tuple(map(int, i)) for i in neg[:10]]}"
            )
        sums = P.sum(axis=-1)
        off = np.argwhere(np.abs(sums - 1.0) > atol)
        if off.size:
            listing = [(int(s), int(a), float(sums[s, a])) for s, a in off[:10]]
            problems.append(f"rows of P not summing to 1 at (s, a, sum) = {listing}")
        g = float(self.gamma)
        if not 0.0 <= g < 1.0:
            problems.append(f"gamma = {g} is outside [0, 1)")
        if not np.all(np.isfinite(np.asarray(self.R, dtype=np.float64))):
            problems.append("R has non-finite entries")
        if problems:
            raise InputError(
                "MDP.validate: "
                + "; ".join(problems)
                + ". Fix the arrays passed to MDP(P, R, gamma)."
            )
        return self


def as_stochastic_policy(policy: jax.Array, n_actions: int) -> jax.Array:
    """Returns the policy as a matrix `pi[s, a]` of shape (S, A).

    Arguments:
      - `policy`: a deterministic policy (integer array of shape (S,)) or a stochastic one (float
        array of shape (S, A)), returned unchanged.
      - `n_actions`: A.
    """
    policy = jnp.asarray(policy)
    if policy.ndim == 1 and jnp.issubdtype(policy.dtype, jnp.integer):
        return jax.nn.one_hot(policy, n_actions, dtype=jnp.result_type(float))
    if (
        policy.ndim == 2
        and policy.shape[1] == n_actions
        and jnp.issubdtype(policy.dtype, jnp.floating)
    ):
        return policy
    raise ShapeMismatchError(
        f"policy has shape {policy.shape} and dtype {policy.dtype}; expected an integer array "
        f"pi[s] of "
        f"shape (S,) (deterministic) or a float array pi[s, a] of shape (S, {n_actions}) "
        f"(stochastic)."
    )


def _check_policy(mdp: MDP, policy: jax.Array, where: str) -> jax.Array:
    pi = as_stochastic_policy(policy, mdp.n_actions)
    if pi.shape[0] != mdp.n_states:
        raise ShapeMismatchError(
            f"{where}: policy covers {pi.shape[0]} states but the MDP has {mdp.n_states}."
        )
    return pi


def _check_values(mdp: MDP, v: jax.Array, where: str) -> None:
    if jnp.shape(v) != (mdp.n_states,):
        raise ShapeMismatchError(
            f"{where}: `v` has shape {jnp.shape(v)}, expected ({mdp.n_states},) (one value per "
            f"state)."
        )


def policy_transition_matrix(mdp: MDP, policy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Markov chain and reward of following `policy`: P_π[s, s′] = Σ_a π(a|s) P(s′|s,a), r_π[s].

    Returns:
      `(P_pi, r_pi)` of shapes (S, S) and (S,).
    """
    pi = _check_policy(mdp, policy, "policy_transition_matrix")
    return jnp.einsum("sa,sat->st", pi, mdp.P), jnp.sum(pi * mdp.expected_reward(), axis=-1)


def q_values(mdp: MDP, v: jax.Array) -> jax.Array:
    """One-step look-ahead Q(s, a) = r(s, a) + γ Σ_s′ P(s′|s,a) v(s′); shape (S, A)."""
    _check_values(mdp, v, "q_values")
    return mdp.expected_reward() + mdp.gamma * jnp.einsum("sat,t->sa", mdp.P, v)


def bellman_expectation(mdp: MDP, policy: jax.Array, v: jax.Array) -> jax.Array:
    """The Bellman expectation operator (T^π v)(s) = Σ_a π(a|s) [r(s,a) + γ Σ_s′ P(s′|s,a) v(s′)].

    T^π is a γ-contraction in the sup norm: ‖T^π v − T^π u‖_∞ ≤ γ ‖v − u‖_∞ (Puterman Prop. 6.2.4);
    see the claim "rl: Bellman expectation operator is a gamma-contraction".

    Arguments:
      - `mdp`: the MDP.
      - `policy`: deterministic (S,) int or stochastic (S, A) float.
      - `v`: values, shape (S,).

    Returns:
      T^π v, shape (S,).
    """
    pi = _check_policy(mdp, policy, "bellman_expectation")
    return jnp.sum(pi * q_values(mdp, v), axis=-1)


def bellman_optimality(mdp: MDP, v: jax.Array) -> jax.Array:
    """The Bellman optimality operator (T v)(s) = max_a [r(s,a) + γ Σ_s′ P(s′|s,a) v(s′)]; shape
    (S,).

    T is a γ-contraction in the sup norm (Puterman Thm 6.2.3); its fixed point is V*.
    """
    return jnp.max(q_values(mdp, v), axis=-1)


def greedy_policy(mdp: MDP, v: jax.Array) -> jax.Array:
    """π(s) = argmax_a Q(s, a) for Q = `q_values(mdp, v)` (lowest index on ties); int32, shape
    (S,)."""
    return jnp.argmax(q_values(mdp, v), axis=-1).astype(jnp.int32)


def policy_evaluation(mdp: MDP, policy: jax.Array) -> jax.Array:
    """V^π by solving the linear system (I − γ P_π) V = r_π in floating point.

    For exact rational values use `tljax.rl.evaluate_policy_exact`.

    Example:
      >>> import jax.numpy as jnp
      >>> mdp = MDP(P=jnp.ones((1, 1, 1)), R=jnp.ones((1, 1)), gamma=0.5)
      >>> float(policy_evaluation(mdp, jnp.array([0]))[0])
      2.0
    """
    P_pi, r_pi = policy_transition_matrix(mdp, policy)
    eye = jnp.eye(mdp.n_states, dtype=P_pi.dtype)
    return jnp.linalg.solve(eye - mdp.gamma * P_pi, r_pi)


class ValueIterationResult(NamedTuple):
    """What `value_iteration` returns.

    Attributes:
      v: the last iterate V_{k+1}, shape (S,).
      policy: the policy greedy with respect to `v`, int32 (S,).
      iterations: number of Bellman backups applied.
      error_bound: 2γ/(1−γ)·‖V_{k+1} − V_k‖_∞, a bound on ‖V^policy − V*‖_∞ in exact arithmetic;
        it is < `eps` when `converged`.
      converged: whether the stopping test ‖V_{k+1} − V_k‖_∞ < ε(1−γ)/(2γ) was met.
    """

    v: jax.Array
    policy: jax.Array
    iterations: jax.Array
    error_bound: jax.Array
    converged: jax.Array


def value_iteration(
    mdp: MDP, *, eps: float = 1e-2, v0: jax.Array | None = None, max_iterations: int = 10_000
) -> ValueIterationResult:
    """Value iteration V_{k+1} = T V_k with the ε-optimal stopping rule.

    Stops as soon as ‖V_{k+1} − V_k‖_∞ < ε(1−γ)/(2γ). Then the greedy policy π with respect to
    V_{k+1} satisfies ‖V^π − V*‖_∞ ≤ 2γ/(1−γ)·‖V_{k+1} − V_k‖_∞ < ε (Puterman Thm 6.3.1;
    Williams & Baird 1993). The bound is a theorem about exact arithmetic; with float32 iterates the
    rounding adds about ulp(‖V‖)/(1−γ), negligible unless ε is near float precision, in which case
    the loop may stop at `max_iterations` with `converged=False`. The claim "rl: value iteration
    error bound" checks the returned policy in exact rationals.

    Arguments:
      - `mdp`: the MDP.
      - `eps`: target accuracy ε > 0 of the greedy policy's value (may be traced, e.g. under `jit`).
      - `v0`: initial values (default zeros), shape (S,).
      - `max_iterations`: a cap on the number of backups.

    Returns:
      A `ValueIterationResult`.

    Example:
      >>> from tljax.rl import chain
      >>> res = value_iteration(chain(), eps=1e-3)
      >>> bool(res.converged), res.policy.tolist()
      (True, [0, 0, 0, 0, 0])
    """
    if isinstance(eps, (int, float)) and not eps > 0:  # a traced eps cannot be checked here
        raise InputError(f"value_iteration: eps must be > 0, got {eps}.")
    v0 = jnp.zeros((mdp.n_states,), mdp.P.dtype) if v0 is None else jnp.asarray(v0, mdp.P.dtype)
    _check_values(mdp, v0, "value_iteration")
    gamma = mdp.gamma
    # γ = 0: one backup is already exact, so any positive threshold is fine.
    threshold = jnp.where(gamma > 0, eps * (1 - gamma) / (2 * jnp.maximum(gamma, 1e-30)), jnp.inf)

    def cond(carry):
        _, diff, k = carry
        return (diff >= threshold) & (k < max_iterations)

    def body(carry):
        v, _, k = carry
        v_new = bellman_optimality(mdp, v)
        return v_new, jnp.max(jnp.abs(v_new - v)), k + 1

    v1 = bellman_optimality(mdp, v0)
    v, diff, k = jax.lax.while_loop(cond, body, (v1, jnp.max(jnp.abs(v1 - v0)), jnp.asarray(1)))
    bound = 2 * gamma * diff / (1 - gamma)
    return ValueIterationResult(v, greedy_policy(mdp, v), k, bound, diff < threshold)


class PolicyIterationResult(NamedTuple):
    """What `policy_iteration` returns: the final `policy` (int32 (S,)), its value `v`, the number
    of improvement steps `iterations` and whether the policy became stable (`converged`)."""

    policy: jax.Array
    v: jax.Array
    iterations: jax.Array
    converged: jax.Array


def policy_iteration(
    mdp: MDP, *, policy0: jax.Array | None = None, rtol: float = 1e-6, max_iterations: int = 1_000
) -> PolicyIterationResult:
    """Howard's policy iteration: evaluate exactly (linear solve), improve greedily, repeat.

    An action is switched only when it beats the current one by more than
    `rtol`·(1 + max|Q|), so float rounding cannot make the loop cycle between tied actions; the
    returned policy is then greedy up to that tolerance. The claim "rl: policy iteration returns an
    exact fixed point" re-evaluates the result in exact rationals. `tljax.rl.policy_iteration_exact`
    is the host-side exact version.

    Arguments:
      - `mdp`: the MDP.
      - `policy0`: initial deterministic policy (default all zeros), int (S,).
      - `rtol`: relative improvement threshold.
      - `max_iterations`: cap on improvement steps (PI needs at most A^S; in practice a handful).

    Returns:
      A `PolicyIterationResult`.
    """
    pi0 = (
        jnp.zeros((mdp.n_states,), jnp.int32)
        if policy0 is None
        else jnp.asarray(policy0, jnp.int32)
    )
    if pi0.shape != (mdp.n_states,):
        raise ShapeMismatchError(
            f"policy_iteration: `policy0` has shape {pi0.shape}, expected ({mdp.n_states},)."
        )

    def improve(pi):
        v = policy_evaluation(mdp, pi)
        q = q_values(mdp, v)
        best = jnp.argmax(q, axis=-1).astype(jnp.int32)
        q_cur = jnp.take_along_axis(q, pi[:, None], axis=-1)[:, 0]
        tol = rtol * (1 + jnp.max(jnp.abs(q)))
        new = jnp.where(jnp.max(q, axis=-1) > q_cur + tol, best, pi)
        return new, v

    def cond(carry):
        _, _, k, stable = carry
        return (~stable) & (k < max_iterations)

    def body(carry):
        pi, _, k, _ = carry
        new, v = improve(pi)
        return new, v, k + 1, jnp.all(new == pi)

    v0 = jnp.zeros((mdp.n_states,), mdp.P.dtype)
    pi, v, k, stable = jax.lax.while_loop(cond, body, (pi0, v0, jnp.asarray(0), jnp.asarray(False)))
    return PolicyIterationResult(pi, v, k, stable)
