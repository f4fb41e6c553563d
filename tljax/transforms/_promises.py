"""What a transformation promises about the graph it returns, and how promises compose."""

from __future__ import annotations

import dataclasses
import math

from ..core import InputError

FLOAT_MODES = ("eager", "jit")


@dataclasses.dataclass(frozen=True)
class Promise:
    """The promise a pass makes; `tljax.transforms.validate` checks it.

    Attributes:
      exact: the transformed graph has the same real-number meaning: the `exact` semantics gives
        the same values at every input (enclosures of transcendental results overlap).
      bitwise: float execution gives identical results (NaN equal to NaN), evaluated as
        `float_mode` says.
      float_mode: ``"eager"`` (the walker binds every first-order equation on its own, through
        calls; what `tljax.evaluate(..., semantics="reference")` does inside calls) or ``"jit"``
        (each graph compiled whole by XLA, which may fuse and contract differently).
      atol, rtol: when not `exact`: the exact-semantics difference obeys
        ``|t(x) - o(x)| <= atol + rtol * |o(x)|`` elementwise. None: no tolerance is promised
        (the deviation is only reported).
      emulates: a semantics name (``"float[bf16]"``): float execution of the transformed graph
        equals the original evaluated under that semantics, bit for bit.
      note: one line for reports.
    """

    exact: bool = False
    bitwise: bool = False
    float_mode: str = "eager"
    atol: float | None = None
    rtol: float | None = None
    emulates: str | None = None
    note: str = ""

    def __post_init__(self):
        if self.float_mode not in FLOAT_MODES:
            raise InputError(
                f"Promise(float_mode={self.float_mode!r}): float_mode must be one of {FLOAT_MODES}"
            )
        if (self.atol is None) != (self.rtol is None):
            raise InputError(
                f"Promise(atol={self.atol}, rtol={self.rtol}): give both atol and rtol (a "
                "tolerance |t - o| <= atol + rtol |o|), or neither"
            )

    @classmethod
    def exact_and_bitwise(cls, note: str = "") -> Promise:
        """Same real meaning and same float results op by op (inline, DCE, CSE)."""
        return cls(exact=True, bitwise=True, note=note)

    @classmethod
    def nothing(cls, note: str = "no claim: the deviation is only reported") -> Promise:
        return cls(note=note)

    @property
    def has_tolerance(self) -> bool:
        return self.exact or self.atol is not None

    def tolerance(self) -> tuple[float, float]:
        """(atol, rtol) of the exact-semantics check (zeros for an exact claim, inf if none)."""
        if self.exact:
            return 0.0, 0.0
        if self.atol is None:
            return math.inf, math.inf
        return float(self.atol), float(self.rtol)

    def then(self, later: Promise) -> Promise:
        """The claim of running this pass and then `later` (tolerances add, to first order)."""
        exact = self.exact and later.exact
        same_mode = self.float_mode == later.float_mode
        bitwise = self.bitwise and later.bitwise and same_mode
        if exact:
            atol = rtol = None
        elif self.has_tolerance and later.has_tolerance:
            a1, r1 = self.tolerance()
            a2, r2 = later.tolerance()
            atol, rtol = a1 + a2, r1 + r2
        else:
            atol = rtol = None
        # Emulation survives passes that change neither real meaning nor op-by-op float results.
        neutral_a = self.exact and self.bitwise and self.float_mode == "eager"
        neutral_b = later.exact and later.bitwise and later.float_mode == "eager"
        emulates = None
        if self.emulates and neutral_b and not later.emulates:
            emulates = self.emulates
        elif later.emulates and neutral_a and not self.emulates:
            emulates = later.emulates
        mode = self.float_mode if same_mode else "eager"
        notes = "; ".join(n for n in (self.note, later.note) if n)
        return Promise(exact, bitwise, mode, atol, rtol, emulates, notes)

    def describe(self) -> str:
        parts = []
        if self.exact:
            parts.append("exact (same real-number meaning)")
        elif self.atol is not None:
            parts.append(f"|t-o| <= {self.atol:.3g} + {self.rtol:.3g}*|o| (exact semantics)")
        if self.bitwise:
            parts.append(f"bitwise-equal floats ({self.float_mode})")
        if self.emulates:
            parts.append(f"float results equal {self.emulates} of the original")
        if not parts:
            parts.append("no claim (deviation reported)")
        return ", ".join(parts)


def compose(claims) -> Promise:
    """The claim of a sequence of passes run in order (`Promise.exact_and_bitwise()` for none)."""
    out = None
    for c in claims:
        out = c if out is None else out.then(c)
    return out if out is not None else Promise.exact_and_bitwise("no pass")
