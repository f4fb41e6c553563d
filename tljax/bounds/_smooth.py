"""Sound-by-construction bounds for smooth scalar functions (exp, tanh, sin, x**y, ...).

Each function is described by its convexity structure: the regions between its inflection
points and the sign of f'' on each. For g(x) = f(x) - a·x on a piece [p, q] of [l, u] inside one
region:

- g convex: g(x) >= g(t) + g'(t)·(x - t) for ANY t in [p, q], so
  min g >= g(t) + min(g'(t)·(p - t), g'(t)·(q - t)); max g = max(g(p), g(q));
- g concave: mirrored.

t is an estimate of the critical point (f'(t) = a). A good estimate makes the bound tight; a bad
one (cancellation in a tail, a clamp) only loosens it: soundness never depends on it. With a = 0
the same pieces give the interval image of a non-monotone f. sin/cos have irrational inflection
points: they are enclosed in float intervals ("gaps") bounded with the Lipschitz constant.

Float soundness (`opts.float_sound`): every evaluation here is charged its rigorous error (the
ulps of `_float_model.ULPS` for f, a relative bound for f', and one rounding per arithmetic op,
with a flushed-subnormal term), and the program's own f32 evaluation of f is covered by
`ULPS[name]` ulps plus the flush-to-zero terms of `opts.program` (a flushed subnormal input reads
as ±0, so the value f(±0) joins the set when the box meets (-eta, eta)).

`check_line` / `enclose` are the exact host-side counterparts (Fractions in, arb inside) for the
certificate checker: they trust no float.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from flint import arb, ctx, fmpq

from . import _float_model as fm

_INF = math.inf
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
# Float enclosure of pi (float64: pi lies strictly between these neighbours).
_PI_LO = float(np.nextafter(math.pi, 0.0))
_PI_HI = float(np.nextafter(math.pi, 4.0))
# |x| beyond this: sin/cos get their range (XLA's argument reduction was only measured below it).
TRIG_MAX = 1.0e4


@dataclasses.dataclass(frozen=True)
class Smooth:
    """One smooth scalar function, described for sound relaxations.

    Attributes:
      name: "tanh", ...; `ulps` defaults to it as the key into `_float_model.ULPS`.
      f, df: jnp value and derivative.
      crit: `crit(a, p, q)`, an estimate of the point where f' = a inside the region holding the
        piece [p, q] (NaN/inf allowed: it is clipped; its accuracy only affects tightness).
      inflections: sorted inflection points (exact floats; for `recip` the pole 0).
      curvature: sign of f'' on each region (len(inflections) + 1): +1 convex, -1 concave, 0 affine.
      phase: periodic functions only (sin 0, cos 0.5): inflection points at (k + phase)·pi and
        curvature `curvature[0]·(-1)^k` on [(k + phase)·pi, (k + 1 + phase)·pi].
      monotone: +1 increasing, -1 decreasing, 0 neither.
      even_peak: f is even and nonincreasing in |x| (sech2, dlogistic): its interval over [l, u]
        is [f(max |x|), f(min |x|)], two evaluations (no extremum search).
      range: the closure of the image of f.
      domain: lowest allowed input and whether it is itself allowed (log: (0, False)).
      pole: True when `inflections[0]` is a pole (recip): a box containing it is unbounded.
      f0: interval holding what the float program returns at +0 and -0 (a flushed subnormal).
      absmax: a bound on |f| everywhere (sin/cos: 1), or None when max |f| over a box is at its
        ends (true for all monotone f and for square).
      lip: a bound on |f'| everywhere (used on the gaps around irrational inflection points).
      drel: relative error of the computed `df(x)`, in units of the unit roundoff (callable of x).
      nonneg: the float program's result is >= 0 too.
      arb_f, arb_df: python-flint `arb` versions of f and f' (rigorous on balls).
      inflection_err: inflection points that are irrational (sech^2): each true one lies in
        [c - err, c + err] for c in `inflections` (all exact dyadics); that gap is bounded with
        `lip`, the curvature signs hold outside the gaps.
      stationary: exact stationary points of a non-monotone, non-periodic f (where |f| may peak
        inside a box), for the exact enclosure.
      abs_ulps, abs_eta: an absolute part of the program's error, in units of its unit roundoff
        and of its flush threshold, beside the relative `ulps`: for a value the program computes
        from a rounded intermediate whose error does not shrink with f (1 - t^2 from a rounded
        t = tanh(x): 9 u measured where f is ~1e-7).
    """

    name: str
    f: Callable
    df: Callable
    crit: Callable
    inflections: tuple[float, ...] = ()
    curvature: tuple[int, ...] = (1,)
    phase: float | None = None
    monotone: int = 0
    even_peak: bool = False
    range: tuple[float, float] = (-_INF, _INF)
    domain: tuple[float, bool] = (-_INF, False)
    pole: bool = False
    f0: tuple[float, float] = (0.0, 0.0)
    absmax: float | None = None
    lip: float = _INF
    drel: Callable = lambda x: 16.0
    nonneg: bool = False
    arb_f: Callable | None = None
    arb_df: Callable | None = None
    ulps: str = ""
    inflection_err: float = 0.0
    stationary: tuple[float, ...] = ()
    abs_ulps: float = 0.0
    abs_eta: float = 0.0

    def __post_init__(self):
        if len(self.curvature) != len(self.inflections) + 1:
            raise ValueError(f"{self.name}: need one curvature sign per region")
        if not self.ulps:
            object.__setattr__(self, "ulps", self.name)
        if self.ulps not in fm.ULPS:
            raise ValueError(f"{self.name}: no error allowance _float_model.ULPS[{self.ulps!r}]")


# ----------------------------------------------------------------------------------------------
# The functions.


def _pos(a):
    return jnp.where(a > 0, a, 1.0)


def _neg(a):
    return jnp.where(a < 0, a, -1.0)


def _side(p, q, r):
    # The root in the region of the piece: negative branch when the piece lies left of 0.
    return jnp.where(p + q < 0, -r, r)


def _sech2(x):
    e = jnp.exp(-2.0 * jnp.abs(x))
    return 4.0 * e / jnp.square(1.0 + e)


def _dlogistic(x):
    e = jnp.exp(-jnp.abs(x))
    return e / jnp.square(1.0 + e)


def _dsech2(x):
    return -2.0 * jnp.tanh(x) * _sech2(x)


def _crit_sech2(a, p, q):
    # sech^2' = -2 t (1 - t^2) = a with t = tanh x: the cubic t^3 - t - a/2 = 0, three real roots
    # (trigonometric form), the one of the piece's region; then one guarded Newton step in x.
    phi = jnp.arccos(jnp.clip(0.75 * math.sqrt(3.0) * a, -1.0, 1.0))
    m = 0.5 * (p + q)
    k = jnp.where(m > _SECH2_INFL, 0.0, jnp.where(m < -_SECH2_INFL, 2.0, 1.0))
    t = (2.0 / math.sqrt(3.0)) * jnp.cos(phi / 3.0 - 2.0 * math.pi * k / 3.0)
    x = jnp.arctanh(jnp.clip(t, -1.0 + 2.0**-23, 1.0 - 2.0**-23))
    tx = jnp.tanh(x)
    d2 = (1.0 - tx * tx) * (6.0 * tx * tx - 2.0)
    step = (_dsech2(x) - a) / jnp.where(d2 == 0, 1.0, d2)
    return jnp.where(jnp.abs(step) < 0.5, x - step, x)


def _crit_dlogistic(a, p, q):
    # s(1 - s) = sech^2(x / 2) / 4
    return 2.0 * _crit_sech2(8.0 * a, 0.5 * p, 0.5 * q)


def _crit_tanh(a, p, q):
    # sech^2 x = a  <=>  sinh|x| = sqrt((1 - a) / a): no cancellation in the tails.
    return _side(p, q, jnp.arcsinh(jnp.sqrt((1.0 - a) / _pos(a))))


def _crit_logistic(a, p, q):
    # s(1 - s) = 1 / (4 cosh^2(x/2)) = a.
    return _side(p, q, 2.0 * jnp.arcsinh(jnp.sqrt((1.0 - 4.0 * a) / (4.0 * _pos(a)))))


def _crit_erf(a, p, q):
    return _side(p, q, jnp.sqrt(jnp.log(_TWO_OVER_SQRT_PI / jnp.abs(jnp.where(a == 0, 1.0, a)))))


def _crit_trig(phase):
    def crit(a, p, q):
        j = jnp.floor((p + q) / (2.0 * math.pi) - phase)
        sigma = 1.0 - 2.0 * jnp.mod(j, 2.0)  # (-1)^j
        sigma = sigma if phase == 0 else -sigma
        return (j + phase) * math.pi + jnp.arccos(jnp.clip(sigma * a, -1.0, 1.0))

    return crit


def _a_sigmoid(x):
    return 1 / (1 + (-x).exp())


def _a_dsigmoid(x):
    e = (-x).exp()
    return e / (1 + e) ** 2


def _a_c():
    return 2 / arb.pi().sqrt()


_LOG2 = (0.6931471805599452, 0.6931471805599454)
# sech^2's inflection points are +-atanh(1/sqrt(3)) = +-0.65847894846240835...: enclosed in
# [c - err, c + err] with exact dyadic ends (checked in arb by tests/bounds/test_smooth.py).
_SECH2_INFL = 0.6584792137145996
_INFL_ERR = 2.0**-21


def _a_sech2(x):
    return 1 / x.cosh() ** 2


def _a_dsech2(x):
    return -2 * x.tanh() / x.cosh() ** 2


def _a_dlogistic(x):
    return _a_dsigmoid(x)


def _a_ddlogistic(x):
    s = _a_sigmoid(x)
    return s * (1 - s) * (1 - 2 * s)


SMOOTH: dict[str, Smooth] = {
    s.name: s
    for s in [
        Smooth(
            "exp",
            jnp.exp,
            jnp.exp,
            lambda a, p, q: jnp.log(_pos(a)) + jnp.where(a > 0, 0, -_INF),
            monotone=1,
            range=(0.0, _INF),
            f0=(1.0, 1.0),
            drel=lambda x: 8.0,
            nonneg=True,
            arb_f=arb.exp,
            arb_df=arb.exp,
        ),
        Smooth(
            "expm1",
            jnp.expm1,
            jnp.exp,
            lambda a, p, q: jnp.log(_pos(a)) + jnp.where(a > 0, 0, -_INF),
            monotone=1,
            range=(-1.0, _INF),
            drel=lambda x: 8.0,
            arb_f=arb.expm1,
            arb_df=arb.exp,
        ),
        Smooth(
            "log",
            jnp.log,
            lambda x: 1.0 / x,
            lambda a, p, q: 1.0 / a,
            curvature=(-1,),
            monotone=1,
            domain=(0.0, False),
            f0=(-_INF, -_INF),
            drel=lambda x: 2.0,
            arb_f=arb.log,
            arb_df=lambda x: 1 / x,
        ),
        Smooth(
            "log1p",
            jnp.log1p,
            lambda x: 1.0 / (1.0 + x),
            lambda a, p, q: 1.0 / a - 1.0,
            curvature=(-1,),
            monotone=1,
            domain=(-1.0, False),
            drel=lambda x: 3.0,
            arb_f=arb.log1p,
            arb_df=lambda x: 1 / (1 + x),
        ),
        Smooth(
            "sqrt",
            jnp.sqrt,
            lambda x: 0.5 / jnp.sqrt(x),
            lambda a, p, q: 0.25 / jnp.square(a),
            curvature=(-1,),
            monotone=1,
            range=(0.0, _INF),
            domain=(0.0, True),
            drel=lambda x: 3.0,
            nonneg=True,
            arb_f=arb.sqrt,
            arb_df=lambda x: 1 / (2 * x.sqrt()),
        ),
        Smooth(
            "rsqrt",
            jax.lax.rsqrt,
            lambda x: -0.5 * jax.lax.rsqrt(x) / x,
            lambda a, p, q: jnp.power(-2.0 * _neg(a), -2.0 / 3.0),
            monotone=-1,
            range=(0.0, _INF),
            domain=(0.0, False),
            f0=(-_INF, _INF),
            drel=lambda x: 10.0,
            nonneg=True,
            arb_f=arb.rsqrt,
            arb_df=lambda x: -x.rsqrt() / (2 * x),
        ),
        Smooth(
            "recip",
            lambda x: 1.0 / x,
            lambda x: -jnp.square(1.0 / x),
            lambda a, p, q: _side(p, q, jnp.sqrt(-1.0 / _neg(a))),
            inflections=(0.0,),
            curvature=(-1, 1),
            pole=True,
            monotone=-1,
            f0=(-_INF, _INF),
            drel=lambda x: 4.0,
            ulps="recip",
            arb_f=lambda x: 1 / x,
            arb_df=lambda x: -1 / x**2,
        ),
        Smooth(
            "square",
            jnp.square,
            lambda x: 2.0 * x,
            lambda a, p, q: 0.5 * a,
            range=(0.0, _INF),
            drel=lambda x: 1.0,
            nonneg=True,
            ulps="integer_pow",
            arb_f=lambda x: x**2,
            arb_df=lambda x: 2 * x,
        ),
        Smooth(
            "softplus",
            jax.nn.softplus,
            jax.nn.sigmoid,
            lambda a, p, q: jnp.log(_pos(a)) - jnp.log1p(-jnp.clip(a, 0.0, 1.0)),
            monotone=1,
            range=(0.0, _INF),
            f0=_LOG2,
            lip=1.0,
            drel=lambda x: 16.0,
            nonneg=True,
            arb_f=lambda x: x.exp().log1p(),
            arb_df=_a_sigmoid,
        ),
        Smooth(
            "tanh",
            jnp.tanh,
            _sech2,
            _crit_tanh,
            inflections=(0.0,),
            curvature=(1, -1),
            monotone=1,
            range=(-1.0, 1.0),
            lip=1.0,
            drel=lambda x: 16.0,
            arb_f=arb.tanh,
            arb_df=lambda x: 1 / x.cosh() ** 2,
        ),
        Smooth(
            "logistic",
            jax.nn.sigmoid,
            _dlogistic,
            _crit_logistic,
            inflections=(0.0,),
            curvature=(1, -1),
            monotone=1,
            range=(0.0, 1.0),
            f0=(0.5, 0.5),
            lip=0.25,
            drel=lambda x: 16.0,
            nonneg=True,
            arb_f=_a_sigmoid,
            arb_df=_a_dsigmoid,
        ),
        # The derivative terms of tanh and logistic as one function of the pre-activation (the
        # rewrite `_tape._tanh_derivative` records them): the program computes them from the
        # rounded t = tanh(x) or s = logistic(x) as (1 - t)(1 + t) or s (1 - s), whose error is
        # absolute (measured on XLA:CPU float32: 9.3 u and 1.5 u). Allowance, derived from the
        # tanh / logistic allowance (|t' - t| <= 24 u |t|): |1 - t'^2 - (1 - t^2)| <= 48.1 u, the
        # rounding of t (1 - t) in JAX 0.10's (g + g t)(1 - t) 2.0 u, and flushed intermediates.
        Smooth(
            "sech2",
            _sech2,
            _dsech2,
            _crit_sech2,
            inflections=(-_SECH2_INFL, _SECH2_INFL),
            curvature=(1, -1, 1),
            even_peak=True,
            range=(0.0, 1.0),
            f0=(1.0, 1.0),
            absmax=1.0,
            lip=0.77,  # max |f'| = 4 / (3 sqrt 3) = 0.7698
            drel=lambda x: 40.0,
            ulps="tanh",
            inflection_err=_INFL_ERR,
            stationary=(0.0,),
            abs_ulps=52.0,
            abs_eta=4.0,
            arb_f=_a_sech2,
            arb_df=_a_dsech2,
        ),
        Smooth(
            "dlogistic",
            _dlogistic,
            lambda x: -_dlogistic(x) * jnp.tanh(0.5 * x),
            _crit_dlogistic,
            inflections=(-2.0 * _SECH2_INFL, 2.0 * _SECH2_INFL),
            curvature=(1, -1, 1),
            even_peak=True,
            range=(0.0, 0.25),
            f0=(0.25, 0.25),
            absmax=0.25,
            lip=0.193,  # max |f'| = 1 / (6 sqrt 3) = 0.19245
            drel=lambda x: 40.0,
            nonneg=True,  # s, 1 - s >= 0 in float: 0 <= s <= 1 exactly
            ulps="logistic",
            inflection_err=2.0 * _INFL_ERR,
            stationary=(0.0,),
            abs_ulps=24.0,
            abs_eta=4.0,
            arb_f=_a_dlogistic,
            arb_df=_a_ddlogistic,
        ),
        Smooth(
            "erf",
            jax.lax.erf,
            lambda x: _TWO_OVER_SQRT_PI * jnp.exp(-x * x),
            _crit_erf,
            inflections=(0.0,),
            curvature=(1, -1),
            monotone=1,
            range=(-1.0, 1.0),
            lip=1.13,
            drel=lambda x: 12.0 + 2.0 * x * x,
            arb_f=arb.erf,
            arb_df=lambda x: _a_c() * (-(x**2)).exp(),
        ),
        Smooth(
            "erfc",
            jax.lax.erfc,
            lambda x: -_TWO_OVER_SQRT_PI * jnp.exp(-x * x),
            lambda a, p, q: _crit_erf(-a, p, q),
            inflections=(0.0,),
            curvature=(-1, 1),
            monotone=-1,
            range=(0.0, 2.0),
            f0=(1.0, 1.0),
            lip=1.13,
            drel=lambda x: 12.0 + 2.0 * x * x,
            arb_f=arb.erfc,
            arb_df=lambda x: -_a_c() * (-(x**2)).exp(),
        ),
        Smooth(
            "sin",
            jnp.sin,
            jnp.cos,
            _crit_trig(0.0),
            curvature=(-1,),
            phase=0.0,
            range=(-1.0, 1.0),
            absmax=1.0,
            lip=1.0,
            drel=lambda x: 8.0,
            arb_f=arb.sin,
            arb_df=arb.cos,
        ),
        Smooth(
            "cos",
            jnp.cos,
            lambda x: -jnp.sin(x),
            _crit_trig(0.5),
            curvature=(1,),
            phase=0.5,
            range=(-1.0, 1.0),
            f0=(1.0, 1.0),
            absmax=1.0,
            lip=1.0,
            drel=lambda x: 8.0,
            arb_f=arb.cos,
            arb_df=lambda x: -x.sin(),
        ),
    ]
}


def pow_fn(y: float) -> Smooth:
    """x**y on x > 0 (x >= 0 when y > 0) for a constant y exactly representable in float32."""
    y = float(y)
    if not math.isfinite(y) or float(np.float32(y)) != y:
        raise ValueError(f"pow_fn: exponent {y!r} must be a finite float32 value (the program's)")
    curv = 0 if y in (0.0, 1.0) else (1 if (y < 0 or y > 1) else -1)
    ya = fmpq(*Fraction(y).as_integer_ratio())

    def crit(a, p, q):
        return jnp.power(a / y, 1.0 / (y - 1.0)) if y != 1.0 else p

    def apow(x, e: float):
        if x.is_zero():  # exact 0 (in the domain only for y > 0): 0^e, infinite for e < 0
            return arb(0) if e > 0 else (arb(1) if e == 0 else arb.nan())
        return (arb(fmpq(*Fraction(e).as_integer_ratio())) * x.log()).exp()

    return Smooth(
        f"pow({y!r})",
        lambda x: jnp.power(x, jnp.asarray(y, x.dtype)),
        lambda x: y * jnp.power(x, jnp.asarray(y - 1.0, x.dtype)),
        crit,
        curvature=(curv,),
        monotone=int(np.sign(y)),
        range=(0.0, _INF),
        domain=(0.0, y > 0),
        f0=(0.0, 0.0) if y > 0 else ((1.0, 1.0) if y == 0 else (-_INF, _INF)),
        drel=lambda x: 2.0 * fm.ULPS["pow"] + 4.0,
        nonneg=True,
        ulps="pow",
        arb_f=lambda x: apow(x, y),
        arb_df=lambda x: arb(ya) * apow(x, y - 1.0),
    )


# ----------------------------------------------------------------------------------------------
# jnp: pieces, bounds of g = f - a x, relaxations, intervals.


def _arrays(l, u):
    l, u = jnp.asarray(l), jnp.asarray(u)
    dt = jnp.result_type(l.dtype, u.dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.float32
    l, u = jnp.broadcast_arrays(l.astype(dt), u.astype(dt))
    return l, u


def _mul0(a, x):
    # a·x with 0·inf = 0 (slope 0 at an infinite end).
    return jnp.where(a == 0, 0.0, a * x)


def _pieces(s: Smooth, l, u):
    """[(p, q, curv, is_gap, active)] covering [l, u], and the mask where they do cover it."""
    if s.phase is None:
        e = s.inflection_err
        cs = [-_INF, *s.inflections, _INF]
        out = []
        for i, cv in enumerate(s.curvature):
            lo = cs[i] + e if i > 0 else cs[i]
            hi = cs[i + 1] - e if i < len(s.inflections) else cs[i + 1]
            p, q = jnp.maximum(l, lo), jnp.minimum(u, hi)
            out.append((p, q, cv, False, (l <= hi) & (u >= lo)))
            if e and i < len(s.inflections):  # the gap holding the irrational inflection point
                lo, hi = cs[i + 1] - e, cs[i + 1] + e
                p, q = jnp.maximum(l, lo), jnp.minimum(u, hi)
                out.append((p, q, 0, True, (l <= hi) & (u >= lo)))
        return out, jnp.ones(l.shape, bool)
    # Periodic: inflection points (k + phase)·pi, enclosed in [c_lo, c_hi]; regions between.
    k0 = jnp.floor(l / math.pi - s.phase)
    cs = []
    for d in range(5):
        m = k0 - 1.0 + d + s.phase  # exact: |k0| is small (ends beyond TRIG_MAX fall back)
        c1, c2 = m * _PI_LO, m * _PI_HI
        cs.append((fm.down(jnp.minimum(c1, c2)), fm.up(jnp.maximum(c1, c2)), k0 - 1.0 + d))
    out = []
    for d in range(5):
        p, q = jnp.maximum(l, cs[d][0]), jnp.minimum(u, cs[d][1])
        out.append((p, q, 0, True, p <= q))
        if d < 4:
            p, q = jnp.maximum(l, cs[d][1]), jnp.minimum(u, cs[d + 1][0])
            cv = s.curvature[0] * (1.0 - 2.0 * jnp.mod(cs[d][2], 2.0))
            out.append((p, q, cv, False, p <= q))
    cover = (cs[0][0] <= l) & (cs[4][1] >= u)
    return out, cover


def _g_bounds(s: Smooth, a, l, u, sound: bool, rep):
    """Bounds (lo, hi) of g = f - a x over [l, u] for the REAL f; with `sound`, rigorous despite
    this computation's rounding. Pieces that are empty give (+inf, -inf)."""
    dt = l.dtype
    uc, tc = fm.unit(dt), fm.tiny(dt)
    k = fm.ULPS[s.ulps]
    pieces, cover = _pieces(s, l, u)
    lo_all = jnp.full(l.shape, _INF, dt)
    hi_all = jnp.full(l.shape, -_INF, dt)

    def g_at(x):
        fx = s.f(x)
        ax = _mul0(a, x)
        gx = fx - ax
        # f's ulps, the product, the difference; flushed results each cost tc.
        err = 2.0 * k * uc * jnp.abs(fx) + 4.0 * uc * (jnp.abs(ax) + jnp.abs(fx)) + 6.0 * tc
        return gx, err

    for p, q, cv, gap, active in pieces:
        p = jnp.where(active, p, rep)
        q = jnp.where(active, q, rep)
        gp, ep = g_at(p)
        gq, eq = g_at(q)
        end_lo, end_hi = jnp.minimum(gp, gq), jnp.maximum(gp, gq)
        end_err = jnp.maximum(ep, eq)
        if gap:
            lip = s.lip + jnp.abs(a)
            half = lip * (q - p) * 0.5
            lo, hi = end_lo - half, end_hi + half
            lo_err = hi_err = end_err + 4.0 * uc * (half + jnp.abs(end_lo) + jnp.abs(end_hi)) + tc
        else:
            t = s.crit(a, p, q)
            t = jnp.clip(jnp.where(jnp.isnan(t), p, t), p, q)
            t = jnp.where(jnp.abs(t) < tc, 0.0, t)  # 0 stays in [p, q] (ends are not subnormal)
            gt, et = g_at(t)
            dft = s.df(t)
            dg = dft - a
            dp, dq = p - t, q - t
            tan_lo = gt + jnp.minimum(dg * dp, dg * dq)
            tan_hi = gt + jnp.maximum(dg * dp, dg * dq)
            conv = cv > 0
            conc = cv < 0
            lo = jnp.where(conv, tan_lo, end_lo)
            hi = jnp.where(conc, tan_hi, end_hi)
            if sound:
                dist = jnp.maximum(-dp, dq)
                edg = (s.drel(t) + 2.0) * uc * jnp.abs(dft) + 2.0 * uc * jnp.abs(a) + 3.0 * tc
                tan_err = et + edg * dist + 8.0 * uc * (jnp.abs(gt) + (jnp.abs(dg) + edg) * dist)
                tan_err = tan_err + 8.0 * tc
                lo_err = jnp.where(conv, tan_err, end_err)
                hi_err = jnp.where(conc, tan_err, end_err)
        if sound:
            lo = fm.down(lo - fm.inflate(lo_err))
            hi = fm.up(hi + fm.inflate(hi_err))
        lo = jnp.where(jnp.isnan(lo), -_INF, lo)
        hi = jnp.where(jnp.isnan(hi), _INF, hi)
        lo_all = jnp.where(active, jnp.minimum(lo_all, lo), lo_all)
        hi_all = jnp.where(active, jnp.maximum(hi_all, hi), hi_all)
    return lo_all, hi_all, cover


