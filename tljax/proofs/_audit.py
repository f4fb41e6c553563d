"""Rule audit: JAX's JVP and VJP (transpose) rules checked against sympy derivatives.

For each primitive tljax gives a real-number meaning to (the rule tables of the ``"exact"`` and
``"symbolic"`` semantics), a small program using it is traced three ways: forward, as
``jax.jvp`` and as ``jax.vjp``. All three jaxprs are evaluated in the symbolic semantics, and

- the JVP tangent must equal ``J t`` where ``J`` is sympy's Jacobian of the forward expression;
- the VJP cotangent must equal ``Jᵀ v``;
- ``⟨v, JVP(t)⟩ == ⟨VJP(v), t⟩`` (the VJP is the transpose of the JVP),

each as a symbolic identity (``simplify(difference) == 0``). Piecewise primitives are checked
on every piece (a substitution such as ``x = p`` or ``x = -p`` with ``p > 0``) and at the kinks,
where no derivative exists, JAX's value is reported as its convention and checked to lie between
the one-sided derivatives. A rule that agrees only up to a float32-rounded constant (JAX writes
``2/√π`` as a float32 literal in ``erf``'s rule) is reported as such (status ``"ok≈"``), with the
relative size of the discrepancy. A disagreement comes with a counterexample point.

Host-side (sympy); the full audit takes about 5-10 s on one CPU core.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import sympy
from jax import lax

from ..core import TljaxError, UnsupportedPrimitiveError, compat
from ..interpret import get_semantics
from ._symbolic_api import symbolic, symbols

compat.register_exclusion(__file__)

_P = sympy.Symbol("p", positive=True)  # the free parameter of a piece (x = p, x = -p, ...)
_Q = sympy.Symbol("q", positive=True)


@dataclasses.dataclass(frozen=True)
class Piece:
    """A region of the input space, given by substituting the inputs.

    Args:
      label: e.g. ``"x > 0"``.
      subs: ``subs(xs) -> {symbol: expression}`` with `xs` the list of input symbol arrays;
        expressions use the positive symbols ``p``/``q`` of this module (`PIECE_P`, `PIECE_Q`).
      kink: the piece is a point where the derivative need not exist (e.g. ``x = 0`` for `abs`);
        JAX's value there is reported as its convention.
    """

    label: str
    subs: Callable[[list], dict]
    kink: bool = False


PIECE_P, PIECE_Q = _P, _Q
_EVERYWHERE = (Piece("all x", lambda xs: {}),)


@dataclasses.dataclass(frozen=True)
class AuditCase:
    """A program exercising one primitive, and how to audit it.

    Args:
      name: the primitive name (the table row).
      fn: a JAX function of the differentiated inputs (other operands are closed over).
      shapes: shapes of the differentiated inputs.
      pieces: regions on which the derivative is checked (default: everywhere).
      convention: what JAX does at kinks, in words (for the table).
      zero: JAX defines the derivative as zero (floor, sign, stop_gradient): tangents and
        cotangents must be exactly 0; `convention` says why that differs from (or matches) calculus.
      modes: which of ``"jvp"``/``"vjp"`` JAX supports for `fn` (a `jax.custom_vjp` has no JVP).
      label: a short description of the program (e.g. ``"x @ y, (2,3)x(3,)"``).
    """

    name: str
    fn: Callable
    shapes: tuple
    pieces: tuple[Piece, ...] = _EVERYWHERE
    convention: str = ""
    zero: bool = False
    modes: tuple[str, ...] = ("jvp", "vjp")
    label: str = ""


@dataclasses.dataclass(frozen=True)
class AuditRow:
    """One line of the audit table.

    Attributes:
      primitive: the primitive (or function) audited.
      jvp, vjp, transpose: ``"ok"`` (symbolic identity), ``"ok≈"`` (equal up to a rounded
        constant, see `detail`), ``"FAIL"``, ``"n/a"`` (not auditable; `reason`), or ``"-"``
        (JAX has no such rule for this function).
      convention: JAX's value at kinks / by definition, when it matters.
      detail: what was checked, or why it failed.
      counterexample: for a FAIL, ``{symbol: value}`` with JAX's and sympy's results there.
    """

    primitive: str
    jvp: str
    vjp: str
    transpose: str
    convention: str = ""
    detail: str = ""
    counterexample: dict | None = None
    seconds: float = 0.0

    @property
    def auditable(self) -> bool:
        return self.jvp != "n/a" or self.vjp != "n/a"

    @property
    def passed(self) -> bool:
        st = [s for s in (self.jvp, self.vjp, self.transpose) if s not in ("-",)]
        return self.auditable and all(s in ("ok", "ok≈") for s in st)


# ----------------------------------------------------------------------------------------------
# Symbolic helpers.


def _flat(tree) -> list:
    """All scalar sympy expressions of a pytree of object arrays / expressions, in order."""
    out = []
    for leaf in jtu.tree_leaves(tree, is_leaf=lambda x: isinstance(x, sympy.Basic)):
        if isinstance(leaf, np.ndarray):
            out.extend(sympy.sympify(e) for e in leaf.reshape(-1))
        else:
            out.append(sympy.sympify(leaf))
    return out


def _floor_derivatives_to_zero(e):
    # d/dx floor(u) = 0 wherever it exists (between jumps); sympy leaves it unevaluated.
    return e.replace(
        lambda a: isinstance(a, sympy.Derivative) and a.expr.func in (sympy.floor, sympy.ceiling),
        lambda a: sympy.Integer(0),
    ).doit()


def is_zero(e) -> bool:
    """Whether a sympy expression is identically 0 (cheap expansions first, then `simplify`)."""
    e = sympy.sympify(e)
    if e == 0:
        return True
    if e.is_number and e.is_comparable:
        return bool(e == 0)
    try:
        if sympy.expand(e) == 0:
            return True
        if e.has(sympy.ceiling):
            e = e.rewrite(sympy.floor)  # ceiling(-z) = -floor(z) is not found by simplify
        s = sympy.simplify(e)
        if s == 0:
            return True
        return sympy.simplify(sympy.expand(sympy.piecewise_fold(s))) == 0
    except (TypeError, ValueError, NotImplementedError, RecursionError):
        return False


def _constant_ratio(got, expected):
    """got / expected when it simplifies to a number, else None."""
    try:
        r = sympy.simplify(got / expected)
    except (TypeError, ValueError, ZeroDivisionError, NotImplementedError):
        return None
    return r if (r.is_number and r.is_comparable) else None


def _compare(got: list, expected: list) -> tuple[str, str, int | None]:
    """("ok" | "ok≈" | "FAIL", detail, index of the first failing element)."""
    worst = 0.0
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        if is_zero(g - e):
            continue
        r = _constant_ratio(g, e) if e != 0 else None
        if r is not None and abs(float(r) - 1.0) < 1e-6:
            if abs(float(r) - 1.0) > abs(worst):
                worst = float(r) - 1.0
            continue
        return "FAIL", f"element {k}: JAX {g} != sympy {e}", k
    if worst:
        return (
            "ok≈",
            f"JAX's rule uses a float32-rounded constant: JAX/sympy = 1 {worst:+.1e}",
            None,
        )
    return "ok", "", None


def _free_symbols(exprs) -> list:
    syms: set = set()
    for e in exprs:
        syms |= sympy.sympify(e).free_symbols
    return sorted(syms, key=lambda s: s.name)


def _counterexample(got, expected, seed=0) -> dict | None:
    """A rational point where got != expected (numerically by a clear margin), if one is found."""
    rng = random.Random(seed)
    syms = _free_symbols([got, expected])
    for _ in range(20):
        point = {
            s: sympy.Rational(rng.randint(1, 9), rng.randint(1, 4))
            * (1 if (s.is_positive or rng.random() < 0.5) else -1)
            for s in syms
        }
        try:
            gv, ev = sympy.N(got.subs(point), 30), sympy.N(expected.subs(point), 30)
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if gv.is_comparable and ev.is_comparable and abs(gv - ev) > 1e-9 * (1 + abs(ev)):
            return {
                "point": {str(k): str(v) for k, v in point.items()},
                "jax": str(gv),
                "sympy": str(ev),
            }
    return None


def _coefficients(exprs: list, syms: list) -> list:
    """Linear coefficients of each expression in the given (tangent/cotangent) symbols."""
    return [[sympy.diff(e, s) for s in syms] for e in exprs]


# ----------------------------------------------------------------------------------------------
# The audit of one case.


def audit_case(case: AuditCase) -> AuditRow:
    """Audits one program; see the module docstring for what is checked.

    Example:
      >>> audit_case(AuditCase("sin", lax.sin, ((),))).jvp
      'ok'
    """
    t0 = time.perf_counter()
    try:
        row = _audit_case(case)
    except UnsupportedPrimitiveError as err:
        first = str(err).splitlines()[0]
        row = AuditRow(
            case.name, "n/a", "n/a", "n/a", detail=f"symbolic semantics cannot evaluate: {first}"
        )
    except NotImplementedError as err:  # raised by JAX while tracing the JVP/VJP
        first = str(err).splitlines()[0]
        row = AuditRow(case.name, "n/a", "n/a", "n/a", detail=f"JAX has no rule: {first}")
    return dataclasses.replace(row, seconds=time.perf_counter() - t0)


def _audit_case(case: AuditCase) -> AuditRow:
    xs = [symbols(f"x{i}", s) for i, s in enumerate(case.shapes)]
    ts = [symbols(f"t{i}", s) for i, s in enumerate(case.shapes)]
    fn = case.fn
    fwd = symbolic(fn, *xs)
    F = _flat(fwd)
    x_flat, t_flat = _flat(xs), _flat(ts)
    vs = jtu.tree_map(
        lambda o: symbols("v", np.shape(o)),
        fwd,
        is_leaf=lambda x: isinstance(x, sympy.Basic | np.ndarray),
    )
    v_flat = _flat(vs)
    # Sympy's Jacobian of the forward expression (the independent reference).
    J = [[_floor_derivatives_to_zero(sympy.diff(f, x)) for x in x_flat] for f in F]
    exp_jvp = [sympy.Add(*(J[o][i] * t_flat[i] for i in range(len(x_flat)))) for o in range(len(F))]
    exp_vjp = [sympy.Add(*(v_flat[o] * J[o][i] for o in range(len(F)))) for i in range(len(x_flat))]

    got_jvp = got_vjp = None
    if "jvp" in case.modes:
        _, tangent = symbolic(lambda xs_, ts_: jax.jvp(fn, tuple(xs_), tuple(ts_)), xs, ts)
        got_jvp = _flat(tangent)
    if "vjp" in case.modes:
        out_types = jax.eval_shape(fn, *(jnp.zeros(np.shape(x), jnp.float32) for x in xs))

        def pullback(xs_, v_):
            # Cotangents must have the outputs' dtypes; the cast is the identity over the reals.
            v_ = jtu.tree_map(lambda v, o: v.astype(o.dtype), v_, out_types)
            return jax.vjp(fn, *xs_)[1](v_)

        ct = symbolic(pullback, xs, vs)
        got_vjp = _flat(ct)

    notes, cex = [], None
    status = {}
    conventions = []
    for mode, got, exp, dual in (
        ("jvp", got_jvp, exp_jvp, t_flat),
        ("vjp", got_vjp, exp_vjp, v_flat),
    ):
        if got is None:
            status[mode] = "-"
            continue
        if case.zero:
            ok = all(is_zero(g) for g in got)
            status[mode] = "ok" if ok else "FAIL"
            if not ok:
                notes.append(f"{mode}: expected JAX's defined derivative 0, got {got}")
            continue
        st, detail, c = _check_pieces(case, xs, got, exp, dual, conventions, mode)
        status[mode] = st
        if detail:
            notes.append(f"{mode}: {detail}")
        if st == "FAIL" and cex is None and c is not None:
            cex = c
    # Transpose: <v, JVP(t)> == <VJP(v), t>, as a polynomial identity in v and t.
    if got_jvp is not None and got_vjp is not None:
        lhs = sympy.Add(*(v * g for v, g in zip(v_flat, got_jvp, strict=True)))
        rhs = sympy.Add(*(c * t for c, t in zip(got_vjp, t_flat, strict=True)))
        st, detail, c = _check_pieces(case, xs, [lhs], [rhs], [], [], "transpose", kinks_too=True)
        status["transpose"] = st
        if st == "FAIL":
            notes.append(f"transpose: {detail}")
            cex = cex or c
    else:
        status["transpose"] = "-"
    convention = case.convention
    if conventions:
        convention = "; ".join(filter(None, [convention, *dict.fromkeys(conventions)]))
    return AuditRow(
        case.name,
        status["jvp"],
        status["vjp"],
        status["transpose"],
        convention=convention,
        detail="; ".join(notes) or (case.label or ""),
        counterexample=cex,
    )


def _check_pieces(case, xs, got, exp, dual, conventions, mode, kinks_too=False):
    """Compares `got` with `exp` on every piece; at kinks, records JAX's value as a convention."""
    worst = "ok"
    details = []
    smooth_values = []  # per smooth piece: coefficients at p -> 0 (one-sided derivatives)
    for piece in case.pieces:
        sub = piece.subs(xs)
        g = [sympy.sympify(e).subs(sub) for e in got]
        e = [sympy.sympify(x).subs(sub) for x in exp]
        if piece.kink and not kinks_too:
            coeffs = _coefficients(g, dual)
            conventions.append(f"at {piece.label}: {mode} coefficients {_short(coeffs)}")
            lo_hi_ok = _within_one_sided(coeffs, smooth_values)
            if lo_hi_ok is False:
                worst = "FAIL"
                details.append(
                    f"at {piece.label} JAX's {mode} {_short(coeffs)} is outside the "
                    "one-sided derivatives"
                )
            continue
        st, detail, k = _compare(g, e)
        if st == "FAIL":
            c = _counterexample(g[k], e[k])
            return "FAIL", f"on {piece.label}: {detail}", c
        if st == "ok≈" and worst == "ok":
            worst = "ok≈"
            details.append(detail)
        if not piece.kink:
            smooth_values.append(_coefficients([sympy.sympify(x).subs(_P, 0) for x in e], dual))
    return worst, "; ".join(details), None


