"""Kernel boundary: execution runs the implementation, every tljax semantics sees the reference."""

from __future__ import annotations

import datetime
import re
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.core import _kernel as K
from tljax.core._errors import InputError

SHIFT = 1e-6  # what the deliberately different CPU implementation adds


def dense(x, w):
    return jnp.tanh(x @ w)


def shifted(x, w):
    return jnp.tanh(x @ w) + jnp.float32(SHIFT)


def relu_affine(x, w, b):
    return jax.nn.relu(x @ w + b)


@pytest.fixture
def xw():
    x = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float32).reshape(3, 4)
    w = jnp.linspace(-0.5, 0.7, 8, dtype=jnp.float32).reshape(4, 2)
    return x, w


@pytest.fixture
def k_shift():
    return tljax_kernel(dense, implementations={"cpu": shifted}, tolerance=1e-5, name="dense")


def tljax_kernel(*a, **kw):
    return K.kernel(*a, **kw)


def kernel_eqns(jaxpr):
    return [
        e
        for e in tljax.core.iter_eqns(tljax.core.compat.open_jaxpr(jaxpr)[0])
        if e.primitive is K.kernel_p
    ]


# ----------------------------------------------------------------------------------------------
# One equation carrying the reference.


def test_kernel_traces_to_one_equation_carrying_the_reference_jaxpr(k_shift, xw):
    closed = jax.make_jaxpr(k_shift)(*xw)
    eqns = closed.jaxpr.eqns
    assert [e.primitive for e in eqns] == [K.kernel_p]
    inner = tljax.core.compat.open_jaxpr(eqns[0].params["jaxpr"])[0]
    assert [e.primitive.name for e in inner.eqns] == ["dot_general", "tanh"]
    assert eqns[0].params["name"] == "dense"
    assert eqns[0].outvars[0].aval.shape == (3, 2)


def test_reference_jaxpr_is_cached_per_shape(k_shift, xw):
    a = k_shift.reference_jaxpr(*xw)
    b = k_shift.reference_jaxpr(*xw)
    c = k_shift.reference_jaxpr(xw[0][:2], xw[1])
    assert a is b and c is not a


# ----------------------------------------------------------------------------------------------
# Execution uses the implementation.


def test_jit_runs_the_cpu_implementation(k_shift, xw):
    got = np.asarray(jax.jit(k_shift)(*xw))
    np.testing.assert_array_equal(got, np.asarray(jax.jit(shifted)(*xw)))
    assert not np.array_equal(got, np.asarray(jax.jit(dense)(*xw)))


def test_eager_call_runs_the_cpu_implementation(k_shift, xw):
    np.testing.assert_array_equal(np.asarray(k_shift(*xw)), np.asarray(jax.jit(shifted)(*xw)))


def test_disable_jit_runs_the_implementation_in_python(k_shift, xw):
    with jax.disable_jit():
        got = np.asarray(k_shift(*xw))
    np.testing.assert_allclose(got - np.asarray(dense(*xw)), SHIFT, rtol=0.2)


def test_reference_semantics_runs_the_implementation(k_shift, xw):
    got = tljax.evaluate(k_shift, *xw, semantics="reference")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.jit(shifted)(*xw)))
    jitted = jax.jit(lambda x, w: tljax.evaluate(k_shift, x, w, semantics="reference"))(*xw)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(jax.jit(shifted)(*xw)))


def test_platform_without_implementation_compiles_the_reference(xw):
    k = K.kernel(dense, implementations={"gpu": shifted}, name="gpu_only")
    np.testing.assert_array_equal(np.asarray(jax.jit(k)(*xw)), np.asarray(jax.jit(dense)(*xw)))


def test_implementation_with_wrong_dtype_is_refused(xw):
    k = K.kernel(
        dense, implementations={"cpu": lambda x, w: dense(x, w).astype(jnp.float16)}, name="half"
    )
    with pytest.raises(
        K.KernelContractError,
        match=re.escape("output 0: float16[3, 2] where the reference gives float32[3, 2]"),
    ):
        jax.jit(k)(*xw)


def test_non_array_arguments_are_refused_with_a_fix():
    k = K.kernel(lambda x, n: x * n, name="opt")
    with pytest.raises(InputError, match=re.escape("functools.partial")):
        k(jnp.ones(2), "three")


def test_unknown_platform_is_refused():
    with pytest.raises(InputError, match=re.escape("unknown platform(s) ['gpus']")):
        K.kernel(dense, implementations={"gpus": shifted})


# ----------------------------------------------------------------------------------------------
# Every tljax semantics sees the reference.