def _masks(s: Smooth, l, u):
    """(trivial_inf, trivial_range, rep): boxes with no finite sound answer, boxes that get the
    range, and a safe in-domain point to evaluate at instead."""
    nan = jnp.isnan(l) | jnp.isnan(u) | (l > u)
    d0, closed = s.domain
    below = (l < d0) | ((l == d0) & (not closed))
    bad = nan | below
    if s.pole:
        bad = bad | ((l <= s.inflections[0]) & (u >= s.inflections[0]))
    rng = jnp.zeros(l.shape, bool)
    if s.phase is not None:
        rng = (jnp.maximum(jnp.abs(l), jnp.abs(u)) > TRIG_MAX) & ~bad
    rep = 1.0 if d0 < 1.0 else d0 + 1.0
    return bad, rng, rep


def _prog_err(s: Smooth, y, opts, dt):
    """Allowance for the program's evaluation of f with |result| <= y: `ULPS[s.ulps]` ulps of
    the result plus the absolute part (`s.abs_ulps`, `s.abs_eta`)."""
    u = max(fm.unit(dt), opts.program.u_out)
    k = fm.ULPS[s.ulps]
    # the absolute part is the program's rounding only (none for a real-valued program)
    absolute = s.abs_ulps * opts.program.u_out + s.abs_eta * opts.program.eta
    return 2.0 * k * u * y + absolute + 2.0 * opts.program.eta


