"""Tests of `tljax.interpret._compare.compare`.

Expected errors are recomputed here independently: plain-Python Fraction references of the
model, the computed floats read with `Fraction(float(.))`, ulps from exact powers of two.
"""

from __future__ import annotations

import importlib.util
import itertools
from fractions import Fraction

import jax
import numpy as np
import pytest

import tljax
from tljax.core import Semantics, iter_eqns
from tljax.interpret._compare import Comparison, compare

HAS_FLOAT = importlib.util.find_spec("tljax.interpret._float") is not None


def _params(seed=0, sizes=(6, 8, 8, 3)):
    rng = np.random.default_rng(seed)
    ps = [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.standard_normal(b) * 0.1).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]
    return ps, rng.standard_normal(sizes[0]).astype(np.float32)


def mlp(params, x):
    for i, (w, b) in enumerate(params):
        with jax.named_scope(f"dense{i}"):
            x = x @ w + b
            if i < len(params) - 1:
                x = jax.nn.relu(x)
    return x


def _fr(a):
    a = np.asarray(a)
    return [Fraction(float(v)) for v in a.reshape(-1)]


def _mlp_ref(params, x):
    h = _fr(x)
    for i, (w, b) in enumerate(params):
        wf = np.asarray(w)
        h = [
            sum((h[k] * Fraction(float(wf[k, j])) for k in range(len(h))), Fraction(0))
            + Fraction(float(b[j]))
            for j in range(wf.shape[1])
        ]
        if i < len(params) - 1:
            h = [v if v > 0 else Fraction(0) for v in h]
    return h


def _ulp32(v: Fraction) -> Fraction:
    if v == 0:
        return Fraction(2) ** -149
    k, a = 0, abs(v)
    while a >= 2:
        a /= 2
        k += 1
    while a < 1:
        a *= 2
        k -= 1
    return Fraction(2) ** (max(k, -126) - 23)


def test_compare_table_on_mlp_matches_independent_errors():
    params, x = _params()
    res = compare(mlp, params, x, semantics=["reference"])
    assert isinstance(res, Comparison) and res.semantics == ("reference",)
    (row,) = res.outputs
    assert row.shape == (3,) and row.dtype == "float32"
    st = row.stats["reference"]
    computed = np.asarray(tljax.evaluate(mlp, params, x, semantics="reference"))
    exact = _mlp_ref(params, x)
    diffs = [abs(Fraction(float(c)) - e) for c, e in zip(computed, exact, strict=True)]
    assert st.max_abs == pytest.approx(float(max(diffs)), rel=1e-12)
    assert st.max_rel == pytest.approx(
        max(float(d / abs(e)) for d, e in zip(diffs, exact, strict=True)), rel=1e-12
    )
    assert st.max_ulp == pytest.approx(
        max(float(d / _ulp32(e)) for d, e in zip(diffs, exact, strict=True)), rel=1e-12
    )
    assert not st.enclosure and st.nonfinite == 0 and st.size == 3
    text = str(res)
    for word in ("output", "reference", "max abs", "max rel", "max ulp", "float32[3]"):
        assert word in text
    assert res.equations is None


def test_exact_against_itself_has_zero_error():
    params, x = _params(1)
    res = compare(mlp, params, x, semantics=["exact"])
    st = res.outputs[0].stats["exact"]
    assert (st.max_abs, st.max_rel, st.max_ulp) == (0.0, 0.0, 0.0)


