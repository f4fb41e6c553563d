"""Machine-checked claims: a registry of statements about tljax programs and how each is checked.

A claim is a named statement plus a zero-argument check function. The check returns an `Evidence`
record; `check_all` runs every registered claim and times it. Claims say honestly how they were
checked (`method`), from strongest to weakest:

- ``"symbolic"``: an identity proved by sympy simplification (for all values of the symbols);
- ``"exact-all"``: exact rational evaluation on every case of a finite domain;
- ``"exact-enumerated"``: exact rational evaluation on a stated list of cases;
- ``"certified-bound"``: a sound bound over a box (interval / CROWN, or arb balls);
- ``"numeric"``: floating-point evidence only, which proves nothing.

Modules that ship claims register them at import time with `@claim(...)`; the module must be
listed in `CLAIM_MODULES` so that `check_all` imports it.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Iterable
from typing import Any

METHODS = ("symbolic", "exact-all", "exact-enumerated", "certified-bound", "numeric")

# Modules whose import registers claims; missing modules are skipped (listed in the table).
CLAIM_MODULES = (
    "tljax.proofs._library",
    "tljax.rl._claims",
    "tljax.diffusion._claims",
    "tljax.objectives._claims",
)


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a check found.

    Args:
      holds: whether the claim was established by the stated method.
      detail: one line saying what was checked (e.g. "simplified to 0", "1000/1000 MDPs").
      counterexample: when `holds` is False, the input that refutes the claim (any printable value).
    """

    holds: bool
    detail: str = ""
    counterexample: Any = None


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement about a program, with the check that establishes it."""

    name: str
    statement: str
    method: str
    check: Callable[[], Evidence]
    about: str = ""
    tags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"claim {self.name!r}: method {self.method!r} is not one of {METHODS}")


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of running one claim's check."""

    claim: Claim
    evidence: Evidence
    seconds: float
    error: str | None = None

    @property
    def holds(self) -> bool:
        return self.error is None and self.evidence.holds

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "holds" if self.evidence.holds else "FALSE"


_REGISTRY: dict[str, Claim] = {}


def register(c: Claim) -> Claim:
    """Adds a claim to the registry; a second claim with the same name is an error."""
    if c.name in _REGISTRY and _REGISTRY[c.name] is not c:
        raise ValueError(f"a claim named {c.name!r} is already registered")
    _REGISTRY[c.name] = c
    return c


def claim(name: str, statement: str, method: str, *, about: str = "", tags: Iterable[str] = ()):
    """Decorator: registers a zero-argument function returning `Evidence` as a claim.

    Example:
      >>> @claim("one plus one", "1 + 1 == 2 over the integers", "exact-all")
      ... def _check():
      ...     return Evidence(1 + 1 == 2, "evaluated")
    """

    def deco(fn: Callable[[], Evidence]) -> Claim:
        return register(Claim(name, statement, method, fn, about=about, tags=tuple(tags)))

    return deco


def load_claim_modules() -> list[str]:
    """Imports every module in CLAIM_MODULES; returns the ones that could not be imported."""
    missing = []
    for mod in CLAIM_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
            missing.append(mod)
    return missing


def registry() -> dict[str, Claim]:
    """All registered claims by name (after loading the claim modules)."""
    load_claim_modules()
    return dict(_REGISTRY)


def run_claim(c: Claim) -> Result:
    """Runs one claim's check, timing it; an exception is recorded as an error result."""
    t0 = time.perf_counter()
    try:
        ev = c.check()
        if not isinstance(ev, Evidence):
            raise TypeError(f"check of claim {c.name!r} returned {type(ev).__name__}, not Evidence")
        return Result(c, ev, time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001 - a crashing check is reported, not hidden
        return Result(c, Evidence(False), time.perf_counter() - t0, error=f"{type(err).__name__}: {err}")


def check(name: str) -> Result:
    """Runs the claim called `name`."""
    reg = registry()
    if name not in reg:
        raise KeyError(f"no claim named {name!r}; registered: {sorted(reg)}")
    return run_claim(reg[name])


def check_all(tags: Iterable[str] | None = None) -> list[Result]:
    """Runs every registered claim (optionally only those with one of `tags`)."""
    tags = None if tags is None else set(tags)
    out = []
    for c in registry().values():
        if tags is not None and not (tags & set(c.tags)):
            continue
        out.append(run_claim(c))
    return out


def format_table(results: list[Result]) -> str:
    """A plain-text table: claim, method, result, time, detail."""
    rows = [("claim", "method", "result", "time", "detail")]
    for r in results:
        detail = r.error or r.evidence.detail
        if not r.holds and r.evidence.counterexample is not None:
            detail += f" | counterexample: {r.evidence.counterexample!r}"
        rows.append((r.claim.name, r.claim.method, r.status, f"{r.seconds:.2f}s", detail))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        lines.append("  ".join(str(row[i]).ljust(widths[i]) for i in range(4)) + "  " + str(row[4]))
    n_ok = sum(r.holds for r in results)
    lines.append(f"{n_ok}/{len(results)} claims hold")
    return "\n".join(lines)
