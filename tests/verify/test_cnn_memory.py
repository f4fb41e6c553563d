"""CNNs in bounded memory: the CROWN pass limit (`refine_limit`), max pooling as a tree of
pairwise maxima, outputs read from the sweep, the search's memory plan and its attack budget."""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import tljax
from tljax.bounds import Certificate, check, prepare, relu_shapes
from tljax.io import Property
from tljax.verify import _attack, _bounder
from tljax.verify._spec import make_groups
from tljax.verify._taps import Taps

SHAPE = (1, 1, 10, 10)
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "benchmarks" / "verivital"


def _params():
    rng = np.random.default_rng(0)
    # unscaled weights: the pooled values reach tens, the spec margins hundreds
    return (
        jnp.asarray(rng.normal(size=(6, 1, 3, 3)), jnp.float32),
        jnp.asarray(rng.normal(size=6), jnp.float32),
        jnp.asarray(rng.normal(size=(96, 3)), jnp.float32),
        jnp.asarray(rng.normal(size=3), jnp.float32),
    )


def pool_cnn(x, params):
    w, b, v, c = params
    h = lax.conv_general_dilated(x, w, (1, 1), "VALID") + b[None, :, None, None]
    h = jax.nn.relu(h)  # (1, 6, 8, 8)
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    return h.reshape(1, -1) @ v + c


def _box(eps, seed=1):
    x0 = np.random.default_rng(seed).uniform(0.0, 1.0, SHAPE).astype(np.float32)
    return x0, tljax.Box(jnp.asarray(x0 - eps), jnp.asarray(x0 + eps))


def _samples(box, n=10_000, seed=2):
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(lo, hi, (n, *lo.shape[1:])).astype(np.float32)
    corners = np.where(rng.integers(0, 2, (256, *lo.shape[1:])) > 0, hi[0], lo[0])
    return np.concatenate([xs, corners.astype(np.float32)])


def test_pool_is_a_tree_of_pairwise_maxima():
    params = _params()
    _, box = _box(0.05)
    shapes = relu_shapes(lambda x: pool_cnn(x, params), box)
    # the convolution's ReLU and log2(4) = 2 levels of pairwise maxima, not 3 chained ones
    assert shapes == [(1, 6, 8, 8), (2, 1, 6, 4, 4), (1, 1, 6, 4, 4)]
    taps = Taps(lambda x: pool_cnn(x, params), SHAPE)
    assert taps.matches(shapes, ())


@pytest.mark.parametrize(
    "method, eps",
    [
        ("crown", 1e-4),
        ("crown", 0.05),
        ("crown", 0.5),
        pytest.param("alpha-crown", 0.05, marks=pytest.mark.slow),  # 35 s
    ],
)
def test_refine_limit_bounds_contain_float32_samples(method, eps):
    params = _params()
    fn = jax.jit(lambda x: pool_cnn(x, params))
    _, box = _box(eps)
    costs, out = prepare(lambda x: pool_cnn(x, params), box).refine_costs()
    limit = out  # the pooling nodes' passes are all wider than the output's
    assert costs and min(costs) > limit
    full = tljax.bound(lambda x: pool_cnn(x, params), box, method=method)
    lim = tljax.bound(lambda x: pool_cnn(x, params), box, method=method, refine_limit=limit)
    ys = np.asarray(jax.vmap(fn)(jnp.asarray(_samples(box)[:, None]))).reshape(-1, 3)
    for b in (full, lim):
        lo, hi = np.asarray(b.lower).reshape(-1), np.asarray(b.upper).reshape(-1)
        assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
        assert np.all(ys >= lo) and np.all(ys <= hi), (lo, hi, ys.min(0), ys.max(0))
    # interval bounds for the pooling nodes cost tightness, not much (<= 2x the width here)
    wf = np.asarray(full.upper - full.lower)
    wl = np.asarray(lim.upper - lim.lower)
    assert np.all(wl <= 2.0 * wf + 1e-3)


