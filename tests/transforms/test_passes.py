"""Structural passes: what each removes or merges, that values are kept, and that every result is
an ordinary Graph (all semantics, jit)."""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import tljax
import tljax.transforms as T
from tljax.core import iter_eqns


def names(graph):
    return [e.primitive.name for e in iter_eqns(graph.jaxpr)]


def top_names(graph):
    return [e.primitive.name for e in graph.jaxpr.eqns]


def test_inline_removes_every_call_and_keeps_values(mlp):
    g, x = mlp
    flat = T.inline(g)
    assert {"jit", "custom_jvp_call"} & set(names(g))
    assert not {"jit", "custom_jvp_call", "pjit"} & set(names(flat))
    np.testing.assert_allclose(np.asarray(flat(x)), np.asarray(g(x)), rtol=1e-6, atol=1e-7)
    v = T.validate(g, flat, certify=False)
    assert v.verdict == "consistent", str(v)
    assert [s.max_deviation for s in v.stages] == [0.0, 0.0]


def test_inline_reaches_into_loop_bodies():
    w = np.float32([[0.5, -0.2], [0.1, 0.9]])

    @jax.jit
    def cell(h, x):
        return jnp.tanh(w @ h + x)

    def f(xs):
        return lax.scan(lambda h, x: (cell(h, x), h), jnp.zeros(2, jnp.float32), xs)

    xs = np.arange(8, dtype=np.float32).reshape(4, 2) / 8
    g = tljax.trace(f, xs)
    flat = T.inline(g)
    assert "scan" in top_names(flat)
    assert "jit" not in names(flat) and "jit" in names(g)
    assert T.validate(g, flat, certify=False).ok


def test_inline_keeps_kernels_unless_asked():
    from tljax.core import kernel

    k = kernel(lambda x: jnp.tanh(x) * 2.0, tolerance=1e-6, name="tanh2")
    g = tljax.trace(lambda x: k(jax.nn.relu(x)), np.ones(3, np.float32))
    assert "kernel" in names(T.inline(g))
    inlined = T.inline(g, kernels=True)
    assert "kernel" not in names(inlined) and "tanh" in names(inlined)
    assert T.provenance(inlined).passes[-1].stats["kernels_inlined"] == 1


def test_dce_removes_dead_equations_only(mlp):
    g, _ = mlp
    flat = T.inline(g)
    clean = T.dce(flat)
    assert names(flat).count("tanh") == 1 and names(clean).count("tanh") == 0
    assert names(clean).count("dot_general") == names(flat).count("dot_general")
    assert T.provenance(clean).passes[-1].stats["removed"] == 2  # tanh and its * 3
    assert T.validate(g, clean, certify=False).ok


def test_dce_keeps_effects():
    def f(x):
        y = jnp.sin(x)
        jax.debug.print("{}", y)
        return x * 2.0

    clean = T.dce(tljax.trace(f, np.ones(2, np.float32)))
    assert "debug_print" in names(clean) and "sin" in names(clean)


def test_dce_sees_through_call_outputs():
    @jax.jit
    def two(x):
        return jnp.exp(x), jnp.cos(x)

    g = tljax.trace(lambda x: two(x)[0], np.ones(2, np.float32))
    clean = T.dce(g)
    assert "cos" not in names(clean) and "exp" in names(clean)


def test_cse_merges_repeated_call(mlp):
    g, _ = mlp
    flat = T.inline(g)
    merged = T.cse(flat)
    assert names(flat).count("dot_general") == 4
    assert names(merged).count("dot_general") == 3
    assert T.validate(g, merged, certify=False).ok


def test_cse_compares_literals_by_value_and_params_exactly():
    def f(x):
        return (x + 1.0) * (x + 1.0) + (x * 2.0 + x * 3.0) + jnp.sum(x, 0) + jnp.max(x, 0)

    g = tljax.trace(f, np.ones(3, np.float32))
    out = T.cse(g)
    assert names(g).count("add") == 6 and names(out).count("add") == 5  # x + 1.0 once
    assert names(out).count("mul") == 3  # the square, x*2, x*3 stay apart
    assert T.provenance(out).passes[-1].stats["merged"] == 1


