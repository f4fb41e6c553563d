"""Per pass and zoo model: the validation figures (certified deviation over a box, largest
exact-semantics and float deviations at the test inputs, validation time).

Run: python bench/transforms.py [--eps 0.01] [--models mlp,cnn,...] [--passes inline,...]
Uses the zoo of tests/transforms/conftest.py; ACAS Xu needs ../shared/benchmarks.
"""

from __future__ import annotations

import argparse
import functools as ft
import importlib.util
import pathlib
import time

import jax.numpy as jnp
import numpy as np

import tljax
import tljax.transforms as T

ROOT = pathlib.Path(__file__).resolve().parents[1]
ACAS = (
    ROOT / ".." / "shared" / "benchmarks" / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
)

PASSES = {
    "inline": T.inline,
    "dce": T.dce,
    "cse": T.cse,
    "constant_fold": T.constant_fold,
    "fold_affine": T.fold_affine,
    "unroll": T.unroll,
    "lower_precision[bf16]": ft.partial(T.lower_precision, fmt="bf16"),
    "simplify": lambda g: T.apply(g, *T.SIMPLIFY),
    "export_roundtrip": T.export_roundtrip,
}


def zoo():
    spec = importlib.util.spec_from_file_location(
        "zoo", ROOT / "tests" / "transforms" / "conftest.py"
    )
    z = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(z)
    out = {}
    for name, make in (
        ("mlp", z.make_mlp),
        ("cnn", z.make_cnn),
        ("attention", z.make_attention),
        ("ssm", z.make_ssm),
    ):
        fn, x = make()[:2]
        out[name] = (tljax.trace(fn, x, name=name), x)
    if ACAS.exists():
        from tljax.transforms._roundtrip import onnx_graph

        out["acasxu"] = (onnx_graph(ACAS), np.float32([[[[0.2, -0.1, 0.3, 0.1, -0.2]]]]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--models", default="")
    ap.add_argument("--passes", default="")
    args = ap.parse_args()
    models = zoo()
    names = [m for m in (args.models.split(",") if args.models else models) if m in models]
    passes = args.passes.split(",") if args.passes else list(PASSES)
    print(f"box: x +- {args.eps}; certified = CROWN bound of max|t(x)-o(x)| (float_sound)")
    print(f"{'model':10} {'pass':22} {'eqns':>9} {'verdict':11} {'exact max':>10} "
          f"{'float max':>10} {'certified':>10} {'pass s':>7} {'valid. s':>8}")  # fmt: skip
    for m in names:
        g, x = models[m]
        box = tljax.Box(jnp.asarray(x) - args.eps, jnp.asarray(x) + args.eps)
        for p in passes:
            t0 = time.perf_counter()
            out = PASSES[p](g)
            t_pass = time.perf_counter() - t0
            v = T.validate(g, out, box)
            ex = next((s for s in v.stages if s.name == "exact semantics"), None)
            ex_s = "skipped" if ex is None or ex.skipped else f"{ex.max_deviation:.2e}"
            fl = next(s for s in v.stages if s.name.startswith("float"))
            cert = "n/a" if v.certified_deviation is None else f"{v.certified_deviation:.2e}"
            n0 = sum(1 for _ in tljax.core.iter_eqns(g.jaxpr))
            n1 = sum(1 for _ in tljax.core.iter_eqns(out.jaxpr))
            print(f"{m:10} {p:22} {f'{n0}->{n1}':>9} {v.verdict:11} {ex_s:>10} "
                  f"{fl.max_deviation:10.2e} {cert:>10} {t_pass:7.2f} {v.seconds:8.1f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
