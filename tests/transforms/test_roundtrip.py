"""Round trips: jax.export (serialize, deserialize, re-trace) and ONNX import against
onnxruntime, before and after passes."""

import jax.numpy as jnp
import numpy as np
import pytest

import tljax
import tljax.transforms as T
from tljax.core import iter_eqns


def test_export_roundtrip_keeps_the_program(mlp):
    g, x = mlp
    back = T.export_roundtrip(g)
    rec = T.provenance(back).passes[-1]
    assert rec.stats["stablehlo_identical"] is True and rec.stats["bytes"] > 0
    assert "call_exported" in [e.primitive.name for e in iter_eqns(back.jaxpr)]
    v = T.validate(g, back, tljax.Box(jnp.asarray(x) - 0.1, jnp.asarray(x) + 0.1))
    assert v.verdict == "consistent", str(v)
    float_stage = next(s for s in v.stages if s.name.startswith("float"))
    assert float_stage.name == "float (jit)" and float_stage.violations == 0
    # The exported program is opaque to the exact semantics and to bounds: said, not hidden.
    assert any("exact semantics skipped" in n for n in v.notes)
    assert any("certified deviation not computed" in n for n in v.notes)


def test_acasxu_onnx_import_and_passes_against_onnxruntime(acas):
    pytest.importorskip("onnxruntime")
    g, path = acas
    imported = T.check_onnx(path, g, n_random=6, scale=0.5)
    assert imported.ok and imported.inputs == 6, str(imported)
    simplified = T.apply(g, *T.SIMPLIFY)
    after = T.check_onnx(path, simplified, n_random=6, scale=0.5)
    assert after.ok, str(after)
    assert after.max_abs_diff < 1e-4


def test_acasxu_simplified_is_certified_identical(acas):
    g, _ = acas
    s = T.apply(g, *T.SIMPLIFY)
    x0 = np.float32([[[[0.2, -0.1, 0.3, 0.1, -0.2]]]])
    v = T.validate(g, s, tljax.Box(jnp.asarray(x0) - 0.005, jnp.asarray(x0) + 0.005))
    assert v.ok and v.claim.exact, str(v)
    # the folded biases are the constants the original folds to: one float program
    assert v.certified_deviation == 0.0
    assert v.certify_method == "identical float programs after normalisation"


def test_onnx_check_reports_a_wrong_graph(acas):
    pytest.importorskip("onnxruntime")
    g, path = acas
    wrong = tljax.trace(lambda x: g(x) * 1.01, np.zeros((1, 1, 1, 5), np.float32))
    res = T.check_onnx(path, wrong, n_random=3)
    assert not res.ok and res.violations > 0
    assert res.worst_input is not None and res.worst_input.shape == (1, 1, 1, 5)
    assert "VIOLATION" in str(res)