def test_cse_inside_loop_bodies():
    def f(xs):
        return lax.scan(lambda c, x: (c + jnp.tanh(x) + jnp.tanh(x), c), 0.0, xs)

    out = T.cse(tljax.trace(f, np.ones(4, np.float32)))
    assert names(out).count("tanh") == 1


def test_constant_fold_tracks_exactness(cnn, mlp):
    g, _ = cnn
    folded = T.constant_fold(T.inline(g))
    assert not {"rsqrt", "sqrt"} & set(names(folded))
    rec = T.provenance(folded).passes[-1]
    assert any(s.startswith("rsqrt") for s in rec.stats["inexact"])
    assert not rec.claim.exact and rec.claim.bitwise and rec.claim.atol == T.ROUNDING_TOLERANCE[0]
    # sqrt(4) / 4 is exactly 0.5: checked with the exact semantics, so the claim stays exact
    m = T.constant_fold(mlp[0])
    assert "sqrt" not in names(m)
    assert T.provenance(m).passes[-1].claim.exact


def test_constant_fold_resolves_constant_cond_and_keeps_big_broadcasts():
    def f(x):
        big = jnp.zeros((300, 300), jnp.float32)  # 90000 elements: kept as a broadcast
        y = lax.cond(jnp.float32(2.0) > 1.0, lambda v: v * 3.0, lambda v: v - 1.0, x)
        return y + big[0, :3]

    g = tljax.trace(f, np.ones(3, np.float32))
    folded = T.constant_fold(T.inline(g), max_size=1 << 16)
    assert "cond" not in names(folded)
    assert "broadcast_in_dim" in names(folded)
    np.testing.assert_array_equal(np.asarray(folded(np.ones(3, np.float32))), [3.0, 3.0, 3.0])


def test_unroll_replaces_scans(ssm):
    g, xs = ssm
    flat = T.unroll(g)
    assert "scan" in names(g) and "scan" not in names(flat)
    assert names(flat).count("tanh") == xs.shape[0]
    rev = tljax.trace(
        lambda v: lax.scan(lambda c, x: (c * 0.5 + x, c), 0.0, v, reverse=True),
        np.arange(4, dtype=np.float32),
    )
    assert T.validate(rev, T.unroll(rev), certify=False).ok
    v = T.validate(g, flat, certify=False)
    assert v.ok and v.stages[0].violations == 0, str(v)


PASSES = {
    "inline": T.inline,
    "dce": T.dce,
    "cse": T.cse,
    "constant_fold": T.constant_fold,
    "fold_affine": T.fold_affine,
    "unroll": T.unroll,
    "lower_precision": ft.partial(T.lower_precision, fmt="bf16"),
}


@pytest.mark.parametrize("name", sorted(PASSES))
def test_pass_output_is_an_ordinary_graph(name, ssm):
    g, xs = ssm
    out = PASSES[name](g)
    assert isinstance(out, tljax.Graph)
    assert [a.shape for a in out.out_avals] == [a.shape for a in g.out_avals]
    ref = np.asarray(tljax.evaluate(out, xs, semantics="reference"))
    jitted = np.asarray(jax.jit(lambda v: out(v))(xs))
    np.testing.assert_allclose(jitted, ref, rtol=1e-6, atol=1e-6)
    ex = tljax.evaluate(out, xs, semantics="exact")
    assert np.allclose(np.asarray(ex.to_float(), np.float64), ref, atol=1e-5)
    emu = np.asarray(tljax.evaluate(out, xs, semantics="float[bf16]"))
    assert np.allclose(emu, ref, atol=0.05)
    if name != "lower_precision":
        np.testing.assert_allclose(ref, np.asarray(g(xs)), rtol=1e-5, atol=1e-6)
