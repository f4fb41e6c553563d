"""Claims about `tljax.rl`, registered with `tljax.proofs` when `tljax.proofs` is imported.

How the exact checks work: inputs are generated with dyadic rational entries (k/2^m with few
bits) so that the float32 JAX functions compute every intermediate exactly; their outputs are
converted with `as_integer_ratio` and compared with an *independent* computation in Python
`Fraction`s written here (loops and forward sums, not the library's scans). A mismatch, or a
violated inequality, makes the claim false with the offending input as counterexample. Such checks
cover the stated list of generated cases only: method "exact-enumerated". Symbolic claims use sympy
and say exactly which family of cases the symbols cover.

Every check is a function of the implementation under test (default: the library's), so the tests
can feed deliberately wrong variants and see them refuted.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from tljax import rl
from tljax.rl import random_mdp

from .._claims import Evidence, claim

F = Fraction
_ONE = Fraction(1)
_VI_EPSILONS = (Fraction(1, 2), Fraction(1, 10), Fraction(1, 100))


def _q(x) -> Fraction:
    """Exact value of a float (any precision) or int."""
    return F(*float(x).as_integer_ratio())


def _qa(a) -> list:
    """Nested lists of Fractions for an array (exact)."""
    a = np.asarray(a, dtype=np.float64)  # float32 → float64 is exact
    return [_q(x) for x in a] if a.ndim == 1 else [_qa(row) for row in a]


def _dyadic(rng, shape, num, den) -> np.ndarray:
    """Random integers in [−num, num] divided by `den` (exact in float32 for small num, den =
    2^m)."""
    return (rng.integers(-num, num + 1, size=shape) / den).astype(np.float32)


def _dyadic_stochastic(rng, n_rows, n_cols, den=8) -> np.ndarray:
    return (rng.multinomial(den, np.ones(n_cols) / n_cols, size=n_rows) / den).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Bellman operators: γ-contractions in the sup norm.

_GAMMAS = (F(1, 2), F(3, 4), F(7, 8))


def _mdp_cases(num_mdps: int, seed: int = 0):
    """Dyadic MDPs (probabilities and rewards in multiples of 1/8) with dyadic γ."""
    rng = np.random.default_rng(seed)
    for i in range(num_mdps):
        s, a = int(rng.integers(2, 5)), int(rng.integers(2, 4))
        gamma = _GAMMAS[i % len(_GAMMAS)]
        yield (
            random_mdp(
                seed * 1000 + i,
                s,
                a,
                gamma=float(gamma),
                denominator=8,
                transition_rewards=bool(i % 2),
            ),
            rng,
        )


def _expected_reward_frac(P, R):
    S, A = len(P), len(P[0])
    if isinstance(R[0][0], list):
        return [
            [sum(P[s][a][t] * R[s][a][t] for t in range(S)) for a in range(A)] for s in range(S)
        ]
    return R


def _sup(xs) -> Fraction:
    return max(abs(x) for x in xs)


def check_expectation_contraction(
    operator: Callable = rl.bellman_expectation,
    *,
    num_mdps: int = 12,
    pairs_per_mdp: int = 40,
    factor: Fraction = _ONE,
) -> Evidence:
    """‖T^π v − T^π u‖_∞ ≤ factor·γ‖v − u‖_∞ on generated MDPs, policies and value pairs (exact)."""
    n_checked = 0
    op = jax.jit(jax.vmap(operator, in_axes=(None, None, 0)))  # recompiles only per shape
    for mdp, rng in _mdp_cases(num_mdps, seed=1):
        S, A = mdp.n_states, mdp.n_actions
        g = _q(mdp.gamma)
        det = rng.integers(0, A, size=S).astype(np.int32)
        sto = _dyadic_stochastic(rng, S, A, den=4)
        vs = _dyadic(rng, (pairs_per_mdp, S), 64, 8)
        us = _dyadic(rng, (pairs_per_mdp, S), 64, 8)
        P, R = _qa(mdp.P), _qa(mdp.R)
        r = _expected_reward_frac(P, R)
        for pol in (det, sto):
            pi = (
                [[F(int(a == pol[s])) for a in range(A)] for s in range(S)]
                if pol.ndim == 1
                else _qa(pol)
            )
            tv, tu = np.asarray(op(mdp, pol, vs)), np.asarray(op(mdp, pol, us))
            for k in range(pairs_per_mdp):
                v, u = _qa(vs[k]), _qa(us[k])
                # Independent exact T^π: Σ_a π(a|s) (r(s,a) + γ Σ_t P(t|s,a) v(t)).
                ref_v = [
                    sum(
                        pi[s][a] * (r[s][a] + g * sum(P[s][a][t] * v[t] for t in range(S)))
                        for a in range(A)
                    )
                    for s in range(S)
                ]
                ref_u = [
                    sum(
                        pi[s][a] * (r[s][a] + g * sum(P[s][a][t] * u[t] for t in range(S)))
                        for a in range(A)
                    )
                    for s in range(S)
                ]
                jv, ju = _qa(tv[k]), _qa(tu[k])
                if jv != ref_v or ju != ref_u:
                    return Evidence(
                        False,
                        "JAX operator differs from the exact Fraction recomputation",
                        {
                            "P": mdp.P.tolist(),
                            "R": mdp.R.tolist(),
                            "gamma": str(g),
                            "policy": pol.tolist(),
                            "v": v,
                            "jax": jv,
                            "exact": ref_v,
                        },
                    )
                lhs, rhs = (
                    _sup([a - b for a, b in zip(ref_v, ref_u, strict=True)]),
                    factor * g * _sup([a - b for a, b in zip(v, u, strict=True)]),
                )
                if lhs > rhs:
                    return Evidence(
                        False,
                        f"‖Tv − Tu‖ = {lhs} > {factor}·γ‖v − u‖ = {rhs}",
                        {
                            "gamma": str(g),
                            "policy": pol.tolist(),
                            "v": [str(x) for x in v],
                            "u": [str(x) for x in u],
                        },
                    )
                n_checked += 1
    return Evidence(
        True,
        f"{n_checked} (MDP, policy, v, u) cases from {num_mdps} dyadic MDPs (γ ∈ 1/2, 3/4, 7/8; "
        "deterministic and stochastic policies): JAX float32 T^π equals an independent Fraction "
        "recomputation and the inequality holds exactly",
    )


def check_optimality_contraction(
    operator: Callable = rl.bellman_optimality,
    *,
    num_mdps: int = 12,
    pairs_per_mdp: int = 60,
    factor: Fraction = _ONE,
) -> Evidence:
    """‖T v − T u‖_∞ ≤ factor·γ‖v − u‖_∞ for the optimality operator (exact, generated cases)."""
    n_checked = 0
    op = jax.jit(jax.vmap(operator, in_axes=(None, 0)))
    for mdp, rng in _mdp_cases(num_mdps, seed=2):
        S, A = mdp.n_states, mdp.n_actions
        g = _q(mdp.gamma)
        vs = _dyadic(rng, (pairs_per_mdp, S), 64, 8)
        # Half of the pairs are close (u = v + small) so that maximisers coincide or swap.
        us = np.where(
            np.arange(pairs_per_mdp)[:, None] % 2 == 0,
            _dyadic(rng, (pairs_per_mdp, S), 64, 8),
            vs + _dyadic(rng, (pairs_per_mdp, S), 2, 8),
        ).astype(np.float32)
        P, R = _qa(mdp.P), _qa(mdp.R)
        r = _expected_reward_frac(P, R)
        tv, tu = np.asarray(op(mdp, vs)), np.asarray(op(mdp, us))
        for k in range(pairs_per_mdp):
            v, u = _qa(vs[k]), _qa(us[k])
            ref_v = [
                max(r[s][a] + g * sum(P[s][a][t] * v[t] for t in range(S)) for a in range(A))
                for s in range(S)
            ]
            ref_u = [
                max(r[s][a] + g * sum(P[s][a][t] * u[t] for t in range(S)) for a in range(A))
                for s in range(S)
            ]
            if _qa(tv[k]) != ref_v or _qa(tu[k]) != ref_u:
                return Evidence(
                    False,
                    "JAX optimality operator differs from the exact recomputation",
                    {"gamma": str(g), "v": [str(x) for x in v]},
                )
            lhs, rhs = (
                _sup([a - b for a, b in zip(ref_v, ref_u, strict=True)]),
                factor * g * _sup([a - b for a, b in zip(v, u, strict=True)]),
            )
            if lhs > rhs:
                return Evidence(
                    False,
                    f"‖Tv − Tu‖ = {lhs} > {factor}·γ‖v − u‖ = {rhs}",
                    {"gamma": str(g), "v": [str(x) for x in v], "u": [str(x) for x in u]},
                )
            n_checked += 1
    return Evidence(
        True,
        f"{n_checked} (MDP, v, u) cases from {num_mdps} dyadic MDPs: JAX float32 T equals the "
        "Fraction recomputation and ‖Tv − Tu‖_∞ ≤ γ‖v − u‖_∞ exactly",
    )


@claim(
    "rl: Bellman expectation operator is a gamma-contraction (exact)",
    "for generated dyadic MDPs, policies and value pairs, ‖T^π v − T^π u‖_∞ ≤ γ‖v − u‖_∞, with "
    "tljax.rl.bellman_expectation's float32 output equal to the exact value",
    "exact-enumerated",
    about="tljax.rl.bellman_expectation",
    tags=("rl", "dp"),
    scope="family",
    family=(
        "generated dyadic MDPs, policies and value pairs (check_expectation_contraction defaults)"
    ),
)
def _expectation_contraction_exact():
    return check_expectation_contraction()


@claim(
    "rl: Bellman optimality operator is a gamma-contraction (exact)",
    "for generated dyadic MDPs and value pairs, ‖T v − T u‖_∞ ≤ γ‖v − u‖_∞, with "
    "tljax.rl.bellman_optimality's float32 output equal to the exact value",
    "exact-enumerated",
    about="tljax.rl.bellman_optimality",
    tags=("rl", "dp"),
    scope="family",
    family="generated dyadic MDPs and value pairs (check_optimality_contraction defaults)",
)
def _optimality_contraction_exact():
    return check_optimality_contraction()


def check_expectation_contraction_symbolic(sizes=(2, 3)) -> Evidence:
    """sympy: for n-state MDPs with symbolic stochastic rows, T^π is a γ-contraction (see claim
    text)."""
    gamma = sp.Symbol("gamma", nonnegative=True)
    M = sp.Symbol("M", nonnegative=True)
    for n in sizes:
        p = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"p_{i}{j}", nonnegative=True))
        r = sp.Matrix(sp.symbols(f"r:{n}", real=True))
        u = sp.Matrix(sp.symbols(f"u:{n}", real=True))
        v = sp.Matrix(sp.symbols(f"v:{n}", real=True))
        a = sp.Matrix(sp.symbols(f"a:{n}", nonnegative=True))
        b = sp.Matrix(sp.symbols(f"b:{n}", nonnegative=True))

        def T(x, r=r, p=p):
            return r + gamma * p * x

        # (1) rewards cancel: T v − T u = γ P (v − u).
        if any(sp.expand(e) != 0 for e in T(v) - T(u) - gamma * p * (v - u)):
            return Evidence(False, f"n={n}: T v − T u ≠ γP(v − u)", {"n": n})
        for i in range(n):
            row_slack = 1 - sum(p[i, :])  # zero on stochastic rows
            diff_i = (T(v) - T(u))[i]
            # (2) upper: with v_j − u_j = M − a_j (a_j ≥ 0, i.e. v_j − u_j ≤ M),
            #     γM − (Tv − Tu)_i = γM·(1 − Σ_j p_ij) + γ Σ_j p_ij a_j.
            upper = (gamma * M - diff_i).subs({v[j]: u[j] + M - a[j] for j in range(n)})
            tail_up = gamma * sum(p[i, j] * a[j] for j in range(n))
            # (3) lower: with v_j − u_j = b_j − M (b_j ≥ 0, i.e. v_j − u_j ≥ −M), symmetric.
            lower = (gamma * M + diff_i).subs({v[j]: u[j] - M + b[j] for j in range(n)})
            tail_lo = gamma * sum(p[i, j] * b[j] for j in range(n))
            for expr, tail in ((upper, tail_up), (lower, tail_lo)):
                if (
                    sp.expand(expr - gamma * M * row_slack - tail) != 0
                    or tail.is_nonnegative is not True
                ):
                    return Evidence(
                        False, f"n={n}, row {i}: identity or sign step failed", {"n": n, "row": i}
                    )
    return Evidence(
        True,
        f"sympy, n ∈ {tuple(sizes)} states, any number of actions and any policy (P_π has "
        "stochastic rows p_ij ≥ 0, Σ_j p_ij = 1), symbolic r, γ ≥ 0, v, u: expand(Tv − Tu − "
        "γP(v−u)) "
        "= 0 and γM ∓ (Tv − Tu)_i = γM(1 − Σ_j p_ij) + γΣ_j p_ij c_j with c_j ≥ 0 whenever "
        "|v_j − u_j| ≤ M (identity by expand, sign from sympy assumptions); M = ‖v − u‖_∞ gives "
        "the claim. Larger n is the same identity but is not checked; this is the maths, not the "
        "JAX code",
    )


@claim(
    "rl: Bellman expectation operator is a gamma-contraction (symbolic, n <= 3)",
    "for every MDP with 2 or 3 states, every policy π, γ ≥ 0 and value functions v, u: "
    "‖T^π v − T^π u‖_∞ ≤ γ‖v − u‖_∞ (the mathematical operator T^π v = r_π + γ P_π v)",
    "symbolic",
    about="tljax.rl.bellman_expectation",
    tags=("rl", "dp", "symbolic"),
    scope="general",
)
def _expectation_contraction_symbolic():
    return check_expectation_contraction_symbolic()


# ----------------------------------------------------------------------------------------------
# Policy iteration and value iteration.


def _bellman_residual_exact(P, r, g, pol, v):
    """max_s |max_a Q(s,a) − v(s)| and whether pol(s) attains the max, exact, independent of
    _exact."""
    S, A = len(P), len(P[0])
    worst = F(0)
    for s in range(S):
        q = [r[s][a] + g * sum(P[s][a][t] * v[t] for t in range(S)) for a in range(A)]
        worst = max(worst, abs(max(q) - v[s]), max(q) - q[pol[s]])
    return worst


def check_policy_iteration_fixed_point(
    solver: Callable = rl.policy_iteration, *, num_mdps: int = 15
) -> Evidence:
    """The policy returned by `solver` is greedy w.r.t. its own exact value, so V^π = T V^π = V*."""
    solver = jax.jit(solver)
    for mdp, _ in _mdp_cases(num_mdps, seed=3):
        pol = np.asarray(solver(mdp).policy)
        v = list(rl.evaluate_policy_exact(mdp, pol))
        P, R = _qa(mdp.P), _qa(mdp.R)
        res = _bellman_residual_exact(P, _expected_reward_frac(P, R), _q(mdp.gamma), pol, v)
        if res != 0:
            return Evidence(
                False,
                f"exact Bellman residual {res} ≠ 0",
                {
                    "P": mdp.P.tolist(),
                    "R": mdp.R.tolist(),
                    "gamma": float(mdp.gamma),
                    "policy": pol.tolist(),
                    "residual": str(res),
                },
            )
    return Evidence(
        True,
        f"{num_mdps} dyadic MDPs (2-4 states, 2-3 actions): V^π of the float32 policy_iteration "
        "result, solved exactly over ℚ (flint fmpq_mat), satisfies max_a Q(s,a) = V(s) = Q(s,π(s)) "
        "exactly (Bellman residual recomputed in Fractions is 0)",
    )


@claim(
    "rl: policy iteration returns an exact fixed point",
    "on generated dyadic MDPs, the policy π returned by policy_iteration satisfies T V^π = V^π = "
    "T^π V^π "
    "in exact rational arithmetic (hence π is optimal)",
    "exact-enumerated",
    about="tljax.rl.policy_iteration",
    tags=("rl", "dp"),
    scope="family",
    family="generated dyadic MDPs (check defaults)",
)
def _policy_iteration_fixed_point():
    return check_policy_iteration_fixed_point()


def check_value_iteration_bound(
    solver: Callable = rl.value_iteration,
    *,
    num_mdps: int = 12,
    epsilons=_VI_EPSILONS,
) -> Evidence:
    """‖V^π − V*‖_∞ ≤ ε for π returned by `solver(mdp, eps=ε)`; V^π, V* exact. Also the exact VI."""
    n = 0
    run = jax.jit(lambda mdp, eps: solver(mdp, eps=eps))
    for mdp, _ in _mdp_cases(num_mdps, seed=4):
        _, v_star, _ = rl.policy_iteration_exact(mdp)
        for eps in epsilons:
            res = run(mdp, jnp.float32(eps))
            pol = np.asarray(res.policy)
            gap = _sup(
                [a - b for a, b in zip(rl.evaluate_policy_exact(mdp, pol), v_star, strict=True)]
            )
            if not bool(res.converged) or gap > eps:
                return Evidence(
                    False,
                    f"float32 value_iteration: ‖V^π − V*‖ = {float(gap):.6g} vs ε = {eps}"
                    f" (converged={bool(res.converged)})",
                    {
                        "P": mdp.P.tolist(),
                        "R": mdp.R.tolist(),
                        "gamma": float(mdp.gamma),
                        "eps": str(eps),
                        "policy": pol.tolist(),
                    },
                )
            _, pol_x, _, diff = rl.value_iteration_exact(mdp, eps)
            gap_x = _sup(
                [a - b for a, b in zip(rl.evaluate_policy_exact(mdp, pol_x), v_star, strict=True)]
            )
            g = _q(mdp.gamma)
            if gap_x > 2 * g * diff / (1 - g) or not gap_x < eps:
                return Evidence(
                    False,
                    f"exact value iteration: gap {gap_x} exceeds 2γ/(1−γ)·{diff} or ε = {eps}",
                    {"gamma": str(g), "eps": str(eps)},
                )
            n += 1
    return Evidence(
        True,
        f"{n} (MDP, ε) cases, ε ∈ {{1/2, 1/10, 1/100}}: the greedy policy from float32 "
        "value_iteration (ε passed as float32) has ‖V^π − V*‖_∞ ≤ ε with V^π and V* = V^{π*} "
        "(exact policy iteration) "
        "solved over ℚ; exact value iteration also meets 2γ/(1−γ)‖V_{k+1} − V_k‖ < ε",
    )


@claim(
    "rl: value iteration error bound holds",
    "on generated dyadic MDPs, value_iteration(mdp, eps) stops and its greedy policy π satisfies "
    "‖V^π − V*‖_∞ ≤ ε (exact evaluation of V^π and V*)",
    "exact-enumerated",
    about="tljax.rl.value_iteration",
    tags=("rl", "dp"),
    scope="family",
    family="generated dyadic MDPs and tolerances (check defaults)",
)
def _value_iteration_bound():
    return check_value_iteration_bound()


# ----------------------------------------------------------------------------------------------
# GAE, λ-returns, TD(λ).

_DISCOUNTS = (F(0), F(1, 2), F(3, 4), F(1))


def _trajectory_cases(num: int, seed: int):
    """Random dyadic trajectories: rewards and values in multiples of 1/4 (|·| ≤ 1), T ≤ 5."""
    rng = np.random.default_rng(seed)
    for _ in range(num):
        T = int(rng.integers(1, 6))
        r = _dyadic(rng, (T,), 4, 4)
        values = _dyadic(rng, (T + 1,), 4, 4)
        disc = np.array([float(_DISCOUNTS[i]) for i in rng.integers(0, 4, size=T)], np.float32)
        yield r, disc, values


def _ref_lambda_return(r, d, v_next, lam):
    """Forward sum: G^λ_t = Σ_{k≥t} (Π_{j<k} γ_j λ)(r_k + γ_k (1−λ) v_k) + (Π γ_j λ) γ_{T−1} λ
    v_{T−1}, exact."""
    T = len(r)
    out = []
    for t in range(T):
        total, weight = F(0), F(1)
        for k in range(t, T):
            last = k == T - 1
            # At the last step the whole continuation bootstraps from v_{T−1}.
            total += weight * (r[k] + d[k] * (v_next[k] if last else (1 - lam) * v_next[k]))
            weight *= d[k] * lam
        out.append(total)
    return out


def _ref_td_errors(r, d, values):
    return [r[t] + d[t] * values[t + 1] - values[t] for t in range(len(r))]


def check_gae_identities(
    gae_fn: Callable = rl.gae,
    lambda_fn: Callable = rl.lambda_returns,
    *,
    which: str = "all",
    num: int = 300,
) -> Evidence:
    """GAE(0) = δ, GAE(1) = return − V, GAE(λ) + V = λ-return, on dyadic trajectories (exact)."""
    lambdas = {"zero": (F(0),), "one": (F(1),), "lambda_return": (F(0), F(1, 2), F(3, 4), F(1))}
    lambdas["all"] = lambdas["lambda_return"]
    gae_fn, lambda_fn = jax.jit(gae_fn), jax.jit(lambda_fn)  # one compilation per trajectory length
    n = 0
    for r, disc, values in _trajectory_cases(num, seed=5):
        rq, dq, vq = _qa(r), _qa(disc), _qa(values)
        for lam in lambdas[which]:
            adv = _qa(
                gae_fn(jnp.asarray(r), jnp.asarray(disc), jnp.float32(lam), jnp.asarray(values))
            )
            case = {
                "r_t": [str(x) for x in rq],
                "discount_t": [str(x) for x in dq],
                "values": [str(x) for x in vq],
                "lambda_": str(lam),
            }
            if lam == 0 and which in ("zero", "all") and adv != _ref_td_errors(rq, dq, vq):
                return Evidence(
                    False, "GAE(λ=0) ≠ TD error δ_t", {**case, "gae": [str(x) for x in adv]}
                )
            if lam == 1 and which in ("one", "all"):
                ret = _ref_lambda_return(rq, dq, vq[1:], F(1))
                if adv != [g - v for g, v in zip(ret, vq[:-1], strict=True)]:
                    return Evidence(
                        False,
                        "GAE(λ=1) ≠ bootstrapped return − V(s_t)",
                        {**case, "gae": [str(x) for x in adv]},
                    )
            if which in ("lambda_return", "all"):
                ref = _ref_lambda_return(rq, dq, vq[1:], lam)
                lam_jax = _qa(
                    lambda_fn(
                        jnp.asarray(r), jnp.asarray(disc), jnp.asarray(values[1:]), jnp.float32(lam)
                    )
                )
                if [a + v for a, v in zip(adv, vq[:-1], strict=True)] != ref or lam_jax != ref:
                    return Evidence(
                        False,
                        "GAE(λ) + V(s_t) ≠ λ-return (or lambda_returns ≠ forward-sum λ-return)",
                        {
                            **case,
                            "gae_plus_v": [str(a + v) for a, v in zip(adv, vq[:-1], strict=True)],
                            "lambda_returns": [str(x) for x in lam_jax],
                            "exact": [str(x) for x in ref],
                        },
                    )
            n += 1
    return Evidence(
        True,
        f"{n} (trajectory, λ) cases, T ≤ 5, rewards/values in ¼ℤ ∩ [−1, 1], γ_t ∈ {{0, ½, ¾, 1}}: "
        "float32 JAX outputs (exact on these inputs) equal independent Fraction forward sums",
    )


@claim(
    "rl: GAE(lambda=0) equals the TD error",
    "gae(r, γ, 0, V)_t = r_t + γ_t V(s_{t+1}) − V(s_t) on generated dyadic trajectories",
    "exact-enumerated",
    about="tljax.rl.gae",
    tags=("rl", "returns"),
    scope="family",
    family="generated dyadic trajectories (check defaults)",
)
def _gae_zero():
    return check_gae_identities(which="zero")


@claim(
    "rl: GAE(lambda=1) equals return minus value",
    "gae(r, γ, 1, V)_t = Σ_{k≥t} (Π γ) r_k + (Π γ) V(s_T) − V(s_t) on generated dyadic "
    "trajectories",
    "exact-enumerated",
    about="tljax.rl.gae",
    tags=("rl", "returns"),
    scope="family",
    family="generated dyadic trajectories (check defaults)",
)
def _gae_one():
    return check_gae_identities(which="one")


@claim(
    "rl: GAE plus value equals the lambda-return",
    "gae(r, γ, λ, V)_t + V(s_t) = lambda_returns(r, γ, V(s_{1..T}), λ)_t = the forward-sum "
    "λ-return, "
    "λ ∈ {0, 1/2, 3/4, 1}, on generated dyadic trajectories",
    "exact-enumerated",
    about="tljax.rl.gae, tljax.rl.lambda_returns",
    tags=("rl", "returns"),
    scope="family",
    family="generated dyadic trajectories, lambda in {0, 1/2, 3/4, 1}",
)
def _gae_lambda_return():
    return check_gae_identities(which="lambda_return")


def check_td_lambda_views(
    forward: Callable = rl.td_lambda_forward,
    backward: Callable = rl.td_lambda_backward,
    *,
    num: int = 200,
) -> Evidence:
    """Offline forward (λ-return) and backward (accumulating traces) TD(λ) give the same table
    (exact)."""
    rng = np.random.default_rng(6)
    n_states = 3  # few states so that episodes revisit them (where the trace matters)
    fwd_j, bwd_j = jax.jit(forward), jax.jit(backward)
    for _ in range(num):
        T = int(rng.integers(1, 6))
        s = rng.integers(0, n_states, size=T + 1).astype(np.int32)
        r = _dyadic(rng, (T,), 4, 4)
        disc = np.array([float(_DISCOUNTS[i]) for i in rng.integers(0, 4, size=T)], np.float32)
        v = _dyadic(rng, (n_states,), 4, 4)
        lam, alpha = [F(0), F(1, 2), F(3, 4), F(1)][int(rng.integers(0, 4))], F(1, 2)
        args = (
            jnp.asarray(v),
            jnp.asarray(s),
            jnp.asarray(r),
            jnp.asarray(disc),
            jnp.float32(lam),
            jnp.float32(alpha),
        )
        out_f, out_b = _qa(fwd_j(*args)), _qa(bwd_j(*args))
        vq, rq, dq = _qa(v), _qa(r), _qa(disc)
        g = _ref_lambda_return(rq, dq, [vq[x] for x in s[1:]], lam)
        ref = list(vq)
        for t in range(T):
            ref[s[t]] += alpha * (g[t] - vq[s[t]])
        if out_f != ref or out_b != ref:
            return Evidence(
                False,
                "forward and backward offline TD(λ) differ (or differ from the exact λ-return "
                "update)",
                {
                    "states": s.tolist(),
                    "r_t": [str(x) for x in rq],
                    "discount_t": [str(x) for x in dq],
                    "v": [str(x) for x in vq],
                    "lambda_": str(lam),
                    "forward": [str(x) for x in out_f],
                    "backward": [str(x) for x in out_b],
                    "exact": [str(x) for x in ref],
                },
            )
    return Evidence(
        True,
        f"{num} random episodes (3 states, T ≤ 5, λ ∈ {{0, ½, ¾, 1}}, α = ½, dyadic data): "
        "float32 td_lambda_forward and td_lambda_backward both equal the exact Fraction update "
        "Σ_t α(G^λ_t − V(s_t)) e_{s_t}",
    )


@claim(
    "rl: forward and backward TD(lambda) agree",
    "offline tabular TD(λ) via λ-returns (forward view) and via accumulating eligibility traces "
    "(backward "
    "view) produce the same value table, on generated dyadic episodes",
    "exact-enumerated",
    about="tljax.rl.td_lambda_forward, tljax.rl.td_lambda_backward",
    tags=("rl", "td"),
    scope="family",
    family="generated dyadic episodes (check defaults)",
)
def _td_lambda_views():
    return check_td_lambda_views()


# ----------------------------------------------------------------------------------------------
# PPO clipping.


def check_ppo_clipping_symbolic() -> Evidence:
    """Region-by-region sympy proof of the two clipping facts for L(ρ, A) = min(ρA, clip(ρ)A)."""
    eps, t, w = sp.symbols("epsilon t w", positive=True)

    def L(r, A):
        return sp.Min(r * A, sp.Min(sp.Max(r, 1 - eps), 1 + eps) * A)

    A_pos = sp.Symbol("A", positive=True)
    A_neg = -sp.Symbol("B", positive=True)
    # ρ parametrised so sympy knows the region: above 1+ε, below 1−ε, or inside (ρ = 1−ε +
    # 2ε·w/(1+w)).
    regions = {
        "above": 1 + eps + t,
        "below": 1 - eps - t,
        "inside": 1 - eps + 2 * eps * w / (1 + w),
    }
    binds = {("above", "pos"), ("below", "neg")}
    for (rname, rho), (aname, A) in itertools.product(
        regions.items(), (("pos", A_pos), ("neg", A_neg))
    ):
        val = sp.simplify(L(rho, A))
        if val.has(sp.Min, sp.Max):
            return Evidence(
                False, f"sympy could not resolve min/clip in region ρ {rname}, A {aname}: {val}"
            )
        # L ≤ ρA: the difference must be provably ≤ 0.
        if sp.simplify(val - rho * A).is_nonpositive is not True:
            return Evidence(
                False, f"L − ρA not provably ≤ 0 for ρ {rname}, A {aname}", {"L": str(val)}
            )
        # dL/dρ = dL/d(parameter) / dρ/d(parameter); zero exactly where the clip binds, A elsewhere.
        param = w if rname == "inside" else t
        dL = sp.simplify(sp.diff(val, param) / sp.diff(rho, param))
        want = 0 if (rname, aname) in binds else A
        if sp.simplify(dL - want) != 0:
            return Evidence(False, f"dL/dρ = {dL}, expected {want} for ρ {rname}, A {aname}")
    return Evidence(
        True,
        "sympy, ε > 0 symbolic, ρ parametrised per region (ρ > 1+ε, ρ < 1−ε, 1−ε < ρ < 1+ε) × "
        "(A > 0, A < 0): Min/Max resolve to one branch, L − ρA is provably ≤ 0, and dL/dρ "
        "simplifies to 0 where the clip binds (ρ > 1+ε, A > 0 or ρ < 1−ε, A < 0) and to A "
        "elsewhere. A = 0 (L ≡ 0) and the kinks ρ = 1 ± ε are not covered; this is the maths",
    )


@claim(
    "rl: PPO clipping facts (symbolic, piecewise)",
    "for L(ρ, A) = min(ρA, clip(ρ, 1−ε, 1+ε)A), ε > 0: L ≤ ρA, and ∂L/∂ρ = 0 where the clip binds, "
    "∂L/∂ρ = A elsewhere (off the kinks ρ = 1 ± ε, A ≠ 0)",
    "symbolic",
    about="tljax.rl.clipped_surrogate_objective",
    tags=("rl", "ppo", "symbolic"),
    scope="general",
)
def _ppo_clipping_symbolic():
    return check_ppo_clipping_symbolic()


def check_ppo_clipping_grid(objective: Callable = rl.clipped_surrogate_objective) -> Evidence:
    """On a dyadic grid: JAX L ≤ ρA exactly, and jax.grad w.r.t. ρ is 0 where the clip binds, A
    elsewhere."""
    ratios = np.arange(0, 97, dtype=np.float32) / 32  # 0, 1/32, …, 3
    advs = np.arange(-16, 17, dtype=np.float32) / 8  # −2, …, 2
    rr, aa = (x.ravel() for x in np.meshgrid(ratios, advs, indexing="ij"))
    n = n_grad = 0
    for eps in (F(1, 4), F(1, 8), F(3, 16)):
        f = jax.jit(jax.vmap(lambda r, a, e=float(eps): objective(r, a, e)))
        g = jax.jit(jax.vmap(jax.grad(lambda r, a, e=float(eps): objective(r, a, e))))
        vals, grads = np.asarray(f(rr, aa)), np.asarray(g(rr, aa))
        for r, a, val, grad in zip(rr, aa, vals, grads, strict=True):
            rq, aq = _q(r), _q(a)
            exact = min(rq * aq, min(max(rq, 1 - eps), 1 + eps) * aq)
            if _q(val) != exact or exact > rq * aq:
                return Evidence(
                    False,
                    f"L({rq}, {aq}) = {_q(val)} (exact {exact}) vs ρA = {rq * aq}, ε = {eps}",
                    {"ratio": str(rq), "adv": str(aq), "eps": str(eps), "L": str(_q(val))},
                )
            n += 1
            if rq in (1 - eps, 1 + eps) or aq == 0:
                continue  # kinks: the derivative is not defined
            binds = (rq > 1 + eps and aq > 0) or (rq < 1 - eps and aq < 0)
            if _q(grad) != (0 if binds else aq):
                return Evidence(
                    False,
                    f"dL/dρ at ρ={rq}, A={aq}, ε={eps} is {_q(grad)}, expected "
                    f"{0 if binds else aq}",
                    {"ratio": str(rq), "adv": str(aq), "eps": str(eps), "grad": str(_q(grad))},
                )
            n_grad += 1
    return Evidence(
        True,
        f"exhaustive on the grid ρ ∈ {{k/32: 0 ≤ k ≤ 96}} × A ∈ {{k/8: |k| ≤ 16}} × ε ∈ "
        f"{{1/4, 1/8, 3/16}}: {n} values of the float32 JAX objective equal the exact Fraction "
        "value and are ≤ ρA; "
        f"{n_grad} jax.grad values (kinks and A = 0 skipped) are exactly 0 where the clip binds, A "
        f"elsewhere",
    )


@claim(
    "rl: PPO clipped objective bounds and gradients (exact grid)",
    "clipped_surrogate_objective(ρ, A, ε) ≤ ρA and its jax.grad in ρ is 0 where the clip binds, A "
    "elsewhere, exhaustively on a stated dyadic grid of (ρ, A, ε)",
    "exact-enumerated",
    about="tljax.rl.clipped_surrogate_objective",
    tags=("rl", "ppo"),
    scope="family",
    family="the stated dyadic grid of (rho, A, eps)",
)
def _ppo_clipping_grid():
    return check_ppo_clipping_grid()


# ----------------------------------------------------------------------------------------------
# Markov kernels.


def _random_kernel_chain(rng):
    sizes = [int(x) for x in rng.integers(1, 4, size=4)]
    return [_dyadic_stochastic(rng, sizes[i], sizes[i + 1]) for i in range(3)]


def check_kernel_composition(compose_fn: Callable = rl.compose, *, num: int = 150) -> Evidence:
    """(AB)C = A(BC) and rows of AB sum to 1, exactly; JAX `compose` equals the exact product."""
    rng = np.random.default_rng(7)
    compose_fn = jax.jit(compose_fn)
    for _ in range(num):
        A, B, C = _random_kernel_chain(rng)
        Aq, Bq, Cq = _qa(A), _qa(B), _qa(C)

        def mm(X, Y):
            return [
                [sum(X[i][k] * Y[k][j] for k in range(len(Y))) for j in range(len(Y[0]))]
                for i in range(len(X))
            ]

        AB, BC = mm(Aq, Bq), mm(Bq, Cq)
        left, right = mm(AB, Cq), mm(Aq, BC)
        jab = _qa(compose_fn(jnp.asarray(A), jnp.asarray(B)))
        jleft = _qa(compose_fn(compose_fn(jnp.asarray(A), jnp.asarray(B)), jnp.asarray(C)))
        jright = _qa(compose_fn(jnp.asarray(A), compose_fn(jnp.asarray(B), jnp.asarray(C))))
        case = {"A": A.tolist(), "B": B.tolist(), "C": C.tolist()}
        if left != right or jleft != left or jright != right:
            return Evidence(
                False, "composition is not associative (or JAX compose ≠ exact product)", case
            )
        if jab != AB or any(sum(row) != 1 for row in jab) or any(sum(row) != 1 for row in jleft):
            return Evidence(
                False, "composed kernel's rows do not sum to 1 exactly", {**case, "AB": jab}
            )
    return Evidence(
        True,
        f"{num} chains of 3 random dyadic stochastic matrices (sizes 1-3, entries in ⅛ℤ): "
        "float32 JAX compose equals the exact Fraction product, (AB)C = A(BC) and all rows sum "
        "to 1 exactly",
    )


@claim(
    "rl: kernel composition is associative and preserves row sums",
    "for generated dyadic stochastic matrices A, B, C: compose(compose(A, B), C) = compose(A, "
    "compose(B, C)) "
    "and every row of a composition sums to 1 (exact)",
    "exact-enumerated",
    about="tljax.rl.compose",
    tags=("rl", "kernels"),
    scope="family",
    family="generated dyadic stochastic matrices (check defaults)",
)
def _kernel_composition():
    return check_kernel_composition()


def check_mh_detailed_balance(
    mh_fn: Callable = rl.metropolis_hastings_exact, *, num: int = 150
) -> Evidence:
    """The exact MH matrix is stochastic, satisfies detailed balance and has the target as
    stationary law."""
    rng = np.random.default_rng(8)
    for _ in range(num):
        n = int(rng.integers(2, 6))
        Q = _dyadic_stochastic(rng, n, n)  # asymmetric, often with zeros
        target = [F(int(k)) for k in rng.integers(1, 10, size=n)]
        K = mh_fn(Q, target)
        Kq = [[rl.to_fraction(x) for x in row] for row in np.asarray(K, dtype=object)]
        case = {"Q": Q.tolist(), "target": [str(x) for x in target]}
        if any(sum(row) != 1 or min(row) < 0 for row in Kq):
            return Evidence(
                False,
                "MH matrix is not stochastic",
                {**case, "K": [[str(x) for x in r] for r in Kq]},
            )
        for x in range(n):
            for y in range(x + 1, n):
                if target[x] * Kq[x][y] != target[y] * Kq[y][x]:
                    return Evidence(
                        False,
                        f"detailed balance fails at ({x}, {y}): "
                        f"π(x)K(x,y) = {target[x] * Kq[x][y]} ≠ π(y)K(y,x) = "
                        f"{target[y] * Kq[y][x]}",
                        {**case, "x": x, "y": y},
                    )
        z = sum(target)
        pi = [t / z for t in target]
        if [sum(pi[x] * Kq[x][y] for x in range(n)) for y in range(n)] != pi:
            return Evidence(False, "target is not stationary for the MH matrix", case)
    return Evidence(
        True,
        f"{num} random dyadic proposals (2-5 states, asymmetric, with zeros) and integer targets: "
        "metropolis_hastings_exact is stochastic, π(x)K(x,y) = π(y)K(y,x) for all pairs and πK = "
        "π, "
        "all in Fractions",
    )


@claim(
    "rl: Metropolis-Hastings kernel satisfies detailed balance",
    "for generated proposals Q and targets π, the exact MH matrix K is stochastic and π(x)K(x,y) = "
    "π(y)K(y,x)",
    "exact-enumerated",
    about="tljax.rl.metropolis_hastings_exact",
    tags=("rl", "kernels"),
    scope="family",
    family="generated proposals and targets (check defaults)",
)
def _mh_detailed_balance():
    return check_mh_detailed_balance()


def check_stationary_exact(
    solver: Callable = rl.stationary_distribution_exact, *, num: int = 100
) -> Evidence:
    """stationary_distribution_exact returns π ≥ 0 with Σπ = 1 and πK = π exactly (irreducible
    K)."""
    rng = np.random.default_rng(9)
    for _ in range(num):
        n = int(rng.integers(2, 6))
        # Mix with a cycle so the chain is irreducible (unique stationary law).
        K = ((_dyadic_stochastic(rng, n, n) + np.roll(np.eye(n), 1, axis=1)) / 2).astype(np.float32)
        Kq = _qa(K)
        pi = list(solver(K))
        piK = [sum(pi[x] * Kq[x][y] for x in range(n)) for y in range(n)]
        if piK != pi or sum(pi) != 1 or min(pi) < 0:
            return Evidence(
                False,
                "πK ≠ π or π not a distribution",
                {"K": K.tolist(), "pi": [str(x) for x in pi]},
            )
    return Evidence(
        True, f"{num} random irreducible dyadic chains (2-5 states): πK = π, Σπ = 1, π ≥ 0 exactly"
    )


@claim(
    "rl: exact stationary distribution is stationary",
    "for generated irreducible dyadic chains K, stationary_distribution_exact(K) = π satisfies πK "
    "= π and Σπ = 1",
    "exact-enumerated",
    about="tljax.rl.stationary_distribution_exact",
    tags=("rl", "kernels"),
    scope="family",
    family="generated irreducible dyadic chains (check defaults)",
)
def _stationary_exact():
    return check_stationary_exact()
