"""Bound propagation over a recorded tape: IBP (forward), CROWN (backward linear relaxation with
CROWN intermediate bounds, as auto_LiRPA's default) and alpha-CROWN (ReLU lower slopes optimised
with optax). All of it is plain JAX code: jit-compatible and differentiable.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import compat
from . import _float_model as fm
from ._drive import Backward, backward, forward
from ._relax import Intervals, Options, node_abs_max, relax_mul, select_masks
from ._rules import Kind, relu_p
from ._tape import CONST_SCALED, STRUCTURAL, Node, Tape, _is_float, apply_affine, terms

_BOXLIKE = frozenset(
    [
        lax.reshape_p,
        lax.transpose_p,
        lax.squeeze_p,
        lax.slice_p,
        lax.rev_p,
        lax.copy_p,
        lax.convert_element_type_p,
    ]
)
# Coordinatewise maps: an exact interval stays exact through them.
_COORDWISE = _BOXLIKE | frozenset(
    [lax.add_p, lax.sub_p, lax.mul_p, lax.div_p, lax.neg_p, lax.broadcast_in_dim_p]
)


_RELAXED = (Kind.UNARY, Kind.MUL, Kind.SELECT)


def relu_eqns(tape: Tape) -> list[int]:
    """Indices of the ReLU equations of `tape`, in the order `relu_splits` numbers them (also
    alpha-CROWN's slopes)."""
    return [i for i, e in enumerate(tape.eqns) if e.kind == Kind.UNARY and e.prim is relu_p]


def refine_plan(tape: Tape, limit: int | None = None) -> set[int]:
    """Ids of nodes whose bounds CROWN tightens: inputs of relaxed equations that are not an exact
    interval image already (an input, one affine map of box-like nodes, or a chain of maps that
    keep the node's elements independent: elementwise functions, sums over disjoint groups, as
    in ``rsqrt(mean(x * x))`` of an input ``x``; CROWN cannot tighten an exact interval).

    With `limit`, a node whose pass would carry more than `limit` coefficients (`refine_cost`)
    keeps its interval bounds.

    A node computed elementwise from one node whose bounds are already CROWN's or exact (a
    smooth function of it, a negation, a scaling, a reshape) gets no pass of its own: its pass
    would be the operand's pass through one relaxation line (or one coordinatewise map), never
    tighter than the interval image of the operand's bounds (a line below g on [l, u] is at
    most min g there), provided the operand is refined before the image is computed (in the
    sweep's order). On the Burgers residual 44 of 103 passes."""
    plan, exact = _full_plan(tape)
    if limit is not None:
        cost = refine_cost(tape)
        plan = {i for i in plan if cost.get(i, 0) <= limit}
    return _drop_derived(tape, plan, exact)


def _drop_derived(tape: Tape, plan: set[int], exact: set[int]) -> set[int]:
    # In the sweep's order: a planned node is refined when its first relaxed consumer is entered;
    # an elementwise image is computed when its equation is reached, from its operand's bounds
    # as they are then, so the operand must be exact, derived, or refined by then.
    good = set(exact)
    keep: set[int] = set()
    for e in tape.eqns:
        ins = e.node_inputs
        if e.kind in _RELAXED:
            good.update(n.id for n in ins if n.id in keep)
        o = e.out.id
        elementwise = e.kind == Kind.UNARY or (e.kind == Kind.AFFINE and e.prim in _COORDWISE)
        if elementwise and len(ins) == 1 and ins[0].id in good:
            good.add(o)
        elif o in plan:
            keep.add(o)
    return keep


def refine_cost(tape: Tape) -> dict[int, int]:
    """Per node id: the coefficients its CROWN pass carries at its widest, `2 * size` rows times
    the largest node (or cotangent: a slice's is its operand's size) the pass reaches. A dense
    estimate: what the pass's largest array holds, per domain."""
    widest = {n.id: n.size for n in tape.inputs}
    for e in tape.eqns:
        w = e.out.size
        for n in e.node_inputs:
            w = max(w, widest.get(n.id, n.size))
        widest[e.out.id] = w
    return {n.id: 2 * n.size * widest.get(n.id, n.size) for n in tape.nodes}


def _full_plan(tape: Tape) -> tuple[set[int], set[int]]:
    boxlike = {n.id for n in tape.inputs}
    exact = set(boxlike)
    # indep: the node ranges over exactly the product of its elements' intervals
    indep = set(boxlike)
    plan: set[int] = set()
    for e in tape.eqns:
        ins = e.node_inputs
        one_indep = len(ins) == 1 and ins[0].id in indep
        if e.kind == Kind.AFFINE:
            if e.prim in _BOXLIKE and all(n.id in boxlike for n in ins):
                boxlike.add(e.out.id)
                exact.add(e.out.id)
            elif all(n.id in boxlike for n in ins) or (
                len(ins) == 1 and ins[0].id in exact and e.prim in _COORDWISE
            ):
                exact.add(e.out.id)
            if one_indep and _keeps_indep(e):
                indep.add(e.out.id)
                exact.add(e.out.id)
        elif e.kind == Kind.UNARY and len(ins) == 1 and ins[0].id in exact:
            # an elementwise function's interval rule is its exact range on an exact interval
            exact.add(e.out.id)
            if ins[0].id in indep:
                indep.add(e.out.id)
        if e.kind in _RELAXED:
            plan.update(n.id for n in ins if n.id not in exact)
    return plan, exact


def _keeps_indep(e) -> bool:
    """Whether an affine equation of one node maps independent elements to independent elements
    with exact intervals: every output element is a function of its own group of inputs."""
    x = e.node_inputs[0]
    if e.prim in _BOXLIKE or e.prim is compat.stop_gradient_p or e.prim is lax.reduce_sum_p:
        return True
    if e.prim in (lax.add_p, lax.sub_p, lax.mul_p, lax.div_p, lax.neg_p, lax.broadcast_in_dim_p):
        # elementwise with constants (or a broadcast adding size-1 axes): no element is repeated
        return e.out.size == x.size and (e.prim is not lax.div_p or e.inputs[0] is x)
    return False


def _sum_rows(x):
    if x.size == 0:  # an empty node (a zero-length slice of a scan or a padding)
        return jnp.zeros(x.shape[:1], x.dtype)
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


# Above this many coefficients `_rowdot` is always a matrix-vector product (faster to run).
_ROWDOT_MATVEC = 1 << 16


def _rowdot(a, v, matvec: bool):
    # sum over the trailing axes of a * v. A matrix-vector product with `matvec` (a mapped
    # program: boxes or domains under `jax.vmap`, where XLA:CPU turns a product and reduction
    # into a dot with `v` broadcast to the full size of `a` and written to memory: 2x slower on
    # 256 acas boxes) or many coefficients; else a product and reduction fused with the producer
    # of `a` (a separate dot costs ~30 ms of compile: acas float-sound CROWN 2.6 -> 4.0 s).
    if not matvec and a.size < _ROWDOT_MATVEC:
        return jnp.sum(a * v, axis=tuple(range(1, a.ndim)))
    if a.size == 0:  # no rows, or an empty node
        return jnp.zeros(a.shape[:1], a.dtype)
    v = jnp.broadcast_to(v, a.shape[1:])  # (no broadcast copy of v)
    return a.reshape(a.shape[0], -1) @ v.reshape(-1)


def _mul0(a, b):
    # a * b with 0 * inf = 0 (unbounded relaxation intercepts multiplied by zero coefficients).
    # lax.select, not jnp.where: no nested jit call per use in the lowered program.
    ab = a * b
    return lax.select(a == 0, jnp.zeros_like(ab), ab)


def _mix(a, va, vb):
    # a va + (1 - a) vb, a in [0, 1], with 0 * inf = 0 (an unbounded plane at weight 0)
    return _mul0(a, va) + _mul0(1.0 - a, vb)


def _shared(x):
    """`x` (a pytree of float arrays, or None) computed once and stored.

    XLA fuses cheap elementwise chains (those behind node bounds, relaxations and allowances)
    into every consumer, i.e. into every step of every backward pass that reads them, and
    compiles each copy (on the transformer block of bench/gpu.py: 114 fused operations per
    kernel, 113k in all, from 15k in the program). It does not duplicate an expensive operation
    such as a division, so `x / d`, with `d` an exact 1 that XLA cannot fold (it is computed
    from `x`: 1 + 0 * isnan(x)), is computed once and read from memory by every consumer. `d`
    has the shape of `x` and depends on nothing else: a broadcast divisor (a scalar from the
    box, batched under `jax.vmap`) XLA rewrote as a multiplication by its reciprocal, which it
    then duplicated (256 acas boxes: half of the time went to ReLU relaxations recomputed per
    coefficient of every pass), and it made constants (a convolution's bias) batched copies.
    Concrete values (an eager run) are returned as they are.

    The division by 1 is exact for every float (infinities and NaN included) except that XLA:CPU
    flushes a subnormal to zero (DAZ). Only results of arithmetic go through here, which XLA:CPU
    has flushed already (FTZ), or values read only by arithmetic (slopes that are bounds,
    constant parts, magnitudes), which reads a subnormal as zero anyway: nothing changes. Values
    that are only moved (a structural map of an input box) must not (see `_float_model`)."""
    if x is None:
        return x

    def keep(v):
        if not isinstance(v, jax.core.Tracer):
            return v
        return v / (1.0 + 0.0 * jnp.isnan(v).astype(v.dtype))

    return jax.tree_util.tree_map(keep, x)


def _moved_bounds(tape: Tape) -> set[int]:
    """Ids of the nodes whose interval ends may be values of the input box (or of constants)
    moved unchanged, subnormals included: inputs, and what structural maps, ReLU and abs
    (a maximum), max pooling and the hints' maxima make of them. Every other interval end is a
    result of arithmetic, which XLA:CPU flushes to a normal number or zero (FTZ)."""
    moved = {n.id for n in tape.inputs}
    for e in tape.eqns:
        ins = e.node_inputs
        passes = (
            (e.kind == Kind.AFFINE and e.prim in STRUCTURAL)
            or (e.kind == Kind.UNARY and e.rule.exact)
            or e.kind in (Kind.CONCRETIZE, Kind.SELECT)
        )
        if e.hint or (passes and (any(n.id in moved for n in ins) or len(ins) < len(e.inputs))):
            moved.add(e.out.id)
    return moved


def _zero_at_zero(e) -> bool:
    """Whether the affine equation's constant part f(0) is zero whatever its constants are: a
    product by constants, or no float operand besides the nodes (a structural map, a sum of
    nodes, ...). Then the backward pass has no intercept term to add for it."""
    if e.prim in CONST_SCALED or e.prim is compat.stop_gradient_p:
        return True
    return not any(not isinstance(v, Node) and _is_float(v) for v in e.inputs)


def _transpose(e, L):
    """The transposed linear part of affine equation `e` applied to every row of `L`: one
    cotangent (S, *n.shape) per node operand `n`. Traced as a linear map, so no forward
    computation of the equation is emitted (as `jax.vjp` would)."""
    avals = [jax.ShapeDtypeStruct(n.shape, n.dtype) for n in e.node_inputs]

    def lin(*xs):
        return apply_affine(e, list(xs), mode="linear")

    tr = jax.linear_transpose(lin, *avals)
    return list(jax.vmap(tr)(L))


# --- the input-space hull of a first-layer ReLU --------------------------------------------------
# A ReLU whose input is z = W v + b, with v the bounded input itself (through reshapes) and few
# inputs per neuron (a convolution's patch, a narrow dense layer). Over the box, relu(z) lies
# below every plane sum_k t_k e_k + c(t), with e_k = W_k v_k the neuron's terms, t in [0, 1]^K
# and c(t) = max(-sum_k t_k min e_k, b + sum_k (1 - t_k) max e_k): for e in the box the plane is
# >= 0 (first term) and >= z (second). t = u / (u - l) for every term is CROWN's upper line;
# alpha-CROWN optimising t per row, neuron and term reaches the convex hull of the neuron over
# the box (the LP of Anderson et al. 2020's ideal formulation), which a line in z over [l, u]
# cannot: on the verivital avg-pool CNN's open rows (bench/relu_milp.py) the triangle LP's
# margins are -0.44 / -0.49, the hull's +0.49 / +0.71 (true minima +0.51 / +0.71).
# Parameters per row grow with the fan-in: only up to this many terms per neuron.
HULL_MAX_FAN_IN = 64
# ... and at most this many per relu equation and output pass (rows x neurons x terms; the
# verivital CNN's 16 rows: 3M): Adam keeps three copies, the steps a few more.
HULL_MAX_PARAMS = 1 << 24
# Adam steps on the hull planes are this fraction of alpha-CROWN's learning rate: at the full
# rate (0.25, 40 steps) they oscillated (verivital avg-pool prop_12's open row stayed at -0.36;
# at 0.03 x 100 steps +0.23, the hull LP's optimum +0.35).
HULL_LR_SCALE = 0.12
# the order-preserving part of `_BOXLIKE` (no transpose, slice or reversal)
_BOX_MAPS = _BOXLIKE - {lax.transpose_p, lax.slice_p, lax.rev_p}


@dataclasses.dataclass(frozen=True)
class HullForm:
    """Where relu equation `i`'s input comes from: `z = W v (+ b)`."""

    v: Node  # the bounded input (or a reshape of it)
    w_eqn: int  # the convolution or dot_general
    b_eqn: int | None  # the bias addition, if any
    fan_in: int  # terms per neuron


def _reshaped(tape: Tape, n: Node, convert: bool = True) -> Node | None:
    # the node `n` is a reshape of (same elements in the same order; `convert`: or converted),
    # or None
    e = tape.eqns[n.eqn_index]
    if e.kind != Kind.AFFINE or len(e.inputs) != 1 or not isinstance(e.inputs[0], Node):
        return None
    if e.prim is lax.convert_element_type_p and not convert:
        return None
    same = e.prim in _BOX_MAPS or (
        e.prim is lax.broadcast_in_dim_p and e.inputs[0].size == n.size
    )  # expand_dims
    return e.inputs[0] if same else None


def _box_node(tape: Tape, v: Node) -> bool:
    # v's interval is the input box itself (so the hull over it loses nothing)
    while v.eqn_index is not None:
        v = _reshaped(tape, v)
        if v is None:
            return False
    return True


def hull_form(tape: Tape, i: int) -> HullForm | None:
    """The `HullForm` of relu equation `i`, or None when the input-space hull does not apply."""
    e = tape.eqns[i]
    if e.kind != Kind.UNARY or e.prim is not relu_p:
        return None
    z = e.inputs[0]
    if not isinstance(z, Node) or z.eqn_index is None:
        return None
    ez = tape.eqns[z.eqn_index]
    b_eqn, w = None, z
    if ez.kind == Kind.AFFINE and ez.prim in (lax.add_p, compat.add_any_p):
        if len(ez.node_inputs) != 1 or ez.node_inputs[0].eqn_index is None:
            return None
        b_eqn, w = z.eqn_index, ez.node_inputs[0]
    if w.size != z.size:
        return None
    ew = tape.eqns[w.eqn_index]
    while ew.kind == Kind.AFFINE and ew.prim not in (lax.conv_general_dilated_p, lax.dot_general_p):
        w = _reshaped(tape, w, convert=False)  # e.g. a squeeze of the convolution's output
        if w is None or w.eqn_index is None:
            return None
        ew = tape.eqns[w.eqn_index]
    if ew.kind != Kind.AFFINE or len(ew.node_inputs) != 1:
        return None
    v = ew.node_inputs[0]
    if not _box_node(tape, v) or not jnp.issubdtype(v.dtype, jnp.floating):
        return None
    if ew.prim is lax.conv_general_dilated_p:
        kernel, p = ew.inputs[1], ew.params
        dn = p["dimension_numbers"]
        nd = len(v.shape)
        canonical = tuple(range(nd))
        if (
            ew.inputs[0] is not v
            or isinstance(kernel, Node)
            or p["feature_group_count"] != 1
            or p["batch_group_count"] != 1
            or any(tuple(s) != canonical for s in (dn.lhs_spec, dn.rhs_spec, dn.out_spec))
        ):
            return None
        k = int(np.prod(np.shape(kernel)[1:]))
    elif ew.prim is lax.dot_general_p:
        k = v.size
    else:
        return None
    if k > HULL_MAX_FAN_IN:
        return None
    return HullForm(v, w.eqn_index, b_eqn, k)


def _patches(x, ew):
    """The convolution's input patches: (N, C * window, *out spatial), exact (a 0/1 kernel at
    full precision), C-major as the kernel's (O, C, *window) reshaped to (O, K)."""
    p = ew.params
    return lax.conv_general_dilated_patches(
        x,
        np.shape(ew.inputs[1])[2:],
        p["window_strides"],
        p["padding"],
        lhs_dilation=p["lhs_dilation"],
        rhs_dilation=p["rhs_dilation"],
        precision=lax.Precision.HIGHEST,
    )


def _hull_intercept(T, elo, ehi, bias, flush, fs: bool):
    """Per row and neuron, c(t) for the planes `T` (S, *z, K) (rounded up when `fs`)."""
    a = -jnp.sum(_mul0(T, elo), axis=-1)
    one_t = 1.0 - T
    b = bias + jnp.sum(_mul0(one_t, ehi), axis=-1)
    if not fs:
        return jnp.maximum(a, b)
    k = T.shape[-1]
    u = fm.unit(T.dtype)
    # the products' and sums' rounding, 1 - t's, and flushed subnormal terms
    ea = fm.gamma(k + 3, u) * jnp.sum(_mul0(T, jnp.abs(elo)), axis=-1)
    eb = fm.gamma(k + 4, u) * (jnp.abs(bias) + jnp.sum(_mul0(one_t, jnp.abs(ehi)), axis=-1))
    return fm.up(jnp.maximum(a + fm.inflate(ea + flush), b + fm.inflate(eb + flush)))


class _Pass(Intervals):
    """State of one bound computation: node bounds, relaxations, and the float error terms."""

    def __init__(self, tape: Tape, in_bounds: dict, opts: Options):
        super().__init__(dict(in_bounds), opts)
        self.tape = tape
        self._moved = _moved_bounds(tape)
        self.relax: dict[int, tuple] = {}
        self._m: dict[int, jax.Array] = {}
        self._f0: dict[int, jax.Array | None] = {}
        self._absmax: dict[int, tuple] = {}
        self.empty = jnp.asarray(False)  # the split constraints leave no point of the box
        self.split_sign: dict[int, jax.Array] = {}  # relu equation -> +1/-1/0 over its input
        self._hull: dict[int, tuple] = {}

    def set_bounds(self, n: Node, b):
        """Stores node `n`'s bounds, computed once (`_shared`) where they are results of
        arithmetic (see `_moved_bounds`)."""
        if n.id not in self._moved:
            b = _shared(b)
        self.bounds[n.id] = b

    def f0(self, i: int):
        """The constant part f(0) of affine equation `i` (None where it is zero whatever the
        constants), shared by every backward pass."""
        if i in self._f0:
            return self._f0[i]
        e = self.tape.eqns[i]
        if _zero_at_zero(e):
            f0 = None
        else:
            f0 = apply_affine(e, [jnp.zeros(n.shape, n.dtype) for n in e.node_inputs], mode="zero")
        self._f0[i] = f0 = _shared(f0)
        return f0

    def abs_max(self, n: Node):
        """max(|lo|, |hi|) over node `n`'s current bounds, computed once per bounds."""
        b = self.bounds[n.id]
        hit = self._absmax.get(n.id)
        if hit is not None and hit[0] is b:
            return hit[1]
        v = _shared(node_abs_max(b))
        self._absmax[n.id] = (b, v)
        return v

    # Per affine equation: |L|-weighted allowance for (a) rounding of the transposed product and of
    # the constant term in this computation and (b) the program's own rounding at this node.
    def affine_allowance(self, i: int):
        if i in self._m:
            return self._m[i]
        e = self.tape.eqns[i]
        n_fwd, n_bwd = terms(e)
        xmax = [self.abs_max(n) for n in e.node_inputs]
        labs = apply_affine(e, xmax, mode="abs")
        f0 = self.f0(i)
        f0 = None if f0 is None else jnp.abs(f0)  # None: exactly zero
        u = fm.unit(labs.dtype)
        m = jnp.zeros_like(labs)
        if n_bwd:
            m = m + fm.gamma(n_bwd + 1, u) * labs
        if f0 is not None:
            m = m + fm.gamma(2, u) * f0
        if n_fwd:
            p = self.opts.program
            mag = labs if f0 is None else labs + f0
            m = m + p.rel(n_fwd) * mag * (1.0 + fm.gamma(n_fwd + 1, u)) + p.abs_eta(n_fwd)
        m = fm.inflate(m, 8.0) + (n_bwd + 2) * fm.tiny(labs.dtype)
        self._m[i] = m = _shared(m)
        return m

    def hull_data(self, i: int):
        """For relu equation `i`: its `HullForm`, the terms' weights and bounds (broadcast to
        (*z, K)), the bias (*z), how coefficients on the terms reach `v`, the program's rounding
        allowance at z, |W| |v|max per neuron, the flushed-subnormal allowance and the number
        of terms summed into one coefficient of `v`; computed once per pass."""
        if i in self._hull:
            return self._hull[i]
        tape = self.tape
        hf = hull_form(tape, i)
        z = tape.eqns[i].inputs[0]
        ew = tape.eqns[hf.w_eqn]
        v = hf.v
        vlo, vhi = self.bounds[v.id]
        dt = z.dtype
        if ew.prim is lax.conv_general_dilated_p:
            # the terms in the convolution's output layout (N, O, *spatial, K), then z's
            kernel = jnp.asarray(ew.inputs[1], dt)
            o, k = kernel.shape[0], hf.fan_in
            wshape = ew.out.shape
            sp = wshape[2:]
            w_e = jnp.broadcast_to(kernel.reshape(1, o, *(1,) * len(sp), k), (*wshape, k))
            w_e = w_e.reshape(*z.shape, k)

            def gather(x):
                g = jnp.moveaxis(_patches(x.reshape(v.shape), ew), 1, -1)[:, None]
                return jnp.broadcast_to(g, (*wshape, k)).reshape(*z.shape, k)

            def to_v(gw):
                s_, n = gw.shape[0], v.shape[0]
                gw = gw.reshape(s_, *wshape, k)
                g = jnp.moveaxis(jnp.sum(gw, axis=2), -1, 2).reshape(s_ * n, k, *sp)
                aval = jax.ShapeDtypeStruct((s_ * n, *v.shape[1:]), dt)
                (out,) = jax.linear_transpose(lambda x: _patches(x, ew), aval)(g)
                return out.reshape(s_, *v.shape)

            n_acc = o * k
        else:
            n = v.size
            with jax.default_matmul_precision("highest"):
                eye = jnp.eye(n, dtype=dt).reshape(n, *v.shape)
                jac = jax.vmap(lambda x: apply_affine(ew, [x], mode="linear"))(eye)
            w_e = jnp.moveaxis(jac.reshape(n, *z.shape), 0, -1)

            def gather(x):
                return x.reshape(-1)

            def to_v(gw):
                return jnp.sum(gw, axis=tuple(range(1, gw.ndim - 1))).reshape(-1, *v.shape)

            n_acc = z.size
        p1, p2 = w_e * gather(vlo), w_e * gather(vhi)
        elo, ehi = jnp.minimum(p1, p2), jnp.maximum(p1, p2)
        bias = jnp.zeros(z.shape, dt)
        f0 = self.f0(hf.w_eqn)
        if f0 is not None:
            bias = bias + f0.reshape(z.shape)
        f0 = None if hf.b_eqn is None else self.f0(hf.b_eqn)
        if f0 is not None:
            bias = bias + jnp.broadcast_to(f0, z.shape)
        delta = labs = flush = None
        if self.opts.float_sound:
            # (the reshapes between the product and z are exact)
            delta = self.affine_allowance(hf.w_eqn).reshape(z.shape)
            if hf.b_eqn is not None:
                delta = delta + self.affine_allowance(hf.b_eqn)
            labs = apply_affine(ew, [self.abs_max(v)], mode="abs").reshape(z.shape)
            absw = jnp.sum(jnp.abs(jnp.broadcast_to(w_e, elo.shape)), axis=-1)
            flush = (hf.fan_in + 2) * fm.tiny(dt) * (1.0 + absw)
        out = (hf, w_e, _shared((elo, ehi)), bias, to_v, delta, labs, flush, n_acc)
        self._hull[i] = out
        return out

    def backward(
        self,
        start: Node | list,
        lam,
        alphas: dict | None = None,
        start_key=None,
        sym=False,
        betas: dict | None = None,
        record: dict | None = None,
        float_sound: bool | None = None,
    ):
        """Lower bounds of the rows of `lam · start` over the input box: shape (S,).

        start, lam: a node and its coefficients (S, *start.shape), or lists of both: then the
        rows bound `sum_k lam[k] · start[k]` (one pass for several nodes, see `nodes_bounds`).
        sym: `lam` is [M; -M]. Linear maps commute with the negation, so affine equations are
        transposed for M only (half the work) until the first relaxed equation, where every
        pending coefficient is mirrored.
        betas: beta-CROWN multipliers, `{(start_key, i): (S, *x.shape)}` for ReLU equation `i`
          with input `x` split by `propagate(splits=)` (sign `s`). On the domain, `s * x >= 0`,
          so for any `beta >= 0` the bound of `lam · start - sum(beta * s * x)` (a valid bound of
          the same linear function plus a term <= 0 on the domain, so it bounds `lam · start` from
          below there) is what is computed: the coefficient of `x` gets `-beta * s`. Negative
          entries are clipped to 0; entries where `s == 0` have no effect.
        record: if given, filled with `{i: L}`, the coefficients (S, *out.shape) this pass puts on
          the output of each unary equation `i` it reaches, and `{("input", id): L}` those on each
          input node (branching heuristics and falsification read them).
        float_sound: False leaves out the slack for rounding (`Options.float_sound` by default):
          for objectives whose parameters are then evaluated soundly.
        """
        starts, lams = (
            (list(start), list(lam)) if isinstance(start, (list, tuple)) else ([start], [lam])
        )
        S = lams[0].shape[0]
        H = S // 2 if sym else S  # rows carried while on the half
        if sym:
            assert S % 2 == 0
        adj = _Adjoint(self, H, lams[0].dtype, sym, alphas, start_key, betas, record)
        if float_sound is not None:
            adj.fs = adj.fs and float_sound
        backward(self.tape, [(n, lm[:H]) for n, lm in zip(starts, lams, strict=True)], adj)
        return adj.lower()

    def node_bounds(self, n: Node, alphas=None):
        """CROWN bounds of every element of node `n` (lower and upper in one backward pass)."""
        size = n.size
        eye = jnp.eye(size, dtype=n.dtype)
        lam = jnp.concatenate([eye, -eye]).reshape(2 * size, *n.shape)
        low = self.backward(n, lam, alphas, start_key=n.id, sym=True)
        lo = low[:size].reshape(n.shape)
        hi = (-low[size:]).reshape(n.shape)
        return lo, hi

    def nodes_bounds(self, nodes: list, alphas=None):
        """`node_bounds` of several nodes (the operands of one relaxed equation) in one backward
        pass: the rows of all nodes stacked, each node's coefficients zero on the others' rows,
        so the equations their passes share are transposed once."""
        if len(nodes) <= 1 or alphas is not None:
            return [self.node_bounds(n, alphas) for n in nodes]
        H = sum(n.size for n in nodes)
        lams, off = [], 0
        for n in nodes:
            eye = jnp.eye(H, n.size, k=-off, dtype=n.dtype).reshape(H, *n.shape)
            lams.append(jnp.concatenate([eye, -eye]))
            off += n.size
        low = self.backward(nodes, lams, sym=True)
        out, off = [], 0
        for n in nodes:
            lo = low[off : off + n.size].reshape(n.shape)
            hi = (-low[H + off : H + off + n.size]).reshape(n.shape)
            out.append((lo, hi))
            off += n.size
        return out

    def relax_eqn(self, i: int):
        e = self.tape.eqns[i]
        if e.kind == Kind.UNARY:
            lo, hi = self.bounds[e.inputs[0].id]
            self.relax[i] = _shared(e.rule.relax(lo, hi, self.opts))
        elif e.kind == Kind.SELECT:
            self.relax[i] = _shared(select_masks(e, self.bounds))
        elif e.kind == Kind.MUL:
            x, y = e.node_inputs
            bx, by = self.bounds[x.id], self.bounds[y.id]
            shape = e.out.shape
            bx = tuple(jnp.broadcast_to(v, shape) for v in bx)
            by = tuple(jnp.broadcast_to(v, shape) for v in by)
            self.relax[i] = _shared(relax_mul(bx, by, self.opts))

    def propagate(
        self,
        method: str,
        alphas=None,
        plan: set | None = None,
        splits=None,
        fixed=None,
        refine_fixed: bool = False,
    ):
        """Forward sweep (`_drive.forward`): interval bounds of every node, tightened by CROWN
        where planned.

        `splits` maps the k-th ReLU of the tape to an int array over its input: +1 restricts the
        neuron to its active side (input >= 0), -1 to its inactive side (input <= 0), 0 leaves it.
        Bounds are then valid on the part of the box where those constraints hold; when a lower
        bound exceeds an upper bound that part is empty.

        `fixed` maps node ids to `(lo, hi)` bounds that hold over the domain (e.g. computed for a
        larger domain): a planned node found there is intersected with them instead of being
        tightened by a CROWN pass (with `refine_fixed`, by both: the intersection).
        """
        self._sweep = _Sweep(method, alphas, plan, splits, fixed, refine_fixed)
        forward(self.tape, self)

    # The forward domain: before a relaxed equation, its planned operands get CROWN bounds and
    # split ReLU inputs their half-lines; then its relaxation, then the interval of its output.
    def enter(self, i: int, e):
        sw = self._sweep
        relaxed = sw.method != "ibp" and e.kind in _RELAXED
        if relaxed and sw.plan is not None:
            self.refine(e, sw)
        if e.kind == Kind.UNARY and e.prim is relu_p:
            splits = sw.splits
            if splits is not None and sw.relu_k < len(splits) and splits[sw.relu_k] is not None:
                x = e.inputs[0]
                s = jnp.asarray(splits[sw.relu_k]).reshape(x.shape)
                lo, hi = self.bounds[x.id]
                lo, hi = (
                    jnp.where(s > 0, jnp.maximum(lo, 0.0), lo),
                    jnp.where(s < 0, jnp.minimum(hi, 0.0), hi),
                )
                self.bounds[x.id] = (lo, hi)
                self.empty = self.empty | jnp.any(lo > hi)
                self.split_sign[i] = jnp.sign(s).astype(jnp.int32)
            sw.relu_k += 1
        if relaxed:
            self.relax_eqn(i)

    def refine(self, e, sw):
        todo = []
        for n in e.node_inputs:
            if n.id in sw.plan and n.id not in sw.refined and all(n.id != m.id for m in todo):
                todo.append(n)
        fixed = sw.fixed
        fresh = [n for n in todo if fixed is None or n.id not in fixed]
        crown = dict(zip([n.id for n in fresh], self.nodes_bounds(fresh, sw.alphas), strict=True))
        for n in todo:
            if fixed is not None and n.id in fixed:
                lo, hi = fixed[n.id]
                lo = jnp.asarray(lo, n.dtype).reshape(n.shape)
                hi = jnp.asarray(hi, n.dtype).reshape(n.shape)
                if sw.refine_fixed:
                    clo, chi = self.node_bounds(n, sw.alphas)
                    lo, hi = jnp.maximum(lo, clo), jnp.minimum(hi, chi)
            else:
                lo, hi = crown[n.id]
            olo, ohi = self.bounds[n.id]
            self.set_bounds(n, (jnp.maximum(lo, olo), jnp.minimum(hi, ohi)))
            sw.refined.add(n.id)

    def leave(self, i: int, e, value):
        self.set_bounds(e.out, self.hinted(e, value))


@dataclasses.dataclass
class _Sweep:
    """What one `propagate` call asked for, and how far it got."""

    method: str
    alphas: dict | None
    plan: set | None
    splits: list | None
    fixed: dict | None
    refine_fixed: bool
    refined: set = dataclasses.field(default_factory=set)
    relu_k: int = 0


class _Adjoint(Backward):
    """CROWN back-substitution as the backward domain (`_drive.backward`) of a `_Pass`: the
    constant terms of the rows, and with `float_sound` the slack covering this computation's
    rounding and the program's (`_float_model`)."""

    def __init__(self, p: _Pass, H: int, dt, sym, alphas, start_key, betas, record):
        self.p, self.sym = p, sym
        self.alphas, self.key, self.betas, self.record = alphas, start_key, betas, record
        self.fs = p.opts.float_sound
        self.u = fm.unit(dt)
        self.bias = jnp.zeros((H,), dt)
        self.slack = jnp.zeros((H,), dt)
        self.absbias = jnp.zeros((H,), dt)
        self.steps = 0

    def rowdot(self, a, v):
        return _rowdot(a, v, self.p.opts.matvec)

    def enter(self, e, acc):
        self.steps += 1
        if self.sym and (e is None or e.kind != Kind.AFFINE):
            self.unhalve(acc)

    def unhalve(self, acc):
        # leave the half: every pending coefficient and sum gets its mirrored rows
        for k, v in acc.items():
            acc[k] = jnp.concatenate([v, -v])
        self.bias = jnp.concatenate([self.bias, -self.bias])
        self.absbias = jnp.concatenate([self.absbias, self.absbias])
        self.slack = jnp.concatenate([self.slack, self.slack])
        self.sym = False

    def const(self, t):
        self.bias, self.absbias = self.bias + t, self.absbias + jnp.abs(t)

    def interval(self, L, b, size, mag):
        """Concretizes `L · x` for x in the interval `b` (a node's, or an input's)."""
        lo, hi = b
        Lp, Ln = jnp.maximum(L, 0.0), jnp.minimum(L, 0.0)
        self.const(_sum_rows(_mul0(Lp, lo) + _mul0(Ln, hi)))
        if self.fs:
            self.slack = self.slack + fm.gamma(size + 1, self.u) * self.rowdot(jnp.abs(L), mag)

    def affine(self, i, e, L):
        p = self.p
        f0 = p.f0(i)
        if f0 is not None:
            self.const(self.rowdot(L, f0))
        if self.fs:
            self.slack = self.slack + self.rowdot(jnp.abs(L), p.affine_allowance(i))
        return list(zip(e.node_inputs, _transpose(e, L), strict=True))

    def unary(self, i, e, L):
        p, u = self.p, self.u
        if self.record is not None:
            self.record[i] = L
        a_l, b_l, a_u, b_u = p.relax[i]
        if self.alphas is not None and (self.key, i) in self.alphas and e.rule.alpha:
            a_l = jnp.clip(self.alphas[(self.key, i)], 0.0, 1.0)
        Lp, Ln = jnp.maximum(L, 0.0), jnp.minimum(L, 0.0)
        hull = self.alphas is not None and (self.key, i, "hull") in self.alphas
        if hull:
            return self.hull(i, e, Lp * a_l, Ln)
        g = Lp * a_l + Ln * a_u
        if self.betas is not None and (self.key, i) in self.betas and i in p.split_sign:
            sgn = p.split_sign[i].astype(g.dtype)
            g = g - jnp.maximum(self.betas[(self.key, i)], 0.0) * sgn
        if e.rule.exact:  # relu, abs: lower intercept b_l == 0
            tb = _mul0(Ln, b_u)
            tabs = jnp.abs(tb)
        else:
            tl, tu = _mul0(Lp, b_l), _mul0(Ln, b_u)
            tb, tabs = tl + tu, jnp.abs(tl) + jnp.abs(tu)
        self.const(_sum_rows(tb))
        x = e.inputs[0]
        if self.fs:
            self.slack = (
                self.slack
                + 2 * u * self.rowdot(jnp.abs(g), p.abs_max(x))
                + fm.gamma(x.size + 1, u) * _sum_rows(tabs)
            )
        return [(x, g)]

    def hull(self, i, e, g, Ln):
        """A relu's lower line `g` (coefficients on its input z) and, for the negative
        coefficients `Ln`, the input-space hull planes (see `HullForm`) on the box node v."""
        p, u = self.p, self.u
        hf, w_e, (elo, ehi), bias, to_v, delta, labs, flush, n_acc = p.hull_data(i)
        T = jnp.clip(self.alphas[(self.key, i, "hull")], 0.0, 1.0)
        c0 = _hull_intercept(T, elo, ehi, bias, flush, self.fs)
        tb = _mul0(Ln, c0)
        self.const(_sum_rows(tb))
        gv = to_v(Ln[..., None] * T * w_e)
        x = e.inputs[0]
        if self.fs:
            # the lower line's product; the program's rounding of z (relu(z + d) <= relu(z) + |d|);
            # the terms' products and sums into gv; the intercepts' products
            self.slack = (
                self.slack
                + 2 * u * self.rowdot(jnp.abs(g), p.abs_max(x))
                + self.rowdot(-Ln, delta)
                + fm.gamma(n_acc + 4, u) * self.rowdot(-Ln, labs)
                + fm.gamma(x.size + 1, u) * _sum_rows(jnp.abs(tb))
            )
        return [(x, g), (hf.v, gv)]

    def mul(self, i, e, L):
        p, u = self.p, self.u
        A_l, A_u, B_l, B_u = p.relax[i]
        (axl, ayl, cl), (axu, ayu, cu) = A_l, A_u
        Lp, Ln = jnp.maximum(L, 0.0), jnp.minimum(L, 0.0)
        S = L.shape[0]
        x, y = e.node_inputs
        mixed = self.alphas is not None and (self.key, i) in self.alphas
        if mixed:
            # alpha-McCormick: per row and element, lower = a A_l + (1 - a) B_l, upper likewise
            # with b; any a, b in [0, 1] is valid (convex combinations of valid planes)
            ab = jnp.clip(self.alphas[(self.key, i)], 0.0, 1.0)
            a, b = ab[:, 0], ab[:, 1]
            axl, ayl, cl = (_mix(a, va, vb) for va, vb in zip(A_l, B_l, strict=True))
            axu, ayu, cu = (_mix(b, va, vb) for va, vb in zip(A_u, B_u, strict=True))
        gx = _unbroadcast(Lp * axl + Ln * axu, (S, *x.shape))
        gy = _unbroadcast(Lp * ayl + Ln * ayu, (S, *y.shape))
        t = _sum_rows(_mul0(Lp, cl) + _mul0(Ln, cu))
        self.const(t)
        if self.fs:
            self.slack = (
                self.slack
                + 4
                * u
                * (self.rowdot(jnp.abs(gx), p.abs_max(x)) + self.rowdot(jnp.abs(gy), p.abs_max(y)))
                + fm.gamma(e.out.size + 1, u) * jnp.abs(t)
            )
            if mixed:
                # the mixtures' own rounding (three operations on each coefficient): the plane
                # applied differs from the exact mixture by at most 4u times both planes' terms
                def both(k):
                    lo = jnp.abs(A_l[k]) + jnp.abs(B_l[k])
                    return _mul0(jnp.abs(Lp), lo) + _mul0(
                        jnp.abs(Ln), jnp.abs(A_u[k]) + jnp.abs(B_u[k])
                    )

                shape = e.out.shape
                mx = jnp.broadcast_to(p.abs_max(x), shape)
                my = jnp.broadcast_to(p.abs_max(y), shape)
                self.slack = self.slack + 4 * u * (
                    self.rowdot(both(0), mx) + self.rowdot(both(1), my) + _sum_rows(both(2))
                )
        return [(x, gx), (y, gy)]

    def select(self, i, e, L):
        # exact where the box decides the predicate (the chosen case gets the coefficients),
        # the output's interval elsewhere
        m0, m1 = self.p.relax[i]
        out = []
        for c, m in zip(e.inputs[2:], (m0, m1), strict=True):
            g = L * m
            if isinstance(c, Node):
                out.append((c, g))
            else:
                self.const(_sum_rows(_mul0(g, c)))
        self.node_interval(e, L * (1.0 - m0 - m1), L)
        return out

    def concretize(self, i, e, L):
        # a free value in the node's own interval
        self.node_interval(e, L, L)
        return []

    def node_interval(self, e, Lc, L):
        lo, hi = self.p.bounds[e.out.id]
        Lp, Ln = jnp.maximum(Lc, 0.0), jnp.minimum(Lc, 0.0)
        self.const(_sum_rows(_mul0(Lp, lo) + _mul0(Ln, hi)))
        if self.fs:
            self.slack = self.slack + fm.gamma(e.out.size + 1, self.u) * self.rowdot(
                jnp.abs(L), self.p.abs_max(e.out)
            )

    def input(self, n, L):
        if self.record is not None:
            self.record[("input", n.id)] = L
        self.interval(L, self.p.bounds[n.id], n.size, self.p.abs_max(n) if self.fs else None)

    def lower(self):
        if self.sym:
            self.unhalve({})
        if not self.fs:
            return jnp.where(jnp.isnan(self.bias), -jnp.inf, self.bias)
        u, steps = self.u, self.steps
        slack = self.slack + fm.gamma(steps + 1, u) * self.absbias
        out = fm.down(self.bias - fm.inflate(slack, 4.0 * steps + 16.0))
        return _shared(jnp.where(jnp.isnan(out), -jnp.inf, out))


def _optax():
    # imported by the first alpha-CROWN call, not by `import tljax` (about 0.4 s)
    import optax

    return optax


def _unbroadcast(g, shape):
    if g.shape == tuple(shape):
        return g
    # McCormick was applied on the broadcast shape: sum back over broadcast axes.
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(1, 1 + extra)))
    axes = tuple(k for k, (a, b) in enumerate(zip(g.shape, shape, strict=True)) if a != b)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _output_lam(out: Node, spec):
    size = out.size
    if spec is None:
        c = jnp.eye(size, dtype=out.dtype)
    else:
        c = jnp.asarray(spec, dtype=out.dtype).reshape(-1, size)
    lam = jnp.concatenate([c, -c]).reshape(2 * c.shape[0], *out.shape)
    return lam, c.shape[0]


