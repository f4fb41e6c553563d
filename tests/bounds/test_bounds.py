"""Soundness, tightness, peer agreement and errors of tljax.bound."""

import itertools
import re
import types

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import tljax
from tljax.core import InvalidBoxError, UnsupportedPrimitiveError

METHODS = ["ibp", "affine", "crown", "alpha-crown"]
SETTINGS = settings(
    max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def mlp(x, params, act=jax.nn.relu):
    h = x
    for i, (w, b) in enumerate(params):
        h = w @ h + b
        if i < len(params) - 1:
            h = act(h)
    return h


def init_mlp(seed, sizes, scale=1.0):
    rng = np.random.RandomState(seed)
    return [
        (
            (rng.randn(o, i) * scale / np.sqrt(i)).astype(np.float32),
            (rng.randn(o) * 0.1).astype(np.float32),
        )
        for i, o in itertools.pairwise(sizes)
    ]


def mixed_act(h):
    # One network exercising several relaxations at once.
    n = h.shape[0] // 4
    return jnp.concatenate(
        [
            jax.nn.relu(h[:n]),
            jnp.tanh(h[n : 2 * n]),
            jax.nn.sigmoid(h[2 * n : 3 * n]),
            jnp.abs(h[3 * n :]),
        ]
    )


def mlp_mixed(x, params):
    return mlp(x, params, act=mixed_act)


def mlp_smooth(x, params):
    return mlp(x, params, act=lambda h: jax.nn.softplus(h) + 0.5 * jnp.exp(-jnp.square(h)))


def points_with_corners(key, lo, hi, n):
    """n uniform points plus every corner (small dims) or random corners."""
    d = lo.size
    pts = jax.random.uniform(key, (n, d), minval=lo, maxval=hi)
    if d <= 10:
        bits = np.array(np.meshgrid(*[[0, 1]] * d, indexing="ij")).reshape(d, -1).T
    else:
        bits = np.random.RandomState(0).randint(0, 2, (256, d))
    corners = np.where(bits == 1, np.asarray(hi), np.asarray(lo)).astype(np.float32)
    return jnp.concatenate([pts, jnp.asarray(corners)])


def assert_contains(bounds, ys, what):
    lo, hi = np.asarray(bounds.lower), np.asarray(bounds.upper)
    below = ys < lo
    above = ys > hi
    n = int(below.sum() + above.sum())
    assert n == 0, (
        f"{what}: {n} violations, worst "
        f"{(lo - ys)[below].max() if below.any() else (ys - hi)[above].max()}"
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("net", [mlp, mlp_mixed, mlp_smooth], ids=["relu", "mixed", "smooth"])
@SETTINGS
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([1e-3, 0.05, 0.5]))
def test_bounds_contain_float32_and_float64_outputs(net, method, seed, eps):
    params = init_mlp(seed, [4, 16, 16, 3], scale=1.5)
    x = np.random.RandomState(seed + 1).randn(4).astype(np.float32)
    box = tljax.Box(jnp.asarray(x - eps), jnp.asarray(x + eps))
    b = tljax.bound(net, box, params, method=method)
    pts = points_with_corners(jax.random.PRNGKey(seed), box.lower, box.upper, 2000)
    ys32 = np.asarray(jax.jit(jax.vmap(lambda p: net(p, params)))(pts))
    assert_contains(b, ys32, f"{method} vs float32 execution")
    # float64 execution approximates the real-valued network.
    p64 = [(w.astype(np.float64), c.astype(np.float64)) for w, c in params]
    with jax.enable_x64(True):
        ys64 = np.asarray(
            jax.vmap(lambda p: net(p, p64))(jnp.asarray(np.asarray(pts), jnp.float64))
        )
    assert_contains(b, ys64, f"{method} vs float64 execution")


def cnn(x, params):
    w1, w2, wl = params
    y = jax.lax.conv_general_dilated(
        x[None], w1, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    y = jax.nn.relu(y)
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    y = jax.lax.conv_general_dilated(
        y, w2, (2, 2), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    y = jnp.tanh(y)
    return wl @ y.reshape(-1)


def attention(x, params):
    wq, wk, wv = params
    q, k, v = x @ wq, x @ wk, x @ wv
    return jax.nn.softmax(q @ k.T / 2.0, axis=-1) @ v


@pytest.mark.parametrize("method", ["ibp", "affine", "crown"])
@pytest.mark.parametrize("case", ["cnn", "attention"])
def test_cnn_and_attention_bounds_are_sound(case, method):
    rng = np.random.RandomState(3)
    if case == "cnn":
        params = [
            (rng.randn(3, 2, 3, 3) * 0.4).astype(np.float32),
            (rng.randn(2, 3, 2, 2) * 0.4).astype(np.float32),
            (rng.randn(3, 2 * 2 * 2) * 0.5).astype(np.float32),
        ]
        fn, shape = cnn, (2, 8, 8)
    else:
        params = [(rng.randn(4, 4) * 0.5).astype(np.float32) for _ in range(3)]
        fn, shape = attention, (3, 4)
    x = rng.randn(*shape).astype(np.float32)
    box = tljax.Box.linf(jnp.asarray(x), 0.05)
    b = tljax.bound(fn, box, params, method=method)
    pts = box.sample(jax.random.PRNGKey(0), 10_000)
    ys = np.asarray(jax.jit(jax.vmap(lambda p: fn(p, params)))(pts))
    assert_contains(b, ys, f"{case}/{method}")


def test_tightness_is_monotone_across_methods():
    params = init_mlp(7, [5, 20, 20, 20, 4])
    x = np.zeros(5, np.float32)
    box = tljax.Box.linf(jnp.asarray(x), 0.3)
    w = {
        m: np.asarray(tljax.bound(mlp, box, params, method=m, float_sound=fs).width)
        for m in METHODS
        for fs in [True]
    }
    assert np.all(w["crown"] <= w["ibp"] + 1e-6)
    assert np.all(w["affine"] <= w["ibp"] + 1e-6)
    assert w["affine"].sum() < 0.5 * w["ibp"].sum()
    assert np.all(w["alpha-crown"] <= w["crown"] + 1e-6)
    assert w["crown"].sum() < w["ibp"].sum()


def test_float_sound_bounds_contain_unsound_ones():
    params = init_mlp(11, [4, 16, 16, 2])
    box = tljax.Box.linf(jnp.ones(4), 0.1)
    for m in METHODS:
        s = tljax.bound(mlp, box, params, method=m, float_sound=True)
        u = tljax.bound(mlp, box, params, method=m, float_sound=False)
        assert np.all(np.asarray(s.lower) <= np.asarray(u.lower))
        assert np.all(np.asarray(s.upper) >= np.asarray(u.upper))


def test_float_attack_is_not_certified():
    # Known floating-point attack on verifiers: the real network computes y = x, but in float32
    # x + 2^24 rounds to an even integer, so the executed network outputs 0 at x = 0.5.
    c = np.float32(2.0**24)

    def net(x):
        h = jax.nn.relu(x + c)
        return h - c

    box = tljax.Box(jnp.array([0.5], jnp.float32), jnp.array([0.75], jnp.float32))
    naive = tljax.bound(net, box, method="crown", float_sound=False)
    assert float(naive.lower[0]) >= 0.25  # the naive float computation "certifies" y >= 0.25
    assert float(jax.jit(net)(jnp.array([0.5], jnp.float32))[0]) < 0.25  # execution violates it
    for method in METHODS:
        sound = tljax.bound(net, box, method=method)
        assert float(sound.lower[0]) <= float(jax.jit(net)(jnp.array([0.5], jnp.float32))[0])
        assert float(sound.lower[0]) < 0.25


def test_spec_margins_are_tighter_than_box_differences():
    params = init_mlp(5, [4, 12, 12, 3])
    box = tljax.Box.linf(jnp.zeros(4), 0.2)
    C = np.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], np.float32)
    pts = box.sample(jax.random.PRNGKey(1), 5000)
    ys = np.asarray(jax.vmap(lambda p: mlp(p, params))(pts)) @ C.T
    for method in ["affine", "crown"]:
        m = tljax.bound(mlp, box, params, spec=C, method=method)
        b = tljax.bound(mlp, box, params, method=method)
        naive_lo = np.asarray(b.lower)[0] - np.asarray(b.upper)[1:]
        assert np.all(np.asarray(m.lower) >= naive_lo - 1e-6)
        assert np.sum(np.asarray(m.lower)) > np.sum(naive_lo)
        assert_contains(m, ys, f"{method} spec margins")


def test_relu_splits_restrict_and_detect_empty_domains():
    params = init_mlp(2, [3, 8, 2])
    box = tljax.Box.linf(jnp.zeros(3), 0.5)
    shapes = tljax.bounds.relu_shapes(mlp, box, params)
    assert shapes == [(8,)]
    # neuron 0's pre-activation bounds decide which split is empty
    pre_w, pre_b = params[0]
    lo0 = float(pre_b[0] - np.abs(pre_w[0]).sum() * 0.5)
    hi0 = float(pre_b[0] + np.abs(pre_w[0]).sum() * 0.5)
    assert lo0 < 0 < hi0
    free = tljax.bound(mlp, box, params)
    for side in (1, -1):
        s = [np.zeros(8, np.int32)]
        s[0][0] = side
        sb = tljax.bound(mlp, box, params, relu_splits=s)
        assert np.all(np.asarray(sb.lower) >= np.asarray(free.lower) - 1e-6)
        pts = np.asarray(box.sample(jax.random.PRNGKey(side + 5), 20000))
        pre = pts @ pre_w.T + pre_b
        keep = pre[:, 0] >= 0 if side == 1 else pre[:, 0] <= 0
        ys = np.asarray(jax.vmap(lambda p: mlp(p, params))(jnp.asarray(pts[keep])))
        assert_contains(sb, ys, f"split side {side}")


def test_equinox_flax_and_function_give_same_bounds():
    from flax import nnx

    key = jax.random.PRNGKey(0)
    eq = eqx.nn.MLP(4, 3, 8, 2, activation=jax.nn.relu, key=key)
    box = tljax.Box.linf(jnp.zeros(4), 0.1)
    b_eqx = tljax.bound(eq, box)

    class Net(nnx.Module):
        def __init__(self):
            self.l1 = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
            self.l2 = nnx.Linear(8, 8, rngs=nnx.Rngs(1))
            self.l3 = nnx.Linear(8, 3, rngs=nnx.Rngs(2))

        def __call__(self, x):
            return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))

    net = Net()
    b_nnx = tljax.bound(net, box)
    # The same weights as a plain function of (params, x) give identical bounds.
    ws = [(np.asarray(layer.weight), np.asarray(layer.bias)) for layer in eq.layers]
    b_fn = tljax.bound(mlp, box, ws)
    np.testing.assert_array_equal(np.asarray(b_eqx.lower), np.asarray(b_fn.lower))
    ws_nnx = [
        (np.asarray(layer.kernel.value).T, np.asarray(layer.bias.value))
        for layer in (net.l1, net.l2, net.l3)
    ]
    b_fn2 = tljax.bound(mlp, box, ws_nnx)
    np.testing.assert_allclose(
        np.asarray(b_nnx.lower), np.asarray(b_fn2.lower), rtol=1e-5, atol=1e-5
    )
    ys = np.asarray(jax.vmap(net)(box.sample(jax.random.PRNGKey(2), 2000)))
    assert_contains(b_nnx, ys, "nnx")


