"""The `exact` semantics: what a program means over the real numbers, computed exactly.

Every float is a dyadic rational m·2^e, so affine / ReLU / max-pool / attention-without-softmax
programs evaluate as integer matrix algebra with one shared exponent per tensor (python-flint
`fmpz_mat`), general rationals (`fmpq`) appear only after a division, and transcendental
functions (exp, log, tanh, erf, sin, ...) return certified `flint.arb` enclosures at a
configurable precision (default 128 bits), which then propagate.

Conventions (the real-number meaning of a float program):

* No rounding: `x.astype(jnp.bfloat16)` keeps the exact value; `lax.reduce_precision` is the one
  primitive that rounds (round-to-nearest-even to its format, exactly).
* Integer dtypes keep their two's-complement wrap-around; float -> int conversion truncates and
  refuses out-of-range values.
* NaN / inf have no real value: in inputs they raise `InputError` (naming the leaf and index); in
  constants and literals they raise where the constant is first used; x/0, log(0), comparisons of
  overlapping enclosures raise `ExactDomainError` with the equation's source line and layer.
* Host-side and not traceable: do not call it under `jax.jit`.

Example:
  >>> import jax.numpy as jnp, tljax
  >>> from tljax.interpret._exact import exact_to_float
  >>> y = tljax.evaluate(lambda x: x / 3.0, jnp.float32(1.0), semantics="exact")
  >>> y[()]
  Fraction(1, 3)
  >>> exact_to_float(y, jnp.float32)
  array(0.33333334, dtype=float32)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..core import InputError, Semantics, compat
from . import _exact_values as ev
from ._exact_common import DEFAULT_PRECISION
from ._exact_results import Enclosure as Enclosure
from ._exact_results import ExactArray as ExactArray
from ._exact_results import exact_to_float as exact_to_float
from ._exact_results import is_exact as is_exact
from ._exact_results import to_sympy as to_sympy
from ._exact_results import ulp_distance as ulp_distance
from ._exact_rules import build_rules
from ._exact_values import ExactDomainError as ExactDomainError
from ._registry import register_semantics, register_semantics_factory

compat.register_exclusion(__file__)


@dataclasses.dataclass(frozen=True)
class ExactOptions:
    """Options of the exact semantics.

    Attributes:
      precision: working precision in bits of the `arb` enclosures of transcendental functions
        (exact rational parts are unaffected).
    """

    precision: int = DEFAULT_PRECISION


def _lift(value, aval):
    return ev.lift_array(value, aval, what="constant")


def _is_abstract(value) -> bool:
    return ev.is_value(value)


def _to_concrete(value):
    if isinstance(value, ev.Poison):
        raise InputError(value.message)
    if not isinstance(value, ev.Dy | ev.Q):
        return None
    ints = ev.to_ints(value)
    if ints is None:
        return None
    return np.asarray([int(x) for x in ints.flat], dtype=np.int64).reshape(ints.shape)


def _finalize(value, aval):
    if isinstance(value, ev.Poison):
        raise InputError(value.message + " (the constant is an output of the program)")
    dt = np.dtype(aval.dtype) if aval is not None else None
    if not ev.is_value(value):
        value = ev.lift_array(value, aval)
    if isinstance(value, ev.Ball):
        return Enclosure(value.b, dt)
    if dt is not None and dt.kind in "iub":
        ints = ev.to_ints(value)
        if ints is None:  # cannot happen for integer dtypes; keep Fractions rather than guess
            return ExactArray(ev.to_fractions(value), dt)
        out = np.empty(ints.shape, dtype=object)
        conv = bool if dt.kind == "b" else int
        out.flat[:] = [conv(int(x)) for x in ints.flat]
        return ExactArray(out, dt)
    return ExactArray(ev.to_fractions(value), dt)


_RULES = build_rules()


def exact_semantics(precision: int = DEFAULT_PRECISION, *, name: str | None = None) -> Semantics:
    """The exact semantics with enclosures at `precision` bits.

    Args:
      precision: bits of the `arb` balls used for transcendental functions (default 128).
      name: registry name (default ``"exact"`` at the default precision, else
        ``"exact[<precision>]"``).

    Returns:
      A `Semantics`; `tljax.evaluate(fn, x, semantics=exact_semantics(256))` uses it directly,
      and the names ``"exact"`` / ``"exact[256]"`` resolve to it.

    Example:
      >>> y = tljax.evaluate(jnp.tanh, jnp.float32(0.5), semantics=exact_semantics(256))
      >>> float(y.rad[()]) < 2.0**-250   # a certified 256-bit enclosure of tanh(1/2)
      True
    """
    if precision < 2:
        raise InputError(
            f"tljax.interpret.exact_semantics: precision={precision!r} bits is too small; give "
            "an int >= 2 (default 128), the working precision of the enclosures"
        )
    if name is None:
        name = "exact" if precision == DEFAULT_PRECISION else f"exact[{precision}]"
    return Semantics(
        name,
        rules=_RULES,
        lift=_lift,
        is_abstract=_is_abstract,
        concrete_passthrough=False,
        recurse=True,
        traceable=False,
        to_concrete=_to_concrete,
        options=ExactOptions(precision=int(precision)),
        lift_input=ev.lift_input,
        finalize=_finalize,
    )


exact = register_semantics(exact_semantics())
register_semantics_factory(r"exact\[(\d+)\]", lambda m: exact_semantics(int(m.group(1))))