def _np_out(x: float, dt, down: bool) -> float:
    """x rounded outward into dtype dt (host side, constants only)."""
    t = np.dtype(dt).type
    y = t(x)
    step = -np.inf if down else np.inf
    while (float(y) > x) if down else (float(y) < x):
        y = np.nextafter(y, t(step))
    return float(y)


def _range(s: Smooth, opts, dt):
    lo, hi = s.range
    if opts.float_sound:
        if math.isfinite(lo):
            lo = _np_out(lo - 2.0 * _prog_err(s, abs(lo), opts, dt), dt, down=True)
        if math.isfinite(hi):
            hi = _np_out(hi + 2.0 * _prog_err(s, abs(hi), opts, dt), dt, down=False)
        if s.nonneg:
            lo = 0.0
    return lo, hi


def _daz(s: Smooth, l, u, a, lo, hi, opts):
    """A subnormal input reads as +-0 in the program: the point set gains (x, f(+-0))."""
    eta = opts.program.eta
    meets = (l < eta) & (u > -eta)
    f0lo, f0hi = s.f0
    e0 = _prog_err(s, max(abs(f0lo), abs(f0hi)), opts, l.dtype) if math.isfinite(f0lo) else 0.0
    slack = fm.inflate(jnp.abs(a) * eta + e0)
    lo = jnp.where(meets, jnp.minimum(lo, fm.down(f0lo - slack)), lo)
    hi = jnp.where(meets, jnp.maximum(hi, fm.up(f0hi + slack)), hi)
    return lo, hi


