"""Instances shared by the verify tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.io import Property


def relu_mlp(x, params):
    w1, b1, w2, b2 = params
    return jax.nn.relu(x @ w1 + b1) @ w2 + b2


@pytest.fixture(scope="session")
def relu_split_instance():
    """`(fn, params, prop, root_upper, t)`: a random 8-32-2 ReLU MLP on [-0.5, 0.5]^8 and the
    property "y0 - y1 >= t is unreachable", with `t` between the sampled maximum of y0 - y1 and
    CROWN's root upper bound `root_upper` of it: it holds, but the root bound cannot prove it."""
    rng = np.random.default_rng(0)
    n, h = 8, 32
    params = tuple(
        jnp.asarray(a, jnp.float32)
        for a in (
            rng.normal(size=(n, h)) / np.sqrt(n),
            rng.normal(size=h) * 0.1,
            rng.normal(size=(h, 2)) / np.sqrt(h),
            np.zeros(2),
        )
    )
    lo, hi = -0.5 * np.ones(n), 0.5 * np.ones(n)
    box = tljax.Box(jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32))
    c = np.array([[1.0, -1.0]])
    root = tljax.bound(lambda x: relu_mlp(x, params), box, spec=c, method="crown")
    xs = np.random.default_rng(1).uniform(lo, hi, size=(50000, n)).astype(np.float32)
    ys = np.asarray(jax.vmap(lambda x: relu_mlp(x, params))(jnp.asarray(xs)))
    sampled = float(np.max(ys[:, 0] - ys[:, 1]))
    t = sampled + 0.9 * (float(root.upper[0]) - sampled)
    # unsafe: y0 - y1 >= t, i.e. -(y0 - y1) <= -t
    prop = Property(
        input_boxes=((lo, hi),),
        unsafe=((-c, np.array([-t])),),
        pairing=((0,),),
        n_inputs=n,
        n_outputs=2,
        path="<test>",
    )
    return relu_mlp, params, prop, float(root.upper[0]), t
