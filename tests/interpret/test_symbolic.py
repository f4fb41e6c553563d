"""The symbolic semantics: each covered primitive against sympy (or numpy) computed directly."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from jax import lax

from tljax.core import UnsupportedPrimitiveError
from tljax.interpret._registry import get_semantics
from tljax.interpret._symbolic import rules, to_sympy
from tljax.proofs._symbolic_api import bindings, substitute, symbolic, symbols

x, y, z = (symbols(n)[()] for n in "xyz")
p = sympy.Symbol("p", positive=True)
R = sympy.Rational


def same(a, b) -> bool:
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


def test_registered_under_its_name():
    sem = get_semantics("symbolic")
    assert sem.name == "symbolic" and lax.exp_p in sem.rules and not sem.traceable


def test_float_literals_are_exact_rationals():
    out = symbolic(lambda v: v * 0.1, x)
    assert out == x * R(13421773, 134217728)  # float32(0.1), never the decimal 1/10
    assert to_sympy(np.float32(-np.inf)) == -sympy.oo
    assert to_sympy(np.float32(1e-45)) == R(1, 2**149)


UNARY = [
    ("neg", lax.neg, lambda a: -a),
    ("abs", lax.abs, sympy.Abs),
    ("sign", lax.sign, sympy.sign),
    ("floor", lax.floor, sympy.floor),
    ("ceil", lax.ceil, sympy.ceiling),
    ("exp", lax.exp, sympy.exp),
    ("exp2", lax.exp2, lambda a: 2**a),
    ("log", lax.log, sympy.log),
    ("log1p", lax.log1p, lambda a: sympy.log(a + 1)),
    ("expm1", lax.expm1, lambda a: sympy.exp(a) - 1),
    ("tanh", lax.tanh, sympy.tanh),
    ("logistic", lax.logistic, lambda a: 1 / (1 + sympy.exp(-a))),
    ("sin", lax.sin, sympy.sin),
    ("cos", lax.cos, sympy.cos),
    ("tan", lax.tan, sympy.tan),
    ("atan", lax.atan, sympy.atan),
    ("sinh", lax.sinh, sympy.sinh),
    ("asinh", lax.asinh, sympy.asinh),
    ("erf", lax.erf, sympy.erf),
    ("erfc", lax.erfc, sympy.erfc),
    ("erf_inv", lax.erf_inv, sympy.erfinv),
    ("sqrt", lax.sqrt, sympy.sqrt),
    ("rsqrt", lax.rsqrt, lambda a: a ** R(-1, 2)),
    ("square", lax.square, lambda a: a * a),
    ("integer_pow", lambda v: lax.integer_pow(v, 3), lambda a: a**3),
    ("integer_pow-neg", lambda v: lax.integer_pow(v, -2), lambda a: 1 / a**2),
    ("lgamma", lax.lgamma, sympy.loggamma),
    ("stop_gradient", lax.stop_gradient, lambda a: a),
    ("acos", lax.acos, sympy.acos),
    ("acosh", lax.acosh, sympy.acosh),
    ("atanh", lax.atanh, sympy.atanh),
    ("asin", lax.asin, sympy.asin),
    ("cosh", lax.cosh, sympy.cosh),
    ("cbrt", lax.cbrt, lambda a: sympy.sign(a) * sympy.Abs(a) ** R(1, 3)),
    ("digamma", lax.digamma, sympy.digamma),
    ("polygamma", lambda v: lax.polygamma(jnp.float32(2.0), v), lambda a: sympy.polygamma(2, a)),
    (
        "round",
        lambda v: lax.round(v),
        lambda a: sympy.sign(a) * sympy.floor(sympy.Abs(a) + R(1, 2)),
    ),
    ("device_put", jax.device_put, lambda a: a),
    ("optimization_barrier", lax.optimization_barrier, lambda a: a),
    (
        "cumlogsumexp",
        lambda v: lax.cumlogsumexp(v[None], axis=0)[0],
        lambda a: sympy.log(sympy.exp(a)),
    ),
    ("relu", jax.nn.relu, lambda a: sympy.Max(a, 0)),
    ("clamp", lambda v: lax.clamp(-1.0, v, 2.0), lambda a: sympy.Min(sympy.Max(a, -1), 2)),
]


@pytest.mark.parametrize("name,fn,ref", UNARY, ids=[u[0] for u in UNARY])
def test_unary_primitives_match_sympy(name, fn, ref):
    assert same(symbolic(fn, x), ref(x)), name


BINARY = [
    ("add", lax.add, lambda a, b: a + b),
    ("sub", lax.sub, lambda a, b: a - b),
    ("mul", lax.mul, lambda a, b: a * b),
    ("div", lax.div, lambda a, b: a / b),
    ("pow", lax.pow, lambda a, b: a**b),
    ("max", lax.max, sympy.Max),
    ("min", lax.min, sympy.Min),
    ("atan2", lax.atan2, sympy.atan2),
]


@pytest.mark.parametrize("name,fn,ref", BINARY, ids=[b[0] for b in BINARY])
def test_binary_primitives_match_sympy(name, fn, ref):
    assert same(symbolic(fn, x, y), ref(x, y)), name


def test_comparisons_and_select_n_are_piecewise():
    out = symbolic(lambda a, b: jnp.where(a < b, a * 2.0, b), x, y)
    expected = sympy.Piecewise((2 * x, x < y), (y, True))
    assert out == expected
    # Case 0 is the false branch; the predicate decides once its symbols are known.
    assert out.subs({x: 1, y: 3}) == 2 and out.subs({x: 3, y: 1}) == 1
    eq = symbolic(lambda a, b: jnp.where(a == b, 1.0, 0.0), x, y)
    assert eq.subs({x: 2, y: 2}) == 1 and eq.subs({x: 2, y: 5}) == 0


def test_integer_division_truncates_toward_zero_and_rem_follows_the_dividend():
    q = symbolic(lambda a, b: lax.div(a, b), np.int32([7, -7]), np.int32([2, 2]))
    r = symbolic(lambda a, b: lax.rem(a, b), np.float32([7.5, -7.5]), np.float32([2.0, 2.0]))
    assert list(q) == [3, -3]
    assert list(r) == [R(3, 2), R(-3, 2)]  # C fmod: sign of the dividend


def test_convert_element_type_truncates_to_int_and_maps_bools():
    out = symbolic(
        lambda a: (a.astype(jnp.int32), (a > 0).astype(jnp.float32)), np.float32([-2.5, 2.5])
    )
    assert list(out[0]) == [-2, 2] and list(out[1]) == [0, 1]


def test_dot_general_with_batch_and_contracting_dims():
    A, B = symbols("A", (2, 2, 3)), symbols("B", (2, 3, 2))
    out = symbolic(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), A, B)
    for b, i, k in np.ndindex(2, 2, 2):
        assert sympy.expand(out[b, i, k] - sum(A[b, i, j] * B[b, j, k] for j in range(3))) == 0
    # Contracting the leading dims of both (a transposed product) too.
    out2 = symbolic(lambda a, b: lax.dot_general(a, b, (((0,), (0,)), ((), ()))), A[0], B[0].T)
    assert sympy.expand(out2[1, 2] - sum(A[0][j, 1] * B[0].T[j, 2] for j in range(2))) == 0


def test_reductions():
    v = symbols("v", (2, 3))
    s, mx, mn, pr = symbolic(lambda a: (a.sum(1), a.max(1), a.min(0), a.prod()), v)
    assert s[0] == v[0, 0] + v[0, 1] + v[0, 2]
    assert mx[1] == sympy.Max(*v[1])
    assert mn[2] == sympy.Min(v[0, 2], v[1, 2])
    assert pr == sympy.Mul(*v.reshape(-1))


def test_argmax_needs_concrete_values():
    assert symbolic(jnp.argmax, np.float32([1.0, 5.0, 5.0, 2.0])) == 1  # first maximum, as XLA
    with pytest.raises(UnsupportedPrimitiveError, match=re.escape("argmax of non-concrete values")):
        symbolic(jnp.argmax, symbols("v", 3))


def test_cumulative_ops():
    v = symbols("v", 3)
    cs, cm, rc = symbolic(lambda a: (jnp.cumsum(a), lax.cummax(a), jnp.cumsum(a[::-1])[::-1]), v)
    assert list(cs) == [v[0], v[0] + v[1], v[0] + v[1] + v[2]]
    assert cm[2] == sympy.Max(v[0], v[1], v[2])
    assert rc[0] == v[0] + v[1] + v[2]


def _ints(*shape):
    return np.arange(1, int(np.prod(shape)) + 1, dtype=np.float32).reshape(shape)


STRUCTURAL = [
    ("reshape", lambda a: a.reshape(3, 2)),
    ("broadcast_in_dim", lambda a: jnp.broadcast_to(a[:, None, :], (2, 4, 3))),
    ("transpose", lambda a: a.T),
    ("squeeze", lambda a: jnp.squeeze(a[None], 0)),
    ("expand_dims", lambda a: jnp.expand_dims(a, 1)),
    ("slice", lambda a: a[:, 1:3]),
    ("strided slice", lambda a: a[::-1, ::2]),
    ("dynamic_slice", lambda a: lax.dynamic_slice(a, (1, 2), (1, 2))),  # start clamped, as XLA
    ("dynamic_update_slice", lambda a: lax.dynamic_update_slice(a, -a[:1, :2], (1, 1))),
    ("concatenate", lambda a: jnp.concatenate([a, 2 * a], axis=1)),
    ("stack", lambda a: jnp.stack([a, -a], axis=1)),
    ("split", lambda a: jnp.split(a, 3, axis=1)),
    ("pad", lambda a: lax.pad(a, 0.5, [(1, -1, 1), (0, 2, 0)])),
    ("rev", lambda a: jnp.flip(a, 1)),
    ("gather", lambda a: a[jnp.array([1, 0, 1]), jnp.array([2, 2, 0])]),
    ("take", lambda a: jnp.take(a, jnp.array([2, 0]), axis=1)),
    ("scatter-add", lambda a: a.at[jnp.array([0, 0]), jnp.array([1, 1])].add(10.0)),
    ("scatter", lambda a: a.at[:, 0].set(-1.0)),
    ("iota", lambda a: a + lax.broadcasted_iota(jnp.float32, (2, 3), 1)),
    ("tile", lambda a: jnp.tile(a, (2, 1))),
    ("sort", lambda a: jnp.sort(-a, axis=1)),
    (
        "conv",
        lambda a: lax.conv_general_dilated(a[None, None], jnp.ones((1, 1, 2, 2)), (1, 1), "SAME"),
    ),
    (
        "reduce_window max",
        lambda a: lax.reduce_window(a, -jnp.inf, lax.max, (2, 2), (1, 1), "SAME"),
    ),
    ("reduce_precision", lambda a: lax.reduce_precision(a / 3.0, 5, 2)),
    ("cond", lambda a: lax.cond(True, lambda b: b * 2.0, lambda b: b, a)),
    ("fori_loop", lambda a: lax.fori_loop(0, 3, lambda i, b: b + i, a)),
    ("scan", lambda a: lax.scan(lambda c, r: (c + r, c * r), jnp.zeros(3), a)),
]


@pytest.mark.parametrize("name,fn", STRUCTURAL, ids=[s[0] for s in STRUCTURAL])
def test_structural_ops_match_jax_on_small_integers(name, fn):
    # Small integers are exact in float32, so JAX's own output is an independent exact reference.
    a = _ints(2, 3)
    got = jax.tree_util.tree_leaves(
        symbolic(fn, a), is_leaf=lambda t: isinstance(t, np.ndarray | sympy.Basic)
    )
    want = jax.tree_util.tree_leaves(fn(jnp.asarray(a)))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g = np.asarray(g, dtype=object)
        assert g.shape == np.shape(w), name
        assert all(
            sympy.sympify(e) == to_sympy(v)
            for e, v in zip(g.reshape(-1), np.asarray(w).reshape(-1), strict=True)
        ), name


def test_structural_ops_move_symbols_not_values():
    v = symbols("v", (2, 3))
    out = symbolic(lambda a: lax.pad(a.T[::-1], 0.0, [(1, 0, 1), (0, 0, 0)]), v)
    assert out.shape == (6, 2)
    assert out[0, 0] == 0 and out[1, 0] == v[0, 2] and out[5, 1] == v[1, 0]


def test_custom_jvp_jit_and_while_are_walked():
    v = symbols("v", 2)
    out = symbolic(
        lambda a: lax.while_loop(
            lambda c: c[0] < 3, lambda c: (c[0] + 1, jax.nn.relu(c[1]) * 2.0), (0, a)
        )[1],
        v,
    )
    assert out[0] == 8 * sympy.Max(0, sympy.Max(0, sympy.Max(0, v[0])))


def test_grad_jaxpr_is_evaluated_symbolically():
    g = symbolic(jax.grad(lambda a: jnp.sum(jnp.tanh(a) * a)), symbols("v", 2))
    a0 = symbols("v", 2)[0]
    assert same(g[0], sympy.diff(sympy.tanh(a0) * a0, a0))


def test_gather_with_symbolic_index_is_refused_with_location():
    with pytest.raises(
        UnsupportedPrimitiveError, match=r"dynamic_slice.*must be a concrete integer[\s\S]*at "
    ):
        symbolic(
            lambda a, i: lax.dynamic_slice(a, (i,), (1,)),
            symbols("v", 3),
            symbols("i"),
            dtype=jnp.int32,
        )


def test_mixed_concrete_and_symbolic_arguments():
    W = np.float32([[1, 2], [3, 4]])
    out = symbolic(lambda w, v: w @ v, W, symbols("v", 2))
    v = symbols("v", 2)
    assert out[1] == 3 * v[0] + 4 * v[1]
    val = substitute(out, bindings(v, np.float32([0.5, -1.0])))
    assert list(val) == [R(-3, 2), R(-5, 2)]


def test_every_rule_is_reachable_by_name():
    names = {p.name for p in rules}
    for must in (
        "dot_general",
        "select_n",
        "gather",
        "scatter-add",
        "cumsum",
        "logistic",
        "erfc",
        "iota",
    ):
        assert must in names


def test_cond_on_a_symbolic_predicate_is_a_piecewise_over_branches():
    out = symbolic(lambda v: lax.cond(v > 0, lambda a: a * 2.0, lambda a: -a, v), x)
    assert out.subs(x, 3) == 6 and out.subs(x, -3) == 3 and out.subs(x, 0) == 0
    nested = symbolic(
        lambda v: lax.cond(
            v > 0, lambda a: lax.cond(a > 2, lambda b: b, lambda b: 2 * b, a), jnp.negative, v
        ),
        x,
    )
    assert [nested.subs(x, t) for t in (-1, 1, 3)] == [1, 2, 3]


def test_while_on_a_symbolic_predicate_is_refused():
    with pytest.raises(Exception, match="while loop whose predicate is not concrete"):
        symbolic(lambda v: lax.while_loop(lambda c: c < 3.0, lambda c: c + 1.0, v), x)


def test_boolean_and_integer_ops():
    b = symbolic(
        lambda a, c: (
            jnp.logical_and(a > 0, c > 0),
            jnp.logical_or(a > 0, c > 0),
            jnp.logical_xor(a > 0, c > 0),
            ~(a > 0),
            jnp.isfinite(a),
            jnp.any(jnp.stack([a > 0, c > 0])),
            jnp.all(jnp.stack([a > 0, c > 0])),
        ),
        x,
        y,
    )
    assert b[0] == sympy.And(x > 0, y > 0) and b[1] == sympy.Or(x > 0, y > 0)
    assert b[2] == sympy.Xor(x > 0, y > 0) and b[3] == (x <= 0)
    assert b[4] == sympy.true  # real symbols are finite in sympy
    assert b[5] == sympy.Or(x > 0, y > 0) and b[6] == sympy.And(x > 0, y > 0)
    ints = symbolic(lambda a, c: (a & c, a | c, a ^ c, ~a), np.int32(12), np.int32(10))
    assert list(ints) == [8, 14, 6, -13]


def test_scatter_combiners():
    v, u = symbols("v", 3), symbols("u", 1)
    idx = jnp.array([1])
    mx, mn, ml = symbolic(
        lambda a, b: (a.at[idx].max(b), a.at[idx].min(b), a.at[idx].multiply(b)), v, u
    )
    assert mx[1] == sympy.Max(v[1], u[0]) and mn[1] == sympy.Min(v[1], u[0])
    assert ml[1] == v[1] * u[0] and ml[0] == v[0]


def test_max_pooling_gradient_routes_to_the_maximum():
    g = symbolic(
        jax.grad(lambda a: jnp.sum(lax.reduce_window(a, -jnp.inf, lax.max, (2,), (2,), "VALID"))),
        np.float32([1.0, 3.0, 5.0, 2.0]),
    )
    assert list(g) == [0, 1, 1, 0]  # select_and_scatter_add sends each cotangent to its max
