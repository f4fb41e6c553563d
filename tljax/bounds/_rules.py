"""What the bounds know about each primitive: ONE table, `RULES`, keyed by the primitive object.

An entry (`BoundRule`) says how a primitive is lowered onto the tape (`_tape.py`, the one documented
normal form the drivers share) and, for the nonlinear classes, everything the drivers and the exact
checker need:

- `Kind.AFFINE`: linear in its node operands given the concrete ones; intervals, CROWN transposes,
  zonotopes and the checker all follow from evaluating the primitive (no per-primitive code).
- `Kind.UNARY`: an elementwise nonlinearity with a `UnaryRule`: its interval image, its two
  relaxation lines, and the `Smooth` description the exact checker re-derives them from.
- `Kind.MUL`: the product of two nodes (McCormick planes).
- `Kind.SELECT`: `where(pred, c1, c0)` with a predicate on nodes: exact where the box decides the
  predicate, the hull of the two cases elsewhere.
- `Kind.CONCRETIZE`: interval only (`interval`, default: the primitive of the interval ends, for
  primitives nondecreasing in every operand).

`register` is the public extension point: a user primitive becomes boundable by every method
(ibp, affine, crown, alpha-crown, crown-ibp), by certificates and by `tljax.verify` with one call.
Primitives that are rewritten into others while lowering (max as a ReLU, division as a reciprocal,
...) have only a `lower` rule. Synthetic primitives (`relu_p`, `softplus_p`, `recip_p`,
`square_p`, `sech2_p`, `dlogistic_p`) name the nonlinearities such rewrites produce; they are
never bound in a program.
"""

from __future__ import annotations

import dataclasses
import enum
import functools as ft
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive

from ..core import compat
from . import _float_model as fm
from . import _smooth


class Kind(enum.StrEnum):
    """The class of a primitive for bounds (the equation kinds of the tape)."""

    AFFINE = "affine"
    UNARY = "unary"
    MUL = "mul"
    SELECT = "select"
    CONCRETIZE = "concretize"
    REWRITE = "rewrite"  # a table entry only: lowered into equations of the other kinds


@dataclasses.dataclass(frozen=True)
class UnaryRule:
    """An elementwise nonlinearity f, as the drivers and the checker use it.

    Attributes:
      name: short name, used in messages, tape summaries and certificates.
      interval: `(lo, hi, opts) -> (lo, hi)`, a sound image of [lo, hi] (float program included
        when `opts.float_sound`).
      relax: `(l, u, opts, alpha=None) -> (a_l, b_l, a_u, b_u)` with
        a_l x + b_l <= f(x) <= a_u x + b_u on [l, u] (float program included when float-sound).
      smooth: the `_smooth.Smooth` description the exact checker validates lines and derives
        intervals with; None for the piecewise-linear `relu` and `abs`, which it checks exactly.
      alpha: the lower slope is a free parameter in [0, 1] (alpha-CROWN optimises it; `relu`).
      exact: the float program computes f exactly (no rounding allowance: relu, abs).
    """

    name: str
    interval: Callable
    relax: Callable
    smooth: Any = None
    alpha: bool = False
    exact: bool = False


@dataclasses.dataclass(frozen=True)
class BoundRule:
    """Everything the bounds know about one primitive (see the module docstring).

    Attributes:
      kind: the primitive's class.
      lower: the lowering (recording) rule `(ctx, *invals, **params) -> value`; None for unary
        rules, which record one equation.
      unary: the nonlinearity, for `Kind.UNARY`.
      interval: for `Kind.CONCRETIZE`, `(prim, params, in_bounds) -> (lo, hi)`; None means
        the primitive applied to the lower ends and to the upper ends (nondecreasing).
      unary_of: for unary primitives whose function depends on params (`x ** c`):
        `params -> UnaryRule`.
    """

    kind: Kind
    lower: Callable | None = None
    unary: UnaryRule | None = None
    interval: Callable | None = None
    unary_of: Callable | None = None


RULES: dict[Primitive, BoundRule] = {}


def _synthetic(name: str) -> Primitive:
    p = Primitive(f"tljax_bounds_{name}")

    def _never(*args, **params):
        raise NotImplementedError(f"{p.name} names a relaxed nonlinearity on the tape; never bound")

    p.def_impl(_never)
    p.def_abstract_eval(lambda x, **params: x)
    return p