def _short(coeffs) -> str:
    rows = ["[" + ", ".join(str(sympy.simplify(c)) for c in row) + "]" for row in coeffs]
    return rows[0] if len(rows) == 1 else "[" + ", ".join(rows) + "]"


def _within_one_sided(coeffs, smooth_values) -> bool | None:
    """Each kink coefficient lies between the min and max of the adjacent one-sided limits."""
    if len(smooth_values) < 2:
        return None
    flat = [c for row in coeffs for c in row]
    sides = [[c for row in sv for c in row] for sv in smooth_values]
    for k, c in enumerate(flat):
        vals = [s[k] for s in sides]
        if not all(v.is_number and v.is_comparable for v in [*vals, sympy.sympify(c)]):
            return None
        if not (min(vals) <= c <= max(vals)):
            return False
    return True


# ----------------------------------------------------------------------------------------------
# The catalogue: one small program per primitive.


def _sub_each(expr_of_p):
    """A piece substituting every scalar input symbol by `expr_of_p` (domain restriction)."""
    return lambda xs: {s: expr_of_p for arr in xs for s in arr.reshape(-1)}


def _p(label, f, kink=False):
    return Piece(label, f, kink)


_POSITIVE = (_p("x > 0", _sub_each(_P)),)
_UNIT = (_p("0 < x < 1", _sub_each(_P / (1 + _P))),)
_ABOVE_ONE = (_p("x > 1", _sub_each(1 + _P)),)
_SIGN_PIECES = (
    _p("x < 0", _sub_each(-_P)),
    _p("x > 0", _sub_each(_P)),
    _p("x = 0", _sub_each(sympy.Integer(0)), kink=True),
)


