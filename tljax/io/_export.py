"""Serialized StableHLO through `jax.export`: freeze a function to a file and call it back."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ..core import InputError, ParseError, ShapeMismatchError


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
    if not callable(fn):
        raise InputError(
            f"tljax.io.export: fn must be callable, got {type(fn).__name__}; call "
            "tljax.io.export(fn, *example_args, path=...)"
        )
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(
            f"tljax.io.export: the folder of path={path!r} does not exist; create {folder!r} "
            "first or choose another path"
        )
    try:
        hash(fn)
        target = fn
    except TypeError:
        # A module holding arrays (Equinox, a dataclass) is unhashable, which `jax.jit` needs of
        # its function: call it through a closure, so its arrays become constants of the program.
        def target(*args):
            return fn(*args)

        target.__name__ = target.__qualname__ = type(fn).__name__
    try:
        exported = jax.export.export(jax.jit(target), platforms=platforms)(*example_args)
    except TypeError as err:
        bad = [
            f"argument {k} ({type(a).__name__})"
            for k, a in enumerate(example_args)
            if not all(_is_array_like(v) for v in jax.tree_util.tree_leaves(a))
        ]
        if not bad:
            raise
        raise InputError(
            f"tljax.io.export: example {', '.join(bad)} holds non-array leaves; give arrays or "
            "jax.ShapeDtypeStruct (pytrees of them) fixing the exported signature, and close over "
            f"static configuration in fn ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err
    data = bytes(exported.serialize())
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)  # no half-written file if interrupted


def _is_array_like(v) -> bool:
    return isinstance(v, jax.Array | np.ndarray | np.generic | jax.ShapeDtypeStruct | float | int)


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
    if not os.path.isfile(path):
        raise InputError(
            f"tljax.io.load_exported: no such file {path!r} (working directory {os.getcwd()!r}); "
            "check the path, or write the file with tljax.io.export"
        )
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
        leaves = jax.tree_util.tree_leaves(args)
        got = [(tuple(np.shape(v)), getattr(v, "dtype", None)) for v in leaves]
        want = [(tuple(a.shape), np.dtype(a.dtype)) for a in exported.in_avals]
        same = len(got) == len(want) and all(
            gs == ws and (gd is None or jax.dtypes.canonicalize_dtype(gd) == wd)
            for (gs, gd), (ws, wd) in zip(got, want, strict=True)
        )
        if not same:

            def show(sig):
                return ", ".join(
                    f"{'python' if d is None else np.dtype(d).name}{list(s)}" for s, d in sig
                )

            raise ShapeMismatchError(
                f"{path}: the exported program takes ({show(want)}), got ({show(got)}); call it "
                "with arrays of the shapes and dtypes given to tljax.io.export"
            )
        return exported.call(*args)

    call.__name__ = call.__qualname__ = f"exported_{exported.fun_name}"
    call.__doc__ = f"Exported program from {path}: {exported.fun_name}{tuple(exported.in_avals)}."
    call.exported = exported
    return call
