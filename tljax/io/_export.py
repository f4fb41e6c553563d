"""Serialized StableHLO through `jax.export`: freeze a function to a file and call it back."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax

from ..core._errors import ParseError


def export(
    fn: Callable,
    *example_args: Any,
    path: str | os.PathLike,
    platforms: Sequence[str] | None = None,
) -> None:
    """Writes `fn`, specialised to the shapes and dtypes of `example_args`, as serialized StableHLO.

    The file holds `jax.export`'s serialization (StableHLO module plus calling convention), so
    `load_exported` (or `jax.export.deserialize`) gives back a callable that computes the same
    program, bit for bit on the same platform, without the Python source.

    Args:
        fn: a JAX-traceable function (pytrees of arrays in and out); it is wrapped in `jax.jit`.
        *example_args: arrays or `jax.ShapeDtypeStruct`s (pytrees allowed) fixing the signature.
        path: the output file (keyword-only, e.g. `model.stablehlo`).
        platforms: platforms to lower for (e.g. `("cpu", "cuda")`); default: the current backend.

    Examples:
        >>> tljax.io.export(fn, params, x, path="net.stablehlo")  # doctest: +SKIP
        >>> call = tljax.io.load_exported("net.stablehlo")  # doctest: +SKIP
        >>> y = call(params, x)  # doctest: +SKIP
    """
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(*example_args)
    data = bytes(exported.serialize())
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # no half-written file if interrupted


def load_exported(path: str | os.PathLike) -> Callable:
    """Reads a file written by `export` and returns a callable with the exported signature.

    Args:
        path: a file written by `tljax.io.export` (or `jax.export`'s `serialize()` bytes).

    Returns:
        `call(*args)`: runs the exported program; `args` must match the example arguments' pytree
        structure, shapes and dtypes. `call.exported` is the underlying `jax.export.Exported`.

    Raises:
        ParseError: the file is not a readable `jax.export` serialization (truncated, corrupt, or
            written by an incompatible JAX version).

    Examples:
        >>> call = tljax.io.load_exported("net.stablehlo")  # doctest: +SKIP
        >>> y = call(params, x)  # doctest: +SKIP
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as err:  # flatbuffer decoding raises struct.error, IndexError, ...
        raise ParseError(
            f"{path}: not a readable jax.export serialization ({type(err).__name__}: {err}); the "
            "file is truncated or corrupt, or was written by another tool. Re-create it with "
            "tljax.io.export."
        ) from err

    def call(*args):
        return exported.call(*args)

    call.__name__ = call.__qualname__ = f"exported_{exported.fun_name}"
    call.__doc__ = f"Exported program from {path}: {exported.fun_name}{tuple(exported.in_avals)}."
    call.exported = exported
    return call
