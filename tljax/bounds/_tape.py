"""The one lowering of the bounds: the walker, run with a recording semantics, flattens the jaxpr
(through jit, custom_jvp/vjp, remat, scan, cond with concrete index, while with concrete
predicate) into a tape of equations on *nodes* (values that depend on the bounded input). Every
driver (interval, zonotope, CROWN back-substitution, the exact checker) reads this tape and
nothing else; what each primitive lowers to, and what the drivers know about it, is its entry in
`_rules.RULES`.

Equations whose inputs are all concrete are evaluated by JAX directly (concrete passthrough), so
index arithmetic and constant subgraphs need no rules. Each recorded equation has a kind
(`_rules.Kind`):

- ``AFFINE``: linear in its node operands given the concrete ones (dot_general/conv/mul with one
  node operand, add, sub, div by a constant, every structural op, reductions by sum, ...);
- ``UNARY``: an elementwise nonlinearity relaxed by two lines, keyed by its primitive (relu, abs,
  exp, log, tanh, logistic, erf, sin, x ** c, ... and registered user primitives);
- ``MUL``: the product of two nodes (McCormick planes);
- ``SELECT``: ``where(cmp(a, b), c1, c0)`` with a comparison of nodes: exact where the box decides
  the comparison, the hull of the two cases elsewhere (leaky_relu, elu, hard_tanh, ...);
- ``CONCRETIZE``: interval only (max pooling with padding, sign, floor, sort, argmax, ...).

Some primitives are rewritten while recording into these kinds (max(x, y) = y + relu(x - y),
x / y = x * recip(y), dot_general of two nodes = broadcast, mul and sum, reduce_max = a tree of
pairwise max, reduce_prod = a tree of products, split = slices), so every rule below is small and
checkable.

Values computed from constants alone stay known numbers while recording, also inside `bound`'s
jit (the scan carries and masks of a tiled attention): a `where` with such a predicate that
picks one case everywhere records nothing, and equations no output depends on are pruned.
Interval facts that the equations alone hide are attached as hints (`TapeEqn.hint`): the exact
hull of a max/min rewrite, and `x - max(..x..) <= 0`. After recording, `stop_gradient`ed running
maxima may become intervals (`_stop_stabilizers`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools as ft
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import (
    Semantics,
    UnsupportedPrimitiveError,
    compat,
    eval_jaxpr,
    tree_max,
    unsupported,
    where,
    window_slices,
)
from ..interpret import xla_exact_rules
from . import _rules
from ._rules import RULES, Kind, bind_prim, recip_p, relu_p, softplus_p, square_p

compat.register_exclusion(__file__)


class Node:
    """A value that depends on the bounded input: identified by its position on the tape."""

    __slots__ = ("dtype", "eqn_index", "id", "shape")

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
      kind: the equation's class (`_rules.Kind`: affine, unary, mul, select, concretize).
      prim: the primitive, the key of its entry in `_rules.RULES` (for unary equations produced
        by a rewrite, a synthetic primitive such as `_rules.relu_p`).
      params: bind params of `prim` (for select: ``cmp``, the predicate, see `_select_n`).
      inputs: operands: `Node`s and concrete arrays, in primitive order.
      out: the output node.
      eqn, path: the jaxpr equation and walker path it came from (for error locations).
      hint: a fact about `out` that interval rules intersect with, because interval arithmetic
        on the equation alone cannot see it:
        ``("monotone", prim, params, inputs)``: `out` is recorded as a rewrite of `prim` (max as
        ``b + relu(a - b)``, reduce_max as a tree of those, ...), which the program computes
        exactly and which is nondecreasing in every input, so `out` lies between `prim` of the
        lower and of the upper input bounds: the exact hull, e.g. ``[max(lo_a, lo_b),
        max(hi_a, hi_b)]``, where interval arithmetic on the rewrite counts `b` twice;
        ``("nonpos", where)``: `out = x - y` where the program's `y` is a maximum over a set
        containing `x` (``s - max(s)`` in a softmax): `out <= 0` at the positions `where`.
    """

    kind: str
    prim: Any
    params: dict
    inputs: list
    out: Node
    eqn: Any = None
    path: tuple = ()
    hint: tuple = ()

    @property
    def fn(self) -> str:
        """The unary function's name ("relu", "tanh", ...), "" for other kinds."""
        return self.rule.name if self.kind == Kind.UNARY else ""

    @property
    def rule(self):
        """The `_rules.UnaryRule` of a unary equation."""
        return _rules.unary_rule(self.prim, self.params)

    @property
    def node_inputs(self) -> list[Node]:
        return [v for v in self.inputs if isinstance(v, Node)]

    def where(self) -> str:

        return where(self.eqn, self.path) if self.eqn is not None else "(synthetic)"