def _two_way(name_lt, name_gt, name_eq):
    """Pieces ordering two scalar inputs x0, x1: x0 < x1, x0 > x1, x0 = x1 (kink)."""

    def subs(delta):
        def f(xs):
            a = [s for arr in xs for s in arr.reshape(-1)]
            return {a[0]: a[1] + delta}

        return f

    return (
        _p(name_lt, subs(-_P)),
        _p(name_gt, subs(_P)),
        _p(name_eq, subs(sympy.Integer(0)), kink=True),
    )


_ORDER2 = _two_way("x0 < x1", "x0 > x1", "x0 = x1 (tie)")


def _scatter_order():
    # Operand element x0_1 against the update x1_0 written onto it.
    def subs(delta):
        return lambda xs: {xs[0][1]: xs[1][0] + delta}

    return (
        _p("x < u", subs(-_P)),
        _p("x > u", subs(_P)),
        _p("x = u (tie)", subs(sympy.Integer(0)), kink=True),
    )


_ORDER2_SCATTER = _scatter_order()


def _ordering(ranks):
    """A piece where the (flattened) input k equals y + ranks[k] * p: one strict ordering."""
    y = sympy.Symbol("y", real=True)

    def subs(xs):
        flat = [s for arr in xs for s in arr.reshape(-1)]
        return {s: y + r * _P for s, r in zip(flat, ranks, strict=True)}

    return _p(f"ranks {tuple(ranks)}", subs)


