"""MMD and sliced Wasserstein against direct numpy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from tljax.core._errors import InputError
from tljax.diffusion import median_bandwidth, mmd_gaussian, sliced_wasserstein


def _mmd_loops(x, y, h):
    def k(u, v):
        return np.exp(-np.sum((u - v) ** 2) / (2 * h * h))

    kxx = np.mean([[k(a, b) for b in x] for a in x])
    kyy = np.mean([[k(a, b) for b in y] for a in y])
    kxy = np.mean([[k(a, b) for b in y] for a in x])
    return kxx + kyy - 2 * kxy


def test_mmd_matches_double_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 2)), rng.normal(1.0, 1.0, size=(25, 2))
    got = float(
        mmd_gaussian(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), bandwidth=0.7)
    )
    np.testing.assert_allclose(got, _mmd_loops(x, y, 0.7), rtol=1e-4)
    assert abs(float(mmd_gaussian(jnp.asarray(x), jnp.asarray(x), bandwidth=0.7))) < 1e-6


def test_median_bandwidth():
    x = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    # Pairwise distances 3, 4, 5: median 4.
    np.testing.assert_allclose(float(median_bandwidth(jnp.asarray(x))), 4.0, rtol=1e-6)


def test_sliced_wasserstein_in_one_dimension_is_w2():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 1)), rng.normal(0.5, 2.0, size=(200, 1))
    got = float(
        sliced_wasserstein(
            jnp.asarray(x, jnp.float32),
            jnp.asarray(y, jnp.float32),
            key=jax.random.key(0),
            num_projections=4,
        )
    )
    # In 1-D every projection is +-1: SW_2 = W_2 = sqrt(mean (sorted x - sorted y)^2).
    want = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # W_1 from scipy is a lower bound of W_2.
    assert wasserstein_distance(x[:, 0], y[:, 0]) <= want + 1e-12


def test_sliced_wasserstein_detects_a_shift():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(500, 2)), jnp.float32)
    shifted = x + jnp.array([3.0, 0.0])
    d = float(sliced_wasserstein(x, shifted, key=jax.random.key(1)))
    # Projecting a shift c on unit directions theta: SW_2 = |c| sqrt(E cos^2) = 3 / sqrt(2) in 2-D.
    assert 1.8 < d < 2.45
    assert float(sliced_wasserstein(x, x, key=jax.random.key(1))) == 0.0


def test_metric_errors():
    with pytest.raises(InputError, match="same size"):
        sliced_wasserstein(jnp.ones((3, 2)), jnp.ones((4, 2)), key=jax.random.key(0))
    with pytest.raises(InputError, match="shape \\(n, d\\) and \\(m, d\\)"):
        mmd_gaussian(jnp.ones((3, 2)), jnp.ones((3, 3)), bandwidth=1.0)
