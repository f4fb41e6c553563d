"""Samplers on Gaussian data, where the exact epsilon-predictor and the exact flow are known.

For data x_0 ~ N(mu, sd^2) per coordinate, x_t ~ N(a mu, a^2 sd^2 + s^2) with a = sqrt(ab_t),
s = sqrt(1 - ab_t), and the optimal predictor is E[eps | x_t] = s (x_t - a mu) / (a^2 sd^2 + s^2).
The probability-flow ODE keeps the standardised value (x - a mu) / sqrt(a^2 sd^2 + s^2) fixed.
"""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.core._errors import InputError
from tljax.diffusion import (
    Sampler,
    SamplerState,
    convert_prediction,
    ddim_sampler,
    ddpm_sampler,
    linear_schedule,
    probability_flow_sampler,
    sample,
    spaced_timesteps,
)

SCHED = linear_schedule(200)
MU, SD = 1.5, 0.5
N = 4000


def gaussian_eps(x, t):
    ab = SCHED.alpha_bars[t]
    a, s2 = jnp.sqrt(ab), SCHED.one_minus_alpha_bars[t]
    return jnp.sqrt(s2) * (x - a * MU) / (ab * SD**2 + s2)


def _model_in(parameterization):
    def fn(x, t):
        return convert_prediction(
            SCHED, x, t, gaussian_eps(x, t), source="epsilon", target=parameterization
        )

    return fn


def _moments_ok(x, tol_mean=0.04, tol_sd=0.04):
    # Standard error of the mean with N = 4000 x 2 coordinates is SD / 89 ~ 0.006; the
    # tolerances add room for time discretisation and for x_T being only close to N(0, I).
    x = np.asarray(x, dtype=np.float64)
    return abs(x.mean() - MU) < tol_mean and abs(x.std() - SD) < tol_sd


@pytest.mark.parametrize(
    "name, sampler",
    [
        ("ddpm beta_tilde", ddpm_sampler(SCHED)),
        ("ddpm beta", ddpm_sampler(SCHED, variance="beta")),
        ("ddim eta=0 50 steps", ddim_sampler(SCHED, num_steps=50)),
        ("ddim eta=1 full", ddim_sampler(SCHED, eta=1.0)),
        ("ode heun 50", probability_flow_sampler(SCHED, num_steps=50)),
        ("ode euler 200", probability_flow_sampler(SCHED, method="euler")),
    ],
)
def test_samplers_reproduce_gaussian_data(name, sampler):
    x = jax.jit(lambda k: sample(sampler, gaussian_eps, k, (N, 2)))(jax.random.key(3))
    assert x.shape == (N, 2) and np.all(np.isfinite(np.asarray(x)))
    assert _moments_ok(x), (name, float(jnp.mean(x)), float(jnp.std(x)))


def test_ddim_eta1_full_grid_is_ddpm_trajectory():
    key = jax.random.key(4)
    x_ddpm = sample(ddpm_sampler(SCHED), gaussian_eps, key, (64, 2))
    x_ddim = sample(ddim_sampler(SCHED, eta=1.0), gaussian_eps, key, (64, 2))
    # Same noise draws; the two updates agree up to float32 rounding of their coefficients.
    np.testing.assert_allclose(np.asarray(x_ddim), np.asarray(x_ddpm), atol=2e-3)


def _exact_flow(x_T):
    a2 = float(SCHED.alpha_bars[SCHED.num_steps])
    sd_T = np.sqrt(a2 * SD**2 + 1 - a2)
    return MU + SD * (np.asarray(x_T, np.float64) - np.sqrt(a2) * MU) / sd_T


def _run_from(sampler, x_T, model_fn=gaussian_eps):
    state = sampler.init(x_T, jax.random.key(0))

    def body(st, _):
        return sampler.step(model_fn, st), None

    final, _ = jax.lax.scan(body, state, None, length=sampler.num_steps)
    return final.x


def test_probability_flow_converges_to_exact_transport():
    x_T = jnp.linspace(-3.0, 3.0, 101)
    want = _exact_flow(x_T)
    err = {}
    for method in ("euler", "heun"):
        for n in (25, 50, 100):
            x0 = _run_from(probability_flow_sampler(SCHED, method=method, num_steps=n), x_T)
            err[method, n] = float(np.max(np.abs(np.asarray(x0) - want)))
    # Euler is first order (halving the step halves the error); Heun is second order in the
    # interior, its last step being Euler, so it gains at least 3x per halving here.
    assert err["euler", 50] < 0.6 * err["euler", 25] and err["euler", 100] < 0.6 * err["euler", 50]
    assert err["heun", 50] < 0.4 * err["heun", 25] and err["heun", 100] < 0.4 * err["heun", 50]
    for n in (25, 50, 100):
        assert err["heun", n] < 0.3 * err["euler", n]
    assert err["heun", 100] < 0.01