# Smooth functions whose JAX rule branches on the order of the inputs (via max/abs).
_ORDER2_SMOOTH = tuple(dataclasses.replace(p, kink=False) for p in _ORDER2)


def _select_pieces():
    def c_is(val):
        return lambda xs: {xs[0][()]: val}

    return (
        _p("c < 0", c_is(-_P)),
        _p("c > 0", c_is(_P)),
        _p("c = 0", c_is(sympy.Integer(0)), kink=True),
    )


def _clamp_pieces():
    return (
        _p("x < 0", _sub_each(-_P)),
        _p("0 < x < 1", _sub_each(_P / (1 + _P))),
        _p("x > 1", _sub_each(1 + _P)),
        _p("x = 0", _sub_each(sympy.Integer(0)), kink=True),
        _p("x = 1", _sub_each(sympy.Integer(1)), kink=True),
    )


def _rem_pieces():
    def f(sign):
        return lambda xs: {xs[0][()]: sign * _P, xs[1][()]: _Q}

    return (_p("x > 0, y > 0", f(1)), _p("x < 0, y > 0", f(-1)))


def _bind(prim, **params):
    """`prim.bind` with fixed params; a primitive missing from this JAX version fails when called
    (the row then reads "JAX has no rule")."""

    def call(*a):
        if prim is None:
            raise NotImplementedError("this JAX version has no such primitive")
        return prim.bind(*a, **params)

    return call


