"""A small model zoo for the transformation tests: graphs are built once per session."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import tljax

EPS = 1e-5


def _rng(seed):
    return np.random.default_rng(seed)


def _f32(a):
    return np.asarray(a, np.float32)


@jax.jit
def _layer(h, w, b):
    return jax.nn.relu(h @ w + b)


def make_mlp():
    """MLP 5-16-16-3 with a jitted layer called twice on the same operands (CSE), dead code (DCE)
    and a constant subexpression (constant folding)."""
    r = _rng(0)
    w1, b1 = _f32(r.normal(size=(5, 16)) * 0.5), _f32(r.normal(size=16) * 0.1)
    w2, b2 = _f32(r.normal(size=(16, 16)) * 0.3), _f32(r.normal(size=16) * 0.1)
    w3 = _f32(r.normal(size=(16, 3)) * 0.3)

    def mlp(x):
        half = jnp.sqrt(jnp.float32(4.0)) / 4.0  # constant: exactly 0.5
        h = _layer(x, w1, b1)
        unused = jnp.tanh(h) * 3.0  # dead
        del unused
        a = _layer(h, w2, b2)
        b = _layer(h, w2, b2)  # the same call again
        return (a + b) @ w3 * half

    x = _f32(r.normal(size=5))
    return mlp, x


def make_cnn():
    """conv -> batch norm (rsqrt form) -> relu -> conv -> batch norm (divide-by-sqrt form) -> relu
    -> eqx.nn.Linear -> eqx.nn.BatchNorm (inference) -> relu -> eqx.nn.Linear; NCHW, eval mode."""
    r = _rng(1)
    k1 = _f32(r.normal(size=(4, 2, 3, 3)) * 0.4)
    k2 = _f32(r.normal(size=(4, 4, 3, 3)) * 0.3)

    def bn_params(n):  # jnp arrays, so that `var + eps` is traced (not computed by numpy)
        return tuple(
            jnp.asarray(a, jnp.float32)
            for a in (
                r.normal(size=n) * 0.2,
                r.uniform(0.5, 1.5, size=n),
                r.uniform(0.5, 1.5, size=n),
                r.normal(size=n) * 0.1,
            )
        )

    bn1, bn2 = bn_params(4), bn_params(4)
    key = jax.random.key(0)
    lin1 = eqx.nn.Linear(4, 8, key=jax.random.fold_in(key, 1))
    lin2 = eqx.nn.Linear(8, 3, key=jax.random.fold_in(key, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bn3, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(
            8, "batch", inference=True, mode="ema"
        )
    mean3, var3 = (
        jnp.asarray(r.normal(size=8) * 0.2, jnp.float32),
        jnp.asarray(r.uniform(0.5, 1.5, 8), jnp.float32),
    )
    state = state.set(bn3.ema_state_index, (mean3, var3))
    bn3 = eqx.tree_at(
        lambda m: (m.weight, m.bias),
        bn3,
        (
            jnp.asarray(r.uniform(0.5, 1.5, 8), jnp.float32),
            jnp.asarray(r.normal(size=8) * 0.1, jnp.float32),
        ),
    )

    def col(v):
        return v[:, None, None]

    def cnn(x):
        y = lax.conv_general_dilated(
            x, k1, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        m, v, g, b = bn1
        y = (y - col(m)) * lax.rsqrt(col(v) + EPS) * col(g) + col(b)
        y = jax.nn.relu(y)
        y = lax.conv_general_dilated(
            y, k2, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        m, v, g, b = bn2
        y = (y - col(m)) / jnp.sqrt(col(v) + EPS) * col(g) + col(b)
        y = jax.nn.relu(y).reshape(-1)
        y, _ = bn3(lin1(y), state)
        return lin2(jax.nn.relu(y))

    x = _f32(r.normal(size=(1, 2, 5, 5)))
    parts = {
        "k1": k1,
        "bn1": bn1,
        "w3": np.asarray(lin1.weight),
        "b3": np.asarray(lin1.bias),
        "bn3": (np.asarray(mean3), np.asarray(var3), np.asarray(bn3.weight), np.asarray(bn3.bias)),
    }
    return cnn, x, parts


def make_attention():
    """One softmax attention head with output projection and residual, 4 tokens of width 8."""
    r = _rng(2)
    wq, wk, wv, wo = (_f32(r.normal(size=(8, 8)) * 0.3) for _ in range(4))

    def attention(x):
        q, k, v = x @ wq, x @ wk, x @ wv
        s = q @ k.T / jnp.sqrt(jnp.float32(8.0))
        return jax.nn.softmax(s, axis=-1) @ v @ wo + x

    x = _f32(r.normal(size=(4, 8)) * 0.5)
    return attention, x


def make_ssm():
    """A diagonal-plus-input SSM over 6 steps (lax.scan), tanh state update, linear readout."""
    r = _rng(3)
    a = _f32(np.diag(r.uniform(0.5, 0.9, 4)) + r.normal(size=(4, 4)) * 0.05)
    bm = _f32(r.normal(size=(4, 2)) * 0.5)
    c = _f32(r.normal(size=(2, 4)) * 0.5)

    def ssm(xs):
        def step(h, x):
            h = jnp.tanh(a @ h + bm @ x)
            return h, c @ h

        _, ys = lax.scan(step, jnp.zeros(4, jnp.float32), xs)
        return ys

    xs = _f32(r.normal(size=(6, 2)) * 0.5)
    return ssm, xs


@pytest.fixture(scope="session")
def mlp():
    fn, x = make_mlp()
    return tljax.trace(fn, x, name="mlp"), x


@pytest.fixture(scope="session")
def cnn_parts():
    return make_cnn()


@pytest.fixture(scope="session")
def cnn(cnn_parts):
    fn, x, _ = cnn_parts
    return tljax.trace(fn, x, name="cnn"), x


@pytest.fixture(scope="session")
def attention():
    fn, x = make_attention()
    return tljax.trace(fn, x, name="attention"), x


@pytest.fixture(scope="session")
def ssm():
    fn, x = make_ssm()
    return tljax.trace(fn, x, name="ssm"), x


@pytest.fixture
def acas(benchmarks_dir):
    from tljax.transforms._roundtrip import onnx_graph

    path = benchmarks_dir / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return onnx_graph(path), path