def test_per_equation_rows_locate_every_equation():
    params, x = _params(2)
    res = compare(mlp, params, x, semantics=["reference", "exact"], per_equation=True)
    g = tljax.trace(mlp, params, x)
    # One row per equation that produces a value (higher-order calls are walked into).
    n_first_order = sum(
        1 for e in iter_eqns(g.jaxpr) if e.primitive.name not in ("jit", "custom_jvp_call")
    )
    assert len(res.equations) == n_first_order
    dots = [r for r in res.equations if r.primitive == "dot_general"]
    assert [r.name_stack for r in dots] == ["dense0", "dense1", "dense2"]
    assert all("test_compare.py" in r.source and "mlp" in r.source for r in dots)
    relus = [r for r in res.equations if r.primitive == "max"]
    # Two calls of relu share one sub-jaxpr; they are told apart by the calling equation.
    assert len(relus) == 2
    # jax.nn.relu's own equation has no user line or layer: the caller's are shown.
    assert [r.name_stack for r in relus] == ["dense0", "dense1"]
    assert all("test_compare.py" in r.source for r in relus)
    assert [r.where for r in relus] == [
        "2:custom_jvp(relu)/0:jit(relu)/0",
        "5:custom_jvp(relu)/0:jit(relu)/0",
    ]
    # The first dot's error, recomputed independently from Fractions.
    w0 = params[0][0]
    computed = np.asarray(x @ w0)
    exact = [
        sum((Fraction(float(x[k])) * Fraction(float(w0[k, j])) for k in range(6)), Fraction(0))
        for j in range(8)
    ]
    expect = max(abs(Fraction(float(c)) - e) for c, e in zip(computed, exact, strict=True))
    assert dots[0].stats["reference"].max_abs == pytest.approx(float(expect), rel=1e-12)
    assert all(r.stats["exact"].max_abs == 0 for r in res.equations)
    first = res.first_divergence("reference", ulp=0.0)
    assert first is not None and first.stats["reference"].max_ulp > 0
    assert res.first_divergence("exact", ulp=0.0) is None
    text = str(res)
    assert "per equation" in text and "dense1" in text and "dot_general" in text


def test_enclosures_are_flagged():
    x = np.array([0.5, -1.0, 2.0], np.float32)
    res = compare(lambda a: jax.nn.softmax(a), x, semantics=["reference"], per_equation=True)
    st = res.outputs[0].stats["reference"]
    assert st.enclosure
    assert 0 <= st.max_ulp < 8  # XLA's float32 softmax is within a few ulp of the real value
    exp_rows = [r for r in res.equations if r.primitive == "exp"]
    assert exp_rows and exp_rows[0].stats["reference"].enclosure
    assert "~" in str(res)


def test_control_flow_equations_are_keyed_by_path():
    def f(x):
        c, ys = jax.lax.scan(lambda c, a: (c * 0.5 + a, c * a), 0.25, x)
        return jax.lax.cond(c > 0, lambda v: v * 3.0, lambda v: v - 1.0, ys)

    x = np.array([0.1, 0.7, -0.3], np.float32)
    res = compare(f, x, semantics=["reference"], per_equation=True)
    wheres = {r.where for r in res.equations}
    assert {"0:scan[step 0]/0", "0:scan[step 2]/1"} <= wheres
    assert any(":cond[branch " in w for w in wheres)
    assert all("reference" in r.stats for r in res.equations)


def test_a_failing_semantics_is_reported_not_raised():
    params, x = _params(3)
    broken = Semantics("broken")  # no rules at all
    res = compare(mlp, params, x, semantics=["reference", broken])
    assert "broken" in res.failures and "no rule for primitive" in res.failures["broken"]
    assert "reference" in res.outputs[0].stats and "broken" not in res.outputs[0].stats
    assert "semantics 'broken' failed" in str(res)


@pytest.mark.skipif(
    not HAS_FLOAT, reason="tljax.interpret._float (float[...] semantics) not present"
)
def test_bf16_errors_are_larger_and_measured_in_bf16_ulps():
    params, x = _params(4)
    res = compare(mlp, params, x, semantics=["reference", "float[bf16]"], per_equation=True)
    ref, bf = res.outputs[0].stats["reference"], res.outputs[0].stats["float[bf16]"]
    assert bf.max_abs > ref.max_abs
    # bf16 has 16 fewer mantissa bits than float32: the same abs error is 2**16 times fewer ulps.
    computed = np.asarray(tljax.evaluate(mlp, params, x, semantics="float[bf16]"), np.float64)
    exact = _mlp_ref(params, x)
    ulps = [
        abs(Fraction(float(c)) - e) / (_ulp32(e) * 2**16)
        for c, e in zip(computed, exact, strict=True)
    ]
    assert bf.max_ulp == pytest.approx(float(max(ulps)), rel=1e-9)
    assert res.first_divergence("float[bf16]", ulp=0.0) is not None
