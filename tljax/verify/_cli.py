"""Command lines: `tljax verify NET.onnx SPEC.vnnlib` and `tljax run-instances instances.csv`.

`main_verify(argv)` and `main_run_instances(argv)` take the arguments after the sub-command and
return the exit status, so `tljax/_cli.py` can dispatch to them.
"""

from __future__ import annotations

import argparse
import csv
import functools as ft
import os
import statistics
import sys
import time

from ..core import TljaxError, processes

VERIFY_USAGE = "tljax verify NET.onnx SPEC.vnnlib [--timeout S] [--out RESULT]"


def display_path(path) -> str:
    """`path` for messages: relative to the current directory when under it, else to the
    repository (the folder holding `tljax/`) when under that, else as given."""
    path = os.fspath(path)
    full = os.path.abspath(path)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for base in (os.getcwd(), repo):
        if full == base or full.startswith(base.rstrip(os.sep) + os.sep):
            return os.path.relpath(full, base)
    return path


def _short(text: str, *paths) -> str:
    """`text` with the absolute forms of `paths` shown by `display_path`."""
    for p in paths:
        full = os.path.abspath(os.fspath(p))
        text = text.replace(full, display_path(full))
    return text


def verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tljax verify",
        description=(
            "Decide a VNN-LIB property of an ONNX network. Prints the VNN-COMP result (unsat, sat "
            "with the ((X_i v) ... (Y_j v)) assignment, unknown or timeout) and writes it to --out."
        ),
    )
    p.add_argument("onnx", help="the network (.onnx)")
    p.add_argument("vnnlib", help="the property (.vnnlib, or gzip-compressed)")
    p.add_argument(
        "--timeout", type=float, default=None, help="wall-clock budget in seconds (default: none)"
    )
    p.add_argument("--out", default=None, help="write the result file here")
    p.add_argument(
        "--method",
        default="crown",
        choices=["crown", "alpha-crown", "ibp"],
        help="bound method of the search",
    )
    p.add_argument(
        "--split", default="auto", choices=["auto", "input", "relu"], help="branching mode"
    )
    p.add_argument("--batch-size", type=int, default=256, help="domains per compiled bound call")
    p.add_argument(
        "--memory-budget",
        type=_bytes,
        default=None,
        help="memory a batch of bounds may take, e.g. 4G or 512M (default: half the available)",
    )
    p.add_argument("--seed", type=int, default=0, help="falsifier seed")
    p.add_argument(
        "--semantics",
        default="float32",
        choices=["float32", "real"],
        help="what a counterexample must violate: the float32 program as it runs (default, as "
        "VNN-COMP's checker executes it) or, with 'real', the real-valued network too",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="re-check the result before printing it (certificate / counterexample)",
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="show the search progress on stderr (default: only when stderr is a terminal)",
    )
    shown.add_argument(
        "--quiet", action="store_true", help="no progress and no summary lines on stderr"
    )
    return p


def _error(msg: str) -> int:
    print(f"tljax verify: error: {msg}", file=sys.stderr)
    return 2


def run_one(
    onnx_path,
    vnnlib_path,
    *,
    timeout=None,
    method="crown",
    split="auto",
    batch_size=256,
    seed=0,
    progress=None,
    semantics="float32",
    memory_budget=None,
):
    """Loads and verifies one instance; returns the `Result`."""
    from ._api import verify
    from ._instances import load_instance

    t0 = time.monotonic()
    fn, prop, args, shape = load_instance(onnx_path, vnnlib_path)
    left = None if timeout is None else max(timeout - (time.monotonic() - t0), 1e-3)
    return verify(
        fn,
        prop,
        *args,
        input_shape=shape,
        timeout=left,
        method=method,
        split=split,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        semantics=semantics,
        memory_budget=memory_budget,
    )


