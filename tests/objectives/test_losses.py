"""Losses against optax.losses and independent numpy formulas."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax.objectives._losses import (
    accuracy,
    cross_entropy,
    hinge_loss,
    mse,
    multi_margin_loss,
    multiclass_hinge_loss,
)


def randn(seed, shape):
    """Standard normal test data from numpy (jax.random would compile a kernel per shape)."""
    if not isinstance(seed, int):  # a PRNG key: derive a seed from its bits
        seed = int(np.asarray(jax.random.key_data(seed)).sum())
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def randbool(seed, p, shape):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


LOGITS = randn(jax.random.key(0), (6, 5)) * 3
LABELS = jnp.array([0, 4, 2, 2, 1, 3])


def test_cross_entropy_integer_labels_matches_optax():
    ref = optax.losses.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS)
    np.testing.assert_allclose(
        cross_entropy(LOGITS, LABELS, reduction="none"), ref, rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(cross_entropy(LOGITS, LABELS), ref.mean(), rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(LOGITS, LABELS, reduction="sum"), ref.sum(), rtol=1e-6)
    # Unbatched: one example.
    np.testing.assert_allclose(cross_entropy(LOGITS[1], LABELS[1]), ref[1], rtol=1e-6)


def test_cross_entropy_one_hot_and_label_smoothing_match_optax():
    onehot = jax.nn.one_hot(LABELS, 5)
    np.testing.assert_allclose(
        cross_entropy(LOGITS, onehot, reduction="none"),
        optax.losses.softmax_cross_entropy(LOGITS, onehot),
        rtol=1e-6,
        atol=1e-6,
    )
    smoothed = optax.smooth_labels(onehot, 0.1)
    ref = optax.losses.softmax_cross_entropy(LOGITS, smoothed)
    np.testing.assert_allclose(
        cross_entropy(LOGITS, LABELS, label_smoothing=0.1, reduction="none"),
        ref,
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        cross_entropy(LOGITS, onehot, label_smoothing=0.1, reduction="none"),
        ref,
        rtol=1e-6,
        atol=1e-6,
    )


def test_cross_entropy_independent_formula_and_batch_shapes():
    logits = np.asarray(LOGITS, np.float64).reshape(2, 3, 5)
    labels = np.asarray(LABELS).reshape(2, 3)
    lse = np.log(np.exp(logits).sum(-1))
    expected = lse - np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    out = cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), reduction="none")
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_cross_entropy_errors():
    with pytest.raises(
        ValueError, match=re.escape("integer labels must have shape logits.shape[:-1] = (6,)")
    ):
        cross_entropy(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="Integer class labels need an integer dtype"):
        cross_entropy(LOGITS, LABELS.astype(jnp.float32))
    with pytest.raises(
        ValueError, match=re.escape("reduction must be one of ('mean', 'sum', 'none')")
    ):
        cross_entropy(LOGITS, LABELS, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        cross_entropy(LOGITS, LABELS, label_smoothing=2.0)


def test_mse_matches_optax_and_refuses_broadcasting():
    p = randn(jax.random.key(1), (4, 3))
    t = randn(jax.random.key(2), (4, 3))
    np.testing.assert_allclose(
        mse(p, t, reduction="none"), optax.losses.squared_error(p, t), rtol=1e-6
    )
    np.testing.assert_allclose(mse(p, t), np.mean((np.asarray(p) - np.asarray(t)) ** 2), rtol=1e-6)
    np.testing.assert_allclose(
        mse(p, t, reduction="sum"), 2 * optax.losses.l2_loss(p, t).sum(), rtol=1e-6
    )
    with pytest.raises(ValueError, match="must have the same shape"):
        mse(p, t[0])


def test_hinge_losses_match_optax():
    scores = jnp.array([2.0, 0.5, -0.3, -2.0])
    y = jnp.array([1.0, 1.0, -1.0, 1.0])
    np.testing.assert_allclose(
        hinge_loss(scores, y, reduction="none"), optax.losses.hinge_loss(scores, y), rtol=1e-6
    )
    np.testing.assert_allclose(
        hinge_loss(scores, y, reduction="none"), [0.0, 0.5, 0.7, 3.0], rtol=1e-6
    )
    np.testing.assert_allclose(
        multiclass_hinge_loss(LOGITS, LABELS, reduction="none"),
        optax.losses.multiclass_hinge_loss(LOGITS, LABELS),
        rtol=1e-6,
        atol=1e-6,
    )


def test_margin_losses_against_loops():
    logits = np.asarray(LOGITS, np.float64)
    labels = np.asarray(LABELS)
    cs, mm = [], []
    for s, y in zip(logits, labels, strict=True):
        others = [s[k] for k in range(5) if k != y]
        cs.append(max(0.0, 0.5 - s[y] + max(others)))  # Crammer-Singer with margin 0.5
        mm.append(sum(max(0.0, 0.5 - s[y] + o) for o in others) / 5)
    np.testing.assert_allclose(
        multiclass_hinge_loss(LOGITS, LABELS, margin=0.5, reduction="none"),
        cs,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        multi_margin_loss(LOGITS, LABELS, margin=0.5, reduction="none"), mm, rtol=1e-5, atol=1e-6
    )


def test_accuracy_and_losses_are_differentiable_plain_primitives():
    expected = np.mean(np.argmax(np.asarray(LOGITS), -1) == np.asarray(LABELS))
    assert float(accuracy(LOGITS, LABELS)) == pytest.approx(expected, rel=1e-6)
    assert float(accuracy(LOGITS, jax.nn.one_hot(LABELS, 5))) == float(accuracy(LOGITS, LABELS))
    g = jax.grad(lambda z: cross_entropy(z, LABELS))(LOGITS)
    np.testing.assert_allclose(
        g, (jax.nn.softmax(LOGITS) - jax.nn.one_hot(LABELS, 5)) / 6, rtol=1e-5, atol=1e-7
    )
    prims = {
        e.primitive.name
        for e in jax.make_jaxpr(lambda z: multiclass_hinge_loss(z, LABELS))(LOGITS).eqns
    }
    assert "reduce_max" in prims and "gather" not in prims
