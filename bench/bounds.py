"""Bound computation speed on the two peer MLPs, beside auto_LiRPA 0.7.1's recorded times.

Usage: python bench/bounds.py [--repeats N] [--nets mnist,acas,mnist-tanh,acas-sigm]
Prints steady-state (compiled) time per call and compile time separately, float-sound vs unsound,
and the mean output width. "ms/call" bounds a pre-traced `tljax.trace` Graph (the analogue of
auto_LiRPA's BoundedModule, built once and then bounded many times); "fn ms" passes the Python
function, which re-traces it on every call. auto_LiRPA's times were recorded on a 2-core CPU of
the CI kind (../shared/benchmarks/peers/README.md); they are quoted, not re-run (torch is not a
dependency).
"""

import argparse
import functools as ft
import pathlib
import statistics
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
    args = ap.parse_args()
    if not PEERS.is_dir():
        raise SystemExit(f"peer data not found at {PEERS}")
    print(f"jax {jax.__version__}, devices {jax.devices()}")
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


if __name__ == "__main__":
    main()
