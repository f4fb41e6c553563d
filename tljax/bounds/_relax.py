"""Interval rules and linear relaxations, per equation kind of the tape.

Every function here is plain `jnp` code, so bounds are jit-compatible and differentiable
(alpha-CROWN differentiates through them). Float soundness (see `_float_model`) is applied here:
when `opts.float_sound` is on, every interval end and every line intercept is moved outward by a
rigorous allowance covering both the rounding of this computation and the rounding of the program
being bounded.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from . import _float_model as fm
from . import _smooth
from ._drive import Forward, forward_step
from ._rules import RULES, concretize_interval, relax_relu
from ._tape import STRUCTURAL, Node, TapeEqn, apply_affine, bind_prim, terms


@dataclasses.dataclass(frozen=True)
class Options:
    """Options shared by the bound computations.

    Attributes:
      float_sound: also cover the float program's rounding and this computation's own rounding.
      program: the rounding model of the program being bounded (default float32 on XLA:CPU).
      refine_limit: the most elements one CROWN pass for an intermediate node may carry (its
        rows, twice the node's size, times the widest node it reaches); nodes over it keep their
        interval bounds (`_crown.refine_plan`). None: no limit. The search sets it from the
        memory it has (`tljax.verify`); max pooling over a wide convolution is the usual case.
      matvec: lay the bound program out for a mapped call (`jax.vmap` over boxes or domains):
        the rows' sums against vectors are matrix-vector products, not fused reductions (faster
        there, slower to compile). The bounds are the same up to summation order. `tljax.bound`
        sets it when its box is traced.
      lower_only: the passes from the outputs carry the lower rows only (half the rows: a
        verification margin needs no more); the outputs' upper bounds are then their intervals
        from the forward sweep (sound, looser). alpha-CROWN's optimised passes bound both sides.
      input_hull: where alpha-CROWN also optimises the input-space hull planes of first-layer
        ReLUs (`_crown.HullForm`): None, convolutions (few inputs per neuron, large gains: the
        verivital CNN); True, also dense layers of at most `HULL_MAX_FAN_IN` inputs (ACAS Xu:
        widths 0.3% narrower for twice the steps); False, nowhere.
    """

    float_sound: bool = True
    program: fm.ProgramModel = fm.FLOAT32
    refine_limit: int | None = None
    matvec: bool = False
    lower_only: bool = False
    input_hull: bool | None = None


def _err(y, ulps, opts: Options):
    """Allowance for one evaluation of a k-ulp function with result magnitude |y|."""
    u = fm.unit(y.dtype)
    return ulps * 2.0 * max(u, opts.program.u_out) * jnp.abs(y) + 2.0 * opts.program.eta


# ----------------------------------------------------------------------------------------------
# Interval rules.


def _clean(lo, hi):
    # NaN can only come from inf - inf or 0 * inf in unbounded cases: the trivial bound is sound.
    return jnp.where(jnp.isnan(lo), -jnp.inf, lo), jnp.where(jnp.isnan(hi), jnp.inf, hi)


def ibp_affine(e: TapeEqn, in_bounds: list, opts: Options):
    """Interval of an affine equation over the boxes of its node operands."""
    if e.prim in STRUCTURAL:
        lo = apply_affine(e, [b[0] for b in in_bounds])
        hi = apply_affine(e, [b[1] for b in in_bounds])
        return lo, hi
    if not opts.float_sound:
        c = [(lo + hi) / 2 for lo, hi in in_bounds]
        r = [(hi - lo) / 2 for lo, hi in in_bounds]
        yc = apply_affine(e, c)
        yr = apply_affine(e, r, mode="abs")
        return _clean(yc - yr, yc + yr)
    n_fwd, _ = terms(e)
    c = [(lo + hi) / 2 for lo, hi in in_bounds]
    r = [
        jnp.maximum(fm.up(hi - ci), fm.up(ci - lo))
        for (lo, hi), ci in zip(in_bounds, c, strict=True)
    ]
    yc = apply_affine(e, c)
    # |L| applied to [r; |c| + r] in one pass would need stacking; two passes keep it simple.
    yr = apply_affine(e, r, mode="abs")
    ymag = apply_affine(e, [jnp.abs(ci) + ri for ci, ri in zip(c, r, strict=True)], mode="abs")
    f0 = jnp.abs(apply_affine(e, [jnp.zeros_like(ci) for ci in c], mode="zero"))
    u = fm.unit(yc.dtype)
    if n_fwd == 0:
        rad = yr
        rad = fm.inflate(rad, 4.0)
    else:
        g = fm.gamma(n_fwd + 1, u)
        # computation: |L|r rounding, center rounding; program: rel(n) on magnitudes.
        # ymag and f0 are themselves rounded (relative error <= g): scale their terms by (1 + g).
        rad = yr * (1.0 + g) + (g + opts.program.rel(n_fwd)) * (1.0 + g) * (ymag + f0)
        rad = fm.inflate(rad, 8.0) + (n_fwd + 2) * (fm.tiny(yc.dtype) + opts.program.eta)
    return _clean(fm.down(yc - rad), fm.up(yc + rad))


def ibp_mul(bx, by, opts: Options):
    (lx, ux), (ly, uy) = bx, by
    ps = [lx * ly, lx * uy, ux * ly, ux * uy]
    lo = ps[0]
    hi = ps[0]
    for p in ps[1:]:
        lo, hi = jnp.minimum(lo, p), jnp.maximum(hi, p)
    if opts.float_sound:
        lo = fm.down(lo - 2.0 * _err(lo, 1.0, opts))
        hi = fm.up(hi + 2.0 * _err(hi, 1.0, opts))
    return _clean(lo, hi)


def ibp_concretize(e: TapeEqn, bounds: dict, opts: Options):
    # The table's interval of the primitive (default: at the interval ends, nondecreasing).
    del opts
    ins = [bounds[v.id] if isinstance(v, Node) else (v, v) for v in e.inputs]
    lo, hi = concretize_interval(e.prim, e.params, ins)
    shape = e.out.shape
    return jnp.broadcast_to(lo, shape), jnp.broadcast_to(hi, shape)


_CMP = {
    # (surely true, surely false) from the intervals of a and b; comparisons are exact in float
    lax.gt_p: lambda la, ha, lb, hb: (la > hb, ha <= lb),
    lax.ge_p: lambda la, ha, lb, hb: (la >= hb, ha < lb),
    lax.lt_p: lambda la, ha, lb, hb: (ha < lb, la >= hb),
    lax.le_p: lambda la, ha, lb, hb: (ha <= lb, la > hb),
    lax.eq_p: lambda la, ha, lb, hb: ((la == ha) & (lb == hb) & (la == lb), (ha < lb) | (la > hb)),
    lax.ne_p: lambda la, ha, lb, hb: ((ha < lb) | (la > hb), (la == ha) & (lb == hb) & (la == lb)),
    lax.is_finite_p: lambda la, ha, lb, hb: (
        jnp.isfinite(la) & jnp.isfinite(ha),
        (la == ha) & ~jnp.isfinite(la),
    ),
}


def select_masks(e: TapeEqn, bounds: dict):
    """(m0, m1) of a select equation: where the box decides its predicate false / true (as the
    output's dtype); elsewhere the output lies between its two cases."""
    pa, pb = e.inputs[0], e.inputs[1]
    la, ha = bounds[pa.id] if isinstance(pa, Node) else (pa, pa)
    lb, hb = bounds[pb.id] if isinstance(pb, Node) else (pb, pb)
    t, f = _CMP[e.params["cmp"]](la, ha, lb, hb)
    if e.params["negate"]:
        t, f = f, t
    shape, dt = e.out.shape, e.out.dtype
    return (
        jnp.broadcast_to(f, shape).astype(dt),
        jnp.broadcast_to(t, shape).astype(dt),
    )


def ibp_select(e: TapeEqn, bounds: dict):
    m0, m1 = select_masks(e, bounds)
    (l0, h0), (l1, h1) = (bounds[c.id] if isinstance(c, Node) else (c, c) for c in e.inputs[2:])
    lo = jnp.where(m1 > 0, l1, jnp.where(m0 > 0, l0, jnp.minimum(l0, l1)))
    hi = jnp.where(m1 > 0, h1, jnp.where(m0 > 0, h0, jnp.maximum(h0, h1)))
    return lo, hi


class Intervals(Forward):
    """Interval arithmetic as a forward domain (`_drive.forward`): node bounds in `bounds`.

    Every other domain intersects with it: CROWN's pass extends it, the zonotope and the checker
    read its image of each equation (`image`)."""

    def __init__(self, bounds: dict, opts: Options):
        self.bounds, self.opts = bounds, opts

    def _ins(self, e: TapeEqn) -> list:
        return [self.bounds[n.id] for n in e.node_inputs]

    def affine(self, i, e):
        return ibp_affine(e, self._ins(e), self.opts)

    def unary(self, i, e):
        return _clean(*e.rule.interval(*self._ins(e)[0], self.opts))

    def mul(self, i, e):
        return ibp_mul(*self._ins(e), self.opts)

    def select(self, i, e):
        return ibp_select(e, self.bounds)

    def concretize(self, i, e):
        return ibp_concretize(e, self.bounds, self.opts)

    def hinted(self, e: TapeEqn, value):
        """`value` intersected with the equation's interval fact (`TapeEqn.hint`), if any."""
        return _intersect_hint(e, self.bounds, *value, self.opts) if e.hint else value

    def image(self, i: int, e: TapeEqn):
        """The interval of equation `i`'s output from its operands' current bounds."""
        return self.hinted(e, forward_step(self, i, e))

    def leave(self, i, e, value):
        self.bounds[e.out.id] = self.hinted(e, value)


def ibp_eqn(e: TapeEqn, bounds: dict, opts: Options):
    """The interval of equation `e`'s output (see `Intervals.image`)."""
    return Intervals(bounds, opts).image(None, e)


def _intersect_hint(e: TapeEqn, bounds: dict, lo, hi, opts: Options):
    """Intersects with what `e.hint` says about the program's value (see `TapeEqn`).

    monotone: the program computes the max/min exactly, so applying it to the lower and to the
    upper input bounds encloses the result exactly.
    nonpos: `x - y` with `y >= x` in the program. Rounded subtraction of such values is still
    `<= 0`, but the program may contract the subtraction with the operation that produced `x`
    (an FMA on the unrounded `x`), so the float-sound cap is the subtraction's own rounding
    allowance, as `ibp_affine` counts it, not 0.
    """
    if e.hint[0] == "nonpos":
        cap = jnp.zeros_like(hi)
        if opts.float_sound:
            mag = sum(node_abs_max(bounds[n.id]) for n in e.node_inputs)
            u = fm.unit(hi.dtype)
            g = fm.gamma(2, u)
            cap = (g + opts.program.rel(1)) * (1.0 + g) * mag
            cap = fm.up(fm.inflate(cap, 8.0) + 3 * (fm.tiny(hi.dtype) + opts.program.eta))
        return lo, jnp.where(e.hint[1], jnp.minimum(hi, cap), hi)
    _, prim, params, inputs = e.hint

    def at(end):
        vals = [bounds[x.id][end] if isinstance(x, Node) else x for x in inputs]
        return jnp.broadcast_to(bind_prim(prim, params, vals), e.out.shape)

    return jnp.maximum(lo, at(0)), jnp.minimum(hi, at(1))


# ----------------------------------------------------------------------------------------------
# Linear relaxations: lower line a_l x + b_l <= f(x) <= a_u x + b_u for x in [l, u].


def relax_smooth(fn: str, l, u, opts: Options):
    """Lines a x + b_l <= f(x) <= a x + b_u on [l, u] for the smooth function named `fn`
    (`_smooth.SMOOTH`), sound by construction (see `_smooth.relax`)."""
    return _smooth.relax(_smooth.SMOOTH[fn], l, u, opts)


def relax_unary(fn: str, l, u, opts: Options, alpha=None):
    """The relaxation of the unary nonlinearity named `fn` ("relu", "abs", "tanh", ...)."""
    return unary_by_name(fn).relax(l, u, opts, alpha)


def unary_by_name(fn: str):
    for r in RULES.values():
        if r.unary is not None and r.unary.name == fn:
            return r.unary
    raise KeyError(f"no unary nonlinearity named {fn!r} in tljax.bounds' rule table")


def relax_mul(bx, by, opts: Options):
    """The four McCormick planes of z = x * y, each `(a_x, a_y, c)`: (lower A, upper A, lower B,
    upper B) with

      A: z >= ly x + lx y - lx ly,  z <= uy x + lx y - lx uy
      B: z >= uy x + ux y - ux uy,  z <= ly x + ux y - ux ly

    CROWN uses the A planes; alpha-CROWN any convex combination of A and B per side (both are
    valid, so is every mixture), the weights optimised like ReLU slopes."""
    (lx, ux), (ly, uy) = bx, by
    planes = [
        (ly, lx, -lx * ly),
        (uy, lx, -lx * uy),
        (uy, ux, -ux * uy),
        (ly, ux, -ux * ly),
    ]
    if opts.float_sound:
        uu = fm.unit(lx.dtype)
        zmax = jnp.maximum(
            jnp.maximum(jnp.abs(lx * ly), jnp.abs(lx * uy)),
            jnp.maximum(jnp.abs(ux * ly), jnp.abs(ux * uy)),
        )
        out = []
        for (axl, ayl, cl), (axu, ayu, cu) in (planes[:2], planes[2:]):
            m = 4.0 * uu * (jnp.abs(cl) + jnp.abs(cu) + zmax) + _err(zmax, 1.0, opts)
            out += [(axl, ayl, fm.down(cl - m)), (axu, ayu, fm.up(cu + m))]
        planes = out
    return tuple(planes)


def node_abs_max(b):
    lo, hi = b
    return jnp.maximum(jnp.abs(lo), jnp.abs(hi))


__all__ = [
    "Intervals",
    "Options",
    "ibp_eqn",
    "relax_mul",
    "relax_relu",
    "relax_smooth",
    "relax_unary",
]
