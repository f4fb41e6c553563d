"""Every diffusion claim holds; deliberately wrong formulas are refuted with a counterexample."""

import numpy as np
import pytest

import tljax.proofs.claims.diffusion as dc
from tljax.diffusion import (
    StepCoefficients,
    convert_core,
    linear_betas,
    linear_schedule,
    posterior_coefficients,
)
from tljax.proofs import Claim, format_table, registry, run_claim


@pytest.mark.parametrize("c", dc.CLAIMS, ids=lambda c: c.name)
def test_claim_holds(c):
    r = run_claim(c)
    assert r.error is None, r.error
    assert r.holds, r.evidence
    assert c.method in ("symbolic", "exact-all")


def test_claims_are_registered():
    reg = registry()
    assert dc.CLAIMS
    for c in dc.CLAIMS:
        assert reg[c.name] is c
        assert "diffusion" in c.tags


def _refuted(ev):
    assert not ev.holds
    assert ev.counterexample is not None
    return ev


def test_wrong_posterior_variance_is_refuted():
    def beta_instead_of_beta_tilde(c: StepCoefficients, sqrt):
        coef_x0, coef_xt, _ = posterior_coefficients(c, sqrt)
        return coef_x0, coef_xt, c.one_minus_ratio

    ev = _refuted(dc.check_posterior(beta_instead_of_beta_tilde))
    got, want = ev.counterexample["variance (closed form, derived)"]
    assert got != pytest.approx(want)


def test_wrong_posterior_mean_is_refuted():
    def swapped(c: StepCoefficients, sqrt):
        coef_x0, coef_xt, var = posterior_coefficients(c, sqrt)
        return coef_xt, coef_x0, var

    _refuted(dc.check_posterior(swapped))


def test_wrong_ddim_variance_is_refuted():
    def ddim_sigma_is_one_minus_ratio(c, eta, sqrt):
        sigma2 = eta**2 * c.one_minus_ratio
        return sqrt(c.alpha_bar_s), sqrt(c.one_minus_alpha_bar_s - sigma2), sigma2

    _refuted(dc.check_ddim_eta_one(ddim_sigma_is_one_minus_ratio))


def test_wrong_conversion_is_refuted():
    def sign_error_in_v(a, s, x_t, p, source, target):
        if source == "v" and target == "x0":
            return a * x_t + s * p
        return convert_core(a, s, x_t, p, source, target)

    ev = _refuted(dc.check_conversions(sign_error_in_v))
    assert ev.counterexample["pair"] in (("v", "x0"), ("x0", "v"))


def test_wrong_closed_form_is_refuted_at_t1():
    ev = _refuted(
        dc.check_forward_composition(linear_betas(1000), closed_form=lambda ab: (ab, 1 - ab * ab))
    )
    assert ev.counterexample["t"] == 1


def test_tampered_table_is_refuted():
    sched = linear_schedule(1000)
    bad = sched.alpha_bars.at[500].multiply(1 + 1e-6)
    tampered = type(sched)(
        sched.betas,
        sched.alphas,
        bad,
        sched.one_minus_alpha_bars,
        sched.log_alpha_bars,
        sched.beta_tildes,
    )
    ev = _refuted(dc.check_table_accuracy(tampered, linear_betas(1000)))
    assert ev.counterexample == {
        "table": "alpha_bars",
        "t": 500,
        "stored": float(np.float32(bad[500])),
        "exact": pytest.approx(float(sched.alpha_bars[500]), rel=1e-6),
    }


def test_format_table_shows_counterexample():
    wrong = Claim(
        "wrong posterior variance",
        "beta_t is the posterior variance",
        "symbolic",
        lambda: dc.check_posterior(
            lambda c, sqrt: (*posterior_coefficients(c, sqrt)[:2], c.one_minus_ratio)
        ),
    )
    text = format_table([run_claim(wrong)])
    assert "FALSE" in text and "counterexample" in text and "0/1 claims hold" in text
