"""Unsat verdicts with exactly checked leaf certificates on the shared VNN-COMP instances.

For each unsat instance (expected verdict from the benchmark's expected.csv), runs
`tljax.verify(..., certificates=True)`, which attaches to every leaf of the search a bound
certificate (`tljax.bound(..., certificate=True)`; for ReLU-split leaves about the split domain,
with the beta-CROWN multipliers), then `result.check()`: coverage of the input box by the leaves
and every leaf certificate re-derived by `tljax.bounds.check` in exact rational arithmetic.
Prints per instance: leaves (input-split / ReLU-split), the time of the search with the
certificates, the time of the exact check, accepted.

    python bench/certificates.py --suite mnist_fc --limit 5
    python bench/certificates.py --suite acasxu --select 0,3
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tljax.verify import load_instance, verify  # noqa: E402
from tljax.verify._cli import display_path  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="mnist_fc", help="folder under ../shared/benchmarks")
    p.add_argument("--benchmarks", default=str((REPO / ".." / "shared" / "benchmarks").resolve()))
    p.add_argument("--timeout", type=float, default=116.0, help="search budget per instance (s)")
    p.add_argument("--limit", type=int, default=None, help="the first N unsat instances only")
    p.add_argument("--select", default=None, help="comma-separated 0-based rows of expected.csv")
    p.add_argument("--max-leaves", type=int, default=400, help="skip certificates above this")
    p.add_argument(
        "--cert-timeout",
        type=float,
        default=900.0,
        help="seconds for the certificates after the verdict (VNN-COMP's timeout is the search's)",
    )
    args = p.parse_args(argv)

    folder = Path(args.benchmarks) / args.suite
    path = folder / "expected.csv"
    if not path.is_file():
        print(f"no benchmark at {display_path(path)}; pass --benchmarks DIR", file=sys.stderr)
        return 2
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    index = [i for i, r in enumerate(rows) if r["expected"] == "unsat"]
    if args.select:
        index = [int(s) for s in args.select.split(",") if s.strip()]
    if args.limit is not None:
        index = index[: args.limit]
    load = os.getloadavg()[0]
    print(f"# {args.suite}: {len(index)} unsat instances, cpus {os.cpu_count()}, load {load:.2f}")
    head = (
        f"{'row':>4} {'instance':<44} {'verdict':<8} {'leaves':>12} {'verify+certs':>13} "
        f"{'check':>8}  accepted"
    )
    print(head)
    n_ok = n_done = 0
    for i in index:
        r = rows[i]
        name = f"{Path(r['onnx']).stem[:26]} {Path(r['vnnlib']).stem}"
        fn, prop, fargs, shape = load_instance(folder / r["onnx"], folder / r["vnnlib"])
        t0 = time.monotonic()
        res = verify(
            fn,
            prop,
            *fargs,
            input_shape=shape,
            timeout=args.timeout,
            certificates=args.max_leaves,
            certificate_timeout=args.cert_timeout,
        )
        t_verify = time.monotonic() - t0
        if res.verdict != "unsat":
            print(f"{i:>4} {name:<44} {res.verdict:<8} {'-':>12} {t_verify:>7.1f}s")
            continue
        groups = res.certificate.groups
        n_relu = sum(int((g.splits != 0).any(axis=1).sum()) for g in groups if g.splits.shape[1])
        n = res.certificate.n_leaves
        leaves = f"{n - n_relu}/{n_relu}"
        t0 = time.monotonic()
        report = res.check()
        t_check = time.monotonic() - t0
        attached = all(g.bound_certificates is not None for g in res.certificate.groups)
        ok = report.accepted and attached
        n_done += 1
        n_ok += ok
        why = "" if ok else ("; ".join(report.reasons) or "; ".join(res.notes))[:200]
        print(
            f"{i:>4} {name:<44} {'unsat':<8} {leaves:>12} {t_verify:>12.1f}s "
            f"{t_check:>7.1f}s  {ok} {why}",
            flush=True,
        )
    print(f"# leaf certificates attached and accepted on {n_ok}/{n_done} unsat instances")
    return 0 if n_ok == n_done else 1


if __name__ == "__main__":
    sys.exit(main())
