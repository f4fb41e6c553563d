"""Losses against numpy re-implementations and the identities that relate them."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.core._errors import InputError
from tljax.diffusion import (
    epsilon_loss,
    linear_schedule,
    score_matching_loss,
    training_inputs,
    v_loss,
)

SCHED = linear_schedule(50)
W = np.array([[0.5, -0.2], [0.1, 0.9]], dtype=np.float32)


def linear_model(x, t):
    # A model that depends on x and t so the losses are not trivially zero.
    return x @ jnp.asarray(W) + 0.01 * jnp.asarray(t, jnp.float32)[..., None]


def _numpy_inputs():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(8, 2)).astype(np.float32)
    noise = rng.normal(size=(8, 2)).astype(np.float32)
    t = rng.integers(1, 51, size=8)
    ab = np.asarray(SCHED.alpha_bars, dtype=np.float64)[t][:, None]
    a, s = np.sqrt(ab), np.sqrt(1 - ab)
    xt = a * x0 + s * noise
    pred = xt @ W.astype(np.float64) + 0.01 * t[:, None]
    return x0, noise, t, a, s, pred


def _run(loss, **kw):
    x0, noise, t, *_ = _numpy_inputs()
    return float(
        loss(SCHED, linear_model, jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise), **kw)
    )


def test_epsilon_loss_matches_numpy():
    _x0, noise, _t, _a, _s, pred = _numpy_inputs()
    want = np.mean((pred - noise) ** 2)
    np.testing.assert_allclose(_run(epsilon_loss), want, rtol=1e-5)


def test_v_loss_matches_numpy():
    x0, noise, _t, a, s, pred = _numpy_inputs()
    want = np.mean((pred - (a * noise - s * x0)) ** 2)
    np.testing.assert_allclose(_run(v_loss), want, rtol=1e-5)


def test_score_matching_matches_numpy_for_both_weightings():
    _x0, noise, _t, _a, s, pred = _numpy_inputs()
    target = -noise / s
    np.testing.assert_allclose(
        _run(score_matching_loss, weighting="none"), np.mean((pred - target) ** 2), rtol=1e-4
    )
    np.testing.assert_allclose(
        _run(score_matching_loss, weighting="variance"),
        np.mean(s**2 * (pred - target) ** 2),
        rtol=1e-4,
    )


def test_weighted_score_matching_is_epsilon_loss_of_the_implied_predictor():
    # lambda_t = 1 - ab_t turns DSM into the eps loss of eps_hat = -sqrt(1 - ab_t) score_hat.
    x0, noise, t, *_ = _numpy_inputs()
    args = (jnp.asarray(x0), jnp.asarray(t), jnp.asarray(noise))

    def implied_eps(x, tt):
        s = jnp.sqrt(SCHED.one_minus_alpha_bars[tt])[:, None]
        return -s * linear_model(x, tt)

    np.testing.assert_allclose(
        float(score_matching_loss(SCHED, linear_model, *args)),
        float(epsilon_loss(SCHED, implied_eps, *args)),
        rtol=1e-5,
    )


def test_loss_is_minimised_by_the_true_noise_predictor_on_gaussian_data():
    # For x_0 ~ N(0, 1) the optimal predictor is E[eps | x_t] = s x_t; shrinking or inflating it
    # raises the Monte Carlo loss (200k examples: the gaps are ~100 standard errors).
    key = jax.random.key(0)
    x0 = jax.random.normal(key, (200_000, 1))
    t, noise = training_inputs(jax.random.key(1), SCHED, x0)

    def scaled(c):
        def fn(x, tt):
            return c * jnp.sqrt(SCHED.one_minus_alpha_bars[tt])[:, None] * x

        return fn

    losses = [float(epsilon_loss(SCHED, scaled(c), x0, t, noise)) for c in (0.8, 1.0, 1.2)]
    assert losses[1] < losses[0] and losses[1] < losses[2]


def test_training_inputs_and_gradients():
    x0 = jnp.ones((1000, 3))
    t, noise = training_inputs(jax.random.key(2), SCHED, x0)
    assert t.shape == (1000,) and t.dtype == jnp.int32 and noise.shape == (1000, 3)
    assert int(t.min()) == 1 and int(t.max()) == 50

    def loss(w):
        return epsilon_loss(SCHED, lambda x, tt: x * w, x0, t, noise)

    g = jax.grad(loss)(jnp.float32(0.3))
    assert np.isfinite(float(g)) and float(g) != 0.0


def test_loss_errors():
    x0 = jnp.ones((4, 2))
    t = jnp.array([1, 2, 3, 4])
    with pytest.raises(
        InputError, match=re.escape("model_fn returned shape (4,), expected (4, 2)")
    ):
        epsilon_loss(SCHED, lambda x, tt: x[:, 0], x0, t, x0)
    with pytest.raises(InputError, match="weighting must be 'variance' or 'none'"):
        score_matching_loss(SCHED, linear_model, x0, t, x0, weighting="likelihood")
    with pytest.raises(InputError, match=re.escape("t must lie in [1, 50]")):
        v_loss(SCHED, linear_model, x0, jnp.array([0, 1, 2, 3]), x0)
    with pytest.raises(InputError, match="leading batch axis"):
        training_inputs(jax.random.key(0), SCHED, jnp.float32(1.0))
