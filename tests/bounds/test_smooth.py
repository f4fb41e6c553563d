"""Sound relaxations of smooth scalar functions (tljax.bounds._smooth).

References are independent of the code under test: float64 numpy/scipy for the real functions
(with a rounding-level tolerance only for float_sound=False, whose lines are plain float), XLA's
own float32 values (jit and eager) compared EXACTLY for float_sound=True, and python-flint arb
for the exact checker.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp
from flint import arb, ctx, fmpq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tljax.bounds import _float_model as fm
from tljax.bounds import _smooth as S


@dataclasses.dataclass(frozen=True)
class Opts:
    float_sound: bool = True
    program: fm.ProgramModel = fm.FLOAT32


SOUND, PLAIN = Opts(True), Opts(False)
# No shrinking: each step re-evaluates a batch op by op; the message names the failing box.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
POWS = {"pow(0.5)": 0.5, "pow(-1.5)": -1.5, "pow(2.5)": 2.5}
FUNCS = {**S.SMOOTH, **{k: S.pow_fn(v) for k, v in POWS.items()}}

REF = {  # the real functions in float64, independent of the jnp code under test
    "exp": np.exp,
    "expm1": np.expm1,
    "log": np.log,
    "log1p": np.log1p,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "recip": lambda x: 1.0 / x,
    "square": np.square,
    "softplus": lambda x: np.logaddexp(x, 0.0),
    "tanh": np.tanh,
    "logistic": sp.expit,
    "erf": sp.erf,
    "erfc": sp.erfc,
    "sin": np.sin,
    "cos": np.cos,
    "sech2": lambda x: 1.0 / np.cosh(x) ** 2,
    "dlogistic": lambda x: sp.expit(x) * sp.expit(-x),
    **{k: ft.partial(lambda x, y: np.power(x, y), y=v) for k, v in POWS.items()},
}


def _tanh_jvp(x):
    # what a jvp of tanh computes (JAX 0.10: (g + g t)(1 - t); 0.11: g * one_minus_square(t))
    return jax.jvp(jnp.tanh, (x,), (jnp.ones_like(x),))[1]


def _logistic_jvp(x):
    return jax.jvp(jax.nn.sigmoid, (x,), (jnp.ones_like(x),))[1]


# The float program of the derivative functions is the expression JAX differentiates into, not
# their jnp description (their allowance must cover how XLA computes that expression).
PROGRAM = {"sech2": _tanh_jvp, "dlogistic": _logistic_jvp}


@dataclasses.dataclass
class Compiled:
    lines: object  # (l, u) -> relax for SOUND and PLAIN
    ivals: object
    prog: object  # the program's f, under jit


_CACHE: dict[tuple[str, bool], Compiled] = {}


def compiled(name: str, jit: bool = False) -> Compiled:
    """The code under test, eager (op by op: no compile, fast for batches) or under jit."""
    if (name, jit) not in _CACHE:
        s = FUNCS[name]
        wrap = jax.jit if jit else (lambda f: f)
        _CACHE[name, jit] = Compiled(
            wrap(lambda l, u: (S.relax(s, l, u, SOUND), S.relax(s, l, u, PLAIN))),
            wrap(lambda l, u: (S.interval(s, l, u, SOUND), S.interval(s, l, u, PLAIN))),
            jax.jit(PROGRAM.get(name, s.f)),
        )
    return _CACHE[name, jit]


def _f32(x) -> np.float32:
    return np.float32(x)


def anchors(name: str):
    s = FUNCS[name]
    pts = [0.0, 1.0, -1.0, 0.5, 2.0, 1.17549435e-38, 1e-38, 1e-45, 1e-30, 12.5, 17.4, 100.0]
    pts += list(s.inflections) + ([s.domain[0]] if math.isfinite(s.domain[0]) else [])
    if s.phase is not None:
        pts += [k * math.pi / 2 for k in range(-8, 9)] + [31 * math.pi, 63.5 * math.pi]
    base = st.one_of(
        st.sampled_from(pts),
        st.integers(-100, 100).map(float),
        st.floats(-100, 100, width=32),
        st.floats(float(np.float32(1e-30)), 100, width=32).map(lambda x: -x),
    )
    signed = st.tuples(base, st.booleans()).map(lambda t: abs(t[0]) if t[1] else t[0])
    # nextafter neighbours of the anchor
    return st.tuples(signed, st.integers(-3, 3)).map(lambda t: float(_step(_f32(t[0]), t[1])))


def _step(x: np.float32, k: int) -> np.float32:
    for _ in range(abs(k)):
        x = np.nextafter(x, np.float32(np.inf if k > 0 else -np.inf))
    return x


def boxes(name: str):
    width = st.one_of(
        st.just(0.0),
        st.integers(1, 3).map(lambda k: -float(k)),  # k ulps
        st.floats(-7, 2).map(lambda e: 10.0**e),
    )

    def build(t):
        a, w, b, two = t
        l = _f32(a)
        if two:
            u = _f32(b)
        elif w < 0:
            u = _step(l, int(-w))
        else:
            u = _f32(float(l) + w)
        return (min(l, u), max(l, u))

    return st.tuples(anchors(name), width, anchors(name), st.booleans()).map(build)


def sample_points(l: np.float32, u: np.float32, rng) -> np.ndarray:
    lo, hi = float(l), float(u)
    xs = [np.linspace(lo, hi, 129), rng.uniform(lo, hi, 64) if hi > lo else [lo]]
    xs = np.concatenate([np.asarray(x, np.float64) for x in xs]).astype(np.float32)
    extra = [l, u, np.nextafter(l, u), np.nextafter(u, l), 0.0, 1.2e-38, -1.2e-38]
    xs = np.concatenate([xs, np.asarray(extra, np.float32)])
    return np.unique(xs[(xs >= l) & (xs <= u)])


def _line_ok(a: float, b: float, xs: np.ndarray, ys: np.ndarray, side: str) -> np.ndarray:
    """EXACT check of a x + b <= y (lower) / >= y (upper): float64 where the rounding of the
    sum cannot change the answer, Fractions for the rest."""
    ax = np.float64(a) * xs.astype(np.float64)  # exact: 24 + 24 bits
    with np.errstate(invalid="ignore", over="ignore"):
        v = ax + np.float64(b)
        ok = v <= ys if side == "lower" else v >= ys
        slack = np.abs(v) * 2.0**-51 + 1e-300
        unsure = np.isfinite(v) & np.isfinite(ys) & (np.abs(v - ys) <= slack)
    for i in np.nonzero(unsure)[0]:
        w = Fraction(a) * Fraction(float(xs[i])) + Fraction(b)
        y = Fraction(float(ys[i]))
        ok[i] = w <= y if side == "lower" else w >= y
    return ok


def _nice(name: str, l: np.float32, u: np.float32) -> bool:
    """Boxes that must get finite lines and intervals (nothing undefined or overflowing)."""
    s = FUNCS[name]
    if not (np.isfinite(l) and np.isfinite(u)):
        return False
    d0, _closed = s.domain
    if math.isfinite(d0) and (l < d0 + 1e-30 or (d0 == 0 and l < 1e-37)):
        return False
    if s.pole and l < 1e-37 and u > -1e-37:
        return False
    return not (s.phase is not None and u - l > 6.0)


def check_boxes(name: str, boxes, rng, jit: bool = False) -> None:
    c = compiled(name, jit)
    ls = np.asarray([b[0] for b in boxes], np.float32)
    us = np.asarray([b[1] for b in boxes], np.float32)
    with np.errstate(all="ignore"):
        lines = [np.asarray(v) for out in c.lines(ls, us) for v in out]
        ivals = [np.asarray(v) for out in c.ivals(ls, us) for v in out]
    # all sample points in one array: one jit call, one eager call, one reference call
    xss = [sample_points(l, u, rng) for l, u in zip(ls, us, strict=True)]
    xall = np.concatenate(xss + [ls, us])
    with np.errstate(all="ignore"):
        y_jit = np.asarray(c.prog(xall)).astype(np.float64)
        y_eager = np.asarray(PROGRAM.get(name, FUNCS[name].f)(jnp.asarray(xall))).astype(np.float64)
        y_real = REF[name](xall.astype(np.float64))
    n = len(ls)
    ends = y_jit[len(xall) - 2 * n :]
    at = 0
    for i, (l, u) in enumerate(zip(ls, us, strict=True)):
        sl, pl = [v[i] for v in lines[:4]], [v[i] for v in lines[4:]]
        si, pi = [v[i] for v in ivals[:2]], [v[i] for v in ivals[2:]]
        k = len(xss[i])
        ys = (y_jit[at : at + k], y_eager[at : at + k], y_real[at : at + k])
        # headroom: margins may legitimately overflow next to float32's largest value
        finite_ends = bool(abs(ends[i]) < 1e36 and abs(ends[n + i]) < 1e36)
        check_box(name, l, u, sl, pl, si, pi, xss[i], ys, finite_ends)
        at += k


def check_box(name, l, u, sl, pl, si, pi, xs, yvals, finite_ends) -> None:
    y_jit, y_eager, y_real = yvals
    nice = finite_ends and _nice(name, l, u)
    where = f"{name} on [{l!r}, {u!r}]"
    for out in (sl, pl, si, pi):
        vals = [float(v) for v in out]
        assert not any(math.isnan(v) for v in vals), where
        if nice:
            assert all(math.isfinite(v) for v in vals), (where, vals)
    # float_sound: the program's float32 values, exactly
    a_l, b_l, a_u, b_u = (float(v) for v in sl)
    for ys in (y_jit, y_eager):
        bad = np.isnan(ys)
        if bad.any():  # undefined somewhere: only the trivial answer is sound
            assert b_l == -math.inf and b_u == math.inf, where
            assert float(si[0]) == -math.inf and float(si[1]) == math.inf, where
            continue
        assert _line_ok(a_l, b_l, xs, ys, "lower").all(), (where, "lower", sl)
        assert _line_ok(a_u, b_u, xs, ys, "upper").all(), (where, "upper", sl)
        assert np.all((float(si[0]) <= ys) & (ys <= float(si[1]))), (where, si)
    # plain float: the real function, up to this computation's float32 rounding
    ok = np.isfinite(y_real)
    x64, yr = xs.astype(np.float64)[ok], y_real[ok]
    a_l, b_l, a_u, b_u = (float(v) for v in pl)
    with np.errstate(all="ignore"):
        for a, b, sg in ((a_l, b_l, 1), (a_u, b_u, -1)):
            if not math.isfinite(b):
                continue
            # plus flushed subnormals of this computation, which scale with the slope
            tol = (
                64 * 2.0**-24 * (np.abs(a * x64) + abs(b) + np.abs(yr))
                + (8 + 8 * abs(a)) * 2.0**-126
            )
            assert np.all(sg * (yr - (a * x64 + b)) >= -tol), (where, "plain", sg, pl)
        tol = 64 * 2.0**-24 * np.abs(yr) + 1e-37
        assert np.all((float(pi[0]) - tol <= yr) & (yr <= float(pi[1]) + tol)), (where, pi)


@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_lines_and_intervals_contain_f(name, data):
    bs = data.draw(st.lists(boxes(name), min_size=48, max_size=48))
    check_boxes(name, bs, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["logistic", "tanh", "exp"])
@settings(
    max_examples=1,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_lines_and_intervals_contain_f_under_jit(name, data):
    bs = data.draw(st.lists(boxes(name), min_size=48, max_size=48))
    check_boxes(name, bs, np.random.default_rng(0), jit=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FUNCS))
@settings(
    max_examples=60,
    deadline=None,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_lines_and_intervals_contain_f_many(name, data):
    bs = data.draw(st.lists(boxes(name), min_size=48, max_size=48))
    check_boxes(name, bs, np.random.default_rng(1), jit=name in ("sin", "erfc", "pow(2.5)"))


def test_far_tails_and_straddles():
    """Hand-picked hard boxes: tails where the old critical point failed, straddles of 0."""
    rng = np.random.default_rng(2)
    cases = {
        "logistic": [(-17.878672, -17.399183), (-40, -30), (30, 40), (-90, -89), (-1, 3)],
        "tanh": [(-9, -8.5), (-20, -19), (8.1, 8.7), (-3, 3e-7)],
        "erf": [(-4, -3.5), (3.9, 9), (-1e-7, 2)],
        "erfc": [(8, 9.2), (-5, -4), (-0.3, 0.2)],
        "softplus": [(-90, -80), (-17.9, -17.3), (40, 41)],
        "sin": [(31 * math.pi - 1e-3, 31 * math.pi + 1e-3), (-0.1, 6.1), (90, 96)],
        "cos": [(99, 100), (-math.pi, math.pi)],
    }
    for name, bs in cases.items():
        check_boxes(name, [(_f32(lo), _f32(hi)) for lo, hi in bs], rng)


def test_logistic_repro_old_bug():
    """The old chord-parallel lower line cut through sigmoid at these ends."""
    l, u = _f32(-17.878672), _f32(-17.399183)
    s = S.SMOOTH["logistic"]
    a, b_l, _, b_u = (float(v) for v in S.relax(s, l, u, SOUND))
    xs = jnp.linspace(l, u, 100001, dtype=jnp.float32)
    ys = np.asarray(jax.jit(jax.nn.sigmoid)(xs)).astype(np.float64)
    xs = np.asarray(xs)
    assert _line_ok(a, b_l, xs, ys, "lower").all()
    assert _line_ok(a, b_u, xs, ys, "upper").all()
    # and tight: the band is a few float32 ulps of f wide, not more
    g = ys - a * xs.astype(np.float64)
    assert (g.min() - b_l) < 2e-12 and (b_u - g.max()) < 2e-12


TIGHT = [
    ("tanh", -1.0, 2.0),
    ("tanh", 0.5, 1.5),
    ("logistic", -3.0, 0.5),
    ("logistic", 2.0, 6.0),
    ("exp", -1.0, 1.0),
    ("log", 0.5, 4.0),
    ("sqrt", 0.25, 4.0),
    ("erf", -0.5, 1.5),
    ("softplus", -2.0, 2.0),
    ("sin", 0.3, 2.9),
    ("cos", -1.0, 2.0),
    ("square", -1.0, 3.0),
    ("recip", 0.5, 2.0),
    ("rsqrt", 0.5, 3.0),
    ("erfc", 0.2, 1.7),
    ("pow(2.5)", 0.5, 2.0),
]


@pytest.mark.parametrize("name,lo,hi", TIGHT)
def test_tightness_vs_optimal_parallel_lines(name, lo, hi):
    """Band width within a small factor of the optimal chord-parallel band (float64 grid)."""
    c = compiled(name)
    l, u = _f32(lo), _f32(hi)
    sl, pl = c.lines(l, u)
    xs = np.linspace(float(l), float(u), 200001)
    ys = REF[name](xs)
    for (a, b_l, _, b_u), sound in ((pl, False), (sl, True)):
        a, b_l, b_u = float(a), float(b_l), float(b_u)
        g = ys - a * xs
        opt = g.max() - g.min()
        width = b_u - b_l
        # plain: only rounding separates us from optimal; sound: plus the float allowances
        fmax = np.abs(ys).max()
        extra = (
            0
            if not sound
            else 8 * fm.ULPS[FUNCS[name].ulps] * 2.0**-24 * (fmax + abs(a) * max(abs(lo), abs(hi)))
        )
        assert width <= opt * (1 + 1e-4) + extra + 1e-6 * opt + 1e-12, (name, sound, width, opt)
        assert width >= opt * (1 - 1e-6) - 1e-7  # and of course not below it


CERT = [
    ("tanh", -1.0, 2.0),
    ("logistic", -17.878672, -17.399183),
    ("logistic", -3.0, 0.5),
    ("exp", -1.0, 1.0),
    ("log", 0.5, 4.0),
    ("sqrt", 0.0, 4.0),
    ("erf", -0.5, 1.5),
    ("softplus", -2.0, 2.0),
    ("sin", 0.3, 5.9),
    ("cos", -1.0, 2.0),
    ("square", -1.0, 3.0),
    ("recip", -2.0, -0.5),
    ("rsqrt", 0.5, 3.0),
    ("erfc", 0.2, 1.7),
    ("expm1", -2.0, 0.5),
    ("log1p", -0.5, 3.0),
    ("pow(-1.5)", 0.5, 2.0),
    ("pow(0.5)", 0.0, 2.0),
]


@pytest.mark.parametrize("name,lo,hi", CERT)
def test_check_line_accepts_ours_rejects_tampered(name, lo, hi):
    s = FUNCS[name]
    l, u = _f32(lo), _f32(hi)
    a, b_l, _, b_u = (float(v) for v in compiled(name).lines(l, u)[0])
    L, U, A = Fraction(float(l)), Fraction(float(u)), Fraction(a)
    assert S.check_line(s, A, Fraction(b_l), L, U, "lower")
    assert S.check_line(s, A, Fraction(b_u), L, U, "upper")
    # the true extremes of g (float64 grid), then intercepts moved past them by a little
    xs = np.linspace(float(l), float(u), 20001)
    g = REF[name](xs) - a * xs
    lo_t = Fraction(b_l) + 2 * (Fraction(float(g.min())) - Fraction(b_l)) + Fraction(1, 10**12)
    hi_t = Fraction(b_u) - 2 * (Fraction(b_u) - Fraction(float(g.max()))) - Fraction(1, 10**12)
    assert not S.check_line(s, A, lo_t, L, U, "lower")
    assert not S.check_line(s, A, hi_t, L, U, "upper")


def test_check_line_domain_and_errors():
    s = S.SMOOTH["log"]
    assert not S.check_line(s, Fraction(0), Fraction(-10), Fraction(-1), Fraction(1), "lower")
    assert not S.check_line(S.SMOOTH["recip"], 0, -100, Fraction(-1), Fraction(1), "lower")
    with pytest.raises(ValueError, match="side"):
        S.check_line(s, 0, 0, Fraction(1), Fraction(2), "below")
    with pytest.raises(ValueError, match="not finite"):
        S.enclose(s, Fraction(0), Fraction(1))
    with pytest.raises(ValueError, match="float32"):
        S.pow_fn(0.1)


ENC = [
    ("sin", 0.3, 5.9),
    ("sin", -7.0, -6.5),
    ("cos", -1.0, 2.0),
    ("cos", 3.0, 3.3),
    ("square", -1.0, 3.0),
    ("square", 0.5, 0.75),
    ("tanh", -20.0, 0.25),
    ("erfc", 1.0, 9.0),
    ("rsqrt", 0.5, 3.0),
    ("log", 1e-3, 1e3),
    ("pow(-1.5)", 0.5, 2.0),
    ("sin", -1.0, 100.0),
]


@pytest.mark.parametrize("name,lo,hi", ENC)
def test_enclose_contains_samples(name, lo, hi):
    s = FUNCS[name]
    L, U = Fraction(lo), Fraction(hi)
    elo, ehi = S.enclose(s, L, U)
    xs = [L + (U - L) * Fraction(i, 400) for i in range(401)]
    old = ctx.prec
    ctx.prec = 300  # balls much narrower than enclose's own 128-bit rounding
    try:
        vals = [s.arb_f(arb(fmpq(x.numerator, x.denominator))) for x in xs]
        ELO = arb(fmpq(elo.numerator, elo.denominator))
        EHI = arb(fmpq(ehi.numerator, ehi.denominator))
        assert all(v >= ELO and v <= EHI for v in vals)
    finally:
        ctx.prec = old
    ys = REF[name](np.asarray([float(x) for x in xs]))
    assert float(ehi) - float(elo) <= (ys.max() - ys.min()) * 1.01 + 1e-12  # and tight


def test_ulps_table_covers_xla():
    """The error model: XLA's float32 results stay within ULPS ulps (sample; nightly is wider)."""
    rng = np.random.default_rng(3)
    x = (rng.choice([-1, 1], 50000) * np.exp(rng.uniform(-30, 4.6, 50000))).astype(np.float32)
    for name, s in FUNCS.items():
        xs = np.abs(x) if math.isfinite(s.domain[0]) and s.domain[0] >= 0 else x
        xs = xs[xs > s.domain[0]] if math.isfinite(s.domain[0]) else xs
        with np.errstate(all="ignore"):
            ref = REF[name](xs.astype(np.float64))
            y = np.asarray(compiled(name).prog(xs)).astype(np.float64)
        ok = np.isfinite(ref) & (np.abs(ref) >= 2.0**-126) & (np.abs(ref) < 3e38)
        ulp = 2.0 ** (np.floor(np.log2(np.abs(ref[ok]))) - 23)
        # beyond the absolute part of the allowance (sech2, dlogistic), k ulps of the result
        d = np.maximum(np.abs(y[ok] - ref[ok]) - s.abs_ulps * 2.0**-24, 0.0)
        err = np.max(d / ulp)
        assert err <= fm.ULPS[s.ulps], (name, err)


