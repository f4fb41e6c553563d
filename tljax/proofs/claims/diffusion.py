"""Machine-checked claims about `tljax.diffusion` (registered with `tljax.proofs`).

Exact claims run on Python `Fraction`s built from the schedules' float64 betas (each float is an
exact dyadic rational). Symbolic claims run the library's own coefficient functions
(`posterior_coefficients`, `ddim_coefficients`, `convert_core`), which use only `+ - * /` and a
supplied `sqrt`, on sympy expressions. They parameterise a step t -> s (s < t) by positive symbols
u, w with alpha_bar_s = 1 / (1 + u) and alpha_bar_t / alpha_bar_s = 1 / (1 + w), which covers
every 0 < alpha_bar_t < alpha_bar_s < 1 (s = 0, where alpha_bar_s = 1, is the limit u -> 0 and is
not covered). Square roots are taken as `sympy.sqrt(sympy.factor(e))` so that sympy sees the
positive factors.

Each `check_*` function takes the formula under test as an argument, so tests can hand it a
deliberately wrong variant and see the claim refuted with a counterexample.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import sympy

from tljax.diffusion import (
    PARAMETERIZATIONS,
    StepCoefficients,
    convert_core,
    cosine_betas,
    cosine_schedule,
    ddim_coefficients,
    linear_betas,
    linear_schedule,
    posterior_coefficients,
)

from .._claims import Evidence, claim

_ABOUT = "tljax.diffusion"
_TAGS = ("diffusion",)
T_EXACT = 1000


def _float64_betas(kind: str) -> np.ndarray:
    """The float64 betas the library builds `linear_schedule(T)` / `cosine_schedule(T)` from."""
    return linear_betas(T_EXACT) if kind == "linear" else cosine_betas(T_EXACT)


def _default_closed_form(alpha_bar: Fraction) -> tuple[Fraction, Fraction]:
    return alpha_bar, 1 - alpha_bar


def check_forward_composition(
    betas, closed_form: Callable[[Fraction], tuple[Fraction, Fraction]] = _default_closed_form
) -> Evidence:
    """Closed form of q(x_t | x_0) vs the composition of one-step kernels, exactly, for all t.

    A Gaussian kernel x -> N(c x, v) is kept as (c^2, v) so that everything stays rational;
    composing it with the one-step kernel q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) gives
    (alpha_t c^2, alpha_t v + beta_t). The closed form maps alpha_bar_t = prod_{s<=t}(1 - beta_s)
    to (squared mean coefficient, variance), by default (alpha_bar_t, 1 - alpha_bar_t).
    """
    c2, v, alpha_bar = Fraction(1), Fraction(0), Fraction(1)
    for t, b in enumerate(betas, start=1):
        beta = Fraction(float(b))
        alpha = 1 - beta
        c2, v = alpha * c2, alpha * v + beta
        alpha_bar *= alpha
        m2_closed, v_closed = closed_form(alpha_bar)
        if m2_closed != c2 or v_closed != v:
            return Evidence(
                False,
                f"mismatch at t={t}",
                {
                    "t": t,
                    "composed (mean coef^2, var)": (float(c2), float(v)),
                    "closed form": (float(m2_closed), float(v_closed)),
                },
            )
    return Evidence(
        True, f"{len(betas)}/{len(betas)} steps: mean coef^2 and variance equal exactly"
    )


def _within(stored: float, num: int, den: int, bound: Fraction) -> bool:
    """Exactly: |stored - num/den| <= bound * num/den, with integers only (num, den > 0).

    Cross-multiplied so that no gcd of the ~60,000-bit numbers is ever taken.
    """
    sn, sd = float(stored).as_integer_ratio()
    return abs(sn * den - num * sd) * bound.denominator <= bound.numerator * num * sd


def check_table_accuracy(schedule, betas) -> Evidence:
    """Stored tables vs exact rationals from the same float64 betas, for every t = 1..T.

    Compared exactly in integer arithmetic: |stored - exact| <= (2^-24 + 16 (t + 1) 2^-53) * exact
    for alpha_bar_t, 1 - alpha_bar_t and beta_tilde_t (one float32 rounding plus a float64 error
    allowance far above the (2t+1), 3t and 8t+4 unit roundoffs of the three float64 computations).
    alpha_bar_t is a dyadic rational A / 2^E kept as the integer pair (A, E).
    """
    tables = {
        "alpha_bars": np.asarray(schedule.alpha_bars, dtype=np.float64),
        "one_minus_alpha_bars": np.asarray(schedule.one_minus_alpha_bars, dtype=np.float64),
        "beta_tildes": np.asarray(schedule.beta_tildes, dtype=np.float64),
    }
    if tables["beta_tildes"][1] != 0.0:
        return Evidence(
            False, "beta_tilde_1 must be exactly 0", {"stored": tables["beta_tildes"][1]}
        )
    a_prev, e_prev = 1, 0  # alpha_bar_0 = 1
    worst = 0.0
    for t, b in enumerate(betas, start=1):
        bn, bd = float(b).as_integer_ratio()
        a, e = a_prev * (bd - bn), e_prev + bd.bit_length() - 1  # alpha_bar_t = a / 2^e
        one_minus = (1 << e) - a
        exact = {
            "alpha_bars": (a, 1 << e),
            "one_minus_alpha_bars": (one_minus, 1 << e),
            # (1 - ab_{t-1}) / (1 - ab_t) * beta_t; zero at t = 1, checked above.
            "beta_tildes": (((1 << e_prev) - a_prev) * bn << e, one_minus * bd << e_prev),
        }
        bound = Fraction(1, 2**24) + Fraction(16 * (t + 1), 2**53)
        for name, (num, den) in exact.items():
            if num == 0:
                continue
            stored = tables[name][t]
            if not _within(stored, num, den, bound):
                return Evidence(
                    False,
                    f"{name}[{t}] is off by more than the bound",
                    {"table": name, "t": t, "stored": float(stored), "exact": num / den},
                )
            # Float estimate of the relative error, for the report only.
            worst = max(worst, abs(float(stored) / (num / den) - 1.0))
        a_prev, e_prev = a, e
    return Evidence(
        True, f"3 tables x {len(betas)} steps within bound; worst relative error ~{worst:.3g}"
    )


def _symbolic_step() -> tuple[StepCoefficients, tuple[sympy.Symbol, ...]]:
    u, w = sympy.symbols("u w", positive=True)
    c = StepCoefficients(
        alpha_bar_t=1 / ((1 + u) * (1 + w)),
        alpha_bar_s=1 / (1 + u),
        one_minus_alpha_bar_t=(u + w + u * w) / ((1 + u) * (1 + w)),
        one_minus_alpha_bar_s=u / (1 + u),
        ratio=1 / (1 + w),
        one_minus_ratio=w / (1 + w),
    )
    return c, (u, w)


def _sqrt(e):
    return sympy.sqrt(sympy.factor(e))


def _is_zero(e) -> bool:
    return sympy.simplify(sympy.factor(sympy.simplify(e))) == 0


_SAMPLE = {"u": Fraction(1, 3), "w": Fraction(1, 7), "x0": 1, "xt": 2, "x0_hat": 1, "p": 1}


def _at_sample(e, symbols):
    subs = {s: sympy.Rational(str(_SAMPLE[s.name])) for s in symbols if s.name in _SAMPLE}
    return float(sympy.N(e.subs(subs), 30))


def check_step_parameterisation() -> Evidence:
    """The symbolic step's fields are consistent (complements, ratio = alpha_bar_t/alpha_bar_s)."""
    c, _ = _symbolic_step()
    ok = (
        _is_zero(c.one_minus_alpha_bar_t - (1 - c.alpha_bar_t))
        and _is_zero(c.one_minus_alpha_bar_s - (1 - c.alpha_bar_s))
        and _is_zero(c.ratio - c.alpha_bar_t / c.alpha_bar_s)
        and _is_zero(c.one_minus_ratio - (1 - c.ratio))
    )
    return Evidence(ok, "symbolic step fields consistent" if ok else "inconsistent symbolic step")


