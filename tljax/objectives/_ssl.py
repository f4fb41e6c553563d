"""Self-supervised objectives: masked autoencoding, JEPA, VICReg and Barlow Twins.

Pure functions of arrays (traceable with jit / vmap / grad). MAE and JEPA losses are unbatched
(one example; `jax.vmap` for a batch); VICReg and Barlow Twins are batch-level by nature (they use
batch statistics) and take embeddings of shape `(n, d)`.

Sources are described, not copied: each docstring states the formula and where it comes from, and
where the official code differs from the paper, which one is followed.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tljax.core import InputError

# ----------------------------------------------------------------------------------------------
# Masked autoencoding (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners")
# ----------------------------------------------------------------------------------------------


def patchify(image, patch_size: int) -> jax.Array:
    """Splits an image `(H, W, C)` into `L = (H/p)(W/p)` flattened patches `(L, p*p*C)`.

    Patches are ordered row by row; each patch is flattened in (row, column, channel) order.

    Args:
      image: array of shape `(H, W, C)`; H and W divisible by `patch_size`.
      patch_size: side p of the square patches.

    Returns:
      Array of shape `(H/p * W/p, p * p * C)`.
    """
    image = jnp.asarray(image)
    if image.ndim != 3:
        raise InputError(f"patchify: expected an image of shape (H, W, C), got {image.shape}.")
    h, w, c = image.shape
    p = int(patch_size)
    if p < 1 or h % p or w % p:
        raise InputError(
            f"patchify: image sides ({h}, {w}) must be multiples of patch_size={patch_size!r}; "
            "crop or pad the image first."
        )
    x = image.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4)
    return x.reshape((h // p) * (w // p), p * p * c)


def _exact_ratio(where: str, mask_ratio) -> Fraction:
    if isinstance(mask_ratio, (bool, np.bool_)):
        raise InputError(f"{where}: mask_ratio must be a number in [0, 1], got {mask_ratio!r}.")
    if isinstance(mask_ratio, (float, np.floating)):
        if not np.isfinite(mask_ratio):
            raise InputError(f"{where}: mask_ratio must be finite, got {mask_ratio!r}.")
        # The shortest decimal that round-trips (what was typed): 0.15 means 15/100 exactly.
        r = Fraction(repr(float(mask_ratio)))
    else:
        r = Fraction(mask_ratio)
    if not 0 <= r <= 1:
        raise InputError(f"{where}: mask_ratio must lie in [0, 1], got {mask_ratio!r}.")
    return r


def mae_num_kept(num_patches: int, mask_ratio) -> int:
    """Number of visible (kept) patches: round(L * (1 - mask_ratio)), computed exactly.

    Rounding rule: the product is evaluated in exact rational arithmetic, with a float
    `mask_ratio` read as the shortest decimal that round-trips (`repr`), so 0.15 means 15/100 and
    not the binary float just below it; the result is then rounded half to even (Python's
    `round`). Examples: L=196, 0.75 -> 49; L=10, 0.15 -> round(8.5) = 8; L=6, 0.75 -> round(1.5)
    = 2; L=2, 0.75 -> round(0.5) = 0. (The official MAE code truncates with `int(...)` instead.)

    Args:
      num_patches: L >= 1.
      mask_ratio: fraction of patches to mask, in [0, 1] (float, int or `fractions.Fraction`).

    Returns:
      An int in [0, L].

    Examples:
      >>> mae_num_kept(196, 0.75), mae_num_kept(10, 0.15), mae_num_kept(6, 0.75)
      (49, 8, 2)
    """
    if not isinstance(num_patches, (int, np.integer)) or num_patches < 1:
        raise InputError(f"mae_num_kept: num_patches must be a positive int, got {num_patches!r}.")
    return round(int(num_patches) * (1 - _exact_ratio("mae_num_kept", mask_ratio)))


def mask_from_ranks(ranks, num_kept):
    """The MAE mask rule: patch i is masked iff its rank in the shuffle is >= `num_kept`.

    `ranks` is the inverse of the shuffling permutation (rank[i] = position of patch i in the
    shuffled order). Plain comparison, so it works on jax and numpy arrays alike.
    """
    return ranks >= num_kept


class MaskInfo(NamedTuple):
    """Result of `mae_random_masking` for one example with L patches, K of them kept.

    Attributes:
      keep_indices: int32 `(K,)`, indices of the visible patches, in shuffled order.
      masked_indices: int32 `(L - K,)`, indices of the masked patches, in shuffled order.
      mask: bool `(L,)`, True where the patch is masked (removed from the encoder's input).
      ranks: int32 `(L,)`, position of each patch in the shuffle (MAE's "ids_restore": gathering
        `concat([kept_tokens, mask_tokens])` with it restores the original patch order).
    """

    keep_indices: jax.Array
    masked_indices: jax.Array
    mask: jax.Array
    ranks: jax.Array


def mae_random_masking(key: jax.Array, num_patches: int, mask_ratio) -> MaskInfo:
    """Random patch masking of MAE for one example, from an explicit key.

    A uniformly random permutation of the L patch indices is drawn from `key`; the first
    `K = mae_num_kept(L, mask_ratio)` are kept, the rest masked, so exactly K patches are visible
    (claim "mae kept-patch count is exact"). For a batch, give each example its own key:
    `jax.vmap(lambda k: mae_random_masking(k, L, r))(jax.random.split(key, n))`.

    Args:
      key: PRNG key.
      num_patches: L (static).
      mask_ratio: fraction to mask (static), see `mae_num_kept` for the rounding.

    Returns:
      A `MaskInfo`.

    Examples:
      >>> info = mae_random_masking(jax.random.key(0), 196, 0.75)
      >>> info.keep_indices.shape, int(info.mask.sum())
      ((49,), 147)
    """
    k = mae_num_kept(num_patches, mask_ratio)
    perm = jax.random.permutation(key, num_patches).astype(jnp.int32)
    ranks = jnp.argsort(perm).astype(jnp.int32)
    return MaskInfo(perm[:k], perm[k:], mask_from_ranks(ranks, k), ranks)


def mae_loss(pred, target, mask, *, norm_pix_loss: bool = False, eps: float = 1e-6) -> jax.Array:
    """MAE reconstruction loss: mean squared error over the masked patches only.

    loss = sum_i m_i * mean_j (pred_ij - target_ij)^2 / sum_i m_i, with m_i = 1 for masked
    patches. With `norm_pix_loss`, each target patch is first normalised by its own mean and
    variance over its pixels: (target - mean) / sqrt(var + eps), where var is the unbiased variance
    (divides by P - 1) as in the official MAE code (PyTorch's default `var`), eps = 1e-6. If no
    patch is masked the loss is 0. For a batch with the same K per example (as
    `mae_random_masking` gives), the mean of per-example losses equals the official code's
    batch-pooled ratio.

    Args:
      pred: predicted patches `(L, P)`.
      target: true patches `(L, P)` (e.g. `patchify(image, p)`).
      mask: bool or 0/1 `(L,)`, True / 1 where masked.
      norm_pix_loss: normalise each target patch (needs P >= 2).
      eps: added to the patch variance.

    Returns:
      Scalar loss.
    """
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.shape != target.shape or pred.ndim != 2 or jnp.shape(mask) != pred.shape[:1]:
        raise InputError(
            f"mae_loss: expected pred and target of shape (L, P) and mask of shape (L,), got "
            f"{pred.shape}, {target.shape} and {jnp.shape(mask)}."
        )
    if norm_pix_loss:
        if target.shape[1] < 2:
            raise InputError("mae_loss: norm_pix_loss needs at least 2 values per patch.")
        mean = jnp.mean(target, axis=-1, keepdims=True)
        var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / jnp.sqrt(var + eps)
    per_patch = jnp.mean((pred - target) ** 2, axis=-1)
    m = jnp.asarray(mask).astype(per_patch.dtype)
    count = jnp.sum(m)
    return jnp.where(count > 0, jnp.sum(per_patch * m) / jnp.maximum(count, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------
# JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding
# Predictive Architecture")
# ----------------------------------------------------------------------------------------------


def jepa_loss(
    predictions,
    targets,
    *,
    kind: str = "l2",
    beta: float = 1.0,
    normalize_targets: bool = False,
    eps: float = 1e-5,
) -> jax.Array:
    """JEPA predictive loss between predicted and target embeddings, with stop-gradient.

    The targets are wrapped in `jax.lax.stop_gradient` here, so no gradient reaches the target
    encoder even if the caller forgets. Per element x = prediction - target:
    "l2": x^2; "smooth_l1": x^2 / (2 beta) if |x| < beta else |x| - beta / 2 (PyTorch's
    smooth-L1, which the official I-JEPA code uses with beta = 1). The mean over all elements is
    returned. With `normalize_targets`, each target vector is layer-normalised over its last axis
    without affine parameters ((h - mean) / sqrt(var + eps), biased variance), as I-JEPA does.

    Args:
      predictions: predictor outputs, e.g. `(num_targets, d)`.
      targets: target-encoder outputs of the same shape.
      kind: "l2" or "smooth_l1".
      beta: smooth-L1 threshold (> 0).
      normalize_targets: layer-normalise the targets.
      eps: layer-norm epsilon.

    Returns:
      Scalar loss.
    """
    predictions = jnp.asarray(predictions)
    targets = jax.lax.stop_gradient(jnp.asarray(targets))
    if predictions.shape != targets.shape:
        raise InputError(
            f"jepa_loss: predictions {predictions.shape} and targets {targets.shape} must have "
            "the same shape."
        )
    if normalize_targets:
        mean = jnp.mean(targets, axis=-1, keepdims=True)
        var = jnp.var(targets, axis=-1, keepdims=True)
        targets = (targets - mean) / jnp.sqrt(var + eps)
    x = predictions - targets
    if kind == "l2":
        return jnp.mean(x**2)
    if kind == "smooth_l1":
        if not beta > 0:
            raise InputError(f"jepa_loss: beta must be > 0, got {beta!r}.")
        ax = jnp.abs(x)
        return jnp.mean(jnp.where(ax < beta, 0.5 * x**2 / beta, ax - 0.5 * beta))
    raise InputError(f"jepa_loss: kind must be 'l2' or 'smooth_l1', got {kind!r}.")


def jepa_predictive_loss(
    context_encoder: Callable[[Any], Any],
    predictor: Callable[[Any], Any],
    target_encoder: Callable[[Any], Any],
    context_input,
    target_input,
    **loss_kwargs,
) -> jax.Array:
    """The JEPA objective for one example: predict the target's embedding from the context's.

    loss = jepa_loss(predictor(context_encoder(context_input)),
                     stop_gradient(target_encoder(target_input)))

    The encoders and predictor are any callables (e.g. `eqx.Module`s, with the positions of the
    target blocks closed over). Differentiate with respect to the context encoder and predictor;
    the target encoder is updated by `ema_update` / `ema_target`, not by gradients.

    Args:
      context_encoder: maps the context (visible part) to embeddings.
      predictor: maps context embeddings to predicted target embeddings.
      target_encoder: maps the target input to target embeddings.
      context_input: input of the context encoder.
      target_input: input of the target encoder.
      **loss_kwargs: passed to `jepa_loss` (`kind`, `beta`, `normalize_targets`, `eps`).

    Returns:
      Scalar loss.
    """
    return jepa_loss(
        predictor(context_encoder(context_input)), target_encoder(target_input), **loss_kwargs
    )


def ema_update(target, online, decay) -> Any:
    """Exponential moving average of parameters: decay * target + (1 - decay) * online.

    Applied to the inexact-array leaves of two pytrees of the same structure (e.g. two
    `eqx.Module`s); other leaves are taken from `target`. `online` goes through `stop_gradient`,
    so the update is never part of a gradient path.

    Args:
      target: the target (teacher) parameters.
      online: the online (student) parameters.
      decay: momentum in [0, 1] (I-JEPA ramps it from 0.996 to 1.0).

    Returns:
      The updated target parameters.
    """
    online = jax.lax.stop_gradient(online)

    def mix(t, o):
        if eqx.is_inexact_array(t):
            return decay * t + (1.0 - decay) * o
        return t

    return jax.tree_util.tree_map(mix, target, online)


class EMAState(NamedTuple):
    """State of `ema_target`: the target parameters and the number of updates so far."""

    params: Any
    count: jax.Array


class EMATransform(NamedTuple):
    """`(init, update)` pair of `ema_target` (optax style)."""

    init: Callable[[Any], EMAState]
    update: Callable[[Any, EMAState], EMAState]


def ema_target(decay: float | Callable[[jax.Array], jax.Array]) -> EMATransform:
    """A target network kept as an EMA of the online network, as a pure `(init, update)` pair.

    `init(online)` copies the online parameters (stop-gradient); `update(online, state)` applies
    `ema_update` with `decay(count)` (a float, or a schedule such as
    `optax.linear_schedule(0.996, 1.0, num_steps)`), then increments `count`.

    Args:
      decay: constant momentum or a function of the update count.

    Returns:
      An `EMATransform`.
    """
    schedule = decay if callable(decay) else (lambda count: decay)

    def init(online) -> EMAState:
        return EMAState(jax.lax.stop_gradient(online), jnp.zeros((), jnp.int32))

    def update(online, state: EMAState) -> EMAState:
        d = schedule(state.count)
        return EMAState(ema_update(state.params, online, d), state.count + 1)

    return EMATransform(init, update)


# ----------------------------------------------------------------------------------------------
# VICReg (Bardes, Ponce & LeCun, ICLR 2022) and Barlow Twins (Zbontar et al., ICML 2021)
# ----------------------------------------------------------------------------------------------


def _check_embeddings(where: str, z, min_n: int):
    z = jnp.asarray(z)
    if z.ndim != 2 or z.shape[0] < min_n:
        raise InputError(
            f"{where}: expected embeddings of shape (n, d) with n >= {min_n}, got {z.shape}."
        )
    return z


def _check_pair(where: str, z_a, z_b, min_n: int):
    z_a = _check_embeddings(where, z_a, min_n)
    z_b = _check_embeddings(where, z_b, min_n)
    if z_a.shape != z_b.shape:
        raise InputError(f"{where}: the two branches have shapes {z_a.shape} and {z_b.shape}.")
    return z_a, z_b


def _centered(z):
    return z - jnp.mean(z, axis=0, keepdims=True)


def _off_diagonal_sq_sum(c):
    d = c.shape[0]
    return jnp.sum(jnp.where(jnp.eye(d, dtype=bool), 0.0, c**2))


def vicreg_variance_term(z, *, gamma: float = 1.0, eps: float = 1e-4) -> jax.Array:
    """VICReg variance term of one branch: v(Z) = mean_j max(0, gamma - sqrt(Var(z^j) + eps)).

    Var is the unbiased variance over the batch (divides by n - 1), as in the paper and the
    official code. The term is 0 exactly when Var(z^j) + eps >= gamma^2 for every dimension j
    (claim "vicreg variance term is zero iff ...").

    Args:
      z: embeddings `(n, d)`, n >= 2.
      gamma: target standard deviation.
      eps: added to the variance for stability.

    Returns:
      Scalar.
    """
    z = _check_embeddings("vicreg_variance_term", z, 2)
    var = jnp.sum(_centered(z) ** 2, axis=0) / (z.shape[0] - 1)
    return jnp.mean(jnp.maximum(gamma - jnp.sqrt(var + eps), 0.0))


def vicreg_covariance_term(z) -> jax.Array:
    """VICReg covariance term of one branch: c(Z) = (1/d) sum_{i != j} C(Z)_ij^2.

    C(Z) = (1/(n-1)) sum_k (z_k - mean)(z_k - mean)^T, the unbiased covariance matrix.

    Args:
      z: embeddings `(n, d)`, n >= 2.

    Returns:
      Scalar.
    """
    z = _check_embeddings("vicreg_covariance_term", z, 2)
    zc = _centered(z)
    cov = zc.T @ zc / (z.shape[0] - 1)
    return _off_diagonal_sq_sum(cov) / z.shape[1]


class VICRegTerms(NamedTuple):
    """The unweighted VICReg terms and the weighted total `loss`."""

    invariance: jax.Array
    variance: jax.Array
    covariance: jax.Array
    loss: jax.Array


def vicreg_terms(
    z_a,
    z_b,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    variance_convention: str = "official",
) -> VICRegTerms:
    """VICReg loss and its terms for two batches of embeddings.

    loss = sim_coeff * s + std_coeff * v + cov_coeff * (c(Z_a) + c(Z_b)), with the defaults
    lambda = mu = 25, nu = 1, gamma = 1, eps = 1e-4 of the paper and official code, where

    - s = mean over all n*d elements of (z_a - z_b)^2, as the official code computes it (mean
      squared error). The paper writes s = (1/n) sum_i ||z_a_i - z_b_i||^2, which is d times this.
    - v: with variance_convention="official" (default), the official repository's
      (v(Z_a) + v(Z_b)) / 2, i.e. half the paper's sum; with "paper", v(Z_a) + v(Z_b) as in the
      paper's loss equation. See `vicreg_variance_term` for v(Z).
    - c(Z): `vicreg_covariance_term`; both the paper and the code add the two branches.

    Args:
      z_a: embeddings of the first view `(n, d)`, n >= 2.
      z_b: embeddings of the second view, same shape.
      sim_coeff: lambda.
      std_coeff: mu.
      cov_coeff: nu.
      gamma: target standard deviation.
      eps: variance epsilon.
      variance_convention: "official" or "paper".

    Returns:
      `VICRegTerms(invariance, variance, covariance, loss)`; `variance` and `covariance` are
      the combined two-branch terms that enter the loss.
    """
    z_a, z_b = _check_pair("vicreg_terms", z_a, z_b, 2)
    if variance_convention not in ("official", "paper"):
        raise InputError(
            f"vicreg_terms: variance_convention must be 'official' or 'paper', got "
            f"{variance_convention!r}."
        )
    inv = jnp.mean((z_a - z_b) ** 2)
    var = vicreg_variance_term(z_a, gamma=gamma, eps=eps) + vicreg_variance_term(
        z_b, gamma=gamma, eps=eps
    )
    if variance_convention == "official":
        var = var / 2.0
    cov = vicreg_covariance_term(z_a) + vicreg_covariance_term(z_b)
    return VICRegTerms(inv, var, cov, sim_coeff * inv + std_coeff * var + cov_coeff * cov)


def vicreg_loss(z_a, z_b, **kwargs) -> jax.Array:
    """The scalar VICReg loss; `vicreg_terms(z_a, z_b, **kwargs).loss` (see there)."""
    return vicreg_terms(z_a, z_b, **kwargs).loss


def barlow_twins_cross_correlation(z_a, z_b, *, eps: float = 1e-5) -> jax.Array:
    """Cross-correlation matrix of batch-normalised embeddings (Barlow Twins).

    Each branch is normalised per dimension by batch normalisation without affine parameters,
    (z - mean) / sqrt(var + eps) with the biased batch variance (training-mode batch norm,
    eps = 1e-5 as in the official code); then C = z_a_norm^T z_b_norm / n, shape `(d, d)`.

    Args:
      z_a: embeddings `(n, d)`.
      z_b: embeddings `(n, d)`.
      eps: batch-norm epsilon.

    Returns:
      C, shape `(d, d)`.
    """
    z_a, z_b = _check_pair("barlow_twins_cross_correlation", z_a, z_b, 1)

    def bn(z):
        zc = _centered(z)
        return zc / jnp.sqrt(jnp.mean(zc**2, axis=0, keepdims=True) + eps)

    return bn(z_a).T @ bn(z_b) / z_a.shape[0]


def barlow_twins_loss_from_correlation(c, *, lambda_: float = 0.0051) -> jax.Array:
    """Barlow Twins loss of a cross-correlation matrix.

    loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2 (Zbontar et al. 2021, eq. 1;
    lambda = 0.0051 is the official code's default). It is 0 when C is the identity.

    Args:
      c: square matrix `(d, d)`.
      lambda_: weight of the redundancy-reduction (off-diagonal) term.

    Returns:
      Scalar loss.
    """
    c = jnp.asarray(c)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise InputError(
            f"barlow_twins_loss_from_correlation: expected a square matrix, got {c.shape}."
        )
    return jnp.sum((1.0 - jnp.diagonal(c)) ** 2) + lambda_ * _off_diagonal_sq_sum(c)


def barlow_twins_loss(z_a, z_b, *, lambda_: float = 0.0051, eps: float = 1e-5) -> jax.Array:
    """Barlow Twins loss of two batches of embeddings `(n, d)`.

    `barlow_twins_loss_from_correlation(barlow_twins_cross_correlation(z_a, z_b, eps=eps))`.
    As in the official code there is no extra scale factor. A batch whose columns are constant
    (complete collapse) gives C = 0 and loss = d (needs eps > 0).

    Args:
      z_a: embeddings of the first view.
      z_b: embeddings of the second view.
      lambda_: off-diagonal weight.
      eps: batch-norm epsilon.

    Returns:
      Scalar loss.
    """
    return barlow_twins_loss_from_correlation(
        barlow_twins_cross_correlation(z_a, z_b, eps=eps), lambda_=lambda_
    )
