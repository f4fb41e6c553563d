"""Accelerator benchmark: jit forward vs float emulation vs IBP vs CROWN, batch 1..4096.

Run from the repository root:

    python bench/gpu.py                       # GPU: full table; CPU: a tiny configuration
    python bench/gpu.py --models mlp --batches 1 256
    python bench/gpu.py --rows crown          # rows whose name contains "crown"

Workloads: the 784-256-256-256-10 ReLU MLP, and a small transformer block (pre-norm single-head
self-attention + ReLU MLP, residuals) on sequences of `T` tokens of width `E`. Rows:

- ``jit forward``: ``jax.jit(jax.vmap(model))``;
- ``float[bf16]``: bfloat16 emulation of the batched graph,
  ``jax.jit(lambda x: tljax.evaluate(g, x, semantics="float[bf16]"))`` (skipped when the float
  semantics module is absent);
- ``IBP`` / ``CROWN``:
  ``jax.jit(jax.vmap(lambda lo, hi: tljax.bound(g1, Box(lo, hi), method=...)))``
  over ``batch`` boxes of radius 0.01 (the computation `tljax.bounds.bound_sharded` shards).

Each cell is the median wall time of one call after a warm-up call (compile), and the first
call's time is shown in a second table. With no GPU present the script says so and runs a tiny
configuration (small batches, a smaller transformer) so that it finishes in a few minutes on CPU.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tljax

MLP_DIMS = (784, 256, 256, 256, 10)
FULL = {"batches": (1, 16, 256, 4096), "T": 8, "E": 32, "block_crown_max_batch": 4096}
# On CPU, the vmapped CROWN through attention compiles slowly (tiny run: ~48 s, then 93 ms per
# call at batch 1; a top-level `tljax.bound` of the block compiles in ~11 s and runs in 7 ms), so
# the tiny run times it at batch 1 only.
TINY = {"batches": (1, 16), "T": 4, "E": 16, "block_crown_max_batch": 1}


def has_gpu() -> bool:
    return any(d.platform == "gpu" for d in jax.devices())


def has_float_semantics() -> bool:
    try:
        import tljax.interpret._float  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Models (unbatched: one example in, one out).


def mlp_params(rng):
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (0.1 * rng.standard_normal(b)).astype(np.float32),
        )
        for a, b in itertools.pairwise(MLP_DIMS)
    ]


def mlp(x, params):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def block_params(rng, E):
    def mat(a, b, s=1.0):
        return (s * rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)

    return {
        "wq": mat(E, E), "wk": mat(E, E), "wv": mat(E, E), "wo": mat(E, E),
        "w1": mat(E, 4 * E), "w2": mat(4 * E, E, 0.5),
        "g1": np.ones(E, np.float32), "g2": np.ones(E, np.float32),
    }  # fmt: skip


def rms_norm(x, g):
    # RMS norm: the bounds tape handles it (LayerNorm's centring makes IBP intervals explode).
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-5) * g


def block(x, p):
    """Pre-norm transformer block on x of shape (T, E): attention + ReLU MLP, residuals."""
    h = rms_norm(x, p["g1"])
    q, k, v = h @ p["wq"], h @ p["wk"], h @ p["wv"]
    a = jax.nn.softmax(q @ k.T / np.sqrt(q.shape[-1]), axis=-1)
    x = x + (a @ v) @ p["wo"]
    h = rms_norm(x, p["g2"])
    return x + jax.nn.relu(h @ p["w1"]) @ p["w2"]


# ----------------------------------------------------------------------------------------------
# Rows: each maker returns a zero-argument callable (not yet compiled) or a reason to skip.


def row_jit(fn, params, xs):
    f = jax.jit(jax.vmap(fn, in_axes=(0, None)))
    return lambda: f(xs, params)


def row_float(fn, params, xs, fmt="bf16"):
    if not has_float_semantics():
        return "float semantics (tljax/interpret/_float.py) not present"
    g = tljax.trace(jax.vmap(fn, in_axes=(0, None)), xs, params)
    f = jax.jit(lambda x, p: tljax.evaluate(g, x, p, semantics=f"float[{fmt}]"))
    return lambda: f(xs, params)


def row_bound(method):
    def make(fn, params, xs):
        g1 = tljax.trace(fn, xs[0], params)

        def one(lo, hi, p):
            b = tljax.bound(g1, tljax.Box(lo, hi), p, method=method, jit=False)
            return b.lower, b.upper

        f = jax.jit(jax.vmap(one, in_axes=(0, 0, None)))
        lo, hi = xs - 0.01, xs + 0.01
        return lambda: f(lo, hi, params)

    return make


ROWS: list[tuple[str, Callable]] = [
    ("jit forward", row_jit),
    ("float[bf16] emulation", row_float),
    ("IBP", row_bound("ibp")),
    ("CROWN", row_bound("crown")),
]


def timed(call: Callable, min_time: float = 0.2, max_reps: int = 50) -> tuple[float, float]:
    """(first call seconds, median seconds of the following calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < max_reps and (sum(times) < min_time or len(times) < 3):
        if times and times[0] > 1.0:  # slow cells: one steady call is enough
            break
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["mlp", "block"], choices=["mlp", "block"])
    ap.add_argument(
        "--rows", default="", help="only rows whose name contains this (case-insensitive)"
    )
    ap.add_argument("--batches", nargs="*", type=int, default=None)
    ap.add_argument("--tiny", action="store_true", help="the CPU configuration, even on a GPU")
    args = ap.parse_args(argv)

    gpu = has_gpu() and not args.tiny
    cfg = FULL if gpu else TINY
    batches = tuple(args.batches) if args.batches else cfg["batches"]
    dev = jax.devices()[0]
    print(
        f"tljax bench/gpu.py: jax {jax.__version__}, device {dev.platform} ({dev.device_kind}), "
        f"{len(jax.devices())} device(s)"
    )
    if not gpu:
        print(
            "NO GPU PRESENT (or --tiny): running the tiny CPU configuration "
            f"(batches {batches}, transformer T={cfg['T']}, E={cfg['E']}); numbers are not GPU "
            "numbers."
        )
    rng = np.random.default_rng(0)
    workloads = {
        "mlp": ("MLP 784-256x3-10", mlp, mlp_params(rng), (MLP_DIMS[0],)),
        "block": (
            f"transformer block T={cfg['T']} E={cfg['E']}",
            block,
            block_params(rng, cfg["E"]),
            (cfg["T"], cfg["E"]),
        ),
    }
    rows = [(n, m) for n, m in ROWS if args.rows.lower() in n.lower()]
    for key in args.models:
        title, fn, params, shape = workloads[key]
        params = jax.device_put(params)
        steady: dict = {}
        first: dict = {}
        notes: list[str] = []
        for batch in batches:
            xs = jax.device_put(rng.standard_normal((batch, *shape)).astype(np.float32))
            for name, make in rows:
                if key == "block" and name == "CROWN" and batch > cfg["block_crown_max_batch"]:
                    note = (
                        f"CROWN on the block: batches > {cfg['block_crown_max_batch']} skipped in "
                        "this configuration"
                    )
                    if note not in notes:
                        notes.append(note)
                    continue
                call = make(fn, params, xs)
                if isinstance(call, str):
                    if f"{name}: skipped, {call}" not in notes:
                        notes.append(f"{name}: skipped, {call}")
                    continue
                try:
                    f, s = timed(call)
                except Exception as err:  # noqa: BLE001 - one failing cell must not hide the table
                    notes.append(
                        f"{name} batch {batch}: {type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160]}"
                    )
                    continue
                first[name, batch], steady[name, batch] = f, s
                print(
                    f"  {title} | {name:<22} | batch {batch:>5}: {fmt_time(s)} per call (first "
                    f"call {fmt_time(f)})",
                    flush=True,
                )
        print(f"\n{title}: median time per call (after compile); throughput = batch / time")
        head = f"{'row':<24}" + "".join(f"{'batch ' + str(b):>14}" for b in batches)
        print(head + "\n" + "-" * len(head))
        for name, _ in rows:
            print(
                f"{name:<24}" + "".join(f"{fmt_time(steady.get((name, b))):>14}" for b in batches)
            )
        print(
            f"{'(examples/s, CROWN)':<24}"
            + "".join(
                f"{b / steady[('CROWN', b)]:>14.0f}" if ("CROWN", b) in steady else f"{'-':>14}"
                for b in batches
            )
        )
        print(f"\n{title}: first call (trace + compile + run)")
        print(head + "\n" + "-" * len(head))
        for name, _ in rows:
            print(f"{name:<24}" + "".join(f"{fmt_time(first.get((name, b))):>14}" for b in batches))
        for n in notes:
            print("note: " + n)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
