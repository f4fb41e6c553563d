"""`check_grad`: JAX's gradient, evaluated exactly, against the exact derivative from sympy.

Two independent computations of the same gradient at a point `x`:

1. the jaxpr of ``jax.grad(fn)`` (JAX's own JVP/transpose rules, exactly as `jax.grad` runs
   them) evaluated at the exact rationals of `x` in the EXACT semantics (``"exact"``:
   `fractions.Fraction` results for rational programs, certified `flint.arb` enclosures when a
   transcendental function is involved);
2. the forward program read as a sympy expression (the ``"symbolic"`` semantics), differentiated
   by sympy, and evaluated at the same rationals.

Rational programs must agree exactly (equal Fractions, not merely close). Where the exact
semantics returns enclosures, each sympy value (a closed form such as ``1 - tanh(1/2)**2``) is
evaluated in arb ball arithmetic and must lie inside JAX's enclosure. Without the exact semantics
(it is optional), the grad jaxpr is evaluated in the symbolic semantics at the point instead:
exact rational / closed-form arithmetic again, compared by simplification.

Kinks: at a point where a `max`/`abs`/`select` has tied arguments, the derivative need not exist.
JAX returns its convention (``relu'(0) = 0``), sympy's ``d/dx Max(x, 0)`` is ``Heaviside(x)``
with ``Heaviside(0) = 1/2``; `check_grad` reports ``at_kink=True`` and explains instead of
calling either one wrong.
"""

from __future__ import annotations

import dataclasses
import fractions
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np
import sympy
from flint import arb, ctx, fmpq

from ..core import InputError, TljaxError, compat
from ..interpret import as_object_array, evaluate, get_semantics
from ._audit import is_zero
from ._symbolic_api import symbolic, symbols

compat.register_exclusion(__file__)


@dataclasses.dataclass(frozen=True)
class GradCheck:
    """The outcome of `check_grad`.

    Attributes:
      equal: every component agrees (exactly, or the sympy value lies in JAX's enclosure).
      max_difference: largest |JAX - sympy| over components: a `Fraction` when both are exact,
        else a float upper bound (distance to the enclosure's midpoint plus its radius).
      detail: one line saying what was compared and how.
      method: ``"exact"`` (exact semantics) or ``"symbolic"`` (grad jaxpr in the symbolic
        semantics).
      at_kink: the point ties the arguments of a max/abs/select (no derivative need exist there).
      jax_grad: JAX's gradient, exactly (pytree of object arrays of Fraction / arb / sympy).
      reference: sympy's gradient at the point (pytree of object arrays of sympy numbers).
    """

    equal: bool
    max_difference: Any
    detail: str
    method: str
    at_kink: bool = False
    jax_grad: Any = None
    reference: Any = None

    def __bool__(self) -> bool:
        return self.equal


# ----------------------------------------------------------------------------------------------
# Sympy numbers as arb balls (rigorous), for containment in enclosures.


def to_arb(e, prec: int = 256) -> arb:
    """A certified arb ball containing the value of a closed-form sympy number.

    Supports rationals, +, *, integer and rational powers, exp, log, sqrt, tanh, sin, cos, erf,
    erfc, atan, sinh, cosh, pi and E.

    Example:
      >>> to_arb(sympy.exp(sympy.Rational(1, 2))).contains(arb("1.6487212707"))
      True
    """
    old = ctx.prec
    ctx.prec = prec
    try:
        return _arb(sympy.sympify(e))
    finally:
        ctx.prec = old


_ARB_FUNCS = {
    sympy.exp: arb.exp,
    sympy.log: arb.log,
    sympy.tanh: arb.tanh,
    sympy.sin: arb.sin,
    sympy.cos: arb.cos,
    sympy.erf: arb.erf,
    sympy.erfc: arb.erfc,
    sympy.atan: arb.atan,
    sympy.sinh: arb.sinh,
    sympy.cosh: arb.cosh,
    sympy.tan: arb.tan,
    sympy.Abs: abs,
}


def _arb(e) -> arb:
    if isinstance(e, sympy.Rational):
        return arb(fmpq(int(e.p), int(e.q)))
    if e is sympy.pi:
        return arb.pi()
    if e is sympy.E:
        return arb(1).exp()
    if isinstance(e, sympy.Add):
        out = arb(0)
        for a in e.args:
            out += _arb(a)
        return out
    if isinstance(e, sympy.Mul):
        out = arb(1)
        for a in e.args:
            out *= _arb(a)
        return out
    if isinstance(e, sympy.Pow):
        base, ex = e.args
        if isinstance(ex, sympy.Integer):
            b, n = _arb(base), int(ex)
            return b**n if n >= 0 else 1 / (b ** (-n))
        if isinstance(ex, sympy.Rational):
            return (_arb(base).log() * arb(fmpq(int(ex.p), int(ex.q)))).exp()
        return (_arb(base).log() * _arb(ex)).exp()
    f = _ARB_FUNCS.get(e.func)
    if f is not None and len(e.args) == 1:
        return f(_arb(e.args[0]))
    raise InputError(f"to_arb: cannot evaluate {e} ({e.func}) in ball arithmetic")


