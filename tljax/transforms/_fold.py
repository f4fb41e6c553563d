"""Folding per-feature affine chains (bias, batch norm, `x * scale + shift`) into the weights and
bias of the preceding `dot_general` / `conv_general_dilated` with constant weights.

While the walker evaluates the graph, a linear equation with a constant weight operand returns a
pending value `_Lin` ("this linear map of x, then times `scale`, plus `shift`, per output
feature") instead of emitting itself. Elementwise `add/sub/mul/div/neg` of a pending value and a
constant that is constant along every axis but the feature axis update `scale`/`shift` (in
float64). Any other use materialises the pending value once: ``dot(x, W * scale) + shift``, with
the new weight and bias rounded once to the weight's dtype. Constant subexpressions (the
`rsqrt(var + eps)` of a batch norm, broadcasts of parameter vectors) are folded on the way, so the
pattern is found however the norm was written (`(y - m) * rsqrt(v + e) * g + b`,
`(y - m) / sqrt(v + e) * g + b`, eqx.nn.BatchNorm, ONNX Gemm bias, ...).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jax import lax

from ..core import HIGHER_ORDER, Graph, compat
from ._build import (
    at,
    bind_rule,
    emit,
    is_traced,
    pass_semantics,
    rewrite,
    single,
)
from ._passes import ROUNDING_TOLERANCE, _check_graph, fold_constant
from ._promises import Promise

compat.register_exclusion(__file__)


class _Lin:
    """Pending ``linear(x, W) * scale + shift`` with scale/shift per output feature (float64)."""

    __slots__ = (
        "_out",
        "axis",
        "ctx",
        "dtype",
        "ops",
        "scale",
        "shape",
        "shift",
        "w",
        "w_axis",
        "w_index",
        "x",
    )

    def __init__(self, ctx, x, w, w_index, w_axis, axis, scale=None, shift=None, ops=0):
        self.ctx = ctx  # the linear equation's context (primitive, params, location)
        self.x, self.w, self.w_index, self.w_axis, self.axis = x, w, w_index, w_axis, axis
        aval = ctx.out_avals[0]
        self.shape, self.dtype = tuple(aval.shape), np.dtype(aval.dtype)
        self.scale, self.shift = scale, shift
        self.ops = ops  # folded equations that changed the shift
        self._out = None

    @property
    def n(self) -> int:
        return self.shape[self.axis]

    def updated(self, scale, shift) -> _Lin:
        shifted = shift is not None and (
            self.shift is None or not np.array_equal(shift, self.shift)
        )
        return _Lin(
            self.ctx,
            self.x,
            self.w,
            self.w_index,
            self.w_axis,
            self.axis,
            scale,
            shift,
            self.ops + shifted,
        )

    @property
    def exact(self) -> bool:
        """Whether materialising changes no real value: scaling by signs only, at most one shift."""
        signs = self.scale is None or bool(np.all(np.abs(self.scale) == 1.0))
        return signs and self.ops <= 1


def _linear_of(ctx, invals, stats):
    """A `_Lin` for a dot_general/conv with one constant weight operand, else None."""
    if len(invals) != 2 or ctx.eqn.effects:
        return None
    lhs, rhs = invals
    if is_traced(lhs) == is_traced(rhs) or isinstance(lhs, _Lin) or isinstance(rhs, _Lin):
        return None
    out_aval = ctx.out_avals[0]
    if not np.issubdtype(np.dtype(out_aval.dtype), np.floating):
        return None
    w_index = 1 if is_traced(lhs) else 0
    w = np.asarray(invals[w_index])
    x = invals[1 - w_index]
    if not np.issubdtype(w.dtype, np.floating) or w.dtype.itemsize < 4:
        return None  # the rounding budget is stated for float32 (and wider) weights
    p = ctx.eqn.params
    if ctx.primitive is lax.dot_general_p:
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        wc, wb = (rc, rb) if w_index == 1 else (lc, lb)
        if wb:
            return None
        free = [a for a in range(w.ndim) if a not in wc]
        if len(free) != 1:
            return None
        xc, xb = (lc, lb) if w_index == 1 else (rc, rb)
        n_x_free = len(x.shape) - len(xc) - len(xb)
        axis = n_x_free if w_index == 1 else 0  # out dims: (batch, lhs free, rhs free)
        return _Lin(ctx, x, w, w_index, free[0], axis)
    if ctx.primitive is lax.conv_general_dilated_p and w_index == 1:
        if int(p.get("batch_group_count", 1)) != 1:
            return None
        dn = p["dimension_numbers"]
        return _Lin(ctx, x, w, 1, int(dn.rhs_spec[0]), int(dn.out_spec[1]))
    return None


def _per_feature(c, lin: _Lin, out_shape):
    """The constant `c` as a float64 vector over the feature axis, or None if it varies
    elsewhere."""
    if is_traced(c) or isinstance(c, _Lin) or tuple(out_shape) != lin.shape:
        return None
    c = np.asarray(c)
    if not np.issubdtype(c.dtype, np.floating) and not np.issubdtype(c.dtype, np.integer):
        return None
    try:
        if np.broadcast_shapes(c.shape, lin.shape) != lin.shape:
            return None
    except ValueError:
        return None
    full = np.broadcast_to(c, lin.shape).astype(np.float64)
    idx = tuple(slice(None) if a == lin.axis else 0 for a in range(len(lin.shape)))
    vec = full[idx]
    shape = [1] * len(lin.shape)
    shape[lin.axis] = lin.n
    if not np.array_equal(full, np.broadcast_to(vec.reshape(shape), lin.shape)):
        return None
    return vec


def _materialise(lin: _Lin, stats):
    if lin._out is not None:
        return lin._out
    ctx = lin.ctx
    w = lin.w
    if not lin.exact:
        stats["rounded"] += 1
    if lin.scale is not None:
        shape = [1] * w.ndim
        shape[lin.w_axis] = lin.n
        w = (w.astype(np.float64) * lin.scale.reshape(shape)).astype(lin.w.dtype)
        stats["folded_scales"] += 1
    ops = [lin.x, w] if lin.w_index == 1 else [w, lin.x]
    y = emit(ctx, ops)[0]
    if lin.shift is not None:
        b = lin.shift.astype(lin.dtype)
        with at(ctx.eqn):
            y = lax.add(y, lax.broadcast_in_dim(b, lin.shape, (lin.axis,)))
    lin._out = y
    return y


def fold_affine(graph: Graph) -> Graph:
    """Folds per-feature affine chains after constant-weight linear layers into weights and bias.

    Handles `dot_general` whose constant operand has one free axis (dense layers, either operand
    order) and `conv_general_dilated` with a constant kernel (any feature grouping), followed by
    any chain of `add`, `sub`, `mul`, `div` by constants that vary only along the output-feature
    axis, and `neg`: biases, batch norm in inference mode, `x * scale + shift`. Constant
    subexpressions are folded along the way (like `constant_fold`). A pre-activation used by
    several consumers is materialised once per distinct chain. Inside `scan`/`while`/`cond`
    bodies nothing is folded (the bodies are re-emitted as they are).

    Promise: exact and bitwise when no value was rounded (only biases moved, constants folded
    exactly, as for ACAS Xu's Gemm biases). Otherwise a rounding-level tolerance
    (`ROUNDING_TOLERANCE`): the new weights and bias are the original chain's real values
    rounded once to float32, and a folded transcendental constant (`rsqrt(var + eps)`) is its
    float32 value; float results are then bitwise equal only if no weight was rescaled.

    Example:
      >>> folded = tljax.transforms.fold_affine(tljax.trace(cnn_with_batchnorm, x))
      >>> tljax.transforms.validate(g, folded, tljax.Box.linf(x, 0.01))
    """
    _check_graph(graph, "fold_affine")
    stats = {
        "linear": 0,
        "folded_ops": 0,
        "folded_scales": 0,
        "rounded": 0,
        "folded": 0,
        "inexact": [],
    }

    def finish(v):
        return _materialise(v, stats) if isinstance(v, _Lin) else v

    def default(ctx, *invals, **params):
        invals = [finish(v) for v in invals]
        outs = fold_constant(ctx, invals, stats)
        return bind_rule(ctx, *invals) if outs is None else single(ctx, outs)

    def linear(ctx, *invals, **params):
        lin = _linear_of(ctx, invals, stats)
        if lin is None:
            return default(ctx, *invals)
        stats["linear"] += 1
        return lin

    def elementwise(kind):
        def rule(ctx, *invals, **params):
            lins = [k for k, v in enumerate(invals) if isinstance(v, _Lin)]
            out_shape = ctx.out_avals[0].shape
            if len(lins) == 1 and np.dtype(ctx.out_avals[0].dtype) == invals[lins[0]].dtype:
                k = lins[0]
                lin = invals[k]
                one = np.ones(lin.n)
                sc = lin.scale if lin.scale is not None else one
                sh = lin.shift if lin.shift is not None else np.zeros(lin.n)
                keep = lin.shift is not None  # a scaling keeps "no shift" as no shift
                if kind == "neg":
                    stats["folded_ops"] += 1
                    return lin.updated(-sc, -sh if keep else None)
                c = _per_feature(invals[1 - k], lin, out_shape)
                if c is not None:
                    new = None
                    if kind == "add":
                        new = (lin.scale, sh + c)
                    elif kind == "sub":
                        new = (lin.scale, sh - c) if k == 0 else (-sc, c - sh)
                    elif kind == "mul":
                        new = (sc * c, sh * c if keep else None)
                    elif kind == "div" and k == 0 and np.all(c != 0):
                        new = (sc / c, sh / c if keep else None)
                    if new is not None:
                        stats["folded_ops"] += 1
                        return lin.updated(*new)
            return default(ctx, *invals)

        return rule

    rules = {
        lax.dot_general_p: linear,
        lax.conv_general_dilated_p: linear,
        lax.add_p: elementwise("add"),
        compat.add_any_p: elementwise("add"),
        lax.sub_p: elementwise("sub"),
        lax.mul_p: elementwise("mul"),
        lax.div_p: elementwise("div"),
        lax.neg_p: elementwise("neg"),
    }
    # Loop and cond bodies are walked by the walker's own rules under a plain pass semantics
    # (lax.scan & co. need arrays, and a body output must not stay pending): no folding there.
    plain = pass_semantics("fold_affine[body]")

    def loop(prim):
        def rule(ctx, *invals, **params):
            invals = [finish(v) for v in invals]
            return HIGHER_ORDER[prim](dataclasses.replace(ctx, semantics=plain), invals)

        return rule

    rules.update({p: loop(p) for p in (compat.scan_p, compat.cond_p, compat.while_p)})
    sem = pass_semantics("fold_affine", rules=rules, default_rule=default)

    def claim(st):
        if st["rounded"] == 0 and not st["inexact"]:
            return Promise.exact_and_bitwise("only biases moved, no value rounded")
        a, r = ROUNDING_TOLERANCE
        why = f"{st['rounded']} folded layer(s) with weights/bias rounded to float32 once"
        if st["inexact"]:
            why += f", {len(st['inexact'])} constant subexpression(s) rounded"
        return Promise(atol=a, rtol=r, bitwise=not st["rounded"], note=why)

    return rewrite(graph, sem, name="fold_affine", claim=claim, finish=finish, stats=stats)
