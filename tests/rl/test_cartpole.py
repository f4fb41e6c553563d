"""Cart-pole: the closed-form dynamics against an independent mass-matrix solve of the
Lagrangian."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import rl
from tljax.core._errors import ShapeMismatchError


def _lagrangian_accelerations(state, force, g=9.8, M=1.0, m=0.1, half=0.5):
    """Solves the equations of motion of a uniform pole (half-length l) on a cart as a 2×2 system:

    (M + m) ẍ + m l cos θ · θ̈ = F + m l θ̇² sin θ
    m l cos θ · ẍ + (4/3) m l² θ̈ = m g l sin θ
    """
    _, _, th, thd = state
    A = np.array(
        [[M + m, m * half * math.cos(th)], [m * half * math.cos(th), 4.0 / 3.0 * m * half * half]]
    )
    b = np.array([force + m * half * thd**2 * math.sin(th), m * g * half * math.sin(th)])
    return np.linalg.solve(A, b)


def test_dynamics_match_mass_matrix_solve():
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.uniform([-2, -2, -0.2, -2], [2, 2, 0.2, 2]).astype(np.float32)
        for action, force in ((0, -10.0), (1, 10.0)):
            xa, ta = _lagrangian_accelerations(s.astype(np.float64), force)
            got = rl.cartpole_accelerations(jnp.asarray(s), jnp.float32(force))
            np.testing.assert_allclose(got, [xa, ta], rtol=1e-4, atol=1e-5)
            nxt, r, _ = rl.cartpole_step(jnp.asarray(s), action)
            # explicit Euler: positions advance with the old velocities
            np.testing.assert_allclose(
                nxt, s + 0.02 * np.array([s[1], xa, s[3], ta]), rtol=1e-5, atol=1e-5
            )
            assert float(r) == 1.0


def test_termination_thresholds():
    lim = 12 * 2 * math.pi / 360
    _, _, done = rl.cartpole_step(jnp.array([0.0, 0.0, lim - 1e-3, 0.0]), 1)
    assert not bool(done)
    _, _, done = rl.cartpole_step(jnp.array([0.0, 0.0, lim - 1e-3, 1.0]), 1)
    assert bool(done)  # θ crosses 12°
    _, _, done = rl.cartpole_step(jnp.array([2.39, 1.0, 0.0, 0.0]), 1)
    assert bool(done)  # x crosses 2.4


def test_reset_range_and_vmapped_rollout():
    s0 = jax.vmap(rl.cartpole_reset)(jax.random.split(jax.random.key(0), 1000))
    assert s0.shape == (1000, 4) and float(jnp.abs(s0).max()) <= 0.05

    def run(s):
        def step(carry, _):
            s, alive, t = carry
            s, _, done = rl.cartpole_step(s, jnp.int32(1))  # always push right
            return (s, alive & ~done, t + alive), None

        (_, _, t), _ = jax.lax.scan(step, (s, True, 0), None, 200)
        return t

    lengths = jax.jit(jax.vmap(run))(s0[:16])
    # constant pushing topples the pole within a few dozen steps
    assert int(lengths.max()) < 60 and int(lengths.min()) > 3


def test_state_shape_error():
    with pytest.raises(ShapeMismatchError, match=re.escape("use jax.vmap for batches")):
        rl.cartpole_step(jnp.zeros((2, 4)), 0)
