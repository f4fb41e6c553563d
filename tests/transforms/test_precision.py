"""Precision lowering: the float emulation made explicit, checked against `float[FMT]` and an
ml_dtypes reference, with the bf16 error certified over a box."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import tljax
import tljax.transforms as T
from tljax.core import iter_eqns


def names(graph):
    return [e.primitive.name for e in iter_eqns(graph.jaxpr)]


@pytest.mark.parametrize(
    "model, fmt", [("mlp", "bf16"), ("cnn", "bf16"), ("attention", "fp16"), ("ssm", "bf16")]
)
def test_lowered_graph_equals_the_float_semantics(model, fmt, request):
    g, x = request.getfixturevalue(model)
    low = T.lower_precision(g, fmt)
    assert "reduce_precision" in names(low)
    v = T.validate(
        g, low, tljax.Box(jnp.asarray(x) - 0.1, jnp.asarray(x) + 0.1), certify=False, exact=False
    )
    emu = [s for s in v.stages if s.name.startswith("emulation")]
    assert emu and emu[0].violations == 0 and emu[0].inputs == 7, str(v)
    assert v.stages[0].max_deviation > 0  # it does compute in lower precision


def test_lowered_dense_layer_against_ml_dtypes():
    """Independent reference: every value rounded to bfloat16 with ml_dtypes, products and sums
    in float64 (exact for bf16 operands and 3 terms), each op's result rounded once."""
    w = np.float32([[0.3, -1.7], [2.2, 0.01], [-0.5, 0.77]])
    b = np.float32([0.1, -0.3])
    g = tljax.trace(lambda x: jnp.tanh(x @ w + b) * 1.5, np.zeros(3, np.float32))
    low = T.lower_precision(g, "bf16")
    bf = ml_dtypes.bfloat16

    def r(a):
        return np.asarray(a, np.float64).astype(np.float32).astype(bf).astype(np.float64)

    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=3).astype(np.float32)
        h = r(r(x) @ r(w))
        h = r(h + r(b))
        h = r(np.tanh(h).astype(np.float32))  # XLA's float32 tanh, as the lowered graph computes it
        h = r(h * r(np.float32(1.5)))
        got = np.asarray(jax.jit(lambda v: low(v))(x), np.float64)
        np.testing.assert_allclose(got, h, rtol=2**-7)  # tanh: float32 libm vs numpy, one bf16 ulp
        assert np.all(np.asarray(got).astype(np.float32).astype(bf).astype(np.float32) == got)


def test_certified_bf16_error_bounds_sampled_error():
    r = np.random.default_rng(5)
    w1, w2 = (
        r.normal(size=(4, 8)).astype(np.float32) * 0.5,
        r.normal(size=(8, 2)).astype(np.float32) * 0.5,
    )
    g = tljax.trace(lambda x: jax.nn.relu(x @ w1) @ w2, np.zeros(4, np.float32))
    low = T.lower_precision(g, "bf16")
    x0 = r.normal(size=4).astype(np.float32)
    box = tljax.Box(jnp.asarray(x0) - 0.01, jnp.asarray(x0) + 0.01)
    v = T.validate(g, low, box)
    assert v.ok and v.certified_deviation is not None and np.isfinite(v.certified_deviation), str(v)
    assert "noise[" in v.certify_method
    pts = np.asarray(box.sample(jax.random.key(1), 512))
    observed = np.max(
        np.abs(
            np.asarray(jax.vmap(lambda p: low(p))(pts)) - np.asarray(jax.vmap(lambda p: g(p))(pts))
        )
    )
    assert 0 < observed <= v.certified_deviation
    assert v.certified_deviation < 0.1  # a few bf16 ulps of outputs of size ~1, not a vacuous bound


def test_fp16_overflow_gives_an_infinite_deviation():
    g = tljax.trace(lambda x: x * 1000.0, np.ones(2, np.float32))
    low = T.lower_precision(g, "fp16")
    v = T.validate(g, low, tljax.Box(jnp.full(2, 50.0), jnp.full(2, 70.0)), exact=False)
    assert v.certified_deviation == np.inf
    assert any("overflow" in n for n in v.notes)
    assert np.isinf(np.asarray(low(np.full(2, 70.0, np.float32)))).all()


def test_unknown_format_and_accumulation_are_refused():
    g = tljax.trace(lambda x: x + 1.0, np.ones(2, np.float32))
    with pytest.raises(tljax.core.InputError, match="unknown float format 'e9m99'"):
        T.lower_precision(g, "e9m99")
    with pytest.raises(tljax.core.InputError, match="accumulate='bf16' is not supported"):
        T.lower_precision(g, "bf16", accumulate="bf16")


def test_formats_come_from_the_one_registry():
    g = tljax.trace(lambda x: x * 3.0, np.ones(2, np.float32))
    a, b = T.lower_precision(g, "bf16"), T.lower_precision(g, "bfloat16")
    assert a.name == b.name and a.name.endswith("lower_precision[bf16]")
    with pytest.raises(tljax.core.InputError, match=r"'e4m3fn'.*not one lowering can emulate"):
        T.lower_precision(g, "e4m3fn")  # registered, but saturating/NaN: not reduce_precision
    relaxed = T.relax_rounding(a)
    fmts = {f for _, f in relaxed.formats}
    assert fmts == {tljax.interpret.Format(8, 7)}  # the sites' formats are plain Formats too
    # the noise scale of one bf16 rounding: u*M + eta with u = 2^-8, eta = 2^-126 (FTZ)
    e = relaxed.error_scales(np.ones(relaxed.n))
    assert np.all(e >= np.float32(2.0**-8 + 2.0**-126)) and np.all(e <= 2.0**-8 * (1 + 2**-19))
    np.testing.assert_array_equal(relaxed.overflow(), (2 - 2.0**-8) * 2.0**127)
