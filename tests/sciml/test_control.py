"""Lyapunov verification of the shipped neural controllers (`tljax.sciml._control`)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.core import InputError
from tljax.io import load_vnnlib
from tljax.sciml import (
    ClosedLoop,
    load_closed_loop,
    lyapunov_sub_boxes,
    verify_lyapunov,
    verify_lyapunov_continuous,
)
from tljax.verify import verify

REPO = pathlib.Path(__file__).resolve().parents[2]
CONTROL = (REPO / ".." / "shared" / "benchmarks" / "sciml" / "control").resolve()
SYSTEMS = ("pendulum_state_feedback", "path_tracking_state_feedback")


@pytest.fixture(scope="module")
def control_dir():
    if not (CONTROL / "pendulum_state_feedback.npz").is_file():
        pytest.skip(
            f"control benchmark not found at {CONTROL} (expected ../shared beside the repo)"
        )
    return CONTROL


@pytest.fixture(scope="module")
def loops(control_dir):
    return {name: load_closed_loop(control_dir / f"{name}.npz") for name in SYSTEMS}


def _y(loop, xs):
    return np.asarray(jax.jit(jax.vmap(loop.spec_outputs))(jnp.asarray(xs, jnp.float32)))


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("form", ["difference", "direct"])
def test_reimplementation_matches_reference(control_dir, name, form):
    loop = load_closed_loop(control_dir / f"{name}.npz", form=form)
    assert isinstance(loop, ClosedLoop) and loop.system in ("pendulum", "path_tracking")
    ref_x, ref_out = loop.params["ref_x"], loop.params["ref_out"]
    y = _y(loop, ref_x).astype(np.float64)
    # float32 program vs float64 reference: agreement ~1e-7 of each state's largest output
    scale = np.maximum(np.abs(ref_out).max(axis=1, keepdims=True), 1.0)
    assert np.max(np.abs(y - ref_out) / scale) < 1e-6
    # pieces agree with the spec vector
    x0 = jnp.asarray(ref_x[0], jnp.float32)
    assert np.allclose(loop.lyapunov(x0), y[0, 1], rtol=1e-6)
    assert np.allclose(loop.step(x0), y[0, 2:], rtol=1e-6)
    assert np.allclose(loop.step(x0), x0 + 0.05 * loop.vector_field(x0), rtol=1e-6)
    u = np.asarray(loop.policy(x0))
    assert u.shape == (1,) and loop.params["u_lo"][0] <= u[0] <= loop.params["u_hi"][0]


def test_lyapunov_is_zero_at_the_equilibrium(loops):
    for loop in loops.values():
        assert float(loop.lyapunov(jnp.zeros(2))) == 0.0
        assert float(loop.policy(jnp.zeros(2))[0]) == pytest.approx(
            float(loop.params["u_eq"][0]), abs=1e-7
        )


@pytest.mark.parametrize("name", SYSTEMS)
def test_sub_boxes_match_the_shipped_specs(control_dir, loops, name):
    loop = loops[name]
    boxes = lyapunov_sub_boxes(loop.box_lo, loop.box_hi, loop.hole_lo, loop.hole_hi)
    assert len(boxes) == 4
    for k, (lo, hi) in enumerate(boxes):
        prop = load_vnnlib(control_dir / "specs" / f"{name}_{k}.vnnlib", 2, 4)
        ((plo, phi),) = prop.input_boxes
        # the files write the float32 value of the hole's half-width (0.012000000104308128)
        assert np.allclose(plo, lo, rtol=0, atol=1e-9) and np.allclose(phi, hi, rtol=0, atol=1e-9)
        # the (or ...) and the separate (<= Y_1 rho) make 5 disjuncts, each with Y_1 <= rho
        assert len(prop.unsafe) == 5 and prop.is_product
        for c, d in prop.unsafe:
            assert c.shape == (2, 4) and np.array_equal(c[0], [0, 1, 0, 0]) and d[0] == loop.rho


def test_vnnlib_conjunction_semantics(control_dir, loops):
    loop = loops["pendulum_state_feedback"]
    prop = load_vnnlib(control_dir / "specs" / "pendulum_state_feedback_0.vnnlib", 2, 4)
    x = np.array([1.0, 0.0])
    assert prop.is_counterexample(x, [-1.0, 600.0, 0.0, 0.0])  # decrease fails inside level set
    assert not prop.is_counterexample(x, [-1.0, 700.0, 0.0, 0.0])  # outside the level set
    assert prop.is_counterexample(x, [1.0, 600.0, 12.5, 0.0])  # x+ leaves the box
    assert not prop.is_counterexample(x, [1.0, 600.0, 12.0, 0.0])  # within the tolerance
    assert not prop.is_counterexample([-1.0, 0.0], [-1.0, 600.0, 0.0, 0.0])  # not in sub-box 0
    assert loop.rho == 672.0


@pytest.mark.long
def test_direct_api_verifies_a_shipped_sub_box_and_leaves_hold(loops):
    loop = loops["path_tracking_state_feedback"]
    res = verify_lyapunov(loop, sub_boxes=(3,), timeout=600)
    assert res.verdict == "unsat", str(res)
    (sb,) = res.sub_boxes
    assert sb.index == 3 and sb.leaves > 0 and sb.domains >= sb.leaves
    assert all(r.accepted for r in res.check())  # exact coverage and leaf margins
    # 2e4 float32 states drawn inside the certified leaves: no violation of the inequalities
    lo, hi = res.leaf_boxes()
    rng = np.random.default_rng(0)
    pick = rng.integers(0, lo.shape[0], 20_000)
    xs = (lo[pick] + rng.random((pick.size, 2)) * (hi[pick] - lo[pick])).astype(np.float32)
    y = _y(loop, xs).astype(np.float64)
    inside = y[:, 1] <= loop.rho
    assert inside.sum() > 5_000
    assert np.all(y[inside, 0] > -loop.tol)
    assert np.all(np.abs(y[inside, 2:]) < loop.box_hi + loop.tol)


def test_broken_controller_is_refuted_with_a_rechecked_counterexample(loops):
    loop = loops["pendulum_state_feedback"]
    bad = loop.with_params(controller_L3_weight=-loop.params["controller_L3_weight"])
    res = verify_lyapunov(bad, timeout=60)
    assert res.verdict == "sat", str(res)
    cex = res.counterexample
    assert cex is not None and res.violated
    assert all(r.accepted for r in res.check())  # float32 and exact re-execution
    assert cex.exact_violates is True  # the real-valued closed loop violates it too
    x = np.asarray(cex.x, np.float32)
    (sb,) = [s for s in res.sub_boxes if s.verdict == "sat"]
    assert np.all(sb.lower <= x) and np.all(x <= sb.upper)
    y = np.asarray(bad.spec_outputs(jnp.asarray(x)), np.float64)
    assert y[1] <= loop.rho
    out = np.abs(y[2:]) > loop.box_hi + loop.tol
    assert y[0] < -loop.tol or np.any(out)
    # the shipped controller is fine at the same state
    good = np.asarray(loop.spec_outputs(jnp.asarray(x)), np.float64)
    assert good[0] > -loop.tol or good[1] > loop.rho


def _damped_pendulum(x):
    return jnp.stack([x[1], -jnp.sin(x[0]) - x[1]])


def _driven_pendulum(x):  # upright pendulum without control: unstable
    return jnp.stack([x[1], jnp.sin(x[0]) - 0.1 * x[1]])


_P = jnp.asarray([[1.5, 0.5], [0.5, 1.0]], jnp.float32)


def _quadratic(x):
    return x @ _P @ x


def test_continuous_time_true_case_is_proved():
    box = (-np.ones(2), np.ones(2))
    res = verify_lyapunov_continuous(_quadratic, _damped_pendulum, box, 0.01, 1.0, timeout=120)
    assert res.verdict == "unsat", str(res)
    assert res.leaves > 0 and res.check().accepted
    # sampled check of the proved inequality on the band
    rng = np.random.default_rng(1)
    xs = rng.uniform(-1, 1, (20_000, 2)).astype(np.float32)
    grad = jax.vmap(jax.grad(_quadratic))(jnp.asarray(xs))
    vdot = np.sum(np.asarray(grad) * np.asarray(jax.vmap(_damped_pendulum)(xs)), axis=1)
    v = np.asarray(jax.vmap(_quadratic)(xs))
    band = (v >= 0.01) & (v <= 1.0)
    assert band.sum() > 5_000 and np.all(vdot[band] < 0)


def test_continuous_time_false_case_is_refuted():
    box = (-np.ones(2), np.ones(2))
    res = verify_lyapunov_continuous(_quadratic, _driven_pendulum, box, 0.01, 1.0, timeout=120)
    assert res.verdict == "sat", str(res)
    assert res.check().accepted
    x = jnp.asarray(res.counterexample.x, jnp.float32)
    vdot = float(jnp.dot(jax.grad(_quadratic)(x), _driven_pendulum(x)))
    assert vdot >= 0 and 0.01 <= float(_quadratic(x)) <= 1.0


def test_bad_inputs_are_reported(tmp_path, loops):
    with pytest.raises(InputError, match="no such file"):
        load_closed_loop(tmp_path / "missing_pendulum.npz")
    odd = tmp_path / "cartpole.npz"
    np.savez(odd, a=np.zeros(1))
    with pytest.raises(InputError, match="system="):
        load_closed_loop(odd)
    with pytest.raises(InputError, match="lacks the array"):
        load_closed_loop(odd, system="pendulum")
    loop = loops["pendulum_state_feedback"]
    with pytest.raises(InputError, match="also pass"):
        verify_lyapunov(loop.lyapunov, loop.step)
    with pytest.raises(InputError, match="out of range"):
        verify_lyapunov(loop, sub_boxes=(7,))
    with pytest.raises(InputError, match="unknown array"):
        loop.with_params(controller_L9_weight=np.zeros(1))
    with pytest.raises(InputError, match="c1 <= c2"):
        verify_lyapunov_continuous(
            loop.lyapunov, loop.vector_field, (-np.ones(2), np.ones(2)), 2, 1
        )
    with pytest.raises(InputError, match="hole_lo"):
        lyapunov_sub_boxes([-1, -1], [1, 1], [0.5, -0.1], [0.2, 0.1])


@pytest.mark.slow
@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("k", range(4))
def test_shipped_vnnlib_specs_are_unsat(control_dir, loops, name, k):
    loop = loops[name]
    prop = load_vnnlib(control_dir / "specs" / f"{name}_{k}.vnnlib", 2, 4)
    res = verify(loop.spec_outputs, prop, timeout=900, branching="widest")
    assert res.verdict == "unsat", str(res)
    assert res.check().accepted
