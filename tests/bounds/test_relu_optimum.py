"""Bounds against the true minimum of one-hidden-layer ReLU networks (scipy's HiGHS MILP).

Sampling only shows a bound contains the points it drew; the MILP's minimiser is where a bound
would break first. Every method's lower bound must lie below the network's float64 output at
that point, and below the LP of the relaxation it uses: the triangle LP for ibp, crown and
crown-ibp; for alpha-CROWN, whose output passes optimise the input-space hull planes of
first-layer ReLUs with few inputs (`tljax.bounds._crown.HullForm`; convolutions by default,
dense layers with `input_hull=True`), the hull LP. The reference
is bench/relu_milp.py (numpy and HiGHS, independent of tljax).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("relu_milp", REPO / "bench" / "relu_milp.py")
ref = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("relu_milp", ref)  # dataclasses look their module up
_spec.loader.exec_module(ref)

METHODS = ("ibp", "crown", "crown-ibp", "alpha-crown", "alpha-crown-hull")


def _tol(v):
    # HiGHS solves in float64 to ~1e-7 feasibility; the bound side needs no slack
    return 1e-5 * (1.0 + abs(v))


def _check_against_reference(g, box, net, rows, methods=METHODS):
    """Each method's lower bounds of `g` over `box` against `net`'s MILP and LPs; returns the
    references and the lower bounds per method."""
    out = {}
    for r in range(rows):
        mip = ref.optimum(net, r, "milp", time_limit=60)
        tri = ref.optimum(net, r, "triangle")
        hull = ref.optimum(net, r, "ideal")
        assert mip.status.startswith("Optimization terminated successfully"), mip.status
        # the reference itself: the MILP reaches its value, the LPs relax it, the hull is tighter
        assert abs(mip.bound - mip.value) <= _tol(mip.value)
        assert tri.bound - _tol(tri.bound) <= hull.bound <= mip.value + _tol(mip.value)
        out[r] = (mip, tri, hull)
    lows = {}
    for method in methods:
        if method == "alpha-crown-hull":  # the hull planes on dense first layers too
            b = tljax.bound(g, box, method="alpha-crown", input_hull=True)
        else:
            b = tljax.bound(g, box, method=method)
        lower = np.asarray(b.lower, np.float64)
        for r, (mip, tri, hull) in out.items():
            lp = hull if method.startswith("alpha-crown") else tri
            assert lower[r] <= mip.value, (method, r, lower[r], mip.value)
            assert lower[r] <= lp.bound + _tol(lp.bound), (method, r, lower[r], lp.bound)
        lows[method] = lower
    return out, lows


@pytest.mark.parametrize(
    "seed,centre,radius,scale",
    [
        (0, 0.0, 1.0, 1.0),  # unscaled N(0, 1) weights
        (1, 100.0, 1e-3, 1.0),  # far from the origin, tiny box
        (2, -30.0, 5.0, 3.0),  # large box, large weights
        (3, 0.5, 1e-5, 0.3),  # nearly a point
    ],
)
def test_dense_one_layer_bounds_lie_below_the_true_minimum(seed, centre, radius, scale):
    rng = np.random.default_rng(seed)
    n, h, k = 6, 20, 3
    W = rng.normal(size=(h, n)) * scale
    c = rng.uniform(-1, 1, size=n) * centre
    # biases centred on the box so that many neurons are unstable
    b = -(W @ c) + rng.normal(size=h) * radius * scale
    V = rng.normal(size=(k, h)) * scale
    m = rng.normal(size=k)
    W32, b32, V32, m32 = (np.asarray(a, np.float32) for a in (W, b, V, m))
    lo32 = np.asarray(c - radius, np.float32)
    hi32 = np.asarray(c + radius, np.float32)
    # spec rows +-y: the lower bounds of both cover the upper bounds too
    spec = np.concatenate([np.eye(k), -np.eye(k)]).astype(np.float32)

    def g(x):
        return spec @ (V32 @ jax.nn.relu(W32 @ x + b32) + m32)

    net = ref.Net(W32, b32, spec.astype(np.float64) @ V32, spec @ m32, lo32, hi32)
    xs = rng.uniform(lo32, hi32, size=(2000, n))
    np.testing.assert_allclose(
        net(xs), np.asarray(jax.vmap(g)(jnp.asarray(xs, jnp.float32))), rtol=1e-4, atol=1e-4 * scale
    )
    box = tljax.Box(jnp.asarray(lo32), jnp.asarray(hi32))
    out, lows = _check_against_reference(g, box, net, 2 * k)
    # the MILP is the minimum: no sample goes below it
    ys = net(xs)
    for r, (mip, _, _) in out.items():
        assert mip.value <= ys[:, r].min() + _tol(mip.value)
    # alpha-CROWN with the hull planes is never looser than CROWN
    assert np.all(lows["alpha-crown-hull"] >= lows["crown"])


def _conv_net(rng):
    """conv 1->3 2x2, ReLU, 2x2 average pool, linear 12->3 on a 1x5x5 image (a small verivital)."""
    kernel = rng.normal(size=(3, 1, 2, 2)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    out_w = rng.normal(size=(3, 12)).astype(np.float32)
    out_b = rng.normal(size=3).astype(np.float32)

    def fn(x):
        z = jax.lax.conv_general_dilated(x[None], kernel, (1, 1), "VALID")[0] + bias[:, None, None]
        r = jax.nn.relu(z)  # (3, 4, 4)
        p = r.reshape(3, 2, 2, 2, 2).mean(axis=(2, 4))
        return out_w @ p.reshape(-1) + out_b

    return fn, kernel, bias, out_w, out_b


@pytest.mark.long  # over 12 s on 2 cores: run by CI's -m long stage
def test_conv_one_layer_bounds_and_the_input_space_hull():
    rng = np.random.default_rng(7)
    fn, kernel, bias, out_w, out_b = _conv_net(rng)
    x0 = rng.uniform(0, 1, size=(1, 5, 5)).astype(np.float32)
    lo32, hi32 = x0 - np.float32(0.3), x0 + np.float32(0.3)
    spec = np.concatenate([np.eye(3), -np.eye(3)]).astype(np.float32)

    def g(x):
        return spec @ fn(x)

    W, b = ref.conv_matrix(kernel, bias, 5, 5)
    pool = ref.avgpool_matrix(3, 4, 4, 2)
    M = np.asarray((pool.T @ (spec.astype(np.float64) @ out_w).T).T)
    net = ref.Net(W, b, M, spec @ out_b, lo32.ravel(), hi32.ravel())
    xs = rng.uniform(lo32.ravel(), hi32.ravel(), size=(500, 25))
    got = np.asarray(jax.vmap(lambda x: g(x.reshape(1, 5, 5)))(jnp.asarray(xs, jnp.float32)))
    np.testing.assert_allclose(net(xs), got, rtol=1e-4, atol=1e-4)
    box = tljax.Box(jnp.asarray(lo32), jnp.asarray(hi32))
    out, lows = _check_against_reference(g, box, net, 6)
    # the hull planes pay here: alpha-CROWN above the triangle LP on some row (0.02 or more)
    gain = [lows["alpha-crown"][r] - tri.bound for r, (_, tri, _) in out.items()]
    assert max(gain) > 0.02, gain


def test_verivital_cnn_open_rows_against_the_reference(benchmarks_dir):
    """The avg-pool CNN's prop_7 (eps 0.04): the two rows CROWN leaves open. CROWN lies below the
    triangle LP (negative); alpha-CROWN with the input-space hull planes proves both rows, below
    the hull LP's optimum; the hull LP's point is a real input whose network output (float64
    reference and tljax's float32 run) bounds the minimum from above."""
    from tljax.verify import load_instance

    fn, prop, fargs, shape = load_instance(
        str(benchmarks_dir / "verivital" / "onnx" / "Convnet_avgpool.onnx"),
        str(benchmarks_dir / "verivital" / "vnnlib" / "avgpool_specs" / "prop_7_0.04.vnnlib"),
    )
    lo, hi = (np.asarray(a, np.float64) for a in prop.input_boxes[0])
    # unsafe Y_7 >= Y_1 and Y_8 >= Y_1: margins Y_1 - Y_7 and Y_1 - Y_8
    spec = np.zeros((2, 10))
    spec[:, 1] = 1.0
    spec[0, 7] = spec[1, 8] = -1.0
    net = ref.verivital_avgpool((lo, hi), spec)
    spec32 = jnp.asarray(spec, jnp.float32)

    def g(x):
        return spec32 @ fn(x, *fargs).reshape(-1)

    box = tljax.Box(
        jnp.asarray(lo, jnp.float32).reshape(shape), jnp.asarray(hi, jnp.float32).reshape(shape)
    )
    crown = np.asarray(tljax.bound(g, box, method="crown").lower)
    alpha = np.asarray(tljax.bound(g, box, method="alpha-crown").lower)
    for r in range(2):
        tri = ref.optimum(net, r, "triangle")
        hull = ref.optimum(net, r, "ideal")
        y32 = float(g(jnp.asarray(hull.x, jnp.float32).reshape(shape))[r])
        assert abs(y32 - hull.value) <= 1e-4
        assert crown[r] <= tri.bound + _tol(tri.bound) < 0.0
        assert 0.0 < alpha[r] <= hull.bound + _tol(hull.bound)
        assert hull.bound <= min(hull.value, y32) + _tol(hull.value)
