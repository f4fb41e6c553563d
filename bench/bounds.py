"""Bound computation speed on the two peer MLPs, beside auto_LiRPA 0.7.1's recorded times.

Usage: python bench/bounds.py [--repeats N] [--nets mnist,acas,mnist-tanh,acas-sigm]
                              [--no-batch | --batch-only]
Prints steady-state (compiled) time per call and compile time separately, float-sound vs unsound,
and the mean output width. "ms/call" bounds a pre-traced `tljax.trace` Graph (the analogue of
auto_LiRPA's BoundedModule, built once and then bounded many times); "fn ms" passes the Python
function, which re-traces it on every call. auto_LiRPA's times were recorded on a 2-core CPU of
the CI kind (../shared/benchmarks/peers/README.md); they are quoted, not re-run (torch is not a
dependency).

The batch section (after the main table; `--no-batch` skips it, `--batch-only` runs only it)
bounds 1 / 16 / 256 boxes with CROWN in one jitted `jax.vmap` call, against a Python loop of
single `tljax.bound` calls, beside a matmul FLOP floor measured on this machine.
"""

import argparse
import functools as ft
import pathlib
import statistics
import subprocess
import time

import jax
import numpy as np

import tljax

PEERS = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "peers"
# Recorded auto_LiRPA medians in ms (low end = quiet machine), from the peers README.
LIRPA_MS = {
    ("mnist", "ibp"): (3, 32),
    ("mnist", "crown"): (22, 190),
    ("mnist", "alpha-crown"): (1900, 21000),
    ("acas", "ibp"): (3, 9),
    ("acas", "crown"): (41, 350),
    ("acas", "alpha-crown"): (4500, 22000),
}


def net(x, params, act=jax.nn.relu):
    h = x
    for i, (w, b) in enumerate(params):
        h = w @ h + b
        if i < len(params) - 1:
            h = act(h)
    return h


