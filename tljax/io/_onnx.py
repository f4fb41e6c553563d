"""ONNX import: an ONNX graph becomes a pure JAX function `fn(params, *xs)`.

Each ONNX node is translated into plain `lax`/`jnp` ops inside
`jax.named_scope(f"onnx.{op_type}.{node_name}")`, so the traced jaxpr holds ordinary primitives
(`dot_general`, `add`, `max`, `logistic`, `conv_general_dilated`, `reduce_window_max`, ...) and
every equation remembers the node it came from. The ONNX layout is kept exactly (NCHW stays NCHW).

Values are either *static* (numpy arrays known without the network input: integer initializers,
`Constant` nodes, `Shape` of a tensor and everything computed from those alone) or *traced* (JAX
arrays that depend on the input or on the float parameters). Nodes whose inputs are all static are
evaluated with numpy, so shape-computing subgraphs (`Shape -> Gather -> Concat -> Reshape`) leave
no trace in the jaxpr and every shape is static. `load_onnx` runs the whole graph once under
`jax.eval_shape` with the declared input shapes, so unsupported ops, malformed graphs and shape
errors are reported at load time, not at the first call.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import (
    InputError,
    ParseError,
    ShapeMismatchError,
    TljaxError,
    UnsupportedPrimitiveError,
)

_HIGHEST = lax.Precision.HIGHEST  # ONNX float32 semantics; no TF32 shortcuts on GPUs

_UNSUPPORTED_FIX = (
    "Re-export the model without this op (e.g. replace the layer, or export with "
    "torch.onnx.export(..., opset_version=13) so that it lowers to supported ops), or add a "
    "translation to `tljax.io._onnx._OPS`."
)


class _NodeProblem(Exception):
    """Raised inside a translation; the runner adds file and node and re-raises a tljax error."""

    def __init__(self, message: str, *, unsupported: bool = False):
        super().__init__(message)
        self.unsupported = unsupported


@dataclasses.dataclass(frozen=True)
class _Node:
    index: int
    name: str
    op_type: str
    domain: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict

    @property
    def label(self) -> str:
        return self.name or f"node_{self.index}"

    def describe(self, path: str, opset: int) -> str:
        return (
            f"ONNX node '{self.label}' (op {self.op_type}, opset {opset}, #{self.index} in "
            f"the graph, outputs {list(self.outputs)}) of {path}"
        )


@dataclasses.dataclass(frozen=True)
class _InputSpec:
    name: str
    shape: tuple  # ints, None for a symbolic / unknown dim
    dtype: Any  # numpy dtype or None when the file does not say

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"({dims}{',' if len(self.shape) == 1 else ''}) {self.dtype}"


@dataclasses.dataclass(frozen=True)
class _Graph:
    path: str
    opset: int
    nodes: tuple[_Node, ...]
    inputs: tuple[_InputSpec, ...]
    outputs: tuple[str, ...]
    constants: dict  # name -> static numpy array (non-float initializers)
    param_shapes: dict  # name -> shape of each float initializer


class _Ctx:
    """What a translation may know: the node, the opset, and helpers that fail with context."""

    def __init__(self, node: _Node, opset: int):
        self.node = node
        self.opset = opset

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def static(self, value: Any, what: str) -> np.ndarray:
        if value is None:
            raise _NodeProblem(f"{what} is missing")
        if not _is_static(value):
            raise _NodeProblem(
                f"{what} must be known at load time (a constant, an integer initializer or a "
                "value computed from shapes), but it depends on the network input or on float "
                "parameters",
                unsupported=True,
            )
        return value

    def unsupported(self, what: str) -> _NodeProblem:
        return _NodeProblem(what, unsupported=True)


_Translation = Callable[[_Ctx, list], Any]
_OPS: dict[str, _Translation] = {}


def _op(*op_types: str):
    def register(fn: _Translation) -> _Translation:
        for op_type in op_types:
            _OPS[op_type] = fn
        return fn

    return register


def _is_static(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def _jax_dtype(dtype) -> np.dtype:
    """The dtype a traced copy of a numpy value gets (64-bit types shrink unless x64 is on)."""
    dtype = np.dtype(dtype)
    if dtype.itemsize < 8 or jax.dtypes.canonicalize_dtype(dtype) == dtype:  # x64 on: kept
        return dtype
    return {"f": np.dtype(np.float32), "i": np.dtype(np.int32), "u": np.dtype(np.uint32)}.get(
        dtype.kind, dtype
    )


def _traced(value: Any, dtype=None):
    """A JAX array for `value`; static values become constants of the matching 32-bit dtype."""
    if _is_static(value):
        value = np.asarray(value, dtype=_jax_dtype(dtype if dtype is not None else value.dtype))
        return jnp.asarray(value)
    if dtype is not None and value.dtype != dtype:
        return lax.convert_element_type(value, dtype)
    return value


def _same_dtype(values: list) -> list:
    """Static operands mixed with traced ones take the traced operand's dtype (ONNX: same T)."""
    traced = [v for v in values if not _is_static(v)]
    if not traced:
        return values
    dtype = traced[0].dtype
    return [np.asarray(v, dtype=dtype) if _is_static(v) else v for v in values]


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise _NodeProblem(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _ints(value) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _axes(ctx: _Ctx, ins: list, index: int, attr_until: int) -> list[int] | None:
    """Axes from the attribute (opset < attr_until) or from input `index` (later opsets)."""
    if ctx.opset < attr_until:
        axes = ctx.attr("axes")
        return None if axes is None else list(axes)
    if len(ins) > index and ins[index] is not None:
        return _ints(ctx.static(ins[index], "the 'axes' input"))
    return None


# ---------------------------------------------------------------------------------------------
# Elementwise ops


def _binary(np_fn, jnp_fn):
    def translate(ctx: _Ctx, ins: list):
        a, b = _same_dtype(ins[:2])
        if _is_static(a) and _is_static(b):
            return np.asarray(np_fn(a, b))
        return jnp_fn(_traced(a), _traced(b))

    return translate


def _np_div(a, b):
    if a.dtype.kind in "iu":  # ONNX integer Div truncates toward zero (C semantics)
        q = np.abs(a) // np.abs(b)
        return (q * np.sign(a) * np.sign(b)).astype(np.result_type(a, b))
    return a / b


def _jnp_div(a, b):
    if jnp.issubdtype(a.dtype, jnp.integer):
        a, b = jnp.broadcast_arrays(a, b)
        return lax.div(a, b)
    return jnp.divide(a, b)


def _pow(ctx: _Ctx, ins: list):
    x, y = ins[0], ins[1]
    if _is_static(x) and _is_static(y):
        return np.asarray(np.power(x, y.astype(x.dtype) if x.dtype.kind == "f" else y))
    if _is_static(y) and y.size == 1 and float(y.reshape(-1)[0]).is_integer() and y.ndim <= x.ndim:
        # integer exponent: `integer_pow`, which bounds semantics handle well
        return lax.integer_pow(_traced(x), int(y.reshape(-1)[0]))
    x, y = _same_dtype([x, y])
    return jnp.power(_traced(x), _traced(y))


_op("Add")(_binary(np.add, jnp.add))
_op("Sub")(_binary(np.subtract, jnp.subtract))
_op("Mul")(_binary(np.multiply, jnp.multiply))
_op("Div")(_binary(_np_div, _jnp_div))
_op("Pow")(_pow)
_op("Equal")(_binary(np.equal, jnp.equal))
_op("Less")(_binary(np.less, jnp.less))
_op("LessOrEqual")(_binary(np.less_equal, jnp.less_equal))
_op("Greater")(_binary(np.greater, jnp.greater))
_op("GreaterOrEqual")(_binary(np.greater_equal, jnp.greater_equal))
_op("And")(_binary(np.logical_and, jnp.logical_and))
_op("Or")(_binary(np.logical_or, jnp.logical_or))


def _variadic(np_fn, jnp_fn, *, mean: bool = False):
    def translate(ctx: _Ctx, ins: list):
        values = _same_dtype([v for v in ins if v is not None])
        if not values:
            raise _NodeProblem("needs at least one input")
        static = all(_is_static(v) for v in values)
        out = values[0] if static else _traced(values[0])
        for v in values[1:]:
            out = np_fn(out, v) if static else jnp_fn(out, _traced(v))
        if mean and len(values) > 1:
            out = out / np.asarray(len(values), out.dtype) if static else out / len(values)
        return np.asarray(out) if static else out

    return translate


_op("Sum")(_variadic(np.add, jnp.add))
_op("Mean")(_variadic(np.add, jnp.add, mean=True))
_op("Max")(_variadic(np.maximum, jnp.maximum))
_op("Min")(_variadic(np.minimum, jnp.minimum))


def _unary(np_fn, jnp_fn):
    def translate(ctx: _Ctx, ins: list):
        x = ins[0]
        if _is_static(x):
            return np.asarray(np_fn(x)).astype(x.dtype, copy=False)
        return jnp_fn(x)

    return translate


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


_op("Relu")(_unary(lambda x: np.maximum(x, 0), lambda x: jnp.maximum(x, 0)))
_op("Sigmoid")(_unary(_np_sigmoid, jax.nn.sigmoid))
_op("Tanh")(_unary(np.tanh, jnp.tanh))
_op("Exp")(_unary(np.exp, jnp.exp))
_op("Log")(_unary(np.log, jnp.log))
_op("Sqrt")(_unary(np.sqrt, jnp.sqrt))
_op("Abs")(_unary(np.abs, jnp.abs))
_op("Neg")(_unary(np.negative, jnp.negative))
_op("Sign")(_unary(np.sign, jnp.sign))
_op("Floor")(_unary(np.floor, jnp.floor))
_op("Ceil")(_unary(np.ceil, jnp.ceil))
_op("Reciprocal")(_unary(lambda x: 1 / x, lambda x: 1 / x))
_op("Not")(_unary(np.logical_not, jnp.logical_not))
_op("Erf")(_unary(np.vectorize(math.erf, otypes=[np.float64]), jax.scipy.special.erf))
_op("Softplus")(_unary(lambda x: np.logaddexp(x, 0), lambda x: jnp.logaddexp(x, 0.0)))


@_op("LeakyRelu")
def _leaky_relu(ctx: _Ctx, ins: list):
    x, alpha = ins[0], float(ctx.attr("alpha", 0.01))
    if 0 <= alpha <= 1:  # max(x, alpha x) equals the select for these slopes: one `max` primitive
        if _is_static(x):
            return np.maximum(x, x * np.asarray(alpha, x.dtype))
        return jnp.maximum(x, alpha * x)
    if _is_static(x):
        return np.where(x >= 0, x, x * np.asarray(alpha, x.dtype))
    return jnp.where(x >= 0, x, alpha * x)


@_op("Clip")
def _clip(ctx: _Ctx, ins: list):
    x = ins[0]
    if ctx.opset < 11:
        lower, upper = ctx.attr("min"), ctx.attr("max")
    else:
        lower = ins[1] if len(ins) > 1 else None
        upper = ins[2] if len(ins) > 2 else None
    # max then min (two primitives), not jnp.clip (a `jit` around them)
    for bound, np_fn, jnp_fn in (
        (lower, np.maximum, jnp.maximum),
        (upper, np.minimum, jnp.minimum),
    ):
        if bound is None:
            continue
        if _is_static(bound) or isinstance(bound, float):
            bound = np.asarray(bound, x.dtype).reshape(())
            x = np_fn(x, bound) if _is_static(x) else jnp_fn(x, bound.item())  # item: a literal
        else:
            x = jnp_fn(_traced(x), bound if bound.ndim == 0 else jnp.reshape(bound, ()))
    return x


@_op("Where")
def _where(ctx: _Ctx, ins: list):
    cond = ins[0]
    x, y = _same_dtype(ins[1:3])
    if _is_static(cond) and _is_static(x) and _is_static(y):
        return np.where(cond, x, y)
    return jnp.where(_traced(cond), _traced(x), _traced(y))


# ---------------------------------------------------------------------------------------------
# Linear algebra


@_op("MatMul")
def _matmul(ctx: _Ctx, ins: list):
    a, b = _same_dtype(ins[:2])
    if _is_static(a) and _is_static(b):
        return np.matmul(a, b)
    return jnp.matmul(_traced(a), _traced(b), precision=_HIGHEST)


@_op("Gemm")
def _gemm(ctx: _Ctx, ins: list):
    a, b = _same_dtype(ins[:2])
    c = ins[2] if len(ins) > 2 else None
    if a.ndim != 2 or b.ndim != 2:
        raise _NodeProblem(f"Gemm needs 2-D A and B, got shapes {a.shape} and {b.shape}")
    trans_a, trans_b = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    # contract the right dims directly: no transpose primitive in the jaxpr
    dims = (([0 if trans_a else 1], [1 if trans_b else 0]), ([], []))
    y = lax.dot_general(_traced(a), _traced(b), dims, precision=_HIGHEST)
    if alpha != 1.0:
        y = alpha * y
    if c is not None:
        c = _traced(c, y.dtype)
        if beta != 1.0:
            c = beta * c
        y = y + c
    return y


# ---------------------------------------------------------------------------------------------
# Shape manipulation (numpy when static, jnp when traced)


def _xp(*values):
    return np if all(_is_static(v) for v in values if v is not None) else jnp


def _reshape(x, shape):
    shape = tuple(int(d) for d in shape)
    if _is_static(x):
        return x.reshape(shape)
    return x if x.shape == shape else jnp.reshape(x, shape)


@_op("Identity")
def _identity(ctx: _Ctx, ins: list):
    return ins[0]


@_op("Dropout")
def _dropout(ctx: _Ctx, ins: list):
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        raise ctx.unsupported(
            "the optional 'mask' output of Dropout is not supported (inference only)"
        )
    if (
        len(ins) > 2
        and ins[2] is not None
        and bool(ctx.static(ins[2], "training_mode").reshape(-1)[0])
    ):
        raise ctx.unsupported("Dropout in training mode is not supported (inference only)")
    return ins[0]


@_op("Flatten")
def _flatten(ctx: _Ctx, ins: list):
    x = ins[0]
    axis = int(ctx.attr("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise _NodeProblem(f"axis {ctx.attr('axis', 1)} is out of range for rank {x.ndim}")
    return _reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


@_op("Reshape")
def _reshape_op(ctx: _Ctx, ins: list):
    x = ins[0]
    if ctx.opset < 5:
        target = list(ctx.attr("shape", []))
    else:
        target = _ints(ctx.static(ins[1] if len(ins) > 1 else None, "the 'shape' input"))
    allowzero = int(ctx.attr("allowzero", 0))
    shape = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= x.ndim:
                raise _NodeProblem(
                    f"shape {target} copies dim {i} (0) but the input has rank {x.ndim}"
                )
            d = x.shape[i]
        shape.append(d)
    if shape.count(-1) > 1 or any(d < -1 for d in shape):
        raise _NodeProblem(f"invalid target shape {target}")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or x.size % known:
            raise _NodeProblem(f"cannot reshape {x.shape} into {target}")
        shape[shape.index(-1)] = x.size // known
    if math.prod(shape) != x.size:
        raise _NodeProblem(f"cannot reshape {x.shape} ({x.size} elements) into {target}")
    return _reshape(x, shape)


@_op("Transpose")
def _transpose(ctx: _Ctx, ins: list):
    x = ins[0]
    perm = ctx.attr("perm")
    perm = tuple(reversed(range(x.ndim))) if perm is None else tuple(int(p) for p in perm)
    if sorted(perm) != list(range(x.ndim)):
        raise _NodeProblem(f"perm {list(perm)} is not a permutation of the {x.ndim} axes")
    if perm == tuple(range(x.ndim)):
        return x
    return _xp(x).transpose(x, perm)


@_op("Squeeze")
def _squeeze(ctx: _Ctx, ins: list):
    x = ins[0]
    axes = _axes(ctx, ins, 1, 13)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = {_norm_axis(a, x.ndim) for a in axes}
    bad = [a for a in sorted(axes) if x.shape[a] != 1]
    if bad:
        raise _NodeProblem(f"cannot squeeze axes {bad} of shape {x.shape}: their size is not 1")
    return _reshape(x, [d for i, d in enumerate(x.shape) if i not in axes])


@_op("Unsqueeze")
def _unsqueeze(ctx: _Ctx, ins: list):
    x = ins[0]
    axes = _axes(ctx, ins, 1, 13)
    if axes is None:
        raise _NodeProblem("Unsqueeze needs axes")
    rank = x.ndim + len(axes)
    axes = sorted(_norm_axis(a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise _NodeProblem(f"repeated axes {axes}")
    dims = iter(x.shape)
    return _reshape(x, [1 if i in axes else next(dims) for i in range(rank)])


@_op("Concat")
def _concat(ctx: _Ctx, ins: list):
    values = _same_dtype([v for v in ins if v is not None])
    rank = values[0].ndim
    axis = _norm_axis(int(ctx.attr("axis")), rank)
    if all(_is_static(v) for v in values):
        return np.concatenate(values, axis=axis)
    values = [_traced(v) for v in values if v.shape[axis] or len(values) == 1]
    return values[0] if len(values) == 1 else jnp.concatenate(values, axis=axis)


@_op("Split")
def _split(ctx: _Ctx, ins: list):
    x = ins[0]
    axis = _norm_axis(int(ctx.attr("axis", 0)), x.ndim)
    if ctx.opset < 13:
        sizes = ctx.attr("split")
    else:
        sizes = (
            _ints(ctx.static(ins[1], "the 'split' input"))
            if len(ins) > 1 and ins[1] is not None
            else None
        )
    n_out = len(ctx.node.outputs)
    if sizes is None:
        n = int(ctx.attr("num_outputs", n_out))
        step = -(-x.shape[axis] // n)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(n)]
    if sum(sizes) != x.shape[axis]:
        raise _NodeProblem(f"split sizes {list(sizes)} do not add up to dim {axis} of {x.shape}")
    outs, start = [], 0
    for size in sizes:
        if _is_static(x):
            outs.append(np.take(x, np.arange(start, start + size), axis=axis))
        else:
            outs.append(lax.slice_in_dim(x, start, start + size, axis=axis))
        start += size
    return outs


@_op("Slice")
def _slice(ctx: _Ctx, ins: list):
    x = ins[0]
    if ctx.opset < 10:
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
        axes, steps = ctx.attr("axes"), None
    else:
        starts = _ints(ctx.static(ins[1], "the 'starts' input"))
        ends = _ints(ctx.static(ins[2], "the 'ends' input"))
        axes = (
            _ints(ctx.static(ins[3], "the 'axes' input"))
            if len(ins) > 3 and ins[3] is not None
            else None
        )
        steps = (
            _ints(ctx.static(ins[4], "the 'steps' input"))
            if len(ins) > 4 and ins[4] is not None
            else None
        )
    axes = list(range(len(starts))) if axes is None else [_norm_axis(int(a), x.ndim) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise _NodeProblem("starts, ends, axes and steps must have the same length")
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step == 0:
            raise _NodeProblem("a step of 0 is invalid")
        # ONNX clamps like Python slicing; huge sentinels (INT64_MAX) clamp the same way
        start, end, step = slice(int(start), int(end), int(step)).indices(x.shape[axis])
        index[axis] = slice(start, end if end >= 0 else None, step)  # -1 here means "before 0"
    if _is_static(x):
        return np.asarray(x[tuple(index)])
    if all(s.step > 0 for s in index if s != slice(None)):
        bounds = [s.indices(d) for s, d in zip(index, x.shape, strict=True)]
        start = [b[0] for b in bounds]
        limit = [max(b[1], b[0]) for b in bounds]
        stride = [b[2] for b in bounds]
        if start == [0] * x.ndim and limit == list(x.shape):
            return x
        return lax.slice(x, start, limit, stride if any(s != 1 for s in stride) else None)
    return x[tuple(index)]


@_op("Gather")
def _gather(ctx: _Ctx, ins: list):
    data, indices = ins[0], ins[1]
    axis = _norm_axis(int(ctx.attr("axis", 0)), data.ndim)
    if not _is_static(indices):
        return jnp.take(_traced(data), indices, axis=axis, mode="clip")
    size = data.shape[axis]
    if ((indices < -size) | (indices >= size)).any():
        raise _NodeProblem(f"indices {indices.tolist()} out of range for dim {axis} of size {size}")
    indices = np.where(indices < 0, indices + size, indices)
    if _is_static(data):
        return np.take(data, indices, axis=axis)
    if (
        indices.ndim == 0
    ):  # one slice: `slice` + `reshape`, simpler than `gather` for every semantics
        i = int(indices)
        piece = lax.slice_in_dim(data, i, i + 1, axis=axis)
        return _reshape(piece, data.shape[:axis] + data.shape[axis + 1 :])
    return jnp.take(data, indices, axis=axis, mode="clip")


@_op("Shape")
def _shape(ctx: _Ctx, ins: list):
    shape = np.asarray(ins[0].shape, dtype=np.int64)
    start, end = ctx.attr("start", 0), ctx.attr("end")
    return shape[slice(start, end)]


@_op("Size")
def _size(ctx: _Ctx, ins: list):
    return np.asarray(math.prod(ins[0].shape), dtype=np.int64)


@_op("ConstantOfShape")
def _constant_of_shape(ctx: _Ctx, ins: list):
    shape = _ints(ctx.static(ins[0], "the 'input' (shape)"))
    value = ctx.attr("value")
    value = np.zeros(1, np.float32) if value is None else value
    return np.full(shape, value.reshape(-1)[0], dtype=value.dtype)


@_op("Range")
def _range(ctx: _Ctx, ins: list):
    start, limit, delta = (
        ctx.static(v, f"input '{n}'") for v, n in zip(ins, ("start", "limit", "delta"), strict=True)
    )
    return np.arange(start, limit, delta).astype(start.dtype)


@_op("Expand")
def _expand(ctx: _Ctx, ins: list):
    x = ins[0]
    shape = _ints(ctx.static(ins[1], "the 'shape' input"))
    out = np.broadcast_shapes(x.shape, tuple(shape))
    if out == x.shape:
        return x
    return _xp(x).broadcast_to(x, out)


@_op("Tile")
def _tile(ctx: _Ctx, ins: list):
    x = ins[0]
    reps = _ints(ctx.static(ins[1], "the 'repeats' input"))
    return _xp(x).tile(x, reps)


@_op("Cast")
def _cast(ctx: _Ctx, ins: list):
    import onnx

    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(ctx.attr("to"))))
    return _astype(ins[0], dtype)


@_op("CastLike")
def _cast_like(ctx: _Ctx, ins: list):
    return _astype(ins[0], np.dtype(ins[1].dtype))


def _astype(x, dtype):
    if _is_static(x):
        return x.astype(dtype)
    dtype = _jax_dtype(dtype)
    return x if x.dtype == dtype else lax.convert_element_type(x, dtype)


@_op("Constant")
def _constant(ctx: _Ctx, ins: list):
    attrs = ctx.node.attrs
    if "value" in attrs:
        return attrs["value"]
    if "value_float" in attrs:
        return np.asarray(attrs["value_float"], np.float32)
    if "value_floats" in attrs:
        return np.asarray(attrs["value_floats"], np.float32)
    if "value_int" in attrs:
        return np.asarray(attrs["value_int"], np.int64)
    if "value_ints" in attrs:
        return np.asarray(attrs["value_ints"], np.int64)
    raise ctx.unsupported(f"Constant with attributes {sorted(attrs)} (only numeric values)")


# ---------------------------------------------------------------------------------------------
# Convolution, normalisation, pooling


def _window_pads(ctx: _Ctx, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    n = len(in_sizes)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = list(ctx.attr("pads", [0] * 2 * n))
        if len(pads) != 2 * n:
            raise _NodeProblem(f"pads {pads} should have {2 * n} entries")
        return list(zip(pads[:n], pads[n:], strict=True))
    if auto_pad == "VALID":
        return [(0, 0)] * n
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        return pads
    raise _NodeProblem(f"unknown auto_pad '{auto_pad}'")


def _spatial_layout(ctx: _Ctx, x) -> str:
    n = x.ndim - 2
    if n not in (1, 2, 3):
        raise ctx.unsupported(
            f"{n} spatial dims (input shape {x.shape}); only 1, 2 or 3 are supported"
        )
    return "DHW"[3 - n :]


@_op("Conv")
def _conv(ctx: _Ctx, ins: list):
    x, w = _traced(ins[0]), _traced(ins[1])
    sp = _spatial_layout(ctx, x)
    n = len(sp)
    kernel = tuple(w.shape[2:])
    if ctx.attr("kernel_shape") is not None and tuple(ctx.attr("kernel_shape")) != kernel:
        raise _NodeProblem(
            f"kernel_shape {ctx.attr('kernel_shape')} does not match weights {w.shape}"
        )
    strides = tuple(ctx.attr("strides", (1,) * n))
    dilations = tuple(ctx.attr("dilations", (1,) * n))
    pads = _window_pads(ctx, x.shape[2:], kernel, strides, dilations)
    y = lax.conv_general_dilated(
        x,
        w,
        window_strides=strides,
        padding=pads,
        rhs_dilation=dilations,
        dimension_numbers=("NC" + sp, "OI" + sp, "NC" + sp),
        feature_group_count=int(ctx.attr("group", 1)),
        precision=_HIGHEST,
    )
    if len(ins) > 2 and ins[2] is not None:
        y = y + _reshape(_traced(ins[2], y.dtype), (1, -1) + (1,) * n)
    return y


@_op("BatchNormalization")
def _batch_norm(ctx: _Ctx, ins: list):
    if any(ctx.node.outputs[1:]) or int(ctx.attr("training_mode", 0)):
        raise ctx.unsupported(
            "BatchNormalization in training mode (extra outputs); export in eval mode"
        )
    x = ins[0]
    scale, bias, mean, var = (_traced(v) for v in _same_dtype(ins[1:5]))
    eps = float(ctx.attr("epsilon", 1e-5))
    a = scale / jnp.sqrt(var + eps)  # y = x a + (B - mean a): affine in x, two primitives on x
    b = bias - mean * a
    shape = (1, -1) + (1,) * (x.ndim - 2) if a.ndim == 1 else (1,) + a.shape
    return x * jnp.reshape(a, shape) + jnp.reshape(b, shape)


def _pool_geometry(ctx: _Ctx, x, *, has_dilations: bool):
    n = x.ndim - 2
    kernel = tuple(int(k) for k in ctx.attr("kernel_shape"))
    strides = tuple(ctx.attr("strides", (1,) * n))
    dilations = tuple(ctx.attr("dilations", (1,) * n)) if has_dilations else (1,) * n
    pads = _window_pads(ctx, x.shape[2:], kernel, strides, dilations)
    ceil_extra = [0] * n
    if int(ctx.attr("ceil_mode", 0)):
        for i, (size, k, s, d, (lo, hi)) in enumerate(
            zip(x.shape[2:], kernel, strides, dilations, pads, strict=True)
        ):
            span = (k - 1) * d + 1
            out = -(-(size + lo + hi - span) // s) + 1
            if (out - 1) * s >= size + lo:  # the last window must start inside input or left pad
                out -= 1
            ceil_extra[i] = max(0, (out - 1) * s + span - (size + lo + hi))
    return kernel, strides, dilations, pads, ceil_extra


@_op("MaxPool")
def _max_pool(ctx: _Ctx, ins: list):
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1]:
        raise ctx.unsupported("the 'Indices' output of MaxPool is not supported")
    x = _traced(ins[0])
    _spatial_layout(ctx, x)
    kernel, strides, dilations, pads, extra = _pool_geometry(ctx, x, has_dilations=True)
    return lax.reduce_window(
        x,
        np.asarray(-np.inf, x.dtype),
        lax.max,
        window_dimensions=(1, 1) + kernel,
        window_strides=(1, 1) + strides,
        padding=((0, 0), (0, 0))
        + tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra, strict=True)),
        window_dilation=(1, 1) + dilations,
    )


def _window_counts(size, k, s, d, lo, hi, extra, include_pad) -> np.ndarray:
    """Per output position along one dim: how many window taps hit the input (or the pads)."""
    n_out = (size + lo + hi + extra - ((k - 1) * d + 1)) // s + 1
    taps = np.arange(n_out)[:, None] * s - lo + np.arange(k)[None, :] * d
    first, stop = (-lo, size + hi) if include_pad else (0, size)
    return ((taps >= first) & (taps < stop)).sum(axis=1)


@_op("AveragePool")
def _average_pool(ctx: _Ctx, ins: list):
    x = _traced(ins[0])
    _spatial_layout(ctx, x)
    kernel, strides, dilations, pads, extra = _pool_geometry(ctx, x, has_dilations=ctx.opset >= 19)
    total = lax.reduce_window(
        x,
        np.asarray(0, x.dtype),
        lax.add,
        window_dimensions=(1, 1) + kernel,
        window_strides=(1, 1) + strides,
        padding=((0, 0), (0, 0))
        + tuple((lo, hi + e) for (lo, hi), e in zip(pads, extra, strict=True)),
        window_dilation=(1, 1) + dilations,
    )
    include_pad = bool(int(ctx.attr("count_include_pad", 0)))
    counts = np.ones((), np.int64)
    for size, k, s, d, (lo, hi), e in zip(
        x.shape[2:], kernel, strides, dilations, pads, extra, strict=True
    ):
        counts = np.multiply.outer(counts, _window_counts(size, k, s, d, lo, hi, e, include_pad))
    if (counts == counts.flat[0]).all():
        return total / np.asarray(counts.flat[0], x.dtype)
    return total / counts.astype(x.dtype)[None, None]


@_op("GlobalAveragePool")
def _global_average_pool(ctx: _Ctx, ins: list):
    x = _traced(ins[0])
    return jnp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@_op("GlobalMaxPool")
def _global_max_pool(ctx: _Ctx, ins: list):
    x = _traced(ins[0])
    return jnp.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


def _np_pad_constant(x, widths, value):
    y = np.pad(x, [(max(lo, 0), max(hi, 0)) for lo, hi in widths], constant_values=value)
    # negative pads crop (ONNX allows them)
    return y[
        tuple(
            slice(-min(lo, 0), n + min(hi, 0)) for (lo, hi), n in zip(widths, y.shape, strict=True)
        )
    ]


@_op("Pad")
def _pad(ctx: _Ctx, ins: list):
    x = ins[0]
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads = list(ctx.attr("pads", ctx.attr("paddings", [])))
        value = np.asarray(ctx.attr("value", 0.0), dtype=x.dtype)
        axes = None
    else:
        pads = _ints(ctx.static(ins[1], "the 'pads' input"))
        value = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), x.dtype)
        axes = (
            _ints(ctx.static(ins[3], "the 'axes' input"))
            if len(ins) > 3 and ins[3] is not None
            else None
        )
    axes = list(range(x.ndim)) if axes is None else [_norm_axis(a, x.ndim) for a in axes]
    if len(pads) != 2 * len(axes):
        raise _NodeProblem(f"pads {pads} should have {2 * len(axes)} entries")
    widths = [(0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    if mode == "constant":
        if _is_static(x) and _is_static(value):
            return _np_pad_constant(x, widths, value.reshape(-1)[0])
        value = _traced(value, x.dtype)
        if value.ndim:
            value = jnp.reshape(value, ())
        return lax.pad(_traced(x), value, [(lo, hi, 0) for lo, hi in widths])
    if mode in ("reflect", "edge", "wrap"):
        if any(lo < 0 or hi < 0 for lo, hi in widths):
            raise ctx.unsupported(f"negative pads in mode '{mode}'")
        return _xp(x).pad(x, widths, mode=mode)
    raise ctx.unsupported(f"Pad mode '{mode}'")


# ---------------------------------------------------------------------------------------------
# Softmax and reductions


def _softmax_2d_or_axis(ctx: _Ctx, x, fn):
    if ctx.opset < 13:  # old opsets: coerce to 2-D at `axis` and normalise each row
        axis = _norm_axis(int(ctx.attr("axis", 1)), x.ndim)
        flat = _reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))
        return _reshape(fn(flat, 1), x.shape)
    return fn(x, _norm_axis(int(ctx.attr("axis", -1)), x.ndim))


def _softmax_fn(x, axis):
    # max-shift without stop_gradient: one primitive fewer, same values (softmax is shift-invariant)
    e = jnp.exp(x - jnp.max(x, axis=axis, keepdims=True))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def _log_softmax_fn(x, axis):
    shifted = x - jnp.max(x, axis=axis, keepdims=True)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


@_op("Softmax")
def _softmax(ctx: _Ctx, ins: list):
    return _softmax_2d_or_axis(ctx, _traced(ins[0]), _softmax_fn)


@_op("LogSoftmax")
def _log_softmax(ctx: _Ctx, ins: list):
    return _softmax_2d_or_axis(ctx, _traced(ins[0]), _log_softmax_fn)


def _reduce(np_fn, jnp_fn, axes_input_since: int):
    def translate(ctx: _Ctx, ins: list):
        x = ins[0]
        axes = _axes(ctx, ins, 1, axes_input_since)
        if not axes:
            if int(ctx.attr("noop_with_empty_axes", 0)):
                return x
            axes = list(range(x.ndim))
        axes = tuple(sorted({_norm_axis(a, x.ndim) for a in axes}))
        keepdims = bool(int(ctx.attr("keepdims", 1)))
        if _is_static(x):
            return np.asarray(np_fn(x, axis=axes, keepdims=keepdims)).astype(x.dtype)
        return jnp_fn(x, axis=axes, keepdims=keepdims)

    return translate


_op("ReduceSum")(_reduce(np.sum, jnp.sum, 13))
_op("ReduceMean")(_reduce(np.mean, jnp.mean, 18))
_op("ReduceMax")(_reduce(np.max, jnp.max, 18))
_op("ReduceMin")(_reduce(np.min, jnp.min, 18))
_op("ReduceProd")(_reduce(np.prod, jnp.prod, 18))


# ---------------------------------------------------------------------------------------------
# Reading the file


def _attribute_value(attr, path: str, node_desc: str):
    import onnx

    kind = attr.type
    if kind == onnx.AttributeProto.FLOAT:
        return float(attr.f)
    if kind == onnx.AttributeProto.INT:
        return int(attr.i)
    if kind == onnx.AttributeProto.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if kind == onnx.AttributeProto.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == onnx.AttributeProto.INTS:
        return [int(v) for v in attr.ints]
    if kind == onnx.AttributeProto.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in attr.strings]
    if kind == onnx.AttributeProto.TENSOR:
        return _tensor_to_numpy(attr.t, path, f"attribute '{attr.name}' of {node_desc}")
    return _UnreadableAttr(onnx.AttributeProto.AttributeType.Name(kind))


@dataclasses.dataclass(frozen=True)
class _UnreadableAttr:
    kind: str  # e.g. GRAPH (If/Loop bodies): kept so that the op is refused with its name


def _tensor_to_numpy(tensor, path: str, what: str) -> np.ndarray:
    from onnx import numpy_helper

    try:
        return np.array(numpy_helper.to_array(tensor, base_dir=os.path.dirname(path)))
    except Exception as err:  # protobuf / external data problems: say which tensor
        raise ParseError(
            f"{path}: cannot read tensor '{tensor.name}' ({what}): {err}. The file may be "
            "truncated or its external data missing; re-export or re-download the model."
        ) from err


def _read_model(path: str):
    import onnx

    if not os.path.isfile(path):
        raise InputError(
            f"tljax.io.load_onnx: no such file {path!r} (working directory {os.getcwd()!r}); "
            "check the path"
        )
    with open(path, "rb") as f:
        data = f.read()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:
        raise ParseError(
            f"{path}: not a readable ONNX model ({type(err).__name__}: {err}). The file is "
            "truncated or corrupt; re-export or re-download it."
        ) from err
    if not model.HasField("graph") or not model.graph.output:
        raise ParseError(
            f"{path}: the ONNX model has no graph outputs ({len(data)} bytes read). The file is "
            "truncated, corrupt or not an ONNX model; re-export or re-download it."
        )
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, os.path.dirname(path) or ".")
        except Exception as err:
            raise ParseError(
                f"{path}: cannot load the external weight data next to the model ({err}). Keep "
                "the data files beside the .onnx file."
            ) from err
    return model


