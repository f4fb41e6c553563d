"""Recording a program for bound propagation: the walker, run with a recording semantics, flattens
the jaxpr (through jit, custom_jvp/vjp, remat, scan, cond with concrete index, while with concrete
predicate) into a tape of equations on *nodes* (values that depend on the bounded input).

Equations whose inputs are all concrete are evaluated by JAX directly (concrete passthrough), so
index arithmetic and constant subgraphs need no rules. Each recorded equation is classified:

- ``affine``: linear in its node operands given the concrete ones (dot_general/conv/mul with one
  node operand, add, sub, div by a constant, every structural op, reductions by sum, ...);
- ``unary``: a scalar nonlinearity relaxed by two lines (relu, abs, exp, log, tanh, logistic, ...);
- ``mul``: the product of two nodes (McCormick planes);
- ``concretize``: anything else that has an interval rule (max-pooling with padding, ...): its
  relaxation is the constant interval itself.

Some primitives are rewritten while recording into these kinds (max(x, y) = y + relu(x - y),
x / y = x * recip(y), dot_general of two nodes = broadcast, mul and sum, reduce_max = a tree of
pairwise max), so every rule below is small and checkable.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import _jaxpr_compat as compat
from ..core._errors import UnsupportedPrimitiveError
from ..core._semantics import Semantics
from ..core._walker import eval_jaxpr, unsupported

compat.register_exclusion(__file__)


class Node:
    """A value that depends on the bounded input: identified by its position on the tape."""

    __slots__ = ("id", "shape", "dtype", "eqn_index")

    def __init__(self, id_: int, shape, dtype, eqn_index: int | None):
        self.id = id_
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.eqn_index = eqn_index

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"Node({self.id}, {self.shape})"


@dataclasses.dataclass
class TapeEqn:
    """One recorded equation.

    Attributes:
      kind: "affine", "unary", "mul" or "concretize".
      prim: the JAX primitive (affine / concretize), None for synthetic unary ops.
      params: bind params of `prim`.
      inputs: operands: `Node`s and concrete arrays, in primitive order.
      out: the output node.
      fn: the unary function's name ("relu", "exp", ...), for kind "unary".
      eqn, path: the jaxpr equation and walker path it came from (for error locations).
    """

    kind: str
    prim: Any
    params: dict
    inputs: list
    out: Node
    fn: str = ""
    eqn: Any = None
    path: tuple = ()

    @property
    def node_inputs(self) -> list[Node]:
        return [v for v in self.inputs if isinstance(v, Node)]

    def where(self) -> str:
        from ..core._walker import where

        return where(self.eqn, self.path) if self.eqn is not None else "(synthetic)"


class Tape:
    """The recorded program: input nodes, equations in evaluation order, output values."""

    def __init__(self):
        self.eqns: list[TapeEqn] = []
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self.outputs: list = []

    def new_node(self, shape, dtype) -> Node:
        n = Node(len(self.nodes), shape, dtype, len(self.eqns))
        self.nodes.append(n)
        return n

    def input(self, shape, dtype) -> Node:
        n = Node(len(self.nodes), shape, dtype, None)
        self.nodes.append(n)
        self.inputs.append(n)
        return n

    def record(self, kind, prim, params, inputs, out_aval, *, fn="", ctx=None) -> Node:
        out = self.new_node(out_aval.shape, out_aval.dtype)
        self.eqns.append(
            TapeEqn(
                kind,
                prim,
                dict(params),
                list(inputs),
                out,
                fn,
                ctx.eqn if ctx else None,
                ctx.path if ctx else (),
            )
        )
        return out

    def __repr__(self) -> str:
        kinds = {}
        for e in self.eqns:
            key = e.fn or (e.prim.name if e.prim is not None else e.kind)
            kinds[f"{e.kind}:{key}"] = kinds.get(f"{e.kind}:{key}", 0) + 1
        return f"Tape({len(self.inputs)} inputs, {len(self.eqns)} eqns: {kinds})"


# ----------------------------------------------------------------------------------------------
# Classification tables (keyed by primitive object).

P = lax
_STRUCTURAL = [
    P.reshape_p,
    P.broadcast_in_dim_p,
    P.transpose_p,
    P.squeeze_p,
    P.slice_p,
    P.pad_p,
    P.concatenate_p,
    P.rev_p,
    P.gather_p,
    P.dynamic_slice_p,
    P.dynamic_update_slice_p,
    P.select_n_p,
    P.copy_p,
    compat.stop_gradient_p,
]
for _name in ("copy_p", "stack_p"):  # split has several outputs: not recorded as affine
    for _mod in (jax.extend.core.primitives, lax):
        _p = getattr(_mod, _name, None)
        if _p is not None and _p not in _STRUCTURAL:
            _STRUCTURAL.append(_p)
STRUCTURAL = frozenset(_STRUCTURAL)  # exact (no arithmetic), monotone in every node operand
SUMS = frozenset(
    [P.add_p, P.sub_p, compat.add_any_p, P.neg_p, P.reduce_sum_p, P.cumsum_p, P.reduce_window_sum_p]
)
CONST_SCALED = frozenset([P.mul_p, P.dot_general_p, P.conv_general_dilated_p, P.div_p])

UNARY_FNS = {
    P.exp_p: "exp",
    P.log_p: "log",
    P.log1p_p: "log1p",
    P.tanh_p: "tanh",
    P.logistic_p: "logistic",
    P.sqrt_p: "sqrt",
    P.rsqrt_p: "rsqrt",
    P.abs_p: "abs",
}


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def bind_prim(prim, params, vals):
    out = prim.bind(*vals, **compat.bind_params(prim, params))
    return out[0] if prim.multiple_results else out


def apply_affine(e: TapeEqn, node_vals: list, *, mode: str = "value"):
    """Evaluates an affine equation with its node operands replaced by `node_vals`.

    mode "value": the equation itself; "zero": node operands are zero (the constant part f(0));
    "abs": the absolute linear part |L| applied to (nonnegative) node_vals: multiplicative
    constants replaced by their absolute values, additive float constants by zero;
    "linear": the linear part L (additive float constants zero), exact where the op is.
    """
    it = iter(node_vals)
    prim = e.prim
    if prim is compat.stop_gradient_p:
        # The identity on values; applying the primitive would make JAX's transpose zero.
        return next(it) if mode != "zero" else jnp.zeros(e.out.shape, e.out.dtype)
    vals = []
    for v in e.inputs:
        if isinstance(v, Node):
            x = next(it)
            vals.append(jnp.zeros(v.shape, v.dtype) if mode == "zero" else x)
        elif mode in ("abs", "linear") and _is_float(v):
            if prim in CONST_SCALED:
                vals.append(jnp.abs(v) if mode == "abs" else v)
            else:
                vals.append(jnp.zeros_like(v))
        else:
            vals.append(v)
    if mode == "abs":
        if prim is P.sub_p:
            return bind_prim(P.add_p, {}, vals)
        if prim is P.neg_p:
            return vals[0]
        if prim is P.select_n_p:
            return bind_prim(prim, e.params, vals)
    return bind_prim(prim, e.params, vals)


def terms(e: TapeEqn) -> tuple[int, int]:
    """(forward terms, backward terms): how many rounded terms one output element (forward) or
    one transposed element (backward) sums; 0 means the operation is exact."""
    prim, p = e.prim, e.params
    out_size = e.out.size
    if prim in STRUCTURAL:
        if prim is P.broadcast_in_dim_p:
            in_size = max(e.inputs[0].size if isinstance(e.inputs[0], Node) else 1, 1)
            return 0, max(1, out_size // in_size)
        if prim is P.gather_p:
            return 0, max(1, out_size)
        return 0, 0
    if prim is P.neg_p:
        return 0, 0
    if prim in (P.add_p, P.sub_p, compat.add_any_p):
        return 1, 0
    if prim in (P.mul_p, P.div_p):
        return 1, 1
    if prim is P.reduce_sum_p:
        x = e.inputs[0]
        return max(1, int(np.prod([x.shape[a] for a in p["axes"]], dtype=np.int64))), 0
    if prim is P.cumsum_p:
        return e.inputs[0].shape[p["axis"]], e.inputs[0].shape[p["axis"]]
    if prim is P.reduce_window_sum_p:
        w = int(np.prod(p["window_dimensions"]))
        return w, w
    if prim is P.dot_general_p:
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        lhs, rhs = e.inputs
        ls, rs = (
            np.shape(lhs) if not isinstance(lhs, Node) else lhs.shape,
            np.shape(rhs) if not isinstance(rhs, Node) else rhs.shape,
        )
        k = int(np.prod([ls[a] for a in lc], dtype=np.int64))
        node_is_lhs = isinstance(lhs, Node)
        other, oc, ob = (rs, rc, rb) if node_is_lhs else (ls, lc, lb)
        free = int(
            np.prod(
                [other[a] for a in range(len(other)) if a not in oc and a not in ob], dtype=np.int64
            )
        )
        return max(k, 1), max(free, 1)
    if prim is P.conv_general_dilated_p:
        lhs, rhs = e.inputs
        rs = rhs.shape if isinstance(rhs, Node) else np.shape(rhs)
        dn = p["dimension_numbers"]
        out_f = rs[dn.rhs_spec[0]]
        n_fwd = int(np.prod(rs)) // max(out_f, 1)
        n_bwd = int(np.prod(rs)) // max(rs[dn.rhs_spec[1]], 1)
        return max(n_fwd, 1), max(n_bwd, 1)
    return max(1, out_size), max(1, out_size)


# ----------------------------------------------------------------------------------------------
# Recording rules (the "record" semantics over the walker).


def _tape(ctx) -> Tape:
    return ctx.semantics.options


def _record_affine(ctx, *invals, **params):
    return _tape(ctx).record("affine", ctx.primitive, params, invals, ctx.out_avals[0], ctx=ctx)


def _nodes(invals):
    return [v for v in invals if isinstance(v, Node)]


def _record_unary(fn):
    def rule(ctx, x, **params):
        del params
        return _tape(ctx).record("unary", None, {}, [x], ctx.out_avals[0], fn=fn, ctx=ctx)

    return rule


def _sub_walk(ctx, f, *vals):
    """Records `f(*vals)` (a small jnp function) through the walker with the same semantics."""
    avals = [
        jax.ShapeDtypeStruct(v.shape, v.dtype)
        if isinstance(v, Node)
        else jax.ShapeDtypeStruct(np.shape(v), jnp.result_type(v))
        for v in vals
    ]
    closed = jax.make_jaxpr(f)(*avals)
    jaxpr, consts = compat.open_jaxpr(closed)
    out = eval_jaxpr(
        ctx.semantics, jaxpr, consts, list(vals), path=ctx.path + (f"{ctx.primitive.name}:rewrite",)
    )
    return out[0] if len(out) == 1 else out


def _relu_node(ctx, x):
    return _tape(ctx).record(
        "unary", None, {}, [x], jax.core.ShapedArray(x.shape, x.dtype), fn="relu", ctx=ctx
    )


def _max(ctx, a, b):
    tape = _tape(ctx)
    if not isinstance(a, Node):
        a, b = b, a
    if not isinstance(b, Node):
        c = np.asarray(b) if not isinstance(b, jax.core.Tracer) else None
        if c is not None and c.size and np.all(np.isneginf(c)):
            return _sub_walk(ctx, lambda x: x + jnp.zeros(ctx.out_avals[0].shape, x.dtype), a)
        if c is not None and np.all(c == 0) and tuple(a.shape) == tuple(ctx.out_avals[0].shape):
            return _relu_node(ctx, a)
    del tape
    # max(a, b) = b + relu(a - b)
    shape = ctx.out_avals[0].shape
    d = _sub_walk(ctx, lambda x, y: jnp.broadcast_to(x - y, shape), a, b)
    r = _relu_node(ctx, d)
    return _sub_walk(ctx, lambda y, z: jnp.broadcast_to(y, shape) + z, b, r)


def _min(ctx, a, b):
    # min(a, b) = a - relu(a - b)
    shape = ctx.out_avals[0].shape
    d = _sub_walk(ctx, lambda x, y: jnp.broadcast_to(x - y, shape), a, b)
    r = _relu_node(ctx, d)
    return _sub_walk(ctx, lambda x, z: jnp.broadcast_to(x, shape) - z, a, r)


def _mul(ctx, a, b, **params):
    if isinstance(a, Node) and isinstance(b, Node):
        return _tape(ctx).record("mul", ctx.primitive, params, [a, b], ctx.out_avals[0], ctx=ctx)
    return _record_affine(ctx, a, b, **params)


def _div(ctx, a, b, **params):
    if not isinstance(b, Node):
        return _record_affine(ctx, a, b, **params)
    r = _tape(ctx).record(
        "unary", None, {}, [b], jax.core.ShapedArray(b.shape, b.dtype), fn="recip", ctx=ctx
    )
    shape = ctx.out_avals[0].shape
    return _sub_walk(
        ctx, lambda x, y: jnp.broadcast_to(x, shape) * jnp.broadcast_to(y, shape), a, r
    )


def _dot_general(ctx, lhs, rhs, **params):
    if not (isinstance(lhs, Node) and isinstance(rhs, Node)):
        return _record_affine(ctx, lhs, rhs, **params)
    (lc, rc), (lb, rb) = params["dimension_numbers"]

    def f(x, y):
        # The same contraction as broadcast + elementwise product + sum, so McCormick applies.
        lf = [a for a in range(x.ndim) if a not in lc and a not in lb]
        rf = [a for a in range(y.ndim) if a not in rc and a not in rb]
        xt = jnp.transpose(x, (*lb, *lf, *lc))
        yt = jnp.transpose(y, (*rb, *rf, *rc))
        nb, nlf, nrf = len(lb), len(lf), len(rf)
        xe = jnp.expand_dims(xt, tuple(range(nb + nlf, nb + nlf + nrf)))
        ye = jnp.expand_dims(yt, tuple(range(nb, nb + nlf)))
        prod = xe * ye
        return jnp.sum(prod, axis=tuple(range(nb + nlf + nrf, prod.ndim)))

    return _sub_walk(ctx, f, lhs, rhs)


def _conv(ctx, lhs, rhs, **params):
    if isinstance(lhs, Node) and isinstance(rhs, Node):
        raise UnsupportedPrimitiveError(
            f"conv_general_dilated with both operands depending on the bounded input\n  {ctx.where()}"
        )
    return _record_affine(ctx, lhs, rhs, **params)


def _reduce_max(ctx, x, *, axes, **params):
    del params

    def f(v):
        v = jnp.moveaxis(v, axes, tuple(range(v.ndim - len(axes), v.ndim)))
        v = v.reshape(*v.shape[: v.ndim - len(axes)], -1)
        while v.shape[-1] > 1:
            n = v.shape[-1]
            h = n // 2
            a, b = v[..., :h], v[..., h : 2 * h]
            m = jnp.maximum(a, b)
            v = jnp.concatenate([m, v[..., 2 * h :]], axis=-1) if n % 2 else m
        return v[..., 0]

    return _sub_walk(ctx, f, x)


def _reduce_min(ctx, x, *, axes, **params):
    return _sub_walk(ctx, lambda v: -jnp.max(-v, axis=axes), x)


def _integer_pow(ctx, x, *, y):
    if y == 1:
        return _sub_walk(ctx, lambda v: v + 0.0, x)
    if y == 0:
        return jnp.ones(x.shape, x.dtype)
    if y == 2:
        return _tape(ctx).record("unary", None, {}, [x], ctx.out_avals[0], fn="square", ctx=ctx)
    if y < 0:
        return _sub_walk(ctx, lambda v: 1.0 / v ** (-y), x)
    # x^y = x^(y//2)^2 * x^(y%2): squares and products of nodes.
    if y % 2 == 0:
        return _sub_walk(ctx, lambda v: jnp.square(v ** (y // 2)), x)
    return _sub_walk(ctx, lambda v: v ** (y - 1) * v, x)


def _square(ctx, x, **params):
    return _tape(ctx).record("unary", None, {}, [x], ctx.out_avals[0], fn="square", ctx=ctx)


def _expm1(ctx, x, **params):
    return _sub_walk(ctx, lambda v: jnp.exp(v) - 1.0, x)


def _exp2(ctx, x, **params):
    return _sub_walk(ctx, lambda v: jnp.exp(v * np.float32(math.log(2.0))), x)


def _clamp(ctx, lo, x, hi):
    return _sub_walk(ctx, lambda a, v, b: jnp.minimum(jnp.maximum(v, a), b), lo, x, hi)


def _compare(ctx, a, b, **params):
    # x != x is the NaN test jax.nn functions use; inputs in a box are never NaN.
    if a is b and ctx.primitive is P.ne_p:
        return jnp.zeros(ctx.out_avals[0].shape, bool)
    if a is b and ctx.primitive is P.eq_p:
        return jnp.ones(ctx.out_avals[0].shape, bool)
    raise UnsupportedPrimitiveError(
        f"comparison {ctx.primitive.name!r} of a value that depends on the bounded input: the "
        f"result is not determined over the box\n  {ctx.where()}\n  Branch-free models (ReLU as "
        "max, jnp.abs, ...) are supported; split the box (tljax.verify does) or rewrite the model."
    )


def _select_n(ctx, pred, *cases, **params):
    if isinstance(pred, Node):
        raise UnsupportedPrimitiveError(
            f"select_n (jnp.where) with a predicate that depends on the bounded input\n  {ctx.where()}\n"
            "  Write the selection as max/min/abs (supported), or split the box."
        )
    if not any(isinstance(c, Node) for c in cases):
        return jnp.asarray(bind_prim(ctx.primitive, params, [pred, *cases]))
    return _record_affine(ctx, pred, *cases, **params)


def _convert(ctx, x, *, new_dtype, **params):
    if not jnp.issubdtype(new_dtype, jnp.floating):
        raise UnsupportedPrimitiveError(
            f"convert_element_type of a bounded value to {np.dtype(new_dtype).name}\n  {ctx.where()}"
        )
    if np.dtype(new_dtype).itemsize < x.dtype.itemsize:
        raise UnsupportedPrimitiveError(
            f"convert_element_type from {x.dtype.name} to narrower {np.dtype(new_dtype).name} "
            f"inside the bounded program\n  {ctx.where()}\n  Bound the lower-precision program with "
            "float_format=... instead."
        )
    return _record_affine(ctx, x, new_dtype=new_dtype, **params)


def _reduce_window_max(ctx, x, **params):
    if (
        all(p == (0, 0) for p in params["padding"])
        and all(d == 1 for d in params["base_dilation"])
        and all(d == 1 for d in params["window_dilation"])
    ):
        win, strides = params["window_dimensions"], params["window_strides"]
        out_shape = ctx.out_avals[0].shape

        def f(v):
            # max over the window = pairwise max of strided slices, one per window offset.
            acc = None
            for off in np.ndindex(*win):
                start = tuple(off)
                limit = tuple(
                    o + (n - 1) * s + 1 for o, n, s in zip(off, out_shape, strides, strict=True)
                )
                sl = lax.slice(v, start, limit, strides)
                acc = sl if acc is None else jnp.maximum(acc, sl)
            return acc

        return _sub_walk(ctx, f, x)
    return _tape(ctx).record("concretize", ctx.primitive, params, [x], ctx.out_avals[0], ctx=ctx)


def _logaddexp(ctx, a, b, **params):
    # softplus(x) = logaddexp(x, 0): one convex unary node, tighter than its primitive chain.
    if isinstance(a, Node) and not isinstance(b, Node):
        c = np.asarray(b) if not isinstance(b, jax.core.Tracer) else None
        if c is not None and np.all(c == 0):
            return [
                _tape(ctx).record("unary", None, {}, [a], ctx.out_avals[0], fn="softplus", ctx=ctx)
            ]
    jaxpr, consts = compat.open_jaxpr(ctx.eqn.params["call_jaxpr"])
    return eval_jaxpr(
        ctx.semantics, jaxpr, consts, [a, b], path=ctx.path + ("custom_jvp(logaddexp)",)
    )


RECORD_RULES: dict = {p: _record_affine for p in STRUCTURAL | SUMS}
RECORD_RULES.update({p: _record_unary(fn) for p, fn in UNARY_FNS.items()})
RECORD_RULES.update(
    {
        P.mul_p: _mul,
        P.div_p: _div,
        P.dot_general_p: _dot_general,
        P.conv_general_dilated_p: _conv,
        P.max_p: lambda ctx, a, b: _max(ctx, a, b),
        P.min_p: lambda ctx, a, b: _min(ctx, a, b),
        P.reduce_max_p: _reduce_max,
        P.reduce_min_p: _reduce_min,
        P.integer_pow_p: _integer_pow,
        P.expm1_p: _expm1,
        P.exp2_p: _exp2,
        P.clamp_p: _clamp,
        P.ne_p: _compare,
        P.eq_p: _compare,
        P.lt_p: _compare,
        P.le_p: _compare,
        P.gt_p: _compare,
        P.ge_p: _compare,
        P.select_n_p: _select_n,
        P.convert_element_type_p: _convert,
        P.reduce_window_max_p: _reduce_window_max,
    }
)
if compat.square_p is not None:
    RECORD_RULES[compat.square_p] = _square


def _unsupported_default(ctx, *invals, **params):
    raise unsupported(ctx.semantics, ctx.eqn, ctx.path)


def _lift(value, aval):
    del aval
    # Large constants (weights) go behind an optimization barrier: otherwise XLA constant-folds
    # the weight-only parts of the backward pass with its slow evaluator at compile time.
    if isinstance(value, np.ndarray | jax.Array) and np.size(value) > 64:
        return lax.optimization_barrier(jnp.asarray(value))
    return value


def record_graph(graph, bounded_mask, concrete_leaves, *, name: str = "crown") -> Tape:
    """Records `graph`: flat inputs with `bounded_mask[i]` become nodes, the rest are concrete."""
    tape = Tape()
    sem = Semantics(
        name,
        rules=RECORD_RULES,
        lift=_lift,
        is_abstract=lambda v: isinstance(v, Node),
        concrete_passthrough=True,
        default_rule=_unsupported_default,
        call_rules={"logaddexp": _logaddexp},
        options=tape,
    )
    args = []
    it = iter(concrete_leaves)
    for aval, bounded in zip(graph.in_avals, bounded_mask, strict=True):
        args.append(tape.input(aval.shape, aval.dtype) if bounded else jnp.asarray(next(it)))
    jaxpr, consts = compat.open_jaxpr(graph.closed_jaxpr)
    tape.outputs = eval_jaxpr(sem, jaxpr, consts, args)
    return tape