def _prepare(s: Smooth, l, u):
    """Arrays off the subnormal range, undefined boxes replaced by a representative point, and
    the constants of the error model: (l, u, dtype, bad, rng, rep, ulps, unit, tiny)."""
    l, u = _arrays(l, u)
    dt = l.dtype
    l, u = fm.outside_subnormal(l, up=False), fm.outside_subnormal(u, up=True)
    bad, rng, rep = _masks(s, l, u)
    l, u = jnp.where(bad, rep, l), jnp.where(bad, rep, u)
    return l, u, dt, bad, rng, rep, fm.ULPS[s.ulps], fm.unit(dt), fm.tiny(dt)


def interval(s: Smooth, lo, hi, opts):
    """A sound enclosure [ylo, yhi] of f over [lo, hi] (of the float program's f with
    `opts.float_sound`, else of the real f computed in plain float)."""
    l, u, dt, bad, rng, rep, k, uc, tc = _prepare(s, lo, hi)
    sound = opts.float_sound
    if s.monotone or s.even_peak:
        if s.monotone:
            fl, fu = s.f(l), s.f(u)
            ylo, yhi = (fl, fu) if s.monotone > 0 else (fu, fl)
        else:
            al, au = jnp.abs(l), jnp.abs(u)
            near = jnp.where((l <= 0) & (u >= 0), 0.0, jnp.minimum(al, au))
            ylo, yhi = s.f(jnp.maximum(al, au)), s.f(near)
        if sound:
            elo = 2.0 * k * uc * jnp.abs(ylo) + 2.0 * tc
            ehi = 2.0 * k * uc * jnp.abs(yhi) + 2.0 * tc
            ylo = fm.down(ylo - fm.inflate(elo))
            yhi = fm.up(yhi + fm.inflate(ehi))
        cover = jnp.ones(l.shape, bool)
    else:
        zero = jnp.zeros_like(l)
        ylo, yhi, cover = _g_bounds(s, zero, l, u, sound, rep)
    if sound:
        # f_prog >= phi(f) with phi(y) = y - K|y| - 2 eta increasing: apply it at the ends.
        ylo = fm.down(ylo - fm.inflate(_prog_err(s, jnp.abs(ylo), opts, dt)))
        yhi = fm.up(yhi + fm.inflate(_prog_err(s, jnp.abs(yhi), opts, dt)))
        ylo, yhi = _daz(s, l, u, jnp.zeros_like(l), ylo, yhi, opts)
    r_lo, r_hi = _range(s, opts, dt)
    ylo = jnp.where(jnp.isnan(ylo), -_INF, ylo)
    yhi = jnp.where(jnp.isnan(yhi), _INF, yhi)
    ylo = jnp.where(rng | ~cover, r_lo, jnp.maximum(ylo, r_lo))
    yhi = jnp.where(rng | ~cover, r_hi, jnp.minimum(yhi, r_hi))
    big = jnp.finfo(dt).max  # an overflowed end (f(l) = inf) still bounds nothing above it
    ylo, yhi = jnp.minimum(ylo, big), jnp.maximum(yhi, -big)
    return jnp.where(bad, -_INF, ylo), jnp.where(bad, _INF, yhi)


