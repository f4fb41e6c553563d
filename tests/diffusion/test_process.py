"""Forward process, posterior and conversions against closed forms and Monte Carlo."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.core._errors import InputError
from tljax.diffusion import (
    PARAMETERIZATIONS,
    convert_prediction,
    linear_schedule,
    q_mean_variance,
    q_posterior_mean_variance,
    q_sample,
)

SCHED = linear_schedule(100)


def test_q_sample_monte_carlo():
    # 200k draws: the sample mean is within 5 standard errors of sqrt(ab) x0, variance within 2%.
    t, n = 37, 200_000
    x0 = jnp.full((n,), 1.5)
    noise = jax.random.normal(jax.random.key(0), (n,))
    xt = np.asarray(q_sample(SCHED, x0, t, noise), dtype=np.float64)
    ab = float(SCHED.alpha_bars[t])
    se = np.sqrt((1 - ab) / n)
    assert abs(xt.mean() - np.sqrt(ab) * 1.5) < 5 * se
    assert abs(xt.var() / (1 - ab) - 1) < 0.02


def test_q_sample_per_example_times_and_t0():
    x0 = jnp.arange(6.0).reshape(3, 2)
    t = jnp.array([0, 50, 100])
    noise = jnp.ones((3, 2))
    xt = q_sample(SCHED, x0, t, noise)
    ab = np.asarray(SCHED.alpha_bars)[[0, 50, 100]][:, None]
    np.testing.assert_allclose(xt, np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(xt[0]), np.asarray(x0[0]))  # t = 0 is the data
    mean, var = q_mean_variance(SCHED, x0, t)
    assert mean.shape == (3, 2) and var.shape == (3, 1)


def _posterior_by_conditioning(ab_prev, ab_t, alpha_t, x0, xt):
    """E and Var of x_{t-1} given x_t for the jointly Gaussian pair (x_{t-1}, x_t) | x_0."""
    mu1, mu2 = np.sqrt(ab_prev) * x0, np.sqrt(ab_t) * x0
    s11, s22 = 1 - ab_prev, 1 - ab_t
    s12 = np.sqrt(alpha_t) * s11  # Cov(x_{t-1}, sqrt(alpha) x_{t-1} + noise)
    return mu1 + s12 / s22 * (xt - mu2), s11 - s12**2 / s22


@pytest.mark.parametrize("t", [2, 10, 50, 99, 100])
def test_posterior_equals_gaussian_conditioning(t):
    x0, xt = np.array([0.3, -1.2]), np.array([1.1, 0.4])
    ab = np.asarray(SCHED.alpha_bars, dtype=np.float64)
    want_m, want_v = _posterior_by_conditioning(ab[t - 1], ab[t], ab[t] / ab[t - 1], x0, xt)
    m, v = q_posterior_mean_variance(SCHED, jnp.asarray(x0), jnp.asarray(xt), t)
    np.testing.assert_allclose(np.asarray(m), want_m, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(float(np.asarray(v).squeeze()), want_v, rtol=2e-4)


def test_posterior_monte_carlo():
    # Sample (x_{t-1}, x_t) from the forward chain, keep pairs with x_t in a thin bin, compare.
    t, n = 30, 400_000
    k1, k2 = jax.random.split(jax.random.key(1))
    x0 = 0.7
    ab_prev = float(SCHED.alpha_bars[t - 1])
    x_prev = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * np.asarray(jax.random.normal(k1, (n,)))
    beta = float(SCHED.betas[t])
    x_t = np.sqrt(1 - beta) * x_prev + np.sqrt(beta) * np.asarray(jax.random.normal(k2, (n,)))
    sel = np.abs(x_t - 0.5) < 0.01
    m, v = q_posterior_mean_variance(SCHED, jnp.float32(x0), jnp.float32(0.5), t)
    # ~4000 samples in the bin: mean to within 4 standard errors, variance within 10%.
    assert sel.sum() > 1000
    assert abs(x_prev[sel].mean() - float(m)) < 4 * np.sqrt(float(v) / sel.sum()) + 0.005
    assert abs(x_prev[sel].var() / float(v) - 1) < 0.1


@pytest.mark.parametrize("src, tgt", list(itertools.product(PARAMETERIZATIONS, repeat=2)))
def test_conversions_round_trip_and_agree_with_definitions(src, tgt):
    k1, k2 = jax.random.split(jax.random.key(2))
    x0 = jax.random.normal(k1, (4, 3))
    eps = jax.random.normal(k2, (4, 3))
    t = jnp.array([1, 20, 60, 100])
    xt = q_sample(SCHED, x0, t, eps)
    ab = np.asarray(SCHED.alpha_bars, dtype=np.float64)[np.asarray(t)][:, None]
    a, s = np.sqrt(ab), np.sqrt(1 - ab)
    truth = {
        "epsilon": np.asarray(eps),
        "x0": np.asarray(x0),
        "v": a * np.asarray(eps) - s * np.asarray(x0),
        "score": -np.asarray(eps) / s,
    }
    got = convert_prediction(
        SCHED, xt, t, jnp.asarray(truth[src], jnp.float32), source=src, target=tgt
    )
    # Converting to x0 at t = 100 divides by sqrt(ab) ~ 0.08: allow for the amplified rounding.
    np.testing.assert_allclose(
        np.asarray(got), truth[tgt], rtol=2e-3, atol=2e-3 * np.abs(truth[tgt]).max()
    )
    back = convert_prediction(SCHED, xt, t, got, source=tgt, target=src)
    np.testing.assert_allclose(
        np.asarray(back), truth[src], rtol=2e-3, atol=2e-3 * np.abs(truth[src]).max()
    )


def test_time_and_name_validation():
    x = jnp.zeros(2)
    with pytest.raises(InputError, match=re.escape("t must lie in [1, 100]")):
        q_posterior_mean_variance(SCHED, x, x, 0)
    with pytest.raises(InputError, match=re.escape("got values [101]")):
        q_sample(SCHED, x, 101, x)
    with pytest.raises(InputError, match="integer time step"):
        q_sample(SCHED, x, 1.5, x)
    with pytest.raises(InputError, match="unknown parameterisation 'eps'"):
        convert_prediction(SCHED, x, 3, x, source="eps", target="x0")
    with pytest.raises(InputError, match="more axes than the array"):
        q_sample(SCHED, x, jnp.ones((2, 2), jnp.int32), x)


def test_strict_promotion_and_jit():
    # Library code must not rely on implicit rank or dtype promotion.
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        x0 = jnp.ones((5, 2))
        t = jnp.arange(1, 6, dtype=jnp.int32)
        f = jax.jit(
            lambda x, tt: q_posterior_mean_variance(SCHED, x, q_sample(SCHED, x, tt, x), tt)[0]
        )
        assert f(x0, t).shape == (5, 2)
        v = convert_prediction(SCHED, x0, t, x0, source="epsilon", target="v")
        assert v.dtype == jnp.float32
