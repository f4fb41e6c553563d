"""PPO on cart-pole: training reaches the stated return; the trained policy's behaviour on a
region."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import rl
from tljax.core import InputError
from tljax.proofs import policy_region_claim

TARGET = 150.0  # stated goal: mean episode return ≥ 150 (episodes truncated at 500 steps)
# Pole leaning and falling right (at 1 to 2 rad/s), cart near the centre and slow: pushing right
# (+10 N) is correct. Not from 0.5 rad/s: at that corner (x = -1, moving left) the trained policy's
# choice depends on the CPU XLA compiles training for (AVX-512: left by 0.8; AVX2: right by 0.75);
# from 1 rad/s its margin is >= 2.3 on both.
FALLING_RIGHT = ([-1.0, -0.5, 0.05, 1.0], [1.0, 0.5, 0.2094, 2.0])


def test_train_ppo_reaches_target_quickly(trained):
    curve = np.asarray(trained.curve)
    assert curve.shape == (rl.PPOConfig().num_iterations,)
    assert curve[:3].mean() < 60  # starts from a near-random policy
    assert curve[-10:].mean() >= TARGET
    assert trained.wall_seconds < 60
    greedy = rl.evaluate_policy(jax.random.key(1), trained.params, num_episodes=16)
    assert float(greedy.mean()) >= 195


def test_policy_prefers_pushing_right_when_pole_falls_right(trained):
    c = policy_region_claim(
        trained.params, *FALLING_RIGHT, name="rl: trained PPO pushes right when falling right"
    )
    assert c.method == "certified-bound"  # proved by tljax.bound (see test_certify.py)
    ev = c.check()
    assert ev.holds, ev.detail
    assert ev.detail.startswith("certified with tljax.bound"), ev.detail


def test_numeric_region_claim_is_marked_as_evidence_only(trained):
    c = policy_region_claim(
        trained.params, *FALLING_RIGHT, name="numeric", method="numeric", num_random=10_000
    )
    assert c.method == "numeric"
    ev = c.check()
    assert ev.holds, ev.counterexample
    assert "numeric only" in ev.detail


@pytest.mark.parametrize("method", ["certified-bound", "numeric"])
def test_wrong_region_claim_is_refuted_with_a_counterexample(trained, method):
    c = policy_region_claim(
        trained.params, *FALLING_RIGHT, name="wrong: pushes left", prefer=0, method=method
    )
    ev = c.check()
    assert not ev.holds
    cex = ev.counterexample
    lo, hi = FALLING_RIGHT
    state = jnp.array([cex[n] for n in ("x", "x_dot", "theta", "theta_dot")])
    assert all(lo[i] <= float(state[i]) <= hi[i] for i in range(4))
    # the counterexample is real: at that state the policy prefers action 1 over action 0
    assert float(rl.policy_logit_margin_fn(trained.params)(state)) > 0


def test_region_claim_rejects_bad_options(trained):
    with pytest.raises(InputError, match="prefer must be 0 or 1"):
        policy_region_claim(trained.params, *FALLING_RIGHT, name="x", prefer=2)
    with pytest.raises(InputError, match="method must be"):
        policy_region_claim(trained.params, *FALLING_RIGHT, name="x", method="exact")
    with pytest.raises(InputError, match="only apply to method='numeric'"):
        policy_region_claim(trained.params, *FALLING_RIGHT, name="x", num_random=10)


def test_margin_fn_is_logit_difference_and_traceable(trained):
    params = trained.params
    margin = rl.policy_logit_margin_fn(params)
    s = jnp.array([0.1, -0.2, 0.05, 0.3])
    logits = rl.policy_logits(params, s)
    assert float(margin(s)) == pytest.approx(float(logits[1] - logits[0]))
    jaxpr = jax.make_jaxpr(margin)(s)
    prims = {e.primitive.name for e in jaxpr.eqns}
    # an MLP margin: matmuls and tanh, no loops, branches or randomness for a bound pass to handle
    assert {"dot_general", "tanh"} <= prims, prims
    assert not prims & {"while", "scan", "cond", "random_bits", "random_wrap"}, prims


@pytest.mark.slow  # compiles a second training program (~5 s); the full run above covers training
def test_train_ppo_smoke_small_config():
    res = rl.train_ppo(
        jax.random.key(1), num_iterations=3, num_envs=2, num_steps=32, num_minibatches=2
    )
    assert res.curve.shape == (3,) and res.episodes.shape == (3,)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(res.params))


def test_train_ppo_rejects_indivisible_minibatches():
    with pytest.raises(ValueError, match="divisible by num_minibatches"):
        rl.train_ppo(jax.random.key(1), num_envs=3, num_steps=5, num_minibatches=2)