def run_method(
    tape: Tape,
    in_bounds: dict,
    opts: Options,
    method: str,
    spec=None,
    *,
    alpha_iters=20,
    alpha_lr=0.1,
    splits=None,
):
    """Bounds of every tape output (or of `spec @ output` for a single output).

    `method` is "ibp", "crown", "alpha-crown" or "crown-ibp" (Zhang et al. 2020: interval bounds
    for every intermediate node, then one CROWN backward pass from each output that relaxes every
    nonlinearity over those intervals; the result is intersected with the output's interval).

    Returns (list of (lower, upper) per output, the `_Pass` with all intermediate state).
    """
    plan = refine_plan(tape, opts.refine_limit) if method not in ("ibp", "crown-ibp") else set()
    if method == "alpha-crown":
        return _alpha_crown(tape, in_bounds, opts, spec, plan, alpha_iters, alpha_lr, splits)
    p = _Pass(tape, in_bounds, opts)
    # crown-ibp: "crown" relaxes every nonlinearity; the empty plan refines no intermediate node
    p.propagate("crown" if method == "crown-ibp" else method, plan=plan, splits=splits)
    return _mark_empty(_finish(p, method, spec), p.empty), p


def _mark_empty(outs, empty):
    # Over an empty set every bound holds: report the empty interval [+inf, -inf].
    return [(jnp.where(empty, jnp.inf, lo), jnp.where(empty, -jnp.inf, hi)) for lo, hi in outs]


