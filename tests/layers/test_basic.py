"""Linear, Embedding, Flatten, activations, Dropout, Sequential, MLP."""

import math
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax.layers as tl


def randn(seed, shape):
    """Standard normal test data from numpy (jax.random would compile a kernel per shape)."""
    if not isinstance(seed, int):  # a PRNG key: derive a seed from its bits
        seed = int(np.asarray(jax.random.key_data(seed)).sum())
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def randbool(seed, p, shape):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def name_stacks(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return {str(e.source_info.name_stack) for e in jaxpr.eqns}, {
        e.primitive.name for e in jaxpr.eqns
    }


# --- Linear --------------------------------------------------------------------------------------


def test_linear_shapes_and_equinox_equality():
    k1, k2 = keys(2)
    ours = tl.Linear(5, 3, key=k1)
    ref = eqx.nn.Linear(5, 3, key=k2)
    ref = eqx.tree_at(lambda m: (m.weight, m.bias), ref, (ours.weight, ours.bias))
    x = randn(k2, (5,))
    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    xb = randn(k1, (4, 2, 5))
    assert ours(xb).shape == (4, 2, 3)
    np.testing.assert_allclose(ours(xb), jax.vmap(jax.vmap(ref))(xb), rtol=1e-6, atol=1e-6)


def test_linear_init_is_pytorch_uniform_and_no_bias_option():
    layer = tl.Linear(100, 50, key=keys(1)[0])
    bound = 1 / math.sqrt(100)
    assert float(jnp.abs(layer.weight).max()) <= bound and layer.weight.shape == (50, 100)
    assert float(jnp.abs(layer.weight).max()) > 0.9 * bound  # actually spread over the range
    no_bias = tl.Linear(4, 2, bias=False, key=keys(1)[0])
    assert no_bias.bias is None
    np.testing.assert_allclose(no_bias(jnp.ones(4)), no_bias.weight.sum(1), rtol=1e-6)


def test_linear_graph_is_dot_general_add_in_named_scope():
    layer = tl.Linear(3, 2, key=keys(1)[0])
    stacks, prims = name_stacks(layer, jnp.ones(3))
    assert stacks == {"tljax.layers.Linear"}
    assert prims == {"dot_general", "add"}


def test_linear_wrong_input_says_what_to_do():
    layer = tl.Linear(3, 2, key=keys(1)[0])
    with pytest.raises(
        ValueError, match=re.escape("expected input with last axis 3, got shape (4,)")
    ):
        layer(jnp.ones(4))


# --- Embedding / Flatten -------------------------------------------------------------------------


def test_embedding_matches_equinox_and_indexing():
    emb = tl.Embedding(10, 4, key=keys(1)[0])
    ref = eqx.nn.Embedding(weight=emb.weight)
    idx = jnp.array([[1, 2, 9], [0, 0, 3]])
    out = emb(idx)
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out[1, 2], ref(jnp.array(3)))
    np.testing.assert_array_equal(out, np.asarray(emb.weight)[np.asarray(idx)])
    with pytest.raises(TypeError, match="indices must be integers"):
        emb(jnp.ones(3))


def test_identity_returns_input():
    x = jnp.arange(3.0)
    assert tl.Identity()(x) is x


def test_flatten_default_is_per_example_and_start_dim_1_is_torch_like():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    assert tl.Flatten()(x).shape == (24,)
    assert tl.Flatten(start_dim=1)(x).shape == (2, 12)
    assert tl.Flatten(start_dim=0, end_dim=1)(x).shape == (6, 4)
    np.testing.assert_array_equal(tl.Flatten()(x), np.arange(24.0))


# --- activations ---------------------------------------------------------------------------------


X = jnp.linspace(-30.0, 30.0, 121)