relu_p = _synthetic("relu")
softplus_p = _synthetic("softplus")
recip_p = _synthetic("recip")
# tanh'(x) = sech^2(x) and logistic'(x) = s(1 - s) as one function of x (`_tape`'s rewrite of
# the derivative patterns JAX emits)
sech2_p = _synthetic("sech2")
dlogistic_p = _synthetic("dlogistic")
square_p = compat.square_p if compat.square_p is not None else _synthetic("square")


# ----------------------------------------------------------------------------------------------
# Piecewise-linear nonlinearities: exact in float, checked exactly.


def _relu_interval(lo, hi, opts):
    del opts
    return jnp.maximum(lo, 0.0), jnp.maximum(hi, 0.0)


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


def _abs_interval(lo, hi, opts):
    del opts
    return jnp.maximum(jnp.maximum(lo, -hi), 0.0), jnp.maximum(-lo, hi)


def relax_abs(l, u, alpha=None):
    pos = l >= 0
    neg = u <= 0
    if alpha is None:
        alpha = jnp.where(u > -l, 1.0, -1.0).astype(l.dtype)
    a_l = jnp.where(pos, 1.0, jnp.where(neg, -1.0, alpha))
    den = jnp.where(u > l, u - l, 1.0)
    a_u = jnp.where(u > l, (jnp.abs(u) - jnp.abs(l)) / den, jnp.sign(l))
    b_u = fm.up(jnp.maximum(jnp.abs(l) - a_u * l, jnp.abs(u) - a_u * u))
    b_u = fm.up(
        b_u
        + 4 * fm.unit(l.dtype) * (jnp.abs(a_u) * jnp.maximum(jnp.abs(l), jnp.abs(u)) + jnp.abs(b_u))
    )
    return a_l, jnp.zeros_like(l), a_u, b_u


RELU = UnaryRule(
    "relu", _relu_interval, lambda l, u, opts, alpha=None: relax_relu(l, u, alpha), None, True, True
)
ABS = UnaryRule(
    "abs", _abs_interval, lambda l, u, opts, alpha=None: relax_abs(l, u, alpha), None, False, True
)


# ----------------------------------------------------------------------------------------------
# Smooth nonlinearities: everything comes from their `_smooth.Smooth` description.


def smooth_rule(s) -> UnaryRule:
    """The unary rule of a smooth function described by a `_smooth.Smooth`."""

    def relax(l, u, opts, alpha=None):
        del alpha
        return _smooth.relax(s, l, u, opts)

    return UnaryRule(s.name, ft.partial(_smooth_interval, s), relax, s)


def _smooth_interval(s, lo, hi, opts):
    return _smooth.interval(s, lo, hi, opts)


def unary(prim: Primitive, rule: UnaryRule) -> None:
    RULES[prim] = BoundRule(Kind.UNARY, unary=rule)


unary(relu_p, RELU)
unary(lax.abs_p, ABS)
for _prim, _name in (
    (lax.exp_p, "exp"),
    (lax.expm1_p, "expm1"),
    (lax.log_p, "log"),
    (lax.log1p_p, "log1p"),
    (lax.sqrt_p, "sqrt"),
    (lax.rsqrt_p, "rsqrt"),
    (lax.tanh_p, "tanh"),
    (lax.logistic_p, "logistic"),
    (lax.erf_p, "erf"),
    (lax.erfc_p, "erfc"),
    (lax.sin_p, "sin"),
    (lax.cos_p, "cos"),
    (square_p, "square"),
    (softplus_p, "softplus"),
    (recip_p, "recip"),
    (sech2_p, "sech2"),
    (dlogistic_p, "dlogistic"),
):
    unary(_prim, smooth_rule(_smooth.SMOOTH[_name]))


def bind_prim(prim, params, vals):
    """`prim` applied to `vals` with a jaxpr equation's params (first output only)."""
    out = prim.bind(*vals, **compat.bind_params(prim, params))
    return out[0] if prim.multiple_results else out


def _monotone_ends(prim, params, in_bounds):
    if prim is compat.stop_gradient_p:  # the identity on values
        return in_bounds[0]
    lo = bind_prim(prim, params, [b[0] for b in in_bounds])
    hi = bind_prim(prim, params, [b[1] for b in in_bounds])
    return lo, hi


