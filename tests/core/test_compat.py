"""One test per jaxpr API fact tljax relies on (shared/STYLE.md §3): an upgrade fails here first."""

import jax
import jax.numpy as jnp
import numpy as np

import tljax
from tljax.core import _jaxpr_compat as compat


def _eqn(fn, *args, name=None):
    jaxpr, _ = compat.open_jaxpr(jax.make_jaxpr(fn)(*args))
    for e in jaxpr.eqns:
        if name is None or e.primitive.name == name:
            return e
    raise AssertionError(f"no {name} equation in {jaxpr}")


def test_open_jaxpr_returns_open_jaxpr_and_consts():
    c = np.arange(3.0, dtype=np.float32)
    closed = jax.make_jaxpr(lambda x: x + c)(jnp.ones(3))
    jaxpr, consts = compat.open_jaxpr(closed)
    assert len(jaxpr.invars) == 1
    out = jax.core.eval_jaxpr(jaxpr, consts, jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(out[0]), c + 1)


def test_jit_subjaxpr_carries_its_own_consts():
    c = np.arange(3.0, dtype=np.float32)
    inner = jax.jit(lambda x: x * c)
    e = _eqn(lambda x: inner(x) + 1.0, jnp.ones(3), name="jit")
    assert e.primitive is compat.jit_p
    sub, consts = compat.open_jaxpr(e.params["jaxpr"])
    vals = [np.asarray(v) for v in consts] + [
        np.asarray(v.val) for v in getattr(sub, "constvars", [])[:0]
    ]
    assert len(sub.constvars) == len(consts)
    out = jax.core.eval_jaxpr(sub, consts, jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(out[0]), c)
    del vals


def test_scan_layout():
    e = _eqn(
        lambda c, xs: jax.lax.scan(lambda a, x: (a + x * c, a), 0.0, xs),
        2.0,
        jnp.ones(4),
        name="scan",
    )
    assert e.primitive is compat.scan_p
    n_consts, n_carry = compat.scan_layout(e.params)
    assert (n_consts, n_carry) == (1, 1)


def test_custom_jvp_relu_and_call_name():
    e = _eqn(jax.nn.relu, jnp.ones(3), name="custom_jvp_call")
    assert e.primitive is compat.custom_jvp_call_p
    assert compat.call_name(e) == "relu"
    p = compat.bind_params(e.primitive, e.params)
    out = e.primitive.bind(jnp.array([-1.0, 2.0, 0.0]), **p)
    np.testing.assert_array_equal(
        np.asarray(out[0] if isinstance(out, list | tuple) else out), [0.0, 2.0, 0.0]
    )


def test_where_is_jit_around_select_n_with_false_case_first():
    e = _eqn(
        lambda c, x, y: jnp.where(c, x, y), jnp.array([True]), jnp.ones(1), jnp.zeros(1), name="jit"
    )
    sub, _ = compat.open_jaxpr(e.params["jaxpr"])
    sel = next(s for s in sub.eqns if s.primitive is jax.lax.select_n_p)
    # select_n(pred, case0, case1): case 0 is taken where pred is False, i.e. y.
    assert sel.invars[1] is sub.invars[2] or str(sel.invars[1]) == str(sub.invars[2])


def test_literals_are_unhashable_and_convert_exactly():
    e = _eqn(lambda x: x * 0.1, jnp.ones(2, jnp.float32), name="mul")
    lit = next(v for v in e.invars if compat.is_literal(v))
    assert lit.__hash__ is None
    val = compat.literal_value(lit)
    assert val.dtype == np.float32 and float(val) == float(np.float32(0.1))


def test_cond_branches_false_first_and_int_index():
    e = _eqn(
        lambda p, x: jax.lax.cond(p, lambda y: y + 1.0, lambda y: y - 1.0, x),
        True,
        1.0,
        name="cond",
    )
    assert e.primitive is compat.cond_p
    assert e.invars[0].aval.dtype == np.int32
    false_branch, _ = compat.open_jaxpr(e.params["branches"][0])
    assert false_branch.eqns[0].primitive is jax.lax.sub_p


def test_while_params():
    e = _eqn(lambda n: jax.lax.while_loop(lambda i: i < n, lambda i: i + 1, 0), 5, name="while")
    assert e.primitive is compat.while_p
    assert {"cond_nconsts", "body_nconsts", "cond_jaxpr", "body_jaxpr"} <= set(e.params)


def test_remat_has_open_jaxpr_and_named_prims():
    e = _eqn(jax.checkpoint(lambda x: jnp.sin(x) * 2.0), jnp.ones(2))
    assert e.primitive is compat.remat_p and e.primitive.name == "remat2"
    assert compat.add_any_p.name == "add_any"


def test_source_line_and_name_stack():
    def model(x):
        with jax.named_scope("layer1"):
            return jnp.tanh(x)

    e = _eqn(model, jnp.ones(2), name="tanh")
    assert "test_compat.py" in compat.source_line(e)
    assert compat.name_stack(e) == "layer1"