def _bytes(text: str) -> int:
    """`4G`, `512M`, `64K` or a plain byte count, as an int."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (give bytes, or a number with K, M, G or T)"
        ) from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"the memory budget must be positive, got {text!r}")
    return int(value)


def main_verify(argv: list[str] | None = None) -> int:
    """`tljax verify`: exit status 0 when a verdict (unsat/sat/unknown/timeout) was produced, 2 on
    bad input (unreadable files, mismatched property).

    stdout is the VNN-COMP result (its first line the verdict); stderr has the progress (on a
    terminal or with --progress), a summary, notes and the re-check outcome (not with --quiet)."""
    args = verify_parser().parse_args(argv)
    try:  # under a launcher (tljax.launch, SLURM, ...) one search spans every process
        processes.initialize()
    except processes.PeerLostError as err:
        return _error(str(err))
    for path, what in ((args.onnx, "network"), (args.vnnlib, "property")):
        if not os.path.isfile(path):
            return _error(
                f"{what} file {display_path(path)!r} does not exist; check the path (relative "
                "paths are read from the current directory)"
            )
    if args.timeout is not None and not args.timeout > 0:
        return _error(f"--timeout must be positive, got {args.timeout}")
    try:
        res = run_one(
            args.onnx,
            args.vnnlib,
            timeout=args.timeout,
            method=args.method,
            split=args.split,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=False if args.quiet else (True if args.progress else None),
            semantics=args.semantics,
            memory_budget=args.memory_budget,
        )
    except processes.PeerLostError as err:
        processes.exit_on_peer_loss(err, "tljax verify")
    except (TljaxError, OSError) as err:
        return _error(_short(str(err), args.onnx, args.vnnlib))
    if processes.index() != 0:  # every process holds the same result: process 0 reports it
        return 0
    say = (lambda *a: None) if args.quiet else ft.partial(print, file=sys.stderr)
    if args.check:
        report = res.check()
        if report.accepted:
            say(f"tljax verify: re-check passed: {'; '.join(report.checked)}")
        else:
            print(
                f"tljax verify: the {res.verdict} result failed its re-check: "
                f"{'; '.join(report.reasons)}",
                file=sys.stderr,
            )
            res = type(res)(
                "unknown",
                time=res.time,
                stats=res.stats,
                notes=res.notes + ("re-check failed",),
                context=res.context,
            )
    text = res.vnncomp()
    sys.stdout.write(text)
    sys.stdout.flush()
    if res.verdict == "sat" and res.counterexample.float_only:
        # said even with --quiet: the verdict rests on the float32 reading
        print(f"tljax verify: {res.counterexample.describe()}", file=sys.stderr)
    say(f"# {res} ; {', '.join(f'{k}={v}' for k, v in sorted(res.stats.items()))}")
    for note in res.notes[:5]:
        say(f"# note: {_short(note, args.onnx, args.vnnlib)}")
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(text)
        except OSError as err:
            return _error(f"cannot write --out {display_path(args.out)!r}: {err}")
    return 0


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tljax run-instances",
        description=(
            "Run a VNN-COMP benchmark folder: every row `onnx,vnnlib,timeout` of instances.csv "
            "(paths relative to the csv). Prints verdict and time per instance, and whether it "
            "matches expected.csv when that file is beside instances.csv."
        ),
    )
    p.add_argument("instances", help="instances.csv of a benchmark folder")
    p.add_argument(
        "--timeout", type=float, default=None, help="override every instance's timeout (seconds)"
    )
    p.add_argument("--limit", type=int, default=None, help="run only the first N instances")
    p.add_argument("--select", default=None, help="comma-separated row numbers (0-based) to run")
    p.add_argument("--out", default=None, help="write a CSV of the results here")
    p.add_argument("--method", default="crown", choices=["crown", "alpha-crown", "ibp"])
    p.add_argument("--split", default="auto", choices=["auto", "input", "relu"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--spread",
        action="store_true",
        help="under jax.distributed (python -m tljax.launch, SLURM, ...): each process runs every "
        "N-th instance on its own devices and process 0 prints and writes the merged results "
        "(default: every instance is one search over all processes)",
    )
    return p


def read_instances(path: str) -> tuple[list[tuple[str, str, float]], dict]:
    """Rows `(onnx, vnnlib, timeout)` with absolute paths, and `{(onnx, vnnlib): expected}` from
    an `expected.csv` beside the file (empty when there is none)."""
    base = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path, newline="") as f:
        for k, row in enumerate(csv.reader(f)):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 3:
                raise ValueError(
                    f"{display_path(path)}:{k + 1}: expected `onnx,vnnlib,timeout`, got {row}"
                )
            try:
                timeout = float(row[2])
            except ValueError as err:
                if k == 0:
                    continue  # a header
                raise ValueError(
                    f"{display_path(path)}:{k + 1}: timeout {row[2]!r} is not a number"
                ) from err
            rows.append(
                (os.path.join(base, row[0].strip()), os.path.join(base, row[1].strip()), timeout)
            )
    expected = {}
    exp_path = os.path.join(base, "expected.csv")
    if os.path.isfile(exp_path):
        with open(exp_path, newline="") as f:
            for row in csv.DictReader(f):
                key = (
                    os.path.join(base, row["onnx"].strip()),
                    os.path.join(base, row["vnnlib"].strip()),
                )
                expected[key] = row.get("expected", "").strip()
    return rows, expected


def judge(verdict: str, expected: str | None) -> str:
    """'ok', 'WRONG' (sat vs unsat), 'unsolved' (unknown/timeout) or '' (no expectation)."""
    if not expected or expected == "unknown":
        return ""
    if verdict in ("unknown", "timeout"):
        return "unsolved"
    return "ok" if verdict == expected else "WRONG"


def run_instances(
    rows,
    expected,
    *,
    timeout=None,
    method="crown",
    split="auto",
    batch_size=256,
    log=print,
    indices=None,
):
    """Runs rows `(onnx, vnnlib, timeout)`; returns a list of dict records (also logged per row).
    `indices`: the rows' numbers in the records (default 0, 1, ...)."""
    records = []
    numbers = range(len(rows)) if indices is None else indices
    for i, (onnx, vnnlib, t) in zip(numbers, rows, strict=True):
        budget = timeout if timeout is not None else t
        t0 = time.monotonic()
        error = ""
        domains = 0
        try:
            res = run_one(
                onnx,
                vnnlib,
                timeout=budget,
                method=method,
                split=split,
                batch_size=batch_size,
                progress=False,
            )
            verdict = res.verdict
            domains = int(res.stats.get("domains", 0))
        except processes.PeerLostError:
            raise  # the group is gone: no later instance can run either
        except (TljaxError, OSError) as err:
            verdict, error = "error", str(err).splitlines()[0]
        elapsed = time.monotonic() - t0
        exp = expected.get((onnx, vnnlib))
        rec = {
            "index": i,
            "onnx": os.path.basename(onnx),
            "vnnlib": os.path.basename(vnnlib),
            "verdict": verdict,
            "time": elapsed,
            "expected": exp or "",
            "match": judge(verdict, exp),
            "error": error,
            "domains": domains,
        }
        records.append(rec)
        log(_row_line(rec))
    return records