def relax(s: Smooth, l, u, opts):
    """Lines a x + b_l <= f(x) <= a x + b_u on [l, u] with a the chord slope: (a, b_l, a, b_u).

    With `opts.float_sound` they hold for the float program's f at every float x in [l, u]; else
    for the real f up to this computation's rounding. Unbounded or undefined cases get slope 0
    and infinite intercepts (or the range of f)."""
    l, u, dt, bad, rng, rep, k, uc, tc = _prepare(s, l, u)
    sound = opts.float_sound
    fl, fu = s.f(l), s.f(u)
    w = u - l
    a = jnp.where(w > 0, (fu - fl) / jnp.where(w > 0, w, 1.0), s.df(l))
    finite = jnp.isfinite(l) & jnp.isfinite(u) & jnp.isfinite(fl) & jnp.isfinite(fu)
    a = jnp.where(jnp.isfinite(a) & finite, a, 0.0)
    b_l, b_u, cover = _g_bounds(s, a, l, u, sound, rep)
    if s.monotone:
        # Slope 0 (infinite ends, flat chords): the ends are exact extremes, no NaN from inf.
        ylo, yhi = (fl, fu) if s.monotone > 0 else (fu, fl)
        if sound:
            ylo = fm.down(ylo - fm.inflate(2.0 * k * uc * jnp.abs(ylo) + 2.0 * tc))
            yhi = fm.up(yhi + fm.inflate(2.0 * k * uc * jnp.abs(yhi) + 2.0 * tc))
        b_l = jnp.where(a == 0, ylo, b_l)
        b_u = jnp.where(a == 0, yhi, b_u)
    if sound:
        if s.absmax is not None:
            fmax = jnp.full(l.shape, s.absmax, dt)
        else:
            fmax = fm.inflate(jnp.maximum(jnp.abs(fl), jnp.abs(fu)) * (1.0 + 2.0 * k * uc) + tc)
        e = fm.inflate(_prog_err(s, fmax, opts, dt))
        b_l = fm.down(b_l - e)
        b_u = fm.up(b_u + e)
        b_l, b_u = _daz(s, l, u, a, b_l, b_u, opts)
    r_lo, r_hi = _range(s, opts, dt)
    flat = a == 0
    b_l = jnp.where(jnp.isnan(b_l), -_INF, b_l)
    b_u = jnp.where(jnp.isnan(b_u), _INF, b_u)
    b_l = jnp.where(flat, jnp.maximum(b_l, r_lo), b_l)
    b_u = jnp.where(flat, jnp.minimum(b_u, r_hi), b_u)
    fall = rng | ~cover
    a = jnp.where(fall | bad, 0.0, a)
    b_l = jnp.where(bad, -_INF, jnp.where(fall, r_lo, b_l))
    b_u = jnp.where(bad, _INF, jnp.where(fall, r_hi, b_u))
    big = jnp.finfo(dt).max
    return a, jnp.minimum(b_l, big), a, jnp.maximum(b_u, -big)