def concretize(prim: Primitive, interval: Callable | None = None) -> None:
    """`prim` is bounded by its interval only (nondecreasing in every operand unless `interval`
    says otherwise)."""
    RULES[prim] = BoundRule(Kind.CONCRETIZE, interval=interval)


def define(prim: Primitive, kind: Kind, lower: Callable, interval: Callable | None = None) -> None:
    """A primitive lowered by `lower` (the lowering's own rules, `_tape.py`); what the table
    already knows about it (a parametrised unary function) is kept."""
    old = RULES.get(prim)
    RULES[prim] = BoundRule(
        kind,
        lower=lower,
        unary=old.unary if old else None,
        interval=interval,
        unary_of=old.unary_of if old else None,
    )


def arg_extremum_interval(prim, params, in_bounds):
    """argmax / argmin over one axis: the smallest and largest index that can be the first
    extremum (argmax: an element whose upper end reaches the largest lower end)."""
    ((lo, hi),) = in_bounds
    (axis,) = params["axes"]
    if prim is lax.argmax_p:
        cand = hi >= jnp.max(lo, axis=axis, keepdims=True)
    else:
        cand = lo <= jnp.min(hi, axis=axis, keepdims=True)
    n = lo.shape[axis]
    idx = jnp.arange(n).reshape([n if d == axis else 1 for d in range(lo.ndim)])
    first = jnp.min(jnp.where(cand, idx, n), axis=axis)
    last = jnp.max(jnp.where(cand, idx, -1), axis=axis)
    dt = params["index_dtype"]
    return first.astype(dt), last.astype(dt)


def concretize_interval(prim, params, in_bounds):
    r = RULES.get(prim)
    f = r.interval if r is not None and r.interval is not None else _monotone_ends
    return f(prim, params, in_bounds)


def unary_rule(prim, params=None) -> UnaryRule:
    r = RULES[prim]
    return r.unary if r.unary is not None else r.unary_of(params or {})


@ft.cache
def _pow_rule(y: float) -> UnaryRule:
    return smooth_rule(_smooth.pow_fn(y))


RULES[lax.pow_p] = BoundRule(Kind.UNARY, unary_of=lambda params: _pow_rule(float(params["y"])))


def register(
    prim: Primitive,
    *,
    smooth=None,
    interval: Callable | None = None,
    relax: Callable | None = None,
    monotone: bool = False,
    name: str | None = None,
) -> None:
    """Makes a primitive boundable by every method, certificates and `tljax.verify`.

    Args:
      prim: the JAX primitive (`jax.extend.core.Primitive`), elementwise with one operand unless
        `monotone=True`.
      smooth: a `tljax.bounds.Smooth` describing f (value, derivative, convexity, ulps, arb
        versions): intervals, sound-by-construction lines and exact certificates all follow.
      interval: `(lo, hi, opts) -> (lo, hi)` for an elementwise f given only by its image;
        `relax` defaults to the constant lines of that interval (sound, loose).
      relax: `(l, u, opts, alpha=None) -> (a_l, b_l, a_u, b_u)` (with `interval`).
      monotone: `prim` is nondecreasing in every operand (any number of operands): bounded by
        its value at the interval ends (interval only, like max pooling).
      name: short name for messages.

    Example:
      >>> tljax.bounds.register(my_softsign_p, smooth=tljax.bounds.Smooth(...))  # doctest: +SKIP
    """
    if not isinstance(prim, Primitive):
        raise TypeError(f"register expects a jax.extend.core.Primitive, got {type(prim).__name__}")
    given = sum(x is not None for x in (smooth, interval)) + bool(monotone)
    if given != 1:
        raise ValueError("register: give exactly one of smooth=, interval= or monotone=True")
    if smooth is not None:
        unary(prim, smooth_rule(smooth))
    elif interval is not None:
        if relax is None:

            def relax(l, u, opts, alpha=None):
                lo, hi = interval(l, u, opts)
                z = jnp.zeros_like(lo)
                return z, lo, z, hi

        unary(prim, UnaryRule(name or prim.name, interval, relax))
    else:
        concretize(prim)


def registered() -> dict:
    """{primitive name: kind name} of every primitive the bounds know (the coverage table)."""
    return {p.name: r.kind.value for p, r in sorted(RULES.items(), key=lambda kv: kv[0].name)}
