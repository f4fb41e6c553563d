"""Schedules: tables against independent numpy/float64 recomputations and the papers' constants."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.core._errors import InputError
from tljax.diffusion import Schedule, cosine_schedule, linear_schedule, schedule_from_betas


def _reference_tables(betas):
    """Loop-based float64 reference (written independently of the library's vectorised code)."""
    ab, out_ab, out_bt = 1.0, [1.0], [0.0]
    for b in betas:
        prev = ab
        ab = ab * (1.0 - b)
        out_ab.append(ab)
        out_bt.append((1.0 - prev) / (1.0 - ab) * b)
    return np.array(out_ab), np.array(out_bt)


def test_linear_schedule_matches_ddpm_constants():
    s = linear_schedule()
    assert s.num_steps == 1000 and s.betas.shape == (1001,)
    assert float(s.betas[0]) == 0.0 and float(s.alpha_bars[0]) == 1.0
    assert float(s.betas[1]) == float(np.float32(1e-4))
    assert float(s.betas[1000]) == float(np.float32(0.02))
    # DDPM's alpha_bar_T for this schedule is about 4.0e-5.
    assert 3.5e-5 < float(s.alpha_bars[1000]) < 4.5e-5


def test_linear_schedule_rescales_for_other_lengths():
    s = linear_schedule(100)
    np.testing.assert_allclose(float(s.betas[1]), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(s.betas[100]), 0.2, rtol=1e-6)
    s2 = linear_schedule(100, beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(float(s2.betas[100]), 0.02, rtol=1e-6)


def _cosine_betas_reference(T, sft=0.008):
    ab = [math.cos((t / T + sft) / (1 + sft) * math.pi / 2) ** 2 for t in range(T + 1)]
    return np.array([min(1 - ab[t] / ab[t - 1], 0.999) for t in range(1, T + 1)])


@pytest.mark.parametrize(
    "build, reference_betas",
    [
        (
            linear_schedule,
            lambda T: np.array([1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)]),
        ),
        (cosine_schedule, _cosine_betas_reference),
    ],
)
def test_tables_match_loop_reference(build, reference_betas):
    s = build(1000)
    betas = reference_betas(1000)
    np.testing.assert_allclose(np.asarray(s.betas[1:]), betas, rtol=1e-7)
    ab_ref, bt_ref = _reference_tables(betas)
    np.testing.assert_allclose(np.asarray(s.alpha_bars), ab_ref, rtol=1e-6)
    # 1 - alpha_bar keeps relative precision at small t (no cancellation).
    np.testing.assert_allclose(np.asarray(s.one_minus_alpha_bars), 1.0 - ab_ref, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s.beta_tildes), bt_ref, rtol=1e-5, atol=0)
    np.testing.assert_allclose(
        np.asarray(s.alphas), 1.0 - np.concatenate([[0.0], betas]), rtol=1e-7
    )
    np.testing.assert_allclose(np.asarray(s.log_alpha_bars), np.log(ab_ref), rtol=1e-5, atol=1e-7)
    assert float(s.beta_tildes[1]) == 0.0


def test_one_minus_alpha_bar_is_exact_at_t1():
    s = linear_schedule()
    # 1 - alpha_bar_1 = beta_1 exactly; float32 1 - cumprod would lose ~3 digits here.
    assert float(s.one_minus_alpha_bars[1]) == float(s.betas[1])


def test_cosine_schedule_follows_nichol_dhariwal():
    T, sft = 1000, 0.008
    s = cosine_schedule(T)

    def f(t):
        return math.cos((t / T + sft) / (1 + sft) * math.pi / 2) ** 2

    # Before clipping sets in, alpha_bar_t = f(t) / f(0).
    for t in (1, 10, 100, 500, 900, 980):
        np.testing.assert_allclose(float(s.alpha_bars[t]), f(t) / f(0), rtol=1e-5)
    betas = np.asarray(s.betas[1:])
    assert betas.max() == np.float32(0.999)
    assert float(s.betas[T]) == np.float32(0.999)
    assert np.all(np.diff(betas) >= 0)


def test_custom_schedule_and_pytree():
    s = schedule_from_betas([0.1, 0.2, 0.3])
    np.testing.assert_allclose(np.asarray(s.alpha_bars), [1.0, 0.9, 0.72, 0.504], rtol=1e-6)
    leaves = jax.tree_util.tree_leaves(s)
    assert len(leaves) == 6 and all(isinstance(x, jax.Array) for x in leaves)

    @jax.jit
    def f(sched):
        return sched.alpha_bars[sched.num_steps]

    np.testing.assert_allclose(float(f(s)), 0.504, rtol=1e-6)
    assert isinstance(jax.tree_util.tree_map(lambda x: x * 1, s), Schedule)


def test_step_coefficients_strided_matches_products():
    s = linear_schedule(100)
    c = s.step_coefficients(jnp.int32(60), jnp.int32(40))
    ab = np.asarray(s.alpha_bars, dtype=np.float64)
    np.testing.assert_allclose(float(c.ratio), ab[60] / ab[40], rtol=1e-5)
    np.testing.assert_allclose(float(c.one_minus_ratio), 1 - ab[60] / ab[40], rtol=1e-4)
    c1 = s.step_coefficients(jnp.int32(7), jnp.int32(6))
    assert float(c1.one_minus_ratio) == float(s.betas[7])


@pytest.mark.parametrize(
    "betas, message",
    [
        ([], "non-empty 1-D array"),
        ([[0.1, 0.2]], "non-empty 1-D array"),
        ([0.1, 1.0, 0.0], "betas[1]=1.0, betas[2]=0.0"),
        ([0.1, float("nan")], "betas[1]=nan"),
    ],
)
def test_bad_betas_are_rejected_with_location(betas, message):
    with pytest.raises(InputError, match=re.escape(message)):
        schedule_from_betas(betas)


def test_bad_num_steps():
    with pytest.raises(InputError, match="num_steps must be a positive int"):
        linear_schedule(0)
    with pytest.raises(InputError, match="needs T >= 21"):
        linear_schedule(20)
    assert linear_schedule(21).num_steps == 21
    assert linear_schedule(10, beta_start=1e-3, beta_end=0.3).num_steps == 10
    with pytest.raises(ValueError, match="max_beta"):
        cosine_schedule(10, max_beta=1.0)
