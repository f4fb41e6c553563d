"""The toy example: a trained denoiser must beat N(0, I) and the untrained network clearly.

Runs `train_toy_diffusion` with its defaults: T = 100 diffusion steps (not DDPM's 1000; the
linear schedule is rescaled to 1e-3..0.2 so x_T is still close to N(0, I)), 5000 Adam steps on
batches of 256 two-moons points, 1000 DDPM samples: 30-40 s measured on the 2 shared (busy)
CPU cores, about 16 s of it training.
"""

import time

import jax
import numpy as np
import pytest

from tljax.diffusion import (
    batched,
    median_bandwidth,
    mmd_gaussian,
    probability_flow_sampler,
    sample,
    sliced_wasserstein,
    toy_data,
    train_toy_diffusion,
)


@pytest.fixture(scope="module")
def result():
    t0 = time.perf_counter()
    r = train_toy_diffusion(jax.random.key(0))
    print(f"\ntoy diffusion: {time.perf_counter() - t0:.1f} s total, train {r.train_seconds:.1f} s")
    for name, d in r.distances.items():
        print(f"  {name:9s} MMD^2 {d.mmd2:.5f}  fine {d.mmd2_fine:.5f}  SW_2 {d.sliced_w2:.4f}")
    return r


def test_trained_samples_are_much_closer_than_baselines(result):
    d = result.distances
    # Loose thresholds (measured margins are about 2x tighter): the trained model's distance must
    # be well below N(0, I), whose MMD^2 to the standardised moons is ~0.013 and SW_2 ~0.31.
    assert d["trained"].mmd2 < 0.3 * d["gaussian"].mmd2
    assert d["trained"].mmd2_fine < 0.3 * d["gaussian"].mmd2_fine
    assert d["trained"].sliced_w2 < 0.5 * d["gaussian"].sliced_w2
    assert (
        d["trained"].mmd2 < d["untrained"].mmd2
        and d["trained"].sliced_w2 < d["untrained"].sliced_w2
    )
    # The estimators' noise floor (a second data sample) is far below the N(0, I) baseline.
    assert d["data"].mmd2_fine < 0.2 * d["gaussian"].mmd2_fine
    assert result.samples.shape == (1000, 2) and np.all(np.isfinite(np.asarray(result.samples)))


def test_training_reduces_the_loss(result):
    losses = np.asarray(result.losses)
    assert losses.shape == (5000,)
    assert losses[-500:].mean() < 0.8 * losses[:100].mean()


def test_trained_model_also_samples_with_the_ode(result):
    smp = probability_flow_sampler(result.schedule, num_steps=50)
    x = sample(smp, batched(result.model), jax.random.key(9), (1000, 2))
    g = jax.random.normal(jax.random.key(10), (1000, 2))
    h = median_bandwidth(result.reference)
    assert float(mmd_gaussian(x, result.reference, bandwidth=h)) < 0.5 * float(
        mmd_gaussian(g, result.reference, bandwidth=h)
    )
    key = jax.random.key(11)
    assert float(sliced_wasserstein(x, result.reference, key=key)) < 0.6 * float(
        sliced_wasserstein(g, result.reference, key=key)
    )


def test_toy_data_is_standardised():
    for name in ("moons", "swiss_roll"):
        pts = toy_data(0, 2000, name)
        np.testing.assert_allclose(pts.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(pts.std(0), 1.0, rtol=1e-4)