def test_bound_under_jit_and_vmap():
    params = init_mlp(4, [3, 8, 2])
    los = jnp.asarray(np.random.RandomState(0).randn(6, 3).astype(np.float32))
    his = los + 0.1
    f = jax.jit(jax.vmap(lambda lo, hi: tljax.bound(mlp, tljax.Box(lo, hi), params).lower))
    batched = np.asarray(f(los, his))
    one = np.stack(
        [np.asarray(tljax.bound(mlp, tljax.Box(los[i], his[i]), params).lower) for i in range(6)]
    )
    np.testing.assert_allclose(batched, one, rtol=1e-6, atol=1e-6)


def mlp_mul(x, params):
    # products of two relaxed values (McCormick rows) beside the mixed activations
    h = mlp(x, params, act=mixed_act)
    return h * jnp.tanh(h[::-1]) + h


@pytest.mark.parametrize("fn", [mlp_mixed, mlp_mul], ids=["mixed", "mul"])
@pytest.mark.parametrize("sound", [True, False], ids=["sound", "real"])
def test_mapped_bounds_match_single_calls_and_contain_samples(fn, sound):
    # Under jax.vmap the bound program sums rows by matrix-vector products (Options.matvec),
    # one box at a time by fused reductions: the same bounds up to summation order, each
    # containing the float32 outputs of its own box (unscaled weights, boxes of widths 1e-3..4).
    params = init_mlp(7, [5, 16, 16, 3], scale=3.0)
    rng = np.random.RandomState(3)
    centres = rng.randn(6, 5).astype(np.float32) * 4
    radii = np.float32([1e-3, 0.01, 0.1, 0.5, 1.0, 2.0])[:, None] * np.ones((1, 5), np.float32)
    los, his = jnp.asarray(centres - radii), jnp.asarray(centres + radii)

    def one(lo, hi):
        b = tljax.bound(fn, tljax.Box(lo, hi), params, method="crown", float_sound=sound)
        return b.lower, b.upper

    mlo, mhi = jax.jit(jax.vmap(one))(los, his)
    for i in range(len(radii)):
        b = tljax.bound(fn, tljax.Box(los[i], his[i]), params, method="crown", float_sound=sound)
        scale = 1e-5 * (1.0 + np.abs(np.asarray(b.upper)) + np.abs(np.asarray(b.lower)))
        np.testing.assert_array_less(np.abs(np.asarray(mlo[i]) - np.asarray(b.lower)), scale)
        np.testing.assert_array_less(np.abs(np.asarray(mhi[i]) - np.asarray(b.upper)), scale)
        pts = points_with_corners(jax.random.PRNGKey(i), los[i], his[i], 2000)
        ys = np.asarray(jax.jit(jax.vmap(lambda x: fn(x, params)))(pts))
        mapped = types.SimpleNamespace(lower=mlo[i], upper=mhi[i])
        assert_contains(mapped, ys, f"mapped box {i}")
        assert_contains(b, ys, f"single box {i}")


