"""Returns, advantages and TD errors: against rlax (when installed) and independent numpy loops."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import rl
from tljax.core._errors import ShapeMismatchError


def _traj(seed, T=7):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=T).astype(np.float32)
    disc = (0.9 * (rng.uniform(size=T) > 0.2)).astype(np.float32)  # some terminations
    values = rng.normal(size=T + 1).astype(np.float32)
    return r, disc, values


def _np_n_step(r, d, v, n):
    """Forward sums, per step: Σ_{k<m} (Π γ) r + (Π γ) v_{t+m-1}."""
    T = len(r)
    out = np.zeros(T)
    for t in range(T):
        m = min(n, T - t)
        acc, w = 0.0, 1.0
        for k in range(m):
            acc += w * r[t + k]
            w *= d[t + k]
        out[t] = acc + w * v[t + m - 1]
    return out


def _np_lambda_return(r, d, v, lam):
    """λ-return as the λ-weighted average of n-step returns (forward view, constant λ)."""
    T = len(r)
    out = np.zeros(T)
    for t in range(T):
        m = T - t
        ns = [_np_n_step(r, d, v, n)[t] for n in range(1, m + 1)]
        out[t] = (1 - lam) * sum(lam ** (n - 1) * ns[n - 1] for n in range(1, m)) + lam ** (
            m - 1
        ) * ns[-1]
    return out


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_lambda_returns_match_weighted_n_step_average(lam):
    r, d, values = _traj(0)
    got = rl.lambda_returns(jnp.asarray(r), jnp.asarray(d), jnp.asarray(values[1:]), lam)
    np.testing.assert_allclose(got, _np_lambda_return(r, d, values[1:], lam), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_n_step_returns_match_forward_sums(n):
    r, d, values = _traj(1)
    got = rl.n_step_returns(jnp.asarray(r), jnp.asarray(d), jnp.asarray(values[1:]), n)
    np.testing.assert_allclose(got, _np_n_step(r, d, values[1:], n), rtol=1e-5, atol=1e-5)


def test_discounted_returns_scalar_bootstrap():
    r = jnp.array([1.0, 2.0, 3.0])
    d = jnp.array([0.5, 0.5, 0.5])
    # G_2 = 3 + 0.5*4 = 5, G_1 = 2 + 2.5 = 4.5, G_0 = 1 + 2.25 = 3.25 (worked by hand)
    np.testing.assert_allclose(rl.discounted_returns(r, d, 4.0), [3.25, 4.5, 5.0])


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_matches_explicit_double_sum(lam):
    r, d, values = _traj(2)
    delta = r + d * values[1:] - values[:-1]
    T = len(r)
    ref = np.array([sum(np.prod(d[t:k] * lam) * delta[k] for k in range(t, T)) for t in range(T)])
    got = rl.gae(jnp.asarray(r), jnp.asarray(d), lam, jnp.asarray(values))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_gae_vmapped_over_batch_equals_loop():
    trajs = [_traj(s) for s in range(4)]
    r, d, v = (jnp.asarray(np.stack(x)) for x in zip(*trajs, strict=True))
    batched = jax.vmap(rl.gae, in_axes=(0, 0, None, 0))(r, d, 0.9, v)
    for i in range(4):
        np.testing.assert_allclose(batched[i], rl.gae(r[i], d[i], 0.9, v[i]), rtol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_against_rlax(rlax):
    r, d, values = _traj(3)
    r, d, values = jnp.asarray(r), jnp.asarray(d), jnp.asarray(values)
    for lam in (0.0, 0.6, 1.0):
        np.testing.assert_allclose(
            rl.lambda_returns(r, d, values[1:], lam),
            rlax.lambda_returns(r, d, values[1:], lam),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            rl.gae(r, d, lam, values),
            rlax.truncated_generalized_advantage_estimation(r, d, lam, values),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            rl.td_lambda(values[:-1], r, d, values[1:], lam),
            rlax.td_lambda(values[:-1], r, d, values[1:], lam),
            rtol=1e-5,
            atol=1e-6,
        )
    for n in (1, 3, 5):
        np.testing.assert_allclose(
            rl.n_step_returns(r, d, values[1:], n),
            rlax.n_step_bootstrapped_returns(r, d, values[1:], n),
            rtol=1e-5,
            atol=1e-6,
        )
    np.testing.assert_allclose(
        rl.discounted_returns(r, d, values[1:]),
        rlax.discounted_returns(r, d, values[1:]),
        rtol=1e-5,
        atol=1e-6,
    )
    assert float(rl.td_learning(values[0], r[0], d[0], values[1])) == pytest.approx(
        float(rlax.td_learning(values[0], r[0], d[0], values[1]))
    )
    q_tm1, q_t = jnp.array([1.0, 2.0, -1.0]), jnp.array([0.5, 3.0, 2.0])
    assert float(rl.q_learning(q_tm1, 2, 1.0, 0.9, q_t)) == pytest.approx(
        float(rlax.q_learning(q_tm1, jnp.asarray(2), jnp.asarray(1.0), jnp.asarray(0.9), q_t))
    )


def test_td_and_q_learning_by_hand():
    assert (
        float(
            rl.td_learning(jnp.asarray(1.0), jnp.asarray(2.0), jnp.asarray(0.5), jnp.asarray(4.0))
        )
        == 3.0
    )
    # 1 + 0.5 * max(0, 6) - q_tm1[1] = 4 - 3 = 1
    assert float(rl.q_learning(jnp.array([0.0, 3.0]), 1, 1.0, 0.5, jnp.array([0.0, 6.0]))) == 1.0
    # the target carries no gradient by default (semi-gradient TD)
    g = jax.grad(lambda v: rl.td_learning(jnp.asarray(0.0), 1.0, 0.5, v))(jnp.asarray(1.0))
    assert float(g) == 0.0


def test_td_lambda_views_agree_in_float():
    rng = np.random.default_rng(0)
    v = jnp.asarray(rng.normal(size=5).astype(np.float32))
    s = jnp.asarray(rng.integers(0, 5, size=21).astype(np.int32))
    r = jnp.asarray(rng.normal(size=20).astype(np.float32))
    d = jnp.full((20,), 0.9, jnp.float32)
    f = rl.td_lambda_forward(v, s, r, d, 0.8, 0.1)
    b = rl.td_lambda_backward(v, s, r, d, 0.8, 0.1)
    np.testing.assert_allclose(f, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(f, v)  # the update did something


def test_shape_errors_name_the_argument_and_the_fix():
    with pytest.raises(ShapeMismatchError, match=re.escape("gae: `values` has shape (3,)")):
        rl.gae(jnp.ones(3), jnp.ones(3), 0.5, jnp.ones(3))
    with pytest.raises(ShapeMismatchError, match=re.escape("use jax.vmap for batches")):
        rl.lambda_returns(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), 0.5)
    with pytest.raises(ShapeMismatchError, match=re.escape("`r_t` (3,), `discount_t` (4,)")):
        rl.lambda_returns(jnp.ones(3), jnp.ones(4), jnp.ones(3))
    with pytest.raises(ShapeMismatchError, match="positive Python int"):
        rl.n_step_returns(jnp.ones(3), jnp.ones(3), jnp.ones(3), 0)
    with pytest.raises(ShapeMismatchError, match="T\\+1 visited states"):
        rl.td_lambda_forward(
            jnp.zeros(3), jnp.zeros(3, jnp.int32), jnp.ones(3), jnp.ones(3), 0.5, 0.1
        )
