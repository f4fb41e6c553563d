"""tljax.proofs.certify_policy_region: certified policy regions, checked against independent
references.

References are derived without the code under test: for linear policies the exact minimum of a
linear margin over a box (one endpoint per coordinate); for the trained policy float32 execution
at sampled states and box corners, an exact (rational) coverage check of the leaves written here,
and a direct `tljax.bound` of `policy_logit_margin_fn` over every leaf.
"""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax import rl
from tljax.core import InputError, InvalidBoxError, ShapeMismatchError
from tljax.proofs import certify_policy_region

# Pole leaning and falling right (at 1 to 2 rad/s), cart near the centre and slow: pushing right
# (+10 N) is correct. Not from 0.5 rad/s: at that corner (x = -1, moving left) the trained policy's
# choice depends on the CPU XLA compiles training for (AVX-512: left by 0.8; AVX2: right by 0.75);
# from 1 rad/s its margin is >= 2.3 on both.
FALLING_RIGHT = ([-1.0, -0.5, 0.05, 1.0], [1.0, 0.5, 0.2094, 2.0])


# --- independent helpers -------------------------------------------------------------------------


def _covers_exactly(lo, hi, leaves_lo, leaves_hi) -> bool:
    """Whether closed boxes `leaves` cover the closed box [lo, hi] (non-degenerate), exactly.

    Argument: the leaves lie in the box and have pairwise disjoint interiors, and their volumes
    (as exact rationals of the float64 entries) sum to the box's volume. A point of the box
    outside the (closed) union would have a neighbourhood of positive volume outside it too.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    L, U = np.asarray(leaves_lo, np.float64), np.asarray(leaves_hi, np.float64)
    assert np.all(hi > lo), "the argument needs a non-degenerate box"
    if L.shape[0] == 0 or np.any(L < lo) or np.any(U > hi) or np.any(L > U):
        return False
    # pairwise: some coordinate separates the two boxes (touching faces allowed)
    sep = (U[:, None, :] <= L[None, :, :]) | (U[None, :, :] <= L[:, None, :])
    disjoint = np.any(sep, axis=2)
    np.fill_diagonal(disjoint, True)
    if not np.all(disjoint):
        return False

    def vol(a, b):
        v = Fraction(1)
        for x, y in zip(a, b, strict=True):
            v *= Fraction(float(y)) - Fraction(float(x))
        return v

    return sum(vol(a, b) for a, b in zip(L, U, strict=True)) == vol(lo, hi)


def _f32_outward(lo, hi):
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    lo32 = np.where(lo32 > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = np.where(hi32 < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    return lo32.astype(np.float32), hi32.astype(np.float32)


def _corners(lo, hi):
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    n = lo.shape[0]
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    return np.where(bits == 1, hi, lo).astype(np.float32)


def _linear_params(w, b):
    """A one-layer policy for `rl.policy_logits`: logits = state @ w + b."""
    return {"actor": [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))]}


def _min_linear(c, c0, lo, hi) -> float:
    """min of c @ s + c0 over the box, exactly in float64 (one endpoint per coordinate)."""
    c, lo, hi = (np.asarray(v, np.float64) for v in (c, lo, hi))
    return float(c0 + np.sum(np.minimum(c * lo, c * hi)))


def _in_box(x, lo, hi) -> bool:
    x = np.asarray(x, np.float64)
    return bool(np.all(np.asarray(lo, np.float64) <= x) and np.all(x <= np.asarray(hi, np.float64)))


# Linear 2-action policy: margin(s) = logit1 - logit0 = s @ (w[:, 1] - w[:, 0]) + (b1 - b0).
W2 = np.array([[0.5, -0.5], [0.0, 0.25], [-1.0, 2.0], [0.0, 0.5]], np.float32)
B2 = np.array([0.0, 0.125], np.float32)
C2 = (W2[:, 1] - W2[:, 0]).astype(np.float64)  # (-1, 0.25, 3, 0.5); exact in float32
C2_0 = 0.125


# --- linear policies: exact references -----------------------------------------------------------


def test_linear_policy_certified_margin_is_sound_and_tight():
    lo, hi = [-0.25, -1.0, 0.25, 0.0], [0.25, 1.0, 0.5, 1.0]
    exact = _min_linear(C2, C2_0, lo, hi)  # 0.125 - 0.25 - 0.25 + 0.75 + 0 = 0.375
    assert exact == 0.375
    res = certify_policy_region(_linear_params(W2, B2), lo, hi, action=1)
    assert res.verdict == "certified", res.detail
    assert res.certified and res.counterexample is None
    assert res.min_margin <= exact  # a lower bound of the true minimum ...
    assert res.min_margin >= exact - 1e-5  # ... and CROWN is exact on a linear map up to rounding
    assert np.all(res.leaf_margins > 0)
    assert _covers_exactly(lo, hi, res.leaves_lower, res.leaves_upper)
    assert res.check().accepted


def test_linear_policy_violated_region_is_refuted_with_a_real_counterexample():
    lo, hi = [-1.0, -1.0, 0.0, 0.0], [1.0, 1.0, 0.5, 1.0]
    assert _min_linear(C2, C2_0, lo, hi) < 0  # = 0.125 - 1 - 0.25 = -1.125 at x=1, x_dot=-1, θ=0
    res = certify_policy_region(_linear_params(W2, B2), lo, hi, action=1)
    assert res.verdict == "refuted", res.detail
    assert not res.certified and res.num_boxes == 0 and np.isnan(res.min_margin)
    x = res.counterexample
    assert x.dtype == np.float32 and _in_box(x, lo, hi)
    true_margin = float(np.asarray(x, np.float64) @ C2 + C2_0)  # exact: few dyadic terms
    assert true_margin <= 0
    assert res.counterexample_margin == pytest.approx(true_margin, abs=1e-5)
    assert res.check().accepted  # re-executed by tljax.verify in float32 and exactly


def test_a_tie_on_the_box_boundary_is_not_certified():
    # margin = theta - 0.25 on theta in [0.25, 0.5]: >= 0 everywhere, exactly 0 on one face.
    # argmax breaks the tie towards action 0, so "always action 1" is false there.
    w = np.zeros((4, 2), np.float32)
    w[2, 1] = 1.0
    params = _linear_params(w, [0.25, 0.0])
    lo, hi = [-1.0, -1.0, 0.25, -1.0], [1.0, 1.0, 0.5, 1.0]
    res = certify_policy_region(params, lo, hi, action=1)
    assert res.verdict != "certified", res.detail
    if res.verdict == "refuted":
        assert float(res.counterexample[2]) == 0.25 and res.counterexample_margin == 0.0
    # moved 2^-10 inside, the same claim is certified, with a margin bound of at most 2^-10
    res = certify_policy_region(params, [-1.0, -1.0, 0.25 + 2**-10, -1.0], hi, action=1)
    assert res.verdict == "certified", res.detail
    assert 0 < res.min_margin <= 2**-10


def test_three_actions_every_other_logit_must_lose():
    # logits = (s0, s1, 0): action 2 wins exactly where s0 < 0 and s1 < 0.
    w = np.zeros((2, 3), np.float32)
    w[0, 0] = w[1, 1] = 1.0
    params = _linear_params(w, np.zeros(3))
    res = certify_policy_region(params, [-1.0, -1.0], [-0.5, -0.25], action=2)
    assert res.verdict == "certified", res.detail
    assert res.min_margin == pytest.approx(0.25, abs=1e-5)  # min over the box of -max(s0, s1)
    assert res.min_margin <= 0.25
    res = certify_policy_region(params, [-1.0, -1.0], [-0.5, 0.25], action=2)
    assert res.verdict == "refuted", res.detail
    x = np.asarray(res.counterexample, np.float64)
    assert max(x[0], x[1]) >= 0  # another action's logit >= logit 2 = 0 there
    res = certify_policy_region(params, [-1.0, -1.0], [-0.5, -0.25], action=0)
    assert res.verdict == "refuted"  # action 2 beats action 0 there


def test_a_tljax_box_is_accepted_as_the_region():
    lo, hi = [-0.25, -1.0, 0.25, 0.0], [0.25, 1.0, 0.5, 1.0]
    box = tljax.Box(np.asarray(lo, np.float32), np.asarray(hi, np.float32))
    res = certify_policy_region(_linear_params(W2, B2), box, action=1)
    assert res.verdict == "certified", res.detail
    np.testing.assert_array_equal(res.lower, lo)
    np.testing.assert_array_equal(res.upper, hi)


def test_budget_exhausted_is_unknown_not_certified():
    res = certify_policy_region(
        _linear_params(W2, B2), [-0.25, -1.0, 0.25, 0.0], [0.25, 1.0, 0.5, 1.0], timeout=1e-9
    )
    assert res.verdict == "unknown" and not res.certified
    assert res.num_boxes == 0 and res.counterexample is None and np.isnan(res.min_margin)
    assert "neither certified nor refuted" in res.detail


def test_bad_inputs_are_rejected_with_clear_errors():
    params = _linear_params(W2, B2)
    box = ([0.0] * 4, [1.0] * 4)
    with pytest.raises(InvalidBoxError, match="must be equal 1-D shapes"):
        certify_policy_region(params, [0.0] * 3, [1.0] * 4)
    with pytest.raises(InvalidBoxError, match="must be equal 1-D shapes"):
        certify_policy_region(params, np.zeros((2, 4)), np.ones((2, 4)))
    with pytest.raises(InvalidBoxError, match=r"\(index, lower, upper\) = \[\(2, 1.0, 0.0\)\]"):
        certify_policy_region(params, [0, 0, 1, 0], [1, 1, 0, 1])
    with pytest.raises(InvalidBoxError, match="finite"):
        certify_policy_region(params, [0, 0, 0, -np.inf], [1, 1, 1, 1])
    with pytest.raises(InvalidBoxError, match="finite"):
        certify_policy_region(params, [0, 0, np.nan, 0], [1, 1, 1, 1])
    with pytest.raises(InvalidBoxError, match="needs `lower` and `upper`"):
        certify_policy_region(params, [0.0] * 4)
    with pytest.raises(InvalidBoxError, match="not both"):
        certify_policy_region(params, tljax.Box(np.zeros(4), np.ones(4)), [1.0] * 4)
    with pytest.raises(InvalidBoxError, match="must be numeric"):
        certify_policy_region(params, ["a"] * 4, [1.0] * 4)
    with pytest.raises(ShapeMismatchError, match=r"state of shape \(3,\)"):
        certify_policy_region(params, [0.0] * 3, [1.0] * 3)
    with pytest.raises(InputError, match=r"action must be an int in \[0, 2\)"):
        certify_policy_region(params, *box, action=2)
    with pytest.raises(InputError, match="action must be an int"):
        certify_policy_region(params, *box, action=True)
    with pytest.raises(InputError, match="unknown method"):
        certify_policy_region(params, *box, method="exact")
    with pytest.raises(InputError, match="timeout must be a positive"):
        certify_policy_region(params, *box, timeout=0)
    with pytest.raises(ShapeMismatchError, match="logit vector"):
        certify_policy_region(params, *box, policy=lambda p, s: jnp.sum(s))


# --- the trained PPO policy ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def falling_right(trained):
    return certify_policy_region(trained.params, *FALLING_RIGHT, action=1)


def test_trained_policy_region_is_certified(trained, falling_right):
    res = falling_right
    assert res.verdict == "certified", res.detail
    assert res.num_boxes >= 1 and res.leaf_margins.shape == (res.num_boxes,)
    assert np.all(res.leaf_margins > 0) and res.min_margin > 0
    np.testing.assert_array_equal(res.lower, np.asarray(FALLING_RIGHT[0], np.float64))
    np.testing.assert_array_equal(res.upper, np.asarray(FALLING_RIGHT[1], np.float64))
    # the leaves provably cover the region (exact rational check written here) ...
    assert _covers_exactly(*FALLING_RIGHT, res.leaves_lower, res.leaves_upper)
    # ... and the library's own re-check (exact cover + margins, bounds recomputed) agrees
    report = res.check(rebound=True)
    assert report.accepted, report.reasons


def test_every_leaf_rebounded_directly_with_tljax_bound(trained, falling_right):
    margin = rl.policy_logit_margin_fn(trained.params)
    lo32, hi32 = _f32_outward(falling_right.leaves_lower, falling_right.leaves_upper)
    lower = jax.vmap(lambda lo, hi: tljax.bound(margin, tljax.Box(lo, hi), method="crown").lower)(
        jnp.asarray(lo32), jnp.asarray(hi32)
    )
    lower = np.asarray(lower)
    assert np.all(lower > 0), lower
    # the root box alone is too loose for CROWN: the splitting is what certifies the region
    root = tljax.bound(margin, tljax.Box(*(jnp.asarray(v) for v in _f32_outward(*FALLING_RIGHT))))
    assert falling_right.num_boxes > 1 or float(root.lower) > 0


def test_certified_region_agrees_with_float32_execution(trained, falling_right):
    lo, hi = FALLING_RIGHT
    pts = jax.random.uniform(
        jax.random.key(42), (10_000, 4), jnp.float32, jnp.asarray(lo), jnp.asarray(hi)
    )
    pts = np.concatenate([np.asarray(pts), _corners(*_f32_outward(lo, hi))])
    logits = np.asarray(jax.jit(jax.vmap(lambda s: rl.policy_logits(trained.params, s)))(pts))
    assert logits.dtype == np.float32
    assert np.all(np.argmax(logits, axis=1) == 1)
    # every sampled state lies in some certified leaf, and its margin is above that leaf's bound
    x = pts.astype(np.float64)
    L, U = falling_right.leaves_lower, falling_right.leaves_upper
    inside = np.all((L[None] <= x[:, None]) & (x[:, None] <= U[None]), axis=2)  # (P, N)
    inner = inside[:-16]  # uniform samples (corners are float32-rounded, in the outward box)
    assert np.all(np.any(inner, axis=1))
    margin = (logits[:, 1] - logits[:, 0]).astype(np.float64)  # float32 difference, as run
    bound_at = np.where(inside, falling_right.leaf_margins[None], -np.inf).max(axis=1)
    assert np.all(margin[:-16] >= bound_at[:-16])


def test_wrong_action_on_the_region_is_refuted(trained):
    res = certify_policy_region(trained.params, *FALLING_RIGHT, action=0)
    assert res.verdict == "refuted", res.detail
    assert _in_box(res.counterexample, *FALLING_RIGHT)
    logits = np.asarray(rl.policy_logits(trained.params, jnp.asarray(res.counterexample)))
    assert int(np.argmax(logits)) == 1
    assert res.counterexample_margin == pytest.approx(float(logits[0] - logits[1]), abs=1e-6)


def _mixed_region(params):
    """A region found by sampling where the policy mostly pushes right but not everywhere."""
    lo, hi = FALLING_RIGHT
    margin = jax.jit(jax.vmap(rl.policy_logit_margin_fn(params)))
    for w_lo in (0.2, 0.0, -0.5, -1.0, -2.0):
        box = ([lo[0], lo[1], lo[2], w_lo], hi)
        pts = jax.random.uniform(
            jax.random.key(7), (10_000, 4), jnp.float32, jnp.asarray(box[0]), jnp.asarray(box[1])
        )
        m = np.asarray(margin(pts))
        if 0 < np.sum(m <= 0) < 0.5 * m.size:
            return box, np.asarray(pts)[np.argsort(m)][: int(np.sum(m <= 0))]  # most left first
    pytest.fail("no mixed region found by sampling")


def test_region_where_the_policy_sometimes_pushes_left_is_refuted(trained):
    box, sampled_left = _mixed_region(trained.params)
    assert sampled_left.shape[0] > 0  # sampling shows action 0 is taken somewhere in the box
    res = certify_policy_region(trained.params, *box, action=1)
    assert res.verdict == "refuted", res.detail
    assert res.num_boxes == 0
    assert _in_box(res.counterexample, *box)
    logits = np.asarray(rl.policy_logits(trained.params, jnp.asarray(res.counterexample)))
    assert logits.dtype == np.float32 and logits[1] <= logits[0]  # action 0 really is taken there
    assert res.check().accepted
    # and the claim on the box holding only the most clearly left sampled state is not certified
    p = sampled_left[0]
    res = certify_policy_region(trained.params, p, p, action=1)
    assert res.verdict == "refuted", res.detail
    np.testing.assert_array_equal(res.counterexample, p)
