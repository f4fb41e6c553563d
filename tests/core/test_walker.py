"""The walker: recursion into every higher-order primitive, errors with locations, trace/Graph."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.core import Semantics, UnsupportedPrimitiveError, bind
from tljax.core._errors import RuleError, ShapeMismatchError

W = np.random.RandomState(0).randn(4, 3).astype(np.float32)


@jax.custom_vjp
def _cv(x):
    return jnp.sin(x)


_cv.defvjp(lambda x: (jnp.sin(x), x), lambda r, g: (g * jnp.cos(r),))


@jax.jit
def _inner(x):
    return x @ W  # closes over a numpy constant: a sub-jaxpr const


def zoo(x):
    y = _inner(x)
    y = jax.nn.relu(y) + jax.nn.softplus(y)
    y = _cv(y)
    y = jax.lax.cond(y.sum() > 0, lambda z: z * 2, lambda z: z - 1, y)
    y = jax.lax.switch(1, [lambda z: z, lambda z: z + 3.0, lambda z: -z], y)
    c, ys = jax.lax.scan(
        lambda c, t: (c * 0.5 + t, c + t), jnp.zeros(3), jnp.stack([y, y * 2]), reverse=True
    )
    c2, _ = jax.lax.scan(lambda c, t: (c + t, None), c, jnp.stack([y, y]))
    n = jax.lax.while_loop(lambda s: s[0] < 3, lambda s: (s[0] + 1, s[1] * 1.1), (0, c2))[1]
    n = jax.lax.fori_loop(0, 2, lambda i, v: v + i, n)
    z = jax.checkpoint(lambda q: jnp.tanh(q) * q)(n)
    return {"a": jnp.where(z > 0, z, ys.sum(0)), "b": (c, 1.0)}


def _bind_rule(ctx, *invals, **params):
    out = bind(ctx.eqn, invals)
    return out if ctx.primitive.multiple_results else out[0]


# Recurses into every higher-order primitive, in Python (not traceable): exercises the walker's
# own recursion rules rather than re-binding jit/scan/cond whole.
RECURSIVE = Semantics("recursive-reference", default_rule=_bind_rule, recurse=True, traceable=False)
RECURSIVE_TRACEABLE = Semantics(
    "recursive-traceable", default_rule=_bind_rule, recurse=True, traceable=True
)


@pytest.fixture
def x():
    return np.random.RandomState(1).randn(4).astype(np.float32)


def _leaves_close(a, b, **kw):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


def _leaves_equal(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        if isinstance(v, float):  # a literal output: the graph gives it its traced dtype
            v = np.float32(v)
        assert np.asarray(u).dtype == np.asarray(v).dtype
        assert np.asarray(u).tobytes() == np.asarray(v).tobytes()


def test_reference_equals_eager_and_jit_bit_for_bit(x):
    g = tljax.trace(zoo, x)
    _leaves_equal(tljax.evaluate(g, x, semantics="reference"), zoo(x))
    jitted = jax.jit(lambda v: tljax.evaluate(g, v, semantics="reference"))(x)
    _leaves_equal(jitted, jax.jit(zoo)(x))


@pytest.mark.parametrize("sem", [RECURSIVE, RECURSIVE_TRACEABLE], ids=["python-loops", "lax-loops"])
def test_recursion_through_every_higher_order_primitive(sem, x):
    g = tljax.trace(zoo, x)
    census = g.census()
    for prim in ["jit", "custom_jvp_call", "custom_vjp_call", "cond", "scan", "while", "remat2"]:
        assert census[prim] >= 1, prim
    out = tljax.evaluate(g, x, semantics=sem)
    # op by op instead of fused jit blocks: equal up to float rounding differences
    _leaves_close(out, zoo(x), rtol=1e-5, atol=1e-6)


def test_traceable_recursion_compiles_under_jit(x):
    g = tljax.trace(zoo, x)
    out = jax.jit(lambda v: tljax.evaluate(g, v, semantics=RECURSIVE_TRACEABLE))(x)
    _leaves_close(out, zoo(x), rtol=1e-5, atol=1e-6)


def test_subjaxpr_consts_are_honoured():
    c = np.array([1.0, 2.0, 3.0], np.float32)
    f = jax.jit(lambda v: v * c)
    out = tljax.evaluate(lambda v: f(v) + 0.0, np.ones(3, np.float32), semantics=RECURSIVE)
    np.testing.assert_array_equal(np.asarray(out), c)


def test_unsupported_primitive_error_names_semantics_primitive_params_and_line():
    sem = Semantics("tiny", rules={jax.lax.add_p: lambda ctx, a, b: a + b})

    def model(v):
        with jax.named_scope("mylayer"):
            return jnp.sin(v) + v

    with pytest.raises(UnsupportedPrimitiveError) as err:
        tljax.evaluate(model, np.ones(2, np.float32), semantics=sem)
    msg = str(err.value)
    assert "semantics 'tiny' has no rule for primitive 'sin'" in msg
    assert "accuracy" in msg  # the params are listed
    assert re.search(r"test_walker\.py:\d+", msg)
    assert "in layer mylayer" in msg
    assert "register_rule" in msg
    assert isinstance(err.value, NotImplementedError)


def test_rule_failure_is_reraised_once_with_location():
    def bad(ctx, a, b, **params):
        raise ZeroDivisionError("boom")

    sem = Semantics("bad", rules={jax.lax.mul_p: bad}, default_rule=_bind_rule)
    f = jax.jit(lambda v: v * 2.0)
    with pytest.raises(RuleError) as err:
        tljax.evaluate(lambda v: f(v) + 1.0, np.ones(2, np.float32), semantics=sem)
    msg = str(err.value)
    assert msg.count("failed on primitive 'mul'") == 1
    assert "ZeroDivisionError: boom" in msg
    assert "inside jit(<lambda>)" in msg
    assert isinstance(err.value.__cause__, ZeroDivisionError)


def test_trace_keeps_pytree_structure_and_statics():
    def f(inp, scale):
        return {"s": inp["a"] * scale["k"], "t": [inp["b"].sum()]}

    g = tljax.trace(f, {"a": np.ones(2, np.float32), "b": np.ones(3, np.float32)}, {"k": 2.0})
    assert len(g.in_avals) == 3
    out = g({"a": np.full(2, 3.0, np.float32), "b": np.ones(3, np.float32)}, {"k": 2.0})
    np.testing.assert_array_equal(np.asarray(out["s"]), [6.0, 6.0])
    with pytest.raises(
        ShapeMismatchError, match=re.escape("leaf 0: expected shape (2,), got (5,)")
    ):
        g({"a": np.ones(5, np.float32), "b": np.ones(3, np.float32)}, {"k": 2.0})
    with pytest.raises(ShapeMismatchError, match="structure"):
        g({"a": np.ones(2, np.float32)}, {"k": 2.0})


def test_trace_equinox_flax_nnx_and_linen_models_agree_with_direct_calls():
    from flax import linen, nnx

    x = np.random.RandomState(2).randn(5).astype(np.float32)
    m = eqx.nn.MLP(5, 2, 8, 2, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(
        np.asarray(tljax.evaluate(m, x, semantics="reference")), np.asarray(m(x)), rtol=1e-6
    )
    # an Equinox module as an argument: its array leaves are graph inputs
    g = tljax.trace(lambda mod, v: mod(v), m, x)
    assert len(g.in_avals) > 1
    n = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(
        np.asarray(tljax.evaluate(n, x, semantics="reference")), np.asarray(n(x)), rtol=1e-6
    )
    g2 = tljax.trace(lambda mod, v: mod(v), n, x)
    np.testing.assert_allclose(np.asarray(g2(n, x)), np.asarray(n(x)), rtol=1e-6)
    lin = linen.Dense(3)
    params = lin.init(jax.random.PRNGKey(0), x)
    out = tljax.evaluate(lambda p, v: lin.apply(p, v), params, x, semantics="reference")
    np.testing.assert_allclose(np.asarray(out), np.asarray(lin.apply(params, x)), rtol=1e-6)


def test_census_counts_inside_subjaxprs(x):
    g = tljax.trace(zoo, x)
    c = g.census()
    assert c["dot_general"] == 1 and c["tanh"] == 1 and c["sin"] == 1
    assert "primitives:" in str(g)


def test_effects_are_skipped_by_non_reference_semantics(capsys):
    def f(v):
        jax.debug.print("value {}", v)
        return v * 2.0

    out = tljax.evaluate(f, np.ones(2, np.float32), semantics="exact")
    assert [float(o) for o in out] == [2.0, 2.0]
    tljax.evaluate(f, np.ones(2, np.float32), semantics="reference")
    assert "value" in capsys.readouterr().out


def test_unknown_semantics_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown semantics 'nope'"):
        tljax.evaluate(lambda v: v, np.ones(1, np.float32), semantics="nope")


def test_coverage_table_lists_rules_and_gaps():
    tiny = Semantics("tiny", rules={jax.lax.add_p: lambda ctx, a, b: a + b})
    table = tljax.interpret.coverage(
        lambda v: jnp.sin(v) + v, np.ones(2, np.float32), semantics=["exact", tiny]
    )
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:-1]}
    assert rows["sin"] == ["rule", "MISSING"]
    assert rows["add"] == ["rule", "rule"]
    assert table.endswith("2 primitives, 1 missing rules")


def test_walker_drops_values_after_their_last_use():
    # 60 chained 4 MB steps, the input and one value read at the end: a walker keeping every
    # intermediate peaks at ~240 MB, one dropping them after their last use at a few arrays
    import tracemalloc

    from tljax.interpret import evaluate_numpy

    def chain(x):
        y = x
        for k in range(60):
            y = y * 1.0001 + k
        return y - x, y.sum()

    x = np.linspace(-1.0, 1.0, 1 << 20, dtype=np.float32)
    closed = jax.make_jaxpr(chain)(x)
    tracemalloc.start()
    try:
        outs = evaluate_numpy(closed, [x])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * x.nbytes, f"peak {peak >> 20} MiB"
    ref = jax.jit(chain)(x)
    np.testing.assert_allclose(outs[0], ref[0], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(outs[1], ref[1], rtol=1e-5)