@pytest.mark.parametrize("method", ["crown", "crown-ibp", "alpha-crown"])
@pytest.mark.parametrize("with_spec", [False, True], ids=["outputs", "spec"])
def test_lower_only_keeps_the_lower_bound_and_an_interval_upper(method, with_spec):
    # lower_only: the output pass carries the lower rows only; `upper` is the interval of the
    # sweep (never tighter than the two-sided CROWN upper), and both still contain the samples
    params = init_mlp(11, [4, 12, 12, 3], scale=2.0)
    lo = jnp.asarray(np.float32([-1.0, 0.5, -0.2, 2.0]))
    box = tljax.Box(lo, lo + 0.6)
    spec = np.float32([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]) if with_spec else None
    kw = dict(method=method, spec=spec, alpha_iters=5)
    both = tljax.bound(mlp_mixed, box, params, **kw)
    half = tljax.bound(mlp_mixed, box, params, lower_only=True, **kw)
    tol = 1e-5 * (1.0 + np.abs(np.asarray(both.lower)))
    np.testing.assert_array_less(np.abs(np.asarray(half.lower) - np.asarray(both.lower)), tol)
    assert np.all(np.asarray(half.upper) >= np.asarray(both.upper) - tol)
    pts = points_with_corners(jax.random.PRNGKey(5), box.lower, box.upper, 3000)
    ys = np.asarray(jax.vmap(lambda x: mlp_mixed(x, params))(pts))
    if with_spec:
        ys = ys @ spec.T
    assert_contains(half, ys, f"{method} lower_only")
    if method == "crown":  # the interval upper is looser somewhere (else nothing was halved)
        assert np.any(np.asarray(half.upper) > np.asarray(both.upper) + tol)


