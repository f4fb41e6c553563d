"""Cart-pole balancing as pure JAX functions: `cartpole_reset(key)` and `cartpole_step(state,
action)`.

The dynamics are the frictionless cart-pole of Barto, Sutton & Anderson (1983), with the constants
that became standard in the classic-control literature: g = 9.8 m/s², cart mass 1.0 kg, pole mass
0.1 kg, pole half-length 0.5 m, force magnitude 10 N, explicit Euler step τ = 0.02 s; an episode
terminates when |θ| > 12° or |x| > 2.4 m. The state is (x, ẋ, θ, θ̇), θ measured from upright,
positive clockwise (the pole leaning towards +x); action 0 pushes with −10 N, action 1 with +10 N.

Equations of motion (uniform pole of mass m and half-length l on a cart of mass M, force F):

    θ̈ = (g sin θ − cos θ · (F + m l θ̇² sin θ)/(M + m)) / (l (4/3 − m cos² θ/(M + m)))
    ẍ = (F + m l θ̇² sin θ)/(M + m) − m l θ̈ cos θ/(M + m)

References:
  Barto, Sutton & Anderson, "Neuronlike adaptive elements that can solve difficult learning control
  problems", IEEE Trans. SMC 13(5), 1983. Florian, "Correct equations for the dynamics of the
  cart-pole system" (2007), for the derivation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tljax.core import ShapeMismatchError


class CartPoleParams(NamedTuple):
    """Physical constants and limits (defaults: Barto, Sutton & Anderson 1983)."""

    gravity: float = 9.8
    mass_cart: float = 1.0
    mass_pole: float = 0.1
    half_length: float = 0.5
    force_mag: float = 10.0
    tau: float = 0.02
    theta_threshold: float = 12 * 2 * math.pi / 360
    x_threshold: float = 2.4
    reset_scale: float = 0.05


DEFAULT_CARTPOLE_PARAMS = CartPoleParams()


def cartpole_accelerations(
    state: jax.Array, force: jax.Array, params: CartPoleParams = DEFAULT_CARTPOLE_PARAMS
):
    """(ẍ, θ̈) for `state` = (x, ẋ, θ, θ̇) under horizontal `force` (closed form, see module
    docstring)."""
    _, _, theta, theta_dot = state[0], state[1], state[2], state[3]
    total = params.mass_cart + params.mass_pole
    ml = params.mass_pole * params.half_length
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    temp = (force + ml * theta_dot**2 * sin) / total
    theta_acc = (params.gravity * sin - cos * temp) / (
        params.half_length * (4.0 / 3.0 - params.mass_pole * cos**2 / total)
    )
    x_acc = temp - ml * theta_acc * cos / total
    return x_acc, theta_acc


def cartpole_step(
    state: jax.Array, action: jax.Array, params: CartPoleParams = DEFAULT_CARTPOLE_PARAMS
):
    """One Euler step τ of the cart-pole.

    Arguments:
      - `state`: (x, ẋ, θ, θ̇), shape (4,); use `jax.vmap` for many environments.
      - `action`: 0 (push left, −force_mag) or 1 (push right, +force_mag); an int scalar.
      - `params`: constants (default `CartPoleParams()`).

    Returns:
      `(next_state, reward, done)`: the new state (4,), reward 1.0 for every step taken (including
      the terminating one) and `done` = |θ′| > 12° or |x′| > 2.4.

    Example:
      >>> import jax.numpy as jnp
      >>> s, r, d = cartpole_step(jnp.zeros(4), 1)
      >>> float(s[1]) > 0, float(r), bool(d)
      (True, 1.0, False)
    """
    state = jnp.asarray(state)
    if state.shape != (4,):
        raise ShapeMismatchError(
            f"cartpole_step: `state` has shape {state.shape}, expected (4,) = (x, x_dot, theta, "
            f"theta_dot); "
            "use jax.vmap for batches."
        )
    force = jnp.where(jnp.asarray(action) == 1, params.force_mag, -params.force_mag).astype(
        state.dtype
    )
    x_acc, theta_acc = cartpole_accelerations(state, force, params)
    x, x_dot, theta, theta_dot = state[0], state[1], state[2], state[3]
    # Explicit Euler in the classic order: positions use the old velocities.
    nxt = jnp.stack(
        [
            x + params.tau * x_dot,
            x_dot + params.tau * x_acc,
            theta + params.tau * theta_dot,
            theta_dot + params.tau * theta_acc,
        ]
    )
    done = (jnp.abs(nxt[0]) > params.x_threshold) | (jnp.abs(nxt[2]) > params.theta_threshold)
    return nxt, jnp.ones((), state.dtype), done


def cartpole_reset(key: jax.Array, params: CartPoleParams = DEFAULT_CARTPOLE_PARAMS) -> jax.Array:
    """Initial state: each of (x, ẋ, θ, θ̇) uniform in [−0.05, 0.05]; shape (4,), float32."""
    return jax.random.uniform(key, (4,), jnp.float32, -params.reset_scale, params.reset_scale)
