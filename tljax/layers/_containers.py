"""Sequential and MLP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax

from tljax.layers._activations import ReLU
from tljax.layers._linear import Linear
from tljax.layers._misc import named_scope


def _stateful(layer: Any) -> bool:
    return bool(getattr(layer, "is_stateful", False))


def _call(layer: Any, x: Any, key: jax.Array | None) -> Any:
    # Modules take `key=` (Equinox convention); plain functions such as jax.nn.relu do not.
    return layer(x, key=key) if isinstance(layer, eqx.Module) else layer(x)


class Sequential(eqx.Module):
    """Apply layers one after the other, like `torch.nn.Sequential`.

    A PRNG key passed to the call is split into one key per layer (Dropout needs one). If a
    layer is stateful (`BatchNorm`, or a nested stateful `Sequential`), the container is
    stateful too: call it as `y, state = seq(x, state)` with `state = seq.init_state()`, a
    tuple holding each layer's state (`None` for stateless layers).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> net = Sequential(Linear(4, 8, key=k1), ReLU(), Linear(8, 2, key=k2))
      >>> net(jnp.ones(4)).shape
      (2,)
    """

    layers: tuple[Any, ...]

    def __init__(self, *layers: Callable):
        """Create the container.

        Args:
          *layers: Equinox modules taking `(x, *, key=None)` (stateful ones
            `(x, state, *, key=None)`), e.g. tljax or Equinox layers, or plain functions of `x`
            (e.g. `jax.nn.relu`). A single list/tuple argument is also accepted.
        """
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        self.layers = tuple(layers)

    @property
    def is_stateful(self) -> bool:
        """Whether any layer carries state (then calls take and return `state`)."""
        return any(_stateful(layer) for layer in self.layers)

    def init_state(self) -> tuple[Any, ...]:
        """One entry per layer: the layer's `init_state()` or None."""
        return tuple(layer.init_state() if _stateful(layer) else None for layer in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    @named_scope("tljax.layers.Sequential")
    def __call__(
        self, x: Any, state: tuple[Any, ...] | None = None, *, key: jax.Array | None = None
    ) -> Any:
        """Run the layers.

        Args:
          x: input of the first layer.
          state: required iff the container is stateful: a tuple from `init_state()`.
          key: optional PRNG key, split over the layers.

        Returns:
          The last layer's output, or `(output, new_state)` when stateful.
        """
        keys = (
            [None] * len(self.layers)
            if key is None
            else list(jax.random.split(key, len(self.layers)))
        )
        if not self.is_stateful:
            if state is not None:
                raise ValueError(
                    "tljax.layers.Sequential: `state` was passed but no layer is stateful; call "
                    "it as seq(x)."
                )
            for layer, k in zip(self.layers, keys, strict=True):
                x = _call(layer, x, k)
            return x
        if state is None or len(state) != len(self.layers):
            raise ValueError(
                "tljax.layers.Sequential: this container holds stateful layers (e.g. BatchNorm); "
                "call it as `y, state = seq(x, state)` with `state = seq.init_state()`."
            )
        new_state = []
        for layer, k, s in zip(self.layers, keys, state, strict=True):
            if _stateful(layer):
                x, s = layer(x, s, key=k)
            else:
                x = _call(layer, x, k)
            new_state.append(s)
        return x, tuple(new_state)


class MLP(eqx.Module):
    """Multi-layer perceptron: Linear layers with an activation between them.

    `MLP(in, [h1, h2], out)` is `Linear(in, h1) → act → Linear(h1, h2) → act → Linear(h2, out)`
    (then `final_activation` if given). Works on `(*batch, in_features)`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> mlp = MLP(64, [32, 32], 10, key=jax.random.key(0))
      >>> mlp(jnp.ones((5, 64))).shape
      (5, 10)
    """

    layers: tuple[Linear, ...]
    activation: Callable
    final_activation: Callable | None

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        out_features: int,
        *,
        activation: Callable | None = None,
        final_activation: Callable | None = None,
        bias: bool = True,
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the network.

        Args:
          in_features: input size.
          hidden_features: sizes of the hidden layers (may be empty: one Linear).
          out_features: output size.
          activation: callable applied after every hidden layer (default `ReLU()`).
          final_activation: optional callable applied to the output.
          bias: whether the Linear layers have biases.
          dtype: parameter dtype (default float32).
          key: PRNG key for the initialisation.
        """
        sizes = [in_features, *hidden_features, out_features]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            Linear(a, b, bias, dtype=dtype, key=k)
            for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
        )
        self.activation = ReLU() if activation is None else activation
        self.final_activation = final_activation

    @named_scope("tljax.layers.MLP")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the network.

        Args:
          x: array of shape `(*batch, in_features)`.
          key: ignored.

        Returns:
          Array of shape `(*batch, out_features)`.
        """
        del key
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        x = self.layers[-1](x)
        if self.final_activation is not None:
            x = self.final_activation(x)
        return x
