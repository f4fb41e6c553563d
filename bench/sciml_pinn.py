"""Certified Burgers PINN (../shared/benchmarks/sciml/pinn): sup |residual|, initial and boundary
errors over the whole domain by `tljax.sciml.certify_pinn`, against the sampled maxima.

Usage: python bench/sciml_pinn.py [--semantics real|float32] [--timeout S] [--batch B]
       [--only residual,initial,boundary] [--split greedy|gradient|widest] [--check-leaves N]
       python bench/sciml_pinn.py --crown-batch N [--radius R]

Prints one markdown table: certified sup, sampled max, ratio, leaves, wall time, compile time,
and the folder README's sampled references beside them. With --crown-batch: `tljax.bound`'s
float-sound CROWN of the float32 residual on single boxes and on N boxes in one `jax.vmap` call
(a program too large to compile: evaluated on the host), first and second calls, with the
bounds' widths against the sampled ranges.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tljax.io import load_onnx
from tljax.sciml import certify_pinn

ROOT = Path(__file__).resolve().parents[1]
ONNX = ROOT / ".." / "shared" / "benchmarks" / "sciml" / "pinn" / "burgers_tanh_lbfgs.onnx"
NU = 0.01 / np.pi
LAYERS = ["layers.first_layer"] + [f"layers.hidden_{i}" for i in range(8)] + ["layers.last_fc"]
# sampled by the folder's README (float64, fine grids): the anchors a certificate must approach
README_SAMPLED = {
    "residual": 0.133949,
    "initial": 1.26039e-3,
    "boundary x=-1": 2.84156e-4,
    "boundary x=1": 2.55452e-4,
}


def burgers_u(params, dtype):
    """u(t, x) of the ONNX graph written in jax.numpy for any float dtype (the graph's input
    rescaling to [-1, 1]^2, nine tanh layers, a linear output)."""
    Ws = [
        (jnp.asarray(params[n + ".weight"], dtype), jnp.asarray(params[n + ".bias"], dtype))
        for n in LAYERS
    ]

    def u(z):
        h = z * jnp.asarray([2.0, 1.0], z.dtype) - jnp.asarray([1.0, 0.0], z.dtype)
        for W, b in Ws[:-1]:
            h = jnp.tanh(W @ h + b)
        W, b = Ws[-1]
        return (W @ h + b)[0]

    return u


def residual(d, z):
    del z
    return d["t"] + d[""] * d["x"] - NU * d["xx"]


def check_leaves(rep, n: int) -> None:
    """Per quantity: the exact certificates of its n highest-bound leaves and n random ones."""
    print(
        "\n| quantity | leaves checked | accepted | certificate kind | claim vs leaf bound (max "
        "rel. diff) | s per leaf (certificate + check) |"
    )
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for c in rep.certificates:
        top = np.argsort(-np.maximum(np.abs(c.f_lower), np.abs(c.f_upper)))[:n]
        rest = np.setdiff1d(np.arange(c.leaves), top)
        idx = np.concatenate([top, rng.choice(rest, min(n, len(rest)), replace=False)])
        ok, diff, kinds = 0, 0.0, set()
        t0 = time.perf_counter()
        for i in idx:
            cert, report = c.certificate(int(i))
            ok += bool(report.accepted)
            kinds.add(cert.method)
            claim = np.array([cert.lower[0][0], cert.upper[0][0]])
            leaf = np.array([c.f_lower[i], c.f_upper[i]])
            diff = max(diff, float(np.max(np.abs(claim - leaf) / np.maximum(np.abs(leaf), 1e-300))))
        per = (time.perf_counter() - t0) / max(len(idx), 1)
        print(
            f"| {c.name} | {len(idx)} | {ok} | {', '.join(sorted(kinds))} | {diff:.2e} | "
            f"{per:.1f} |"
        )


def crown_batch(params, n: int, radius: float) -> None:
    """`tljax.bound` CROWN of the residual: single boxes, then n boxes in one mapped call."""
    import tljax
    from tljax.sciml import derivatives

    d = derivatives(burgers_u(params, jnp.float32), ["t", "x", "xx"], "tx")

    def f(z):
        return jnp.reshape(residual(d(z), z), (1,))

    def b(lo, hi):
        r = tljax.bound(f, tljax.Box(lo, hi))
        return r.lower[0], r.upper[0]

    rng = np.random.default_rng(1)
    c = np.stack([rng.uniform(radius, 1 - radius, n), rng.uniform(-1 + radius, 1 - radius, n)], 1)
    los, his = (c - radius).astype(np.float32), (c + radius).astype(np.float32)
    mapped = jax.vmap(b)
    rows = []
    for call in ("first", "second"):
        t0 = time.perf_counter()
        one = [np.asarray(v) for v in b(los[0], his[0])]
        rows.append((f"single box, {call} call", 1, time.perf_counter() - t0))
    for call in ("first", "second"):
        t0 = time.perf_counter()
        lo, hi = (np.asarray(v) for v in mapped(los, his))
        rows.append((f"{n} boxes in one jax.vmap call, {call}", n, time.perf_counter() - t0))
    print(
        f"\nCROWN (float-sound) of the Burgers residual, boxes of radius {radius}, "
        f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}\n"
    )
    print("| call | boxes | s | s per box |")
    print("|---|---|---|---|")
    for name, k, t in rows:
        print(f"| {name} | {k} | {t:.1f} | {t / k:.3f} |")
    # the mapped bounds against the single call and against sampled residuals
    same = max(abs(lo[0] - one[0]), abs(hi[0] - one[1])) / (1 + max(abs(one[0]), abs(one[1])))
    k = min(n, 32)
    fj = jax.jit(jax.vmap(f))
    widths, ranges, bad = [], [], 0
    for i in range(k):
        pts = rng.uniform(los[i], his[i], (2000, 2)).astype(np.float32)
        ys = np.asarray(fj(jnp.asarray(pts)))[:, 0]
        bad += int(np.sum((ys < lo[i]) | (ys > hi[i])))
        widths.append(hi[i] - lo[i])
        ranges.append(ys.max() - ys.min())
    print(
        f"\nbox 0 mapped vs single: rel. diff {same:.1e}; {k} boxes x 2000 float32 samples: "
        f"{bad} outside; median bound width {np.median(widths):.4g} vs sampled range "
        f"{np.median(ranges):.4g} (ratio {np.median(np.divide(widths, ranges)):.1f})"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--semantics", default="real", choices=["real", "float32"])
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per quantity")
    ap.add_argument("--batch", type=int, default=None, help="default: certify_sup's")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--split", default="greedy", choices=["greedy", "gradient", "widest"])
    ap.add_argument("--only", default="residual,initial,boundary")
    ap.add_argument("--save", default="", help="write the leaves to this .npz")
    ap.add_argument(
        "--crown-batch", type=int, default=0, help="only time tljax.bound's CROWN on N boxes"
    )
    ap.add_argument("--radius", type=float, default=0.005, help="with --crown-batch")
    ap.add_argument(
        "--check-leaves",
        type=int,
        default=0,
        help="also certify and exactly check this many highest-bound and as many random leaves",
    )
    a = ap.parse_args(argv)
    if not ONNX.exists():
        print(f"skipped: {ONNX} not found (the shared benchmarks folder is absent)")
        return 0
    fn, params = load_onnx(ONNX)
    # the jax.numpy network is the ONNX graph: check on 1000 points in float32
    pts = np.random.default_rng(0).uniform([0, -1], [1, 1], (1000, 2)).astype(np.float32)
    ref = np.asarray(fn(params, jnp.asarray(pts)))[:, 0]
    mine = np.asarray(jax.vmap(burgers_u(params, jnp.float32))(jnp.asarray(pts)))
    print(
        f"jax.numpy network vs ONNX graph, 1000 points: max |diff| {np.abs(ref - mine).max():.2e}"
    )
    if a.crown_batch:
        crown_batch(params, a.crown_batch, a.radius)
        return 0
    dtype = jnp.float64 if a.semantics == "real" else jnp.float32
    with jax.enable_x64(a.semantics == "real"):
        u = burgers_u(params, dtype)
        rep = certify_pinn(
            u,
            residual,
            [0.0, -1.0],
            [1.0, 1.0],
            partials=["t", "x", "xx"],
            names="tx",
            initial=lambda x: -jnp.sin(jnp.pi * x[0]),
            boundary=[(1, -1.0, 0.0), (1, 1.0, 0.0)],
            which=a.only.split(","),
            semantics=a.semantics,
            method=a.method,
            split=a.split,
            batch=a.batch,
            timeout=a.timeout,
            progress=sys.stderr.isatty(),
        )
    print(
        f"\nBurgers PINN, semantics={a.semantics}, method={a.method}, split={a.split}, "
        f"batch={a.batch}, "
        f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| quantity | certified sup | sampled (this run) | README sampled | certified / README "
        "| goal reached | leaves | bounded | wall s | compile s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in rep.certificates:
        r = README_SAMPLED.get(c.name, float("nan"))
        print(
            f"| {c.name} | {c.certified:.6g} | {c.sampled:.6g} | {r:.6g} | {c.certified / r:.3f} "
            f"| {c.reached} | {c.leaves} | {c.bounded} | {c.wall_s:.1f} | {c.compile_s:.1f} |"
        )
    if a.check_leaves:
        check_leaves(rep, a.check_leaves)
    if a.save:
        np.savez(
            a.save,
            **{
                f"{c.name}/{k}": getattr(c, k)
                for c in rep.certificates
                for k in ("lower", "upper", "f_lower", "f_upper")
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