def test_pytree_input_box():
    def f(inp):
        return jnp.tanh(inp["a"] * 2.0) + inp["b"].sum()

    box = tljax.Box({"a": jnp.zeros(2), "b": -jnp.ones(3)}, {"a": jnp.ones(2), "b": jnp.ones(3)})
    b = tljax.bound(f, box)
    assert np.all(np.asarray(b.lower) <= -3.0) and np.all(np.asarray(b.upper) >= np.tanh(2.0) + 3.0)


def test_box_validation_lists_every_offender():
    lo = jnp.array([0.0, 2.0, 1.0, jnp.nan])
    hi = jnp.array([1.0, 1.0, 0.5, 1.0])
    with pytest.raises(InvalidBoxError) as err:
        tljax.Box(lo, hi)
    msg = str(err.value)
    assert "index (1,): lower 2.0 > upper 1.0" in msg
    assert "index (2,): lower 1.0 > upper 0.5" in msg
    assert "index (3,): NaN" in msg
    with pytest.raises(InvalidBoxError, match="lower has shape"):
        tljax.Box(jnp.zeros(2), jnp.zeros(3))


def test_unsupported_primitive_names_primitive_and_source_line():
    def f(x):
        return jax.lax.erf_inv(x)  # no relaxation for erf_inv

    with pytest.raises(UnsupportedPrimitiveError) as err:
        tljax.bound(f, tljax.Box(jnp.zeros(2), jnp.ones(2) * 0.5))
    msg = str(err.value)
    assert "no rule for primitive 'erf_inv'" in msg
    assert re.search(r"test_bounds\.py:\d+", msg), msg


