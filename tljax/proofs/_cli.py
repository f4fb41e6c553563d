"""``python -m tljax proofs``: run the claims (and optionally the rule audit) and print tables.

Example:
  $ python -m tljax proofs                 # every claim, as a table; exit 1 if one fails
  $ python -m tljax proofs --tag softmax   # only claims tagged "softmax"
  $ python -m tljax proofs --audit         # also print the JVP/VJP rule audit table
  $ python -m tljax proofs --list          # names, methods and statements, without running
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
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
    p.add_argument("--audit", action="store_true", help="also print the JVP/VJP rule audit table")
    p.add_argument("--list", action="store_true", help="list the claims without running them")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the claims; prints `format_table(check_all())`. Returns 0 when all hold, else 1.

    Args:
      argv: command-line arguments after ``proofs`` (default ``sys.argv[1:]``).

    Example:
      >>> main(["--claim", "softmax-rows-sum-to-one"])
      0
    """
    from ._claims import check_all, format_table, registry, run_claim

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    reg = registry()
    if args.list:
        for c in reg.values():
            tags = f" [{', '.join(c.tags)}]" if c.tags else ""
            print(f"{c.name} ({c.method}){tags}: {c.statement}")
        return 0
    if args.claim:
        unknown = [n for n in args.claim if n not in reg]
        if unknown:
            print(
                f"unknown claim(s) {unknown}; `--list` shows the registered ones", file=sys.stderr
            )
            return 2
        results = [run_claim(reg[n]) for n in args.claim]
    else:
        results = check_all(tags=args.tag)
    print(format_table(results))
    ok = all(r.holds for r in results)
    if args.audit:
        from ._audit import audit_rules, audit_totals, format_audit

        rows = audit_rules()
        print()
        print(format_audit(rows))
        ok = ok and audit_totals(rows)["failed"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