def _out_key(k: int):
    # alpha key of the k-th output's backward pass ("out" for the first, as certificates record)
    return "out" if k == 0 else ("out", k)


def _finish(p: _Pass, method, spec, alphas=None):
    outs = []
    limit = p.opts.refine_limit
    cost = refine_cost(p.tape) if limit is not None and spec is None else None
    settled = _settled(p) if spec is None and alphas is None and method == "crown" else set()
    for k, o in enumerate(p.tape.outputs):
        if not isinstance(o, Node):
            v = jnp.asarray(o)
            if spec is not None:
                v = jnp.asarray(spec, v.dtype).reshape(-1, v.size) @ v.reshape(-1)
            outs.append((v, v))
            continue
        if method == "ibp" or method == "affine" or not jnp.issubdtype(o.dtype, jnp.floating):
            # integer outputs (argmax) are bounded by their interval
            outs.append(_interval_out(p, o, spec))
            continue
        if o.id in settled or (cost is not None and cost[o.id] > limit):
            # the sweep's bounds: what a pass from `o` would give, or over `refine_limit` (kept
            # at its interval, as an intermediate node would be)
            outs.append(p.bounds[o.id])
            continue
        lam, m = _output_lam(o, spec)
        if p.opts.lower_only and alphas is None:
            # the lower rows only; the upper bound is the output's interval
            lo = p.backward(o, lam[:m], None, start_key=_out_key(k))
            hi = None
        else:
            low = p.backward(o, lam, alphas, start_key=_out_key(k), sym=True)
            lo, hi = low[:m], -low[m:]
        if spec is None:
            ilo, ihi = p.bounds[o.id]
            lo = jnp.maximum(lo.reshape(o.shape), ilo)
            hi = ihi if hi is None else jnp.minimum(hi.reshape(o.shape), ihi)
        elif method == "crown-ibp" or hi is None:
            # never looser than IBP, with a spec too
            ilo, ihi = _interval_out(p, o, spec)
            lo = jnp.maximum(lo, ilo)
            hi = ihi if hi is None else jnp.minimum(hi, ihi)
        outs.append((lo, hi))
    return outs


