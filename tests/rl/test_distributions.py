"""Distributions: closed forms against distrax (when installed) and against Monte Carlo /
quadrature."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import rl
from tljax.core._errors import InputError


def test_categorical_against_definitions():
    p = np.array([0.1, 0.2, 0.7])
    q = np.array([0.3, 0.3, 0.4])
    d, e = (
        rl.Categorical(jnp.log(p)),
        rl.Categorical(jnp.log(q) + 5.0),
    )  # logits need not be normalised
    np.testing.assert_allclose(d.log_prob(jnp.arange(3)), np.log(p), rtol=1e-5)
    assert float(d.entropy()) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-5)
    assert float(d.kl_divergence(e)) == pytest.approx((p * np.log(p / q)).sum(), rel=1e-5)
    # zero-probability categories contribute 0·log 0 = 0
    z = rl.Categorical(jnp.array([0.0, -jnp.inf]))
    assert float(z.entropy()) == 0.0 and float(
        z.kl_divergence(rl.Categorical(jnp.zeros(2)))
    ) == pytest.approx(np.log(2))


def test_categorical_sampling_frequencies_and_shapes():
    p = np.array([0.1, 0.2, 0.7])
    d = rl.Categorical(jnp.log(jnp.asarray(np.tile(p, (2, 1)))))  # batch of 2
    x = d.sample(jax.random.key(0), (20_000,))
    assert x.shape == (20_000, 2) and d.log_prob(x).shape == (20_000, 2)
    freq = np.bincount(np.asarray(x[:, 0]), minlength=3) / 20_000
    np.testing.assert_allclose(freq, p, atol=0.015)  # ≈ 4.5 standard errors


def test_bernoulli_closed_forms_and_monte_carlo():
    d, e = rl.Bernoulli(jnp.asarray(0.3)), rl.Bernoulli(jnp.asarray(-1.2))
    p, q = 1 / (1 + np.exp(-0.3)), 1 / (1 + np.exp(1.2))
    assert float(d.log_prob(1)) == pytest.approx(np.log(p), rel=1e-5)
    assert float(d.log_prob(0)) == pytest.approx(np.log(1 - p), rel=1e-5)
    assert float(d.entropy()) == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)), rel=1e-5)
    assert float(d.kl_divergence(e)) == pytest.approx(
        p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)), rel=1e-5
    )
    x = d.sample(jax.random.key(1), (40_000,))
    assert x.dtype == jnp.int32 and abs(float(x.mean()) - p) < 0.01


def test_normal_against_quadrature_and_monte_carlo():
    d, e = rl.Normal(0.3, 1.7), rl.Normal(-0.5, 0.8)
    xs = np.linspace(-15, 15, 200_001)
    dx = xs[1] - xs[0]
    lp = np.asarray(d.log_prob(jnp.asarray(xs)), np.float64)
    lq = np.asarray(e.log_prob(jnp.asarray(xs)), np.float64)
    pdf = np.exp(lp)
    assert pdf.sum() * dx == pytest.approx(1.0, abs=1e-4)
    assert float(d.entropy()) == pytest.approx(-(pdf * lp).sum() * dx, abs=1e-4)
    assert float(d.kl_divergence(e)) == pytest.approx((pdf * (lp - lq)).sum() * dx, abs=1e-3)
    s = np.asarray(d.sample(jax.random.key(2), (50_000,)))
    assert abs(s.mean() - 0.3) < 0.03 and abs(s.std() - 1.7) < 0.03


def test_diag_gaussian_sums_over_event_dimension():
    loc, scale = jnp.array([[0.0, 1.0], [2.0, -1.0]]), jnp.array([[1.0, 2.0], [0.5, 1.0]])
    d, e = rl.DiagGaussian(loc, scale), rl.DiagGaussian(jnp.zeros(2), jnp.ones(2))
    x = d.sample(jax.random.key(3), (5,))
    assert x.shape == (5, 2, 2) and d.log_prob(x).shape == (5, 2) and d.batch_shape == (2,)
    n = rl.Normal(loc, scale)
    np.testing.assert_allclose(d.log_prob(x), n.log_prob(x).sum(-1), rtol=1e-6)
    np.testing.assert_allclose(d.entropy(), n.entropy().sum(-1), rtol=1e-6)
    # Monte Carlo KL: E_d[log d − log e]
    xs = d.sample(jax.random.key(4), (100_000,))
    mc = np.asarray(jnp.mean(d.log_prob(xs) - e.log_prob(xs), axis=0))
    np.testing.assert_allclose(d.kl_divergence(e), mc, rtol=0.02)


def test_kl_between_families_is_refused_with_advice():
    with pytest.raises(
        InputError, match=re.escape("Normal.kl_divergence: closed form needs another Normal")
    ):
        rl.Normal(0.0, 1.0).kl_divergence(rl.Bernoulli(0.0))


def test_distributions_under_jit_and_vmap():
    f = jax.jit(jax.vmap(lambda logits, x: rl.Categorical(logits).log_prob(x)))
    out = f(jnp.zeros((4, 3)), jnp.array([0, 1, 2, 0]))
    np.testing.assert_allclose(out, np.full(4, -np.log(3)), rtol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_against_distrax(distrax):
    key = jax.random.key(5)
    logits, logits2 = jax.random.normal(key, (4, 5)), jax.random.normal(jax.random.key(6), (4, 5))
    x = jnp.array([0, 3, 4, 1])
    ours, theirs = rl.Categorical(logits), distrax.Categorical(logits=logits)
    np.testing.assert_allclose(ours.log_prob(x), theirs.log_prob(x), rtol=1e-5)
    np.testing.assert_allclose(ours.entropy(), theirs.entropy(), rtol=1e-5)
    np.testing.assert_allclose(
        ours.kl_divergence(rl.Categorical(logits2)),
        theirs.kl_divergence(distrax.Categorical(logits=logits2)),
        rtol=1e-4,
        atol=1e-6,
    )
    b, bd = rl.Bernoulli(logits[0]), distrax.Bernoulli(logits=logits[0])
    np.testing.assert_allclose(
        b.log_prob(jnp.array([1, 0, 1, 1, 0])), bd.log_prob(jnp.array([1, 0, 1, 1, 0])), rtol=1e-5
    )
    np.testing.assert_allclose(b.entropy(), bd.entropy(), rtol=1e-5)
    np.testing.assert_allclose(
        b.kl_divergence(rl.Bernoulli(logits2[0])),
        bd.kl_divergence(distrax.Bernoulli(logits=logits2[0])),
        rtol=1e-4,
        atol=1e-6,
    )
    loc, scale = logits[0], jnp.exp(logits2[0])
    n, nd = rl.Normal(loc, scale), distrax.Normal(loc, scale)
    np.testing.assert_allclose(n.log_prob(logits[1]), nd.log_prob(logits[1]), rtol=1e-5)
    np.testing.assert_allclose(n.entropy(), nd.entropy(), rtol=1e-5)
    np.testing.assert_allclose(
        n.kl_divergence(rl.Normal(0.0, 2.0)), nd.kl_divergence(distrax.Normal(0.0, 2.0)), rtol=1e-5
    )
    g, gd = rl.DiagGaussian(loc, scale), distrax.MultivariateNormalDiag(loc, scale)
    np.testing.assert_allclose(g.log_prob(logits[1]), gd.log_prob(logits[1]), rtol=1e-5)
    np.testing.assert_allclose(g.entropy(), gd.entropy(), rtol=1e-5)
    np.testing.assert_allclose(
        g.kl_divergence(rl.DiagGaussian(jnp.zeros(5), jnp.ones(5))),
        gd.kl_divergence(distrax.MultivariateNormalDiag(jnp.zeros(5), jnp.ones(5))),
        rtol=1e-5,
    )
