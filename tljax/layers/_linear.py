"""Linear, Embedding and Flatten layers."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from tljax.layers._misc import default_float, named_scope, uniform_init


class Linear(eqx.Module):
    """Affine map `y = x Wᵀ + b`, like `torch.nn.Linear`.

    The weight has PyTorch's layout `(out_features, in_features)`. The layer traces to one
    `dot_general` contracting the last axis of `x` (plus an `add` for the bias), so any number
    of leading batch axes is accepted without `jax.vmap`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = Linear(3, 2, key=jax.random.key(0))
      >>> layer(jnp.ones(3)).shape, layer(jnp.ones((5, 3))).shape
      ((2,), (5, 2))
    """

    weight: jax.Array
    bias: jax.Array | None
    in_features: int = eqx.field(static=True)
    out_features: int = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the layer with PyTorch's initialisation U(-1/√in, 1/√in).

        Args:
          in_features: size of the last axis of the input.
          out_features: size of the last axis of the output.
          bias: whether to add a learned bias.
          dtype: parameter dtype (default: JAX's default float, float32).
          key: PRNG key for the initialisation.
        """
        dtype = default_float(dtype)
        wkey, bkey = jax.random.split(key)
        self.weight = uniform_init(wkey, (out_features, in_features), in_features, dtype)
        self.bias = uniform_init(bkey, (out_features,), in_features, dtype) if bias else None
        self.in_features = in_features
        self.out_features = out_features

    @named_scope("tljax.layers.Linear")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the layer.

        Args:
          x: array of shape `(*batch, in_features)`.
          key: ignored (accepted so that containers can pass keys to every layer).

        Returns:
          Array of shape `(*batch, out_features)`.
        """
        del key
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"tljax.layers.Linear: expected input with last axis {self.in_features}, got "
                f"shape {x.shape}. Reshape the input or build Linear({x.shape[-1] if x.ndim else 1}"
                f", {self.out_features})."
            )
        y = lax.dot_general(x, self.weight, (((x.ndim - 1,), (1,)), ((), ())))
        if self.bias is not None:
            y = y + self.bias
        return y


class Embedding(eqx.Module):
    """Lookup table of vectors, like `torch.nn.Embedding` (weights initialised N(0, 1)).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> emb = Embedding(10, 4, key=jax.random.key(0))
      >>> emb(jnp.array([1, 2, 3])).shape
      (3, 4)
    """

    weight: jax.Array
    num_embeddings: int = eqx.field(static=True)
    embedding_dim: int = eqx.field(static=True)

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        weight: jax.Array | None = None,
        dtype: Any = None,
        key: jax.Array | None = None,
    ):
        """Create the table.

        Args:
          num_embeddings: number of rows (vocabulary size).
          embedding_dim: length of each vector.
          weight: optional initial table of shape `(num_embeddings, embedding_dim)`.
          dtype: parameter dtype (default float32).
          key: PRNG key; required unless `weight` is given.
        """
        if weight is None:
            if key is None:
                raise ValueError("tljax.layers.Embedding: pass `key=` (or an explicit `weight=`).")
            weight = jax.random.normal(key, (num_embeddings, embedding_dim), default_float(dtype))
        elif weight.shape != (num_embeddings, embedding_dim):
            raise ValueError(
                f"tljax.layers.Embedding: weight has shape {weight.shape}, expected "
                f"{(num_embeddings, embedding_dim)}."
            )
        self.weight = weight
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim

    @named_scope("tljax.layers.Embedding")
    def __call__(self, indices: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Look up rows.

        Args:
          indices: integer array of any shape `S` with values in `[0, num_embeddings)`;
            out-of-range indices give NaN rows (JAX's `fill` mode), they never wrap around.
          key: ignored.

        Returns:
          Array of shape `(*S, embedding_dim)`.
        """
        del key
        if not jnp.issubdtype(jnp.asarray(indices).dtype, jnp.integer):
            raise TypeError(
                f"tljax.layers.Embedding: indices must be integers, got dtype {indices.dtype}."
            )
        return jnp.take(self.weight, indices, axis=0, mode="fill")


class Flatten(eqx.Module):
    """Flatten the axes `start_dim..end_dim` into one, like `torch.nn.Flatten`.

    Unlike PyTorch (whose default `start_dim=1` skips a batch axis), tljax layers are written
    for one example, batched with `jax.vmap`, so the default `start_dim` is 0. Pass
    `start_dim=1` for an explicitly batched input.

    Example:
      >>> import jax.numpy as jnp
      >>> Flatten()(jnp.ones((2, 3, 4))).shape, Flatten(start_dim=1)(jnp.ones((2, 3, 4))).shape
      ((24,), (2, 12))
    """

    start_dim: int = eqx.field(static=True, default=0)
    end_dim: int = eqx.field(static=True, default=-1)

    @named_scope("tljax.layers.Flatten")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Flatten.

        Args:
          x: array of rank at least 1.
          key: ignored.

        Returns:
          `x` reshaped so that axes `start_dim..end_dim` (inclusive) become one axis.
        """
        del key
        start = self.start_dim % x.ndim
        end = self.end_dim % x.ndim
        if start > end:
            raise ValueError(
                f"tljax.layers.Flatten: start_dim={self.start_dim} comes after "
                f"end_dim={self.end_dim} for an input of rank {x.ndim}."
            )
        shape = x.shape[:start] + (-1,) + x.shape[end + 1 :]
        return jnp.reshape(x, shape)


class Identity(eqx.Module):
    """Return the input unchanged (a placeholder layer, like `torch.nn.Identity`)."""

    @named_scope("tljax.layers.Identity")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Return `x`."""
        del key
        return x