def test_exact_semantics_gives_exactly_the_reference_value():
    x = jnp.array([[0.5, -1.25, 2.0]], jnp.float32)
    w = jnp.array([[1.0, -0.5], [0.25, 3.0], [-2.0, 0.125]], jnp.float32)
    b = jnp.array([0.1, -0.3], jnp.float32)
    k = K.kernel(
        relu_affine, implementations={"cpu": lambda x, w, b: relu_affine(x, w, b) + 1.0}, name="ra"
    )
    got = tljax.evaluate(k, x, w, b, semantics="exact")
    # Independent oracle: the same affine map in Fractions of the float32 values.
    F = np.vectorize(lambda v: Fraction(float(v)), otypes=[object])
    z = F(np.asarray(x)) @ F(np.asarray(w)) + F(np.asarray(b))
    want = np.vectorize(lambda v: max(v, Fraction(0)), otypes=[object])(z)
    assert got.shape == want.shape
    assert all(g == w_ for g, w_ in zip(np.ravel(got), np.ravel(want), strict=True))
    ref = tljax.evaluate(relu_affine, x, w, b, semantics="exact")
    assert all(g == r for g, r in zip(np.ravel(got), np.ravel(ref), strict=True))


def test_float_emulation_sees_the_reference(k_shift, xw):
    try:
        import tljax.interpret._float
    except ModuleNotFoundError:
        pytest.skip("float semantics not present")
    got = np.asarray(tljax.evaluate(k_shift, *xw, semantics="float[bf16]"))
    want = np.asarray(tljax.evaluate(dense, *xw, semantics="float[bf16]"))
    np.testing.assert_array_equal(got, want)


def test_float_emulation_under_jit_sees_the_reference(k_shift, xw):
    g = tljax.trace(k_shift, *xw)
    got = jax.jit(lambda x, w: tljax.evaluate(g, x, w, semantics="float[bf16]"))(*xw)
    want = tljax.evaluate(dense, *xw, semantics="float[bf16]")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_bounds_are_the_reference_bounds_and_contain_its_samples(k_shift, xw, method):
    x, w = xw
    box = tljax.Box(x - 0.1, x + 0.1)
    got = tljax.bound(lambda v: k_shift(v, w), box, method=method)
    want = tljax.bound(lambda v: dense(v, w), box, method=method)
    np.testing.assert_array_equal(np.asarray(got.lower), np.asarray(want.lower))
    np.testing.assert_array_equal(np.asarray(got.upper), np.asarray(want.upper))
    pts = box.sample(jax.random.key(0), 256)
    ys = np.asarray(jax.vmap(lambda v: dense(v, w))(pts))
    assert np.all(np.asarray(got.lower) <= ys) and np.all(ys <= np.asarray(got.upper))


def test_compare_walks_into_the_kernel(k_shift, xw):
    res = tljax.compare(k_shift, *xw, semantics=["reference"], per_equation=True)
    text = str(res)
    assert "kernel(dense)" in text
    assert "dot_general" in text and "tanh" in text


def test_compare_states_the_contract_its_reference_numbers_rest_on(k_shift, xw):
    """ "reference" runs the CPU implementation (reference + SHIFT), exact walks the reference:
    the measured error is the implementation's deviation, and the comparison names the kernel."""
    res = tljax.compare(k_shift, *xw, semantics=["reference"])
    [c] = res.kernel_contracts
    assert c.name == "dense" and c.implementations == ("cpu",)
    err = res.outputs[0].stats["reference"].max_abs
    assert 0.5 * SHIFT < err < 2 * SHIFT
    text = str(res)
    assert "kernel contracts" in text and "dense" in text
    plain = tljax.compare(dense, *xw, semantics=["reference"])
    assert plain.kernel_contracts == () and "kernel contracts" not in str(plain)
    assert plain.outputs[0].stats["reference"].max_abs < 0.1 * SHIFT


# ----------------------------------------------------------------------------------------------
# Differentiation and batching.


def test_grad_uses_the_reference_derivative(k_shift, xw):
    x, w = xw
    want = jax.grad(lambda v: dense(v, w).sum())(x)
    for f in (
        jax.grad(lambda v: k_shift(v, w).sum()),
        jax.jit(jax.grad(lambda v: k_shift(v, w).sum())),
    ):
        np.testing.assert_allclose(np.asarray(f(x)), np.asarray(want), rtol=1e-6, atol=1e-7)
    gw = jax.grad(lambda m: k_shift(x, m).sum())(w)
    np.testing.assert_allclose(
        np.asarray(gw), np.asarray(jax.grad(lambda m: dense(x, m).sum())(w)), rtol=1e-6, atol=1e-7
    )


