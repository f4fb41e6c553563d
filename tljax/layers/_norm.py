"""LayerNorm and BatchNorm (with explicit running-statistics state)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from tljax.layers._misc import default_float, named_scope


class LayerNorm(eqx.Module):
    """Layer normalisation over the trailing `normalized_shape` axes, like `torch.nn.LayerNorm`.

    `y = (x - mean) / sqrt(var + eps) * weight + bias`, with the biased variance. Leading axes
    are independent examples.

    Example:
      >>> import jax.numpy as jnp
      >>> LayerNorm(4)(jnp.arange(8.0).reshape(2, 4)).shape
      (2, 4)
    """

    weight: jax.Array | None
    bias: jax.Array | None
    normalized_shape: tuple[int, ...] = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = None,
    ):
        """Create the layer (weight 1, bias 0).

        Args:
          normalized_shape: int or shape of the trailing axes to normalise over.
          eps: added to the variance for stability.
          elementwise_affine: whether to learn a per-element weight (and bias).
          bias: whether to learn a bias (only with `elementwise_affine`).
          dtype: parameter dtype (default float32).
        """
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        dtype = default_float(dtype)
        self.normalized_shape = shape
        self.eps = eps
        self.weight = jnp.ones(shape, dtype) if elementwise_affine else None
        self.bias = jnp.zeros(shape, dtype) if elementwise_affine and bias else None

    @named_scope("tljax.layers.LayerNorm")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Normalise.

        Args:
          x: array of shape `(*batch, *normalized_shape)`.
          key: ignored.

        Returns:
          Array of the same shape.
        """
        del key
        n = len(self.normalized_shape)
        if x.shape[x.ndim - n :] != self.normalized_shape:
            raise ValueError(
                f"tljax.layers.LayerNorm: input shape {x.shape} does not end with "
                f"normalized_shape {self.normalized_shape}."
            )
        axes = tuple(range(x.ndim - n, x.ndim))
        mean = jnp.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        var = jnp.mean(centred * centred, axis=axes, keepdims=True)
        y = centred * lax.rsqrt(var + jnp.asarray(self.eps, x.dtype))
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class BatchNormState(eqx.Module):
    """Running statistics of a `BatchNorm` layer (a pytree; thread it explicitly).

    Attributes:
      running_mean: array of shape `(num_features,)`.
      running_var: array of shape `(num_features,)` (unbiased estimates, as in PyTorch).
    """

    running_mean: jax.Array
    running_var: jax.Array


class BatchNorm(eqx.Module):
    """Batch normalisation over axis 1 of a batched input, like `torch.nn.BatchNorm1d/2d/3d`.

    Pure design: the running statistics are not stored in the layer but in an explicit
    `BatchNormState` that goes in and comes out of every call,

        state = bn.init_state()
        y, state = bn(x, state)                 # training: batch statistics, state updated
        y, _ = bn(x, state, inference=True)     # evaluation: running statistics, state unchanged

    so a jitted training step returns the new state next to the loss. `inference` may also be
    set on the layer and toggled for a whole model with `equinox.nn.inference_mode`.
    `Sequential` threads the states of the layers it contains.

    Training mode normalises with the batch mean and biased variance over every axis but 1 and
    updates `running = (1 - momentum) * running + momentum * batch_stat`, using the unbiased
    variance for `running_var`, exactly as PyTorch does. The input must carry the batch axis
    (`(N, C)`, `(N, C, L)`, `(N, C, H, W)`, ...): call the layer outside `jax.vmap`.

    Example:
      >>> import jax.numpy as jnp
      >>> bn = BatchNorm(3)
      >>> state = bn.init_state()
      >>> y, state = bn(jnp.arange(12.0).reshape(4, 3), state)
      >>> y.shape, state.running_mean.shape
      ((4, 3), (3,))
    """

    weight: jax.Array | None
    bias: jax.Array | None
    num_features: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    momentum: float = eqx.field(static=True)
    track_running_stats: bool = eqx.field(static=True)
    inference: bool

    is_stateful = True  # read by Sequential; a class constant, not a field

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        inference: bool = False,
        *,
        dtype: Any = None,
    ):
        """Create the layer (weight 1, bias 0).

        Args:
          num_features: number of channels C (axis 1 of the input).
          eps: added to the variance for stability.
          momentum: weight of the new batch statistic in the running average.
          affine: whether to learn a per-channel weight and bias.
          track_running_stats: if False, evaluation also uses batch statistics and the state
            is never updated.
          inference: default mode (`False`: batch statistics; `True`: running statistics).
          dtype: parameter and state dtype (default float32).
        """
        dtype = default_float(dtype)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        self.inference = inference
        self.weight = jnp.ones((num_features,), dtype) if affine else None
        self.bias = jnp.zeros((num_features,), dtype) if affine else None

    def init_state(self) -> BatchNormState:
        """Initial running statistics: mean 0 and variance 1."""
        dtype = self.weight.dtype if self.weight is not None else default_float()
        return BatchNormState(
            jnp.zeros((self.num_features,), dtype), jnp.ones((self.num_features,), dtype)
        )

    @named_scope("tljax.layers.BatchNorm")
    def __call__(
        self,
        x: jax.Array,
        state: BatchNormState,
        *,
        key: jax.Array | None = None,
        inference: bool | None = None,
    ) -> tuple[jax.Array, BatchNormState]:
        """Normalise.

        Args:
          x: array of shape `(N, C, *spatial)` with `C == num_features`.
          state: the running statistics (from `init_state()` or a previous call).
          key: ignored.
          inference: overrides the layer's `inference` flag for this call.

        Returns:
          `(y, new_state)`: `y` has the shape of `x`; `new_state` is `state` itself in
          inference mode.
        """
        del key
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"tljax.layers.BatchNorm: expected input (N, {self.num_features}, ...) with the "
                f"batch axis first, got shape {x.shape}. BatchNorm needs the whole batch: call it "
                "outside jax.vmap."
            )
        inference = self.inference if inference is None else inference
        use_running = inference and self.track_running_stats
        axes = (0, *range(2, x.ndim))
        bshape = (1, self.num_features) + (1,) * (x.ndim - 2)
        if use_running:
            mean, var = state.running_mean, state.running_var
        else:
            mean = jnp.mean(x, axis=axes)
            centred = x - mean.reshape(bshape)
            var = jnp.mean(centred * centred, axis=axes)
        y = (x - mean.reshape(bshape)) * lax.rsqrt(
            var.reshape(bshape) + jnp.asarray(self.eps, x.dtype)
        )
        if self.weight is not None:
            y = y * self.weight.reshape(bshape)
        if self.bias is not None:
            y = y + self.bias.reshape(bshape)
        if use_running or not self.track_running_stats or inference:
            return y, state
        n = x.size // self.num_features
        if n < 2:
            raise ValueError(
                f"tljax.layers.BatchNorm: training mode needs more than one value per channel, got "
                f"input shape {x.shape}. Use a larger batch or inference=True."
            )
        m = self.momentum
        unbiased = var * (n / (n - 1))
        new_state = BatchNormState(
            lax.stop_gradient((1 - m) * state.running_mean + m * mean),
            lax.stop_gradient((1 - m) * state.running_var + m * unbiased),
        )
        return y, new_state
