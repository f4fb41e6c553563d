"""``python -m tljax proofs``: run the claims (and optionally the rule audit), one line per claim.

Each claim's line is printed (and flushed) as soon as its check finishes, so a long run shows
progress; lines fit a terminal (at most `WIDTH` characters: long names are shortened, details are
printed only with ``--details``); the last line is the summary.

Example:
  $ python -m tljax proofs                 # every claim; exit 1 if one fails
  $ python -m tljax proofs --tag softmax   # only claims tagged "softmax"
  $ python -m tljax proofs -v              # also each claim's full name and how it was checked
  $ python -m tljax proofs --audit         # also print the JVP/VJP rule audit table
  $ python -m tljax proofs --list          # names, methods and statements, without running
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

from ._audit import audit_rules, audit_totals, format_audit
from ._claims import Claim, ClaimResult, registry, run_claim

WIDTH = 100  # the longest line printed without --details, and the wrap width with it
_HEADER = f"{'result':<6} {'time':>7} {'method':<16} {'scope':<7} claim"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tljax proofs",
        description="Run tljax's machine-checked claims and print how each was checked.",
    )
    p.add_argument(
        "--tag", action="append", default=None, help="only claims with this tag (repeatable)"
    )
    p.add_argument(
        "--claim", action="append", default=None, help="only the claim with this name (repeatable)"
    )
    p.add_argument(
        "-v",
        "--details",
        action="store_true",
        help="print each claim's full name, statement (with --list) and evidence, wrapped",
    )
    p.add_argument("--audit", action="store_true", help="also print the JVP/VJP rule audit table")
    p.add_argument("--list", action="store_true", help="list the claims without running them")
    return p


def _fit(text: str, width: int = WIDTH) -> str:
    """`text` on one line of at most `width` characters (shortened with "...")."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(
        f"{label}: {text}", WIDTH, initial_indent="    ", subsequent_indent="      "
    )


def format_line(r: ClaimResult) -> str:
    """One claim's result in at most `WIDTH` characters: result, time, method, scope, name."""
    head = f"{r.status:<6} {r.seconds:>6.1f}s {r.claim.method:<16} {r.claim.scope:<7} "
    return head + _fit(r.claim.name, WIDTH - len(head))


def _detail(r: ClaimResult) -> str:
    text = r.error or r.evidence.detail or "(no detail)"
    if not r.holds and r.evidence.counterexample is not None:
        text += f" | counterexample: {r.evidence.counterexample!r}"
    return text


def _emit(lines: Iterable[str], out: TextIO) -> None:
    for line in lines:
        print(line, file=out)
    out.flush()  # the next claim may take a minute: show this one now


def _selected(reg: dict[str, Claim], tags: list[str] | None) -> list[Claim]:
    if tags is None:
        return list(reg.values())
    return [c for c in reg.values() if set(tags) & set(c.tags)]


def _list(claims: list[Claim], details: bool, out: TextIO) -> None:
    for c in claims:
        tags = f" [{', '.join(c.tags)}]" if c.tags else ""
        if details:
            _emit(
                [f"{c.name} ({c.method}, {c.scope}){tags}", *_wrapped("statement", c.statement)],
                out,
            )
        else:
            _emit([_fit(f"{c.name} ({c.method}){tags}: {c.statement}")], out)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Runs the claims, printing one line per claim as it finishes, then a summary line.

    Args:
      argv: command-line arguments after ``proofs`` (default ``sys.argv[1:]``).
      out: where to print (default `sys.stdout`).

    Returns:
      0 when every claim run holds (and, with ``--audit``, no rule fails), 1 otherwise, 2 for an
      unknown claim name.

    Example:
      >>> main(["--claim", "softmax-rows-sum-to-one"])  # doctest: +SKIP
      0
    """
    out = sys.stdout if out is None else out
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    reg = registry()
    if args.claim:
        unknown = [n for n in args.claim if n not in reg]
        if unknown:
            print(
                f"unknown claim(s) {unknown}; `--list` shows the registered ones", file=sys.stderr
            )
            return 2
        claims = [reg[n] for n in args.claim]
    else:
        claims = _selected(reg, args.tag)
    if args.list:
        _list(claims, args.details, out)
        return 0
    _emit([f"running {len(claims)} claims (`-v` for details)", _HEADER], out)
    t0 = time.perf_counter()
    failed = []
    for c in claims:
        r = run_claim(c)
        lines = [format_line(r)]
        if args.details:
            lines += [*_wrapped("claim", c.name), *_wrapped("evidence", _detail(r))]
        elif not r.holds:  # a failure always says why, shortened to one line
            lines.append("    " + _fit(_detail(r), WIDTH - 4))
        if not r.holds:
            failed.append(c.name)
        _emit(lines, out)
    n_ok = len(claims) - len(failed)
    summary = f"{n_ok}/{len(claims)} claims hold ({time.perf_counter() - t0:.1f}s)"
    _emit([summary + (f"; not holding: {len(failed)}, listed above" if failed else "")], out)
    ok = not failed
    if args.audit:
        rows = audit_rules()
        _emit(["", format_audit(rows)], out)
        ok = ok and audit_totals(rows)["failed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())


# the names `tljax.proofs` exports for the top-level command line
cli_main = main
cli_parser = parser
