"""Timing of tljax.interpret semantics on a 784-256-256-256-10 ReLU MLP (float32 random weights).

Run from the repository root:

    python bench/interpret.py              # every row, batch 1 and 256
    python bench/interpret.py --rows float # rows whose name contains "float"

The table is built from `ROWS`, a list of ``(name, make)`` pairs. ``make(case)`` gets a `Case`
(the traced graph and its inputs for one batch size) and returns a zero-argument callable to time
(already compiled: the first call is a warm-up), or None to skip that batch size. To add rows
(e.g. exact-semantics timings), append to `ROWS` or extend it from another module before `main()`.
The "vs ref" columns divide by the "reference (jit)" row of the same batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tljax
from tljax.interpret._float import float_semantics
from tljax.interpret._rounding import round_to_format

DIMS = (784, 256, 256, 256, 10)
BATCHES = (1, 256)


def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload: the traced graph, its inputs, and the plain function."""

    batch: int
    fn: Callable
    graph: tljax.Graph
    args: tuple


def make_case(batch: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(seed)
    params = [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (0.1 * rng.standard_normal(b)).astype(np.float32),
        )
        for a, b in itertools.pairwise(DIMS)
    ]
    x = rng.standard_normal((batch, DIMS[0])).astype(np.float32)
    args = (jax.device_put(params), jax.device_put(x))
    return Case(batch, mlp, tljax.trace(mlp, *args), args)


def jit_eval(semantics, pre_round: str | None = None) -> Callable[[Case], Callable]:
    """Row maker: ``jax.jit(lambda *a: tljax.evaluate(graph, *a, semantics=...))``. With
    `pre_round`, the inputs are rounded to that format once, outside the timed call."""

    def make(case: Case):
        f = jax.jit(lambda *a: tljax.evaluate(case.graph, *a, semantics=semantics))
        args = case.args
        if pre_round is not None:
            args = jax.tree.map(lambda v: round_to_format(v, pre_round), args)
        return lambda: f(*args)

    return make


def eager_eval(semantics, batches=BATCHES) -> Callable[[Case], Callable | None]:
    """Row maker: the walker run eagerly (one dispatch per equation and rounding)."""

    def make(case: Case):
        if case.batch not in batches:
            return None
        return lambda: tljax.evaluate(case.graph, *case.args, semantics=semantics)

    return make


def plain_jit(case: Case):
    f = jax.jit(case.fn)
    return lambda: f(*case.args)


ROWS: list[tuple[str, Callable[[Case], Callable | None]]] = [
    ("jax.jit(mlp)", plain_jit),
    ("reference (jit)", jit_eval("reference")),
    ("float[fp32] (jit)", jit_eval("float[fp32]")),
    ("float[bf16] (jit)", jit_eval("float[bf16]")),
    ("float[fp16] (jit)", jit_eval("float[fp16]")),
    ("float[e4m3fn] (jit)", jit_eval("float[e4m3fn]")),
    ("float[bf16,rtz] (jit)", jit_eval("float[bf16,rtz]")),
    (
        "float[bf16,sr] jax.random (jit)",
        jit_eval(float_semantics("bf16", rounding="stochastic", key=jax.random.key(0))),
    ),
    (
        "float[bf16,sr] hash (jit)",
        jit_eval(
            float_semantics(
                "bf16", rounding="stochastic", key=jax.random.key(0), random_bits="hash"
            )
        ),
    ),
    ("float[bf16,trusted_inputs] (jit)", jit_eval("float[bf16,trusted_inputs]", pre_round="bf16")),
    ("float[bf16,acc=target] scan (jit)", jit_eval("float[bf16,acc=target]")),
    ("float[bf16] (eager walker)", eager_eval("float[bf16]")),
]


def time_rows(fns: dict[str, Callable], *, budget_s: float, max_reps: int) -> dict[str, list]:
    """Seconds per call of each callable, one entry per call. Calls are interleaved round-robin
    (one call of every row per round) so that load from other processes hits all rows alike."""
    for fn in fns.values():
        jax.block_until_ready(fn())  # warm-up: compile
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    while True:
        for name, fn in fns.items():
            if len(times[name]) >= max_reps:
                continue
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
        done = all(len(t) >= max_reps for t in times.values())
        if done or (
            min(len(t) for t in times.values()) >= 5 and time.perf_counter() - start > budget_s
        ):
            break
    return times


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="", help="only rows whose name contains this text")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of timing per batch size")
    ap.add_argument("--max-reps", type=int, default=300)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    for batch in batches:
        case = make_case(batch)
        fns = {}
        for name, make in ROWS:
            if args.rows and args.rows not in name and name != "reference (jit)":
                continue
            fn = make(case)
            if fn is not None:
                fns[name] = fn
        timed = time_rows(fns, budget_s=args.budget, max_reps=args.max_reps)
        ref = timed.get("reference (jit)")
        for name, t in timed.items():
            results.append(
                {
                    "row": name,
                    "batch": batch,
                    "median_ms": statistics.median(t) * 1e3,
                    "min_ms": min(t) * 1e3,
                    "reps": len(t),
                    "ref_median_ms": statistics.median(ref) * 1e3 if ref else None,
                    "ref_min_ms": min(ref) * 1e3 if ref else None,
                }
            )
    dev = jax.devices()[0].device_kind
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, device {dev}")
    print(f"MLP {'-'.join(map(str, DIMS))} ReLU, float32 weights; ms per forward call")
    print("(median and minimum over interleaved calls; the minimum is the least disturbed by load)")
    cols = ("batch", "median", "vs ref", "min", "vs ref", "reps")
    print(
        f"{'row':36s} "
        + " ".join(f"{c:>{w}s}" for c, w in zip(cols, (5, 9, 7, 9, 7, 5), strict=True))
    )
    for r in results:
        med = f"{r['median_ms'] / r['ref_median_ms']:.2f}x" if r["ref_median_ms"] else "-"
        mn = f"{r['min_ms'] / r['ref_min_ms']:.2f}x" if r["ref_min_ms"] else "-"
        row = f"{r['row']:36s} {r['batch']:5d} {r['median_ms']:9.3f} {med:>7s}"
        print(f"{row} {r['min_ms']:9.3f} {mn:>7s} {r['reps']:5d}")
    return results


if __name__ == "__main__":
    main()