def check_posterior(coefficients: Callable = posterior_coefficients) -> Evidence:
    """Derives q(x_s | x_t, x_0) by completing the square and compares with `coefficients`.

    log q(x_s | x_t, x_0) = log q(x_t | x_s) + log q(x_s | x_0) + const, with
    q(x_t | x_s) = N(sqrt(ratio) x_s, 1 - ratio) and q(x_s | x_0) = N(sqrt(alpha_bar_s) x_0,
    1 - alpha_bar_s). Writing it as A y^2 + B y + C in y = x_s gives variance -1/(2A) and mean
    -B/(2A); the remainder after subtracting -(y - mean)^2 / (2 variance) must not depend on y.
    """
    c, (u, w) = _symbolic_step()
    y, x0, xt = sympy.symbols("y x0 xt", real=True)
    logp = -((xt - _sqrt(c.ratio) * y) ** 2) / (2 * c.one_minus_ratio) - (
        (y - _sqrt(c.alpha_bar_s) * x0) ** 2
    ) / (2 * c.one_minus_alpha_bar_s)
    poly = sympy.Poly(sympy.expand(logp), y)
    if poly.degree() != 2:
        return Evidence(False, f"log-density is not quadratic in x_s (degree {poly.degree()})")
    a2, a1 = poly.coeff_monomial(y**2), poly.coeff_monomial(y)
    var_derived = -1 / (2 * a2)
    mean_derived = -a1 / (2 * a2)
    square_ok = _is_zero(sympy.diff(logp + (y - mean_derived) ** 2 / (2 * var_derived), y))
    coef_x0, coef_xt, var_lib = coefficients(c, _sqrt)
    mean_lib = coef_x0 * x0 + coef_xt * xt
    syms = (u, w, x0, xt)
    var_ok = _is_zero(var_lib - var_derived)
    mean_ok = _is_zero(mean_lib - mean_derived)
    if square_ok and var_ok and mean_ok:
        return Evidence(
            True, "completed square; mean and variance minus closed forms simplify to 0"
        )
    return Evidence(
        False,
        "closed form differs from the completed square"
        + ("" if square_ok else " (square not completed)"),
        {
            "at": {k: str(v) for k, v in _SAMPLE.items() if k in ("u", "w", "x0", "xt")},
            "variance (closed form, derived)": (
                _at_sample(var_lib, syms),
                _at_sample(var_derived, syms),
            ),
            "mean (closed form, derived)": (
                _at_sample(mean_lib, syms),
                _at_sample(mean_derived, syms),
            ),
        },
    )


