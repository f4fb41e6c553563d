"""beta-CROWN for ReLU splitting (`tljax.bounds._crown.split_bound` through the verify bounders),
the input-split branching score, and the domain-seeded falsification."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds import Box, relu_shapes
from tljax.verify._bounder import _spread_fn, beta_bounder, relu_root_bounder, spec_fn


def _mlp2(x, params):
    w1, b1, w2, b2, w3, b3 = params
    return jax.nn.relu(jax.nn.relu(x @ w1 + b1) @ w2 + b2) @ w3 + b3


def _params(n=6, h=24, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        jnp.asarray(a, jnp.float32)
        for a in (
            rng.normal(size=(n, h)) / np.sqrt(n),
            rng.normal(size=h) * 0.1,
            rng.normal(size=(h, h)) / np.sqrt(h),
            rng.normal(size=h) * 0.1,
            rng.normal(size=(h, 3)) / np.sqrt(h),
            rng.normal(size=3) * 0.1,
        )
    )


N, H, B, R = 6, 24, 8, 4
SPEC = np.zeros((R, 3), np.float32)
SPEC[0], SPEC[1], SPEC[2] = [1, -1, 0], [1, 0, -1], [0, 1, -1]


@pytest.fixture(scope="module")
def domains():
    """Root ReLU bounds of a random 2-layer MLP and B split domains (domain 0 unsplit)."""
    params = _params()
    lo, hi = -np.ones(N, np.float32), np.ones(N, np.float32)
    shapes = relu_shapes(_mlp2, Box(jnp.asarray(lo), jnp.asarray(hi)), params)
    total = sum(int(np.prod(s)) for s in shapes)
    root = relu_root_bounder(_mlp2, (N,), shapes, rows=R, n_args=1)
    rlo, rhi = (np.asarray(v) for v in root(jnp.asarray(lo), jnp.asarray(hi), SPEC, (params,)))
    rng = np.random.default_rng(1)
    unstable = np.flatnonzero((rlo < 0) & (rhi > 0))
    assert unstable.size > 8
    splits = np.zeros((B, total), np.int8)
    for b in range(1, B):
        idx = rng.choice(unstable, 4, replace=False)
        splits[b, idx] = rng.choice([-1, 1], 4)

    def rep(v):
        return jnp.asarray(np.repeat(v[None], B, 0))

    args = (rep(lo), rep(hi), jnp.asarray(splits), rep(rlo), rep(rhi))
    return params, shapes, total, args, splits, (lo, hi)


def _run(params, shapes, total, args, iters, alpha=None, beta=None, use_beta=True):
    bd = beta_bounder(_mlp2, (N,), shapes, batch=B, rows=R, n_args=1, use_beta=use_beta)
    alpha = jnp.full((B, R, total), jnp.nan) if alpha is None else alpha
    beta = jnp.zeros((B, R, total)) if beta is None else beta
    return bd(*args, alpha, beta, jnp.asarray(iters, jnp.int32), SPEC, (params,))


def _sampled_min(params, splits, lo, hi, n=200_000):
    """Per domain, the minimum of each spec row over sampled inputs that satisfy its splits
    (float64 network), +inf where no sample does."""
    rng = np.random.default_rng(2)
    xs = rng.uniform(lo, hi, (n, N))
    w1, b1, w2, b2, w3, b3 = (np.asarray(a, np.float64) for a in params)
    z1 = xs @ w1 + b1
    z2 = np.maximum(z1, 0) @ w2 + b2
    z = np.concatenate([z1, z2], 1)
    vals = (np.maximum(z2, 0) @ w3 + b3) @ SPEC.T.astype(np.float64)
    out = np.full((len(splits), R), np.inf)
    for b, sp in enumerate(splits):
        ok = np.all((sp == 0) | ((sp > 0) & (z >= 0)) | ((sp < 0) & (z <= 0)), axis=1)
        if ok.any():
            out[b] = vals[ok].min(axis=0)
    return out


def test_beta_crown_is_sound_inside_split_domains_and_tighter_than_alpha(domains):
    params, shapes, total, args, splits, (lo, hi) = domains
    lower = np.asarray(_run(params, shapes, total, args, 40)[0], np.float64)
    sampled = _sampled_min(params, splits, lo, hi)
    assert np.all(lower <= sampled), (lower, sampled)
    # the same optimisation with the multipliers held at zero (splits only clip the intervals)
    no_beta = np.asarray(_run(params, shapes, total, args, 40, use_beta=False)[0], np.float64)
    real = SPEC.any(axis=1)
    split = splits.any(axis=1)
    gain = (lower - no_beta)[:, real]
    # beta = 0 is one of the multipliers searched, but Adam's paths differ: per row the two can
    # end a little apart; summed over the rows, beta never loses and on split domains it gains
    assert np.all(gain.sum(axis=1) >= -1e-3), gain
    assert np.all(gain >= -0.05), gain
    assert gain[split].max() > 0.1, gain
    # an unsplit domain has no multipliers: both are alpha-CROWN with the same slopes' start
    np.testing.assert_allclose(lower[0, real], no_beta[0, real], atol=1e-4)


def test_witness_parameters_reproduce_the_bounds_exactly(domains):
    params, shapes, total, args, _, _ = domains
    lower, alpha, beta = _run(params, shapes, total, args, 25)[:3]
    assert np.all(np.asarray(alpha) >= 0) and np.all(np.asarray(alpha) <= 1)
    assert np.all(np.asarray(beta) >= 0) and float(np.max(beta)) > 0
    # float16 numbers: a search stores them losslessly
    a16 = np.asarray(alpha).astype(np.float16)
    np.testing.assert_array_equal(a16.astype(np.float32), np.asarray(alpha))
    again = _run(params, shapes, total, args, 0, alpha=alpha, beta=beta)[0]
    np.testing.assert_array_equal(np.asarray(again), np.asarray(lower))


def test_beta_bounds_never_beat_the_unsplit_truth_on_a_tight_spec(domains):
    # a split pair covers the domain: the weaker of the two children is below the sampled minimum
    params, shapes, total, args, splits, (lo, hi) = domains
    j = int(np.flatnonzero(splits[1])[0])
    sp = np.repeat(splits[:1], B, 0)
    sp[1, j], sp[2, j] = 1, -1
    a = (args[0], args[1], jnp.asarray(sp), args[3], args[4])
    lower = np.asarray(_run(params, shapes, total, a, 40)[0], np.float64)
    sampled = _sampled_min(params, sp[:1], lo, hi)[0]
    both = np.minimum(lower[1], lower[2])
    assert np.all(both <= sampled)


def test_alpha_crown_with_outputs_of_different_sizes():
    # regression: every output's backward pass had one shared slope table (shape clash)
    k = jax.random.PRNGKey(0)
    w1 = jax.random.normal(k, (4, 8))
    w2 = jax.random.normal(jax.random.PRNGKey(1), (8, 3))

    def f(x):
        z = x @ w1
        return jax.nn.relu(z) @ w2, z

    box = Box(-jnp.ones(4), jnp.ones(4))
    a = tljax.bound(f, box, method="alpha-crown")
    c = tljax.bound(f, box, method="crown")
    assert a.lower[0].shape == (3,) and a.lower[1].shape == (8,)
    assert np.all(np.asarray(a.lower[0]) >= np.asarray(c.lower[0]) - 1e-5)
    xs = np.random.default_rng(0).uniform(-1, 1, (20000, 4)).astype(np.float32)
    ys = np.asarray(jax.vmap(lambda x: f(x)[0])(jnp.asarray(xs)))
    assert np.all(ys >= np.asarray(a.lower[0])) and np.all(ys <= np.asarray(a.upper[0]))


def test_spread_score_prefers_the_input_that_drives_unstable_neurons():
    # neurons depend on x0 strongly and x1 weakly; x2 reaches no neuron: "unstable" must pick x0
    # even though the output depends on x2 most (the "objective" heuristic would pick x2)
    w = jnp.asarray([[4.0, -3.0, 2.5], [0.1, 0.2, -0.1], [0.0, 0.0, 0.0]], jnp.float32)

    def f(x, w):
        return jnp.sum(jax.nn.relu(x @ w)) + 100.0 * x[2]

    score = _spread_fn(f, (3,))(jnp.zeros(3), jnp.ones(3), (w,))
    assert int(np.argmax(np.asarray(score))) == 0
    assert float(score[2]) == 0.0
    # no ReLU input near zero anywhere in a far-away box: nothing likely unstable
    far = _spread_fn(f, (3,))(jnp.asarray([10.0, 0.0, 0.0]), jnp.full(3, 0.1), (w,))
    assert not np.any(np.asarray(far) > 0)


def test_spec_fn_is_one_object_per_function():
    assert spec_fn(_mlp2) is spec_fn(_mlp2)
