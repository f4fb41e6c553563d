"""Activation layers and Dropout."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from tljax.layers._misc import named_scope


class ReLU(eqx.Module):
    """`max(x, 0)` elementwise (traces to `jax.nn.relu`: a `custom_jvp` around `max`)."""

    @named_scope("tljax.layers.ReLU")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply to `x` of any shape; `key` is ignored."""
        del key
        return jax.nn.relu(x)


class GELU(eqx.Module):
    """Gaussian error linear unit, like `torch.nn.GELU`.

    `approximate="none"` (PyTorch's default) is `x * Φ(x)` (traces to `erf`);
    `approximate="tanh"` is the tanh formula (traces to `tanh`, `integer_pow`, `mul`).
    """

    approximate: str = eqx.field(static=True, default="none")

    def __check_init__(self):
        if self.approximate not in ("none", "tanh"):
            raise ValueError(
                "tljax.layers.GELU: approximate must be 'none' or 'tanh', got "
                f"{self.approximate!r}."
            )

    @named_scope("tljax.layers.GELU")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply to `x` of any shape; `key` is ignored."""
        del key
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")


class Tanh(eqx.Module):
    """Hyperbolic tangent elementwise (primitive `tanh`)."""

    @named_scope("tljax.layers.Tanh")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply to `x` of any shape; `key` is ignored."""
        del key
        return jnp.tanh(x)


class Sigmoid(eqx.Module):
    """Logistic sigmoid `1 / (1 + exp(-x))` elementwise (primitive `logistic`)."""

    @named_scope("tljax.layers.Sigmoid")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply to `x` of any shape; `key` is ignored."""
        del key
        return jax.nn.sigmoid(x)


class Softplus(eqx.Module):
    """`log(1 + exp(beta * x)) / beta`, linear above `threshold`, like `torch.nn.Softplus`."""

    beta: float = eqx.field(static=True, default=1.0)
    threshold: float = eqx.field(static=True, default=20.0)

    @named_scope("tljax.layers.Softplus")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply to `x` of any shape; `key` is ignored."""
        del key
        bx = x * self.beta if self.beta != 1.0 else x
        soft = jax.nn.softplus(bx)
        if self.beta != 1.0:
            soft = soft / self.beta
        # PyTorch switches to the identity where beta * x > threshold (for numerical stability).
        return jnp.where(bx > self.threshold, x, soft)


class LeakyReLU(eqx.Module):
    """`x` for `x >= 0`, `negative_slope * x` otherwise, like `torch.nn.LeakyReLU`."""

    negative_slope: float = eqx.field(static=True, default=0.01)

    @named_scope("tljax.layers.LeakyReLU")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply to `x` of any shape; `key` is ignored."""
        del key
        return jax.nn.leaky_relu(x, self.negative_slope)


class Dropout(eqx.Module):
    """Randomly zero elements with probability `p` and scale the rest by `1 / (1 - p)`.

    Randomness is explicit: pass `key=` in training mode. In inference mode (the `inference`
    field, toggled for a whole model by `equinox.nn.inference_mode`, or the call's
    `inference=` argument) or with `p == 0` the layer is the identity and adds nothing to the
    graph.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> drop = Dropout(0.5)
      >>> drop(jnp.ones(4), key=jax.random.key(0)).shape
      (4,)
      >>> bool((Dropout(0.5, inference=True)(jnp.ones(4)) == 1).all())
      True
    """

    p: float = eqx.field(static=True)
    inference: bool

    def __init__(self, p: float = 0.5, inference: bool = False):
        """Create the layer.

        Args:
          p: drop probability in `[0, 1)`.
          inference: if True the layer is the identity.
        """
        if not 0.0 <= p < 1.0:
            raise ValueError(f"tljax.layers.Dropout: p must be in [0, 1), got {p}.")
        self.p = p
        self.inference = inference

    @named_scope("tljax.layers.Dropout")
    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Apply dropout.

        Args:
          x: array of any shape.
          key: PRNG key, required in training mode with `p > 0`.
          inference: overrides the layer's `inference` field for this call.

        Returns:
          Array of the shape of `x`.
        """
        inference = self.inference if inference is None else inference
        if inference or self.p == 0.0:
            return x
        if key is None:
            raise ValueError(
                "tljax.layers.Dropout: training mode needs a PRNG key: call it with `key=...`, or "
                "switch to inference with `equinox.nn.inference_mode(model)` / `inference=True`."
            )
        keep = jax.random.bernoulli(key, 1.0 - self.p, x.shape)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.p, x.dtype), jnp.zeros_like(x))
