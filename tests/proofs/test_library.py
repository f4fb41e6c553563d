"""Every library claim runs; wrong subjects are reported false with a counterexample."""

import jax.numpy as jnp
import pytest

from tljax.proofs import _library as lib
from tljax.proofs._claims import registry, run_claim

LIBRARY = sorted(n for n, c in registry().items() if c.check.__module__ == lib.__name__)

# Claims expected to hold. The others are findings about other modules (see the claim's detail):
# they must run and, when false, name a counterexample.
EXPECTED_TO_HOLD = {
    "flash-attention-equals-softmax-attention",
    "softmax-shift-invariant",
    "softmax-rows-sum-to-one",
    "parallel-scan-equals-sequential",
    "scan-operator-associative",
    "crown-relu-relaxation-symbolic",
    "crown-tanh-relaxation-sound",
    "crown-sigmoid-relaxation-sound",
    "ibp-affine-equals-exact-range",
    "float-emulation-correctly-rounded",
    "reference-equals-eager",
    "jax-ad-rules-agree-with-sympy",
    "grad-exact-mlp-and-softmax",
}


def test_library_registers_the_promised_claims():
    assert EXPECTED_TO_HOLD | {"crown-relu-relaxation-sound", "reference-equals-jit"} == set(
        LIBRARY
    )
    for name in LIBRARY:
        c = registry()[name]
        assert (
            c.method in ("symbolic", "exact-all", "exact-enumerated", "certified-bound")
            and c.statement
        )


@pytest.mark.parametrize("name", LIBRARY)
def test_claim(name):
    r = run_claim(registry()[name])
    if r.error is not None and r.error.startswith("Unavailable"):
        pytest.skip(f"subject not installed: {r.error}")
    assert r.error is None, r.error
    if name in EXPECTED_TO_HOLD:
        assert r.holds, r.evidence
    else:
        assert r.holds or r.evidence.counterexample is not None
    assert r.evidence.detail


# ----------------------------------------------------------------------------------------------
# Teeth: wrong subjects are caught.


def _test_flash(
    q, k, v, *, block_q, block_k, is_causal=False, scale=1.0, exp=jnp.exp, rescale=True
):
    """An independent small FlashAttention (unbatched (T, N, H)); `rescale=False` is the bug."""
    del block_q  # query tiling does not change the arithmetic
    T, S = q.shape[0], k.shape[0]
    s = jnp.einsum("tnh,snh->nts", q, k) * scale
    valid = jnp.tril(jnp.ones((T, S), bool)) if is_causal else jnp.ones((T, S), bool)
    low = jnp.min(s)
    m = jnp.full(s.shape[:2], low)
    l = jnp.zeros(s.shape[:2])
    acc = jnp.zeros((*s.shape[:2], v.shape[2]))
    for j in range(0, S, block_k):
        sb, vb = s[:, :, j : j + block_k], valid[:, j : j + block_k]
        m_new = jnp.maximum(m, jnp.max(jnp.where(vb, sb, low), axis=-1))
        p = jnp.where(vb, exp(jnp.where(vb, sb - m_new[..., None], 0.0)), 0.0)
        alpha = exp(m - m_new)
        l = alpha * l + p.sum(-1)
        acc = (alpha[..., None] * acc if rescale else acc) + jnp.einsum(
            "nts,snh->nth", p, v[j : j + block_k]
        )
        m = m_new
    return (acc / l[..., None]).transpose(1, 0, 2)


def test_flash_checker_accepts_a_correct_independent_flash():
    ev = lib.attention_evidence(_test_flash, _test_flash_reference, lengths=(4,))
    assert ev.holds, ev


def _test_flash_reference(q, k, v, *, is_causal=False, scale=1.0, exp=jnp.exp):
    return _test_flash(
        q, k, v, block_q=q.shape[0], block_k=k.shape[0], is_causal=is_causal, scale=scale, exp=exp
    )


