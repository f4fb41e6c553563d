"""Convolutions and pooling in PyTorch's channels-first layout."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tljax.layers._misc import as_tuple, default_float, named_scope, uniform_init

_PAD_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_SPATIAL = {1: "H", 2: "HW", 3: "DHW"}


def _explicit_padding(
    padding: str | int | Sequence[int] | Sequence[tuple[int, int]],
    kernel_size: tuple[int, ...],
    dilation: tuple[int, ...],
    stride: tuple[int, ...],
    name: str,
) -> tuple[tuple[int, int], ...]:
    """PyTorch-style padding spec -> one (low, high) pair per spatial axis."""
    n = len(kernel_size)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * n
        if mode == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{name}: padding='same' needs stride 1 (as in PyTorch).")
            # Same split as PyTorch: the odd extra element goes to the high side.
            total = [d * (k - 1) for k, d in zip(kernel_size, dilation, strict=True)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ValueError(
            f"{name}: padding must be 'valid', 'same', an int or a tuple, got {padding!r}."
        )
    if isinstance(padding, int):
        return ((padding, padding),) * n
    padding = tuple(padding)
    if len(padding) != n:
        raise ValueError(f"{name}: padding {padding!r} needs {n} entries (one per spatial axis).")
    return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)


def _add_batch(x: jax.Array, n_spatial: int, name: str) -> tuple[jax.Array, bool]:
    if x.ndim == n_spatial + 1:
        return x[None], True
    if x.ndim == n_spatial + 2:
        return x, False
    axes = "C" + _SPATIAL[n_spatial]
    raise ValueError(
        f"{name}: expected an input of shape ({', '.join(axes)}) or (N, {', '.join(axes)}), got "
        f"shape {x.shape}."
    )


class _ConvNd(eqx.Module):
    weight: jax.Array
    bias: jax.Array | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: tuple[tuple[int, int], ...] = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)

    _n: int = eqx.field(static=True)  # number of spatial axes

    def _init(
        self,
        n: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: Any,
        dilation: int | Sequence[int],
        groups: int,
        bias: bool,
        padding_mode: str,
        dtype: Any,
        key: jax.Array,
    ) -> None:
        name = type(self).__name__
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"tljax.layers.{name}: in_channels={in_channels} and out_channels={out_channels} "
                f"must both be divisible by groups={groups}."
            )
        if padding_mode not in _PAD_MODES:
            raise ValueError(
                f"tljax.layers.{name}: padding_mode must be one of {sorted(_PAD_MODES)}, got "
                f"{padding_mode!r}."
            )
        self._n = n
        self.kernel_size = as_tuple(kernel_size, n, "kernel_size")
        self.stride = as_tuple(stride, n, "stride")
        self.dilation = as_tuple(dilation, n, "dilation")
        self.padding = _explicit_padding(
            padding, self.kernel_size, self.dilation, self.stride, f"tljax.layers.{name}"
        )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        dtype = default_float(dtype)
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        wkey, bkey = jax.random.split(key)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = uniform_init(wkey, shape, fan_in, dtype)
        self.bias = uniform_init(bkey, (out_channels,), fan_in, dtype) if bias else None

    def _conv(self, x: jax.Array) -> jax.Array:
        name = f"tljax.layers.{type(self).__name__}"
        x, unbatched = _add_batch(x, self._n, name)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name}: input has {x.shape[1]} channels (axis {0 if unbatched else 1}), the "
                "layer "
                f"expects in_channels={self.in_channels}."
            )
        padding = self.padding
        if self.padding_mode != "zeros":
            x = jnp.pad(x, ((0, 0), (0, 0), *padding), mode=_PAD_MODES[self.padding_mode])
            padding = ((0, 0),) * self._n
        spec = "NC" + _SPATIAL[self._n]
        y = lax.conv_general_dilated(
            x,
            self.weight,
            window_strides=self.stride,
            padding=padding,
            rhs_dilation=self.dilation,
            dimension_numbers=(spec, "OI" + _SPATIAL[self._n], spec),
            feature_group_count=self.groups,
        )
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * self._n)
        return y[0] if unbatched else y


class Conv1d(_ConvNd):
    """1-d convolution (cross-correlation), like `torch.nn.Conv1d`.

    Input is `(C, L)` for one example (Equinox's convention; batch with `jax.vmap`) or
    `(N, C, L)` (PyTorch's); the weight has layout `(out_channels, in_channels // groups, k)`.
    Traces to one `conv_general_dilated` (plus `pad` for non-zero padding modes).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> conv = Conv1d(2, 3, 3, padding=1, key=jax.random.key(0))
      >>> conv(jnp.ones((2, 10))).shape
      (3, 10)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] | Sequence[tuple[int, int]] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the layer (PyTorch's initialisation U(-1/√fan_in, 1/√fan_in)).

        Args:
          in_channels: input channels C.
          out_channels: output channels.
          kernel_size: window length.
          stride: step between windows.
          padding: `"valid"`, `"same"` (stride 1 only), an int, or a (low, high) pair.
          dilation: spacing between kernel taps.
          groups: number of channel groups (in and out channels must divide by it).
          bias: whether to add a learned per-channel bias.
          padding_mode: `"zeros"`, `"reflect"`, `"replicate"` or `"circular"`.
          dtype: parameter dtype (default float32).
          key: PRNG key for the initialisation.
        """
        self._init(
            1,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            dtype,
            key,
        )

    @named_scope("tljax.layers.Conv1d")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the convolution.

        Args:
          x: array of shape `(in_channels, L)` or `(N, in_channels, L)`.
          key: ignored.

        Returns:
          Array of shape `(out_channels, L_out)` or `(N, out_channels, L_out)`.
        """
        del key
        return self._conv(x)


class Conv2d(_ConvNd):
    """2-d convolution (cross-correlation), like `torch.nn.Conv2d`, channels first.

    Input is `(C, H, W)` for one example (Equinox's convention; batch with `jax.vmap`) or
    `(N, C, H, W)` (PyTorch's NCHW); the weight has layout `(out, in // groups, kh, kw)` (OIHW).
    Traces to one `conv_general_dilated` (plus `pad` for non-zero padding modes).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> conv = Conv2d(1, 4, 3, padding=1, key=jax.random.key(0))
      >>> conv(jnp.ones((1, 8, 8))).shape, conv(jnp.ones((5, 1, 8, 8))).shape
      ((4, 8, 8), (5, 4, 8, 8))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] | Sequence[tuple[int, int]] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = None,
        key: jax.Array,
    ):
        """Create the layer (PyTorch's initialisation U(-1/√fan_in, 1/√fan_in)).

        Args:
          in_channels: input channels C.
          out_channels: output channels.
          kernel_size: int or (kh, kw).
          stride: int or (sh, sw).
          padding: `"valid"`, `"same"` (stride 1 only), an int, a pair of ints, or a pair of
            (low, high) pairs.
          dilation: int or pair.
          groups: number of channel groups (in and out channels must divide by it).
          bias: whether to add a learned per-channel bias.
          padding_mode: `"zeros"`, `"reflect"`, `"replicate"` or `"circular"`.
          dtype: parameter dtype (default float32).
          key: PRNG key for the initialisation.
        """
        self._init(
            2,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            dtype,
            key,
        )

    @named_scope("tljax.layers.Conv2d")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Apply the convolution.

        Args:
          x: array of shape `(in_channels, H, W)` or `(N, in_channels, H, W)`.
          key: ignored.

        Returns:
          Array of shape `(out_channels, H_out, W_out)` or `(N, out_channels, H_out, W_out)`,
          with `H_out = (H + pad_low + pad_high - dilation * (kh - 1) - 1) // stride + 1`.
        """
        del key
        return self._conv(x)


class _PoolNd(eqx.Module):
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: tuple[tuple[int, int], ...] = eqx.field(static=True)
    _n: int = eqx.field(static=True)

    def _setup(self, n: int, kernel_size: Any, stride: Any, padding: Any) -> None:
        self._n = n
        self.kernel_size = as_tuple(kernel_size, n, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_tuple(stride, n, "stride")
        pads = as_tuple(padding, n, "padding") if not isinstance(padding, str) else None
        if pads is None or any(2 * p > k for p, k in zip(pads, self.kernel_size, strict=True)):
            raise ValueError(
                f"tljax.layers.{type(self).__name__}: padding must be ints at most half the kernel "
                f"size (as in PyTorch), got {padding!r} for kernel_size {self.kernel_size}."
            )
        self.padding = tuple((p, p) for p in pads)

    def _window(self, x: jax.Array) -> tuple[jax.Array, bool, tuple, tuple, tuple]:
        x, unbatched = _add_batch(x, self._n, f"tljax.layers.{type(self).__name__}")
        dims = (1, 1, *self.kernel_size)
        strides = (1, 1, *self.stride)
        pads = ((0, 0), (0, 0), *self.padding)
        return x, unbatched, dims, strides, pads


class MaxPool2d(_PoolNd):
    """2-d max pooling, like `torch.nn.MaxPool2d` (padding counts as -inf).

    Input `(C, H, W)` or `(N, C, H, W)`; traces to one `reduce_window_max`.

    Example:
      >>> import jax.numpy as jnp
      >>> MaxPool2d(2)(jnp.ones((3, 8, 8))).shape
      (3, 4, 4)
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
    ):
        """Create the layer.

        Args:
          kernel_size: int or (kh, kw).
          stride: int or pair; defaults to `kernel_size` (non-overlapping windows).
          padding: implicit -inf padding on each side, at most half the kernel size.
        """
        self._setup(2, kernel_size, stride, padding)

    @named_scope("tljax.layers.MaxPool2d")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Pool.

        Args:
          x: array of shape `(C, H, W)` or `(N, C, H, W)`.
          key: ignored.

        Returns:
          Array of shape `(C, H_out, W_out)` (or batched), with
          `H_out = (H + 2 * pad - kh) // stride + 1` (floor, PyTorch's `ceil_mode=False`).
        """
        del key
        x, unbatched, dims, strides, pads = self._window(x)
        # A concrete (numpy) init lets lax recognise the max monoid: primitive reduce_window_max,
        # which is differentiable, instead of a generic reduce_window.
        init = -np.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        y = lax.reduce_window(x, np.array(init, x.dtype), lax.max, dims, strides, pads)
        return y[0] if unbatched else y


class AvgPool2d(_PoolNd):
    """2-d average pooling, like `torch.nn.AvgPool2d`.

    Input `(C, H, W)` or `(N, C, H, W)`; traces to `reduce_window_sum` and a division. With
    `count_include_pad=True` (PyTorch's default) padded zeros count in the divisor; with
    `False` the divisor is the number of real elements in each window.

    Example:
      >>> import jax.numpy as jnp
      >>> AvgPool2d(2)(jnp.ones((3, 8, 8))).shape
      (3, 4, 4)
    """

    count_include_pad: bool = eqx.field(static=True)

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        count_include_pad: bool = True,
    ):
        """Create the layer.

        Args:
          kernel_size: int or (kh, kw).
          stride: int or pair; defaults to `kernel_size`.
          padding: zero padding on each side, at most half the kernel size.
          count_include_pad: whether padded zeros count in the average's divisor.
        """
        self._setup(2, kernel_size, stride, padding)
        self.count_include_pad = count_include_pad

    @named_scope("tljax.layers.AvgPool2d")
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Pool.

        Args:
          x: array of shape `(C, H, W)` or `(N, C, H, W)`.
          key: ignored.

        Returns:
          Array of shape `(C, H_out, W_out)` (or batched).
        """
        del key
        x, unbatched, dims, strides, pads = self._window(x)
        zero = np.array(0, x.dtype)
        total = lax.reduce_window(x, zero, lax.add, dims, strides, pads)
        if self.count_include_pad or all(p == (0, 0) for p in self.padding):
            y = total / jnp.array(math.prod(self.kernel_size), x.dtype)
        else:
            ones = jnp.ones((1, 1, *x.shape[2:]), x.dtype)
            count = lax.reduce_window(ones, zero, lax.add, dims, strides, pads)
            y = total / count
        return y[0] if unbatched else y