def test_probability_flow_euler_is_ddim_eta0():
    x_T = jax.random.normal(jax.random.key(8), (16, 2))
    x_ode = _run_from(probability_flow_sampler(SCHED, method="euler", num_steps=20), x_T)
    x_ddim = _run_from(ddim_sampler(SCHED, num_steps=20), x_T)
    np.testing.assert_allclose(np.asarray(x_ode), np.asarray(x_ddim), atol=1e-5)


def test_ddim_eta0_is_deterministic_and_parameterisations_agree():
    x_T = jax.random.normal(jax.random.key(5), (32, 2))
    outs = {}
    for p in ("epsilon", "x0", "v", "score"):
        smp = ddim_sampler(SCHED, num_steps=20, parameterization=p)
        outs[p] = np.asarray(_run_from(smp, x_T, _model_in(p)))
    for p in ("x0", "v", "score"):
        np.testing.assert_allclose(outs[p], outs["epsilon"], atol=1e-3)
    again = np.asarray(_run_from(ddim_sampler(SCHED, num_steps=20), x_T))
    np.testing.assert_array_equal(again, outs["epsilon"])


def test_sampler_is_a_pure_pair_with_namedtuple_state():
    smp = ddim_sampler(SCHED, num_steps=4)
    assert isinstance(smp, Sampler) and smp.timesteps == (200, 150, 100, 50, 0)
    st = smp.init(jnp.zeros((3, 2)), jax.random.key(0))
    assert isinstance(st, SamplerState) and int(st.i) == 0
    st1 = jax.jit(smp.step, static_argnums=0)(gaussian_eps, st)
    assert isinstance(st1, SamplerState) and int(st1.i) == 1
    # The input state is unchanged (no hidden mutation).
    assert int(st.i) == 0 and float(jnp.abs(st.x).sum()) == 0.0
    x, xs = sample(smp, gaussian_eps, jax.random.key(1), (3, 2), trajectory=True)
    assert xs.shape == (4, 3, 2)
    np.testing.assert_array_equal(np.asarray(xs[-1]), np.asarray(x))


def test_clip_x0_bounds_the_final_sample():
    # With every x0 prediction clipped to [-1, 1], DDPM's last step (no noise) returns x0_hat.
    x = sample(ddpm_sampler(SCHED, clip_x0=1.0), gaussian_eps, jax.random.key(6), (500, 2))
    assert float(jnp.max(jnp.abs(x))) <= 1.0 + 1e-5


def test_spaced_timesteps():
    assert spaced_timesteps(10, 10) == tuple(range(10, -1, -1))
    for T, n in [(1000, 50), (1000, 999), (7, 3), (100, 1)]:
        g = spaced_timesteps(T, n)
        assert len(g) == n + 1 and g[0] == T and g[-1] == 0
        assert all(a > b for a, b in itertools.pairwise(g))


def test_sampler_errors():
    with pytest.raises(InputError, match=re.escape("num_steps must be an int in [1, T=200]")):
        ddim_sampler(SCHED, num_steps=201)
    with pytest.raises(InputError, match="strictly decreasing integers"):
        ddim_sampler(SCHED, timesteps=[200, 100, 100, 0])
    with pytest.raises(InputError, match="down to 0"):
        probability_flow_sampler(SCHED, timesteps=[200, 100])
    with pytest.raises(InputError, match="num_steps or timesteps, not both"):
        ddim_sampler(SCHED, num_steps=3, timesteps=[200, 0])
    with pytest.raises(InputError, match="variance must be 'beta_tilde' or 'beta'"):
        ddpm_sampler(SCHED, variance="large")
    with pytest.raises(InputError, match="method must be 'euler' or 'heun'"):
        probability_flow_sampler(SCHED, method="rk4")
    with pytest.raises(InputError, match=re.escape("model_fn returned shape (3,)")):
        sample(ddpm_sampler(SCHED), lambda x, t: x[:, 0], jax.random.key(0), (3, 2))


def test_custom_grid_and_strict_promotion():
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        smp = ddim_sampler(SCHED, timesteps=[200, 120, 30, 0], eta=0.5)
        x = sample(smp, gaussian_eps, jax.random.key(7), (8, 2))
        assert smp.num_steps == 3 and x.shape == (8, 2)
        x = sample(
            probability_flow_sampler(SCHED, num_steps=5), gaussian_eps, jax.random.key(7), (8, 2)
        )
        assert x.dtype == jnp.float32
