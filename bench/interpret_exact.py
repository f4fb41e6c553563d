"""Benchmark of the exact semantics on a 784-256-256-256-10 ReLU MLP (float32 weights, one input).

Compares `tljax.evaluate(..., semantics="exact")` (dyadic integers + flint.fmpz_mat) with a plain
`fractions.Fraction` evaluation (numpy object arrays, `np.dot`) of the same MLP, and checks that
both give the same exact output.

Run:  python bench/interpret_exact.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import time
from fractions import Fraction

import jax
import numpy as np

import tljax
from tljax.interpret._exact import exact_to_float

SIZES = (784, 256, 256, 256, 10)


def make_mlp(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.standard_normal(b) * 0.1).astype(np.float32),
        )
        for a, b in itertools.pairwise(SIZES)
    ]
    return params, rng.standard_normal(SIZES[0]).astype(np.float32)


def mlp(params, x):
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


def to_fractions(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    out.ravel()[:] = [Fraction(float(v)) for v in a.ravel()]
    return out


def fraction_mlp(params, x):
    h = to_fractions(x)
    for i, (w, b) in enumerate(params):
        h = np.dot(h, to_fractions(w)) + to_fractions(b)
        if i < len(params) - 1:
            h = np.where(h > 0, h, Fraction(0))
    return h


def best(f, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    params, x = make_mlp()
    t0 = time.perf_counter()
    graph = tljax.trace(mlp, params, x)
    t_trace = time.perf_counter() - t0
    t_exact, y = best(lambda: tljax.evaluate(graph, params, x, semantics="exact"), args.repeat)
    t_ref, r = best(
        lambda: np.asarray(tljax.evaluate(graph, params, x, semantics="reference")), args.repeat
    )
    t_frac, yf = best(lambda: fraction_mlp(params, x), 1)
    assert all(a == b for a, b in zip(y.ravel(), yf.ravel(), strict=True)), (
        "exact != Fraction reference"
    )
    err = np.max(np.abs(exact_to_float(y) - r.astype(np.float64)))
    rows = [
        ("trace (make_jaxpr)", t_trace, ""),
        ("reference (XLA, float32)", t_ref, ""),
        ("exact (dyadic + fmpz_mat)", t_exact, "goal < 0.5 s"),
        (
            "fractions.Fraction (numpy object dot)",
            t_frac,
            f"{t_frac / t_exact:.0f}x slower than exact",
        ),
    ]
    print(
        f"MLP {'-'.join(map(str, SIZES))}, float32 weights, one input; best of {args.repeat} "
        "(Fraction: 1 run)"
    )
    print(f"{'evaluation':40s} {'seconds':>10s}  note")
    for name, t, note in rows:
        print(f"{name:40s} {t:10.4f}  {note}")
    bits = max(abs(v.numerator).bit_length() + v.denominator.bit_length() for v in y.ravel())
    print(
        f"exact == Fraction reference: yes; output size up to {bits} bits; max |exact - float32| "
        f"= {err:.3g}"
    )


if __name__ == "__main__":
    main()
