"""Finite MDPs: operators against numpy loops, DP algorithms against brute force, environments."""

import itertools
import re
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import rl
from tljax.core._errors import InputError, ShapeMismatchError


def _np_q(P, R, gamma, v):
    """Q(s, a) by explicit loops over next states."""
    P, R = np.asarray(P, np.float64), np.asarray(R, np.float64)
    S, A = P.shape[:2]
    q = np.zeros((S, A))
    for s in range(S):
        for a in range(A):
            q[s, a] = 0.0 if R.ndim == 3 else R[s, a]
            for t in range(S):
                q[s, a] += P[s, a, t] * ((R[s, a, t] if R.ndim == 3 else 0.0) + gamma * v[t])
    return q


def _brute_force_optimum(mdp):
    """max over all A^S deterministic policies of V^π (numpy solves), per state."""
    P, r, g = (
        np.asarray(mdp.P, np.float64),
        np.asarray(mdp.expected_reward(), np.float64),
        float(mdp.gamma),
    )
    S, A = r.shape
    best = np.full(S, -np.inf)
    for pol in itertools.product(range(A), repeat=S):
        P_pi = P[np.arange(S), pol]
        v = np.linalg.solve(np.eye(S) - g * P_pi, r[np.arange(S), pol])
        best = np.maximum(best, v)
    return best


@pytest.mark.parametrize("transition_rewards", [False, True])
def test_operators_match_numpy_loops(transition_rewards):
    mdp = rl.random_mdp(0, 4, 3, gamma=0.8, transition_rewards=transition_rewards)
    v = np.random.default_rng(0).normal(size=4)
    q = _np_q(mdp.P, mdp.R, 0.8, v)
    np.testing.assert_allclose(
        rl.q_values(mdp, jnp.asarray(v, jnp.float32)), q, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        rl.bellman_optimality(mdp, jnp.asarray(v, jnp.float32)), q.max(1), rtol=1e-5, atol=1e-5
    )
    pi = np.random.default_rng(1).dirichlet(np.ones(3), size=4).astype(np.float32)
    np.testing.assert_allclose(
        rl.bellman_expectation(mdp, jnp.asarray(pi), jnp.asarray(v, jnp.float32)),
        (pi * q).sum(1),
        rtol=1e-5,
        atol=1e-5,
    )
    det = jnp.array([2, 0, 1, 1])
    np.testing.assert_allclose(
        rl.bellman_expectation(mdp, det, jnp.asarray(v, jnp.float32)),
        q[np.arange(4), np.asarray(det)],
        rtol=1e-5,
        atol=1e-5,
    )