# ----------------------------------------------------------------------------------------------
# Exact host side (certificate checker): Fractions in, arb balls inside, no float trusted.


def _A(v) -> arb:
    v = Fraction(v)
    return arb(fmpq(v.numerator, v.denominator))


def _ball(lo: Fraction, hi: Fraction) -> arb:
    return _A(lo).union(_A(hi))


def _frac(x: arb) -> Fraction:
    if not x.is_finite():
        raise ValueError(f"no finite rigorous bound ({x})")
    m, e = x.mid().man_exp()
    m, e = int(m), int(e)
    return Fraction(m) * 2**e if e >= 0 else Fraction(m, 2**-e)


def _in_domain(s: Smooth, l: Fraction, u: Fraction) -> bool:
    d0, closed = s.domain
    if l < d0 or (l == d0 and not closed):
        return False
    return not (s.pole and l <= s.inflections[0] <= u)


def _exact_pieces(s: Smooth, l: Fraction, u: Fraction):
    """(p, q, curvature sign or None) covering [l, u]; None: unknown (periodic: use B&B)."""
    if s.phase is not None:
        return [(l, u, None)]
    e = Fraction(s.inflection_err)
    cs = [None, *(Fraction(c) for c in s.inflections), None]
    out = []
    for i, cv in enumerate(s.curvature):
        lo = None if cs[i] is None else cs[i] + e
        hi = None if cs[i + 1] is None else cs[i + 1] - e
        p = l if lo is None else max(l, lo)
        q = u if hi is None else min(u, hi)
        if p <= q:
            out.append((p, q, cv))
        if e and cs[i + 1] is not None:  # a gap around an irrational inflection point: B&B
            p, q = max(l, cs[i + 1] - e), min(u, cs[i + 1] + e)
            if p <= q:
                out.append((p, q, None))
    return out


