"""Several processes of one `jax.distributed` job on this machine (127.0.0.1, CPU collectives
over gloo, forced CPU devices): the same results as one process, every bound batch on every
process's devices, a lost peer ending the others with a clear error, the launcher and the
spread suite runner. Every subprocess runs under a hard timeout; a test never waits on a hang.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
WORKER = str(pathlib.Path(__file__).with_name("worker.py"))
LIMIT = 240  # seconds for any one process group (a hang fails the test, never blocks it)

UNSAT = ("onnx/ACASXU_run2a_2_2_batch_2000.onnx", "vnnlib/prop_1.vnnlib")  # ~190 domains
SAT = ("onnx/ACASXU_run2a_1_2_batch_2000.onnx", "vnnlib/prop_2.vnnlib")  # found by the attack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(n: int, pid: int, port: int, devices: int) -> dict:
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        TLJAX_HEARTBEAT_TIMEOUT="15",
    )
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    if n > 1:
        env.update(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(n),
            JAX_PROCESS_ID=str(pid),
        )
    else:
        env.pop("JAX_NUM_PROCESSES", None)
    return env


def _start(n: int, devices: int, *job: str, stdout=subprocess.PIPE) -> list[subprocess.Popen]:
    port = _free_port()
    return [
        subprocess.Popen(
            [sys.executable, WORKER, *job],
            env=_env(n, pid, port, devices),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for pid in range(n)
    ]


def _finish(procs: list[subprocess.Popen], limit: float = LIMIT) -> list[dict]:
    end = time.monotonic() + limit
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=max(end - time.monotonic(), 1))
            assert p.returncode == 0, stderr[-3000:]
            lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
            assert lines, f"no result:\n{stdout[-2000:]}\n{stderr[-2000:]}"
            outs.append(json.loads(lines[-1][len("RESULT ") :]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def _verify_job(folder, batch: int) -> tuple[str, ...]:
    return ("verify", str(folder), str(batch), *UNSAT, *SAT)


def _expected(folder) -> dict:
    with open(folder / "expected.csv", newline="") as f:
        return {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(f)}


def _check_search(single: dict, group: list[dict], n: int, devices: int, expected: dict):
    assert [o["processes"] for o in group] == [n] * n
    assert all(o["devices"] == n * devices for o in group)
    (ref_unsat, ref_sat) = single["runs"]
    for out in group:
        unsat, sat = out["runs"]
        assert unsat["verdict"] == ref_unsat["verdict"] == expected[UNSAT] == "unsat"
        assert unsat["checked"] and ref_unsat["checked"]
        # the same leaves (the same boxes, exactly) with the same certified bounds up to
        # rounding: a mapped bound program sums rows by matrix-vector products, and XLA:CPU's
        # dot kernels round differently for a different batch shape or partitioning
        assert unsat["n_leaves"] == ref_unsat["n_leaves"]
        assert unsat["leaves"] == ref_unsat["leaves"]
        for got, ref in zip(unsat["bounds"], ref_unsat["bounds"], strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert unsat["domains"] == ref_unsat["domains"]
        assert unsat["calls"] >= 2  # several batches ...
        assert unsat["spans"] == [n * devices]  # ... each one over every process's devices
        assert sat["verdict"] == ref_sat["verdict"] == expected[SAT] == "sat"
        assert sat["cex"] == group[0]["runs"][1]["cex"]  # every process reports the same one


@pytest.mark.long
def test_one_search_over_two_processes_matches_one_process(benchmarks_dir):
    folder = benchmarks_dir / "acasxu"
    expected = _expected(folder)
    if UNSAT not in expected or SAT not in expected:
        pytest.skip("the chosen ACAS Xu instances are not among the shared ones")
    # the one-process reference runs beside the group (two cores: three processes in all)
    single = _start(1, 1, *_verify_job(folder, 256))
    group = _start(2, 1, *_verify_job(folder, 256))
    outs = _finish(single + group)
    _check_search(outs[0], outs[1:], 2, 1, expected)


@pytest.mark.slow
def test_one_search_over_three_processes_with_two_devices_each(benchmarks_dir):
    # 6 devices: a batch of 256 is padded to 258 rows; the leaves are still the same
    folder = benchmarks_dir / "acasxu"
    expected = _expected(folder)
    if UNSAT not in expected or SAT not in expected:
        pytest.skip("the chosen ACAS Xu instances are not among the shared ones")
    single = _start(1, 1, *_verify_job(folder, 256))
    outs = _finish(single)
    group = _finish(_start(3, 2, *_verify_job(folder, 256)))
    _check_search(outs[0], group, 3, 2, expected)


@pytest.mark.parametrize(
    "n,devices",
    [pytest.param(2, 2, marks=pytest.mark.long), pytest.param(3, 1, marks=pytest.mark.slow)],
)
def test_certified_training_over_processes_matches_one_process(n, devices):
    single, *group = _finish(_start(1, 1, "train", "4") + _start(n, devices, "train", "4"))
    ref = np.asarray(single["params"])
    for out in group:
        assert out["devices"] == n * devices
        np.testing.assert_allclose(out["params"], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["loss"], single["loss"], rtol=1e-5)
    # every process ends with the same model
    assert all(out["params"] == group[0]["params"] for out in group)


def test_a_killed_process_ends_the_others_with_a_clear_error(tmp_path):
    # output to files (a pipe nobody reads could block a process)
    logs = [open(tmp_path / f"out{k}.txt", "w+") for k in range(3)]
    procs = []
    port = _free_port()
    for pid in range(3):
        procs.append(
            subprocess.Popen(
                [sys.executable, WORKER, "sleep", "120"],
                env=_env(3, pid, port, 1),
                stdout=logs[pid],
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO,
            )
        )
    try:
        end = time.monotonic() + 120
        while not all("READY" in (tmp_path / f"out{k}.txt").read_text() for k in range(3)):
            assert time.monotonic() < end, "the processes did not start"
            assert all(p.poll() is None for p in procs), [p.poll() for p in procs]
            time.sleep(0.2)
        procs[2].kill()
        t0 = time.monotonic()
        for p in procs[:2]:
            p.wait(timeout=60)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    assert waited < 30  # bounded: in practice the next collective fails at once
    for k in (0, 1):
        text = (tmp_path / f"out{k}.txt").read_text()
        assert procs[k].returncode == 3, text[-2000:]
        assert f"process {k} of 3: another process of this job died" in text, text[-2000:]
        assert "Rerun the job" in text


def test_launcher_names_the_failing_process_and_stops_the_others():
    code = (
        "import os, sys, time\n"
        "pid = int(os.environ['JAX_PROCESS_ID'])\n"
        "assert os.environ['JAX_NUM_PROCESSES'] == '3'\n"
        "assert os.environ['JAX_COORDINATOR_ADDRESS'].startswith('127.0.0.1:')\n"
        "sys.exit(7) if pid == 1 else time.sleep(60)\n"
    )
    t0 = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "tljax.launch", "-n", "3", "python", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert run.returncode == 7
    assert "process 1 of 3 exited with status 7" in run.stderr
    assert time.monotonic() - t0 < 30  # the sleeping ones were stopped


def test_run_instances_spread_over_two_processes(benchmarks_dir, tmp_path):
    folder = benchmarks_dir / "test"  # VNN-COMP's toy instances: rows 0 (unsat) and 3 (sat)
    out = tmp_path / "results.csv"
    run = subprocess.run(
        [sys.executable, "-m", "tljax.launch", "-n", "2", "tljax", "run-instances",
         str(folder / "instances.csv"), "--select", "0,3", "--spread", "--timeout", "60",
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=LIMIT, env=_env(1, 0, 0, 1),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out, newline="") as f:
        recs = list(csv.DictReader(f))
    assert [(r["index"], r["verdict"], r["process"]) for r in recs] == [
        ("0", "unsat", "0"),
        ("1", "sat", "1"),
    ]  # row k on process k mod 2, merged in row order by process 0
    assert run.stdout.count("solved 2/2") == 1  # one report
    assert "[process 1]    1  test_sat.onnx" in run.stderr
