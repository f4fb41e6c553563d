"""Branch-and-bound batches split across 4 forced host devices: the same verdicts, with every
batched bound program running on all 4 devices. The device count must be set before JAX
initialises, so the run is a subprocess."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import tljax.verify._bounder as B
    from tljax.verify import load_instance, verify

    spans = []
    plain = B._batch_jit

    def spy(run, batch, n_batched):
        f = plain(run, batch, n_batched)

        def call(*a):
            out = f(*a)
            spans.append(len(out[0].sharding.device_set))
            return out

        return call

    B._batch_jit = spy
    folder, onnx, vnnlib = sys.argv[1:4]
    fn, prop, args, shape = load_instance(f"{folder}/{onnx}", f"{folder}/{vnnlib}")
    res = verify(fn, prop, *args, input_shape=shape, timeout=100)
    print(json.dumps({
        "devices": jax.local_device_count(), "verdict": res.verdict,
        "checked": res.check().accepted, "domains": res.stats.get("domains", 0),
        "spans": sorted(set(spans)), "calls": len(spans),
    }))
    """
)

CASES = [
    # unsat after a few hundred input-split domains (several batches)
    ("onnx/ACASXU_run2a_2_2_batch_2000.onnx", "vnnlib/prop_1.vnnlib"),
]


def _expected(folder):
    import csv

    with open(folder / "expected.csv", newline="") as f:
        return {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(f)}


@pytest.mark.parametrize("onnx,vnnlib", CASES)
def test_search_batches_are_sharded_over_four_devices(benchmarks_dir, onnx, vnnlib):
    folder = benchmarks_dir / "acasxu"
    expected = _expected(folder).get((onnx, vnnlib))
    if expected is None:
        pytest.skip(f"{onnx} {vnnlib} not among the shared ACAS Xu instances")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), onnx, vnnlib],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert out["verdict"] == expected and out["checked"], out
    assert out["calls"] >= 2, out  # several batches
    assert out["spans"] == [4], out  # every batch ran on all four devices
