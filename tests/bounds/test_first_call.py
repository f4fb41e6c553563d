"""A bound program's first call runs on the host (numpy), its second compiles: both sound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds import _api
from tljax.core import iter_eqns

COMPILE = "/jax/core/compile/backend_compile_duration"


class _Compiles:
    def __init__(self):
        self.n = 0
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, duration, **kw):
        if event == COMPILE:
            self.n += 1


COMPILES = _Compiles()


def _net(act, rng, scale=1.0, width=16):
    # unscaled weights (scale 1: standard normal entries, not 1/sqrt(fan-in))
    w1 = (rng.randn(width, 3) * scale).astype(np.float32)
    b1 = (rng.randn(width) * scale).astype(np.float32)
    w2 = (rng.randn(width, width) * scale).astype(np.float32)
    w3 = rng.randn(2, width).astype(np.float32)

    def f(x):
        return w3 @ act(w2 @ act(w1 @ x + b1))

    return f


ACTS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "exp": lambda v: jnp.exp(jnp.clip(v, -80.0, 80.0)),
    "sin": jnp.sin,
}


def _samples(f, lo, hi, rng, n=2000):
    pts = rng.uniform(lo, hi, size=(n, lo.size)).astype(np.float32)
    corners = np.array(np.meshgrid(*zip(lo, hi, strict=True))).reshape(lo.size, -1).T
    pts = np.concatenate([pts, corners.astype(np.float32), [lo, hi]])
    return np.asarray(jax.jit(jax.vmap(f))(pts))  # the float32 program as XLA runs it


CASES = [(m, a) for m in ("ibp", "crown") for a in sorted(ACTS)] + [
    ("alpha-crown", a) for a in ("relu", "sigmoid", "sin")
]


@pytest.mark.parametrize("method, act", CASES)
def test_first_call_bounds_contain_float32_points_far_out_and_on_tiny_and_huge_boxes(method, act):
    rng = np.random.RandomState(sorted(ACTS).index(act))
    for centre, radius in [(0.0, 1.0), (-100.0, 0.5), (100.0, 3.0), (12.5, 1e-5), (-3.0, 40.0)]:
        f = _net(ACTS[act], rng)
        c = (centre + rng.randn(3)).astype(np.float32)
        box = tljax.Box(c - np.float32(radius), c + np.float32(radius))
        before = COMPILES.n
        b = tljax.bound(f, box, method=method, alpha_iters=5)
        assert COMPILES.n == before  # the first call compiled nothing: numpy ran it
        ys = _samples(f, np.asarray(box.lower), np.asarray(box.upper), rng)
        lo, hi = np.asarray(b.lower), np.asarray(b.upper)
        assert np.all(lo <= ys.min(0)) and np.all(ys.max(0) <= hi), (act, method, centre, radius)
        if radius != 40.0:
            continue
        # the second call compiles; it agrees with the first up to rounding
        b2 = tljax.bound(f, box, method=method, alpha_iters=5)
        assert COMPILES.n > before
        assert np.all(np.asarray(b2.lower) <= ys.min(0)) and np.all(ys.max(0) <= b2.upper)
        # (the relaxations' tangent searches see numpy's and XLA's libm differ by ulps)
        tol = 0.02 * (hi - lo) + 1e-4 * np.maximum(np.abs(lo), np.abs(hi))
        assert np.all(np.abs(np.asarray(b2.lower) - lo) <= tol)
        assert np.all(np.abs(np.asarray(b2.upper) - hi) <= tol)


def test_first_call_is_not_vacuous():
    # CROWN on the host is CROWN: much tighter than IBP on a deep-ish ReLU net
    rng = np.random.RandomState(3)
    f = _net(jax.nn.relu, rng, scale=0.5, width=32)
    box = tljax.Box.linf(np.zeros(3, np.float32), 0.05)
    ibp = tljax.bound(f, box, method="ibp")
    crown = tljax.bound(f, box, method="crown")
    ys = _samples(f, np.asarray(box.lower), np.asarray(box.upper), rng)
    assert np.all(crown.lower <= ys.min(0)) and np.all(ys.max(0) <= crown.upper)
    assert np.all(crown.upper - crown.lower < 0.5 * (ibp.upper - ibp.lower))


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_first_call_returns_the_shapes_and_dtypes_of_the_compiled_one(method):
    w = np.random.RandomState(8).randn(3, 4).astype(np.float32)

    def margin(s):  # a scalar output (a policy's logit margin)
        logits = jnp.tanh(w @ s)
        return logits[1] - logits[0]

    def pair(s):
        return {"m": margin(s), "v": jnp.tanh(w @ s)}

    box = tljax.Box(-np.ones(4, np.float32), np.ones(4, np.float32))
    for f in (margin, pair):
        first = tljax.bound(f, box, method=method)
        second = tljax.bound(f, box, method=method)
        for a, b in zip(jax.tree.leaves(first.lower), jax.tree.leaves(second.lower), strict=True):
            assert (a.shape, a.dtype) == (b.shape, b.dtype)
        assert jax.tree.structure(first.upper) == jax.tree.structure(second.upper)
    assert np.shape(first.lower["m"]) == () and float(first.lower["m"]) <= float(first.upper["m"])


def test_compile_first_with_the_environment_variable(monkeypatch):
    monkeypatch.setenv("TLJAX_FIRST_CALL", "compile")
    f = _net(jnp.tanh, np.random.RandomState(4))
    box = tljax.Box.linf(np.zeros(3, np.float32), 0.5)
    before = COMPILES.n
    tljax.bound(f, box)
    assert COMPILES.n > before


@pytest.mark.parametrize("work", [None, 0.0])
def test_a_conv_program_runs_on_the_host_unless_numpy_would_be_slow(monkeypatch, work):
    """Convolutions run on the host too; a program whose products would keep numpy longer than
    XLA compiles (`HOST_MAX_WORK`, here forced to 0) compiles at once. Sound either way."""
    if work is not None:
        monkeypatch.setattr(_api, "HOST_MAX_WORK", work)
    w = np.random.RandomState(5).randn(2, 1, 2, 2).astype(np.float32)

    def conv(x):
        y = jax.lax.conv_general_dilated(x[None, None], w, (1, 1), "VALID")
        return jnp.tanh(y).sum()

    box = tljax.Box.linf(np.zeros((4, 4), np.float32), 0.1 if work is None else 0.2)
    before = COMPILES.n
    b = tljax.bound(conv, box)
    assert (COMPILES.n > before) == (work is not None)
    ys = _samples(lambda v: conv(v.reshape(4, 4)), box.lower.reshape(-1), box.upper.reshape(-1),
                  np.random.RandomState(6), n=2000)  # fmt: skip
    assert b.lower <= ys.min() and ys.max() <= b.upper


def test_a_large_program_stays_on_the_host_and_is_traced_once(monkeypatch):
    monkeypatch.setattr(_api, "HOST_ONLY_EQNS", 10)
    traces = []
    compute = _api._compute
    monkeypatch.setattr(_api, "_compute", lambda *a, **k: traces.append(1) or compute(*a, **k))
    f = _net(jnp.tanh, np.random.RandomState(7))
    box = tljax.Box.linf(np.zeros(3, np.float32), 0.5)
    before = COMPILES.n
    first = tljax.bound(f, box)
    again = tljax.bound(f, box)
    assert COMPILES.n == before
    assert len(traces) == 1  # the second call reused the traced program
    np.testing.assert_array_equal(first.lower, again.lower)
    np.testing.assert_array_equal(first.upper, again.upper)


def _mapped_boxes(rng, n=10):
    # centres near 0 and far out (|x| up to 100), radii from 1e-5 to 2
    c = np.concatenate([rng.uniform(-3, 3, (n - 2, 3)), [[100.0, -100.0, 12.5], [-100.0, 3, -40]]])
    r = np.geomspace(1e-5, 2.0, n)[:, None]
    return (c - r).astype(np.float32), (c + r).astype(np.float32)


def _prims(closed) -> set:
    return {e.primitive.name for e in iter_eqns(closed.jaxpr)}


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * (1 + float(np.max(np.abs(b)))))


@pytest.mark.parametrize("method", ["crown", "ibp"])
def test_mapped_calls_of_a_host_only_program_are_one_host_callback(monkeypatch, method):
    monkeypatch.setattr(_api, "HOST_ONLY_EQNS", 10)
    rng = np.random.RandomState(8)
    f = _net(jnp.tanh, rng)
    los, his = _mapped_boxes(rng)

    def b(lo, hi):
        r = tljax.bound(f, tljax.Box(lo, hi), method=method)
        return r.lower, r.upper

    prog = jax.make_jaxpr(jax.vmap(b))(los, his)
    # the user's program holds the callback, not the bound computation (nothing to compile)
    assert "pure_callback" in _prims(prog) and not _prims(prog) & {"dot_general", "tanh"}
    lo, hi = jax.jit(jax.vmap(b))(los, his)
    assert lo.shape == hi.shape == (len(los), 2) and lo.dtype == jnp.float32
    for i in range(len(los)):
        one = b(los[i], his[i])  # a top-level call: the host too, one box
        _close(lo[i], one[0])
        _close(hi[i], one[1])
        ys = _samples(f, los[i], his[i], rng)
        assert np.all(lo[i] <= ys.min(0)) and np.all(ys.max(0) <= hi[i]), i


@pytest.mark.long  # over 12 s on 2 cores: run by CI's -m long stage
def test_host_callback_batch_layouts_jit_and_gradients(monkeypatch):
    monkeypatch.setattr(_api, "HOST_ONLY_EQNS", 10)
    rng = np.random.RandomState(9)
    f = _net(jax.nn.sigmoid, rng)
    los, his = _mapped_boxes(rng, 6)
    scales = np.asarray([0.5, -2.0, 1.0], np.float32)

    def b(lo, hi, s):
        r = tljax.bound(lambda x, s: f(x * s), tljax.Box(lo, hi), s)
        return r.lower, r.upper

    # two nested maps, one of them over an argument the boxes do not share
    nested = jax.vmap(jax.vmap(b, in_axes=(0, 0, None)), in_axes=(None, None, 0))
    lo, hi = nested(los, his, scales)
    assert lo.shape == (3, 6, 2)
    for k, s in enumerate(scales):
        for i in range(len(los)):
            one = b(los[i], his[i], s)
            _close(lo[k, i], one[0])
            _close(hi[k, i], one[1])
    # under jit alone the callback gets one box
    jl, jh = jax.jit(b)(los[0], his[0], scales[0])
    one = b(los[0], his[0], scales[0])
    _close(jl, one[0])
    _close(jh, one[1])

    # gradients differentiate the bound program itself: equal to the compiled program's
    def loss(lo):
        return jnp.sum(b(lo, lo + 0.5, scales[0])[1])

    g_host = jax.grad(loss)(los[0])
    monkeypatch.setattr(_api, "HOST_ONLY_EQNS", 10**9)
    _api._CACHE.clear()
    g_jit = jax.grad(loss)(los[0])
    assert np.all(np.isfinite(g_host)) and np.any(g_host != 0)
    np.testing.assert_allclose(g_host, g_jit, rtol=1e-5, atol=1e-6)