def _fraction(v) -> fractions.Fraction | None:
    if isinstance(v, fractions.Fraction):
        return v
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return fractions.Fraction(v)
    if isinstance(v, sympy.Rational):
        return fractions.Fraction(int(v.p), int(v.q))
    if isinstance(v, fmpq):
        return fractions.Fraction(int(v.p), int(v.q))
    return None


# ----------------------------------------------------------------------------------------------
# Kinks.


def kinks_at(expr, point: dict) -> list[str]:
    """Sub-expressions of `expr` that are at a kink at `point` (tied Max/Min, Abs(0), a
    Piecewise condition or sign/Heaviside argument on its boundary).

    Example:
      >>> x = sympy.Symbol("x", real=True)
      >>> kinks_at(sympy.Max(x, 0), {x: 0})
      ['Max(0, x) has tied arguments']
    """
    found = []
    for node in sympy.preorder_traversal(sympy.sympify(expr)):
        if isinstance(node, sympy.Max | sympy.Min):
            vals = [sympy.sympify(a).subs(point) for a in node.args]
            if all(v.is_number for v in vals):
                best = (max if isinstance(node, sympy.Max) else min)(
                    vals, key=lambda v: float(sympy.N(v, 30))
                )
                if sum(is_zero(v - best) for v in vals) > 1:
                    found.append(f"{node} has tied arguments")
        elif isinstance(node, sympy.Abs | sympy.sign | sympy.Heaviside):
            v = sympy.sympify(node.args[0]).subs(point)
            if v.is_number and is_zero(v):
                found.append(f"{node} is at 0")
        elif isinstance(node, sympy.Piecewise):
            for _, cond in node.args:
                if isinstance(cond, sympy.core.relational.Relational):
                    v = (cond.lhs - cond.rhs).subs(point)
                    if v.is_number and is_zero(v):
                        found.append(f"condition {cond} is on its boundary")
    return list(dict.fromkeys(found))


# ----------------------------------------------------------------------------------------------
# check_grad.


def _exact_available() -> bool:
    try:
        get_semantics("exact")
    except TljaxError:
        return False
    return True


def _is_leaf(x) -> bool:
    return isinstance(x, np.ndarray | sympy.Basic)


