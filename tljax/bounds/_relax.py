"""Interval rules and linear relaxations, per equation kind of the tape.

Every function here is plain `jnp` code, so bounds are jit-compatible and differentiable (alpha-CROWN
differentiates through them). Float soundness (see `_float_model`) is applied here: when
`opts.float_sound` is on, every interval end and every line intercept is moved outward by a
rigorous allowance covering both the rounding of this computation and the rounding of the program
being bounded.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import _float_model as fm
from ._tape import STRUCTURAL, Node, TapeEqn, apply_affine, bind_prim, terms


@dataclasses.dataclass(frozen=True)
class Options:
    """Options shared by the bound computations.

    Attributes:
      float_sound: also cover the float program's rounding and this computation's own rounding.
      program: the rounding model of the program being bounded (default float32 on XLA:CPU).
    """

    float_sound: bool = True
    program: fm.ProgramModel = fm.FLOAT32


# ----------------------------------------------------------------------------------------------
# Scalar functions: value, derivative, and the points where the derivative equals a slope.


def _sig(x):
    return jax.nn.sigmoid(x)


def _crit_tanh(a):
    r = jnp.sqrt(jnp.clip(1.0 - a, 0.0, 1.0))
    x = jnp.arctanh(jnp.clip(r, 0.0, 1.0 - 1e-7))
    return [-x, x]


def _crit_logistic(a):
    d = jnp.sqrt(jnp.clip(1.0 - 4.0 * a, 0.0, 1.0))
    s = jnp.clip((1.0 + d) / 2.0, 0.5, 1.0 - 1e-7)
    x = jnp.log(s) - jnp.log1p(-s)
    return [-x, x]


def _safe_pos(a):
    return jnp.where(a > 0, a, 1.0)


UNARY = {
    # name: (f, f', critical points where f'(x) = a, ulps of XLA's implementation)
    "exp": (jnp.exp, jnp.exp, lambda a: [jnp.where(a > 0, jnp.log(_safe_pos(a)), -jnp.inf)], "exp"),
    "log": (jnp.log, lambda x: 1.0 / x, lambda a: [1.0 / _safe_pos(a)], "log"),
    "log1p": (jnp.log1p, lambda x: 1.0 / (1.0 + x), lambda a: [1.0 / _safe_pos(a) - 1.0], "log1p"),
    "sqrt": (jnp.sqrt, lambda x: 0.5 / jnp.sqrt(x), lambda a: [0.25 / _safe_pos(a) ** 2], "sqrt"),
    "rsqrt": (
        jax.lax.rsqrt,
        lambda x: -0.5 * x ** (-1.5),
        lambda a: [jnp.where(a < 0, (-2.0 * jnp.where(a < 0, a, -1.0)) ** (-2.0 / 3.0), 0.0)],
        "rsqrt",
    ),
    "recip": (
        lambda x: 1.0 / x,
        lambda x: -1.0 / (x * x),
        lambda a: [jnp.sqrt(-1.0 / jnp.where(a < 0, a, -1.0)), -jnp.sqrt(-1.0 / jnp.where(a < 0, a, -1.0))],
        "recip",
    ),
    "square": (jnp.square, lambda x: 2.0 * x, lambda a: [a / 2.0], "integer_pow"),
    "softplus": (jax.nn.softplus, _sig, lambda a: [jnp.log(_safe_pos(a)) - jnp.log1p(-jnp.clip(a, 0.0, 1.0 - 1e-7))], "softplus"),
    "tanh": (jnp.tanh, lambda x: 1.0 - jnp.tanh(x) ** 2, _crit_tanh, "tanh"),
    "logistic": (_sig, lambda x: _sig(x) * (1.0 - _sig(x)), _crit_logistic, "logistic"),
}
MONOTONE = {"exp": 1, "log": 1, "log1p": 1, "sqrt": 1, "softplus": 1, "tanh": 1, "logistic": 1, "rsqrt": -1}


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
    r = [jnp.maximum(fm.up(hi - ci), fm.up(ci - lo)) for (lo, hi), ci in zip(in_bounds, c, strict=True)]
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


def ibp_unary(fn: str, lo, hi, opts: Options):
    if fn == "relu":
        return jnp.maximum(lo, 0.0), jnp.maximum(hi, 0.0)
    if fn == "abs":
        return jnp.maximum(jnp.maximum(lo, -hi), 0.0), jnp.maximum(-lo, hi)
    f, _, _, ulp_key = UNARY[fn]
    ulps = fm.ULPS[ulp_key]
    if fn == "square":
        a, b = f(lo), f(hi)
        ylo = jnp.where((lo <= 0) & (hi >= 0), 0.0, jnp.minimum(a, b))
        yhi = jnp.maximum(a, b)
    elif fn == "recip":
        spans = (lo <= 0) & (hi >= 0)
        ylo = jnp.where(spans, -jnp.inf, f(hi))
        yhi = jnp.where(spans, jnp.inf, f(lo))
    elif MONOTONE[fn] > 0:
        ylo, yhi = f(lo), f(hi)
    else:
        ylo, yhi = f(hi), f(lo)
    if opts.float_sound:
        ylo = fm.down(ylo - 2.0 * _err(ylo, ulps, opts))
        yhi = fm.up(yhi + 2.0 * _err(yhi, ulps, opts))
        if fn in ("square", "sqrt", "exp", "softplus", "logistic"):
            ylo = jnp.maximum(ylo, 0.0)  # these functions are nonnegative, also in float
    return _clean(ylo, yhi)


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


def ibp_concretize(e: TapeEqn, in_bounds: list, opts: Options):
    # Monotone primitives (max pooling): apply to the ends.
    lo = apply_affine(e, [b[0] for b in in_bounds])
    hi = apply_affine(e, [b[1] for b in in_bounds])
    return lo, hi


def ibp_eqn(e: TapeEqn, bounds: dict, opts: Options):
    ins = [bounds[n.id] for n in e.node_inputs]
    if e.kind == "affine":
        lo, hi = ibp_affine(e, ins, opts)
    elif e.kind == "unary":
        lo, hi = ibp_unary(e.fn, *ins[0], opts)
    elif e.kind == "mul":
        lo, hi = ibp_mul(ins[0], ins[1], opts)
    else:
        lo, hi = ibp_concretize(e, ins, opts)
    if e.hint:
        lo, hi = _intersect_hint(e, bounds, lo, hi, opts)
    return lo, hi


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


def relax_relu(l, u, alpha=None):
    """CROWN's ReLU relaxation; `alpha` in [0, 1] is the lower slope of unstable neurons."""
    pos = l >= 0
    neg = u <= 0
    stable = pos | neg
    den = jnp.where(stable, 1.0, u - l)
    a_u = fm.up(u / den)  # slope rounded up: a_u (u - l) >= u
    b_u = fm.up(-a_u * l)
    a_u = jnp.where(pos, 1.0, jnp.where(neg, 0.0, a_u))
    b_u = jnp.where(stable, 0.0, b_u)
    if alpha is None:
        alpha = (u > -l).astype(l.dtype)
    a_l = jnp.where(pos, 1.0, jnp.where(neg, 0.0, alpha))
    b_l = jnp.zeros_like(l)
    return a_l, b_l, a_u, b_u