def test_policy_evaluation_is_fixed_point_of_expectation_operator():
    mdp = rl.random_mdp(1, 5, 2, gamma=0.9)
    pol = jnp.array([0, 1, 1, 0, 1])
    v = rl.policy_evaluation(mdp, pol)
    np.testing.assert_allclose(rl.bellman_expectation(mdp, pol, v), v, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_and_policy_iteration_against_brute_force(seed):
    mdp = rl.random_mdp(seed, 4, 3, gamma=0.9)
    v_star = _brute_force_optimum(mdp)
    pi_res = rl.policy_iteration(mdp)
    assert bool(pi_res.converged)
    np.testing.assert_allclose(pi_res.v, v_star, rtol=1e-4, atol=1e-4)
    eps = 1e-2
    vi = rl.value_iteration(mdp, eps=eps)
    assert bool(vi.converged) and float(vi.error_bound) < eps
    v_greedy = np.asarray(rl.policy_evaluation(mdp, vi.policy), np.float64)
    assert np.max(np.abs(v_greedy - v_star)) <= eps
    assert np.max(np.abs(np.asarray(vi.v) - v_star)) <= eps  # ‖V_{k+1} − V*‖ < ε/2 in fact


def test_value_iteration_stops_by_the_stated_rule():
    mdp = rl.chain(gamma=0.5)
    eps = 0.1
    res = rl.value_iteration(mdp, eps=eps)
    # Re-run the iteration by hand: k backups, then the last difference is below ε(1−γ)/(2γ) = 0.05.
    v, diffs = np.zeros(5), []
    for _ in range(int(res.iterations)):
        new = _np_q(mdp.P, mdp.R, 0.5, v).max(1)
        diffs.append(np.abs(new - v).max())
        v = new
    assert diffs[-1] < 0.05 and all(d >= 0.05 for d in diffs[:-1])
    np.testing.assert_allclose(res.v, v, rtol=1e-5)


def test_value_iteration_vmaps_over_mdps():
    mdps = [rl.random_mdp(s, 3, 2, gamma=0.7) for s in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *mdps)
    res = jax.jit(jax.vmap(lambda m: rl.value_iteration(m, eps=1e-3)))(stacked)
    for i, m in enumerate(mdps):
        np.testing.assert_array_equal(res.policy[i], rl.value_iteration(m, eps=1e-3).policy)


def test_strens_chain_optimal_policy_depends_on_horizon():
    # Far-sighted: walk to the end for the large reward; myopic: take the small reward now.
    assert rl.policy_iteration(rl.chain(gamma=0.9)).policy.tolist() == [0, 0, 0, 0, 0]
    assert rl.policy_iteration(rl.chain(gamma=0.1)).policy.tolist() == [1, 1, 1, 1, 0]


def test_gridworld_structure_and_policy():
    g = rl.gridworld(3, 3, walls=[(1, 1)], slip=0.0)
    P = np.asarray(g.P)
    assert P.shape == (9, 4, 9) and np.allclose(P.sum(-1), 1)
    assert P[1, 2, 1] == 1.0  # moving down from (0,1) into the wall (1,1) stays put
    assert P[0, 3, 0] == 1.0  # off-grid stays put
    assert P[8, :, 8].tolist() == [1.0] * 4  # goal absorbing
    assert float(g.R[5, 2, 8]) == 1.0 and float(g.R[8, 2, 8]) == 0.0
    pol = rl.value_iteration(g, eps=1e-4).policy.tolist()
    assert pol[7] == 1 and pol[5] == 2  # next to the goal: right from (2,1), down from (1,2)
    slippery = rl.gridworld(slip=0.125)
    assert float(slippery.P[0, 1, 1]) == 1 - 0.125 + 0.125 / 4


def test_q_learning_tabular_converges_to_q_star():
    mdp = rl.random_mdp(3, 3, 2, gamma=0.5)
    v_star = _brute_force_optimum(mdp)
    q_star = _np_q(mdp.P, mdp.R, 0.5, v_star)
    q = jax.jit(lambda k: rl.q_learning_tabular(k, mdp, num_steps=20_000))(jax.random.key(0))
    np.testing.assert_allclose(q, q_star, atol=0.1)
    assert np.array_equal(np.argmax(q, 1), np.argmax(q_star, 1))


def test_random_mdp_is_reproducible_and_dyadic():
    a, b = rl.random_mdp(7, 3, 2, denominator=8), rl.random_mdp(7, 3, 2, denominator=8)
    np.testing.assert_array_equal(a.P, b.P)
    assert np.all(np.asarray(a.P) * 8 == np.round(np.asarray(a.P) * 8))
    assert rl.rational_mdp(a).P.sum(axis=-1).tolist() == [[1, 1]] * 3  # exactly stochastic


def test_mdp_shape_and_value_errors():
    with pytest.raises(ShapeMismatchError, match=re.escape("`P` must have shape (S, A, S)")):
        rl.MDP(jnp.ones((2, 2)), jnp.ones((2, 2)), 0.5)
    with pytest.raises(ShapeMismatchError, match=re.escape("`R` has shape (3,), expected (2, 1)")):
        rl.MDP(jnp.ones((2, 1, 2)) / 2, jnp.ones(3), 0.5)
    with pytest.raises(
        InputError, match=re.escape("rows of P not summing to 1 at (s, a, sum) = [(0, 0, 2.0)")
    ):
        rl.MDP(jnp.ones((2, 1, 2)), jnp.ones((2, 1)), 0.5).validate()
    with pytest.raises(InputError, match=re.escape("gamma = 1.0 is outside")):
        rl.MDP(jnp.ones((1, 1, 1)), jnp.ones((1, 1)), 1.0).validate()
    with pytest.raises(ShapeMismatchError, match="expected an integer array pi"):
        rl.bellman_expectation(rl.chain(), jnp.zeros(5), jnp.zeros(5))
    with pytest.raises(InputError, match="eps must be > 0"):
        rl.value_iteration(rl.chain(), eps=0.0)


# --- exact arithmetic -------------------------------------------------------------------------


def test_to_fraction_is_exact():
    assert rl.to_fraction(np.float32(0.1)) == Fraction(13421773, 134217728)
    assert rl.to_fraction(0.5) == Fraction(1, 2) and rl.to_fraction(Fraction(1, 3)) == Fraction(
        1, 3
    )
    assert rl.to_fraction(jnp.float32(0.25)) == Fraction(1, 4)
    with pytest.raises(InputError, match="not finite"):
        rl.to_fraction(float("nan"))


def test_evaluate_policy_exact_with_fractions_solves_the_system():
    third = Fraction(1, 3)
    P = [[[third, 2 * third], [1, 0]], [[0, 1], [Fraction(1, 2), Fraction(1, 2)]]]
    R = [[1, 0], [Fraction(-1, 7), 2]]
    m = rl.rational_mdp(P=P, R=R, gamma=Fraction(9, 10))
    for pol in ([0, 0], [1, 0], [0, 1], [1, 1]):
        v = rl.evaluate_policy_exact(m, np.array(pol))
        # check (I − γP_π)v = r_π directly in Fractions
        for s in range(2):
            a = pol[s]
            lhs = v[s] - Fraction(9, 10) * sum(P[s][a][t] * v[t] for t in range(2))
            assert lhs == R[s][a]
    # one absorbing state with reward 1: V = 1/(1 − γ) = 10
    assert (
        rl.evaluate_policy_exact(
            rl.rational_mdp(P=[[[1]]], R=[[1]], gamma=Fraction(9, 10)), np.array([0])
        )[0]
        == 10
    )


def test_exact_and_float_dp_agree():
    mdp = rl.random_mdp(11, 4, 3, gamma=0.75, denominator=16)
    pol, v, _ = rl.policy_iteration_exact(mdp)
    np.testing.assert_allclose(np.array(v, dtype=float), _brute_force_optimum(mdp), rtol=1e-9)
    np.testing.assert_allclose(
        np.array(rl.evaluate_policy_exact(mdp, pol), dtype=float),
        rl.policy_evaluation(mdp, jnp.asarray(pol)),
        rtol=1e-5,
    )
    # the exact Bellman operators fix V*
    assert list(rl.bellman_optimality_exact(mdp, v)) == list(v)
    assert list(rl.bellman_expectation_exact(mdp, pol, v)) == list(v)
    _, pol_vi, _, diff = rl.value_iteration_exact(mdp, Fraction(1, 100))
    gap = max(abs(a - b) for a, b in zip(rl.evaluate_policy_exact(mdp, pol_vi), v, strict=True))
    assert gap <= 2 * Fraction(3, 4) * diff / Fraction(1, 4) < Fraction(1, 100)


def test_rational_mdp_rejects_rounded_rows():
    m = rl.random_mdp(0, 3, 2)  # Dirichlet rows in float32: not exactly stochastic
    with pytest.raises(InputError, match="not exactly stochastic"):
        rl.rational_mdp(m)
    with pytest.raises(InputError, match="singular"):
        rl.solve_exact([[1, 1], [1, 1]], [1, 2])