class Tape:
    """The recorded program: input nodes, equations in evaluation order, output values."""

    def __init__(self):
        self.eqns: list[TapeEqn] = []
        self.nodes: list[Node] = []
        self.inputs: list[Node] = []
        self.outputs: list = []
        # node id -> (primitive, params, inputs, eqn, path): the node is that max/min-like
        # primitive of `inputs`, recorded as a ReLU rewrite (see `_intervals_for_cut_maxima`).
        self.alts: dict[int, tuple] = {}

    def new_node(self, shape, dtype) -> Node:
        n = Node(len(self.nodes), shape, dtype, len(self.eqns))
        self.nodes.append(n)
        return n

    def input(self, shape, dtype) -> Node:
        n = Node(len(self.nodes), shape, dtype, None)
        self.nodes.append(n)
        self.inputs.append(n)
        return n

    def record(self, kind, prim, params, inputs, out_aval, *, ctx=None) -> Node:
        out = self.new_node(out_aval.shape, out_aval.dtype)
        self.eqns.append(
            TapeEqn(
                Kind(kind),
                prim,
                dict(params),
                list(inputs),
                out,
                ctx.eqn if ctx else None,
                ctx.path if ctx else (),
            )
        )
        return out

    def __repr__(self) -> str:
        kinds = {}
        for e in self.eqns:
            key = e.fn or (e.prim.name if e.prim is not None else e.kind)
            k = f"{e.kind.value}:{key}"
            kinds[k] = kinds.get(k, 0) + 1
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
_STRUCTURAL.append(P.scatter_p)  # x.at[i].set(v): writes values unchanged
# split has several outputs: not recorded as affine
_STRUCTURAL += [p for p in compat.primitives_by_name("copy", "stack") if p not in _STRUCTURAL]
STRUCTURAL = frozenset(_STRUCTURAL)  # exact (no arithmetic), monotone in every node operand
SUMS = frozenset(
    [
        P.add_p,
        P.sub_p,
        compat.add_any_p,
        P.neg_p,
        P.reduce_sum_p,
        P.cumsum_p,
        P.reduce_window_sum_p,
        P.scatter_add_p,
    ]
)
CONST_SCALED = frozenset([P.mul_p, P.dot_general_p, P.conv_general_dilated_p, P.div_p])


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


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
    if any(isinstance(v, Pred) for v in invals):
        return _structural_pred(ctx, invals, params)
    if ctx.primitive not in STRUCTURAL and any(
        isinstance(v, Node) and not jnp.issubdtype(v.dtype, jnp.floating) for v in invals
    ):
        raise UnsupportedPrimitiveError(
            f"{ctx.primitive.name} of an integer value that depends on the bounded input (an "
            f"integer leaf of the box, an argmax, a comparison turned into a number)\n  "
            f"{ctx.where()}\n  Bounds carry integer values only through reshapes and "
            "selections: give the box float leaves, index with where/one_hot comparisons, or "
            "split the box."
        )
    return _tape(ctx).record(Kind.AFFINE, ctx.primitive, params, invals, ctx.out_avals[0], ctx=ctx)


def _structural_pred(ctx, invals, params):
    # A comparison is elementwise: reshaping or broadcasting it reshapes its operands.
    (pred,) = invals
    if ctx.primitive not in STRUCTURAL or len(invals) != 1:
        raise UnsupportedPrimitiveError(
            f"{ctx.primitive.name} of a boolean that depends on the bounded input\n  "
            f"{ctx.where()}\n"
            "  Bounds support where(cond, x, y) with one comparison as cond."
        )

    def op(v):
        v = jnp.broadcast_to(v, pred.shape)
        return bind_prim(ctx.primitive, params, [v])

    a = _sub_walk(ctx, op, pred.a) if isinstance(pred.a, Node) else op(pred.a)
    b = _sub_walk(ctx, op, pred.b) if isinstance(pred.b, Node) else op(pred.b)
    return Pred(pred.cmp, a, b, pred.negate, ctx.out_avals[0].shape)


def _nodes(invals):
    return [v for v in invals if isinstance(v, Node)]


def _record_unary(ctx, x, **params):
    del params
    return _unary(ctx, ctx.primitive, x)


def _unary(ctx, prim, x, out_aval=None):
    aval = out_aval if out_aval is not None else jax.core.ShapedArray(x.shape, x.dtype)
    return _tape(ctx).record(Kind.UNARY, prim, {}, [x], aval, ctx=ctx)


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
    return _unary(ctx, relu_p, x)


def _max(ctx, a, b):
    if not isinstance(a, Node):
        a, b = b, a
    if not isinstance(b, Node):
        c = np.asarray(b) if not isinstance(b, jax.core.Tracer) else None
        if c is not None and c.size and np.all(np.isneginf(c)):
            return _sub_walk(ctx, lambda x: x + jnp.zeros(ctx.out_avals[0].shape, x.dtype), a)
        if c is not None and np.all(c == 0) and tuple(a.shape) == tuple(ctx.out_avals[0].shape):
            return _relu_node(ctx, a)
    # max(a, b) = b + relu(a - b)
    shape = ctx.out_avals[0].shape
    d = _sub_walk(ctx, lambda x, y: jnp.broadcast_to(x - y, shape), a, b)
    r = _relu_node(ctx, d)
    out = _sub_walk(ctx, lambda y, z: jnp.broadcast_to(y, shape) + z, b, r)
    return _with_alt(ctx, out, [a, b])


def _min(ctx, a, b):
    # min(a, b) = a - relu(a - b)
    shape = ctx.out_avals[0].shape
    d = _sub_walk(ctx, lambda x, y: jnp.broadcast_to(x - y, shape), a, b)
    r = _relu_node(ctx, d)
    out = _sub_walk(ctx, lambda x, z: jnp.broadcast_to(x, shape) - z, a, r)
    return _with_alt(ctx, out, [a, b])


def _with_alt(ctx, out, inputs):
    """Remembers that `out`, recorded as a rewrite, is `ctx`'s primitive (max, min, reduce_max,
    reduce_min: exact in float and nondecreasing in every input) applied to `inputs`: as an
    interval hint, and as the alternative equation `_intervals_for_cut_maxima` may use."""
    if isinstance(out, Node) and out.eqn_index is not None and all(out is not v for v in inputs):
        tape = _tape(ctx)
        params = dict(ctx.eqn.params)
        tape.alts[out.id] = (ctx.primitive, params, list(inputs), ctx.eqn, ctx.path)
        tape.eqns[out.eqn_index].hint = ("monotone", ctx.primitive, params, list(inputs))
    return out


def _add(ctx, a, b, **params):
    # x + 0 (a running sum's first block, a zero bias) is x exactly: no node, no refinement.
    for x, c in ((a, b), (b, a)):
        if isinstance(x, Node) and x.shape == tuple(ctx.out_avals[0].shape) and _is_zero(c):
            return x
    d = _tanh_grad(ctx, a, b)
    if d is not None:
        return d
    return _record_affine(ctx, a, b, **params)


