"""Machine-checked claims about the self-supervised objectives in `tljax.objectives._ssl`.

Method used by the exact claims: the library's float32 functions are run (eagerly) on dyadic
inputs chosen so that every intermediate value is exactly representable (sums of small dyadics,
divisions by 1, 2 or 4, square roots of perfect dyadic squares; division and sqrt are correctly
rounded on XLA:CPU), and the float results are compared exactly, as Fractions, with values or
conditions computed independently in rational arithmetic. Where a square root appears in a
condition, squares are compared instead (sqrt(v + eps) >= gamma <=> v + eps >= gamma^2 for
gamma >= 0).

Each `check_*` function takes the implementation under test as an argument, so tests can pass a
deliberately wrong variant and see the claim refuted with a counterexample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from tljax.objectives import (
    barlow_twins_cross_correlation,
    barlow_twins_loss,
    barlow_twins_loss_from_correlation,
    mae_num_kept,
    mask_from_ranks,
    vicreg_terms,
    vicreg_variance_term,
)

from .._claims import Evidence, claim

_ABOUT = "tljax.objectives (self-supervised)"
_TAGS = ("ssl", "objectives")
F = Fraction


def _array(columns: Sequence[Sequence[Fraction]]) -> jnp.ndarray:
    """Columns of Fractions -> float32 array (n, d); raises if a value is not exactly float32."""
    arr = np.array([[float(v) for v in col] for col in columns], dtype=np.float32).T
    for col, got in zip(columns, arr.T, strict=True):
        if [Fraction(float(x)) for x in got] != list(col):
            raise ValueError(f"case value not exactly representable in float32: {col}")
    return jnp.asarray(arr)


def _unbiased_var(col: Sequence[Fraction]) -> Fraction:
    n = len(col)
    m = sum(col, F(0)) / n
    return sum(((x - m) ** 2 for x in col), F(0)) / (n - 1)


def _exact_sqrt(q: Fraction) -> Fraction:
    """Square root of a rational that is a perfect square (raises otherwise)."""
    rn, rd = math.isqrt(q.numerator), math.isqrt(q.denominator)
    if rn * rn != q.numerator or rd * rd != q.denominator:
        raise ValueError(f"{q} is not a perfect square")
    return F(rn, rd)


# ---------------------------------------------------------------------------------------------
# VICReg variance term: zero iff Var + eps >= gamma^2 in every dimension
# ---------------------------------------------------------------------------------------------


def vicreg_variance_cases() -> list[tuple[list[list[Fraction]], Fraction, Fraction, str]]:
    """(columns, eps, gamma, label) cases: a dyadic grid plus named boundary cases."""
    cases = []
    half = F(1, 2)
    # Named boundary cases: Var + eps == gamma^2 exactly, and one step of 2^-10 on each side.
    step = F(1, 1024)
    for label, col, eps, gamma in [
        ("n=2 boundary", [F(0), F(1)], half, F(1)),
        ("n=3 boundary", [F(0), F(3, 4), F(3, 2)], F(7, 16), F(1)),
        ("n=5 boundary", [F(-1), -half, F(0), half, F(1)], F(3, 8), F(1)),
        ("constant column, eps = gamma^2", [F(3)] * 4, F(1), F(1)),
        ("gamma = 0, constant column, eps = 0", [F(2)] * 3, F(0), F(0)),
    ]:
        cases.append(([col], eps, gamma, label))
        if eps >= step:
            cases.append(([col], eps - step, gamma, label + " - 2^-10"))
        cases.append(([col], eps + step, gamma, label + " + 2^-10"))
    # Unbiased vs biased variance: 1/4 (biased) < gamma^2 = 25/64 <= 1/2 (unbiased).
    cases.append(([[F(0), F(1)]], F(0), F(5, 8), "unbiased vs biased"))
    # Several dimensions: zero only if every dimension passes.
    ok_col, bad_col = [F(0), F(2)], [F(0), F(1, 4)]
    cases.append(([ok_col, ok_col, ok_col], F(0), F(1), "3 dims all pass"))
    cases.append(([ok_col, bad_col, ok_col], F(0), F(1), "3 dims, one fails"))
    # Grid: x in {0, 1/8, ..., 2}, columns [0, x] (Var x^2/2) and [0, x, 2x] (Var x^2).
    for k in range(17):
        x = F(k, 8)
        for col in ([F(0), x], [F(0), x, 2 * x]):
            for eps in (F(0), F(1, 16), F(1, 4)):
                for gamma in (half, F(1), F(3, 2)):
                    cases.append(([col], eps, gamma, "grid"))
    return cases


def check_vicreg_variance_zero_iff(variance_term: Callable = vicreg_variance_term) -> Evidence:
    """Runs `variance_term` on every case; compares (result == 0) with the exact condition."""
    cases = vicreg_variance_cases()
    n_zero = n_boundary = 0
    for columns, eps, gamma, label in cases:
        condition = all(_unbiased_var(col) + eps >= gamma**2 for col in columns)
        value = float(variance_term(_array(columns), gamma=float(gamma), eps=float(eps)))
        if (value == 0.0) != condition:
            return Evidence(
                False,
                f"case '{label}': term {'is' if value == 0 else 'is not'} 0 but Var + eps >= "
                f"gamma^2 is {condition}",
                {
                    "columns": [[str(v) for v in c] for c in columns],
                    "eps": str(eps),
                    "gamma": str(gamma),
                    "unbiased Var + eps": [str(_unbiased_var(c) + eps) for c in columns],
                    "gamma^2": str(gamma**2),
                    "term": value,
                },
            )
        n_zero += condition
        n_boundary += any(_unbiased_var(c) + eps == gamma**2 for c in columns)
    return Evidence(
        True,
        f"{len(cases)} cases agree ({n_zero} zero, {len(cases) - n_zero} positive, "
        f"{n_boundary} exactly on the boundary)",
    )


# ---------------------------------------------------------------------------------------------
# Barlow Twins: zero at C = I
# ---------------------------------------------------------------------------------------------


# Each new shape costs a compilation per primitive, so the identity sizes are a spread, not 1..64.
BARLOW_DIMS = (1, 2, 3, 8, 64)
HADAMARD_SIZES = (2, 4, 8, 64)


def _sylvester_hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def check_barlow_identity(
    loss_from_correlation: Callable = barlow_twins_loss_from_correlation,
    cross_correlation: Callable = barlow_twins_cross_correlation,
    loss: Callable = barlow_twins_loss,
) -> Evidence:
    """Loss at C = I is 0; embeddings with C = I give 0; dyadic perturbations give the exact value.

    (1) `loss_from_correlation(I_d)` for d in `BARLOW_DIMS`. (2) z = the n x (n-1)
    Sylvester-Hadamard columns 2..n (entries +-1, zero mean, unit biased variance, orthogonal),
    n in `HADAMARD_SIZES`: with eps = 0 the cross-correlation is exactly I and the loss exactly 0.
    (3) C = I + delta E_ij, delta = 2^-k: the loss is exactly delta^2 (i = j) or lambda delta^2
    (i != j), lambda = 2^-7, so C = I is the only zero among them.

    The functions run under `jax.jit` here (one compilation per shape instead of one per
    primitive); every value is a small dyadic and the only divisions are by powers of 2, so fusion
    and reassociation stay exact.
    """
    lam = F(1, 128)
    loss_from_correlation = jax.jit(loss_from_correlation)
    cross_correlation = jax.jit(cross_correlation)
    loss = jax.jit(loss)
    for d in BARLOW_DIMS:
        value = float(loss_from_correlation(jnp.eye(d, dtype=jnp.float32), lambda_=float(lam)))
        if value != 0.0:
            return Evidence(False, f"loss at C = I_{d} is {value}", {"d": d, "loss": value})
    for n in HADAMARD_SIZES:
        z = jnp.asarray(_sylvester_hadamard(n)[:, 1:], dtype=jnp.float32)
        c = np.asarray(cross_correlation(z, z, eps=0.0))
        value = float(loss(z, z, lambda_=float(lam), eps=0.0))
        if not np.array_equal(c, np.eye(n - 1)) or value != 0.0:
            return Evidence(
                False,
                f"Hadamard embeddings n={n}: C == I is {np.array_equal(c, np.eye(n - 1))}, "
                f"loss {value}",
                {"n": n, "max |C - I|": float(np.abs(c - np.eye(n - 1)).max()), "loss": value},
            )
    d = 4
    for k in (1, 3, 6):
        delta = F(1, 2**k)
        for i in range(d):
            for j in range(d):
                c = np.eye(d, dtype=np.float32)
                c[i, j] += float(delta)
                want = delta**2 if i == j else lam * delta**2
                got = F(float(loss_from_correlation(jnp.asarray(c), lambda_=float(lam))))
                if got != want:
                    return Evidence(
                        False,
                        f"perturbed identity (i={i}, j={j}, delta={delta}) gives {got}, not {want}",
                        {"i": i, "j": j, "delta": str(delta), "got": str(got), "want": str(want)},
                    )
    return Evidence(
        True,
        f"I_d -> 0 for d in {BARLOW_DIMS}; Hadamard n in {HADAMARD_SIZES} -> C == I, loss 0; "
        "48 perturbations exact",
    )


# ---------------------------------------------------------------------------------------------
# MAE kept-patch count
# ---------------------------------------------------------------------------------------------

MAE_LENGTHS = range(1, 257)
MAE_RATIO_TWENTIETHS = range(0, 20)  # ratios 0.0, 0.05, ..., 0.95 (0.75 is 15/20)


def _round_half_even(num: int, den: int) -> int:
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q % 2 == 1):
        return q + 1
    return q


def check_mae_counts(
    num_kept: Callable = mae_num_kept, mask_rule: Callable = mask_from_ranks
) -> Evidence:
    """For every (L, ratio): `num_kept` equals round-half-even(L (20 - k) / 20) computed with
    integers, and the mask rule applied to the ranks of a random permutation (numpy) marks exactly
    that many patches visible and L - K masked."""
    rng = np.random.default_rng(0)
    pairs = 0
    for length in MAE_LENGTHS:
        ranks = np.argsort(rng.permutation(length))
        for k in MAE_RATIO_TWENTIETHS:
            ratio = k / 20  # the float a user writes as 0.05 * k
            want = _round_half_even(length * (20 - k), 20)
            got = num_kept(length, ratio)
            mask = np.asarray(mask_rule(ranks, got))
            visible, masked = int((~mask).sum()), int(mask.sum())
            if got != want or visible != want or masked != length - want:
                return Evidence(
                    False,
                    f"L={length}, ratio={ratio}: kept count {got} (want {want}), mask has "
                    f"{visible} visible / {masked} masked",
                    {
                        "L": length,
                        "ratio": ratio,
                        "num_kept": got,
                        "want": want,
                        "visible": visible,
                        "masked": masked,
                    },
                )
            pairs += 1
    return Evidence(True, f"{pairs} (L, ratio) pairs: count and mask exact (L=1..256, 20 ratios)")


# ---------------------------------------------------------------------------------------------
# Collapsed embeddings
# ---------------------------------------------------------------------------------------------


def check_collapse(
    terms: Callable = vicreg_terms, barlow: Callable = barlow_twins_loss
) -> Evidence:
    """Collapsed embeddings give the closed-form VICReg and Barlow Twins losses exactly.

    Complete collapse (all rows equal, n rows, d dims): VICReg invariance 0, covariance 0, each
    branch's variance term gamma - sqrt(eps) (when sqrt(eps) < gamma), so loss = mu (gamma -
    sqrt(eps)) with the official convention and 2 mu (gamma - sqrt(eps)) with the paper's;
    Barlow Twins (eps > 0) has C = 0 and loss = d. Dimensional collapse (all d columns equal one
    column u): VICReg has per-branch c(Z) = (d - 1) Var(u)^2 and variance term
    max(0, gamma - sqrt(Var(u) + eps)); Barlow Twins with eps = 0 has C = all ones, loss =
    lambda d (d - 1).
    """
    std_coeff, cov_coeff = 25, 1  # the defaults of vicreg_terms
    checks = []
    row = [F(1, 2), F(-3), F(5, 4)]
    n, d = 4, len(row)
    z = _array([[v] * n for v in row])
    for eps in (F(1, 16), F(0), F(1, 4)):
        hinge = max(F(0), 1 - _exact_sqrt(eps))
        for conv, factor in (("official", 1), ("paper", 2)):
            checks.append(
                (
                    f"complete collapse, VICReg {conv}, eps={eps}",
                    terms(z, z, gamma=1.0, eps=float(eps), variance_convention=conv).loss,
                    std_coeff * factor * hinge,
                )
            )
        if eps > 0:
            checks.append(
                (
                    f"complete collapse, Barlow, eps={eps}",
                    barlow(z, z, lambda_=1 / 128, eps=float(eps)),
                    F(d),
                )
            )
    # Dimensional collapse, VICReg: u = [0, 1/2, 1] (Var 1/4), d = 4 copies.
    u = [F(0), F(1, 2), F(1)]
    v, d = _unbiased_var(u), 4
    z = _array([u] * d)
    for eps in (F(0), F(3, 4)):
        hinge = max(F(0), 1 - _exact_sqrt(v + eps))
        cov = 2 * (d - 1) * v**2
        for conv, factor in (("official", 1), ("paper", 2)):
            checks.append(
                (
                    f"dimensional collapse, VICReg {conv}, eps={eps}",
                    terms(z, z, gamma=1.0, eps=float(eps), variance_convention=conv).loss,
                    std_coeff * factor * hinge + cov_coeff * cov,
                )
            )
    # Dimensional collapse, Barlow: u = [-1, -1, 1, 1] (mean 0, biased variance 1), d = 4.
    z = _array([[F(-1), F(-1), F(1), F(1)]] * 4)
    checks.append(
        (
            "dimensional collapse, Barlow, eps=0",
            barlow(z, z, lambda_=1 / 128, eps=0.0),
            F(1, 128) * 4 * 3,
        )
    )
    for label, got, want in checks:
        got = F(float(got))
        if got != want:
            return Evidence(
                False,
                f"{label}: loss {got} != closed form {want}",
                {"case": label, "loss": str(got), "closed form": str(want)},
            )
    return Evidence(True, f"{len(checks)} collapsed cases equal their closed forms exactly")


# ---------------------------------------------------------------------------------------------
# Registered claims
# ---------------------------------------------------------------------------------------------


@claim(
    "ssl: VICReg variance term is zero iff unbiased Var + eps >= gamma^2 in every dimension "
    "(enumerated cases)",
    "vicreg_variance_term(z) == 0 exactly when Var_unbiased(z^j) + eps >= gamma^2 for all j "
    f"(checked on {len(vicreg_variance_cases())} enumerated dyadic cases: a grid, exact "
    "boundaries and +-2^-10 around them, a case separating unbiased from biased variance, "
    "multi-dimensional cases).",
    "exact-enumerated",
    about=_ABOUT,
    tags=_TAGS,
    scope="family",
    family="vicreg_variance_cases()",
)
def vicreg_variance_zero_iff() -> Evidence:
    return check_vicreg_variance_zero_iff()


@claim(
    "ssl: Barlow Twins loss is zero when the cross-correlation is the identity",
    f"barlow_twins_loss_from_correlation(I_d) == 0 for d in {BARLOW_DIMS}; orthogonal +-1 "
    f"embeddings (n in {HADAMARD_SIZES}) give C == I and loss 0 (eps = 0); dyadic perturbations "
    "I + delta E_ij give exactly delta^2 or lambda delta^2 (on the listed dims, sizes and "
    "perturbations).",
    "exact-enumerated",
    about=_ABOUT,
    tags=_TAGS,
    scope="family",
    family=f"d in {BARLOW_DIMS}, Hadamard n in {HADAMARD_SIZES}, enumerated dyadic perturbations",
)
def barlow_identity() -> Evidence:
    return check_barlow_identity()


@claim(
    "ssl: MAE kept-patch count is exact",
    "For every L in 1..256 and mask ratio in {0.0, 0.05, ..., 0.95} (0.75 included), "
    "mae_num_kept(L, ratio) == round-half-even(L (1 - ratio)) with the ratio read as its decimal, "
    "and the library's mask rule over a permutation's ranks keeps exactly that many patches "
    "(mask rule evaluated on numpy arrays; tests check the JAX path on a sample).",
    "exact-all",
    about=_ABOUT,
    tags=_TAGS,
    scope="general",
)
def mae_counts() -> Evidence:
    return check_mae_counts()


@claim(
    "ssl: collapsed embeddings give the predicted VICReg and Barlow Twins losses",
    "Completely collapsed embeddings give VICReg loss mu (gamma - sqrt eps) (official; twice that "
    "with the paper's convention) and Barlow loss d; dimensionally collapsed ones give VICReg "
    "mu hinge + 2 (d-1) Var^2 and Barlow lambda d (d-1) (eps = 0), exactly, on enumerated "
    "dyadic cases.",
    "exact-enumerated",
    about=_ABOUT,
    tags=_TAGS,
    scope="family",
    family="the enumerated dyadic cases of check_collapse()",
)
def collapse() -> Evidence:
    return check_collapse()


CLAIMS = (vicreg_variance_zero_iff, barlow_identity, mae_counts, collapse)