def default_cases() -> list[AuditCase]:
    """The built-in audit programs, one or more per primitive."""
    S, V2, V3, V4, M23 = (), (2,), (3,), (4,), (2, 3)
    C = AuditCase
    cases = [
        C("neg", lax.neg, (S,)),
        C("exp", lax.exp, (S,)),
        C("exp2", lax.exp2, (S,)),
        C("log", lax.log, (S,), _POSITIVE),
        C("log1p", lax.log1p, (S,), _POSITIVE),
        C("expm1", lax.expm1, (S,)),
        C("tanh", lax.tanh, (S,)),
        C("logistic", lax.logistic, (S,)),
        C("sin", lax.sin, (S,)),
        C("cos", lax.cos, (S,)),
        C("tan", lax.tan, (S,)),
        C("asin", lax.asin, (S,), _UNIT),
        C("acos", lax.acos, (S,), _UNIT),
        C("atan", lax.atan, (S,)),
        C("sinh", lax.sinh, (S,)),
        C("cosh", lax.cosh, (S,)),
        C("asinh", lax.asinh, (S,)),
        C("acosh", lax.acosh, (S,), _ABOVE_ONE),
        C("atanh", lax.atanh, (S,), _UNIT),
        C("sqrt", lax.sqrt, (S,), _POSITIVE),
        C("rsqrt", lax.rsqrt, (S,), _POSITIVE),
        C("cbrt", lax.cbrt, (S,), _POSITIVE),
        C("erf", lax.erf, (S,)),
        C("erfc", lax.erfc, (S,)),
        C("erf_inv", lax.erf_inv, (S,), _UNIT),
        C("square", lax.square, (S,)),
        *(
            [C("one_minus_square", _bind(compat.one_minus_square_p), (S,))]
            if compat.one_minus_square_p is not None  # JAX 0.11+ (tanh's derivative)
            else []
        ),
        C("integer_pow", lambda x: lax.integer_pow(x, 3), (S,), label="x**3"),
        C("integer_pow", lambda x: lax.integer_pow(x, -2), (S,), _POSITIVE, label="x**-2"),
        C("add", lax.add, (S, S)),
        C("add_any", _bind(compat.add_any_p), (V2, V2)),
        C("sub", lax.sub, (S, S)),
        C("mul", lax.mul, (S, S)),
        C("div", lax.div, (S, S)),
        C("pow", lax.pow, (S, S), (_p("x > 0", lambda xs: {xs[0][()]: _P}),)),
        C("atan2", lax.atan2, (S, S)),
        C(
            "rem",
            lax.rem,
            (S, S),
            _rem_pieces(),
            convention="d rem/dy = -trunc(x/y); rem jumps where x/y is an integer "
            "(derivative of floor taken as 0 between jumps)",
        ),
        C("abs", lax.abs, (S,), _SIGN_PIECES, convention="JAX: abs'(0) = 1 (select on x >= 0)"),
        C("max", lax.max, (S, S), _ORDER2, convention="JAX splits ties: 0.5 to each operand"),
        C("min", lax.min, (S, S), _ORDER2, convention="JAX splits ties: 0.5 to each operand"),
        C(
            "relu (jax.nn.relu)",
            jax.nn.relu,
            (S,),
            _SIGN_PIECES,
            convention="custom_jvp: relu'(0) = 0",
        ),
        C(
            "select_n",
            lambda c, a, b: lax.select_n(c > 0, b, a),
            (S, S, S),
            _select_pieces(),
            convention="select_n(c > 0, b, a): at c = 0 the tangent follows case 0 (false)",
        ),
        C(
            "clamp",
            lambda x: lax.clamp(0.0, x, 1.0),
            (S,),
            _clamp_pieces(),
            convention="clamp'(x) = 0 at both bounds (strict inequalities in JAX's rule)",
        ),
        C(
            "sign",
            lax.sign,
            (S,),
            _SIGN_PIECES,
            zero=True,
            convention="derivative 0 everywhere, also at 0 (sympy: 2·δ(x) there)",
        ),
        C(
            "floor",
            lax.floor,
            (S,),
            zero=True,
            convention="derivative 0; none exists at integers (jumps)",
        ),
        C(
            "ceil",
            lax.ceil,
            (S,),
            zero=True,
            convention="derivative 0; none exists at integers (jumps)",
        ),
        C(
            "round",
            lax.round,
            (S,),
            zero=True,
            convention="derivative 0; none exists at half-integers",
        ),
        C(
            "stop_gradient",
            lax.stop_gradient,
            (V2,),
            zero=True,
            convention="by definition: derivative 0, although the value is the identity's",
        ),
        C("convert_element_type", lambda x: x.astype(jnp.float16), (V2,), label="f32 -> f16"),
        C("copy", _bind(getattr(lax, "copy_p", None)), (V2,)),
        C("dot_general", lambda a, b: a @ b, (M23, V3), label="(2,3) @ (3,)"),
        C(
            "dot_general",
            lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
            ((2, 1, 2), (2, 2, 1)),
            label="batched",
        ),
        C("reduce_sum", lambda x: jnp.sum(x, axis=1), (M23,)),
        C(
            "reduce_max",
            jnp.max,
            (V2,),
            _ORDER2,
            convention="JAX splits ties equally among the maxima",
        ),
        C(
            "reduce_min",
            jnp.min,
            (V2,),
            _ORDER2,
            convention="JAX splits ties equally among the minima",
        ),
        C("reduce_prod", jnp.prod, (V3,)),
        C("cumsum", jnp.cumsum, (V3,)),
        C("cumprod", jnp.cumprod, (V3,)),
        C(
            "cummax",
            lambda x: lax.cummax(x, axis=0),
            (V2,),
            _ORDER2,
            convention="ties split 0.5/0.5 between the tied inputs (as max)",
        ),
        C(
            "cummin",
            lambda x: lax.cummin(x, axis=0),
            (V2,),
            _ORDER2,
            convention="ties split 0.5/0.5 between the tied inputs (as min)",
        ),
        C(
            "cumlogsumexp",
            lambda x: lax.cumlogsumexp(x, axis=0),
            (V2,),
            _ORDER2_SMOOTH,
            label="smooth; JAX's rule branches on max(x0, x1), so checked on x0 <, >, = x1",
        ),
        C("reshape", lambda x: x.reshape(3, 2), (M23,)),
        C("broadcast_in_dim", lambda x: jnp.broadcast_to(x, (2, 3)), (V3,)),
        C("transpose", lambda x: x.T, (M23,)),
        C("squeeze", lambda x: jnp.squeeze(x, 0), ((1, 3),)),
        C("rev", lambda x: jnp.flip(x), (V3,)),
        C("slice", lambda x: x[1:3], (V4,)),
        C("dynamic_slice", lambda x: lax.dynamic_slice(x, (1,), (2,)), (V4,)),
        C("dynamic_update_slice", lambda x, u: lax.dynamic_update_slice(x, u, (1,)), (V4, V2)),
        C("concatenate", lambda x, y: jnp.concatenate([x, y]), (V2, V3)),
        C("stack", lambda x, y: jnp.stack([x, y]), (V2, V2)),
        C("split", lambda x: tuple(jnp.split(x, 2)), (V4,)),
        C("unstack", lambda x: tuple(_bind(getattr(lax, "unstack_p", None), axis=0)(x)), (M23,)),
        C(
            "pad",
            lambda x, c: lax.pad(x, c, [(1, -1, 1)]),
            (V3, S),
            label="interior and negative padding",
        ),
        C("gather", lambda x: x[jnp.array([2, 0, 2])], (V3,), label="x[[2, 0, 2]]"),
        C("scatter-add", lambda x, u: x.at[jnp.array([0, 2, 0])].add(u), (V3, V3)),
        C("scatter", lambda x, u: x.at[jnp.array([0, 2])].set(u), (V3, V2)),
        C(
            "scatter-mul",
            lambda x, u: x.at[jnp.array([0, 2])].multiply(u, unique_indices=True),
            (V3, V2),
            label="unique indices (JAX has no rule otherwise)",
        ),
        C(
            "scatter-max",
            lambda x, u: x.at[jnp.array([1])].max(u),
            (V2, (1,)),
            _ORDER2_SCATTER,
            convention="ties split 0.5/0.5 between operand and update (as max)",
        ),
        C(
            "scatter-min",
            lambda x, u: x.at[jnp.array([1])].min(u),
            (V2, (1,)),
            _ORDER2_SCATTER,
            convention="ties split 0.5/0.5 between operand and update (as min)",
        ),
        C("tile", lambda x: jnp.tile(x, 2), (V2,)),
        C("lgamma", lax.lgamma, (S,), _POSITIVE),
        C("digamma", lax.digamma, (S,), _POSITIVE),
        C(
            "polygamma",
            lambda x: lax.polygamma(jnp.float32(1.0), x),
            (S,),
            _POSITIVE,
            label="polygamma(1, x)",
        ),
        C("device_put", jax.device_put, (V2,)),
        C("optimization_barrier", lambda x: lax.optimization_barrier(x), (V2,)),
        C(
            "conv_general_dilated",
            lambda x, w: lax.conv_general_dilated(x, w, (1,), "SAME"),
            ((1, 1, 3), (1, 1, 2)),
            label="1-d, SAME padding",
        ),
        C(
            "reduce_window_sum",
            lambda x: lax.reduce_window(x, 0.0, lax.add, (2,), (1,), "VALID"),
            (V3,),
        ),
        C(
            "reduce_window_max",
            lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2, 2), (1, 1), "SAME"),
            ((2, 2),),
            (_ordering((3, 1, 0, 2)), _ordering((0, 2, 3, 1)), _ordering((1, 3, 2, 0))),
            convention="ties: one input takes the whole tangent, in XLA's reduction order "
            "(not audited: the "
            "symbolic rule picks the first)",
        ),
        C(
            "reduce_window_min",
            lambda x: lax.reduce_window(x, jnp.inf, lax.min, (2,), (1,), "VALID"),
            (V3,),
            (_ordering((2, 0, 1)), _ordering((0, 1, 2)), _ordering((1, 2, 0))),
            convention="as reduce_window_max",
        ),
    ]
    return cases