# ----------------------------------------------------------------------------------------------
# Derivative terms of tanh and logistic as one smooth function of the pre-activation.
#
# JAX writes tanh'(z) = 1 - t^2 (t = tanh z) as (g + g t)(1 - t) in a jvp, c + c t with
# c = ct (1 - t) in a transpose (0.10), one_minus_square(t) (0.11), and logistic'(z) as
# s (1 - s). Bounded as products of two nodes (McCormick), the correlation of t and 1 - t is
# lost; recorded as g * sech2(z) (resp. dlogistic(z)) they get one relaxation in z. Matched on
# the tape's own equations (the same t node, of the same z), so the rewrite is an identity of
# real numbers; `_smooth.SMOOTH["sech2"]` / `["dlogistic"]` carry the allowance for how the
# program rounds these expressions.


def _producer(ctx, v):
    """The recorded equation whose output is node `v` (None for inputs and known values)."""
    if not isinstance(v, Node) or v.eqn_index is None:
        return None
    return _tape(ctx).eqns[v.eqn_index]


# Exact maps that commute with elementwise functions (vmap and jacfwd put them between a value
# and its uses): the rewrite looks through them.
_VIEWS = frozenset([P.broadcast_in_dim_p, P.transpose_p, P.reshape_p, P.squeeze_p, P.copy_p])


def _view(ctx, v):
    """(base, ops): `v` is the structural maps `ops` ((prim, params), innermost first) of `base`."""
    ops = []
    while isinstance(v, Node):
        e = _producer(ctx, v)
        if e is None or e.kind != Kind.AFFINE or e.prim not in _VIEWS or len(e.inputs) != 1:
            break
        ops.append((e.prim, e.params))
        v = e.inputs[0]
    return v, tuple(reversed(ops))


def _same_ops(p, q) -> bool:
    if len(p) != len(q):
        return False
    for (a, pa), (b, pb) in zip(p, q, strict=True):
        try:
            if a is not b or pa != pb:
                return False
        except Exception:  # noqa: BLE001 - params that do not compare: not provably equal
            return False
    return True


def _is_view(ctx, v, base, ops) -> bool:
    b, o = _view(ctx, v)
    return b is base and _same_ops(o, ops)


def _same(ctx, a, b) -> bool:
    """Whether `a` and `b` are provably the same value (the same node, the same maps of one
    node, or equal known arrays)."""
    if a is b:
        return True
    if isinstance(a, Node) and isinstance(b, Node):
        return _is_view(ctx, b, *_view(ctx, a))
    if isinstance(a, Node) or isinstance(b, Node):
        return False
    x, y = _known(a), _known(b)
    return x is not None and y is not None and x.shape == y.shape and bool(np.all(x == y))


def _one_minus(ctx, v, prim):
    """(z, ops) where `v` is the maps `ops` of `1 - t` with `t = prim(z)` recorded, else None."""
    base, ops = _view(ctx, v)
    e = _producer(ctx, base)
    if e is None or e.kind != Kind.AFFINE or e.prim is not P.sub_p:
        return None
    one, t = e.inputs
    c = _known(one)
    if not (isinstance(t, Node) and t.shape == e.out.shape and c is not None and c.size > 0):
        return None
    pt = _producer(ctx, t)
    if not np.all(c == 1) or pt is None or pt.kind != Kind.UNARY or pt.prim is not prim:
        return None
    return t, pt.inputs[0], ops


def _factor(ctx, v, t, ops):
    """g where `v = g * ops(t)` (or `ops(t) * g`) was recorded, else None."""
    e = _producer(ctx, v)
    if e is None or e.prim is not P.mul_p or e.kind not in (Kind.AFFINE, Kind.MUL):
        return None
    x, y = e.inputs
    if _is_view(ctx, y, t, ops):
        return x
    return y if _is_view(ctx, x, t, ops) else None


def _derivative_node(ctx, prim, z, ops):
    """`ops(prim(z))`: the smooth derivative node of `z`, mapped like the matched pattern."""
    h = _unary(ctx, prim, z)
    for op, params in ops:
        h = _sub_walk(ctx, lambda v, op=op, params=params: bind_prim(op, params, [v]), h)
    return h


def _times_sech2(ctx, g, z, ops):
    """Records `g * ops(sech2(z))`, the program's rounded form of g (1 - ops(tanh(z))^2), or
    None when the shapes do not broadcast to the output's."""
    shape = tuple(ctx.out_avals[0].shape)
    h = _derivative_node(ctx, _rules.sech2_p, z, ops)
    try:
        if np.broadcast_shapes(np.shape(g), h.shape) != shape:
            return None
    except ValueError:
        return None
    out = _sub_walk(ctx, lambda c, v: jnp.broadcast_to(c * v, shape), g, h)
    # The program rounds intermediates scaled by g (g t, g + g t): a flush to zero there is an
    # absolute error of a few eta in the output, which no allowance of sech2 (scaled by g) can
    # hold. Two exact additions of 0 each charge one rounding, so 2 eta or more, everywhere.
    tape = _tape(ctx)
    aval = jax.core.ShapedArray(shape, ctx.out_avals[0].dtype)
    for _ in range(2):
        out = tape.record(
            Kind.AFFINE, P.add_p, {}, [out, jnp.zeros(shape, aval.dtype)], aval, ctx=ctx
        )
    return out


