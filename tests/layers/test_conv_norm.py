"""Conv1d/Conv2d, pooling, LayerNorm and BatchNorm."""

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


def key(seed=0):
    return jax.random.key(seed)


def direct_conv2d(x, w, b, stride, pad, dilation, groups):
    """Independent reference: explicit loops over NCHW / OIHW (float64 numpy)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    n, _c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // groups
    for oc in range(o):
        g = oc // per_group
        for i in range(oh):
            for j in range(ow):
                patch = x[
                    :,
                    g * cg : (g + 1) * cg,
                    i * stride[0] : i * stride[0] + dilation[0] * (kh - 1) + 1 : dilation[0],
                    j * stride[1] : j * stride[1] + dilation[1] * (kw - 1) + 1 : dilation[1],
                ]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out + (0 if b is None else np.asarray(b)[None, :, None, None])


@pytest.mark.parametrize(
    "cfg",
    [
        dict(kernel_size=3, stride=1, padding=1, dilation=1, groups=1),
        dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=1, groups=2),
        dict(kernel_size=2, stride=1, padding=2, dilation=2, groups=1),
    ],
)
def test_conv2d_matches_direct_loops_and_equinox(cfg):
    conv = tl.Conv2d(4, 6, **cfg, key=key(0))
    x = randn(key(1), (2, 4, 7, 6))
    ks = conv.kernel_size
    expected = direct_conv2d(
        x,
        conv.weight,
        conv.bias,
        conv.stride,
        tuple(p[0] for p in conv.padding),
        conv.dilation,
        conv.groups,
    )
    out = conv(x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    ref = eqx.nn.Conv2d(
        4, 6, ks, conv.stride, conv.padding, conv.dilation, cfg["groups"], key=key(2)
    )
    ref = eqx.tree_at(lambda m: (m.weight, m.bias), ref, (conv.weight, conv.bias.reshape(6, 1, 1)))
    np.testing.assert_allclose(conv(x[0]), ref(x[0]), rtol=1e-5, atol=1e-5)  # unbatched CHW


def test_conv2d_same_padding_and_padding_modes():
    conv = tl.Conv2d(1, 2, (3, 4), padding="same", key=key(0))
    x = randn(key(1), (1, 5, 6))
    assert conv(x).shape == (2, 5, 6)
    # PyTorch's split for an even kernel: total 3 -> 1 before, 2 after.
    assert conv.padding == ((1, 1), (1, 2))
    for mode, np_mode in [("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")]:
        c = tl.Conv2d(1, 2, 3, padding=1, padding_mode=mode, key=key(0))
        xp = np.pad(np.asarray(x)[None], ((0, 0), (0, 0), (1, 1), (1, 1)), mode=np_mode)
        expected = direct_conv2d(xp, c.weight, c.bias, (1, 1), (0, 0), (1, 1), 1)[0]
        np.testing.assert_allclose(c(x), expected, rtol=1e-5, atol=1e-5)


def test_conv1d_matches_equinox_and_causal_padding():
    conv = tl.Conv1d(3, 4, 3, stride=2, padding=1, key=key(0))
    ref = eqx.nn.Conv1d(3, 4, 3, 2, 1, key=key(1))
    ref = eqx.tree_at(lambda m: (m.weight, m.bias), ref, (conv.weight, conv.bias.reshape(4, 1)))
    x = randn(key(2), (3, 11))
    np.testing.assert_allclose(conv(x), ref(x), rtol=1e-5, atol=1e-5)
    assert conv(jnp.stack([x, x])).shape == (2, 4, 6)
    causal = tl.Conv1d(2, 2, 3, padding=((2, 0),), key=key(0))
    y = causal(x[:2])
    y_changed = causal(x[:2].at[:, 7:].set(100.0))
    np.testing.assert_array_equal(y[:, :7], y_changed[:, :7])  # output t sees inputs <= t


def test_conv_errors_are_explicit():
    conv = tl.Conv2d(3, 4, 3, key=key(0))
    with pytest.raises(
        ValueError,
        match=re.escape("input has 2 channels (axis 0), the layer expects in_channels=3"),
    ):
        conv(jnp.ones((2, 5, 5)))
    with pytest.raises(
        ValueError, match=re.escape("expected an input of shape (C, H, W) or (N, C, H, W)")
    ):
        conv(jnp.ones((5, 5)))
    with pytest.raises(ValueError, match="divisible by groups=2"):
        tl.Conv2d(3, 4, 3, groups=2, key=key(0))


def test_conv_graph_is_one_conv_in_named_scope():
    conv = tl.Conv2d(1, 2, 3, key=key(0))
    jaxpr = jax.make_jaxpr(conv)(jnp.ones((1, 5, 5)))
    prims = [e.primitive.name for e in jaxpr.eqns]
    assert prims.count("conv_general_dilated") == 1
    assert {str(e.source_info.name_stack) for e in jaxpr.eqns} == {"tljax.layers.Conv2d"}


def pool_reference(x, k, s, p, op, count_include_pad=True):
    x = np.asarray(x, np.float64)
    fill = -np.inf if op == "max" else 0.0
    xp = np.pad(x, ((0, 0), (p, p), (p, p)), constant_values=fill)
    valid = np.pad(np.ones_like(x), ((0, 0), (p, p), (p, p)))
    oh = (xp.shape[1] - k) // s + 1
    ow = (xp.shape[2] - k) // s + 1
    out = np.zeros((x.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * s : i * s + k, j * s : j * s + k]
            if op == "max":
                out[:, i, j] = win.max(axis=(1, 2))
            else:
                cnt = (
                    k * k
                    if count_include_pad
                    else valid[:, i * s : i * s + k, j * s : j * s + k].sum(axis=(1, 2))
                )
                out[:, i, j] = win.sum(axis=(1, 2)) / cnt
    return out


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pools_match_loops(k, s, p):
    x = randn(key(3), (2, 7, 6))
    np.testing.assert_allclose(
        tl.MaxPool2d(k, s, p)(x), pool_reference(x, k, s, p, "max"), rtol=1e-6
    )
    np.testing.assert_allclose(
        tl.AvgPool2d(k, s, p)(x), pool_reference(x, k, s, p, "avg"), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        tl.AvgPool2d(k, s, p, count_include_pad=False)(x),
        pool_reference(x, k, s, p, "avg", count_include_pad=False),
        rtol=1e-5,
        atol=1e-6,
    )
    assert tl.MaxPool2d(k, s, p)(jnp.stack([x, x])).shape[0] == 2


def test_pools_match_equinox_and_use_window_primitives():
    x = randn(key(4), (3, 8, 8))
    np.testing.assert_allclose(tl.MaxPool2d(2)(x), eqx.nn.MaxPool2d(2, 2)(x))
    np.testing.assert_allclose(tl.AvgPool2d(2)(x), eqx.nn.AvgPool2d(2, 2)(x), rtol=1e-6)
    assert "reduce_window_max" in str(jax.make_jaxpr(tl.MaxPool2d(2))(x))
    assert "reduce_window_sum" in str(jax.make_jaxpr(tl.AvgPool2d(2))(x))
    # Max pooling must be differentiable (it sits inside trained CNNs).
    g = jax.grad(lambda x: tl.MaxPool2d(2)(x).sum())(x)
    assert float(g.sum()) == 3 * 16


def test_layernorm_matches_equinox_and_formula():
    ln = tl.LayerNorm((3, 4))
    ln = eqx.tree_at(
        lambda m: (m.weight, m.bias), ln, (randn(key(0), (3, 4)), randn(key(1), (3, 4)))
    )
    x = randn(key(2), (5, 3, 4)) * 3 + 1
    ref = eqx.nn.LayerNorm((3, 4))
    ref = eqx.tree_at(lambda m: (m.weight, m.bias), ref, (ln.weight, ln.bias))
    np.testing.assert_allclose(ln(x), jax.vmap(ref)(x), rtol=1e-5, atol=1e-5)
    xn = np.asarray(x, np.float64)
    mu = xn.mean(axis=(1, 2), keepdims=True)
    var = xn.var(axis=(1, 2), keepdims=True)
    expected = (xn - mu) / np.sqrt(var + 1e-5) * np.asarray(ln.weight) + np.asarray(ln.bias)
    np.testing.assert_allclose(ln(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not end with normalized_shape"):
        ln(jnp.ones((4, 3)))


def test_batchnorm_training_matches_pytorch_formulas():
    bn = tl.BatchNorm(3, momentum=0.2)
    bn = eqx.tree_at(
        lambda m: (m.weight, m.bias), bn, (jnp.array([1.0, 2.0, 0.5]), jnp.array([0.0, -1.0, 3.0]))
    )
    state = bn.init_state()
    x = randn(key(5), (4, 3, 2, 2)) * 2 + 1
    y, new = bn(x, state)
    xn = np.asarray(x, np.float64)
    mean = xn.mean(axis=(0, 2, 3))
    var = xn.var(axis=(0, 2, 3))
    unbiased = xn.var(axis=(0, 2, 3), ddof=1)
    expected = (xn - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    expected = (
        expected * np.array([1, 2, 0.5])[None, :, None, None]
        + np.array([0, -1, 3])[None, :, None, None]
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new.running_mean, 0.8 * 0 + 0.2 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.running_var, 0.8 * 1 + 0.2 * unbiased, rtol=1e-5)
    # Inference: running statistics, state passed through unchanged.
    y_inf, same = bn(x, new, inference=True)
    rm, rv = np.asarray(new.running_mean), np.asarray(new.running_var)
    expected_inf = (xn - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    expected_inf = (
        expected_inf * np.array([1, 2, 0.5])[None, :, None, None]
        + np.array([0, -1, 3])[None, :, None, None]
    )
    np.testing.assert_allclose(y_inf, expected_inf, rtol=1e-5, atol=1e-5)
    assert same is new
    y_mode, _ = eqx.nn.inference_mode(bn)(x, new)
    np.testing.assert_array_equal(y_mode, y_inf)


def test_batchnorm_in_sequential_threads_state_under_jit():
    k1, k2 = jax.random.split(key(6))
    net = tl.Sequential(
        tl.Linear(3, 4, key=k1), tl.BatchNorm(4), tl.ReLU(), tl.Linear(4, 2, key=k2)
    )
    state = net.init_state()
    assert state[0] is None and isinstance(state[1], tl.BatchNormState)
    x = randn(key(7), (8, 3))
    y, state2 = eqx.filter_jit(net)(x, state)
    assert y.shape == (8, 2)
    assert not np.allclose(state2[1].running_mean, 0.0)
    with pytest.raises(ValueError, match=re.escape("call it as `y, state = seq(x, state)`")):
        net(x)


def test_batchnorm_errors_explain():
    bn = tl.BatchNorm(3)
    with pytest.raises(ValueError, match=re.escape("call it outside jax.vmap")):
        bn(jnp.ones(3), bn.init_state())
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn(jnp.ones((1, 3)), bn.init_state())