def _settled(p: _Pass) -> set[int]:
    """Ids of nodes whose bounds are already what a CROWN pass from them would give: operands of
    relaxed equations, which the sweep either refined by that same pass or kept as an exact
    interval or over `refine_limit` (a search asking for the ReLU inputs of a wide CNN must not
    pay for every one of them twice)."""
    sw = getattr(p, "_sweep", None)
    if sw is None or sw.plan is None:
        return set()
    operands = {n.id for e in p.tape.eqns if e.kind in _RELAXED for n in e.node_inputs}
    return set(sw.refined) | (operands - sw.plan)


def _interval_out(p: _Pass, o: Node, spec):
    """Output node `o`'s interval bounds, or those of `spec @ o` (outward if float-sound)."""
    lo, hi = p.bounds[o.id]
    if spec is None:
        return lo, hi
    c = jnp.asarray(spec, lo.dtype).reshape(-1, o.size)
    cp, cn = jnp.maximum(c, 0), jnp.minimum(c, 0)
    l1 = cp @ lo.reshape(-1) + cn @ hi.reshape(-1)
    h1 = cp @ hi.reshape(-1) + cn @ lo.reshape(-1)
    if p.opts.float_sound:
        u = fm.unit(lo.dtype)
        s = fm.inflate(
            fm.gamma(o.size + 1, u) * (jnp.abs(c) @ node_abs_max((lo, hi)).reshape(-1)),
            8.0,
        )
        l1, h1 = fm.down(l1 - s), fm.up(h1 + s)
    return l1, h1