def _tanh_jvp(ctx, a, b):
    """mul(g + g t, 1 - t) with t = tanh(z) (JAX 0.10's jvp of tanh): g * sech2(z), else None."""
    for e_, f_ in ((a, b), (b, a)):
        m = _one_minus(ctx, f_, P.tanh_p)
        pe = _producer(ctx, e_)
        if m is None or pe is None or pe.kind != Kind.AFFINE:
            continue
        if pe.prim not in (P.add_p, compat.add_any_p):
            continue
        t, z, ops = m
        for g, d in (pe.inputs, pe.inputs[::-1]):
            g2 = _factor(ctx, d, t, ops)
            if g2 is not None and _same(ctx, g, g2):
                return _times_sech2(ctx, g, z, ops)
    return None


def _tanh_grad(ctx, a, b):
    """c + c t with c = g (1 - t), t = tanh(z) (JAX 0.10's transpose of tanh's jvp):
    g * sech2(z), else None."""
    for c, ct in ((a, b), (b, a)):
        pc = _producer(ctx, c)
        if pc is None or pc.prim is not P.mul_p or pc.kind not in (Kind.AFFINE, Kind.MUL):
            continue
        for g, f_ in (pc.inputs, pc.inputs[::-1]):
            m = _one_minus(ctx, f_, P.tanh_p)
            if m is None:
                continue
            t, z, ops = m
            c2 = _factor(ctx, ct, t, ops)
            if c2 is not None and _same(ctx, c, c2):
                return _times_sech2(ctx, g, z, ops)
    return None


def _logistic_derivative(ctx, a, b):
    """s (1 - s) with s = logistic(z): dlogistic(z), else None."""
    for s_, d in ((a, b), (b, a)):
        m = _one_minus(ctx, d, P.logistic_p)
        if m is None:
            continue
        t, z, ops = m
        if _is_view(ctx, s_, t, ops):
            h = _derivative_node(ctx, _rules.dlogistic_p, z, ops)
            if h.shape == tuple(ctx.out_avals[0].shape):
                return h
    return None


def _is_zero(v) -> bool:
    c = _known(v)
    return c is not None and c.size > 0 and not np.any(c)


def _sub(ctx, a, b, **params):
    if isinstance(a, Node) and a.shape == tuple(ctx.out_avals[0].shape) and _is_zero(b):
        return a
    out = _record_affine(ctx, a, b, **params)
    if (
        isinstance(a, Node)
        and isinstance(b, Node)
        and a.shape == out.shape
        and a.size <= _DOM_MAX
        and len(b.shape) == len(a.shape)
    ):
        # `b` may have size-1 axes that the subtraction broadcasts.
        tape = _tape(ctx)
        mp = np.broadcast_to(np.arange(b.size).reshape(b.shape), a.shape).reshape(-1)
        proven = _dominated(tape, b, mp, a, 0)
        if proven is not None and proven.any():
            tape.eqns[out.eqn_index].hint = ("nonpos", proven.reshape(a.shape))
    return out


_DOM_MAX = 1 << 22  # elements; index maps are evaluated on concrete integer arrays
_INDEX_MAPS = frozenset(
    [
        P.reshape_p,
        P.broadcast_in_dim_p,
        P.transpose_p,
        P.squeeze_p,
        P.copy_p,
        compat.stop_gradient_p,
    ]
)


def _dominated(tape: Tape, node: Node, mp: np.ndarray, x: Node, depth: int) -> np.ndarray | None:
    """Where `node[mp[i]] >= x[i]` holds in the program (flat index arrays over `x`), proven
    from the max/min rewrites (`Tape.alts`): `max(a, b) >= a`, `reduce_max(v) >= v` along the
    reduced axes, and through index maps (reshapes, broadcasts, stop_gradient) and `where` with
    a known predicate. None where nothing is proven."""
    if depth > 16:
        return None
    if node.id == x.id:
        return mp == np.arange(x.size)
    alt = tape.alts.get(node.id)
    if alt is not None:
        prim, params, inputs, _, _ = alt
        if prim is P.reduce_max_p:
            v = inputs[0]
            if not (isinstance(v, Node) and v.id == x.id):
                return None
            axes = tuple(params["axes"])
            keep = [d for d in range(len(v.shape)) if d not in axes]
            coords = np.indices(v.shape).reshape(len(v.shape), -1)
            group = (
                np.ravel_multi_index([coords[d] for d in keep], [v.shape[d] for d in keep])
                if keep
                else np.zeros(v.size, np.int64)
            )
            return mp == group
        if prim is P.max_p:
            proven = None
            for a in inputs:
                if isinstance(a, Node) and a.shape == node.shape:
                    p = _dominated(tape, a, mp, x, depth + 1)
                    if p is not None:
                        proven = p if proven is None else proven | p
            return proven
        return None
    if node.eqn_index is None:
        return None
    e = tape.eqns[node.eqn_index]
    ins = e.node_inputs
    if e.kind != Kind.AFFINE:
        return None
    if e.prim is P.select_n_p:
        which = _known(e.inputs[0])
        if which is None or not all(
            isinstance(c, Node) and c.shape == node.shape for c in e.inputs[1:]
        ):
            return None
        which = np.broadcast_to(which, node.shape).reshape(-1)[mp]
        proven = np.zeros(x.size, bool)
        for k, c in enumerate(e.inputs[1:]):
            p = _dominated(tape, c, mp, x, depth + 1)
            if p is not None:
                proven |= p & (which == k)
        return proven
    if e.prim not in _INDEX_MAPS or len(ins) != 1 or len(e.inputs) != 1:
        return None
    src = ins[0]
    idx = jnp.arange(src.size, dtype=jnp.int32).reshape(src.shape)
    m2 = np.asarray(apply_affine(e, [idx])).reshape(-1)
    return _dominated(tape, src, m2[mp], x, depth + 1)


def _mul(ctx, a, b, **params):
    if isinstance(a, Node) and a is b:
        # x * x: a square (>= 0, convex), not a product of two independent factors.
        return _square(ctx, a)
    if isinstance(a, Node) and isinstance(b, Node):
        d = _tanh_jvp(ctx, a, b)
        if d is None:
            d = _logistic_derivative(ctx, a, b)
        if d is not None:
            return d
        return _tape(ctx).record(Kind.MUL, ctx.primitive, params, [a, b], ctx.out_avals[0], ctx=ctx)
    return _record_affine(ctx, a, b, **params)


