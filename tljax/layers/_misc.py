"""Small helpers shared by the layer modules (not public)."""

from __future__ import annotations

import functools as ft
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

_F = TypeVar("_F", bound=Callable[..., Any])


def named_scope(name: str) -> Callable[[_F], _F]:
    """Run the decorated `__call__` under `jax.named_scope(name)`.

    Every equation the layer emits then carries `name` in `eqn.source_info.name_stack`, which
    the interpreters use to say which layer a node belongs to.
    """

    def decorate(fn: _F) -> _F:
        @ft.wraps(fn)
        def wrapper(*args, **kwargs):
            with jax.named_scope(name):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def default_float(dtype: Any = None) -> Any:
    """`dtype`, or JAX's default floating dtype (float32 unless x64 is enabled)."""
    if dtype is not None:
        return dtype
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def uniform_init(key: jax.Array, shape: Sequence[int], fan_in: int, dtype: Any) -> jax.Array:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear/Conv weights and biases."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return jax.random.uniform(key, tuple(shape), dtype, minval=-bound, maxval=bound)


def as_tuple(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    """Expand an int to an n-tuple, or check a sequence has length n."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(
            f"tljax.layers: {what} must be an int or a sequence of {n} ints, got {value!r}."
        )
    return value
