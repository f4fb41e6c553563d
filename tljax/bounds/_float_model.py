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

import jax.numpy as jnp
import numpy as np
from jax import lax

# Unit roundoff and smallest normal per float dtype of the bound computation.
_UNIT = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}
_TINY = {np.dtype(np.float32): 2.0**-126, np.dtype(np.float64): 2.0**-1022}

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


def unit(dtype) -> float:
    return _UNIT[np.dtype(dtype)]


def tiny(dtype) -> float:
    return _TINY[np.dtype(dtype)]


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


FLOAT32 = ProgramModel()


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
