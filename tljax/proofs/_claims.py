"""Machine-checked claims: a registry of statements about tljax programs and how each is checked.

A claim is a named statement plus a zero-argument check function. The check returns an `Evidence`
record; `check_all` runs every registered claim and times it. Claims say honestly how they were
checked (`method`), from strongest to weakest:

- ``"symbolic"``: an identity proved by sympy simplification (for all values of the symbols);
- ``"exact-all"``: exact rational evaluation on every case of a finite domain;
- ``"exact-enumerated"``: exact rational evaluation on a stated list of cases;
- ``"certified-bound"``: a sound bound over a box (interval / CROWN, or arb balls);
- ``"numeric"``: floating-point evidence only, which proves nothing.

Every claim also has a `scope`, saying how far its check reaches:

- ``"general"``: the check covers everything the statement quantifies over (a symbolic identity
  for all values of its symbols; every case of a finite domain that the statement names; a
  certified bound over the whole stated box);
- ``"family"``: the check covers a finite family of cases (generated, enumerated or listed).

The registry refuses overclaiming (`OverclaimError`, see `scope_problems`): a ``"family"`` claim
must say so in its statement (one of `FAMILY_MARKERS`, e.g. "on generated MDPs", "on the
seeded interval family") and describe the family (`family=`); its name may not read as a general
statement (`GENERAL_WORDS`, e.g. "...-sound") without a family marker; methods that only
evaluate listed cases (``"exact-enumerated"``, ``"numeric"``) cannot be ``"general"``. At run time,
a check that reports finite evidence (``Evidence(scope="family")``) under a ``"general"`` claim
is an error, not a pass.

Modules that ship claims register them at import time with `@claim(...)`. They live in
`tljax.proofs` (`_library`, and one module per topic under `tljax.proofs.claims`), and
`tljax.proofs` imports them, so the registry is complete once `tljax.proofs` is imported. The
packages the claims speak of (`tljax.rl`, `tljax.diffusion`, ...) never import `tljax.proofs`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..core import TljaxError

METHODS = ("symbolic", "exact-all", "exact-enumerated", "certified-bound", "numeric")
SCOPES = ("general", "family")
# Methods whose checks reach only listed cases: their claims are never "general".
_FAMILY_ONLY = ("exact-enumerated", "numeric")
# Words that declare a finite family in a statement or a name (whole words, any case), or a count
# of cases ("on 400 intervals", "for 10 boxes").
FAMILY_MARKERS = (
    "generated",
    "enumerated",
    "listed",
    "stated",
    "sampled",
    "seeded",
    "family",
    "grid",
    "zoo",
)
_COUNT = r"\b(on|for|at|over) (\d+|one|two|three|four|five|ten)\b"
# Words by which a name reads as a statement about every case.
GENERAL_WORDS = ("sound", "always", "every", "all", "any", "never", "each", "correct", "correctly")


class OverclaimError(TljaxError, ValueError):
    """A claim's statement or name promises more than its check's scope covers."""


def _has_word(text: str, words) -> str | None:
    for w in words:
        if re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text, re.IGNORECASE):
            return w
    return None


def declares_family(text: str) -> bool:
    """Whether `text` declares a finite family: a `FAMILY_MARKERS` word or a count of cases."""
    return _has_word(text, FAMILY_MARKERS) is not None or bool(
        re.search(_COUNT, text, re.IGNORECASE)
    )


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a check found.

    Args:
      holds: whether the claim was established by the stated method.
      detail: one line saying what was checked (e.g. "simplified to 0", "1000/1000 MDPs").
      counterexample: when `holds` is False, the input that refutes the claim (any printable value).
      scope: how far the check reached, when the check knows: ``"family"`` for evidence on a
        finite list of cases (then a ``"general"`` claim using it is refused when run),
        ``"general"`` or None (not stated).
    """

    holds: bool
    detail: str = ""
    counterexample: Any = None
    scope: str | None = None

    def __post_init__(self):
        if self.scope is not None and self.scope not in SCOPES:
            raise ValueError(f"Evidence scope {self.scope!r} is not one of {SCOPES} or None")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement about a program, with the check that establishes it."""

    name: str
    statement: str
    method: str
    check: Callable[[], Evidence]
    about: str = ""
    tags: tuple[str, ...] = ()
    scope: str | None = None
    family: str = ""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"claim {self.name!r}: method {self.method!r} is not one of {METHODS}")
        if self.scope is None:  # inferred conservatively: only proofs over all values are general
            inferred = "general" if self.method in ("symbolic", "exact-all") else "family"
            object.__setattr__(self, "scope", inferred)
        if self.scope not in SCOPES:
            raise ValueError(f"claim {self.name!r}: scope {self.scope!r} is not one of {SCOPES}")


def scope_problems(c: Claim) -> list[str]:
    """Why claim `c` overclaims (empty when it does not); see the module docstring.

    Example:
      >>> c = Claim("relu-sound", "relu lines hold", "exact-enumerated", lambda: Evidence(True))
      >>> scope_problems(c)[0].startswith("scope 'family' but the statement does not declare")
      True
    """
    out = []
    if c.scope == "general" and c.method in _FAMILY_ONLY:
        out.append(
            f"method {c.method!r} checks listed cases only, so the claim cannot be 'general'; "
            "use scope='family' and say in the statement which cases"
        )
    if c.scope == "family":
        if not declares_family(c.statement):
            out.append(
                "scope 'family' but the statement does not declare the family (say e.g. 'on "
                f"generated ...', 'on the seeded ... family', 'for 10 boxes'; markers: "
                f"{', '.join(FAMILY_MARKERS)}, or a count)"
            )
        if not c.family.strip():
            out.append("scope 'family' needs family=: a description of the cases checked")
        word = _has_word(c.name, GENERAL_WORDS)
        if word is not None and not declares_family(c.name):
            out.append(
                f"the name uses the general word {word!r} but the check covers a family only; "
                "qualify the name (e.g. '...-on-family') or drop the word"
            )
    return out


def _refuse_overclaim(c: Claim) -> None:
    problems = scope_problems(c)
    if problems:
        raise OverclaimError(
            f"claim {c.name!r} ({c.method}, scope {c.scope!r}) overclaims: " + "; ".join(problems)
        )


@dataclasses.dataclass(frozen=True)
class ClaimResult:
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
    """Adds a claim to the registry.

    Raises:
      OverclaimError: the claim's statement or name promises more than its scope (`scope_problems`).
      ValueError: a different claim with the same name is registered.
    """
    _refuse_overclaim(c)
    if c.name in _REGISTRY and _REGISTRY[c.name] is not c:
        raise ValueError(f"a claim named {c.name!r} is already registered")
    _REGISTRY[c.name] = c
    return c


def claim(
    name: str,
    statement: str,
    method: str,
    *,
    about: str = "",
    tags: Iterable[str] = (),
    scope: str | None = None,
    family: str = "",
):
    """Decorator: registers a zero-argument function returning `Evidence` as a claim.

    Args:
      scope: ``"general"`` or ``"family"`` (default: ``"general"`` for the methods
        ``"symbolic"`` and ``"exact-all"``, else ``"family"``).
      family: for a ``"family"`` claim, what the finite family is (how generated, how many).

    Raises:
      OverclaimError: see `register`.

    Example:
      >>> @claim("one plus one", "1 + 1 == 2 over the integers", "exact-all", scope="general")
      ... def _check():
      ...     return Evidence(1 + 1 == 2, "evaluated")
    """

    def deco(fn: Callable[[], Evidence]) -> Claim:
        c = Claim(
            name, statement, method, fn, about=about, tags=tuple(tags), scope=scope, family=family
        )
        return register(c)

    return deco


def registry() -> dict[str, Claim]:
    """All registered claims by name (`tljax.proofs` imports every module that ships claims)."""
    return dict(_REGISTRY)


def run_claim(c: Claim) -> ClaimResult:
    """Runs one claim's check, timing it; an exception is recorded as an error result."""
    t0 = time.perf_counter()
    try:
        _refuse_overclaim(c)  # claims built without `register` too
        ev = c.check()
        if not isinstance(ev, Evidence):
            raise TypeError(f"check of claim {c.name!r} returned {type(ev).__name__}, not Evidence")
        if c.scope == "general" and ev.scope == "family":
            raise OverclaimError(
                f"claim {c.name!r} is stated in general (scope 'general') but its check reports "
                f"evidence on a finite family only ({ev.detail}); declare scope='family' and "
                "say which family in the statement"
            )
        return ClaimResult(c, ev, time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001 - a crashing check is reported, not hidden
        return ClaimResult(
            c, Evidence(False), time.perf_counter() - t0, error=f"{type(err).__name__}: {err}"
        )


def check(name: str) -> ClaimResult:
    """Runs the claim called `name`."""
    reg = registry()
    if name not in reg:
        raise KeyError(f"no claim named {name!r}; registered: {sorted(reg)}")
    return run_claim(reg[name])


def check_all(tags: Iterable[str] | None = None) -> list[ClaimResult]:
    """Runs every registered claim (optionally only those with one of `tags`)."""
    tags = None if tags is None else set(tags)
    out = []
    for c in registry().values():
        if tags is not None and not (tags & set(c.tags)):
            continue
        out.append(run_claim(c))
    return out


def format_table(results: list[ClaimResult]) -> str:
    """A plain-text table: claim, method (and scope), result, time, detail."""
    rows = [("claim", "method", "result", "time", "detail")]
    for r in results:
        detail = r.error or r.evidence.detail
        if not r.holds and r.evidence.counterexample is not None:
            detail += f" | counterexample: {r.evidence.counterexample!r}"
        how = r.claim.method + (" (family)" if r.claim.scope == "family" else "")
        rows.append((r.claim.name, how, r.status, f"{r.seconds:.2f}s", detail))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        lines.append("  ".join(str(row[i]).ljust(widths[i]) for i in range(4)) + "  " + str(row[4]))
    n_ok = sum(r.holds for r in results)
    lines.append(f"{n_ok}/{len(results)} claims hold")
    return "\n".join(lines)
