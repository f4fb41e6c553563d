"""One verification search over 1, 2 and 3 processes of a `jax.distributed` job on this machine.

    python bench/multihost.py [--timeout 60] [--processes 1,2,3]

For a hard ACAS Xu instance (input splitting) and an mnist_fc one (beta-CROWN ReLU splitting) it
prints domains per second (after a warm-up search that compiles the programs, so the rate is the
steady state), the bytes of bound results each batch all-gathers, and what a 16-host job would
exchange per batch on paper. Each process has one forced CPU device. On a machine with fewer
cores than processes this measures the overhead of the exchange, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO.parent / "shared" / "benchmarks"
INSTANCES = {
    # ~3000 input-split domains in one process
    "acasxu 1_1 prop_3": (
        "acasxu",
        "onnx/ACASXU_run2a_1_1_batch_2000.onnx",
        "vnnlib/prop_3.vnnlib",
    ),
    # unsat after tens of beta-CROWN domains in one process
    "mnist_fc prop_6 eps 0.03": (
        "mnist_fc",
        "onnx/mnist-net_256x2.onnx",
        "vnnlib_2022/prop_6_0.03.vnnlib",
    ),
}


def worker(suite, onnx, vnnlib, timeout, out_path):
    from tljax.core import processes

    processes.initialize()
    import jax

    import tljax.verify._bounder as B
    from tljax.verify import load_instance, verify

    fn, prop, args, shape = load_instance(f"{BENCH}/{suite}/{onnx}", f"{BENCH}/{suite}/{vnnlib}")
    verify(fn, prop, *args, input_shape=shape, timeout=min(20.0, timeout))  # compiles
    B.BATCH_STATS.update(calls=0, bytes=0, bytes_in=0)
    t0 = time.monotonic()
    res = verify(fn, prop, *args, input_shape=shape, timeout=timeout)
    dt = time.monotonic() - t0
    if jax.process_index() == 0:
        out = {
            "verdict": res.verdict,
            "time": dt,
            "domains": int(res.stats.get("domains", 0)),
            "batches": B.BATCH_STATS["calls"],
            "bytes": B.BATCH_STATS["bytes"],
            "bytes_in": B.BATCH_STATS["bytes_in"],
            "processes": jax.process_count(),
        }
        pathlib.Path(out_path).write_text(json.dumps(out))


def run(name, n, timeout):
    from tljax.launch import launch

    suite, onnx, vnnlib = INSTANCES[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = ["python", __file__, "--worker", suite, onnx, vnnlib, str(timeout), out]
        code = launch(cmd, n, devices_per_process=1, cpu=True, timeout=3 * timeout + 120)
        if code != 0 or not os.path.exists(out):
            return {"error": f"exit status {code}"}
        return json.loads(pathlib.Path(out).read_text())


def main():
    if sys.argv[1:2] == ["--worker"]:
        suite, onnx, vnnlib, timeout, out = sys.argv[2:7]
        return worker(suite, onnx, vnnlib, float(timeout), out)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per measured search")
    p.add_argument("--processes", default="1,2,3")
    p.add_argument("--only", default="", help="run the instances whose name contains this")
    args = p.parse_args()
    if not BENCH.is_dir():
        print(f"no benchmarks at {BENCH}")
        return 1
    print(f"{os.cpu_count()} CPU cores; one forced CPU device per process; timeout {args.timeout}s")
    print(
        f"{'instance':26s} {'procs':>5s} {'verdict':8s} {'domains':>8s} {'time s':>7s} "
        f"{'domains/s':>9s} {'batches':>7s} {'KiB/batch':>9s} {'KiB in/proc/batch':>17s}"
    )
    per_batch = {}
    for name in [k for k in INSTANCES if args.only in k]:
        for n in (int(s) for s in args.processes.split(",")):
            r = run(name, n, args.timeout)
            if "error" in r:
                print(f"{name:26s} {n:5d} {r['error']}")
                continue
            rate = r["domains"] / r["time"] if r["time"] > 0 else float("nan")
            kib = r["bytes"] / max(r["batches"], 1) / 1024
            kin = r["bytes_in"] / max(r["batches"], 1) / 1024
            if r["batches"]:
                per_batch[name] = r["bytes"] / r["batches"]
            print(
                f"{name:26s} {n:5d} {r['verdict']:8s} {r['domains']:8d} {r['time']:7.1f} "
                f"{rate:9.1f} {r['batches']:7d} {kib:9.1f} {kin:17.1f}",
                flush=True,
            )
    print()
    print("16 hosts, on paper: each batch's bound results (B rows) are all-gathered, so every")
    print("host receives 15/16 of them and the network carries 15x one batch's results;")
    print("agreements (timeout, falsifier schedule, counterexample found) add 16 int32 per step.")
    for name, b in per_batch.items():
        print(
            f"  {name}: {b / 1024:.1f} KiB of results per batch -> {15 / 16 * b / 1024:.1f} KiB "
            f"into each host, {15 * b / 1024 / 1024:.2f} MiB on the network per batch"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