def check_ddim_eta_one(
    ddim: Callable = ddim_coefficients,
    posterior: Callable = posterior_coefficients,
    convert: Callable = convert_core,
) -> Evidence:
    """DDIM with eta = 1 vs the DDPM posterior at x0_hat, symbolically, for a step t -> s.

    eps_hat is obtained from (x_t, x0_hat) by `convert` (x0 -> epsilon at time t). Checks:
    sigma^2 == beta_tilde, sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat ==
    posterior mean at x0_hat; and, for symbolic eta, coef_eps^2 + sigma^2 == 1 - alpha_bar_s (DDIM
    keeps the marginal variance for every eta).
    """
    c, (u, w) = _symbolic_step()
    xt, x0h = sympy.symbols("xt x0_hat", real=True)
    eta = sympy.Symbol("eta", nonnegative=True)
    a_t, s_t = _sqrt(c.alpha_bar_t), _sqrt(c.one_minus_alpha_bar_t)
    eps_hat = convert(a_t, s_t, xt, x0h, "x0", "epsilon")
    coef_x0, coef_eps, sigma2 = ddim(c, 1, _sqrt)
    p_x0, p_xt, p_var = posterior(c, _sqrt)
    var_ok = _is_zero(sigma2 - p_var)
    mean_ddim = coef_x0 * x0h + coef_eps * eps_hat
    mean_post = p_x0 * x0h + p_xt * xt
    mean_ok = _is_zero(mean_ddim - mean_post)
    _, coef_eps_eta, sigma2_eta = ddim(c, eta, _sqrt)
    marginal_ok = _is_zero(coef_eps_eta**2 + sigma2_eta - c.one_minus_alpha_bar_s)
    if var_ok and mean_ok and marginal_ok:
        return Evidence(True, "sigma^2 - beta_tilde and mean difference simplify to 0")
    syms = (u, w, xt, x0h)
    return Evidence(
        False,
        "DDIM(eta=1) differs from the DDPM posterior",
        {
            "at": {k: str(v) for k, v in _SAMPLE.items() if k in ("u", "w", "xt", "x0_hat")},
            "sigma^2 vs beta_tilde": (_at_sample(sigma2, syms), _at_sample(p_var, syms)),
            "mean DDIM vs posterior": (_at_sample(mean_ddim, syms), _at_sample(mean_post, syms)),
        },
    )


def check_conversions(convert: Callable = convert_core) -> Evidence:
    """Every pair of parameterisations converts both ways to the identity, and conversions agree
    with x_t = a x_0 + s eps, v = a eps - s x_0, score = -eps / s (a = sqrt(alpha_bar),
    s = sqrt(1 - alpha_bar), alpha_bar = 1 / (1 + u) symbolic)."""
    u = sympy.Symbol("u", positive=True)
    x0, eps, p = sympy.symbols("x0 eps p", real=True)
    a, s = _sqrt(1 / (1 + u)), _sqrt(u / (1 + u))
    xt = a * x0 + s * eps
    truth = {"epsilon": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}
    checked = 0
    for src, tgt in itertools.product(PARAMETERIZATIONS, repeat=2):
        round_trip = convert(a, s, xt, convert(a, s, xt, p, src, tgt), tgt, src)
        if not _is_zero(round_trip - p):
            return Evidence(
                False,
                f"{src} -> {tgt} -> {src} is not the identity",
                {"pair": (src, tgt), "p=1, u=1/3, x0=1, eps=1/2": _sub(round_trip, u, x0, eps, p)},
            )
        forward = convert(a, s, xt, truth[src], src, tgt)
        if not _is_zero(forward - truth[tgt]):
            return Evidence(
                False,
                f"{src} -> {tgt} disagrees with the definitions",
                {
                    "pair": (src, tgt),
                    "got at u=1/3, x0=1, eps=1/2": _sub(forward, u, x0, eps, p),
                    "want": _sub(truth[tgt], u, x0, eps, p),
                },
            )
        checked += 2
    return Evidence(True, f"{checked} identities simplify to 0 (16 round trips, 16 consistency)")