def _bb_nonneg(h, dh, p: Fraction, q: Fraction, max_boxes: int) -> bool:
    """Branch and bound: True only if h >= 0 is proven on [p, q]."""
    stack, n = [(p, q)], 0
    while stack:
        lo, hi = stack.pop()
        n += 1
        if n > max_boxes:
            return False
        X = _ball(lo, hi)
        nat = h(X)
        if nat.is_finite() and nat.lower() >= 0:
            continue
        c = (lo + hi) / 2
        hc = h(_A(c))
        if hc.is_finite() and hc.upper() < 0:
            return False  # counterexample
        d = dh(X)
        if hc.is_finite() and d.is_finite():
            mv = hc - abs(d).upper() * _A((hi - lo) / 2)
            if mv.lower() >= 0:
                continue
        if hi - lo < Fraction(1, 2**80):
            return False
        stack.extend([(lo, c), (c, hi)])
    return True


def _tangent_nonneg(h, dh, p: Fraction, q: Fraction) -> bool:
    """h convex on [p, q]: h >= h(t) + h'(t)(x - t); t from bisection on the sign of h'."""
    lo, hi = p, q
    t = p
    dp = dh(_A(p))
    if dp.is_finite() and dp.lower() >= 0:
        t = p
    else:
        for _ in range(70):
            t = (lo + hi) / 2
            v = dh(_A(t))
            if not v.is_finite():
                break
            if v.lower() > 0:
                hi = t
            elif v.upper() < 0:
                lo = t
            else:
                break
    T = _A(t)
    ht, dt = h(T), dh(T)
    if not (ht.is_finite() and dt.is_finite()):
        return False
    bound = ht + (dt * _A(p - t)).min(dt * _A(q - t))
    return bool(bound.lower() >= 0)


