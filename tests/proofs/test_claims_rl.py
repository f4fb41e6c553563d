"""Every claim about tljax.rl holds; deliberately wrong variants are refuted with a
counterexample."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import pytest

from tljax import rl
from tljax.proofs import check, registry
from tljax.proofs.claims import rl as _claims

RL_CLAIMS = sorted(name for name, c in registry().items() if "rl" in c.tags)


def test_rl_claims_are_registered():
    assert len(RL_CLAIMS) >= 14
    methods = {registry()[n].method for n in RL_CLAIMS}
    assert methods == {"exact-enumerated", "symbolic"}


@pytest.mark.parametrize("name", RL_CLAIMS)
def test_claim_holds(name):
    res = check(name)
    assert res.error is None, res.error
    assert res.holds, (res.evidence.detail, res.evidence.counterexample)
    assert res.evidence.detail


def _gae_wrong_discount(r_t, discount_t, lambda_, values):
    """GAE whose recursion discounts with γ² instead of γ (a plausible typo)."""
    delta = r_t + discount_t * values[1:] - values[:-1]

    def step(a_next, xs):
        d, g = xs
        a = d + g * g * lambda_ * a_next
        return a, a

    return jax.lax.scan(step, jnp.zeros(()), (delta, discount_t), reverse=True)[1]


def _td_lambda_replacing_traces(v, s_t, r_t, discount_t, lambda_, learning_rate):
    """Backward view with *replacing* traces: not equivalent to the λ-return update on revisits."""
    delta = r_t + discount_t * v[s_t[1:]] - v[s_t[:-1]]
    decay = jnp.concatenate([jnp.zeros((1,)), discount_t[:-1] * lambda_])

    def step(carry, xs):
        z, dv = carry
        s, d, k = xs
        z = jnp.maximum(k * z, jax.nn.one_hot(s, v.shape[0]))
        return (z, dv + learning_rate * d * z), None

    (_, dv), _ = jax.lax.scan(
        step, (jnp.zeros_like(v), jnp.zeros_like(v)), (s_t[:-1], delta, decay)
    )
    return v + dv


def _mh_without_hastings_correction(Q, target):
    """Metropolis acceptance min(1, π(y)/π(x)) used with an asymmetric proposal."""
    Qf, p = rl.fraction_array(Q), [Fraction(t) for t in target]
    n = len(p)
    K = [
        [Qf[x, y] * min(Fraction(1), p[y] / p[x]) if y != x else Fraction(0) for y in range(n)]
        for x in range(n)
    ]
    for x in range(n):
        K[x][x] = 1 - sum(K[x])
    return K


def _value_iteration_antigreedy(mdp, eps):
    """Runs value iteration correctly but returns argmin_a Q instead of the greedy policy."""
    res = rl.value_iteration(mdp, eps=eps)
    return res._replace(policy=jnp.argmin(rl.q_values(mdp, res.v), axis=-1))


WRONG_VARIANTS = {
    "gae with a wrong discount": lambda: _claims.check_gae_identities(
        gae_fn=_gae_wrong_discount, which="lambda_return"
    ),
    "td(lambda) with replacing traces": lambda: _claims.check_td_lambda_views(
        backward=_td_lambda_replacing_traces
    ),
    "ppo objective with max instead of min": lambda: _claims.check_ppo_clipping_grid(
        objective=lambda r, a, e: jnp.maximum(r * a, jnp.clip(r, 1 - e, 1 + e) * a)
    ),
    "undiscounted expectation operator": lambda: _claims.check_expectation_contraction(
        operator=lambda mdp, pol, v: rl.bellman_expectation(rl.MDP(mdp.P, mdp.R, 1.0), pol, v),
        num_mdps=3,
    ),
    "optimality operator with a min": lambda: _claims.check_optimality_contraction(
        operator=lambda mdp, v: jnp.min(rl.q_values(mdp, v), axis=-1), num_mdps=3
    ),
    "expectation operator claimed with modulus gamma/2": lambda: (
        _claims.check_expectation_contraction(factor=Fraction(1, 2), num_mdps=3)
    ),
    "optimality operator claimed with modulus gamma/2": lambda: (
        _claims.check_optimality_contraction(factor=Fraction(1, 2), num_mdps=3)
    ),
    "policy iteration stopped before improving": lambda: _claims.check_policy_iteration_fixed_point(
        solver=lambda mdp: rl.policy_iteration(mdp, max_iterations=0)
    ),
    "value iteration returning the worst greedy action": lambda: (
        _claims.check_value_iteration_bound(solver=_value_iteration_antigreedy, num_mdps=3)
    ),
    "value iteration with one backup": lambda: _claims.check_value_iteration_bound(
        solver=lambda mdp, eps: rl.value_iteration(mdp, eps=eps, max_iterations=1), num_mdps=3
    ),
    "composition with transposed second kernel": lambda: _claims.check_kernel_composition(
        compose_fn=lambda a, b: a @ (b.T if b.shape[0] == b.shape[1] else b), num=60
    ),
    "metropolis without hastings correction": lambda: _claims.check_mh_detailed_balance(
        mh_fn=_mh_without_hastings_correction
    ),
    "uniform 'stationary' distribution": lambda: _claims.check_stationary_exact(
        solver=lambda K: [rl.to_fraction(1.0) / K.shape[0]] * K.shape[0]
    ),
}


@pytest.mark.parametrize("name", sorted(WRONG_VARIANTS))
def test_wrong_variant_is_refuted(name):
    ev = WRONG_VARIANTS[name]()
    assert not ev.holds, ev.detail
    assert ev.counterexample is not None and ev.detail


def test_gae_counterexample_is_a_real_one():
    ev = _claims.check_gae_identities(gae_fn=_gae_wrong_discount, which="lambda_return")
    cex = ev.counterexample
    assert cex["gae_plus_v"] != cex["exact"]
    assert any(d not in ("0", "1") for d in cex["discount_t"])  # needs a discount with γ² ≠ γ


@pytest.mark.parametrize("which", ["expectation", "optimality"])
def test_too_small_contraction_modulus_is_refuted_by_the_inequality(which):
    fn = (
        _claims.check_expectation_contraction
        if which == "expectation"
        else _claims.check_optimality_contraction
    )
    ev = fn(factor=Fraction(1, 2), num_mdps=3)
    assert not ev.holds and "> 1/2·γ‖v − u‖" in ev.detail
