"""Every jax.nn activation, every tljax.layers layer and the derivative programs of smooth networks
are bounded by every method, soundly: sampled float32 outputs (under jit) and the box corners lie
inside. The coverage table is checked against the layer and activation lists, so a new layer
without bounds fails here."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
import tljax.layers as L
from tljax.bounds import RULES, register, registered
from tljax.core import UnsupportedPrimitiveError

METHODS = ["ibp", "affine", "crown", "alpha-crown", "crown-ibp"]


def _methods():
    from tljax.bounds._api import METHODS as available

    return [m for m in METHODS if m in available]


def _samples(box: tljax.Box, n: int, key=0):
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    u = np.random.default_rng(key).uniform(size=(n, *lo.shape)).astype(np.float32)
    xs = lo + u * (hi - lo)
    xs = np.clip(xs, lo, hi)
    d = lo.size
    if d <= 8:
        corners = np.array(
            list(itertools.product(*zip(lo.reshape(-1), hi.reshape(-1), strict=True))), np.float32
        )
        xs = np.concatenate([xs, corners.reshape(-1, *lo.shape)])
    return jnp.asarray(xs)


def _assert_contains(fn, box, b, *args, n=2000, real=False):
    """Sampled outputs inside the bounds: float32 outputs under jit (float-sound bounds), or with
    `real`, outputs in float64 with a float32-level tolerance (bounds of the real network)."""
    xs = _samples(box, n)
    if real:
        with jax.enable_x64():
            ys = jax.jit(jax.vmap(lambda x: fn(x, *args)))(np.asarray(xs, np.float64))
    else:
        ys = jax.jit(jax.vmap(lambda x: fn(x, *args)))(xs)
    for y, lo, hi in zip(
        jax.tree_util.tree_leaves(ys),
        jax.tree_util.tree_leaves(b.lower),
        jax.tree_util.tree_leaves(b.upper),
        strict=True,
    ):
        y = np.asarray(y, np.float64).reshape(len(xs), -1)
        lo = np.asarray(lo, np.float64).reshape(-1)
        hi = np.asarray(hi, np.float64).reshape(-1)
        assert np.all(lo <= hi), (lo, hi)
        tol = 1e-5 * (1 + np.abs(y)) if real else 0.0
        bad = (y < lo - tol) | (y > hi + tol)
        assert not bad.any(), (y[bad.any(1)][:3], lo, hi)


# ----------------------------------------------------------------------------------------------
# jax.nn activations inside an unscaled two-layer network.

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "soft_sign": jax.nn.soft_sign,
    "silu": jax.nn.silu,
    "swish": jax.nn.swish,
    "log_sigmoid": jax.nn.log_sigmoid,
    "leaky_relu": jax.nn.leaky_relu,
    "hard_tanh": jax.nn.hard_tanh,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "hard_silu": jax.nn.hard_silu,
    "hard_swish": jax.nn.hard_swish,
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "selu": jax.nn.selu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "mish": jax.nn.mish,
    "squareplus": jax.nn.squareplus,
    "sparse_plus": jax.nn.sparse_plus,
    "sparse_sigmoid": jax.nn.sparse_sigmoid,
    "tanh": jax.nn.tanh,
    "identity": jax.nn.identity,
    "log_softmax": jax.nn.log_softmax,
    "softmax": jax.nn.softmax,
    "logsumexp": lambda x: x - jax.nn.logsumexp(x, axis=-1, keepdims=True),
    "standardize": jax.nn.standardize,
    "glu": lambda x: jax.nn.glu(jnp.concatenate([x, x[::-1]])),
    "log1mexp": lambda x: jax.nn.log1mexp(jax.nn.softplus(x) + 0.1),
    "logmeanexp": lambda x: x - jax.nn.logmeanexp(x, axis=-1, keepdims=True),
}
# Functions of jax.nn that are not activations of one array.
NOT_ACTIVATIONS = {
    "dot_product_attention",  # bounded in test_attention_bounds.py
    "get_scaled_dot_general_config",
    "scaled_dot_general",
    "scaled_matmul",
    "initializers",
    "one_hot",
}

_W1 = np.array([[3.0, -2.0, 1.5], [-4.0, 1.0, 2.5], [0.5, 5.0, -1.0], [2.0, 2.0, 2.0]], np.float32)
_B1 = np.array([-1.0, 0.5, 2.0, -3.0], np.float32)
_W2 = np.array([[1.0, -2.0, 0.5, 3.0], [-1.5, 1.0, 2.0, -0.5]], np.float32)


def _net(act):
    def f(x):
        h = act(_W1 @ x + _B1)
        return _W2 @ h

    return f


def test_every_jax_nn_function_is_classified():
    public = {n for n in dir(jax.nn) if not n.startswith("_")}
    missing = public - set(ACTIVATIONS) - NOT_ACTIVATIONS - {"gelu"}
    assert not missing, f"jax.nn functions without a bounds test: {sorted(missing)}"


# The three drivers (interval, zonotope, CROWN back-substitution) for every activation by default;
# alpha-CROWN and CROWN-IBP reuse the CROWN driver: a representative subset by default, all slow.
DRIVERS = ["ibp", "affine", "crown"]
SUBSET = {"relu", "sigmoid", "elu", "gelu_exact", "leaky_relu", "hard_tanh"}
# eager bounds are faster for small programs, compiled ones for the softmax family
COMPILED = {"softmax", "log_softmax", "logsumexp", "logmeanexp", "standardize", "glu", "celu"}


def _activation_cases():
    for name in sorted(ACTIVATIONS):
        if name in COMPILED:  # slow to compile: CROWN by default, the other drivers slow
            yield pytest.param(name, ["crown"], id=f"{name}-crown")
            yield pytest.param(name, DRIVERS, id=f"{name}-drivers", marks=pytest.mark.slow)
        else:
            yield pytest.param(name, DRIVERS, id=f"{name}-drivers")
        marks = () if name in SUBSET else (pytest.mark.slow,)
        yield pytest.param(
            name, ["alpha-crown", "crown-ibp"], id=f"{name}-crown-variants", marks=marks
        )


@pytest.mark.parametrize("name,methods", list(_activation_cases()))
def test_activation_bounded_by_every_method(name, methods):
    # unscaled weights: pre-activations from about -14 to 10, some neurons stable, some not
    f = _net(ACTIVATIONS[name])
    box = tljax.Box(np.array([-1.5, 0.5, -2.0], np.float32), np.array([0.5, 1.5, -1.0], np.float32))
    jit = name in COMPILED
    ib = tljax.bound(f, box, method="ibp", jit=jit)
    for method in [m for m in methods if m in _methods()]:
        b = tljax.bound(f, box, method=method, jit=jit, alpha_iters=3)
        _assert_contains(f, box, b, n=500)
        # every method is intersected with (or at least as tight as) interval arithmetic
        if method != "ibp":
            tol = 1e-4 * (1 + np.abs(np.asarray(ib.lower)))
            assert np.all(np.asarray(b.lower) >= np.asarray(ib.lower) - tol)


@pytest.mark.parametrize("center", [-100.0, -30.0, -12.5, 0.0, 14.0, 60.0])
@pytest.mark.parametrize("width", [1e-6, 3.0, 80.0])
def test_smooth_activations_far_tails(center, width):
    # the sigmoid rule that was unsound below -12.5: single neurons, tails and tiny/huge boxes
    acts = [jax.nn.sigmoid, jax.nn.silu, jnp.tanh, jax.nn.gelu]
    box = tljax.Box(
        np.array([center - width / 2], np.float32), np.array([center + width / 2], np.float32)
    )
    for act in acts:
        c = (
            float(act(jnp.float32(center + width / 2)) - act(jnp.float32(center - width / 2)))
            / width
        )

        def f(x, act=act, c=c):
            return act(x) - np.float32(c) * x

        b = tljax.bound(f, box, method="crown", jit=False)
        _assert_contains(f, box, b, n=3000)


# ----------------------------------------------------------------------------------------------
# tljax.layers: every layer in the package, in a small model.


def _layer_models():
    key = jax.random.PRNGKey(0)
    k = jax.random.split(key, 8)
    seq_box = tljax.Box(np.full((4, 8), -0.5, np.float32), np.full((4, 8), 0.5, np.float32))
    vec_box = tljax.Box(np.full((8,), -1.0, np.float32), np.full((8,), 1.0, np.float32))
    img_box = tljax.Box(np.zeros((1, 6, 6), np.float32), np.full((1, 6, 6), 0.5, np.float32))
    lin = L.Linear(8, 8, key=k[0])
    conv = L.Conv2d(1, 2, 3, key=k[2])
    mha = L.MultiheadAttention(8, 2, key=k[4])
    flash = L.FlashAttention(block_q=2, block_k=2)
    return {
        "Linear": (lin, vec_box),
        "MLP": (L.MLP(8, [8, 8], 2, activation=jax.nn.tanh, key=k[1]), vec_box),
        "Sequential": (L.Sequential(lin, L.ReLU(), L.Identity(), L.Dropout(0.5, True)), vec_box),
        "ReLU": (L.Sequential(lin, L.ReLU()), vec_box),
        "Sigmoid": (L.Sequential(lin, L.Sigmoid()), vec_box),
        "Tanh": (L.Sequential(lin, L.Tanh()), vec_box),
        "GELU": (L.Sequential(lin, L.GELU()), vec_box),
        "LeakyReLU": (L.Sequential(lin, L.LeakyReLU()), vec_box),
        "Softplus": (L.Sequential(lin, L.Softplus(beta=2.0, threshold=1.0)), vec_box),
        "LayerNorm": (L.Sequential(lin, L.LayerNorm(8)), vec_box),
        "Conv2d": (L.Sequential(conv, L.Flatten()), img_box),
        "Conv1d": (L.Conv1d(4, 2, 3, key=k[3]), seq_box),
        "MaxPool2d": (L.Sequential(conv, L.MaxPool2d(2)), img_box),
        "AvgPool2d": (L.Sequential(conv, L.AvgPool2d(2)), img_box),
        "MultiheadAttention": (mha, seq_box),
        "FlashAttention": (lambda x: flash(*[x.reshape(4, 2, 4)] * 3), seq_box),
        "DiagonalSSM": (L.DiagonalSSM(8, 4, key=k[6]), seq_box),
        "SelectiveSSM": (L.SelectiveSSM(8, 4, key=k[7]), seq_box),
        "MambaBlock": (L.MambaBlock(8, 4, key=k[7]), seq_box),
    }


# Layers (and functions) of tljax.layers with their own test elsewhere or no boxed input.
LAYERS_ELSEWHERE = {
    "BatchNorm": "stateful; folded into an affine map by tljax.transforms (test_fold.py)",
    "BatchNormState": "the state record of BatchNorm",
    "Embedding": "integer token input: nothing to box",
    "Flatten": "in the Conv2d model",
    "Identity": "in the Sequential model",
    "Dropout": "in the Sequential model (inference: identity)",
    "dot_product_attention": "inside MultiheadAttention",
    "flash_attention": "inside FlashAttention",
    "attention_kernel": "the kernel FlashAttention calls",
    "flash_attention_kernel": "attention_kernel() with the defaults: inside FlashAttention",
    "linear_recurrence_parallel": "inside DiagonalSSM",
    "linear_recurrence_sequential": "inside DiagonalSSM",
    "selective_scan": "inside SelectiveSSM",
}


def test_every_layer_has_a_bounds_test():
    public = {n for n in dir(L) if not n.startswith("_")}
    covered = set(_layer_models()) | set(LAYERS_ELSEWHERE)
    assert not public - covered, f"tljax.layers without a bounds test: {sorted(public - covered)}"


_HEAVY_LAYERS = {
    "MultiheadAttention",
    "FlashAttention",
    "MambaBlock",
    "SelectiveSSM",
    "DiagonalSSM",
}


def _layer_cases():
    # by default one pass each (CROWN, intersected with intervals; IBP for the heavy layers: their
    # lowering is what is new); every driver and the CROWN variants in the slow set
    for name in sorted(_layer_models()):
        default = ["ibp"] if name in _HEAVY_LAYERS else ["crown"]
        yield pytest.param(name, default, id=f"{name}-{default[0]}")
        yield pytest.param(name, METHODS, id=f"{name}-all", marks=pytest.mark.slow)


@pytest.mark.parametrize("name,methods", list(_layer_cases()))
def test_layer_bounded_by_every_method(name, methods):
    model, box = _layer_models()[name]
    fn = lambda x: model(x)  # noqa: E731
    jit = name in _HEAVY_LAYERS and methods != ["ibp"]
    for method in [m for m in methods if m in _methods()]:
        b = tljax.bound(fn, box, method=method, jit=jit, alpha_iters=3)
        _assert_contains(fn, box, b, n=300)


# ----------------------------------------------------------------------------------------------
# Derivative programs of smooth networks (split, concatenate, select_n from jax.grad / hessian).


def _smooth_net(act):
    w1 = np.array([[1.5, -0.7], [0.3, 2.0], [-1.2, 0.8]], np.float32)
    w2 = np.array([0.9, -1.1, 0.6], np.float32)

    def u(x):
        return w2 @ act(w1 @ x + np.float32(0.1))

    return u


@pytest.mark.parametrize(
    "act",
    [
        pytest.param(jnp.tanh, id="tanh"),
        pytest.param(jnp.sin, id="sin"),
        pytest.param(jax.nn.sigmoid, id="sigmoid", marks=pytest.mark.slow),
        pytest.param(jax.nn.softplus, id="softplus", marks=pytest.mark.slow),
    ],
)
def test_derivative_programs(act):
    u = _smooth_net(act)
    box = tljax.Box(np.array([0.1, -0.4], np.float32), np.array([0.3, -0.2], np.float32))
    progs = {
        "grad": jax.grad(u),
        "jvp": lambda x: jax.jvp(u, (x,), (jnp.ones(2),))[1],
        "jacfwd": jax.jacfwd(u),
        "hessian": jax.hessian(u),  # split, concatenate
    }
    for name, p in progs.items():
        for method in ("crown",):
            b = tljax.bound(p, box, method=method, jit=False)
            _assert_contains(p, box, b, n=500)
            assert np.all(np.isfinite(np.asarray(b.lower))), name


# ----------------------------------------------------------------------------------------------
# Primitives that reduce to intervals or to the table's other classes.


@pytest.mark.parametrize(
    "name,fn",
    [
        ("sign", lambda x: jnp.sign(x) * 2.0 + x),
        ("floor_round_ceil", lambda x: jnp.floor(x) + jnp.round(x) - jnp.ceil(x)),
        ("reduce_prod", lambda x: jnp.prod(x)),
        ("sort", lambda x: jnp.sort(x) * jnp.arange(1.0, 4.0)),
        ("argmax", lambda x: jnp.argmax(x)),
        ("pow", lambda x: jnp.power(jnp.abs(x) + 0.5, 0.7) + (jnp.abs(x) + 1.0) ** -1.5),
        ("erf", lambda x: jax.scipy.special.erf(x) + jax.scipy.special.erfc(x * 2)),
        ("sin_cos", lambda x: jnp.sin(3 * x) * jnp.cos(x)),
        ("where_const", lambda x: jnp.where(x > 0.1, 1.0, -1.0) * x),
        ("split_concat", lambda x: jnp.concatenate(jnp.split(x, 3)[::-1]) * jnp.arange(3.0)),
        ("is_finite_where", lambda x: jnp.where(jnp.isfinite(x), x, 0.0)),
        ("heaviside", lambda x: (x > 0).astype(jnp.float32) + x),
    ],
)
def test_primitive_rules(name, fn):
    box = tljax.Box(np.array([-1.3, 0.2, -0.05], np.float32), np.array([0.9, 1.7, 0.4], np.float32))
    for method in _methods():
        b = tljax.bound(fn, box, method=method, jit=False, alpha_iters=3)
        _assert_contains(fn, box, b)


def test_select_is_exact_where_the_box_decides():
    # leaky_relu on a box where every pre-activation has a known sign: CROWN is exact.
    f = lambda x: jax.nn.leaky_relu(x * np.array([1.0, -1.0], np.float32)).sum()  # noqa: E731
    box = tljax.Box(np.array([0.5, 0.5], np.float32), np.array([1.0, 2.0], np.float32))
    b = tljax.bound(f, box, method="crown", float_sound=False, jit=False)
    # f = x0 + 0.01 * (-x1): range [0.5 - 0.02, 1.0 - 0.005]
    np.testing.assert_allclose([float(b.lower), float(b.upper)], [0.48, 0.995], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# The public extension point: a user primitive, registered once, bounded everywhere.


def _softsign_primitive():
    from jax.extend.core import Primitive
    from jax.interpreters import batching, mlir

    p = Primitive("user_softsign")
    impl = lambda x: x / (1.0 + jnp.abs(x))  # noqa: E731
    p.def_impl(impl)
    p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(p, mlir.lower_fun(impl, multiple_results=False))
    batching.defvectorized(p)
    return p


def test_unregistered_primitive_names_register():
    p = _softsign_primitive()
    with pytest.raises(UnsupportedPrimitiveError, match=r"tljax\.bounds\.register"):
        tljax.bound(lambda x: p.bind(x), tljax.Box(-np.ones(2, np.float32), np.ones(2, np.float32)))


def test_registered_user_primitive_is_bounded_by_every_method():
    p = _softsign_primitive()

    def interval(lo, hi, opts):
        # nondecreasing; one division and one add: a relative allowance covers the program
        f = lambda v: v / (1.0 + jnp.abs(v))  # noqa: E731
        pad = 4 * 2.0**-24
        return f(lo) - pad * jnp.abs(f(lo)) - 1e-38, f(hi) + pad * jnp.abs(f(hi)) + 1e-38

    register(p, interval=interval, name="softsign")
    try:
        assert registered()["user_softsign"] == "unary"
        fn = lambda x: _W2[:, :3] @ p.bind(_W1[:3] @ x)  # noqa: E731
        box = tljax.Box(np.full(3, -0.4, np.float32), np.full(3, 0.6, np.float32))
        for method in _methods():
            b = tljax.bound(fn, box, method=method, jit=False, alpha_iters=3)
            _assert_contains(fn, box, b)
    finally:
        RULES.pop(p, None)


def test_coverage_table_lists_kinds():
    table = registered()
    for name, kind in [
        ("tanh", "unary"),
        ("logistic", "unary"),
        ("erf", "unary"),
        ("sin", "unary"),
        ("mul", "affine"),
        ("gt", "select"),
        ("sign", "concretize"),
        ("split", "affine"),
        ("pow", "unary"),
    ]:
        assert table[name] == kind, (name, table.get(name))


# ----------------------------------------------------------------------------------------------
# Unscaled networks: the 2-8-1 sigmoid MLP with hidden biases in [-20, -14] that was bounded
# unsoundly, and random nets with biases up to +-30.


def test_sigmoid_mlp_with_far_negative_biases():
    rng = np.random.default_rng(3)
    w1 = rng.uniform(-1, 1, (8, 2)).astype(np.float32)
    b1 = rng.uniform(-20, -14, 8).astype(np.float32)
    w2 = rng.uniform(-3, 3, (1, 8)).astype(np.float32)
    f = lambda x: w2 @ jax.nn.sigmoid(w1 @ x + b1)  # noqa: E731
    box = tljax.Box(np.array([-0.5, -0.5], np.float32), np.array([0.5, 0.5], np.float32))
    for method in ("affine", "crown", "alpha-crown"):
        for sound in (True, False):
            b = tljax.bound(f, box, method=method, float_sound=sound, jit=False, alpha_iters=5)
            _assert_contains(f, box, b, n=20000, real=not sound)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_HYP_ACTS = [jax.nn.sigmoid, jnp.tanh, jax.nn.silu, jax.nn.softplus, jax.nn.gelu, jax.nn.elu]


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    act=st.sampled_from(range(len(_HYP_ACTS))),
    sound=st.booleans(),
    method=st.sampled_from(["affine", "crown"]),
    width=st.sampled_from([1e-4, 0.1, 2.0]),
)
def test_unscaled_random_nets(seed, act, sound, method, width):
    rng = np.random.default_rng(seed)
    w1 = rng.uniform(-5, 5, (6, 2)).astype(np.float32)
    b1 = rng.uniform(-30, 30, 6).astype(np.float32)
    w2 = rng.uniform(-5, 5, (2, 6)).astype(np.float32)
    a = _HYP_ACTS[act]
    f = lambda x: w2 @ a(w1 @ x + b1)  # noqa: E731
    c = rng.uniform(-3, 3, 2).astype(np.float32)
    box = tljax.Box(c - np.float32(width / 2), c + np.float32(width / 2))
    b = tljax.bound(f, box, method=method, float_sound=sound, jit=False)
    _assert_contains(f, box, b, n=3000, real=not sound)