def summary(records) -> dict:
    """Solved count, wrong count and median time of solved instances."""
    solved = [r for r in records if r["verdict"] in ("sat", "unsat")]
    wrong = [r for r in records if r["match"] == "WRONG"]
    times = [r["time"] for r in solved]
    return {
        "total": len(records),
        "solved": len(solved),
        "wrong": len(wrong),
        "median_time": statistics.median(times) if times else float("nan"),
        "median_time_all": statistics.median([r["time"] for r in records])
        if records
        else float("nan"),
        "errors": sum(r["verdict"] == "error" for r in records),
        "verdicts": {v: sum(r["verdict"] == v for r in records) for v in _VERDICTS},
        "total_time": sum(r["time"] for r in records),
    }


_VERDICTS = ("unsat", "sat", "unknown", "timeout", "error")

HEADER = (
    f"{'#':>4s}  {'network':40s} {'property':22s} {'verdict':8s} {'time':>9s}  "
    f"{'expected':8s} {'match':8s} domains"
)


def _run_in_group(rows, expected, *, spread: bool, **kw) -> list[dict]:
    """`run_instances` in a process group (alone: as it is).

    Together (default): each instance is one search over every process's devices and process 0
    prints the table. `spread`: process k runs rows k, k + N, ... on its own devices
    (`processes.local`), logging them on stderr, and every process gets all the records, in
    row order (one exchange at the end); process 0 prints the merged table."""
    me, n = processes.index(), processes.group_size()
    if n == 1 or not spread:
        show = me == 0
        if show:
            print(HEADER)
        log = (lambda s: print(s, flush=True)) if show else (lambda s: None)
        return run_instances(rows, expected, log=log, **kw)
    mine = list(range(me, len(rows), n))

    def log(line):
        print(f"[process {me}] {line}", file=sys.stderr, flush=True)

    with processes.local():
        records = run_instances([rows[i] for i in mine], expected, log=log, indices=mine, **kw)
    for rec in records:
        rec["process"] = me
    merged = [r for part in processes.allgather_objects(records, what="the results") for r in part]
    merged.sort(key=lambda r: r["index"])
    if me == 0:
        print(HEADER)
        for r in merged:
            print(_row_line(r))
    return merged