def test_boolean_arithmetic_on_bounded_value_is_a_clear_error():
    # where(x > 0, ...) is bounded (tests/bounds/test_coverage.py); combining predicates is not
    with pytest.raises(UnsupportedPrimitiveError, match=r"boolean|comparison"):
        tljax.bound(
            lambda x: jnp.where((x > 0) & (x < 0.5), x, 2 * x), tljax.Box(-jnp.ones(2), jnp.ones(2))
        )


@pytest.mark.parametrize("sound", [False, True])
def test_default_and_fast_compile_agree(monkeypatch, sound):
    # The suite compiles with TLJAX_FAST_COMPILE=1; users get XLA's default optimisation.
    params = init_mlp(3, [6, 16, 16, 3])
    x = np.linspace(-1, 1, 6).astype(np.float32)
    box = tljax.Box(x - 0.1, x + 0.1)
    graph = tljax.trace(mlp, box.lower, params)
    fast = tljax.bound(graph, box, params, float_sound=sound)
    monkeypatch.delenv("TLJAX_FAST_COMPILE", raising=False)
    full = tljax.bound(graph, box, params, float_sound=sound)
    np.testing.assert_allclose(full.lower, fast.lower, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.upper, fast.upper, rtol=1e-5, atol=1e-6)
    pts = jax.random.uniform(jax.random.PRNGKey(0), (4000, 6), minval=box.lower, maxval=box.upper)
    ys = jax.vmap(lambda p: mlp(p, params))(pts)
    assert bool(jnp.all(ys >= full.lower)) and bool(jnp.all(ys <= full.upper))


@pytest.mark.parametrize("budget", [0, 24, None], ids=["no-symbols", "budget-spent", "default"])
def test_affine_symbol_budget_stays_sound(budget):
    # Past the symbol budget, relaxation gaps go to the remainder box: looser, still sound.
    from tljax.bounds._relax import Options
    from tljax.bounds._tape import record_graph
    from tljax.bounds._zonotope import run_affine

    params = init_mlp(4, [5, 16, 16, 16, 3], scale=1.5)
    box = tljax.Box.linf(jnp.asarray(np.linspace(-1, 1, 5), jnp.float32), 0.2)
    graph = tljax.trace(mlp_mixed, box.lower, params)
    leaves = graph.flatten_inputs(box.lower, params)
    tape = record_graph(graph, [True] + [False] * (len(leaves) - 1), leaves[1:])
    widths = {}
    for b in sorted({0, 24, 10_000} | ({budget} if budget is not None else set())):
        ((lo, hi),) = run_affine(
            tape, {tape.inputs[0].id: (box.lower, box.upper)}, Options(), max_symbols=b
        )[0]
        widths[b] = float(jnp.sum(hi - lo))
        pts = points_with_corners(jax.random.PRNGKey(b), box.lower, box.upper, 3000)
        ys = np.asarray(jax.vmap(lambda p: mlp_mixed(p, params))(pts))
        assert_contains(tljax.Bounds(lo, hi, method="affine", float_sound=True), ys, f"budget {b}")
    assert widths[10_000] <= widths[24] <= widths[0] + 1e-4