OLD_METHODS = ("ibp", "affine", "crown", "alpha-crown")  # before crown-ibp (before/after tables)
# the peers' ReLU nets, and the same weights with smooth activations (no peer numbers): the
# smooth relaxations' cost
NETS = {
    "mnist": ("mnist", jax.nn.relu),
    "acas": ("acas", jax.nn.relu),
    "mnist-tanh": ("mnist", jax.nn.tanh),
    "acas-sigm": ("acas", jax.nn.sigmoid),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated: " + ", ".join(NETS))
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--no-batch", action="store_true", help="skip the batch section")
    group.add_argument("--batch-only", action="store_true", help="run only the batch section")
    args = ap.parse_args()
    if not PEERS.is_dir():
        raise SystemExit(f"peer data not found at {PEERS}")
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    if not args.batch_only:
        main_table(args)
    if not args.no_batch:
        batch_section()


def main_table(args):
    header = (
        f"{'net':6s} {'method':12s} {'sound':5s} {'compile s':>9s} {'ms/call':>8s} {'fn ms':>7s} "
        f"{'peer ms':>10s} {'ratio':>7s} {'width':>9s}"
    )
    print(header)
    print("-" * len(header))
    for name in args.nets.split(","):
        data, act = NETS[name]
        d = np.load(PEERS / f"{data}_mlp.npz")
        k = len([key for key in d.files if key.startswith("W")])
        params = [(d[f"W{i}"], d[f"b{i}"]) for i in range(k)]
        box = tljax.Box(d["x"][0] - d["eps"], d["x"][0] + d["eps"])
        fn = ft.partial(net, act=act)
        graph = tljax.trace(fn, box.lower, params)
        for method in ("ibp", "affine", "crown", "crown-ibp", "alpha-crown"):
            if method not in getattr(tljax.bounds, "METHODS", OLD_METHODS):
                continue
            for sound in (False, True):
                t0 = time.perf_counter()
                b = tljax.bound(graph, box, params, method=method, float_sound=sound)
                jax.block_until_ready(b.lower)
                compile_s = time.perf_counter() - t0
                reps = args.repeats if method != "alpha-crown" else max(3, args.repeats // 5)
                ts, tf = [], []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    b = tljax.bound(graph, box, params, method=method, float_sound=sound)
                    jax.block_until_ready(b.lower)
                    ts.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    jax.block_until_ready(
                        tljax.bound(fn, box, params, method=method, float_sound=sound).lower
                    )
                    tf.append(time.perf_counter() - t0)
                ms = statistics.median(ts) * 1e3
                fn_ms = statistics.median(tf) * 1e3
                lo_ms, hi_ms = LIRPA_MS.get((name, method), (None, None))
                width = float(np.mean(np.asarray(b.upper) - np.asarray(b.lower)))
                peer = f"{lo_ms:>4d}-{hi_ms:<5d}" if lo_ms else f"{'-':>10s}"
                ratio = f"{lo_ms / ms:7.2f}" if lo_ms else f"{'-':>7s}"
                print(
                    f"{name:6s} {method:12s} {sound!s:5s} {compile_s:9.2f} {ms:8.2f} {fn_ms:7.2f} "
                    f"{peer} {ratio} {width:9.4f}"
                )
    print("ratio = auto_LiRPA's quiet-machine time / tljax's (higher is better for tljax)")


# ---------------------------------------------------------------------------------------------
# Batch section: many boxes in one call.

BATCHES = (1, 16, 256)


def load(data):
    d = np.load(PEERS / f"{data}_mlp.npz")
    k = len([key for key in d.files if key.startswith("W")])
    return [(d[f"W{i}"], d[f"b{i}"]) for i in range(k)], d["x"][0], float(d["eps"])


def crown_flops(params):
    """Matmul FLOPs of one CROWN bound (lower and upper) of an MLP, a floor on its work.

    W_i maps n_i -> n_{i+1}, ReLUs on z_1..z_{L-1}. z_1 is exact (IBP); CROWN back-substitutes
    from each z_t, t = 2..L, with 2 n_t rows (lower, upper) starting at A = W_{t-1}, through
    W_{t-2}..W_0: F = sum_t 4 n_t sum_{i=0}^{t-2} n_{i+1} n_i (the input concretisation and
    elementwise work are left out).
    """
    n = [params[0][0].shape[1]] + [w.shape[0] for w, _ in params]
    return sum(4 * n[t] * sum(n[i + 1] * n[i] for i in range(t - 1)) for t in range(2, len(n)))


def timed(f, budget=1.0, most=5):
    """Median seconds of warm calls of `f` (at least 2, at most `most`, about `budget` s)."""
    ts = []
    while len(ts) < 2 or (len(ts) < most and sum(ts) < budget):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def matmul_gflops(rows, k, n):
    """This CPU's float32 GFLOP/s on a jitted (rows, k) @ (k, n) matmul."""
    rng = np.random.RandomState(1)
    a = jax.numpy.asarray(rng.randn(rows, k).astype(np.float32))
    b = jax.numpy.asarray(rng.randn(k, n).astype(np.float32))
    mm = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(mm(a, b))
    return 2 * rows * k * n / timed(lambda: mm(a, b)) / 1e9


def load_avg():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in __import__("os").getloadavg())


def lirpa_batched(params, lo, hi):
    """auto_LiRPA CROWN on the whole batch at once: (cold s, warm s), or None if not installed."""
    try:
        import torch
        from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
    except ImportError:
        return None
    layers = []
    for w, b in params:
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data, lin.bias.data = torch.tensor(w), torch.tensor(b)
        layers += [lin, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    x = BoundedTensor((lo_t + hi_t) / 2, PerturbationLpNorm(x_L=lo_t, x_U=hi_t))
    t0 = time.perf_counter()
    module = BoundedModule(model, torch.zeros_like(lo_t[:1]))
    module.compute_bounds(x=(x,), method="CROWN")
    cold = time.perf_counter() - t0
    return cold, timed(lambda: module.compute_bounds(x=(x,), method="CROWN"))


def batch_rows(name, graph, params, los, his, sound, per_box_floor, notes):
    """Table rows of one net and float_sound setting, for each batch size."""

    def one(lo, hi):
        b = tljax.bound(graph, tljax.Box(lo, hi), params, method="crown", float_sound=sound)
        return b.lower, b.upper

    def single(i):
        box = tljax.Box(los[i], his[i])
        return tljax.bound(graph, box, params, method="crown", float_sound=sound).lower

    jax.block_until_ready(single(0))  # compile the single-box program
    batched = jax.jit(jax.vmap(one))
    for n in BATCHES:
        lo, hi = jax.numpy.asarray(los[:n]), jax.numpy.asarray(his[:n])
        t0 = time.perf_counter()
        out = jax.block_until_ready(batched(lo, hi))
        cold = time.perf_counter() - t0
        jax.block_until_ready(batched(lo, hi))  # first run of the executable
        warm = timed(lambda lo=lo, hi=hi: batched(lo, hi))
        loop = timed(lambda n=n: [single(i) for i in range(n)], budget=0.5, most=3)
        ref = np.stack([np.asarray(single(i)) for i in range(min(n, 4))])
        if not np.allclose(np.asarray(out[0][: len(ref)]), ref, rtol=1e-5, atol=1e-5):
            notes.append(f"{name} sound={sound} n={n}: batch and loop bounds differ")
        floor = per_box_floor * n
        yield (
            f"| {name:5s} | {sound!s:5s} | {n:5d} | {cold:6.2f} | {warm * 1e3:9.2f} | "
            f"{n / warm:8.0f} | {loop * 1e3:9.2f} | {n / loop:8.0f} | "
            f"{loop / warm:8.2f} | {floor * 1e3:8.3f} | {warm / floor:6.1f} |"
        )


def batch_section():
    t_start = time.perf_counter()
    print(f"\n## Batched CROWN: one jitted vmap call vs a loop of single calls\n\n{load_avg()}\n")
    header = (
        f"| {'net':5s} | {'sound':5s} | {'boxes':>5s} | {'cold s':>6s} | {'batch ms':>9s} | "
        f"{'boxes/s':>8s} | {'loop ms':>9s} | {'loop b/s':>8s} | {'speed-up':>8s} | "
        f"{'floor ms':>8s} | {'/floor':>6s} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    notes, lirpa = [], []
    for name in ("acas", "mnist"):
        params, x0, eps = load(name)
        graph = tljax.trace(net, x0, params)
        hidden = params[0][0].shape[0]
        gflops = matmul_gflops(2 * hidden * 16, hidden, hidden)
        flops = crown_flops(params)
        notes.append(f"{name}: {flops / 1e6:.2f} MFLOP/box, matmul {gflops:.1f} GFLOP/s")
        rng = np.random.RandomState(0)
        pts = (x0 + 0.05 * rng.randn(max(BATCHES), x0.size)).astype(np.float32)
        los, his = pts - np.float32(eps), pts + np.float32(eps)
        box_floor = flops / gflops / 1e9  # seconds per box at the measured matmul rate
        for sound in (False, True):
            for row in batch_rows(name, graph, params, los, his, sound, box_floor, notes):
                print(row, flush=True)
        for n in BATCHES[1:]:
            got = lirpa_batched(params, los[:n], his[:n])
            if got is None:
                break
            lirpa.append(f"auto_LiRPA {name} n={n}: cold {got[0]:.2f} s, {n / got[1]:.0f} boxes/s")
    print("\nspeed-up = loop time / batch time; floor = FLOPs * boxes / matmul GFLOP/s (float32,")
    print("(2*hidden*16, hidden) @ (hidden, hidden), jitted, same run); /floor = batch / floor")
    for line in notes + (lirpa or ["auto_LiRPA: not installed"]):
        print(line)
    print(f"batch section {time.perf_counter() - t_start:.0f} s; {load_avg()}")


if __name__ == "__main__":
    main()