def _div(ctx, a, b, **params):
    if not isinstance(b, Node):
        return _record_affine(ctx, a, b, **params)
    r = _unary(ctx, recip_p, b)
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
            "conv_general_dilated with both operands depending on the bounded input\n  "
            f"{ctx.where()}"
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

    return _with_alt(ctx, _sub_walk(ctx, f, x), [x])


def _reduce_min(ctx, x, *, axes, **params):
    return _with_alt(ctx, _sub_walk(ctx, lambda v: -jnp.max(-v, axis=axes), x), [x])


def _integer_pow(ctx, x, *, y):
    if y == 1:
        return _sub_walk(ctx, lambda v: v + 0.0, x)
    if y == 0:
        return jnp.ones(x.shape, x.dtype)
    if y == 2:
        return _unary(ctx, square_p, x, ctx.out_avals[0])
    if y < 0:
        return _sub_walk(ctx, lambda v: 1.0 / v ** (-y), x)
    # x^y = x^(y//2)^2 * x^(y%2): squares and products of nodes.
    if y % 2 == 0:
        return _sub_walk(ctx, lambda v: jnp.square(v ** (y // 2)), x)
    return _sub_walk(ctx, lambda v: v ** (y - 1) * v, x)


def _square(ctx, x, **params):
    return _unary(ctx, square_p, x, ctx.out_avals[0])


def _exp2(ctx, x, **params):
    return _sub_walk(ctx, lambda v: jnp.exp(v * np.float32(math.log(2.0))), x)


def _clamp(ctx, lo, x, hi):
    return _sub_walk(ctx, lambda a, v, b: jnp.minimum(jnp.maximum(v, a), b), lo, x, hi)


class Pred:
    """A boolean value that depends on the bounded input: ``cmp(a, b)`` (a comparison, or
    ``is_finite(a)``), negated if `negate`. Only `where` (select_n), `not` and conversion to a
    number consume it; each becomes a select equation, exact where the box decides the predicate."""

    __slots__ = ("a", "b", "cmp", "negate", "shape")

    def __init__(self, cmp, a, b, negate, shape):
        self.cmp, self.a, self.b, self.negate, self.shape = cmp, a, b, negate, tuple(shape)

    def __repr__(self) -> str:
        return f"Pred({'not ' if self.negate else ''}{self.cmp.name}, {self.shape})"


def _compare(ctx, a, b, **params):
    del params
    # x != x is the NaN test jax.nn functions use; inputs in a box are never NaN.
    if a is b and ctx.primitive is P.ne_p:
        return jnp.zeros(ctx.out_avals[0].shape, bool)
    if a is b and ctx.primitive is P.eq_p:
        return jnp.ones(ctx.out_avals[0].shape, bool)
    if isinstance(a, Pred) or isinstance(b, Pred):
        raise UnsupportedPrimitiveError(
            f"comparison {ctx.primitive.name!r} of booleans that depend on the bounded input\n"
            f"  {ctx.where()}\n  Bounds support where(cond, x, y) with one comparison as cond."
        )
    return Pred(ctx.primitive, a, b, False, ctx.out_avals[0].shape)


def _is_finite(ctx, x, **params):
    del params
    return Pred(P.is_finite_p, x, jnp.zeros((), x.dtype), False, ctx.out_avals[0].shape)


def _not(ctx, x, **params):
    del params
    if not isinstance(x, Pred):
        raise UnsupportedPrimitiveError(
            f"bitwise not of an integer that depends on the bounded input\n  {ctx.where()}"
        )
    return Pred(x.cmp, x.a, x.b, not x.negate, x.shape)


def _select(ctx, pred: Pred, c0, c1, out_aval):
    """where(pred, c1, c0) as one select equation (see `_rules.Kind.SELECT`)."""
    shape = tuple(out_aval.shape)
    cases = []
    for c in (c0, c1):
        if isinstance(c, Node) and c.shape != shape:
            c = _sub_walk(ctx, lambda v: jnp.broadcast_to(v, shape), c)
        elif not isinstance(c, Node):
            c = jnp.broadcast_to(jnp.asarray(c, out_aval.dtype), shape)
        cases.append(c)
    params = {"cmp": pred.cmp, "negate": pred.negate}
    return _tape(ctx).record(
        Kind.SELECT, P.select_n_p, params, [pred.a, pred.b, *cases], out_aval, ctx=ctx
    )


def _select_n(ctx, pred, *cases, **params):
    if isinstance(pred, Pred):
        return _select(ctx, pred, cases[0], cases[1], ctx.out_avals[0])
    if isinstance(pred, Node):
        raise UnsupportedPrimitiveError(
            f"select_n (lax.switch-like) with an integer index that depends on the bounded input\n"
            f"  {ctx.where()}\n  Use where(cond, x, y) with a comparison, or split the box."
        )
    if not any(isinstance(c, Node) for c in cases):
        return jnp.asarray(bind_prim(ctx.primitive, params, [pred, *cases]))
    # A concrete predicate that picks the same case everywhere (the `seen` flag of an online
    # softmax after its first block, an all-True mask tile): that case, nothing recorded, so the
    # other case's equations stay dead and are pruned.
    idx = _known(pred)
    if idx is not None and idx.size and np.all(idx == idx.flat[0]):
        chosen = cases[int(np.clip(int(idx.flat[0]), 0, len(cases) - 1))]
        if tuple(np.shape(chosen)) == tuple(ctx.out_avals[0].shape):
            return chosen
    return _record_affine(ctx, pred, *cases, **params)


def _known(v) -> np.ndarray | None:
    """`v` as a numpy array when its value is known while recording (not a node, not traced)."""
    if isinstance(v, Node | jax.core.Tracer):
        return None
    try:
        return np.asarray(v)
    except Exception:  # noqa: BLE001 - anything that is not an array value
        return None


def _convert(ctx, x, *, new_dtype, **params):
    if isinstance(x, Pred):
        if np.dtype(new_dtype) == np.dtype(bool):
            return x
        aval = ctx.out_avals[0]
        zeros = jnp.zeros(aval.shape, aval.dtype)
        return _select(ctx, x, zeros, jnp.ones(aval.shape, aval.dtype), aval)
    if not jnp.issubdtype(new_dtype, jnp.floating):
        raise UnsupportedPrimitiveError(
            f"convert_element_type of a bounded value to {np.dtype(new_dtype).name}\n  "
            f"{ctx.where()}\n  Bounds of a bounded value stay float: round with jnp.floor / "
            "jnp.round (bounded as intervals) instead of casting to an integer type, or cast "
            "outside the bounded function."
        )
    if np.dtype(new_dtype).itemsize < x.dtype.itemsize:
        raise UnsupportedPrimitiveError(
            f"convert_element_type from {x.dtype.name} to narrower {np.dtype(new_dtype).name} "
            f"inside the bounded program\n  {ctx.where()}\n  Bound the lower-precision program "
            "with float_format=... instead."
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
            # max over the window: the strided slices (one per window offset) stacked, then a
            # balanced tree of pairwise maxima, each level one equation over the whole stack
            # (log2 of the window's size levels, not one per offset: a 4x4 pool is 4 ReLU
            # equations, not 15, and its program compiles that much smaller)
            return tree_max(jnp.stack(window_slices(v, win, strides, out_shape)))

        return _sub_walk(ctx, f, x)
    return _tape(ctx).record(Kind.CONCRETIZE, ctx.primitive, params, [x], ctx.out_avals[0], ctx=ctx)


def _logaddexp(ctx, a, b, **params):
    # softplus(x) = logaddexp(x, 0): one convex unary node, tighter than its primitive chain.
    if isinstance(a, Node) and not isinstance(b, Node):
        c = np.asarray(b) if not isinstance(b, jax.core.Tracer) else None
        if c is not None and np.all(c == 0):
            return [_unary(ctx, softplus_p, a, ctx.out_avals[0])]
    sub = compat.sub_jaxpr(ctx.eqn, "call")
    return eval_jaxpr(
        ctx.semantics, sub.jaxpr, sub.consts, [a, b], path=ctx.path + ("custom_jvp(logaddexp)",)
    )


def _record_concretize(ctx, *invals, **params):
    return _tape(ctx).record(
        Kind.CONCRETIZE, ctx.primitive, params, invals, ctx.out_avals[0], ctx=ctx
    )


def _split(ctx, x, *, sizes, axis):
    # jnp.split, jax.hessian's unstacking: exact slices
    outs, start = [], 0
    for n in sizes:
        outs.append(
            _sub_walk(ctx, lambda v, s=start, n=n: lax.slice_in_dim(v, s, s + n, axis=axis), x)
        )
        start += n
    return outs


def _unstack(ctx, x, *, axis):
    # lax.unstack (jax.hessian / jacfwd outputs on newer JAX): exact slices, axis dropped
    return [
        _sub_walk(ctx, lambda v, i=i: lax.index_in_dim(v, i, axis=axis, keepdims=False), x)
        for i in range(x.shape[axis])
    ]


def _reduce_prod(ctx, x, *, axes, **params):
    del params

    def f(v):
        # a balanced tree of products of two nodes (McCormick); each product is one rounding
        v = jnp.moveaxis(v, axes, tuple(range(v.ndim - len(axes), v.ndim)))
        v = v.reshape(*v.shape[: v.ndim - len(axes)], -1)
        if v.shape[-1] == 0:
            return jnp.ones(v.shape[:-1], v.dtype)
        while v.shape[-1] > 1:
            n = v.shape[-1]
            h = n // 2
            m = v[..., :h] * v[..., h : 2 * h]
            v = jnp.concatenate([m, v[..., 2 * h :]], axis=-1) if n % 2 else m
        return v[..., 0]

    return _sub_walk(ctx, f, x)


def _pow(ctx, x, y, **params):
    del params
    yc = _known(y)
    if isinstance(x, Node) and yc is not None and yc.size and np.all(yc == yc.flat[0]):
        c = float(yc.flat[0])
        if c == 1.0:
            return _sub_walk(ctx, lambda v: v + 0.0, x)
        return _tape(ctx).record(Kind.UNARY, P.pow_p, {"y": c}, [x], ctx.out_avals[0], ctx=ctx)
    raise UnsupportedPrimitiveError(
        f"pow with a bounded exponent (or one that varies per element)\n  {ctx.where()}\n"
        "  Bounds support x ** c for a constant c (x > 0 unless c is an integer: use "
        "jax.lax.integer_pow / x ** 2 for those); write exp(y * log(x)) for a bounded exponent."
    )


def _sort(ctx, *operands, dimension, is_stable, num_keys):
    del is_stable, num_keys
    if len(operands) != 1:
        raise UnsupportedPrimitiveError(
            f"sort of several operands (argsort, sort by key) of bounded values\n  {ctx.where()}\n"
            "  Bounds support jnp.sort of one array (its k-th element is nondecreasing in every "
            "input)."
        )
    return [
        _tape(ctx).record(
            Kind.CONCRETIZE,
            ctx.primitive,
            {"dimension": dimension, "is_stable": True, "num_keys": 1},
            operands,
            ctx.out_avals[0],
            ctx=ctx,
        )
    ]


def _argminmax(ctx, x, **params):
    return _tape(ctx).record(Kind.CONCRETIZE, ctx.primitive, params, [x], ctx.out_avals[0], ctx=ctx)


def _one_minus_square(ctx, x, **params):
    # JAX 0.11+: `1 - x**2` as one primitive (in tanh/asin/acos/atanh derivatives). XLA lowers it
    # as (1 + x) * (1 - x), three roundings: of x = tanh(z) that is sech2(z) (its allowance
    # covers them); otherwise record exactly those roundings so the float model charges them.
    t, ops = _view(ctx, x)
    pt = _producer(ctx, t)
    if pt is not None and pt.kind == Kind.UNARY and pt.prim is P.tanh_p:
        return _derivative_node(ctx, _rules.sech2_p, pt.inputs[0], ops)
    return _sub_walk(ctx, lambda v: (1.0 + v) * (1.0 - v), x)


# The lowering's entries in the one table (`_rules.RULES`); unary entries need none.
for _p in STRUCTURAL | SUMS:
    _rules.define(_p, Kind.AFFINE, _record_affine)
_REWRITES = {
    P.div_p,
    P.max_p,
    P.min_p,
    P.reduce_max_p,
    P.reduce_min_p,
    P.integer_pow_p,
    P.exp2_p,
    P.clamp_p,
    P.reduce_window_max_p,
    P.reduce_prod_p,
}
for _p, _fn in {
    P.add_p: _add,
    compat.add_any_p: _add,
    P.sub_p: _sub,
    P.mul_p: _mul,
    P.div_p: _div,
    P.dot_general_p: _dot_general,
    P.conv_general_dilated_p: _conv,
    P.max_p: lambda ctx, a, b: _max(ctx, a, b),
    P.min_p: lambda ctx, a, b: _min(ctx, a, b),
    P.reduce_max_p: _reduce_max,
    P.reduce_min_p: _reduce_min,
    P.integer_pow_p: _integer_pow,
    P.exp2_p: _exp2,
    P.clamp_p: _clamp,
    P.convert_element_type_p: _convert,
    P.reduce_window_max_p: _reduce_window_max,
    P.split_p: _split,
    P.reduce_prod_p: _reduce_prod,
}.items():
    _rules.define(_p, Kind.REWRITE if _p in _REWRITES else Kind.AFFINE, _fn)
for _p in compat.primitives_by_name("unstack"):
    _rules.define(_p, Kind.AFFINE, _unstack)
for _p, _fn in {P.not_p: _not, P.is_finite_p: _is_finite, P.select_n_p: _select_n}.items():
    _rules.define(_p, Kind.SELECT, _fn)
_rules.define(P.sort_p, Kind.CONCRETIZE, _sort)
_rules.define(P.pow_p, Kind.UNARY, _pow)
for _p in (P.argmax_p, P.argmin_p):
    _rules.define(_p, Kind.CONCRETIZE, _argminmax, interval=_rules.arg_extremum_interval)
for _p in (P.ne_p, P.eq_p, P.lt_p, P.le_p, P.gt_p, P.ge_p):
    _rules.define(_p, Kind.SELECT, _compare)
for _p in (P.sign_p, P.floor_p, P.ceil_p, P.round_p):
    # exact in float and nondecreasing: the interval of their values at the interval ends
    _rules.define(_p, Kind.CONCRETIZE, _record_concretize)
if compat.one_minus_square_p is not None:
    _rules.define(compat.one_minus_square_p, Kind.AFFINE, _one_minus_square)


def _lowering_rules() -> dict:
    """The recording rule of every primitive in the table (registered ones included)."""
    out = {}
    for p, r in RULES.items():
        if r.lower is not None:
            out[p] = r.lower
        elif r.kind == Kind.UNARY:
            out[p] = _record_unary
        elif r.kind == Kind.CONCRETIZE:
            out[p] = _record_concretize
    return out


_REGISTER_FIX = (
    "Bounds have no rule for it: register one with `tljax.bounds.register({prim}, smooth=...)` "
    "(or interval= / monotone=True, see its docstring), or write this part of the model with "
    "operations the bounds support."
)


def _unsupported_default(ctx, *invals, **params):
    raise unsupported(ctx.semantics, ctx.eqn, ctx.path, fix=_REGISTER_FIX)


def _staged():
    """A context in which JAX stages operations again inside `record_graph`'s eager context
    (JAX's own `eager_constant_folding` switch, sniffed: it is not public API)."""
    try:
        from jax._src import config as jax_config
    except ImportError:  # pragma: no cover - layout changed: the barrier is then evaluated eagerly
        return contextlib.nullcontext()
    state = getattr(jax_config, "eager_constant_folding", None)
    return state(False) if callable(state) else contextlib.nullcontext()


def _lift(value, aval):
    del aval
    # Large constants (weights) go behind an optimization barrier: otherwise XLA constant-folds
    # the weight-only parts of the backward pass with its slow evaluator at compile time. The
    # barrier must be staged into the surrounding jit, not evaluated by the eager recording.
    if isinstance(value, np.ndarray | jax.Array) and np.size(value) > 64:
        with _staged():
            return lax.optimization_barrier(jnp.asarray(value))
    return value


@ft.cache
def _host_rules() -> dict:
    return xla_exact_rules()


def record_graph(
    graph, bounded_mask, concrete_leaves, *, name: str = "crown", stabilizers: str | None = None
) -> Tape:
    """Records `graph`: flat inputs with `bounded_mask[i]` become nodes, the rest are concrete.

    stabilizers: which `stop_gradient`ed maxima CROWN treats as free values in their interval
    ("relax", "chains", "interval"; default `STABILIZERS`), see `_stop_stabilizers`.
    """
    tape = Tape()
    sem = Semantics(
        name,
        rules=_lowering_rules(),
        lift=_lift,
        is_abstract=lambda v: isinstance(v, Node | Pred),
        concrete_passthrough=True,
        default_rule=_unsupported_default,
        call_rules={"logaddexp": _logaddexp},
        options=tape,
        host_rules=_host_rules(),
    )
    args = []
    it = iter(concrete_leaves)
    for aval, bounded in zip(graph.in_avals, bounded_mask, strict=True):
        args.append(tape.input(aval.shape, aval.dtype) if bounded else jnp.asarray(next(it)))
    jaxpr, consts = compat.open_jaxpr(graph.closed_jaxpr)
    # Recording usually runs inside `bound`'s jit. Values computed from constants alone (masks,
    # positions, the `seen` flags of a scan carry, a cond index) must stay known numbers there,
    # not become tracers: rules and the walker branch on them. Values computed from traced
    # arguments are staged as usual.
    with jax.ensure_compile_time_eval():
        tape.outputs = eval_jaxpr(sem, jaxpr, consts, args)
    _prune(tape)
    _stop_stabilizers(tape, STABILIZERS if stabilizers is None else stabilizers)
    while _intervals_for_cut_maxima(tape):
        _prune(tape)
    return tape


STABILIZERS = "chains"
"""Default of `record_graph(stabilizers=...)`: which `stop_gradient`ed maxima become intervals."""


def _stop_stabilizers(tape: Tape, mode: str) -> None:
    """`stop_gradient` of a running or row maximum becomes a "concretize" equation.

    Softmax, logsumexp and the online softmax subtract `m = stop_gradient(max(...))` only to
    keep `exp` in range: the result does not depend on `m` (exactly for softmax, through
    `m + log` for logsumexp). Back-substituting through `m` relaxes its max tree of ReLUs from
    every later bound. That is tight, and cheap for one row max. But the online softmax carries
    `m` through every key block, each block's max being the max of the previous one and the
    block's scores: every bound after block t back-substitutes through all t trees, so the bound
    program grows quadratically with the number of blocks (and alpha-CROWN differentiates all
    of it). As a "concretize" equation `m` enters CROWN as a free value in its exact interval
    instead, with all its uses summed into one coefficient first; `s - m <= 0` is kept as a hint
    (`_sub`). That is looser: the correlation between `m` and the scores is lost.

    mode: "relax" cuts nothing; "chains" (default) cuts the maxima of a chain, i.e. a
    `stop_gradient`ed maximum computed from, or used to compute, another one (the running max of
    an online softmax over two or more blocks), so a softmax's row max stays relaxed (as tight
    as without this pass); "interval" cuts every one.
    Recognised maxima: max/min/reduce_max/reduce_min results, through structural operations
    whose node operands are all such values (reshapes, broadcasts, `where` between the previous
    and the new running max).
    """
    if mode not in ("relax", "chains", "interval"):
        raise ValueError(f"stabilizers must be 'relax', 'chains' or 'interval', got {mode!r}")
    if mode == "relax":
        return
    # For each value made of maxima: the stop_gradient outputs it is computed from.
    sources: dict[int, frozenset] = {}
    stops = []  # (equation, sources of its input)
    for e in tape.eqns:
        ins = e.node_inputs
        if e.out.id in tape.alts:
            alt_ins = [n for n in tape.alts[e.out.id][2] if isinstance(n, Node)]
            sources[e.out.id] = frozenset().union(
                *(sources.get(n.id, frozenset()) for n in alt_ins)
            )
        elif (
            e.kind == Kind.AFFINE
            and e.prim in STRUCTURAL
            and ins
            and all(n.id in sources for n in ins)
        ):
            src = frozenset().union(*(sources[n.id] for n in ins))
            if e.prim is compat.stop_gradient_p:
                stops.append((e, src))
                src = frozenset([e.out.id])
            sources[e.out.id] = src
    feeding = frozenset().union(*(src for _, src in stops))
    for e, src in stops:
        if mode == "interval" or src or e.out.id in feeding:
            e.kind = Kind.CONCRETIZE


def _intervals_for_cut_maxima(tape: Tape) -> bool:
    """Replaces each max/min rewrite that no CROWN back-substitution enters (every use is cut
    by a "concretize" equation) by its primitive as one "concretize" equation: its interval is
    the same exact hull (`TapeEqn.hint`), and its ReLUs, now dead, cost nothing. Returns whether
    anything changed."""
    if not tape.alts:
        return False
    # Nodes whose equation a backward pass would transpose: it starts at the outputs and at the
    # inputs of every relaxed equation, and stops at "concretize" equations.
    entered = {o.id for o in tape.outputs if isinstance(o, Node)}
    for e in tape.eqns:
        if e.kind in (Kind.UNARY, Kind.MUL):
            entered.update(n.id for n in e.node_inputs)
    for e in reversed(tape.eqns):
        if e.out.id in entered and e.kind != Kind.CONCRETIZE:
            entered.update(n.id for n in e.node_inputs)
    changed = False
    for e in tape.eqns:
        alt = tape.alts.get(e.out.id)
        if alt is None or e.out.id in entered:
            continue
        prim, params, inputs, eqn, path = tape.alts.pop(e.out.id)
        k = e.out.eqn_index
        tape.eqns[k] = TapeEqn(Kind.CONCRETIZE, prim, params, inputs, e.out, eqn, path)
        changed = True
    return changed


def _prune(tape: Tape) -> None:
    """Drops equations no output depends on (e.g. the branch a concrete `where` did not take,
    the rescaling of an empty running sum) and renumbers `Node.eqn_index`."""
    live = {o.id for o in tape.outputs if isinstance(o, Node)}
    keep = []
    for e in reversed(tape.eqns):
        if e.out.id in live:
            keep.append(e)
            live.update(n.id for n in e.node_inputs)
    keep.reverse()
    for k, e in enumerate(keep):
        e.out.eqn_index = k
    tape.eqns = keep
    tape.nodes = [n for n in tape.nodes if n.eqn_index is None or n.id in live]
