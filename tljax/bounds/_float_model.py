"""The floating-point error model behind sound bounds, documented in ONE place.

Two separate things are accounted for:

1. The bound computation itself runs in floating point with round-to-nearest (XLA exposes no
   rounding-mode control). Every number it emits is widened outward by a rigorous amount: `up` /
   `down` step one ulp with `nextafter`, and sums/dot products get the a-priori error bound
   |fl(x·y) - x·y| <= γ_n |x|·|y| + n·η, valid for any summation order, with or without FMA
   (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1).
2. The program being bounded also runs in floating point (float32 by default). Its value at every
   node is the real operation applied to its (float) inputs plus an error of at most
   `E = γ'_n·S + (n+1)·η` where S bounds the sum of the magnitudes of the terms. This holds for
   any summation order and for fused multiply-adds (a fused op has fewer roundings, each still
   covered). The per-primitive ulp allowances for transcendental functions are in `ULPS`.

XLA:CPU flushes subnormals (FTZ/DAZ), so η = 2^-126 for every operation (the smallest normal),
not half the smallest subnormal; and `up`/`down` snap results into normal numbers so a later op
reading a flushed value cannot move a bound inward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import InputError
from ..interpret import Format, get_format

# The formats of the bound computation, by dtype; their unit roundoff (u = 2^-p for round to
# nearest with p significand bits) and smallest normal come from the one format registry
# (`tljax.interpret.get_format`). Narrower formats (bf16, fp16) only describe the bounded program
# (`PROGRAM_MODELS` below), never the bound computation itself: its a-priori error factors
# gamma_n need n*u < 1/2, i.e. fewer than 128 terms per sum in bf16.
_COMPUTATION = {np.dtype(np.float32): get_format("fp32"), np.dtype(np.float64): get_format("fp64")}

# Maximum error, in ulps of the result, allowed for XLA's implementation of each primitive.
# Measured sample maxima on XLA:CPU (shared/NUMERICS.md §1.1: exp 1.17, log 1.12, tanh 4.42,
# logistic 2.31, erf 5.53, rsqrt 1.70, softplus 2.87) times a safety factor of at least 2.
# Correctly rounded operations (+ - * / sqrt) count 1 (0.5 ulp, doubled).
# Re-measured for tljax.bounds._smooth (2M log-uniform samples per function, jit and eager,
# float64/scipy reference): expm1 5.16 and log1p 2.47 (raised from 4), erfc 65 (worst in the
# tail x in [8, 9.5]), sin/cos 0.56 (also within 1e-3 of multiples of pi/2, |x| < 55),
# pow(x, y) for float y up to 18.3 (grows with |y ln x|, which is < 89 for normal results).
ULPS = {
    "exp": 4.0,
    "exp2": 4.0,
    "expm1": 12.0,
    "log": 4.0,
    "log1p": 6.0,
    "erfc": 160.0,
    "pow": 48.0,
    "tanh": 12.0,
    "logistic": 8.0,
    "erf": 16.0,
    "sqrt": 1.0,
    "rsqrt": 4.0,
    "softplus": 8.0,
    "recip": 1.0,
    "sin": 4.0,
    "cos": 4.0,
    "div": 1.0,
    "integer_pow": 1.0,
}


def _computation_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _COMPUTATION:
        raise InputError(
            f"the bound computation has no float model for dtype {dt}: it runs in float32 or "
            "float64. A bfloat16/float16 input or value cannot carry sound bounds; bound the "
            "float32 program instead (a float32 box) with float_format='bf16' or 'fp16' to cover "
            "that arithmetic"
        )
    return dt


def unit(dtype) -> float:
    return _COMPUTATION[_computation_dtype(dtype)].unit_roundoff


def tiny(dtype) -> float:
    return _COMPUTATION[_computation_dtype(dtype)].tiny


def gamma(n, u: float) -> float:
    """γ_n = n·u / (1 - n·u), rounded up generously (as a Python float; n static)."""
    nu = float(n) * u
    if nu >= 0.5:
        raise ValueError(f"γ_n undefined for n={n}, u={u}: too many terms for this precision")
    return nu / (1.0 - nu) * (1.0 + 2.0**-20)


@dataclasses.dataclass(frozen=True)
class ProgramModel:
    """How the bounded program's own arithmetic rounds.

    Attributes:
      u_out: unit roundoff of each operation's output format (float32: 2^-24, bf16: 2^-8).
      u_acc: unit roundoff of the accumulator of sums and dot products.
      eta: absolute underflow allowance per operation (flush-to-zero: the smallest normal).
      name: for messages and certificates.
    """

    u_out: float = 2.0**-24
    u_acc: float = 2.0**-24
    eta: float = 2.0**-126
    name: str = "float32 (XLA:CPU, FTZ)"

    def rel(self, n: int) -> float:
        """Relative error factor of an n-term reduction followed by output rounding."""
        g = gamma(max(n, 1), self.u_acc) if n > 1 else 0.0
        if self.u_out == self.u_acc and n <= 1:
            return self.u_out * (1 + 2.0**-20)
        return (g + self.u_out * (1.0 + g)) * (1.0 + 2.0**-20)

    def abs_eta(self, n: int) -> float:
        return (max(n, 1) + 1) * self.eta

    @classmethod
    def of(cls, fmt) -> ProgramModel:
        """A program whose ops round to `fmt`, with sums and dot products accumulated in float32
        and subnormals flushed (XLA:CPU): eta is the larger of the two formats' smallest normals.

        Args:
          fmt: a `tljax.interpret.Format` or a name of the format registry (``"bf16"``).
        """
        f, acc = get_format(fmt), get_format("fp32")
        what = f.dtype.name if f.dtype is not None else f.name
        return cls(
            f.unit_roundoff,
            acc.unit_roundoff,
            max(f.tiny, acc.tiny),
            f"{what} ops, {acc.dtype.name} accumulation, FTZ",
        )


FLOAT32 = ProgramModel()
# The program's mathematical function: no rounding of the program is charged, while the bound
# computation itself still rounds outward, so bounds hold for the real-valued function (a PINN's
# residual as a function, not as float32 executes it).
REAL = ProgramModel(0.0, 0.0, 0.0, "real arithmetic (the program's mathematical function)")


class _ProgramModels(Mapping):
    """The named program formats of `bound(..., float_format=)`, keyed by registry name.

    A key is resolved by the format registry (`tljax.interpret.get_format`), so every alias of a
    format ("bf16", "bfloat16", the bfloat16 dtype) finds the same model."""

    def __init__(self, *names: str):
        self._models: dict[Format, ProgramModel] = {
            get_format(n): ProgramModel.of(n) for n in names
        }

    def __getitem__(self, key) -> ProgramModel:
        try:
            return self._models[get_format(key)]
        except (InputError, KeyError, TypeError):
            raise KeyError(key) from None

    def __iter__(self):
        return iter([f.name for f in self._models])

    def __len__(self) -> int:
        return len(self._models)


PROGRAM_MODELS: Mapping[str, ProgramModel] = _ProgramModels("bf16", "fp16")


def up(x):
    """A float >= x (strictly above any value that rounds to x), FTZ-safe, three operations.

    fl(x + δ) with δ = |x|·2^(2-p) + tiny > ulp(x)/2 cannot round back down to x; a result that
    flushes to zero only arises for x < 0. Never a subnormal, so DAZ cannot move it inward.
    """
    x = jnp.asarray(x)
    u = unit(x.dtype)
    return x + (jnp.abs(x) * (4.0 * u) + tiny(x.dtype))


def down(x):
    """A float <= x, FTZ-safe (the mirror of `up`)."""
    x = jnp.asarray(x)
    u = unit(x.dtype)
    return x - (jnp.abs(x) * (4.0 * u) + tiny(x.dtype))


def inflate(x, k: float = 8.0):
    """A nonnegative quantity computed with a few roundings, made into a rigorous upper bound."""
    x = jnp.asarray(x)
    u = unit(x.dtype)
    return up(x * (1.0 + k * u))


def outside_subnormal(x, up: bool):
    """A subnormal `x` moved outward (`up`: towards +inf) to 0 or +-tiny; float32/float64.

    XLA:CPU reads subnormal operands as zero (DAZ), in the program and in the bound computation
    alike, so comparisons cannot see them: the test is on the bits."""
    x = jnp.asarray(x)
    t = tiny(x.dtype)
    ity = jnp.int32 if x.dtype == jnp.float32 else jnp.int64
    bits = lax.bitcast_convert_type(x, ity)
    mag = bits & jnp.asarray(np.iinfo(ity).max, ity)
    tiny_bits = lax.bitcast_convert_type(jnp.asarray(t, x.dtype), ity)
    sub = (mag > 0) & (mag < tiny_bits)
    neg = bits < 0
    if up:
        return jnp.where(sub, jnp.where(neg, 0.0, t), x).astype(x.dtype)
    return jnp.where(sub, jnp.where(neg, -t, 0.0), x).astype(x.dtype)