def test_affine_refuses_certificates_and_splits():
    params = init_mlp(1, [3, 4, 2])
    box = tljax.Box.linf(jnp.zeros(3), 0.1)
    with pytest.raises(tljax.core.InputError, match="certificate"):
        tljax.bound(mlp, box, params, method="affine", certificate=True)
    with pytest.raises(tljax.core.InputError, match="relu_splits"):
        tljax.bound(mlp, box, params, method="affine", relu_splits=[None])


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_product_of_a_value_with_itself_is_a_square(method):
    """x * x is recorded as a square: never below 0 (a product of two independent factors in
    [-1, 2] would give -2), and the samples stay inside."""
    box = tljax.Box(jnp.array([-1.0, 0.5, -3.0]), jnp.array([2.0, 1.5, -2.0]))
    b = tljax.bound(lambda x: x * x, box, method=method)
    xs = np.random.default_rng(0).uniform(box.lower, box.upper, (4000, 3)).astype(np.float32)
    xs = np.concatenate([xs, np.asarray([box.lower, box.upper, [0.0, 0.5, -2.0]], np.float32)])
    ys = xs * xs
    assert np.all(np.asarray(b.lower) <= ys.min(0)) and np.all(ys.max(0) <= np.asarray(b.upper))
    np.testing.assert_allclose(b.lower, [0.0, 0.25, 4.0], atol=1e-5)
    np.testing.assert_allclose(b.upper, [4.0, 2.25, 9.0], rtol=1e-5)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_bounds_of_a_tanh_gradient_contain_float32_and_float64_values(method):
    """d/dx tanh(x) = 1 - tanh(x)^2: JAX >= 0.11 writes it with the `one_minus_square` primitive
    (lowered as (1 + t)(1 - t)), JAX 0.10 with sub and mul; both must be bounded soundly."""
    grad = jax.grad(lambda x: jnp.sum(jnp.tanh(2.0 * x)))
    box = tljax.Box(jnp.array([-1.0, 0.2, -0.1, 0.9]), jnp.array([-0.5, 0.4, 0.3, 1.0]))
    b = tljax.bound(grad, box, method=method)
    xs = np.random.default_rng(1).uniform(box.lower, box.upper, (5000, 4))
    xs = np.concatenate([xs, np.asarray([box.lower, box.upper])]).astype(np.float32)
    ys32 = np.asarray(jax.jit(jax.vmap(grad))(jnp.asarray(xs)))
    ys64 = 2.0 / np.cosh(2.0 * xs.astype(np.float64)) ** 2
    for ys in (ys32, ys64):
        assert np.all(np.asarray(b.lower) <= ys.min(0)) and np.all(ys.max(0) <= np.asarray(b.upper))
    if method == "crown":  # IBP loses the correlation of (1 - t) and t in JAX 0.10's form
        assert np.all(np.asarray(b.upper - b.lower) < 2.0)  # not vacuous (the range is [0, 2])


def test_alpha_steps_and_rate_do_not_recompile():
    # alpha_iters / alpha_lr are arguments of the compiled program: one compilation serves all
    from tljax.bounds import _api

    rng = np.random.RandomState(5)
    params = [
        (rng.randn(32, 3).astype(np.float32), rng.randn(32).astype(np.float32)),
        (rng.randn(2, 32).astype(np.float32), rng.randn(2).astype(np.float32)),
    ]

    def net(x, p):
        return p[1][0] @ jax.nn.relu(p[0][0] @ x + p[0][1]) + p[1][1]

    box = tljax.Box.linf(np.zeros(3, np.float32), 1.0)
    g = tljax.trace(net, box.lower, params)
    runs = {}
    for iters, lr in [(1, 0.1), (30, 0.1), (30, 0.5)]:
        b = tljax.bound(g, box, params, method="alpha-crown", alpha_iters=iters, alpha_lr=lr)
        compiled = next(reversed(_api._CACHE.values()))[1]
        runs[(iters, lr)] = (np.asarray(b.lower), np.asarray(b.upper))
        # the same options uncompiled: the traced count and rate are used, not ignored
        ref = tljax.bound(
            g, box, params, method="alpha-crown", alpha_iters=iters, alpha_lr=lr, jit=False
        )
        lo, hi = runs[(iters, lr)]
        np.testing.assert_allclose(lo, np.asarray(ref.lower), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(hi, np.asarray(ref.upper), rtol=1e-5, atol=1e-5)
    assert compiled._cache_size() == 1
    # the options changed the bounds
    assert len({v[0].tobytes() + v[1].tobytes() for v in runs.values()}) == 3
