"""A residual network end to end: ONNX loading, bounds against an independent CROWN and against
float32 samples, and `tljax.verify` verdicts against the exact MILP optimum.

The network (bench/resnet_ref.py: conv stem, an identity residual block, a downsampling block
with a strided 1x1 projection on its skip path, a linear layer; 297 ReLUs) and every reference
value are computed there in float64 numpy and scipy's HiGHS, independent of tljax.
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
from tljax.io import load_onnx, load_vnnlib
from tljax.verify import load_network, verify

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("resnet_ref", REPO / "bench" / "resnet_ref.py")
ref = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("resnet_ref", ref)  # dataclasses look their module up
_spec.loader.exec_module(ref)

SHAPE = (1, ref.SIDE, ref.SIDE)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    import onnx

    path = tmp_path_factory.mktemp("resnet") / "resnet_0.onnx"
    onnx.save(ref.onnx_model(ref.resnet(0)), str(path))
    return path


def _box(net):
    return tljax.Box(
        jnp.asarray(net.lo.reshape(SHAPE), jnp.float32),
        jnp.asarray(net.hi.reshape(SHAPE), jnp.float32),
    )


def _sub(net, centre, radius):
    return net.with_box(centre - radius, centre + radius)


def test_onnx_resnet_computes_the_reference_network(onnx_path):
    import onnxruntime as ort

    net = ref.resnet(0)
    fn, params = load_onnx(onnx_path)
    xs = np.random.default_rng(0).uniform(-1, 2, (64, ref.SIDE * ref.SIDE))
    want = net(xs)[0]
    x4 = xs.reshape(-1, 1, *SHAPE).astype(np.float32)
    got = np.stack([np.asarray(fn(params, jnp.asarray(x))).ravel() for x in x4[:8]])
    np.testing.assert_allclose(got, want[:8], rtol=1e-5, atol=1e-5)
    jfn = jax.vmap(ref.jax_fn(net))(jnp.asarray(xs.reshape(-1, *SHAPE), jnp.float32))
    np.testing.assert_allclose(np.asarray(jfn), want, rtol=1e-5, atol=1e-5)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    peer = np.concatenate([sess.run(None, {"input": x})[0] for x in x4])
    np.testing.assert_allclose(peer, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("radius", [1e-3, 0.02, 0.1, 0.3])
def test_crown_through_residual_blocks_equals_independent_crown(onnx_path, radius):
    """The skip paths' coefficients add up: tljax's CROWN (the ONNX graph and the JAX function)
    equals a float64 back-substitution through the DAG; float-sound bounds contain it."""
    net = ref.resnet(0)
    x0, _ = ref.reference_point(net, 0)
    sub = _sub(net, x0, radius)
    _, (lo, hi) = sub.crown()
    scale = 1e-5 * (1.0 + np.abs(lo).max() + np.abs(hi).max())
    fn, params, _ = load_network(str(onnx_path))  # fn(x, params)
    box = _box(sub)
    box4 = tljax.Box(box.lower[None], box.upper[None])
    for call, b, args in ((ref.forward, box, (ref.weights(net),)), (fn, box4, (params,))):
        b0 = tljax.bound(call, b, *args, method="crown", float_sound=False)
        np.testing.assert_allclose(np.ravel(b0.lower), lo, atol=scale, rtol=0)
        np.testing.assert_allclose(np.ravel(b0.upper), hi, atol=scale, rtol=0)
        b1 = tljax.bound(call, b, *args, method="crown")
        assert np.all(np.ravel(b1.lower) <= lo + 1e-12) and np.all(np.ravel(b1.upper) >= hi - 1e-12)
        # float soundness costs little on boxes of this size
        assert np.all(np.ravel(b1.upper) - np.ravel(b1.lower) <= (hi - lo) * 1.01 + 1e-3)


@pytest.mark.parametrize(
    "seed,centre,radius,scale",
    [
        (0, 0.5, 1e-6, 1.0),  # nearly a point
        (1, 0.5, 0.05, 1.0),
        (2, 0.0, 1.0, 3.0),  # unscaled, large weights on a wide box
        (3, 100.0, 0.5, 1.0),  # far from the origin
        (4, -30.0, 10.0, 1.0),  # huge box
    ],
)
def test_bounds_contain_float32_outputs(seed, centre, radius, scale):
    net = ref.resnet(seed, scale)
    rng = np.random.default_rng(seed)
    c = centre + rng.uniform(-1, 1, ref.SIDE * ref.SIDE) * min(1.0, abs(centre) * 0.1 + 0.5)
    lo32 = np.asarray(c - radius, np.float32)
    hi32 = np.asarray(c + radius, np.float32)
    box = tljax.Box(jnp.asarray(lo32.reshape(SHAPE)), jnp.asarray(hi32.reshape(SHAPE)))
    q = ref.weights(net)  # weights as arguments: the cases share compiled programs
    n = lo32.size
    pts = rng.uniform(lo32, hi32, (10_000, n))
    verts = np.where(rng.random((2_000, n)) < 0.5, lo32, hi32)
    xs = np.clip(np.concatenate([pts, verts]), lo32, hi32).astype(np.float32)
    run = jax.jit(jax.vmap(ref.forward, in_axes=(0, None)))
    ys = np.asarray(run(jnp.asarray(xs.reshape(-1, *SHAPE)), q), np.float64)
    crown = None
    for method in ("ibp", "crown", "crown-ibp", "alpha-crown"):
        b = tljax.bound(ref.forward, box, q, method=method)
        lo, hi = np.asarray(b.lower, np.float64), np.asarray(b.upper, np.float64)
        assert np.all(ys >= lo) and np.all(ys <= hi), (method, ys.min(0) - lo, hi - ys.max(0))
        if method == "crown":
            crown = (lo, hi)
        if method == "alpha-crown":  # never looser than CROWN
            assert np.all(lo >= crown[0] - 1e-6 * (1 + np.abs(crown[0])))
            assert np.all(hi <= crown[1] + 1e-6 * (1 + np.abs(crown[1])))


@pytest.mark.long  # over 12 s on 2 cores: run by CI's -m long stage
def test_verify_verdicts_agree_with_the_milp(onnx_path, tmp_path):
    """eps 0.03: the exact minimum margin is positive (unsat); eps 0.04 negative (sat). A 25-pixel
    image: the search splits ReLUs (beta-CROWN)."""
    net = ref.resnet(0)
    x0, label = ref.reference_point(net, 0)
    fn, params, shape = load_network(str(onnx_path))
    for eps, want in ((0.03, "unsat"), (0.04, "sat")):
        sub = net.with_box(np.maximum(x0 - eps, 0.0), np.minimum(x0 + eps, 1.0))
        margin, _, _, _ = ref.milp_margin(sub, label)
        assert (margin > 1e-3) if want == "unsat" else (margin < -1e-3), (eps, margin)
        spec = tmp_path / f"prop_{eps}.vnnlib"
        spec.write_text(ref.robustness_vnnlib(x0, eps, label))
        prop = load_vnnlib(str(spec), ref.SIDE * ref.SIDE, ref.N_OUT)
        res = verify(fn, prop, params, input_shape=shape, timeout=120)
        assert res.verdict == want, (eps, res.verdict, res.stats, res.notes)
        assert res.check().accepted
        if want == "sat":
            x = np.asarray(res.counterexample.x, np.float64).ravel()
            assert np.all(x >= sub.lo) and np.all(x <= sub.hi)
            y = net(x)[0][0]  # float64: the real network violates it too
            assert max(y[j] - y[label] for j in range(ref.N_OUT) if j != label) >= 0
        else:
            assert res.stats.get("input_splits", 0) == 0  # ReLU splitting on 25 inputs
