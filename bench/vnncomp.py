"""VNN-COMP benchmark run of `tljax.verify`: ACAS Xu (and mnist_fc) from ../shared/benchmarks.

Run from the repository root:

    python bench/vnncomp.py                         # all 72 ACAS Xu instances, 116 s each
    python bench/vnncomp.py --limit 10 --timeout 30
    python bench/vnncomp.py --suite mnist_fc --limit 5
    python bench/vnncomp.py --select 0,18,36        # rows of instances.csv (0-based)
    python bench/vnncomp.py --suite verivital --timeout 300

Per instance it prints verdict, wall time (network loading and compilation included; compiled
code is shared by networks of one architecture within the process), whether the verdict
matches expected.csv and the number of branch-and-bound domains bounded; then the solved count,
the verdict counts, the number of wrong verdicts (sat where unsat is expected or the reverse;
must be 0), the median time of the solved instances and the total time. Where expected.csv
has alpha-beta-CROWN's time per instance (`abcrown_seconds`, measured on a GPU, start-up
included), a second table puts it beside ours, with the process's peak resident memory after
each instance (`getrusage`: the peak so far, as instances share one process and its compiled
code) and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tljax.verify._cli import display_path, read_instances, run_instances, summary  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--suite",
        default="acasxu",
        help="folder under ../shared/benchmarks (acasxu, mnist_fc, verivital, test)",
    )
    p.add_argument("--benchmarks", default=str((REPO / ".." / "shared" / "benchmarks").resolve()))
    p.add_argument(
        "--timeout", type=float, default=116.0, help="seconds per instance (VNN-COMP ACAS Xu: 116)"
    )
    p.add_argument("--limit", type=int, default=None, help="run the first N instances only")
    p.add_argument("--select", default=None, help="comma-separated 0-based rows of instances.csv")
    p.add_argument(
        "--order",
        default="file",
        choices=["file", "interleave"],
        help="interleave: mix properties early",
    )
    p.add_argument("--out", default=None, help="write per-instance results as CSV")
    args = p.parse_args(argv)

    csv_path = os.path.join(args.benchmarks, args.suite, "instances.csv")
    if not os.path.isfile(csv_path):
        print(
            f"no benchmark at {display_path(csv_path)}; pass --benchmarks DIR (expected "
            "../shared/benchmarks)",
            file=sys.stderr,
        )
        return 2
    rows, expected = read_instances(csv_path)
    index = list(range(len(rows)))
    if args.order == "interleave":
        # round-robin over properties so a --limit run samples every property
        by_prop: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_prop.setdefault(r[1], []).append(i)
        index = [i for group in _zip_longest(*by_prop.values()) for i in group if i is not None]
    if args.select:
        index = [int(s) for s in args.select.split(",") if s.strip()]
    if args.limit is not None:
        index = index[: args.limit]
    chosen = [rows[i] for i in index]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {args.suite}: {len(chosen)} of {len(rows)} instances, timeout {args.timeout:g}s, "
        f"cpus {os.cpu_count()}, load {load:.2f}"
    )
    t0 = time.monotonic()
    peaks: list[float] = []

    def log(line):
        peaks.append(_peak_mib())
        print(line, flush=True)

    records = run_instances(chosen, expected, timeout=args.timeout, log=log)
    for rec, i in zip(records, index, strict=True):
        rec["index"] = i
    s = summary(records)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("# " + ", ".join(f"{v} {n}" for v, n in s["verdicts"].items()))
    print(
        f"# solved {s['solved']}/{s['total']} ({100.0 * s['solved'] / max(s['total'], 1):.0f}%), "
        f"wrong {s['wrong']}, errors {s['errors']}, median time solved {s['median_time']:.2f}s, "
        f"median all {s['median_time_all']:.2f}s, "
        f"total {time.monotonic() - t0:.0f}s, load at end {load:.2f}"
    )
    peer = _abcrown_times(os.path.join(args.benchmarks, args.suite, "expected.csv"))
    if peer:
        _peer_table(records, chosen, peer, peaks)
    if args.out:
        import csv

        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
    return 1 if s["wrong"] else 0


def _peak_mib() -> float:
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024.0


def _abcrown_times(path) -> dict:
    """`{(onnx, vnnlib): (result, seconds)}` from expected.csv's alpha-beta-CROWN columns."""
    import csv

    if not os.path.isfile(path):
        return {}
    path = os.path.abspath(path)
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            sec = row.get("abcrown_seconds")
            if sec:
                key = tuple(os.path.join(os.path.dirname(path), row[k]) for k in ("onnx", "vnnlib"))
                out[key] = (row.get("abcrown_result", ""), float(sec))
    return out


def _peer_table(records, chosen, peer, peaks) -> None:
    import statistics

    print("\n| vnnlib | tljax | s | peak MiB | abcrown | s | ratio |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for rec, row, peak in zip(records, chosen, peaks, strict=False):
        key = (row[0], row[1])
        res, sec = peer.get(key, ("", float("nan")))
        ratio = rec["time"] / sec if sec == sec and sec > 0 else float("nan")
        if rec["verdict"] in ("sat", "unsat") and ratio == ratio:
            ratios.append(ratio)
        print(
            f"| {rec['vnnlib']} | {rec['verdict']} | {rec['time']:.1f} | {peak:.0f} | {res} | "
            f"{sec:.1f} | {ratio:.2f} |"
        )
    if ratios:
        print(
            f"# time / alpha-beta-CROWN's (solved): median {statistics.median(ratios):.2f}, "
            f"max {max(ratios):.2f}; peak resident memory {max(peaks):.0f} MiB"
        )


def _zip_longest(*lists):
    n = max((len(x) for x in lists), default=0)
    for k in range(n):
        yield [x[k] if k < len(x) else None for x in lists]


if __name__ == "__main__":
    sys.exit(main())