def _default_opset(model, path: str) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    if model.ir_version and model.ir_version < 3:
        return 1
    raise ParseError(
        f"{path}: the model declares no opset for the default ONNX domain (opset_import is "
        f"{[(e.domain, e.version) for e in model.opset_import]}). The file is truncated or was "
        "written by a broken exporter; re-export it."
    )


def _input_spec(value_info, path: str) -> _InputSpec:
    import onnx

    ttype = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not ttype.HasField("shape"):
        raise ParseError(
            f"{path}: graph input '{value_info.name}' has no tensor shape. tljax needs static "
            "input shapes; re-export with a fixed input shape (e.g. a dummy input of the real "
            "size)."
        )
    # a dim_param (or no value at all) is symbolic: any size is accepted at call time
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    dtype = None
    if ttype.elem_type:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    return _InputSpec(value_info.name, dims, dtype)


def _parse_graph(path: str) -> tuple[_Graph, dict]:
    model = _read_model(path)
    opset = _default_opset(model, path)
    graph = model.graph
    if graph.sparse_initializer:
        raise UnsupportedPrimitiveError(
            f"{path}: sparse initializers are not supported. Convert them to dense initializers "
            "(onnx.numpy_helper) and re-save the model."
        )

    constants, params, param_shapes = {}, {}, {}
    for init in graph.initializer:
        value = _tensor_to_numpy(init, path, "initializer")
        if value.dtype.kind == "f":
            params[init.name] = np.asarray(value, np.float32)
            param_shapes[init.name] = value.shape
        else:  # integer / bool initializers are shapes, axes, indices: static by design
            constants[init.name] = value
    # older exporters (ACAS Xu) list initializers among the graph inputs too: they are weights
    inputs = tuple(
        _input_spec(v, path)
        for v in graph.input
        if v.name not in constants and v.name not in params
    )

    nodes = []
    for i, proto in enumerate(graph.node):
        desc = f"ONNX node '{proto.name or f'node_{i}'}' (op {proto.op_type}) of {path}"
        attrs = {a.name: _attribute_value(a, path, desc) for a in proto.attribute}
        nodes.append(
            _Node(
                i,
                proto.name,
                proto.op_type,
                proto.domain,
                tuple(proto.input),
                tuple(proto.output),
                attrs,
            )
        )

    parsed = _Graph(
        path=path,
        opset=opset,
        nodes=tuple(nodes),
        inputs=inputs,
        outputs=tuple(o.name for o in graph.output),
        constants=constants,
        param_shapes=param_shapes,
    )
    _check_structure(parsed)
    return parsed, params