def check_grad(fn, x, *, method: str = "auto") -> GradCheck:
    """Checks ``jax.grad(fn)(x)`` exactly against sympy's derivative of `fn` at `x`.

    Args:
      fn: a scalar-valued JAX function of one argument (a pytree of float arrays).
      x: the point: a pytree of arrays/numbers, read exactly (a float32 0.1 is 13421773/2^27).
      method: ``"exact"`` evaluates the grad jaxpr in the exact semantics (Fractions, or arb
        enclosures for transcendental programs); ``"symbolic"`` evaluates it in the symbolic
        semantics at the point; ``"auto"`` (default) uses ``"exact"`` when it is installed and
        falls back to ``"symbolic"`` (saying so in `detail`) where the exact semantics refuses
        the program (an infinite constant such as `jax.nn.softmax`'s ``-inf``, a comparison of
        overlapping enclosures).

    Returns:
      A `GradCheck`; ``bool(result)`` is `result.equal`.

    Example:
      >>> def mlp(w):
      ...     return jnp.sum(jax.nn.relu(w @ jnp.array([1.0, -2.0])) ** 2)
      >>> check_grad(mlp, jnp.array([[0.5, 0.25], [1.0, -1.0]])).equal
      True
    """
    auto = method == "auto"
    if auto:
        method = "exact" if _exact_available() else "symbolic"
    if method not in ("exact", "symbolic"):
        raise InputError(
            f"check_grad: method must be 'auto', 'exact' or 'symbolic', got {method!r}"
        )
    leaves, tree = jtu.tree_flatten(x)
    if not leaves:
        raise InputError(
            "check_grad: x has no array leaves; pass the point as an array or a pytree of arrays"
        )
    arrays = [np.asarray(v) for v in leaves]
    syms = [symbols(f"x{i}", a.shape) for i, a in enumerate(arrays)]
    point = {}
    for s, a in zip(syms, arrays, strict=True):
        vals = as_object_array(a)
        for idx in np.ndindex(a.shape):
            point[s[idx]] = vals[idx]
    sym_tree = jtu.tree_unflatten(tree, syms)
    f_expr = symbolic(fn, sym_tree)
    if isinstance(f_expr, np.ndarray):
        if f_expr.size != 1:
            raise InputError(
                f"check_grad: fn must return a scalar, got shape {f_expr.shape}; reduce the "
                "output first (e.g. jnp.sum) or check one output at a time"
            )
        f_expr = f_expr.reshape(-1)[0]
    # Reference: sympy's derivative at the point.
    reference = []
    for s in syms:
        r = np.empty(s.shape, dtype=object)
        for idx in np.ndindex(s.shape):
            r[idx] = sympy.diff(f_expr, s[idx]).subs(point)
        reference.append(r)
    # JAX's gradient, exactly.
    grad_fn = jax.grad(fn)
    fallback = ""
    if method == "exact":
        try:
            got = jtu.tree_leaves(evaluate(grad_fn, x, semantics="exact"), is_leaf=_is_leaf)
        except TljaxError as err:
            if not auto:
                raise
            # e.g. jax.nn.softmax's -inf constant, or an undecidable comparison of enclosures.
            first = str(err).splitlines()[0]
            fallback = (
                f" (exact semantics refused: {first[:160]}; fell back to the symbolic semantics)"
            )
            method = "symbolic"
    if method == "symbolic":
        got = jtu.tree_leaves(symbolic(grad_fn, x), is_leaf=_is_leaf)
    got = [np.asarray(g, dtype=object) if not isinstance(g, np.ndarray) else g for g in got]
    equal, worst, kinds, bad = True, fractions.Fraction(0), set(), None
    for k, (g, r) in enumerate(zip(got, reference, strict=True)):
        for idx in np.ndindex(r.shape):
            ok, diff, kind = _compare_one(g[idx], r[idx])
            kinds.add(kind)
            if diff is not None and diff > worst:
                worst = diff
            if not ok and equal:
                equal, bad = False, (k, idx, g[idx], r[idx])
    kinks = kinks_at(f_expr, point)
    how = {
        "exact": "equal as rationals",
        "enclosure": "sympy value inside JAX's arb enclosure",
        "closed-form": "closed forms equal by simplification",
        "closed-form-numeric": "closed forms agree to 2^-250 in arb ball arithmetic "
        "(no symbolic identity attempted)",
    }
    detail = (
        f"{method} semantics on the grad jaxpr vs sympy.diff: "
        + ", ".join(sorted(how[k] for k in kinds))
        + fallback
    )
    if not equal:
        k, idx, gv, rv = bad
        detail = f"leaf {k} index {idx}: JAX {gv} != sympy {rv}"
        if kinks:
            detail += (
                f"; the point is at a kink ({'; '.join(kinks[:3])}), where the derivative need not "
                "exist: JAX returns its convention (e.g. relu'(0) = 0, max splits ties "
                "0.5/0.5) and "
                "sympy's diff of Max/Abs gives Heaviside(0) = 1/2 / sign(0) = 0"
            )
    elif kinks:
        detail += f" (the point ties {'; '.join(kinks[:2])}, which cancels in the gradient)"
    return GradCheck(
        equal=equal,
        max_difference=worst,
        detail=detail,
        method=method,
        at_kink=bool(kinks),
        jax_grad=jtu.tree_unflatten(tree, got),
        reference=jtu.tree_unflatten(tree, reference),
    )


def _compare_one(g, r) -> tuple[bool, Any, str]:
    """(equal?, |difference| or bound, kind) for one component."""
    r = sympy.sympify(r)
    gf = _fraction(g)
    rf = _fraction(r)
    if gf is not None and rf is not None:
        return gf == rf, abs(gf - rf), "exact"
    if isinstance(g, arb):
        try:
            ball = to_arb(r)
        except InputError:
            ball = None
        if ball is None:
            return False, None, "enclosure"
        inside = bool(g.contains(ball))
        dist = abs(float((ball - g.mid()).mid())) + float(g.rad())
        return inside, dist, "enclosure"
    if gf is not None:  # exact JAX value, irrational sympy value: cannot be equal
        return (
            is_zero(sympy.Rational(gf.numerator, gf.denominator) - r),
            _float_dist(gf, r),
            "exact",
        )
    gs = sympy.sympify(g)
    d = gs - r
    if d == 0 or sympy.expand(d) == 0:
        return True, 0, "closed-form"
    try:
        bg, br = to_arb(gs), to_arb(r)
    except InputError:
        ok = is_zero(d)
        return ok, (0.0 if ok else _float_dist(gs, r)), "closed-form"
    dist = abs(float((bg - br).mid())) + float((bg - br).rad())
    if not bg.overlaps(br):
        return False, dist, "closed-form"  # certainly different
    if sympy.count_ops(d) <= 40 and is_zero(d):  # simplify is slow on big closed forms
        return True, 0, "closed-form"
    return True, dist, "closed-form-numeric"


def _float_dist(a, b) -> float:
    try:
        return abs(float(sympy.N(sympy.sympify(a) - sympy.sympify(b), 30)))
    except (TypeError, ValueError):
        return float("inf")
