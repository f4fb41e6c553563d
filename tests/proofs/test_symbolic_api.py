"""`symbols`, `symbolic`, `substitute`, `bindings`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy

from tljax.core import InputError
from tljax.proofs._symbolic_api import bindings, substitute, symbolic, symbols


def test_symbols_shapes_names_and_assumptions():
    s, v, m = symbols("s"), symbols("v", 3), symbols("W", (2, 2), positive=True)
    assert s.shape == () and s[()].name == "s" and s[()].is_real
    assert [e.name for e in v] == ["v_0", "v_1", "v_2"]
    assert m[1, 0].name == "W_1_0" and m[1, 0].is_positive


def test_symbolic_keeps_the_output_pytree_and_unwraps_scalars():
    v = symbols("v", 2)
    out = symbolic(
        lambda d: {"sum": d["a"].sum(), "pair": (d["a"] * 2.0, d["b"])}, {"a": v, "b": 3.0}
    )
    assert set(out) == {"sum", "pair"}
    assert out["sum"] == v[0] + v[1]
    assert isinstance(out["pair"][0], np.ndarray) and out["pair"][0][1] == 2 * v[1]
    assert out["pair"][1] == 3


def test_bare_sympy_scalars_are_accepted():
    x = sympy.Symbol("x", real=True)
    assert symbolic(lambda a: jnp.exp(a) + 1.0, x) == sympy.exp(x) + 1


def test_substitute_and_bindings_are_exact():
    v = symbols("v", 2)
    expr = symbolic(lambda a: a / 3.0, v)
    val = substitute(expr, bindings(v, np.float32([0.1, 3.0])))
    assert val[0] == sympy.Rational(13421773, 3 * 134217728) and val[1] == 1
    with pytest.raises(InputError, match="bindings: symbols have shape"):
        bindings(v, np.zeros(3))


def test_symbolic_of_a_jvp_gives_the_tangent_expression():
    x, t = symbols("x"), symbols("t")
    primal, tangent = symbolic(lambda a, b: jax.jvp(jnp.sin, (a,), (b,)), x, t)
    assert primal == sympy.sin(x[()]) and tangent == t[()] * sympy.cos(x[()])
