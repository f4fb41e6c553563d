"""Classification and regression losses as pure functions with an explicit reduction.

Every loss works on one example (`logits` of shape `(K,)`) or on any batch shape
(`(*batch, K)`): it computes one value per example and then applies `reduction`:
`"mean"` (average over all examples), `"sum"`, or `"none"` (the per-example array). They trace
to plain lax primitives (`log_softmax` = `reduce_max`, `stop_gradient`, `exp`, `log`, ...;
margins = `max`), so certified-training code can bound them like any other layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "accuracy",
    "cross_entropy",
    "hinge_loss",
    "mse",
    "multi_margin_loss",
    "multiclass_hinge_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: jax.Array, reduction: str, name: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(values)
    if reduction == "sum":
        return jnp.sum(values)
    if reduction == "none":
        return values
    raise ValueError(
        f"tljax.objectives.{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}."
    )


def _one_hot_targets(logits: jax.Array, labels: jax.Array, name: str) -> jax.Array:
    """Integer labels `(*batch,)` -> one-hot `(*batch, K)`; probabilities are checked and kept."""
    labels = jnp.asarray(labels)
    k = logits.shape[-1]
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"tljax.objectives.{name}: integer labels must have shape logits.shape[:-1] = "
                f"{logits.shape[:-1]}, got {labels.shape}."
            )
        return jax.nn.one_hot(labels, k, dtype=logits.dtype)
    if labels.shape != logits.shape:
        raise ValueError(
            f"tljax.objectives.{name}: one-hot / probability labels must have the shape of the "
            f"logits {logits.shape}, got {labels.shape}. Integer class labels need an integer "
            "dtype."
        )
    return labels.astype(logits.dtype)


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> jax.Array:
    """Softmax cross-entropy `-Σ_k t_k log softmax(logits)_k`, like `torch.nn.CrossEntropyLoss`.

    Targets `t` are the one-hot encoding of integer labels, or the given probabilities; with
    `label_smoothing=ε` they become `(1 - ε) t + ε / K` (as `optax.smooth_labels`).

    Args:
      logits: `(*batch, K)`.
      labels: integer `(*batch,)` in `[0, K)`, or float `(*batch, K)` (one-hot or probabilities).
      label_smoothing: ε in `[0, 1]`.
      reduction: `"mean"`, `"sum"` or `"none"` (per-example `(*batch,)`).

    Returns:
      A scalar, or `(*batch,)` with `reduction="none"`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3])))  # log 4
      1.3862943649291992
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(
            "tljax.objectives.cross_entropy: label_smoothing must be in [0, 1], got "
            f"{label_smoothing}."
        )
    targets = _one_hot_targets(logits, labels, "cross_entropy")
    if label_smoothing:
        k = logits.shape[-1]
        targets = targets * (1.0 - label_smoothing) + label_smoothing / k
    per_example = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return _reduce(per_example, reduction, "cross_entropy")


def mse(predictions: jax.Array, targets: jax.Array, *, reduction: str = "mean") -> jax.Array:
    """Squared error `(predictions - targets)²`, like `torch.nn.MSELoss`.

    Args:
      predictions: any shape.
      targets: same shape.
      reduction: `"mean"` (over all elements), `"sum"`, or `"none"` (elementwise).

    Returns:
      A scalar, or an array of the inputs' shape with `reduction="none"`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])))
      2.5
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"tljax.objectives.mse: predictions {predictions.shape} and targets {targets.shape} "
            "must have the same shape (no silent broadcasting)."
        )
    diff = predictions - targets
    return _reduce(diff * diff, reduction, "mse")


def hinge_loss(scores: jax.Array, labels: jax.Array, *, reduction: str = "mean") -> jax.Array:
    """Binary hinge loss `max(0, 1 - y s)` with labels `y ∈ {-1, +1}` (as optax's `hinge_loss`).

    Args:
      scores: `(*batch,)` real scores.
      labels: `(*batch,)` of -1 / +1.
      reduction: `"mean"`, `"sum"` or `"none"`.

    Returns:
      A scalar, or `(*batch,)` with `reduction="none"`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(hinge_loss(jnp.array([2.0, 0.5]), jnp.array([1.0, 1.0])))
      0.25
    """
    scores = jnp.asarray(scores)
    labels = jnp.asarray(labels, scores.dtype)
    if scores.shape != labels.shape:
        raise ValueError(
            f"tljax.objectives.hinge_loss: scores {scores.shape} and labels {labels.shape} must "
            "have the same shape."
        )
    return _reduce(jnp.maximum(0.0, 1.0 - labels * scores), reduction, "hinge_loss")


def multiclass_hinge_loss(
    logits: jax.Array, labels: jax.Array, *, margin: float = 1.0, reduction: str = "mean"
) -> jax.Array:
    """Crammer-Singer multi-class margin loss `max_k (s_k + m [k ≠ y]) - s_y`.

    Zero exactly when the true class beats every other class by at least `margin`; equals
    `optax.losses.multiclass_hinge_loss` for `margin=1`.

    Args:
      logits: `(*batch, K)`.
      labels: integer `(*batch,)`.
      margin: required gap m.
      reduction: `"mean"`, `"sum"` or `"none"`.

    Returns:
      A scalar, or `(*batch,)` with `reduction="none"`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(multiclass_hinge_loss(jnp.array([3.0, 1.0, 2.5]), jnp.array(0)))
      0.5
    """
    onehot = _one_hot_targets(logits, labels, "multiclass_hinge_loss")
    true = jnp.sum(logits * onehot, axis=-1)
    per_example = jnp.max(logits + margin * (1.0 - onehot), axis=-1) - true
    return _reduce(per_example, reduction, "multiclass_hinge_loss")


def multi_margin_loss(
    logits: jax.Array, labels: jax.Array, *, margin: float = 1.0, reduction: str = "mean"
) -> jax.Array:
    """PyTorch's `MultiMarginLoss` (p=1): `Σ_{k≠y} max(0, m - s_y + s_k) / K`.

    Args:
      logits: `(*batch, K)`.
      labels: integer `(*batch,)`.
      margin: required gap m.
      reduction: `"mean"`, `"sum"` or `"none"`.

    Returns:
      A scalar, or `(*batch,)` with `reduction="none"`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(multi_margin_loss(jnp.array([3.0, 1.0, 2.5]), jnp.array(0)))
      0.1666666716337204
    """
    onehot = _one_hot_targets(logits, labels, "multi_margin_loss")
    true = jnp.sum(logits * onehot, axis=-1, keepdims=True)
    terms = jnp.maximum(0.0, margin - true + logits) * (1.0 - onehot)
    per_example = jnp.sum(terms, axis=-1) / logits.shape[-1]
    return _reduce(per_example, reduction, "multi_margin_loss")


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose arg-max logit is the label (ties go to the lower index).

    Args:
      logits: `(*batch, K)`.
      labels: integer `(*batch,)`, or one-hot / probabilities `(*batch, K)` (their arg-max).

    Returns:
      A float scalar in `[0, 1]`.

    Example:
      >>> import jax.numpy as jnp
      >>> float(accuracy(jnp.array([[2.0, 1.0], [0.0, 3.0]]), jnp.array([0, 0])))
      0.5
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        labels = jnp.argmax(labels, axis=-1)
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype))