@pytest.mark.long  # over 12 s on 2 cores: run by CI's -m long stage
def test_refine_limit_certificate_checks_and_tamper_fails():
    params = _params()
    _, box = _box(0.02)
    _costs, out = prepare(lambda x: pool_cnn(x, params), box).refine_costs()
    b = tljax.bound(
        lambda x: pool_cnn(x, params),
        box,
        method="crown",
        certificate=True,
        refine_limit=out,
        jit=False,
    )
    res = check(b.certificate, lambda x: pool_cnn(x, params))
    assert res.accepted, res.reason
    cert = b.certificate
    # a pooling node kept at its interval: its claim narrowed past what intervals prove
    fields = {f.name: copy.deepcopy(getattr(cert, f.name)) for f in dataclasses.fields(cert)}
    nodes = fields["passes"][0]["nodes"]
    k = sorted(nodes, key=int)[-2]
    nodes[k][0].reshape(-1)[0] += 1e-3
    res = check(Certificate(**fields), lambda x: pool_cnn(x, params))
    assert not res.accepted and f"node {k}" in res.reason, res.reason
    fields = {f.name: copy.deepcopy(getattr(cert, f.name)) for f in dataclasses.fields(cert)}
    # a final lower bound above what some input attains
    fields["lower"][0].reshape(-1)[1] = float(np.asarray(b.upper).reshape(-1)[1]) + 1.0
    assert not check(Certificate(**fields), lambda x: pool_cnn(x, params)).accepted


def test_outputs_read_from_the_sweep_equal_their_own_pass():
    """An output that is also the input of a ReLU gets the sweep's bounds: the same as bounding
    it alone (one CROWN pass from it)."""
    params = _params()
    w, b, _v, _c = params
    _, box = _box(0.05)

    def pre(x):
        h = jax.nn.relu(lax.conv_general_dilated(x, w, (1, 1), "VALID") + b[None, :, None, None])
        z = h.reshape(1, -1) @ jnp.ones((384, 5), jnp.float32) * 0.01 - 0.3
        return z

    def both(x):
        z = pre(x)
        return jnp.sum(jax.nn.relu(z)), z

    alone = tljax.bound(pre, box)
    together = tljax.bound(both, box)
    np.testing.assert_allclose(np.asarray(together.lower[1]), np.asarray(alone.lower), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(together.upper[1]), np.asarray(alone.upper), rtol=1e-6)


def test_memory_plan_shrinks_the_batch_before_the_passes():
    params = _params()
    _x0, box = _box(0.05)
    spec = np.eye(3, dtype=np.float32)
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    fn = lambda x: pool_cnn(x, params)  # noqa: E731
    costs, out = prepare(_bounder.spec_fn(fn), box, jnp.asarray(spec)).refine_costs(3)
    widest = max(costs)
    roomy = _bounder.memory_plan(fn, SHAPE, (lo, hi), spec, (), batch=256, budget=1 << 40)
    assert roomy["batch"] == 256 and roomy["refine_limit"] is None and not roomy["note"]
    # room for 32 domains of the widest pass: the batch shrinks, every pass stays
    budget = 32 * widest * _bounder.COEF_BYTES
    mid = _bounder.memory_plan(fn, SHAPE, (lo, hi), spec, (), batch=256, budget=budget)
    assert mid["batch"] == 32 and mid["refine_limit"] is None and "batch 32" in mid["note"]
    # not even MIN_BATCH domains of it: wide passes fall back to interval bounds
    budget = _bounder.MIN_BATCH * out * _bounder.COEF_BYTES
    tight = _bounder.memory_plan(fn, SHAPE, (lo, hi), spec, (), batch=256, budget=budget)
    assert tight["batch"] == _bounder.MIN_BATCH
    assert tight["refine_limit"] is not None and tight["dropped"] >= 1
    assert tight["batch"] * tight["per_domain"] <= budget


