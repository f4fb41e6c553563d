"""`validate`: claims checked on inputs, certified deviation over a box, and a deliberately wrong
pass caught with the input that shows it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import tljax
import tljax.transforms as T
from tljax.core import ShapeMismatchError


def box_around(x, eps):
    return tljax.Box(jnp.asarray(x) - eps, jnp.asarray(x) + eps)


def samples(box, n, seed=0):
    return np.asarray(box.sample(jax.random.key(seed), n))


# ----------------------------------------------------------------------------------------------
# Claims


def test_claims_compose():
    exact = T.Promise.exact_and_bitwise()
    tol = T.Promise(atol=1e-6, rtol=2e-6)
    emu = T.Promise(emulates="float[bf16]")
    both = tol.then(T.Promise(atol=1e-6, rtol=1e-6))
    assert (both.atol, both.rtol) == (2e-6, 3e-6) and not both.exact
    assert exact.then(exact).exact and exact.then(exact).bitwise
    assert not exact.then(tol).exact and exact.then(tol).atol == 1e-6
    assert exact.then(emu).emulates == "float[bf16]" == emu.then(exact).emulates
    assert tol.then(emu).emulates is None and tol.then(emu).atol is None
    assert not exact.then(T.Promise(exact=True, bitwise=True, float_mode="jit")).bitwise
    with pytest.raises(ValueError, match="both atol and rtol"):
        T.Promise(atol=1.0)


def test_composed_claim_from_provenance(mlp):
    g, _ = mlp
    s = T.apply(g, "inline", "cse", "fold_affine")
    assert [p.name for p in T.provenance(s).passes] == ["inline", "cse", "fold_affine"]
    claim = T.provenance(s).claim_since(g)
    assert claim == T.compose(p.claim for p in T.provenance(s).passes)
    assert T.provenance(s).claim_since(s) is None


def test_signature_mismatch_is_an_error(mlp, ssm):
    with pytest.raises(ShapeMismatchError, match=re.escape("do not have the same signature")):
        T.validate(mlp[0], ssm[0], certify=False)


# ----------------------------------------------------------------------------------------------
# The pipeline on the zoo


@pytest.mark.parametrize("model", ["mlp", "cnn", "attention", "ssm"])
def test_simplify_pipeline_on_the_zoo(model, request):
    g, x = request.getfixturevalue(model)
    s = T.apply(g, *T.SIMPLIFY)
    assert sum(1 for _ in tljax.core.iter_eqns(s.jaxpr)) <= sum(
        1 for _ in tljax.core.iter_eqns(g.jaxpr)
    )
    v = T.validate(g, s, box_around(x, 0.05), certify=False)
    assert v.verdict == "consistent", str(v)
    assert not any(st.skipped for st in v.stages)
    # the record is attached to the graph
    assert T.provenance(s).validations[-1] is v
    # independent check: plain JAX on the original function's graph
    np.testing.assert_allclose(np.asarray(s(x)), np.asarray(g(x)), rtol=2e-5, atol=2e-6)


EACH = ["inline", "dce", "cse", "constant_fold", "fold_affine", "unroll"]


@pytest.mark.parametrize("model", ["mlp", "cnn", "attention", "ssm"])
def test_each_pass_on_the_zoo(model, request):
    g, x = request.getfixturevalue(model)
    for name in EACH:
        out = T.PASSES[name](g)
        v = T.validate(g, out, box_around(x, 0.05), certify=False, n_random=1)
        assert v.ok, str(v)
        assert v.claim == T.provenance(out).passes[-1].claim
        if v.claim.exact:  # exact claims are checked to the last bit of the real value
            assert v.stages[0].violations == 0 and v.stages[0].max_deviation < 1e-30, str(v)


def test_certified_deviation_bounds_sampled_deviation(mlp):
    g, x = mlp
    s = T.apply(g, *T.SIMPLIFY)
    box = box_around(x, 0.05)
    v = T.validate(g, s, box)
    assert v.certified_deviation is not None and np.isfinite(v.certified_deviation), str(v)
    assert v.certify_method == "crown, float_sound"
    pts = samples(box, 256)
    run_g = jax.jit(jax.vmap(lambda p: g(p)))
    run_s = jax.jit(jax.vmap(lambda p: s(p)))
    observed = float(np.max(np.abs(np.asarray(run_s(pts)) - np.asarray(run_g(pts)))))
    assert observed <= v.certified_deviation
    assert "certified over the box" in str(v)


def test_exact_passes_certify_zero_by_normalisation(mlp):
    g, x = mlp
    t = T.cse(T.dce(T.inline(g)))
    box = box_around(x, 0.05)
    v = T.validate(g, t, box)
    assert v.certified_deviation == 0.0 and v.verdict == "consistent", str(v)
    assert v.certify_method == "identical float programs after normalisation"
    pts = samples(box, 64)
    a = np.asarray(jax.jit(jax.vmap(lambda p: g(p)))(pts))
    b = np.asarray(jax.jit(jax.vmap(lambda p: t(p)))(pts))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# A deliberately wrong pass


def _bn_sums_rewrite(graph, wrong: bool):
    """Evaluates constant subexpressions while rewriting; at `rsqrt(var + eps)` the wrong variant
    puts epsilon under the root and the variance outside it: 1 / (sqrt(eps) + var). The other
    variant only swaps the two addends, eps + var, which changes nothing."""
    sums = {}
    keep = []

    def fold(ctx, *invals, **params):
        out = T.emit_constant(ctx, invals)
        out = T.emit(ctx, invals) if out is None else out
        return out if ctx.primitive.multiple_results else out[0]

    def add(ctx, a, b, **params):
        if T.is_traced(a) or T.is_traced(b) or np.size(a) == np.size(b):
            return fold(ctx, a, b)
        var, eps = (a, b) if np.size(a) > np.size(b) else (b, a)
        with jax.ensure_compile_time_eval():
            out = T.emit(ctx, [eps, var] if not wrong else [var, eps])[0]
        sums[id(out)] = (np.asarray(var), np.asarray(eps))
        keep.append(out)
        return out

    def rsqrt(ctx, v, **params):
        if wrong and id(v) in sums:
            var, eps = sums[id(v)]
            return (1.0 / (np.sqrt(eps) + var)).astype(np.float32)
        return fold(ctx, v)

    sem = T.pass_semantics("bn_sums", rules={lax.add_p: add, lax.rsqrt_p: rsqrt}, default_rule=fold)
    name = "swapped_var_eps" if wrong else "commuted_var_eps"
    tol = T.ROUNDING_TOLERANCE
    return T.rewrite(graph, sem, name=name, claim=T.Promise(atol=tol[0], rtol=tol[1]))


def test_wrong_batchnorm_fold_is_caught_with_its_input(cnn):
    g, x = cnn
    flat = T.inline(g)
    bad = T.fold_affine(_bn_sums_rewrite(flat, wrong=True))
    v = T.validate(flat, bad, box_around(x, 0.05), certify=False)
    assert v.verdict == "violated" and not v.ok
    m = v.mismatches[0]
    assert m.check == "exact"
    # Re-run both graphs at the reported input, independently of the validator.
    o = np.asarray(flat(*m.inputs), np.float64).ravel()[m.index[0]]
    t = np.asarray(bad(*m.inputs), np.float64).ravel()[m.index[0]]
    assert abs(t - o) > m.allowed and abs(t - o) > 1e-3
    assert "VIOLATION: exact check at input" in str(v)


def test_harmless_swap_and_correct_fold_pass(cnn):
    g, x = cnn
    flat = T.inline(g)
    ok = T.fold_affine(_bn_sums_rewrite(flat, wrong=False))
    v = T.validate(flat, ok, box_around(x, 0.05), certify=False)
    assert v.ok, str(v)
    assert v.stages[0].max_deviation < 1e-6


def test_exact_claim_catches_a_sub_ulp_change():
    """A pass that claims exactness but nudges a constant by one float32 ulp: float execution
    rounds the difference away here, the exact semantics does not."""

    def f(x):
        return x * np.float32(3.0) + np.float32(2.0**-30)

    g = tljax.trace(f, np.ones(2, np.float32))

    def nudge(ctx, a, b, **params):
        if (
            not T.is_traced(b)
            and np.asarray(b).dtype == np.float32
            and float(np.asarray(b)) == 2.0**-30
        ):
            b = np.nextafter(np.float32(b), np.float32(1))
        return T.emit(ctx, [a, b])[0]

    sem = T.pass_semantics("nudge", rules={lax.add_p: nudge})
    t = T.rewrite(g, sem, name="nudge", claim=T.Promise.exact_and_bitwise())
    v = T.validate(g, t, box_around(np.ones(2, np.float32), 0.5), certify=False)
    assert v.verdict == "violated"
    assert {m.check for m in v.mismatches} == {"exact"}
    assert v.stages[1].violations == 0  # float32 results are identical


def test_given_inputs_with_an_integer_argument():
    def f(x, n):
        return x * n.astype(jnp.float32) + x * n.astype(jnp.float32), n + 1

    x, n = np.float32([0.5, -1.5]), np.int32(3)
    g = tljax.trace(f, x, n)
    t = T.cse(g)
    v = T.validate(g, t, inputs=[(x, n), (x * 2, np.int32(-7))], certify=False)
    assert v.ok and [s.inputs for s in v.stages] == [2, 2], str(v)
    assert T.provenance(t).passes[-1].stats["merged"] == 2  # the convert and the product
    auto = T.validate(g, t, certify=False)  # generated: zeros, ones, random (integers too)
    assert auto.ok and auto.stages[0].inputs == 5