def _check_structure(graph: _Graph) -> None:
    """Unsupported ops (all of them, at once) and dangling names, before anything is traced."""
    unsupported = []
    for node in graph.nodes:
        bad_attr = [k for k, v in node.attrs.items() if isinstance(v, _UnreadableAttr)]
        if node.domain not in ("", "ai.onnx") or node.op_type not in _OPS or bad_attr:
            extra = f", domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
            extra += (
                f", attributes of type {[node.attrs[k].kind for k in bad_attr]}" if bad_attr else ""
            )
            unsupported.append(f"  node '{node.label}' (op {node.op_type}{extra})")
    if unsupported:
        raise UnsupportedPrimitiveError(
            f"{graph.path}: no tljax translation for {len(unsupported)} ONNX node(s) "
            f"(opset {graph.opset}):\n" + "\n".join(unsupported) + "\n"
            f"Supported ops: {', '.join(sorted(_OPS))}.\n{_UNSUPPORTED_FIX}"
        )

    defined = set(graph.constants) | set(graph.param_shapes) | {s.name for s in graph.inputs} | {""}
    for node in graph.nodes:
        missing = [name for name in node.inputs if name not in defined]
        if missing:
            raise ParseError(
                f"{graph.path}: {node.describe(graph.path, graph.opset)} reads {missing}, which no "
                "earlier node, initializer or graph input defines. The graph is malformed or not "
                "topologically sorted; re-export it (or sort it with onnx tools)."
            )
        defined.update(node.outputs)
    missing = [name for name in graph.outputs if name not in defined]
    if missing:
        raise ParseError(
            f"{graph.path}: graph outputs {missing} are produced by no node. The file is "
            "truncated or malformed; re-export it."
        )