def _robustness(params, x0, eps):
    """Property: the predicted class of `x0` stays predicted within eps (unsafe: some other
    output >= it)."""
    y0 = np.asarray(pool_cnn(jnp.asarray(x0), params)).reshape(-1)
    k = int(np.argmax(y0))
    unsafe = []
    for j in range(3):
        if j != k:
            c = np.zeros((1, 3))
            c[0, k], c[0, j] = 1.0, -1.0
            unsafe.append((c, np.zeros(1)))  # y_k - y_j <= 0: class j at least as high
    lo, hi = (x0 - eps).reshape(-1).astype(np.float64), (x0 + eps).reshape(-1).astype(np.float64)
    return Property(
        input_boxes=((lo, hi),),
        unsafe=tuple(unsafe),
        pairing=(tuple(range(len(unsafe))),),
        n_inputs=lo.size,
        n_outputs=3,
        path="<test>",
    )


@pytest.mark.parametrize(
    "eps, expected", [pytest.param(0.002, "unsat", marks=pytest.mark.long), (0.6, "sat")]
)
def test_verify_adapts_to_a_small_memory_budget(eps, expected):
    from tljax.verify import verify

    params = _params()
    x0 = np.random.default_rng(1).uniform(0.0, 1.0, SHAPE).astype(np.float32)
    prop = _robustness(params, x0, eps)
    fn = lambda x: pool_cnn(x, params)  # noqa: E731
    roomy = verify(fn, prop, input_shape=SHAPE, timeout=120, split="relu")
    # a budget far below one batch of the widest pass: batch shrinks, wide passes drop
    small = verify(fn, prop, input_shape=SHAPE, timeout=120, split="relu", memory_budget=1 << 16)
    assert roomy.verdict == small.verdict == expected
    # (a counterexample found by the attack decides before any bound is planned)
    assert expected == "sat" or any("memory plan" in n for n in small.notes)
    if expected == "sat":
        x = np.asarray(small.counterexample.x, np.float32).reshape(SHAPE)
        y = np.asarray(pool_cnn(jnp.asarray(x), params)).reshape(-1)
        assert prop.is_counterexample(x.reshape(-1), y)
    else:  # no sampled point violates the verified property
        lo, hi = prop.cases[0][0], prop.cases[0][1]
        xs = np.random.default_rng(3).uniform(lo, hi, (4096, lo.size)).astype(np.float32)
        ys = np.asarray(jax.vmap(lambda x: fn(x.reshape(SHAPE)))(jnp.asarray(xs))).reshape(-1, 3)
        k = int(np.argmax(np.asarray(fn(jnp.asarray(x0))).reshape(-1)))
        assert np.all(np.argmax(ys, axis=1) == k)


def test_out_of_memory_is_an_unknown_verdict_that_names_the_pass(monkeypatch):
    from tljax.verify import _bab, verify

    params = _params()
    x0 = np.random.default_rng(1).uniform(0.0, 1.0, SHAPE).astype(np.float32)
    prop = _robustness(params, x0, 0.05)

    def exhausted(self, dom, *, root):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 996109907560 bytes.")

    monkeypatch.setattr(_bab.ReluSplit, "bound", exhausted)
    res = verify(
        lambda x: pool_cnn(x, params), prop, input_shape=SHAPE, timeout=60, split="relu",
        beta=False, attack=False,
    )  # fmt: skip
    assert res.verdict == "unknown"
    text = " ".join(res.notes)
    assert "out of memory bounding" in text and "996109907560" in text
    assert "widest CROWN pass starts at the input" in text and "coefficients per domain" in text