# Primitives whose outputs are booleans or integers: no tangent space (JAX uses float0).
_NON_DIFFERENTIABLE = {
    "eq": "boolean output",
    "ne": "boolean output",
    "lt": "boolean output",
    "le": "boolean output",
    "gt": "boolean output",
    "ge": "boolean output",
    "and": "boolean/integer output",
    "or": "boolean/integer output",
    "xor": "boolean/integer output",
    "not": "boolean/integer output",
    "is_finite": "boolean output",
    "reduce_and": "boolean output",
    "reduce_or": "boolean output",
    "argmax": "integer output",
    "argmin": "integer output",
    "iota": "no inputs (integer output)",
    "reduce_xor": "boolean output",
}
# Differentiable in JAX, but outside what a real-number audit can say.
_NOT_AUDITABLE = {
    "reduce_precision": "a rounding to a float format: piecewise constant over the reals, "
    "no closed form over symbols",
    "nextafter": "a float bit-level step: no real-number meaning",
    "bitcast_convert_type": "a bit reinterpretation: no real-number meaning",
    "select_and_gather_add": "JAX-internal: the JVP of reduce_window_max/min (audited there)",
    "select_and_scatter_add": "JAX-internal: the VJP of reduce_window_max/min (audited there)",
    "sort": "needs concrete keys in the symbolic semantics (its derivative is a permutation)",
    "sharding_constraint": "needs a device mesh to trace; the identity on values",
}