# ---------------------------------------------------------------------------------------------
# Running the graph


def _check_call(graph: _Graph, params: Any, xs: tuple) -> tuple[dict, list]:
    if not isinstance(params, dict):
        raise InputError(
            f"params must be the dict returned by load_onnx('{graph.path}'), got "
            f"{type(params).__name__}"
        )
    missing = [name for name in graph.param_shapes if name not in params]
    if missing:
        raise InputError(
            f"params for {graph.path} lack initializers "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}; "
            "pass the dict returned by load_onnx (you may change values, not keys)."
        )
    bad = [
        f"{name}: expected {shape}, got {tuple(np.shape(params[name]))}"
        for name, shape in graph.param_shapes.items()
        if tuple(np.shape(params[name])) != tuple(shape)
    ]
    if bad:
        raise ShapeMismatchError(f"params for {graph.path} have wrong shapes: " + "; ".join(bad))
    if len(xs) != len(graph.inputs):
        names = [s.name for s in graph.inputs]
        raise InputError(
            f"{graph.path} has {len(graph.inputs)} input(s) {names}; call fn(params, "
            f"{', '.join(f'x{i}' for i in range(len(names)))}) (got {len(xs)} input arrays)."
        )
    arrays, bad = [], []
    for spec, x in zip(graph.inputs, xs, strict=True):
        x = jnp.asarray(x)
        shape_ok = x.ndim == len(spec.shape) and all(
            d is None or d == n for d, n in zip(spec.shape, x.shape, strict=True)
        )
        dtype_ok = spec.dtype is None or x.dtype == _jax_dtype(spec.dtype)
        if not (shape_ok and dtype_ok):
            bad.append(
                f"input '{spec.name}' expects shape {spec.describe()}, got {tuple(x.shape)} "
                f"{x.dtype}"
            )
        arrays.append(x)
    if bad:
        example = graph.inputs[0].shape
        raise ShapeMismatchError(
            f"{graph.path}: " + "; ".join(bad) + ". Pass arrays in the ONNX layout and shape "
            f"(e.g. x.reshape{tuple(1 if d is None else d for d in example)}); for a batch use "
            "jax.vmap over a leading axis."
        )
    return {name: jnp.asarray(params[name]) for name in graph.param_shapes}, arrays


