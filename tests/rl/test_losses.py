"""Policy-gradient losses against rlax (when installed) and hand-derived formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import rl


def _batch(seed, T=6, A=3):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(T, A)).astype(np.float32))
    a = jnp.asarray(rng.integers(0, A, size=T).astype(np.int32))
    adv = jnp.asarray(rng.normal(size=T).astype(np.float32))
    w = jnp.asarray((rng.uniform(size=T) > 0.3).astype(np.float32))
    return logits, a, adv, w


def test_policy_gradient_loss_formula_and_gradient():
    logits, a, adv, w = _batch(0)
    p = np.asarray(jax.nn.softmax(logits))
    T = len(a)
    ref = -np.mean([np.log(p[t, a[t]]) * adv[t] * w[t] for t in range(T)])
    assert float(rl.policy_gradient_loss(logits, a, adv, w)) == pytest.approx(ref, rel=1e-5)
    # ∂/∂logits of −log softmax(a) is (p − onehot(a)); scaled by adv·w/T.
    onehot = np.eye(logits.shape[1])[np.asarray(a)]
    ref_grad = (p - onehot) * (np.asarray(adv) * np.asarray(w))[:, None] / T
    np.testing.assert_allclose(
        jax.grad(rl.policy_gradient_loss)(logits, a, adv, w), ref_grad, rtol=1e-5, atol=1e-7
    )
    # advantages are treated as constants by default
    assert (
        float(jnp.abs(jax.grad(rl.policy_gradient_loss, argnums=2)(logits, a, adv, w)).sum()) == 0.0
    )


def test_clipped_surrogate_by_hand():
    ratios = jnp.array([0.5, 0.9, 1.5, 1.5, 0.5])
    adv = jnp.array([1.0, 1.0, 1.0, -1.0, -1.0])
    # min(ρA, clip(ρ)A) with ε = 0.2: 0.5, 0.9, 1.2, −1.5, −0.8
    np.testing.assert_allclose(
        rl.clipped_surrogate_objective(ratios, adv, 0.2), [0.5, 0.9, 1.2, -1.5, -0.8], rtol=1e-6
    )
    assert float(rl.clipped_surrogate_loss(ratios, adv, 0.2)) == pytest.approx(
        -(0.5 + 0.9 + 1.2 - 1.5 - 0.8) / 5
    )


def test_entropy_and_value_loss_by_hand():
    logits = jnp.log(jnp.array([[0.5, 0.5], [1.0, 1e-30]]))
    np.testing.assert_allclose(rl.entropy_loss(logits), -(np.log(2) + 0.0) / 2, rtol=1e-5)
    assert bool(jnp.isfinite(rl.entropy_loss(jnp.array([[0.0, -jnp.inf]]))))
    assert float(rl.value_loss(jnp.array([1.0, 2.0]), jnp.array([2.0, 0.0]))) == pytest.approx(
        (0.5 + 2.0) / 2
    )
    # PPO2 value clipping: v moved from 0 to 1 but clipped to 0.2; target 1 ⇒ max(0, 0.32)
    got = rl.value_loss(
        jnp.array([1.0]), jnp.array([1.0]), v_old_t=jnp.array([0.0]), clip_epsilon=0.2
    )
    assert float(got) == pytest.approx(0.5 * 0.8**2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_losses_against_rlax(rlax):
    logits, a, adv, w = _batch(1)
    np.testing.assert_allclose(
        rl.policy_gradient_loss(logits, a, adv, w),
        rlax.policy_gradient_loss(logits, a, adv, w),
        rtol=1e-5,
    )
    np.testing.assert_allclose(rl.entropy_loss(logits, w), rlax.entropy_loss(logits, w), rtol=1e-5)
    ratios = jnp.exp(jnp.asarray(np.random.default_rng(2).normal(size=6).astype(np.float32)) * 0.5)
    np.testing.assert_allclose(
        rl.clipped_surrogate_loss(ratios, adv, 0.2),
        rlax.clipped_surrogate_pg_loss(ratios, adv, 0.2),
        rtol=1e-5,
    )
    v, target = adv, adv[::-1]
    np.testing.assert_allclose(
        rl.value_loss(v, target), jnp.mean(rlax.l2_loss(target - v)), rtol=1e-6
    )