def test_flash_attention_missing_rescale_is_false_with_counterexample():
    flash, ref = lib._attention_fns()

    def buggy(*a, **kw):
        return _test_flash(*a, **kw, rescale=False)

    ev = lib.attention_evidence(buggy, ref, lengths=(4,))
    assert not ev.holds
    cex = ev.counterexample
    assert cex["block_k"] < cex["length"]  # only multi-block runs need the rescale
    assert cex["flash"] != cex["reference"]


def test_parallel_scan_forgetting_h0_is_false():
    from tljax.layers._ssm import linear_recurrence_parallel, linear_recurrence_sequential

    ev = lib.recurrence_evidence(
        lambda a, b, h0: linear_recurrence_parallel(a, b, 0.0 * h0),
        linear_recurrence_sequential,
        lengths=(3,),
    )
    assert not ev.holds and ev.counterexample["length"] == 3


def test_wrong_relu_relaxation_is_false():
    def no_intercept(l, u, alpha=None):
        a_u = u / (u - l)
        return (
            jnp.zeros_like(l),
            jnp.zeros_like(l),
            a_u,
            jnp.zeros_like(l),
        )  # upper intercept missing

    ev = lib.relu_relaxation_evidence(no_intercept, boxes=[(-1.0, 1.0)], alphas=(None,))
    assert not ev.holds and ev.counterexample["x"] == "1"


def test_chord_as_upper_bound_of_tanh_is_false_with_a_point():
    def chord_both(l, u):
        a = (jnp.tanh(u) - jnp.tanh(l)) / (u - l)
        b = jnp.tanh(l) - a * l
        return a, b - 1e-3, a, b  # the chord is below tanh on [0, u]: not an upper bound

    ev = lib.smooth_relaxation_evidence(chord_both, "tanh", boxes=[(0.25, 4.0)])
    assert not ev.holds and ev.detail == "upper line violated"
    assert 0.25 < float(__import__("fractions").Fraction(ev.counterexample["x"])) < 4.0


def test_certify_line_decides_true_false_and_budget():
    from fractions import Fraction as F

    assert (
        lib.certify_line("logistic", F(0), F(1, 2), -1, F(0), F(1))[0] is False
    )  # sigmoid > 1/2 on (0, 1]
    assert lib.certify_line("logistic", F(0), F(0), 1, F(-3), F(3))[0] is True  # sigmoid >= 0
    assert (
        lib.certify_line("tanh", F(1), F(0), -1, F(0), F(1), max_boxes=3)[0] is None
    )  # tanh(x) <= x touches at 0


def test_float_checker_catches_round_toward_zero():
    ev = lib.float_rounding_evidence(
        lambda fmt: f"float[{fmt},rtz]", formats=("fp16",), samples=200
    )
    assert not ev.holds and ev.counterexample["format"] == "fp16"


def test_ibp_checker_catches_loose_bounds():
    bound, Box = lib._bound_fn()

    def loose(fn, box, **kw):
        b = bound(fn, box, **kw)
        return type(b)(b.lower - 0.25, b.upper, method=b.method, float_sound=b.float_sound)

    ev = lib.ibp_affine_evidence(loose, Box, cases=1)
    assert not ev.holds and "exact" in ev.counterexample


def test_reference_checker_reports_each_program():
    progs = [
        ("affine", lambda x: x * 3.0 + 1.0, (jnp.arange(4.0),)),
        ("tanh", jnp.tanh, (jnp.linspace(-2.0, 2.0, 7),)),
    ]
    ev = lib.reference_evidence(progs, against="eager")
    assert ev.holds and "2 programs" in ev.detail


def test_relaxation_without_float_margins_is_caught():
    # float_sound=False lines touch tanh at the critical points up to float32 rounding, so some
    # point of the interval violates them by ~1e-8 over the reals: the certifier must find it.
    relax = lib._relax_module()
    opts = relax.Options(float_sound=False)
    ev = lib.smooth_relaxation_evidence(
        lambda l, u: relax.relax_smooth("tanh", l, u, opts), "tanh", boxes=[(-1.0, 1.0)]
    )
    assert not ev.holds and "line violated" in ev.detail and ev.counterexample["x"]