def _row_line(rec: dict) -> str:
    return (
        f"{rec['index']:4d}  {rec['onnx'][:40]:40s} {rec['vnnlib'][:22]:22s} {rec['verdict']:8s} "
        f"{rec['time']:8.2f}s  {rec['expected']:8s} {rec['match']:8s} {rec['domains']:7d}"
        f"{'  ' + rec['error'] if rec['error'] else ''}"
    )


def main_run_instances(argv: list[str] | None = None) -> int:
    """`tljax run-instances`: exit status 0 when no verdict contradicts expected.csv, 1 when one
    does, 2 on bad input."""
    args = run_parser().parse_args(argv)
    try:
        processes.initialize()
    except processes.PeerLostError as err:
        print(f"tljax run-instances: error: {err}", file=sys.stderr)
        return 2
    if not os.path.isfile(args.instances):
        print(
            f"tljax run-instances: error: {display_path(args.instances)!r} does not exist; check "
            "the path to the benchmark folder or its instances.csv",
            file=sys.stderr,
        )
        return 2
    try:
        rows, expected = read_instances(args.instances)
    except (ValueError, OSError) as err:
        print(f"tljax run-instances: error: {err}", file=sys.stderr)
        return 2
    if args.select:
        keep = [int(s) for s in args.select.split(",") if s.strip()]
        rows = [rows[k] for k in keep if 0 <= k < len(rows)]
    if args.limit is not None:
        rows = rows[: args.limit]
    try:
        records = _run_in_group(
            rows,
            expected,
            spread=args.spread,
            timeout=args.timeout,
            method=args.method,
            split=args.split,
            batch_size=args.batch_size,
        )
    except processes.PeerLostError as err:
        processes.exit_on_peer_loss(err, "tljax run-instances")
    s = summary(records)
    if processes.index() != 0:  # process 0 reports for the group
        return 1 if s["wrong"] else 0
    print(
        f"solved {s['solved']}/{s['total']}, wrong {s['wrong']}, errors {s['errors']}, "
        f"median time (solved) {s['median_time']:.2f}s, "
        f"median time (all) {s['median_time_all']:.2f}s"
    )
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["index"])
            w.writeheader()
            w.writerows(records)
    return 1 if s["wrong"] else 0