def test_jvp_primal_from_implementation_tangent_from_reference(k_shift, xw):
    x, w = xw
    t = jnp.ones_like(x)
    y, dy = jax.jvp(lambda v: k_shift(v, w), (x,), (t,))
    _, dy_ref = jax.jvp(lambda v: dense(v, w), (x,), (t,))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(jax.jit(shifted)(x, w)))
    np.testing.assert_allclose(np.asarray(dy), np.asarray(dy_ref), rtol=1e-6, atol=1e-7)


def test_second_order_and_grad_through_scan_and_remat(xw):
    x, w = xw
    k = K.kernel(dense, name="plain")

    def f(v, op):
        def step(c, _):
            return op(c, jnp.eye(4, dtype=c.dtype) * 0.9) @ jnp.full((4, 4), 0.5, c.dtype), None

        c, _ = jax.lax.scan(step, v, None, length=3)
        return c.sum()

    want = jax.grad(lambda v: f(v, dense))(x)
    np.testing.assert_allclose(
        np.asarray(jax.grad(lambda v: f(v, k))(x)), np.asarray(want), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(jax.grad(jax.checkpoint(lambda v: f(v, k)))(x)),
        np.asarray(want),
        rtol=1e-5,
        atol=1e-6,
    )
    h = jax.hessian(lambda v: k(v, w).sum())(x)
    np.testing.assert_allclose(
        np.asarray(h), np.asarray(jax.hessian(lambda v: dense(v, w).sum())(x)), rtol=1e-5, atol=1e-6
    )


def test_kernel_vjp_replaces_the_reference_derivative(xw):
    x, w = xw
    k = K.kernel(
        dense,
        vjp=lambda args, out, g: (jnp.full_like(args[0], 7.0), jnp.zeros_like(args[1])),
        name="vjp",
    )
    np.testing.assert_array_equal(
        np.asarray(jax.grad(lambda v: k(v, w).sum())(x)), np.full(x.shape, 7.0, np.float32)
    )
    # Semantics still see the reference through the custom_vjp wrapper.
    np.testing.assert_array_equal(
        np.asarray(tljax.evaluate(k, x, w, semantics="float[bf16]")),
        np.asarray(tljax.evaluate(dense, x, w, semantics="float[bf16]")),
    )


def test_vmap_gives_one_kernel_equation_running_the_vmapped_implementation(k_shift, xw):
    x, w = xw
    xs = jnp.stack([x, 2 * x, -x])
    f = jax.vmap(k_shift, in_axes=(0, None))
    eqns = jax.make_jaxpr(f)(xs, w).jaxpr.eqns
    assert [e.primitive for e in eqns] == [K.kernel_p]
    assert eqns[0].params["vmap_axes"] == ((0, None),)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(f)(xs, w)), np.asarray(jax.jit(jax.vmap(shifted, (0, None)))(xs, w))
    )
    # The semantics see the vmapped reference.
    np.testing.assert_array_equal(
        np.asarray(tljax.evaluate(f, xs, w, semantics="float[bf16]")),
        np.asarray(tljax.evaluate(jax.vmap(dense, (0, None)), xs, w, semantics="float[bf16]")),
    )


