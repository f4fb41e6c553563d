"""Markov kernels: composition, push-forward, samplers, stationary laws, Metropolis-Hastings."""

import re
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import rl
from tljax.core._errors import InputError, ShapeMismatchError

K1 = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [0.0, 1.0, 0.0]], np.float32)
K2 = np.array([[1.0, 0.0], [0.5, 0.5], [0.125, 0.875]], np.float32)  # 3 → 2 states


def test_compose_is_chapman_kolmogorov():
    got = np.asarray(rl.compose(K1, K1, K2))
    ref = np.zeros((3, 2))
    for x in range(3):  # explicit sum over the two intermediate states
        for y in range(3):
            for z in range(3):
                for w in range(2):
                    ref[x, w] += K1[x, y] * K1[y, z] * K2[z, w]
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    np.testing.assert_allclose(rl.kernel_power(K1, 3), K1 @ K1 @ K1, rtol=1e-6)
    assert rl.is_stochastic(got)
    exact = rl.compose_exact(K1, K1, K2)
    assert all(sum(row) == 1 for row in exact) and np.allclose(np.array(exact, float), got)


def test_pushforward_of_vector_and_categorical():
    mu = jnp.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(rl.pushforward(mu, K2), np.asarray(mu) @ K2, rtol=1e-6)
    cat = rl.pushforward(rl.Categorical(jnp.log(mu)), K1)
    assert isinstance(cat, rl.Categorical)
    np.testing.assert_allclose(cat.probs, np.asarray(mu) @ K1, rtol=1e-6)


def test_samplers_sample_the_composed_kernel():
    s1, s2 = rl.kernel_sampler(K1), rl.kernel_sampler(K2)
    both = jax.jit(jax.vmap(rl.compose_samplers(s1, s2), in_axes=(0, None)))
    ys = np.asarray(both(jax.random.split(jax.random.key(0), 20_000), 1))
    freq = np.bincount(ys, minlength=2) / len(ys)
    np.testing.assert_allclose(freq, (K1 @ K2)[1], atol=0.015)
    k = rl.FiniteKernel(K1)
    xs = np.asarray(
        jax.vmap(k.sample, in_axes=(0, None))(jax.random.split(jax.random.key(1), 20_000), 0)
    )
    np.testing.assert_allclose(np.bincount(xs, minlength=3) / len(xs), K1[0], atol=0.015)
    np.testing.assert_allclose(k.then(rl.FiniteKernel(K2)).matrix, K1 @ K2, rtol=1e-6)


def test_stationary_distribution_float_and_exact():
    pi = np.asarray(rl.stationary_distribution(K1))
    np.testing.assert_allclose(pi @ K1, pi, atol=1e-6)
    np.testing.assert_allclose(pi.sum(), 1.0, rtol=1e-6)
    exact = rl.stationary_distribution_exact(K1)
    # by hand: π0 = π0/2 + π1/4 gives π1 = 2π0, and π2 = π1/2 = π0, so π = (1/4, 1/2, 1/4)
    assert list(exact) == [Fraction(1, 4), Fraction(1, 2), Fraction(1, 4)]
    np.testing.assert_allclose(pi, np.array(exact, float), rtol=1e-5)
    with pytest.raises(InputError, match="singular"):
        rl.stationary_distribution_exact(np.eye(2))  # two recurrent classes


def test_metropolis_hastings_float_matches_exact_and_is_reversible():
    Q = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [0.5, 0.25, 0.25]], np.float32)
    target = np.array([1.0, 2.0, 5.0], np.float32)
    K = np.asarray(rl.metropolis_hastings(Q, target))
    Kx = rl.metropolis_hastings_exact(Q, [1, 2, 5])
    np.testing.assert_allclose(K, np.array(Kx, float), atol=1e-6)
    assert rl.check_detailed_balance_exact(Kx, [1, 2, 5]) == (True, None)
    assert float(rl.detailed_balance_gap(K, target)) < 1e-6
    assert list(rl.stationary_distribution_exact(Kx)) == [
        Fraction(1, 8),
        Fraction(2, 8),
        Fraction(5, 8),
    ]
    # by hand: K(0,1) = Q(0,1)·min(1, π1 Q(1,0) / (π0 Q(0,1))) = 1/2 · min(1, 2·(1/4) / (1/2)) = 1/2
    assert Kx[0, 1] == Fraction(1, 2)
    # K(2,0) = 1/2·min(1, 1·0/(5·1/2)) = 0 since the reverse move is never proposed
    assert Kx[2, 0] == 0


def test_detailed_balance_check_reports_the_pair():
    K = [[Fraction(1, 2), Fraction(1, 2)], [Fraction(1, 4), Fraction(3, 4)]]
    holds, cex = rl.check_detailed_balance_exact(
        K, [1, 1]
    )  # reversible for (1/3, 2/3), not uniform
    assert not holds and cex[:2] == (0, 1)
    assert rl.check_detailed_balance_exact(K, [1, 2])[0]


def test_kernel_errors():
    with pytest.raises(
        ShapeMismatchError, match=re.escape("kernel 0 maps to 2 states but kernel 1 starts from 3")
    ):
        rl.compose(K2, K1)
    with pytest.raises(ShapeMismatchError, match="rank 2"):
        rl.FiniteKernel(jnp.ones(3))
    with pytest.raises(InputError, match="not exactly stochastic"):
        rl.metropolis_hastings_exact([[0.5, 0.4], [0.5, 0.5]], [1, 1])