def audited_primitives() -> dict[str, str]:
    """``{primitive name: semantics}`` for every primitive with an exact or symbolic rule."""
    out: dict[str, str] = {}
    for sem_name in ("exact", "symbolic"):
        try:
            sem = get_semantics(sem_name)
        except TljaxError:
            continue
        for p in sem.rules:
            out.setdefault(p.name, sem_name)
    return out


def audit_rules(
    cases: Sequence[AuditCase] | None = None, *, names: Sequence[str] | None = None
) -> list[AuditRow]:
    """Audits JAX's JVP and VJP rules for every primitive tljax's exact/symbolic semantics support.

    Args:
      cases: audit programs (default `default_cases()`).
      names: restrict to these primitive names (rows for other primitives are omitted).

    Returns:
      One `AuditRow` per audit program, plus one ``"n/a"`` row (with the reason) for each
      supported primitive that cannot be audited. Use `format_audit` to print it.

    Example:
      >>> rows = audit_rules(names=["sin", "abs"])
      >>> [(r.primitive, r.jvp, r.vjp) for r in rows]
      [('sin', 'ok', 'ok'), ('abs', 'ok', 'ok')]
    """
    cases = list(default_cases() if cases is None else cases)
    want = None if names is None else set(names)
    rows = []
    covered = set()
    for c in cases:
        base = c.name.split(" ")[0]
        if want is not None and c.name not in want and base not in want:
            continue
        covered.add(base)
        rows.append(audit_case(c))
    for name, sem in sorted(audited_primitives().items()):
        if name in covered or (want is not None and name not in want):
            continue
        reason = _NON_DIFFERENTIABLE.get(name)
        if reason:
            why = f"not differentiable: {reason}"
        else:
            why = _NOT_AUDITABLE.get(name, f"no audit program (rule in {sem!r})")
        rows.append(AuditRow(name, "n/a", "n/a", "n/a", detail=why))
    return rows