def _run(graph: _Graph, params: dict, xs: list):
    env: dict[str, Any] = dict(graph.constants)
    env.update(params)
    env.update(zip((s.name for s in graph.inputs), xs, strict=True))
    for node in graph.nodes:
        ins = [env[name] if name else None for name in node.inputs]
        ctx = _Ctx(node, graph.opset)
        with jax.named_scope(f"onnx.{node.op_type}.{node.label}"):
            try:
                outs = _OPS[node.op_type](ctx, ins)
            except TljaxError:
                raise
            except _NodeProblem as err:
                cls = UnsupportedPrimitiveError if err.unsupported else ParseError
                fix = (
                    _UNSUPPORTED_FIX
                    if err.unsupported
                    else "Check the model (onnx.checker) or re-export it."
                )
                raise cls(f"{node.describe(graph.path, graph.opset)}: {err}. {fix}") from err
            except Exception as err:
                raise ParseError(
                    f"{node.describe(graph.path, graph.opset)} failed on inputs of shapes "
                    f"{[None if v is None else tuple(v.shape) for v in ins]}: "
                    f"{type(err).__name__}: {err}. The model is malformed or uses an unsupported "
                    "variant of the op; check it with onnx.checker.check_model(..., "
                    "full_check=True)."
                ) from err
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        wanted = [i for i, name in enumerate(node.outputs) if name]
        if wanted and wanted[-1] >= len(outs):
            raise UnsupportedPrimitiveError(
                f"{node.describe(graph.path, graph.opset)}: asks for {len(node.outputs)} outputs, "
                f"tljax produces {len(outs)}. {_UNSUPPORTED_FIX}"
            )
        for i in wanted:
            value = outs[i]
            env[node.outputs[i]] = np.asarray(value) if isinstance(value, np.generic) else value
    results = [_traced(env[name]) for name in graph.outputs]
    return results[0] if len(results) == 1 else tuple(results)