def relax_abs(l, u, alpha=None):
    pos = l >= 0
    neg = u <= 0
    if alpha is None:
        alpha = jnp.where(u > -l, 1.0, -1.0).astype(l.dtype)
    a_l = jnp.where(pos, 1.0, jnp.where(neg, -1.0, alpha))
    den = jnp.where(u > l, u - l, 1.0)
    a_u = jnp.where(u > l, (jnp.abs(u) - jnp.abs(l)) / den, jnp.sign(l))
    b_u = fm.up(jnp.maximum(jnp.abs(l) - a_u * l, jnp.abs(u) - a_u * u))
    b_u = fm.up(b_u + 4 * fm.unit(l.dtype) * (jnp.abs(a_u) * jnp.maximum(jnp.abs(l), jnp.abs(u)) + jnp.abs(b_u)))
    return a_l, jnp.zeros_like(l), a_u, b_u


def relax_smooth(fn: str, l, u, opts: Options):
    """Lines parallel to the chord, each touching f: exact intercepts from the endpoints and the
    points where f' equals the chord slope (the only interior extrema of f(x) - a x)."""
    f, df, crit, ulp_key = UNARY[fn]
    ulps = fm.ULPS[ulp_key]
    fl, fu = f(l), f(u)
    wide = u - l > 0
    a = jnp.where(wide, (fu - fl) / jnp.where(wide, u - l, 1.0), df(l))
    a = jnp.where(jnp.isfinite(a), a, 0.0)
    gs = [fl - a * l, fu - a * u]
    fmax = jnp.maximum(jnp.abs(fl), jnp.abs(fu))
    for x in crit(a):
        x = jnp.clip(jnp.where(jnp.isnan(x), l, x), l, u)
        fx = f(x)
        gs.append(fx - a * x)
        fmax = jnp.maximum(fmax, jnp.abs(fx))
    gs = [jnp.where(jnp.isnan(g), gs[0], g) for g in gs]
    b_l = gs[0]
    b_u = gs[0]
    for g in gs[1:]:
        b_l, b_u = jnp.minimum(b_l, g), jnp.maximum(b_u, g)
    if opts.float_sound:
        xmax = jnp.maximum(jnp.abs(l), jnp.abs(u))
        uu = fm.unit(l.dtype)
        m = 2.0 * _err(fmax, ulps, opts) + 8.0 * uu * (jnp.abs(a) * xmax + jnp.abs(b_l) + jnp.abs(b_u) + fmax)
        b_l = fm.down(b_l - m)
        b_u = fm.up(b_u + m)
    unbounded = ~jnp.isfinite(fl) | ~jnp.isfinite(fu)
    if fn == "recip":
        unbounded = unbounded | ((l <= 0) & (u >= 0))
    b_l = jnp.where(unbounded, -jnp.inf, b_l)
    b_u = jnp.where(unbounded, jnp.inf, b_u)
    a = jnp.where(unbounded, 0.0, a)
    return a, b_l, a, b_u


