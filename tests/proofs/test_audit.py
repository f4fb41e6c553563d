"""The JVP/VJP rule audit: totals, conventions at kinks, and wrong rules caught."""

import jax
import jax.numpy as jnp
import pytest
import sympy
from jax.extend.core import Primitive
from jax.interpreters import ad

from tljax.interpret._registry import register_rule
from tljax.proofs._audit import (
    PIECE_P,
    AuditCase,
    Piece,
    audit_case,
    audit_rules,
    audit_totals,
    audited_primitives,
    format_audit,
)


@pytest.fixture(scope="module")
def table():
    return audit_rules()


def test_audit_table_totals(table):
    t = audit_totals(table)
    rows = {r.primitive: r for r in table}
    assert t["failed"] == 0, format_audit([r for r in table if r.auditable and not r.passed])
    assert t["audited"] >= 85 and t["passed"] == t["audited"]
    assert t["rows"] == t["audited"] + t["not_auditable"]
    # Every primitive with an exact or symbolic rule has a row (audited or with a reason).
    names = {r.primitive.split(" ")[0] for r in table}
    assert set(audited_primitives()) <= names
    for r in table:
        if not r.auditable:
            assert r.detail, f"{r.primitive} is not auditable but gives no reason"
    assert rows["lt"].detail == "not differentiable: boolean output"
    assert "no closed form" in rows["reduce_precision"].detail


def test_exact_rules_and_rounded_constants(table):
    rows = {}
    for r in table:
        rows.setdefault(r.primitive, r)
    for name in (
        "exp",
        "tanh",
        "logistic",
        "dot_general",
        "gather",
        "scatter-add",
        "pad",
        "cumprod",
    ):
        assert (rows[name].jvp, rows[name].vjp, rows[name].transpose) == ("ok", "ok", "ok"), name
    # JAX writes 2/sqrt(pi) as a float32 literal in erf's rule: equal only up to that rounding.
    assert rows["erf"].jvp == "ok≈" and "float32-rounded constant" in rows["erf"].detail


def test_kink_conventions_are_reported(table):
    rows = {r.primitive: r for r in table}
    assert "relu'(0) = 0" in rows["relu (jax.nn.relu)"].convention
    assert "at x = 0: jvp coefficients [0]" in rows["relu (jax.nn.relu)"].convention
    assert "at x0 = x1 (tie): jvp coefficients [1/2, 1/2]" in rows["max"].convention
    assert "at x = 0: jvp coefficients [1]" in rows["abs"].convention  # abs'(0) = 1 in JAX


def test_format_audit_prints_rows_and_totals(table):
    text = format_audit(table)
    assert text.splitlines()[0].split()[:4] == ["primitive", "jvp", "vjp", "transpose"]
    assert "audited" in text.splitlines()[-1] and "not auditable" in text.splitlines()[-1]


def test_wrong_sign_custom_vjp_is_caught_with_a_counterexample():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (-jnp.cos(x) * g,))  # sign error
    row = audit_case(AuditCase("bad_sin (custom_vjp)", f, ((),), modes=("vjp",)))
    assert row.vjp == "FAIL" and row.jvp == "-" and not row.passed
    cex = row.counterexample
    x, v = (sympy.Rational(cex["point"][k]) for k in ("x0", "v"))
    assert abs(float(cex["jax"]) - float(-sympy.cos(x) * v)) < 1e-12  # JAX's (wrong) value there
    assert abs(float(cex["sympy"]) - float(sympy.cos(x) * v)) < 1e-12


def test_wrong_custom_jvp_is_caught():
    @jax.custom_jvp
    def g(x):
        return x * x

    g.defjvp(lambda p, t: (p[0] * p[0], p[0] * t[0]))  # should be 2 x t
    row = audit_case(AuditCase("bad_square (custom_jvp)", g, ((),)))
    assert row.jvp == "FAIL" and row.vjp == "FAIL" and row.counterexample is not None


_bad_p = Primitive("tljax_test_bad_exp")
_bad_p.def_impl(jnp.exp)
_bad_p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
ad.defjvp(_bad_p, lambda g, x: -g * jnp.exp(x))  # wrong sign in the primitive's own JVP rule


def _bad_symbolic(ctx, x):
    from tljax.interpret._symbolic import _map

    return _map(sympy.exp, x)


def test_wrong_jvp_rule_of_a_custom_primitive_is_caught():
    register_rule("symbolic", _bad_p)(_bad_symbolic)  # its forward meaning: exp
    row = audit_case(AuditCase("tljax_test_bad_exp", _bad_p.bind, ((),), modes=("jvp",)))
    assert row.jvp == "FAIL"
    assert row.counterexample is not None and "point" in row.counterexample


def test_piecewise_case_checks_every_piece():
    # A deliberately wrong piecewise function: JAX's rule is fine, so this must pass; a kink at 0.
    row = audit_case(
        AuditCase(
            "leaky",
            lambda x: jnp.where(x > 0, x, 0.25 * x),
            ((),),
            (
                Piece("x < 0", lambda xs: {xs[0][()]: -PIECE_P}),
                Piece("x > 0", lambda xs: {xs[0][()]: PIECE_P}),
                Piece("x = 0", lambda xs: {xs[0][()]: 0}, kink=True),
            ),
        )
    )
    assert row.passed and "at x = 0: jvp coefficients [1/4]" in row.convention


def test_restricting_by_name():
    rows = audit_rules(names=["sin", "lt"])
    assert [(r.primitive, r.jvp) for r in rows] == [("sin", "ok"), ("lt", "n/a")]