def test_pgd_chunks_cover_every_start_within_budget_and_one_chunk_without():
    calls = []

    def pgd(starts, eta, lo, hi, *rest):
        calls.append(starts.shape[0])
        return starts * 2.0, jnp.sum(starts, axis=1) + eta

    n = 4 * _attack.PGD_CHUNK
    # positive objectives: no violation stops the chunks early
    starts = jnp.asarray(np.random.default_rng(0).uniform(0.1, 1.0, size=(n, 3)), jnp.float32)
    eta = jnp.asarray(np.resize(np.asarray(_attack.STEP_SCALES, np.float32), n))
    lo = hi = starts
    px, pv = _attack._pgd_chunks(pgd, starts, eta, lo, hi, (), (), budget=1e9)
    assert calls == [_attack.PGD_CHUNK] * 4
    # every (start, step size) pair ran exactly once
    ref = np.sort(np.asarray(jnp.sum(starts, axis=1) + eta))
    np.testing.assert_array_equal(np.sort(np.asarray(pv)), ref)
    calls.clear()
    px, pv = _attack._pgd_chunks(pgd, starts, eta, lo, hi, (), (), budget=0.0)
    assert calls == [_attack.PGD_CHUNK] and pv.shape == (_attack.PGD_CHUNK,)
    # the first chunk holds every step size and the best-ranked start
    first = np.asarray(px) / 2.0
    assert np.any(np.all(first == np.asarray(starts[0]), axis=1))
    got = np.asarray(pv) - np.asarray(jnp.sum(jnp.asarray(first), axis=1))
    for eta0 in _attack.STEP_SCALES:
        assert np.any(np.abs(got - eta0) < 1e-5), eta0
    # a violation (objective < 0) in the first chunk: the caller confirms it before more run
    calls.clear()
    starts = starts.at[0].set(-1.0)
    px, pv = _attack._pgd_chunks(pgd, starts, eta, lo, hi, (), (), budget=1e9)
    assert calls == [_attack.PGD_CHUNK] and float(np.min(pv)) < 0


@pytest.mark.long  # about 40 s
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchmarks/verivital is absent")
def test_verivital_maxpool_instance_solved_in_bounded_memory():
    """The max-pooling CNN that once asked for ~1 TB: verified, within a minute."""
    import resource

    from tljax.verify._cli import run_one

    onnx = SHARED / "onnx" / "Convnet_maxpool.onnx"
    vnnlib = SHARED / "vnnlib" / "maxpool_specs" / "prop_1_0.004.vnnlib"
    t = time.monotonic()
    res = run_one(str(onnx), str(vnnlib), timeout=200, progress=False)
    assert res.verdict == "unsat"  # expected.csv: unsat
    assert time.monotonic() - t < 200
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert peak_gib < 12, peak_gib