def _alpha_crown(tape, in_bounds, opts, spec, plan, iters, lr, splits=None, record=None, hull=True):
    """alpha-CROWN: the best of CROWN and every iterate. `record` (a dict), if given, receives the
    final slopes as `record["alphas"]` (keys `(start, eqn)`; unset without slopes to optimise).
    `hull`: the output passes also optimise the input-space hull planes of first-layer ReLUs
    (`HullForm`, where `Options.input_hull` says; not with `splits`: a batch of split domains
    would carry rows x neurons x terms parameters per domain, 162 GB for 256 domains of the
    verivital CNN)."""
    base = _Pass(tape, in_bounds, opts)
    base.propagate("crown", plan=plan, splits=splits)
    best = _finish(base, "crown", spec)
    # `iters` and `lr` may be traced (`bound` passes them as arguments: no recompilation when
    # they change); a concrete 0 is plain CROWN
    no_steps = isinstance(iters, int | np.integer) and iters <= 0
    relus = relu_eqns(tape)
    muls = [i for i, e in enumerate(tape.eqns) if e.kind == Kind.MUL]
    if not (relus or muls) or no_steps:
        return _mark_empty(best, base.empty), base
    starts = [(n, n.id, 2 * n.size) for n in tape.nodes if n.id in plan]
    outs = [
        (o, _out_key(k), 2 * (o.size if spec is None else np.asarray(spec).size // o.size))
        for k, o in enumerate(tape.outputs)
        if isinstance(o, Node)
    ]
    alphas, planes = {}, {}
    for node, key, S in starts + outs:
        for i in relus:
            if i < node.eqn_index:
                a_l = base.relax[i][0]
                alphas[(key, i)] = jnp.broadcast_to(a_l, (S, *a_l.shape))
    for node, key, S in outs:
        # McCormick weights on the output passes only (per intermediate start they would
        # multiply the parameters by the number of starts, e.g. ~150 on a PINN residual); they
        # start at CROWN's planes (weight 1 on A)
        for i in muls:
            if i < node.eqn_index:
                alphas[(key, i)] = jnp.ones((S, 2, *tape.eqns[i].out.shape), node.dtype)
        for i in relus if hull and splits is None and opts.input_hull is not False else ():
            hf = hull_form(tape, i)
            dense = hf is not None and tape.eqns[hf.w_eqn].prim is lax.dot_general_p
            if dense and opts.input_hull is not True:
                continue
            if hf is not None and i < node.eqn_index:
                # from CROWN's upper line: the slope on every term
                a_u = base.relax[i][2]
                shape = (S, *a_u.shape, hf.fan_in)
                if np.prod(shape) <= HULL_MAX_PARAMS:
                    planes[(key, i, "hull")] = jnp.broadcast_to(a_u[..., None], shape)
    optax = _optax()

    def optimise(keys, params, flat_best):
        def evaluate(params):
            a = dict(zip(keys, params, strict=True))
            p = _Pass(tape, in_bounds, opts)
            p.propagate("crown", alphas=a, plan=plan, splits=splits)
            res = _finish(p, "crown", spec, alphas=a)
            loss = sum(jnp.sum(hi - lo) for lo, hi in res if lo.size)
            return loss, res

        opt = optax.adam(lr)
        rates = [HULL_LR_SCALE if k[-1] == "hull" else 1.0 for k in keys]

        def body(_, carry):
            params, state, cur = carry
            (_, res), grads = jax.value_and_grad(evaluate, has_aux=True)(params)
            # an infinite bound somewhere (0 * inf in its gradient) must not turn slopes into
            # NaN: any slope in [0, 1] is sound, a NaN one would give its rows -inf bounds
            grads = [jnp.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in grads]
            new_best = [
                (jnp.maximum(b[0], r[0]), jnp.minimum(b[1], r[1]))
                for b, r in zip(cur, res, strict=True)
            ]
            updates, state = opt.update(grads, state, params)
            updates = [u * r if r != 1.0 else u for u, r in zip(updates, rates, strict=True)]
            params = [jnp.clip(v, 0.0, 1.0) for v in optax.apply_updates(params, updates)]
            return params, state, new_best

        # a scan for a concrete count, a while loop for a traced one
        carry = (params, opt.init(params), flat_best)
        params, _, flat_best = lax.fori_loop(0, iters, body, carry)
        # The final parameters are evaluated too (the loop evaluates before each update).
        _, res = evaluate(params)
        flat_best = [
            (jnp.maximum(b[0], r[0]), jnp.minimum(b[1], r[1]))
            for b, r in zip(flat_best, res, strict=True)
        ]
        return params, flat_best

    keys = list(alphas)
    params, flat_best = optimise(keys, [alphas[k] for k in keys], [(lo, hi) for lo, hi in best])
    if planes:
        # Then the hull planes from CROWN's lines, with the slopes where they ended: optimised
        # jointly from the start, the planes' nonsmooth intercepts (the larger of two, nearly
        # equal at the optimum) slowed the slopes (ACAS Xu rows below auto_LiRPA's alpha-CROWN)
        keys = keys + list(planes)
        params, flat_best = optimise(keys, params + list(planes.values()), flat_best)
    if record is not None:
        record["alphas"] = dict(zip(keys, params, strict=True))
    return _mark_empty(flat_best, base.empty), base


def root_relu_bounds(
    tape: Tape, in_bounds: dict, opts: Options, *, iters: int, lr: float, with_alphas: bool = False
):
    """Bounds of every ReLU input over the box, for branch and bound to reuse in every domain.

    CROWN, then alpha-CROWN on the intermediate bounds themselves: each node's own slopes are
    optimised to shrink the summed width of the neurons that CROWN left unstable (those are the
    ones whose relaxations the domains use). Every iterate's bounds hold, so the elementwise best
    is returned. Returns a list over `relu_eqns(tape)` of `(lo, hi)` over each ReLU's input.

    with_alphas: also return, per `(node id, eqn)`, the slopes (2 size, *shape) of the iterate
    that gave each row (lower bounds, then upper bounds of the node) its best bound: a certificate
    re-derives each row from them (exactly the best bounds when the earlier nodes' bounds are the
    same in every iterate, as in a network with one alpha-optimised layer).
    """
    plan = refine_plan(tape, opts.refine_limit)
    relus = relu_eqns(tape)
    xs = [tape.eqns[i].node_inputs[0] for i in relus]
    base = _Pass(tape, in_bounds, opts)
    base.propagate("crown", plan=plan)
    best = [base.bounds[x.id] for x in xs]
    starts = [n for n in tape.nodes if n.id in plan and n.eqn_index is not None]
    alphas = {}
    for n in starts:
        for i in relus:
            if i < n.eqn_index:
                a_l = base.relax[i][0]
                alphas[(n.id, i)] = jnp.broadcast_to(a_l, (2 * n.size, *a_l.shape))
    if iters <= 0 or not alphas:
        return (best, alphas) if with_alphas else best
    keys = list(alphas)
    masks = [(lo < 0) & (hi > 0) for lo, hi in best]

    def evaluate(params):
        a = dict(zip(keys, params, strict=True))
        p = _Pass(tape, in_bounds, opts)
        p.propagate("crown", alphas=a, plan=plan)
        b = [p.bounds[x.id] for x in xs]
        loss = sum(
            jnp.sum(jnp.where(m & jnp.isfinite(hi - lo), hi - lo, 0.0))
            for m, (lo, hi) in zip(masks, b, strict=True)
        )
        return loss, b

    optax = _optax()
    opt = optax.adam(lr)

    pos = {x.id: k for k, x in enumerate(xs)}

    def keep_rows(kept, cur, b, params):
        # per start node and row (lower rows, then upper rows): the slopes of the best iterate
        if not with_alphas:
            return kept
        out = []
        for key, old, new in zip(keys, kept, params, strict=True):
            k = pos.get(key[0])
            if k is None:  # a start that is not a ReLU input: its last slopes
                out.append(new)
                continue
            better = jnp.concatenate(
                [(b[k][0] > cur[k][0]).reshape(-1), (b[k][1] < cur[k][1]).reshape(-1)]
            )
            out.append(jnp.where(better.reshape(-1, *([1] * (new.ndim - 1))), new, old))
        return out

    def step(carry, _):
        params, state, cur, kept = carry
        (_, b), grads = jax.value_and_grad(evaluate, has_aux=True)(params)
        kept = keep_rows(kept, cur, b, params)
        cur = [
            (jnp.maximum(c[0], r[0]), jnp.minimum(c[1], r[1])) for c, r in zip(cur, b, strict=True)
        ]
        updates, state = opt.update(grads, state, params)
        params = [jnp.clip(v, 0.0, 1.0) for v in optax.apply_updates(params, updates)]
        return (params, state, cur, kept), None

    params = [alphas[k] for k in keys]
    kept = list(params) if with_alphas else []
    carry = (params, opt.init(params), best, kept)
    (params, _, best, kept), _ = lax.scan(step, carry, None, length=iters)
    _, b = evaluate(params)
    kept = keep_rows(kept, best, b, params)
    best = [
        (jnp.maximum(c[0], r[0]), jnp.minimum(c[1], r[1])) for c, r in zip(best, b, strict=True)
    ]
    return (best, dict(zip(keys, kept, strict=True))) if with_alphas else best


# beta-CROWN parameters are kept exactly representable in float16 (alpha in [0, 1], beta in
# [0, BETA_MAX]): a search stores them compactly and a leaf's bound is reproduced exactly from them.
BETA_MAX = 6.0e4


def _f16_exact(x):
    return lax.reduce_precision(x, exponent_bits=5, mantissa_bits=10)


def split_bound(
    tape: Tape,
    in_bounds: dict,
    opts: Options,
    lam,
    *,
    relu_bounds,
    splits,
    alpha,
    beta,
    iters,
    lr: float = 0.1,
    use_beta: bool = True,
    refine: bool = False,
    state: dict | None = None,
):
    """beta-CROWN lower bounds of the rows of `lam · output` over one branch-and-bound domain.

    The domain is the part of the box where the ReLU split constraints `splits` (one int array
    per ReLU of `relu_eqns(tape)`, +1 / -1 / 0 as in `_Pass.propagate`) hold. ReLU input bounds
    are not recomputed: `relu_bounds` (per ReLU `(lo, hi)`, valid over the domain, e.g. from
    `root_relu_bounds` of an enclosing box) are intersected with the interval bounds, then clipped
    by the splits. The output bound is optimised over the lower slopes `alpha` (per ReLU, shape
    `(R, *x.shape)`, in [0, 1]; NaN entries start from CROWN's choice) and the split multipliers
    `beta` (same shapes, >= 0; see `_Pass.backward`) with Adam for `iters` steps (a traced int
    is fine: one compiled program for every count). `use_beta=False` keeps `beta` at zero
    (alpha-CROWN with the splits clipping the ReLU inputs only). `refine=True` also recomputes
    CROWN bounds of the ReLU inputs under the splits and intersects them (a full CROWN pass per
    domain: on mnist_fc prop_6 it saved a third of the domains but doubled their cost).

    Every row is sound for every parameter value, and rows are independent, so per row the best
    iterate is kept together with the parameters that reached it. The returned bounds are those
    parameters evaluated once more, so `split_bound(..., alpha=a, beta=b, iters=0)` reproduces
    them exactly from the returned `(a, b)`.

    Returns:
      `(lower (R,), alpha, beta, relu_bounds_used, scores, corners)`; `lower` is +inf when the
      splits leave no point of the box, `relu_bounds_used` are the intersected, split-clipped ReLU
      input bounds, `scores` per ReLU (R, *shape) BaBSR-style branching scores (see the code) and
      `corners` (R, *input shape) per row the input-box corner minimising its linear bound.
      `state` (a dict), if given, receives the domain's `_Pass` (`"pass"`) and the slopes and
      multipliers of the returned bounds as `_Pass.backward` takes them (`"alphas"`, `"betas"`:
      keys `("out", eqn)`), for a certificate.
    """
    plan = refine_plan(tape, opts.refine_limit)
    relus = relu_eqns(tape)
    xs = [tape.eqns[i].node_inputs[0] for i in relus]
    out = tape.outputs[0]
    fixed = {x.id: b for x, b in zip(xs, relu_bounds, strict=True)}
    p = _Pass(tape, in_bounds, opts)
    p.propagate("crown", plan=plan, splits=splits, fixed=fixed, refine_fixed=refine)
    used = [p.bounds[x.id] for x in xs]
    exact = []
    for lo, hi in used:
        pos, neg = lo >= 0, hi <= 0
        exact.append((pos | neg, jnp.where(pos, 1.0, 0.0).astype(lo.dtype)))
    defaults = [p.relax[i][0] for i in relus]
    alpha = [
        _f16_exact(jnp.clip(jnp.where(jnp.isnan(a), jnp.broadcast_to(d, a.shape), a), 0.0, 1.0))
        for a, d in zip(alpha, defaults, strict=True)
    ]
    beta = [_f16_exact(jnp.clip(jnp.nan_to_num(b), 0.0, BETA_MAX)) for b in beta]
    if not use_beta:
        beta = [jnp.zeros_like(b) for b in beta]
    key = "out"

    def lower(params, record=None, sound=True):
        a, b = params
        # a stable neuron's exact slope beats any alpha (both are sound)
        a = [jnp.where(st, ex, v) for v, (st, ex) in zip(a, exact, strict=True)]
        al = {(key, i): v for i, v in zip(relus, a, strict=True)}
        be = {(key, i): v for i, v in zip(relus, b, strict=True)}
        return p.backward(out, lam, al, start_key=key, betas=be, record=record, float_sound=sound)

    def keep(best, lb, params):
        blb, (ba, bb) = best
        better = lb > blb

        def pick(new, old):
            return jnp.where(better.reshape(-1, *([1] * (new.ndim - 1))), new, old)

        return jnp.maximum(blb, lb), (
            [pick(n, o) for n, o in zip(params[0], ba, strict=True)],
            [pick(n, o) for n, o in zip(params[1], bb, strict=True)],
        )

    params = (alpha, beta)
    # first evaluation outside the loop: caches the pass's per-equation allowances at this level
    best = (lower(params), params)
    optax = _optax()
    opt = optax.adam(lr)

    def objective(params):
        # the steps only choose parameters: without the rounding slack (a third of a float-sound
        # pass); the returned bounds are the chosen parameters evaluated soundly
        lb = lower(params, sound=False)
        return -jnp.sum(jnp.where(jnp.isfinite(lb), lb, 0.0)), lb

    def body(_, carry):
        params, state, best = carry
        (_, lb), grads = jax.value_and_grad(objective, has_aux=True)(params)
        best = keep(best, lb, params)
        updates, state = opt.update(grads, state, params)
        a, b = optax.apply_updates(params, updates)
        params = (
            [_f16_exact(jnp.clip(v, 0.0, 1.0)) for v in a],
            [_f16_exact(jnp.clip(v, 0.0, BETA_MAX)) for v in b] if use_beta else params[1],
        )
        return params, state, best

    params, _, best = lax.fori_loop(0, iters, body, (params, opt.init(params), best))
    best = keep(best, lower(params, sound=False), params)
    a, b = best[1]
    rec: dict = {}
    lb = lower((a, b), rec)
    if state is not None:
        state["pass"] = p
        state["alphas"] = {
            (key, i): jnp.where(st, ex, v) for i, v, (st, ex) in zip(relus, a, exact, strict=True)
        }
        state["betas"] = {(key, i): v for i, v in zip(relus, b, strict=True)}
    lb = jnp.where(p.empty, jnp.inf, lb)
    # BaBSR-style branching scores at the final parameters: per row and unstable neuron, what the
    # upper relaxation's intercept costs the row's bound (-min(L, 0) * intercept, L the row's
    # coefficient on the ReLU output); splitting the neuron removes that term.
    scores = []
    for i, (lo, _) in zip(relus, used, strict=True):
        L = rec.get(i)
        cut = p.relax[i][3]  # b_u: 0 for stable neurons
        if L is None:
            scores.append(jnp.zeros((lam.shape[0], *lo.shape), lo.dtype))
        else:
            scores.append(jnp.maximum(-L, 0.0) * cut)
    # per row, the corner of the input box where the row's final linear bound is lowest: where
    # the bound is nearly tight, a candidate counterexample
    x_in = tape.inputs[0]
    L = rec.get(("input", x_in.id))
    ilo, ihi = in_bounds[x_in.id]
    if L is None:
        corners = jnp.broadcast_to(0.5 * (ilo + ihi), (lam.shape[0], *ilo.shape))
    else:
        corners = jnp.where(L > 0, ilo, jnp.where(L < 0, ihi, 0.5 * (ilo + ihi)))
    return lb, a, b, used, scores, corners


__all__ = [
    "refine_cost",
    "refine_plan",
    "relu_eqns",
    "root_relu_bounds",
    "run_method",
    "split_bound",
]