def _sub(e, u, x0, eps, p):
    return float(
        sympy.N(e.subs({u: sympy.Rational(1, 3), x0: 1, eps: sympy.Rational(1, 2), p: 1}), 30)
    )


# ---------------------------------------------------------------------------------------------
# Registered claims
# ---------------------------------------------------------------------------------------------


@claim(
    "diffusion: closed-form q(x_t|x_0) equals the composed one-step kernels",
    "For the linear (1e-4..0.02) and cosine (s=0.008, clip 0.999) schedules with T=1000, for "
    "every t, composing q(x_1|x_0), ..., q(x_t|x_{t-1}) gives N(sqrt(alpha_bar_t) x_0, "
    "(1-alpha_bar_t) I) "
    "with alpha_bar_t = prod(1-beta_s) (squared mean coefficient and variance compared).",
    "exact-all",
    about=_ABOUT,
    tags=_TAGS,
    scope="general",
)
def forward_composition() -> Evidence:
    details = []
    for kind in ("linear", "cosine"):
        ev = check_forward_composition(_float64_betas(kind))
        if not ev.holds:
            return Evidence(False, f"{kind}: {ev.detail}", ev.counterexample)
        details.append(f"{kind}: {ev.detail}")
    return Evidence(True, "; ".join(details) + " (Fractions of the float64 betas)")


@claim(
    "diffusion: stored float32 tables are within one rounding of the exact values",
    "The stored alpha_bar_t, 1 - alpha_bar_t and beta_tilde_t of linear_schedule(1000) and "
    "cosine_schedule(1000) are within relative 2^-24 + 16(t+1) 2^-53 of the exact rationals "
    "computed from the same float64 betas, for every t = 1..1000.",
    "exact-all",
    about=_ABOUT,
    tags=_TAGS,
    scope="general",
)
def table_accuracy() -> Evidence:
    details = []
    for kind, build in (("linear", linear_schedule), ("cosine", cosine_schedule)):
        sched = build(T_EXACT)
        betas = _float64_betas(kind)
        if not np.array_equal(np.asarray(sched.betas[1:]), betas.astype(np.float32)):
            return Evidence(
                False, f"{kind}: the schedule's betas are not the checked float64 betas"
            )
        ev = check_table_accuracy(sched, betas)
        if not ev.holds:
            return Evidence(False, f"{kind}: {ev.detail}", ev.counterexample)
        details.append(f"{kind}: {ev.detail}")
    return Evidence(True, "; ".join(details))


@claim(
    "diffusion: posterior q(x_{t-1}|x_t,x_0) mean and variance",
    "posterior_coefficients gives the mean sqrt(ab_s)(1-r)/(1-ab_t) x_0 + sqrt(r)(1-ab_s)/(1-ab_t) "
    "x_t and variance (1-ab_s)/(1-ab_t)(1-r) of the Gaussian obtained by completing the square in "
    "q(x_t|x_s) q(x_s|x_0), for all 0 < ab_t < ab_s < 1 (r = ab_t/ab_s; s = t-1 is DDPM's case).",
    "symbolic",
    about=_ABOUT,
    tags=_TAGS,
    scope="general",
)
def posterior() -> Evidence:
    pre = check_step_parameterisation()
    if not pre.holds:
        return pre
    return check_posterior()


@claim(
    "diffusion: DDIM with eta=1 is the DDPM posterior step",
    "ddim_coefficients with eta=1 gives sigma^2 = beta_tilde and the mean sqrt(ab_s) x0_hat + "
    "sqrt(1-ab_s-sigma^2) eps_hat equal to the posterior mean at x0_hat (eps_hat from x_t, "
    "x0_hat); "
    "for every eta, coef_eps^2 + sigma^2 = 1 - ab_s.",
    "symbolic",
    about=_ABOUT,
    tags=_TAGS,
    scope="general",
)
def ddim_eta_one() -> Evidence:
    return check_ddim_eta_one()


@claim(
    "diffusion: epsilon / x0 / v / score conversions are mutually inverse",
    "convert_core(source -> target) followed by (target -> source) is the identity for all 16 "
    "ordered pairs, and each conversion maps the true eps, x_0, v, score of x_t = a x_0 + s eps to "
    "each other, for all 0 < alpha_bar < 1.",
    "symbolic",
    about=_ABOUT,
    tags=_TAGS,
    scope="general",
)
def conversions() -> Evidence:
    return check_conversions()


CLAIMS = (forward_composition, table_accuracy, posterior, ddim_eta_one, conversions)