def test_tanh_derivative_primitive():
    # JAX 0.11+ differentiates tanh with one `one_minus_square` (1 - y**2, no params); 0.10 has no
    # such primitive and writes (1 - y) + (1 - y)·y with `sub`/`mul`. Semantics need a rule for it.
    jaxpr, _ = compat.open_jaxpr(jax.make_jaxpr(jax.grad(lambda a: jnp.tanh(a)))(0.5))
    names = {e.primitive.name for e in jaxpr.eqns}
    if compat.JAX_VERSION >= (0, 11, 0):
        assert compat.one_minus_square_p is jax.lax.one_minus_square_p
        e = next(e for e in jaxpr.eqns if e.primitive is compat.one_minus_square_p)
        assert e.params == {} and e.primitive.name == "one_minus_square"
        out = e.primitive.bind(jnp.float32(0.5))
        assert float(out) == 0.75
        for sem in ("exact", "float[bf16]", "symbolic"):  # the reference semantics binds it
            assert compat.one_minus_square_p in tljax.get_semantics(sem).rules, sem
        assert float(tljax.evaluate(e.primitive.bind, np.float32(0.5), semantics="exact")) == 0.75
    else:
        assert compat.one_minus_square_p is None
        assert "one_minus_square" not in names


def test_compiler_options_are_probed():
    # jaxlib 0.11 removed XLA:CPU's `xla_cpu_use_fusion_emitters` (0.10 accepts it); callers that
    # pass version-specific XLA flags filter them through `supported_compiler_options`.
    assert compat.compiler_option_supported("xla_backend_optimization_level", 0)
    assert not compat.compiler_option_supported("xla_no_such_option_tljax", True)
    opts = compat.supported_compiler_options(
        {"xla_backend_optimization_level": 0, "xla_no_such_option_tljax": True}
    )
    assert opts == {"xla_backend_optimization_level": 0}
    fusion = compat.compiler_option_supported("xla_cpu_use_fusion_emitters", False)
    if jax.default_backend() == "cpu":
        assert fusion == (compat.JAX_VERSION < (0, 11, 0))


def test_sub_jaxprs_roles_and_consts_of_every_higher_order_primitive():
    c = np.arange(3.0, dtype=np.float32)
    inner = jax.jit(lambda x: x * c)

    def prog(x):
        y = inner(x)
        y = jax.lax.cond(y[0] > 0, lambda v: v + 1.0, lambda v: v - 1.0, y)
        y, _ = jax.lax.scan(lambda a, b: (a + b, a), y, jnp.ones((2, 3)))
        y = jax.lax.while_loop(lambda a: a[0] < 10.0, lambda a: a + 4.0, y)
        return jax.checkpoint(jnp.sin)(jax.nn.relu(y))

    jaxpr, _ = compat.open_jaxpr(jax.make_jaxpr(prog)(jnp.ones(3)))
    roles = {
        e.primitive.name: [(s.role, s.param, s.index) for s in compat.sub_jaxprs(e)]
        for e in jaxpr.eqns
    }
    assert roles["jit"] == [("call", "jaxpr", None)]
    assert roles["cond"] == [("branch", "branches", 0), ("branch", "branches", 1)]
    assert roles["scan"] == [("body", "jaxpr", None)]
    assert roles["while"] == [("cond", "cond_jaxpr", None), ("body", "body_jaxpr", None)]
    assert roles["remat2"] == [("remat", "jaxpr", None)]
    assert roles["custom_jvp_call"] == [("call", "call_jaxpr", None)]
    # The jit sub-jaxpr keeps its own consts (the closed-over array), and evaluates to x * c.
    sub = compat.sub_jaxpr(next(e for e in jaxpr.eqns if e.primitive is compat.jit_p), "call")
    assert len(sub.consts) == len(sub.jaxpr.constvars) == 1
    np.testing.assert_array_equal(
        np.asarray(jax.core.eval_jaxpr(sub.jaxpr, sub.consts, jnp.ones(3))[0]), c
    )


def test_scatter_combiner_is_not_a_sub_jaxpr():
    e = _eqn(lambda x: x.at[jnp.array([0])].add(1.0), jnp.ones(3), name="scatter-add")
    assert "update_jaxpr" in e.params and compat.sub_jaxprs(e) == ()
    assert not compat.is_higher_order(e.primitive)


def test_primitive_by_name_resolves_printed_names():
    assert compat.primitive_by_name("add_any") is compat.add_any_p
    assert compat.primitive_by_name("scatter-add") is jax.lax.scatter_add_p
    assert compat.primitive_by_name("remat2") is compat.remat_p
    assert compat.primitive_by_name("jit") is compat.jit_p
    assert compat.primitive_by_name("tanh") is jax.lax.tanh_p
    assert compat.primitive_by_name("no_such_primitive") is None
    assert compat.primitives_by_name("sin", "no_such_primitive", "cos") == [
        jax.lax.sin_p,
        jax.lax.cos_p,
    ]
