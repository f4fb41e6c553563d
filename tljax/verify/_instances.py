"""Loading VNN-COMP instances (ONNX network + VNN-LIB property), sharing compiled code.

Every `load_onnx` call returns a new function object, and compiled bounds are cached per function
object. Networks of one architecture (all 45 ACAS Xu networks) trace to the same jaxpr with
their weights as inputs; `load_instance` keys a canonical function by that jaxpr (its text, its
closed-over constants and the weights' structure), so they all reuse one compilation.
"""

from __future__ import annotations

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from ..core import UnsupportedPrimitiveError, compat

_CANONICAL: dict[str, object] = {}


def _fingerprint(net, params, shape) -> str:
    closed = jax.make_jaxpr(lambda x, p: net(p, x))(
        jax.ShapeDtypeStruct(shape, jnp.float32), params
    )
    jaxpr, consts = compat.open_jaxpr(closed)
    h = hashlib.sha256()
    h.update(str(jaxpr).encode())
    for c in consts:
        a = np.asarray(c)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.tobytes())
    h.update(str(jax.tree_util.tree_structure(params)).encode())
    h.update(
        str(
            [(np.shape(v), str(np.asarray(v).dtype)) for v in jax.tree_util.tree_leaves(params)]
        ).encode()
    )
    return h.hexdigest()


def load_network(onnx_path):
    """`(fn, params, input_shape)` for an ONNX file: `fn(x, params)`, canonical per architecture.

    Raises:
      UnsupportedPrimitiveError: the model has several inputs or outputs (VNN-LIB numbers one).
      ParseError / UnsupportedPrimitiveError: from `tljax.io.load_onnx`.
    """
    from ..io import load_onnx

    net, params = load_onnx(onnx_path)
    if len(net.input_shapes) != 1 or len(net.output_names) != 1:
        raise UnsupportedPrimitiveError(
            f"{os.fspath(onnx_path)}: tljax.verify handles networks with one input and one output; "
            f"this one has inputs {list(net.input_names)} and outputs {list(net.output_names)}"
        )
    shape = tuple(1 if d is None else int(d) for d in net.input_shapes[0])
    key = _fingerprint(net, params, shape)
    fn = _CANONICAL.get(key)
    if fn is None:

        def fn(x, params, _net=net):
            return _net(params, x)

        fn.__name__ = net.__name__
        _CANONICAL[key] = fn
    return fn, params, shape


def load_instance(onnx_path, vnnlib_path, *, rounding: str = "outward"):
    """Reads a VNN-COMP instance for `tljax.verify`.

    Args:
      onnx_path: the network.
      vnnlib_path: the property (plain or gzip).
      rounding: how VNN-LIB numbers become float64 (`tljax.io.load_vnnlib`); "outward" (default)
        enlarges boxes and unsafe sets by at most one ulp where a number is not representable, so
        an unsat verdict also holds for the decimal numbers of the file.

    Returns:
      `(fn, prop, args, input_shape)`: call
      `tljax.verify(fn, prop, *args, input_shape=input_shape)`.

    Example:
      >>> fn, prop, args, shape = tljax.verify.load_instance(
      ...     "net.onnx", "prop.vnnlib")  # doctest: +SKIP
      >>> tljax.verify.verify(
      ...     fn, prop, *args, input_shape=shape, timeout=60).verdict  # doctest: +SKIP
    """
    from ..io import load_vnnlib

    fn, params, shape = load_network(onnx_path)
    out = jax.eval_shape(fn, jax.ShapeDtypeStruct(shape, jnp.float32), params)
    n_out = int(np.prod(out.shape, dtype=np.int64))
    prop = load_vnnlib(vnnlib_path, int(np.prod(shape, dtype=np.int64)), n_out, rounding=rounding)
    return fn, prop, (params,), shape