def audit_totals(rows: Sequence[AuditRow]) -> dict[str, int]:
    """``{"rows", "audited", "passed", "approx", "failed", "not_auditable"}`` counts of a table."""
    audited = [r for r in rows if r.auditable]
    return {
        "rows": len(rows),
        "audited": len(audited),
        "passed": sum(r.passed for r in audited),
        "approx": sum(r.passed and "ok≈" in (r.jvp, r.vjp) for r in audited),
        "failed": sum(not r.passed for r in audited),
        "not_auditable": len(rows) - len(audited),
    }


def format_audit(rows: Sequence[AuditRow]) -> str:
    """The audit table as text, with totals.

    Example:
      >>> print(format_audit(audit_rules(names=["sin"])))
    """
    table = [("primitive", "jvp", "vjp", "transpose", "convention / detail")]
    for r in rows:
        text = "; ".join(filter(None, [r.convention, r.detail]))
        if r.counterexample:
            text += f" | counterexample: {r.counterexample}"
        table.append((r.primitive, r.jvp, r.vjp, r.transpose, text))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4] for row in table]
    t = audit_totals(rows)
    lines.append(
        f"{t['audited']} audited, {t['passed']} passed ({t['approx']} up to a rounded constant), "
        f"{t['failed']} failed, {t['not_auditable']} not auditable"
    )
    return "\n".join(lines)
