"""tljax.io.export / load_exported: StableHLO round trips give bit-identical outputs."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.core import ParseError
from tljax.io import export, load_exported, load_onnx


def bits(x):
    x = np.asarray(x)
    return x.view(np.uint32) if x.dtype == np.float32 else x


def mlp(params, x):
    h = jnp.maximum(x @ params["w1"] + params["b1"], 0)
    return {"logits": h @ params["w2"], "norm": jnp.sum(h * h)}


def test_round_trip_is_bit_identical_with_pytrees(tmp_path):
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.normal(size=(7, 16)).astype(np.float32),
        "b1": rng.normal(size=(1, 16)).astype(np.float32),
        "w2": rng.normal(size=(16, 3)).astype(np.float32),
    }
    x = rng.normal(size=(5, 7)).astype(np.float32)
    path = tmp_path / "mlp.stablehlo"
    export(mlp, params, x, path=path)
    call = load_exported(path)
    expected = jax.jit(mlp)(params, x)
    for x_new in (x, rng.normal(size=(5, 7)).astype(np.float32)):  # not just the example input
        got, expected = call(params, x_new), jax.jit(mlp)(params, x_new)
        assert set(got) == {"logits", "norm"}
        for key in got:
            assert np.array_equal(bits(got[key]), bits(expected[key]))
    assert call.exported.in_avals[-1].shape == (5, 7)


def test_onnx_network_round_trip(tmp_path, benchmarks_dir):
    fn, params = load_onnx(benchmarks_dir / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx")
    x = np.random.default_rng(1).uniform(-0.5, 0.5, size=(1, 1, 1, 5)).astype(np.float32)
    path = tmp_path / "acas.stablehlo"
    export(fn, params, jax.ShapeDtypeStruct(x.shape, jnp.float32), path=path)
    call = load_exported(path)
    module = call.exported.mlir_module()
    assert "stablehlo.dot_general" in module and "stablehlo.maximum" in module
    got = call(params, x)
    assert np.array_equal(bits(got), bits(jax.jit(fn)(params, x)))


def test_exported_call_checks_shapes(tmp_path):
    path = tmp_path / "f.stablehlo"
    export(lambda x: jnp.sin(x) * 2, np.ones(3, np.float32), path=path)
    call = load_exported(path)
    assert np.array_equal(
        bits(call(np.arange(3, dtype=np.float32))),
        bits(jax.jit(lambda x: jnp.sin(x) * 2)(np.arange(3, dtype=np.float32))),
    )
    with pytest.raises(Exception, match="shape"):
        call(np.ones(4, np.float32))


def test_corrupt_export_file_is_a_parse_error(tmp_path):
    path = tmp_path / "f.stablehlo"
    export(lambda x: x + 1, np.ones(3, np.float32), path=path)
    data = path.read_bytes()
    for cut in (0, 3, len(data) // 2):
        path.write_bytes(data[:cut])
        with pytest.raises(
            ParseError, match=re.escape(str(path)) + ".*not a readable jax.export serialization"
        ):
            load_exported(path)