@pytest.mark.parametrize(
    "layer, reference, primitive",
    [
        (tl.ReLU(), lambda x: np.maximum(x, 0), "max"),
        (tl.Tanh(), np.tanh, "tanh"),
        (tl.Sigmoid(), lambda x: 1 / (1 + np.exp(-x)), "logistic"),
        (tl.LeakyReLU(0.1), lambda x: np.where(x >= 0, x, 0.1 * x), None),
        (tl.GELU(), lambda x: x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2))), "erf"),
        (
            tl.GELU("tanh"),
            lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
            "tanh",
        ),
        (tl.Softplus(), lambda x: np.where(x > 20, x, np.log1p(np.exp(x))), None),
        (
            tl.Softplus(beta=2.0, threshold=5.0),
            lambda x: np.where(2 * x > 5, x, np.log1p(np.exp(2 * x)) / 2),
            None,
        ),
    ],
)
def test_activation_values_and_graph(layer, reference, primitive):
    x = np.asarray(X, np.float64)
    np.testing.assert_allclose(layer(X), reference(x), rtol=2e-6, atol=2e-6)
    stacks, _ = name_stacks(layer, X)
    assert stacks == {f"tljax.layers.{type(layer).__name__}"}
    if primitive is not None:
        jaxpr = str(jax.make_jaxpr(layer)(X))
        assert primitive in jaxpr


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        tl.GELU("fast")


# --- Dropout -------------------------------------------------------------------------------------


def test_dropout_keeps_expected_fraction_and_rescales():
    x = jnp.ones(20000)
    y = tl.Dropout(0.25)(x, key=keys(1)[0])
    kept = y != 0
    assert abs(float(kept.mean()) - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)


def test_dropout_inference_is_identity_and_inference_mode_toggles():
    drop = tl.Dropout(0.5)
    x = jnp.arange(5.0)
    assert drop(x, inference=True) is x
    model = tl.Sequential(drop, tl.ReLU())
    inf_model = eqx.nn.inference_mode(model)
    np.testing.assert_array_equal(inf_model(x), x)
    assert str(jax.make_jaxpr(inf_model)(x)).count("random") == 0


def test_dropout_without_key_explains():
    with pytest.raises(
        ValueError, match=re.escape("training mode needs a PRNG key: call it with `key=...`")
    ):
        tl.Dropout(0.5)(jnp.ones(3))
    with pytest.raises(ValueError, match=re.escape("p must be in [0, 1)")):
        tl.Dropout(1.0)


# --- containers ----------------------------------------------------------------------------------


def test_sequential_equals_manual_composition_and_splits_keys():
    k1, k2, k3 = keys(3)
    a, b = tl.Linear(4, 8, key=k1), tl.Linear(8, 2, key=k2)
    seq = tl.Sequential(a, tl.ReLU(), tl.Dropout(0.5), b)
    x = randn(k3, (4,))
    np.testing.assert_allclose(
        seq(x, key=k3),
        b(tl.Dropout(0.5)(jax.nn.relu(a(x)), key=jax.random.split(k3, 4)[2])),
        rtol=1e-6,
    )
    assert len(seq) == 4 and seq[0] is a
    assert seq[:2](x).shape == (8,)
    assert tl.Sequential([a, b])(x).shape == (2,)


def test_sequential_accepts_plain_functions():
    seq = tl.Sequential(jax.nn.relu, tl.Flatten())
    np.testing.assert_array_equal(seq(jnp.array([[-1.0, 2.0]]), key=jax.random.key(0)), [0.0, 2.0])


def test_sequential_rejects_state_for_stateless_layers():
    seq = tl.Sequential(tl.ReLU())
    with pytest.raises(ValueError, match="no layer is stateful"):
        seq(jnp.ones(2), ())


def test_mlp_matches_manual_layers():
    mlp = tl.MLP(6, [5, 4], 3, activation=tl.Tanh(), key=keys(1)[0])
    x = randn(keys(1, seed=1)[0], (7, 6))
    h = x
    for layer in mlp.layers[:-1]:
        h = jnp.tanh(h @ layer.weight.T + layer.bias)
    expected = h @ mlp.layers[-1].weight.T + mlp.layers[-1].bias
    np.testing.assert_allclose(mlp(x), expected, rtol=1e-5, atol=1e-6)
    assert [layer.weight.shape for layer in mlp.layers] == [(5, 6), (4, 5), (3, 4)]