def test_cli_memory_budget_sizes():
    import argparse

    from tljax.verify._cli import _bytes

    assert _bytes("4G") == 4 << 30 and _bytes("512M") == 512 << 20 and _bytes("1000") == 1000
    assert _bytes("1.5k") == 1536 and _bytes("2GB") == 2 << 30
    for bad in ("4X", "", "-1G", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            _bytes(bad)


def test_pgd_stops_its_steps_once_a_start_holds_a_violation():
    # y = x on [0, 1], unsafe y <= 0.5: objective x - 0.5. From 0.6 with step 0.25 the first step
    # reaches 0.35 (a violation), the second ~0.10, where the steps stop; run to the end they
    # would reach the corner 0, objective -0.5.
    prop = Property(
        input_boxes=((np.zeros(1), np.ones(1)),),
        unsafe=((np.ones((1, 1)), np.full(1, 0.5)),),
        pairing=((0,),),
        n_inputs=1,
        n_outputs=1,
        path="<test>",
    )
    (group,) = make_groups(prop, 1)
    pgd = _attack._pgd_fn(lambda x: x, (1,), 100)
    x0 = jnp.asarray([[0.6], [0.9]], jnp.float32)
    lo, hi = jnp.zeros_like(x0), jnp.ones_like(x0)
    eta = jnp.asarray([0.25, 0.002], jnp.float32)
    px, pv = pgd(x0, eta, lo, hi, *_attack.attack_arrays(group), ())
    eta1 = 0.25 * 0.5 * (1.0 + np.cos(np.pi / 100)) + 1e-5
    np.testing.assert_allclose(np.asarray(pv)[0], 0.35 - eta1 - 0.5, atol=1e-5)
    # the slow start moved by its own two steps only
    assert 0.89 < float(np.asarray(px)[1, 0]) < 0.9


@pytest.mark.long  # about 40 s
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchmarks/verivital is absent")
def test_verivital_avgpool_eps004_verified_at_the_root_by_the_input_space_hull():
    """prop_7 at eps 0.04 (expected.csv: unsat) timed out after 300 s of ReLU splitting: CROWN's
    margins of its two open rows are -0.49 / -0.52 and their triangle LP's -0.44 / -0.49.
    alpha-CROWN with the first layer's input-space hull planes proves both at the root; the
    certificate re-checks (coverage exact, every leaf's bounds recomputed)."""
    from tljax.verify import load_instance
    from tljax.verify._cli import run_one

    onnx = SHARED / "onnx" / "Convnet_avgpool.onnx"
    vnnlib = SHARED / "vnnlib" / "avgpool_specs" / "prop_7_0.04.vnnlib"
    res = run_one(str(onnx), str(vnnlib), timeout=200, progress=False)
    assert res.verdict == "unsat"
    assert res.stats["domains"] == 1 and res.stats["alpha_roots"] == 1
    fn, prop, args, _ = load_instance(str(onnx), str(vnnlib))
    rep = res.certificate.check(prop, fn, *args, rebound=True)
    assert rep.accepted, rep.reasons


def test_bound_keeps_wide_passes_at_intervals_when_memory_is_short(monkeypatch):
    """`tljax.bound` never plans a CROWN pass over half the machine's memory: on a machine of a
    few MiB the pooling nodes' passes keep interval bounds, a warning names the widest, and the
    bounds stay sound (never tighter than the full CROWN, which fits here)."""
    import tljax.bounds._api as api

    params = _params()
    _, box = _box(0.05)
    fn = jax.vmap(lambda x: pool_cnn(x[None], params)[0])  # a fresh function: no cached costs
    full = tljax.bound(fn, box, method="crown")
    costs, _ = prepare(fn, box).refine_costs()
    budget = costs[0] * api.PASS_BYTES["crown"]  # twice the budget: the widest does not fit
    monkeypatch.setattr(api, "available_memory", lambda total=False: budget)
    with pytest.warns(RuntimeWarning, match=r"keep their interval bounds.*carries [\d,]+ coeff"):
        short = tljax.bound(fn, box, method="crown")
    ref = tljax.bound(fn, box, method="crown", refine_limit=budget // 2 // api.PASS_BYTES["crown"])
    # the same limit (the second call compiles: rounding apart, the same bounds)
    np.testing.assert_allclose(np.asarray(short.lower), np.asarray(ref.lower), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(short.upper), np.asarray(ref.upper), rtol=1e-5)
    assert np.all(np.asarray(short.lower) <= np.asarray(full.lower))
    assert np.all(np.asarray(short.upper) >= np.asarray(full.upper))
    ys = np.asarray(jax.vmap(fn)(jnp.asarray(_samples(box)[:, None])))[:, 0]
    assert np.all(ys >= np.asarray(short.lower)) and np.all(ys <= np.asarray(short.upper))


def test_bound_out_of_memory_is_a_memory_error_naming_the_pass(monkeypatch):
    import tljax.bounds._api as api

    params = _params()
    _, box = _box(0.05)
    fn = jax.vmap(lambda x: pool_cnn(x[None], params)[0])

    def refuse(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Out of memory allocating 996109907560 bytes."
        )

    monkeypatch.setattr(api, "_compute", refuse)
    monkeypatch.setattr(api, "_host_first_calls", lambda: False)
    with pytest.raises(MemoryError, match=r"out of memory computing crown bounds") as info:
        tljax.bound(fn, box, method="crown", jit=False)
    msg = str(info.value)
    assert "widest intermediate CROWN pass" in msg and "coefficients" in msg
    assert "refine_limit=" in msg and "996109907560" in msg
