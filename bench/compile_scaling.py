"""Compile time against program size: the bound programs of a family of growing networks.

Usage: python bench/compile_scaling.py [--methods ibp,crown,taylor] [--max-eqns N] [--quick]

Networks: tanh MLPs of 2 inputs, depth d, width w; the bounded program is u (order 0), u + u_t +
u_x (order 1, nested forward mode as `tljax.sciml.derivatives` builds it) or that plus u_xx
(order 2), the shape of a PDE residual. Per program and method: tape equations, jaxpr
equations of the bound program (one box, float-sound, as `tljax.bound` compiles it), trace s,
XLA compile s, warm ms. Then per method the least-squares slope of log(compile s) against
log(jaxpr equations) over the family: 1 is linear. Programs whose bound program has more than
--max-eqns jaxpr equations are traced and counted but not compiled.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from tljax.bounds import Box, prepare
from tljax.core import compat, trace
from tljax.sciml import derivatives
from tljax.transforms import cse

PARTIALS = {0: [], 1: ["t", "x"], 2: ["t", "x", "xx"]}


def network(depth: int, width: int, seed: int = 0):
    """A tanh MLP 2 -> width x depth -> 1 with 1/sqrt(fan-in) Gaussian weights."""
    rng = np.random.default_rng(seed)
    sizes = [2] + [width] * depth + [1]
    layers = [
        (rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
        for i, o in itertools.pairwise(sizes)
    ]

    def u(z):
        for k, (W, b) in enumerate(layers):
            z = jnp.asarray(W, z.dtype) @ z + jnp.asarray(b, z.dtype)
            z = jnp.tanh(z) if k < len(layers) - 1 else z
        return z[0]

    return u


def program(depth: int, width: int, order: int):
    u = network(depth, width)
    if order == 0:
        return lambda z: u(z).reshape(1)
    d = derivatives(u, PARTIALS[order], "tx")

    def f(z):
        v = d(z)
        return sum(v[k] for k in ["", *PARTIALS[order]]).reshape(1)

    return f


def measure(f, method: str, max_eqns: int) -> dict:
    graph = cse(trace(f, jnp.zeros(2, jnp.float32)))
    p = prepare(graph, Box(jnp.zeros(2), jnp.ones(2)), float_format=None)
    tape_eqns = len(p.tape.eqns)

    def one(lo, hi):
        ff = "real" if method == "taylor" else None
        fs = method != "taylor"  # taylor bounds the real-valued program or runs unsound
        ((lo_, hi_),) = prepare(graph, Box(lo, hi), float_format=ff, float_sound=fs).bounds(method)
        return lo_, hi_

    opts = {"xla_cpu_use_fusion_emitters": False}
    fn = jax.jit(one, compiler_options=compat.supported_compiler_options(opts))
    lo, hi = jnp.asarray([0.2, -0.3], jnp.float32), jnp.asarray([0.21, -0.29], jnp.float32)
    t0 = time.perf_counter()
    traced = fn.trace(lo, hi)
    eqns = len(traced.jaxpr.eqns)
    t_trace = time.perf_counter() - t0
    row = {"tape": tape_eqns, "eqns": eqns, "trace_s": t_trace}
    if eqns > max_eqns:
        return row
    t0 = time.perf_counter()
    compiled = traced.lower().compile()
    row["compile_s"] = time.perf_counter() - t0
    jax.block_until_ready(compiled(lo, hi))
    t0 = time.perf_counter()
    out = compiled(lo, hi)
    jax.block_until_ready(out)
    row["warm_ms"] = (time.perf_counter() - t0) * 1e3
    row["width"] = float(out[1][0] - out[0][0])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="ibp,crown,taylor")
    ap.add_argument("--max-eqns", type=int, default=40_000)
    ap.add_argument("--quick", action="store_true", help="a smaller family (CI smoke run)")
    a = ap.parse_args(argv)
    if a.quick:
        family = [(1, 8, 0), (2, 8, 1), (2, 16, 0)]
    else:
        family = [(d, 32, k) for k in (0, 1, 2) for d in (2, 4, 8)]
        family += [(4, w, 1) for w in (16, 64, 128)]
    print(f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}, jax {jax.__version__}\n")
    print(
        "| method | depth | width | order | tape eqns | jaxpr eqns | trace s | compile s "
        "| warm ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    fits = {}
    for method in a.methods.split(","):
        for d, w, k in family:
            r = measure(program(d, w, k), method, a.max_eqns)
            comp = r.get("compile_s")
            timing = "- | -" if comp is None else f"{comp:.1f} | {r['warm_ms']:.2f}"
            print(
                f"| {method} | {d} | {w} | {k} | {r['tape']} | {r['eqns']} | {r['trace_s']:.1f} "
                f"| {timing} |",
                flush=True,
            )
            if comp is not None:
                fits.setdefault(method, []).append((r["eqns"], comp))
    print(
        "\n| method | programs compiled | slope of log(compile s) vs log(jaxpr eqns) "
        "| s per 1K eqns |"
    )
    print("|---|---|---|---|")
    for method, pts in fits.items():
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        slope = float(np.polyfit(x, y, 1)[0]) if len(pts) > 1 else float("nan")
        per = np.median([p[1] / p[0] * 1e3 for p in pts])
        print(f"| {method} | {len(pts)} | {slope:.2f} | {per:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