def check_line(
    s: Smooth,
    a: Fraction,
    b: Fraction,
    l: Fraction,
    u: Fraction,
    side: str,
    *,
    max_boxes: int = 20000,
    prec: int = 128,
) -> bool:
    """True only if proven: side "lower": a x + b <= f(x) for every real x in [l, u]; "upper":
    a x + b >= f(x). False when disproved, undecided within `max_boxes`, or f is undefined
    somewhere on [l, u]."""
    if side not in ("lower", "upper"):
        raise ValueError(f"side must be 'lower' or 'upper', got {side!r}")
    a, b, l, u = Fraction(a), Fraction(b), Fraction(l), Fraction(u)
    if l > u:
        raise ValueError(f"empty interval [{l}, {u}]")
    if not _in_domain(s, l, u):
        return False
    sg = 1 if side == "lower" else -1
    old = ctx.prec
    ctx.prec = prec
    try:
        A, B, S = _A(a), _A(b), arb(sg)

        def h(x):
            return S * (s.arb_f(x) - (A * x + B))

        def dh(x):
            return S * (s.arb_df(x) - A)

        for p, q, cv in _exact_pieces(s, l, u):
            if cv is not None and sg * cv <= 0:  # h concave (or affine): its min is at an end
                for x in (p, q):
                    v = h(_A(x))
                    if not (v.is_finite() and v.lower() >= 0):
                        return False
                continue
            if cv is not None and _tangent_nonneg(h, dh, p, q):
                continue
            if not _bb_nonneg(h, dh, p, q, max_boxes):
                return False
        return True
    finally:
        ctx.prec = old


def _stationary(s: Smooth, l: Fraction, u: Fraction) -> list[arb]:
    """Balls holding the stationary points of a non-monotone f that may lie in [l, u]."""
    if s.phase is None and s.stationary:
        return [_A(c) for c in s.stationary if l <= Fraction(c) <= u]
    if s.name == "square":
        return [arb(0)] if l <= 0 <= u else []
    if s.phase is None:
        raise NotImplementedError(f"enclose: no stationary points known for {s.name}")
    pi = arb.pi()
    off = s.phase + 0.5
    k0 = math.floor(float(l) / math.pi - off) - 2
    out = []
    L, U = _A(l), _A(u)
    for k in range(k0, k0 + 8):
        x = (arb(k) + _A(Fraction(off))) * pi
        if not (x < L) and not (x > U):
            out.append(x)
    return out


def enclose(s: Smooth, l: Fraction, u: Fraction, *, prec: int = 128) -> tuple[Fraction, Fraction]:
    """A rigorous enclosure [lo, hi] of the real f over [l, u], as exact rationals."""
    l, u = Fraction(l), Fraction(u)
    if l > u:
        raise ValueError(f"empty interval [{l}, {u}]")
    if not _in_domain(s, l, u):
        raise ValueError(f"{s.name} is not finite on all of [{l}, {u}]")
    old = ctx.prec
    ctx.prec = prec
    try:
        if s.phase is not None and u - l >= 7:  # covers a whole period: the range
            return Fraction(-1), Fraction(1)
        vals = [s.arb_f(_A(l)), s.arb_f(_A(u))]
        if not s.monotone:
            vals += [s.arb_f(x) for x in _stationary(s, l, u)]
        lo = min(_frac(v.lower()) for v in vals)
        hi = max(_frac(v.upper()) for v in vals)
        r_lo, r_hi = s.range
        if math.isfinite(r_lo):
            lo = max(lo, Fraction(r_lo))
        if math.isfinite(r_hi):
            hi = min(hi, Fraction(r_hi))
        return lo, hi
    finally:
        ctx.prec = old


__all__ = ["SMOOTH", "Smooth", "check_line", "enclose", "interval", "pow_fn", "relax"]