def load_onnx(path: str | os.PathLike) -> tuple[Callable, dict[str, jax.Array]]:
    """Reads an ONNX model as a pure JAX function and its float parameters.

    Float initializers become `params` (a dict of float32 arrays, keyed by initializer name);
    integer initializers (shapes, axes, indices) stay constants of the function. Initializers
    that old exporters also list as graph inputs are treated as weights, not inputs. The model's
    input layout is kept exactly (NCHW stays NCHW). Supported ops: `sorted(tljax.io._onnx._OPS)`.

    Args:
        path: an `.onnx` file.

    Returns:
        `(fn, params)`: `fn(params, *xs)` evaluates the graph on inputs `xs` of the declared ONNX
        shapes (symbolic dims may take any size) and returns one array, or a tuple for several
        graph outputs. `fn` is pure and traceable (`jax.jit`, `jax.vmap`, `jax.make_jaxpr`); its
        attributes `input_names`, `input_shapes` (None for symbolic dims) and `output_names`
        describe the graph.

    Raises:
        ParseError: the file is truncated, corrupt or malformed (message names file and node).
        UnsupportedPrimitiveError: the model uses ops or variants tljax does not translate
            (all offending nodes are listed).

    Examples:
        >>> fn, params = tljax.io.load_onnx("mnist-net_256x2.onnx")  # doctest: +SKIP
        >>> logits = fn(params, jnp.zeros((1, 784, 1), jnp.float32))  # doctest: +SKIP
        >>> logits.shape  # doctest: +SKIP
        (1, 10)
    """
    path = os.fspath(path)
    graph, params_np = _parse_graph(path)

    def fn(params, *xs):
        params, arrays = _check_call(graph, params, xs)
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            return _run(graph, params, arrays)

    fn.__name__ = fn.__qualname__ = "onnx_" + "".join(
        c if c.isalnum() else "_" for c in os.path.basename(path)
    )
    fn.__doc__ = (
        f"JAX translation of {path}: fn(params, {', '.join(s.name for s in graph.inputs)})."
    )
    fn.input_names = tuple(s.name for s in graph.inputs)
    fn.input_shapes = tuple(s.shape for s in graph.inputs)
    fn.output_names = graph.outputs

    params = {name: jnp.asarray(value) for name, value in params_np.items()}
    # one abstract run now: unsupported variants and shape errors surface at load time
    specs = [
        jax.ShapeDtypeStruct(
            tuple(1 if d is None else d for d in s.shape), _jax_dtype(s.dtype or np.float32)
        )
        for s in graph.inputs
    ]
    jax.eval_shape(fn, params, *specs)
    return fn, params