def test_nested_vmap_with_axes_not_at_front(k_shift, xw):
    x, w = xw
    ws = jnp.stack([w, -w])  # (2, 4, 2)
    xs = jnp.stack([x, 2 * x, 3 * x], axis=1)  # (3, 3, 4): batch on axis 1
    f = jax.vmap(jax.vmap(k_shift, in_axes=(1, None)), in_axes=(None, 0))
    got = np.asarray(jax.jit(f)(xs, ws))
    want = np.asarray(jax.vmap(jax.vmap(shifted, in_axes=(1, None)), in_axes=(None, 0))(xs, ws))
    assert got.shape == (2, 3, 3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_pytree_arguments_and_integer_outputs():
    k = K.kernel(lambda d: {"a": d["x"] * d["n"], "b": (d["x"].sum(), d["n"] + 1)}, name="tree")
    d = {"x": jnp.arange(3.0), "n": jnp.arange(3)}
    out = jax.jit(k)(d)
    np.testing.assert_array_equal(np.asarray(out["a"]), [0.0, 1.0, 4.0])
    np.testing.assert_array_equal(np.asarray(out["b"][1]), [1, 2, 3])
    g = jax.grad(lambda x: k({"x": x, "n": jnp.arange(3)})["a"].sum())(jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(g), [0.0, 1.0, 2.0])


# ----------------------------------------------------------------------------------------------
# Conformance and contracts.


def test_check_kernel_records_evidence_within_tolerance(k_shift, xw):
    report = K.check_kernel(k_shift, *xw)
    assert report.passed and len(report.evidence) == 1
    ev = report.evidence[0]
    assert (ev.kernel, ev.implementation, ev.platform) == ("dense", "cpu", "cpu")
    assert ev.tolerance == K.Tolerance(1e-5, 1e-5)
    assert 5e-7 < ev.max_abs_error < 2e-6  # the deliberate shift, seen through float32 rounding
    assert ev.max_ratio <= 1.0 and ev.passed
    assert ev.jax_version == jax.__version__
    assert ev.n_cases == 1 + 4 + 5
    assert ev.shapes == ("float32[3, 4]", "float32[4, 2]")
    when = datetime.datetime.fromisoformat(ev.checked_at)
    assert abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < 600
    assert ev in k_shift.evidence


def test_check_kernel_catches_an_implementation_outside_tolerance(xw):
    k = K.kernel(
        dense, implementations={"cpu": lambda x, w: dense(x, w) + 1e-2}, tolerance=1e-5, name="bad"
    )
    with pytest.raises(K.KernelContractError, match=r"FAIL kernel 'bad' impl 'cpu'"):
        K.check_kernel(k, *xw)
    assert len(k.evidence) == 1 and not k.evidence[0].passed
    assert k.evidence[0].max_abs_error == pytest.approx(1e-2, rel=1e-3)
    (contract,) = K.kernel_contracts(tljax.trace(k, *xw))
    assert contract.failed == ("cpu",) and contract.unchecked == ("cpu",)
    report = K.check_kernel(k, *xw, raise_on_failure=False)
    assert not report.passed


def test_check_kernel_uses_extra_adversarial_cases(xw):
    # Wrong only for large inputs: random cases at the example's scale miss it, a given case not.
    k = K.kernel(
        lambda x: jnp.tanh(x),
        implementations={"cpu": lambda x: jnp.where(jnp.abs(x) > 50, 0.0, jnp.tanh(x))},
        name="clip",
    )
    x = xw[0]
    K.check_kernel(k, x, edge_cases=False)
    with pytest.raises(K.KernelContractError, match="worst case 'huge'"):
        K.check_kernel(k, x, edge_cases=False, cases=[("huge", (x * 100.0,))])


def test_check_kernel_skips_absent_platforms(xw):
    k = K.kernel(dense, implementations={"gpu": shifted}, name="gpu_only")
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a GPU is present")
    report = K.check_kernel(k, *xw)
    assert report.evidence == () and "gpu" in report.skipped
    assert "no gpu device present" in report.skipped["gpu"]


def test_kernel_contracts_lists_every_kernel_of_a_graph(k_shift, xw):
    other = K.kernel(dense, implementations={"gpu": shifted}, name="other")
    K.check_kernel(k_shift, *xw)

    def model(x, w):
        y = jax.jit(lambda a: k_shift(a, w))(x)
        y = y + k_shift(x, w)
        c, _ = jax.lax.scan(lambda c, _: (other(c, jnp.eye(4)), None), x, None, length=2)
        return y, c

    contracts = K.kernel_contracts(tljax.trace(model, *xw))
    assert [(c.name, c.occurrences) for c in contracts] == [("dense", 2), ("other", 1)]
    assert contracts[0].checked == ("cpu",) and contracts[0].unchecked == ()
    assert contracts[1].checked == () and contracts[1].unchecked == ("gpu",)
    text = K.format_contracts((model, *xw))
    assert "kernel 'dense' x2" in text and "unchecked ['gpu']" in text
    assert K.kernel_contracts(tljax.trace(dense, *xw)) == ()


def test_tolerance_forms():
    assert K.Tolerance.of(1e-3) == K.Tolerance(1e-3, 1e-3)
    assert K.Tolerance.of((1e-4, 0.0)) == K.Tolerance(1e-4, 0.0)
    assert K.Tolerance.of({"atol": 2.0}) == K.Tolerance(2.0, 0.0)
    k = K.kernel(dense, tolerance={"float32": 1e-6, "bfloat16": (1e-2, 1e-2)})
    assert k.tolerance_for(jnp.bfloat16) == K.Tolerance(1e-2, 1e-2)
    assert k.tolerance_for(jnp.float32) == K.Tolerance(1e-6, 1e-6)
    with pytest.raises(InputError, match="finite number >= 0"):
        K.Tolerance(-1.0, 0.0)


# ----------------------------------------------------------------------------------------------
# GPU (skipped without one).


@pytest.mark.gpu
def test_gpu_implementation_runs_under_jit(xw):
    k = K.kernel(dense, implementations={"gpu": shifted}, tolerance=1e-5, name="dense_gpu")
    dev = jax.devices("gpu")[0]
    x, w = (jax.device_put(a, dev) for a in xw)
    np.testing.assert_array_equal(np.asarray(jax.jit(k)(x, w)), np.asarray(jax.jit(shifted)(x, w)))
    report = K.check_kernel(k, x, w)
    assert report.passed and report.evidence[0].platform == "gpu"
