"""alpha-CROWN's input-space hull planes for first-layer ReLUs (`_crown.HullForm`).

The planes `sum_k t_k e_k + c(t)` must lie above `relu(sum_k e_k + b)` over the whole box of
terms for every `t` in [0, 1]^K (checked at every vertex, where `plane - relu` is smallest), and
the bounds built from them must contain float32 executions of the network at sampled points and
corners, in the far tails and on tiny and large boxes.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds import _crown


@pytest.mark.parametrize("k", [1, 2, 4, 6])
@pytest.mark.parametrize("fs", [True, False])
def test_hull_planes_lie_above_the_relu_at_every_vertex(k, fs):
    rng = np.random.default_rng(k + 10 * fs)
    n = 300
    # weights from tiny to huge, some zero; boxes far out, tiny, degenerate
    W = rng.normal(size=(n, k)) * 10.0 ** rng.uniform(-3, 3, size=(n, 1))
    W[rng.uniform(size=(n, k)) < 0.1] = 0.0
    centre = rng.normal(size=(n, k)) * 10.0 ** rng.uniform(-2, 2, size=(n, 1))
    radius = 10.0 ** rng.uniform(-6, 1, size=(n, k))
    radius[rng.uniform(size=(n, k)) < 0.05] = 0.0
    lo = (centre - radius).astype(np.float32)
    hi = (centre + radius).astype(np.float32)
    b = (rng.normal(size=n) * np.abs(W).sum(1) * radius.mean(1)).astype(np.float32)
    W32 = W.astype(np.float32)
    p1, p2 = W32 * lo, W32 * hi
    elo, ehi = np.minimum(p1, p2), np.maximum(p1, p2)
    T = rng.uniform(size=(3, n, k)).astype(np.float32)
    T[0] = np.round(T[0])  # the corners 0 and 1 of the slopes
    T[1][rng.uniform(size=(n, k)) < 0.3] = 0.0
    flush = (k + 2) * np.float32(np.finfo(np.float32).tiny) * (1 + np.abs(W32).sum(1))
    c0 = np.asarray(
        _crown._hull_intercept(
            jnp.asarray(T), jnp.asarray(elo), jnp.asarray(ehi), jnp.asarray(b), flush, fs
        ),
        np.float64,
    )
    Wd = W32.astype(np.float64)
    worst = np.inf
    for corner in itertools.product((0, 1), repeat=k):
        x = np.where(np.asarray(corner, bool), hi, lo).astype(np.float64)
        e = Wd * x  # exact terms at the vertex
        relu = np.maximum(0.0, e.sum(1) + b)
        plane = (T.astype(np.float64) * e).sum(2) + c0
        gap = plane - relu
        scale = np.abs(e).sum(1) + np.abs(b) + 1e-30
        worst = min(worst, float(np.min(gap / scale)))
    if fs:
        assert worst >= 0.0, worst
    else:
        assert worst >= -1e-5, worst


def _conv(kernel, bias, strides, padding):
    def layer(x):
        z = jax.lax.conv_general_dilated(x[None], kernel, strides, padding)[0]
        return z if bias is None else z + bias[:, None, None]

    return layer


def _nets(rng, scale):
    """(name, fn, input shape): one-layer and deeper networks whose first ReLU layer the hull
    covers: convolutions (strides, padding, channels, no bias) and narrow dense layers."""
    k1 = rng.normal(size=(4, 2, 3, 3)).astype(np.float32) * scale
    b1 = rng.normal(size=4).astype(np.float32) * scale
    k2 = rng.normal(size=(3, 1, 2, 2)).astype(np.float32) * scale
    W1 = rng.normal(size=(16, 5)).astype(np.float32) * scale
    c1 = rng.normal(size=16).astype(np.float32) * scale
    W2 = rng.normal(size=(16, 16)).astype(np.float32) / 4
    V = rng.normal(size=(3, 16)).astype(np.float32)
    out_c1 = rng.normal(size=(3, 4 * 3 * 3)).astype(np.float32)
    out_c2 = rng.normal(size=(3, 3 * 3 * 3)).astype(np.float32)
    conv1 = _conv(k1, b1, (2, 2), "SAME")
    conv2 = _conv(k2, None, (1, 1), "VALID")
    return [
        ("conv-stride-same", lambda x: out_c1 @ jax.nn.relu(conv1(x)).reshape(-1), (2, 6, 6)),
        ("conv-no-bias", lambda x: out_c2 @ jax.nn.relu(conv2(x)).reshape(-1), (1, 4, 4)),
        ("dense", lambda x: V @ jax.nn.relu(W1 @ x + c1), (5,)),
        ("dense-row", lambda x: (jax.nn.relu(x[None] @ W1.T + c1) @ V.T)[0], (5,)),
        ("dense-deep", lambda x: V @ jax.nn.relu(W2 @ jax.nn.relu(W1 @ x + c1)), (5,)),
    ]


@pytest.mark.parametrize(
    "seed,centre,radius,scale",
    [
        (0, 0.0, 1.0, 1.0),
        pytest.param(1, 100.0, 1e-4, 1.0, marks=pytest.mark.long),  # 12-15 s each
        pytest.param(2, -20.0, 5.0, 2.0, marks=pytest.mark.long),
        (3, 0.3, 1e-6, 0.5),
    ],
)
def test_alpha_crown_with_hull_contains_float32_samples(seed, centre, radius, scale):
    rng = np.random.default_rng(seed)
    for name, fn, shape in _nets(rng, scale):
        c = (rng.uniform(-1, 1, size=shape) * centre).astype(np.float32)
        lo, hi = c - np.float32(radius), c + np.float32(radius)
        box = tljax.Box(jnp.asarray(lo), jnp.asarray(hi))
        cr = tljax.bound(fn, box, method="crown")
        xs = rng.uniform(lo, hi, size=(10000, *shape)).astype(np.float32)
        corners = np.where(rng.uniform(size=(256, *shape)) < 0.5, lo, hi).astype(np.float32)
        ys = np.asarray(jax.vmap(fn)(jnp.asarray(np.concatenate([xs, corners]))))
        a = tljax.bound(fn, box, method="alpha-crown", input_hull=True)
        alo, ahi = np.asarray(a.lower), np.asarray(a.upper)
        assert np.all(ys >= alo) and np.all(ys <= ahi), (name, ys.min(0) - alo, ahi - ys.max(0))
        # never looser than CROWN (the best of CROWN and every iterate)
        assert np.all(alo >= np.asarray(cr.lower)) and np.all(ahi <= np.asarray(cr.upper)), name


@pytest.mark.long  # over 12 s on 2 cores: run by CI's -m long stage
def test_hull_tightens_alpha_crown_where_it_applies():
    """The same networks with the hull planes switched off: alpha-CROWN with them is tighter on
    every net here (it is what verifies the verivital avg-pool CNN's eps=0.04 properties at the
    root). By default (`input_hull=None`) convolutions get them and dense layers do not."""
    rng = np.random.default_rng(5)
    for name, fn, shape in _nets(rng, 1.0):
        lo = rng.uniform(-1, 0, size=shape).astype(np.float32)
        box = tljax.Box(jnp.asarray(lo), jnp.asarray(lo + np.float32(0.8)))

        def width(fn=fn, box=box, **kw):
            b = tljax.bound(fn, box, method="alpha-crown", **kw)
            return float(np.sum(np.asarray(b.upper) - np.asarray(b.lower)))

        with_hull, without, default = width(input_hull=True), width(input_hull=False), width()
        assert with_hull < 0.98 * without, (name, with_hull, without)
        assert default == (with_hull if name.startswith("conv") else without), name
    with pytest.raises(tljax.core.InputError, match="input_hull must be None"):
        tljax.bound(fn, box, method="alpha-crown", input_hull="yes")


def test_hull_under_vmap_equals_single_boxes():
    """A batch of boxes in one `jax.vmap` call (the mapped program the search's batches use):
    each box's alpha-CROWN bounds contain its samples and match its own single-box call."""
    rng = np.random.default_rng(11)
    name, fn, shape = _nets(rng, 1.0)[1]  # the convolution without bias
    centres = rng.uniform(-2, 2, size=(6, *shape)).astype(np.float32)
    radii = np.float32(10.0) ** rng.uniform(-4, 0, size=(6, 1, 1, 1)).astype(np.float32)
    lo, hi = centres - radii, centres + radii

    def one(lo, hi):
        b = tljax.bound(fn, tljax.Box(lo, hi), method="alpha-crown", input_hull=True)
        return b.lower, b.upper

    blo, bhi = (np.asarray(a) for a in jax.vmap(one)(jnp.asarray(lo), jnp.asarray(hi)))
    for j in range(len(lo)):
        slo, shi = (np.asarray(a) for a in one(jnp.asarray(lo[j]), jnp.asarray(hi[j])))
        xs = rng.uniform(lo[j], hi[j], size=(2000, *shape)).astype(np.float32)
        ys = np.asarray(jax.vmap(fn)(jnp.asarray(xs)))
        assert np.all(ys >= blo[j]) and np.all(ys <= bhi[j]), name
        # the same steps, batched: equal up to the summation order of the mapped program,
        # which the planes' intercepts carry further (the larger of two terms, nearly equal at
        # the optimum: which one wins follows the rounding; compiled and op-by-op runs of a
        # dense layer's planes differed by 0.2%)
        tol = 1e-2 * float(radii[j, 0, 0, 0])
        np.testing.assert_allclose(blo[j], slo, rtol=1e-2, atol=tol)
        np.testing.assert_allclose(bhi[j], shi, rtol=1e-2, atol=tol)