def test_jit_vmap_grad():
    s = S.SMOOTH["logistic"]
    l = jnp.linspace(-20.0, 2.0, 7)
    out = jax.vmap(lambda a, b: S.relax(s, a, b, SOUND))(l, l + 1.5)
    assert all(o.shape == (7,) for o in out) and all(bool(jnp.isfinite(o).all()) for o in out)
    gl, gu = jax.grad(lambda a, b: S.relax(s, a, b, SOUND)[1].sum(), argnums=(0, 1))(l, l + 1.5)
    assert bool(jnp.isfinite(gl).all() and jnp.isfinite(gu).all())
    gi = jax.grad(lambda a: S.interval(S.SMOOTH["square"], a, a + 1.0, SOUND)[0].sum())(l)
    assert bool(jnp.isfinite(gi).all())


@pytest.mark.parametrize("name", ["sech2", "dlogistic"])
def test_derivative_functions_inflection_gaps_hold_the_inflection_points(name):
    # the irrational inflection points lie inside the exact dyadic gaps
    s = S.SMOOTH[name]
    ctx.prec = 200
    z = (1 / arb(3).sqrt()).atanh() * (1 if name == "sech2" else 2)
    for c, sign in zip(s.inflections, (-1, 1), strict=True):
        lo = fmpq(*Fraction(c - s.inflection_err).as_integer_ratio())
        hi = fmpq(*Fraction(c + s.inflection_err).as_integer_ratio())
        assert arb(lo) < sign * z < arb(hi)


def test_derivative_functions_cover_the_programs_absolute_error():
    """1 - tanh(x)^2 from a rounded tanh has an error that does not shrink with the result (in
    the tails the program returns 0 where sech^2 x ~ 1e-7): the intervals hold the program's
    values on boxes in the tails and around the inflection points."""
    rng = np.random.default_rng(3)
    cases = {
        "sech2": [(7.9, 8.1), (-9.3, -8.7), (15, 40), (0.6584, 0.6586), (-1e-6, 1e-6), (3, 3)],
        "dlogistic": [(15, 17), (-40, -30), (1.31, 1.32), (80, 90), (-1e-6, 2e-6), (3, 3)],
    }
    for name, bs in cases.items():
        check_boxes(name, [(_f32(lo), _f32(hi)) for lo, hi in bs], rng, jit=True)