def relax_unary(fn: str, l, u, opts: Options, alpha=None):
    if fn == "relu":
        return relax_relu(l, u, alpha)
    if fn == "abs":
        return relax_abs(l, u, alpha)
    return relax_smooth(fn, l, u, opts)


def relax_mul(bx, by, opts: Options):
    """McCormick planes for z = x * y: z >= ly x + lx y - lx ly and z <= uy x + lx y - lx uy."""
    (lx, ux), (ly, uy) = bx, by
    ax_l, ay_l, c_l = ly, lx, -lx * ly
    ax_u, ay_u, c_u = uy, lx, -lx * uy
    if opts.float_sound:
        uu = fm.unit(lx.dtype)
        zmax = jnp.maximum(jnp.maximum(jnp.abs(lx * ly), jnp.abs(lx * uy)), jnp.maximum(jnp.abs(ux * ly), jnp.abs(ux * uy)))
        m = 4.0 * uu * (jnp.abs(c_l) + jnp.abs(c_u) + zmax) + _err(zmax, 1.0, opts)
        c_l = fm.down(c_l - m)
        c_u = fm.up(c_u + m)
    return (ax_l, ay_l, c_l), (ax_u, ay_u, c_u)


def node_abs_max(b):
    lo, hi = b
    return jnp.maximum(jnp.abs(lo), jnp.abs(hi))


__all__ = ["Options", "ibp_eqn", "relax_unary", "relax_mul", "Node", "np"]
