"""Bounds of derivative programs: jax.grad / jvp / jacfwd / hessian of smooth networks.

Derivative programs are where the bounds' rules meet their hardest inputs: products of
tangents and activation derivatives, 1 - tanh(z)^2 computed from a rounded tanh (an error that
does not shrink with the result), comparisons and `select_n` from the derivatives of piecewise
functions. Every case is checked against two references independent of the code under test:
XLA's float32 values of the program at sampled points, box corners and the centre (what
float-sound bounds must contain exactly), and float64 values of the same program (the real
network: every method must contain them, float-sound or not, the latter with a float32-level
tolerance because its own computation is plain float).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import tljax
from tljax.bounds import Kind, _api, _crown, _tape, prepare
from tljax.core import compat
from tljax.sciml import derivatives

METHODS = ("ibp", "affine", "crown", "alpha-crown")
ACTS = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "sin": jnp.sin,
}
# piecewise activations: their derivatives are select_n / comparisons / sign
PIECEWISE = {
    "leaky_relu": jax.nn.leaky_relu,
    "gelu": jax.nn.gelu,
    "clip": lambda x: jnp.clip(x, -1.0, 1.5),
    "abs": jnp.abs,
}
NU = np.float32(0.01)


def make_net(seed: int, act, n_in: int, width: int, depth: int, unscaled: bool):
    """A scalar MLP u(x) with `depth` hidden layers; unscaled: weights N(0, 3) (saturating)."""
    rng = np.random.default_rng(seed)
    sizes = [n_in] + [width] * depth + [1]
    params = []
    for a, b in itertools.pairwise(sizes):
        s = 3.0 if unscaled else 1.0 / np.sqrt(a)
        w = rng.normal(0.0, s, (b, a)).astype(np.float32)
        params.append((w, rng.normal(0.0, 0.5, (b,)).astype(np.float32)))

    def u(x):
        h = x
        for w, b in params[:-1]:
            h = act(w @ h + b)
        w, b = params[-1]
        return (w @ h + b)[0]

    return u


def programs(u, n_in: int) -> dict:
    """The derivative programs users bound, of a scalar network u on R^n_in."""
    v = np.linspace(1.0, -0.5, n_in).astype(np.float32)

    def jvp(x):
        return jax.jvp(u, (x,), (v.astype(x.dtype),))[1]

    def nested_jvp(x):  # second directional derivative
        return jax.jvp(jvp, (x,), (v.astype(x.dtype),))[1]

    def burgers(x):  # u_t + u u_x - nu u_xx with x = (x, t, ...)
        g = jax.grad(u)(x)
        return g[1] + u(x) * g[0] - NU * jax.hessian(u)(x)[0, 0]

    def lyapunov(x):  # grad V . f with f(x) = -x + sin(x) / 2
        return jnp.dot(jax.grad(u)(x), -x + 0.5 * jnp.sin(x))

    out = {
        "grad": jax.grad(u),
        "jvp": jvp,
        "nested_jvp": nested_jvp,
        "jacfwd": jax.jacfwd(u),
        "hessian": jax.hessian(u),
        "lyapunov": lyapunov,
    }
    if n_in >= 2:
        out["burgers"] = burgers
    return out


def box_of(kind: str, n_in: int, seed: int) -> tljax.Box:
    rng = np.random.default_rng(seed)
    c = rng.normal(0.0, 1.0, n_in)
    if kind == "far":  # centres with |x| up to 100
        c = rng.choice([-1.0, 1.0], n_in) * rng.uniform(20.0, 100.0, n_in)
    r = {"tiny": 1e-6, "small": 0.05, "large": 1.5, "far": 0.5, "zero": 0.0}[kind]
    c = c.astype(np.float32)
    return tljax.Box(jnp.asarray(c - np.float32(r)), jnp.asarray(c + np.float32(r)))


BOXES = ("tiny", "small", "large", "far", "zero")


def points(box: tljax.Box, n: int, seed: int) -> np.ndarray:
    """Float32 samples of the box (rounded into it), its corners and its centre."""
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    t = np.random.default_rng(seed).uniform(size=(n, lo.size))
    xs = np.clip((lo + t * (hi.astype(np.float64) - lo)).astype(np.float32), lo, hi)
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))), np.float32)
    mid = ((lo.astype(np.float64) + hi) / 2).astype(np.float32)[None]
    return np.concatenate([xs, corners, mid])


def values(fn, xs: np.ndarray):
    """(float32 values under jit, float64 values) of `fn` at the points, flattened per point."""
    y32 = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(xs)), np.float64)
    with jax.enable_x64(True):
        y64 = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(xs, jnp.float64)), np.float64)
    n = len(xs)
    return y32.reshape(n, -1), y64.reshape(n, -1)


def assert_contains(b, xs, y32, y64, float_sound: bool, where: str) -> None:
    lo = np.asarray(b.lower, np.float64).reshape(-1)
    hi = np.asarray(b.upper, np.float64).reshape(-1)
    assert not np.any(np.isnan(lo) | np.isnan(hi)), (where, lo, hi)
    # plain-float bounds of a point may cross by their own rounding
    slack = 0.0 if float_sound else 2.0**-18 * (1.0 + np.abs(lo))
    assert np.all(lo <= hi + slack), (where, lo, hi)
    refs = [("float64", y64)]
    if float_sound:  # the program's own float32 values, exactly
        refs.append(("float32", y32))
    for name, ys in refs:
        ok = np.isfinite(ys)
        # plain-float bounds are computed in float32 without outward rounding
        tol = 0.0 if float_sound else 2.0**-18 * (1.0 + np.abs(ys) + (hi - lo))
        bad = ok & ((ys < lo - tol) | (ys > hi + tol))
        if bad.any():
            k, j = np.argwhere(bad)[0]
            raise AssertionError(
                f"{where}: {name} value {ys[k, j]!r} at x={xs[k].tolist()} outside "
                f"[{lo[j]!r}, {hi[j]!r}] (output {j})"
            )


def check(fn, n_in: int, methods, float_sounds, seed: int, kinds=BOXES, n=200, where=""):
    """Bounds of `fn` by each method over each kind of box contain its values there."""
    for kind in kinds:
        box = box_of(kind, n_in, seed)
        xs = points(box, n, seed)
        y32, y64 = values(fn, xs)
        for method in methods:
            for fs in float_sounds:
                b = tljax.bound(fn, box, method=method, float_sound=fs, alpha_iters=2)
                at = f"{where} {method} float_sound={fs} {kind} box"
                assert_contains(b, xs, y32, y64, fs, at)


# ----------------------------------------------------------------------------------------------
# Property tests: random networks, random derivative programs.

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
NETS = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**16),
        "act": st.sampled_from(sorted(ACTS)),
        "n_in": st.integers(1, 3),
        "width": st.sampled_from([4, 6]),
        "depth": st.integers(1, 2),
        "unscaled": st.booleans(),
    }
)


def _run(net, program, methods, float_sounds, kinds=BOXES, n=200):
    u = make_net(
        net["seed"], ACTS[net["act"]], net["n_in"], net["width"], net["depth"], net["unscaled"]
    )
    progs = programs(u, net["n_in"])
    fn = progs.get(program, progs["grad"])
    check(fn, net["n_in"], methods, float_sounds, net["seed"], kinds, n, where=f"{net} {program}")


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(net=NETS, program=st.sampled_from(["grad", "jvp", "jacfwd", "lyapunov"]))
def test_first_derivatives_contain_values(net, program):
    _run(net, program, ("ibp", "crown"), (True, False))


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    phases=NO_SHRINK,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    net=NETS.map(lambda d: {**d, "width": 4, "depth": 1}),
    program=st.sampled_from(["nested_jvp", "hessian", "burgers"]),
)
def test_second_derivatives_contain_values(net, program):
    _run(net, program, ("ibp", "crown"), (True, False))


@pytest.mark.slow  # 30 s on 2 cores; ibp/crown on the same residual run by default above
@pytest.mark.parametrize("act", sorted(ACTS))
def test_every_method_bounds_a_burgers_residual(act):
    """u_t + u u_x - nu u_xx of a small 2-input network, by every method, float-sound or not."""
    u = make_net(7, ACTS[act], 2, 4, 1, False)
    fs = (True,) if act == "tanh" else (True, False)  # plain float: ibp / crown cover it by default
    check(programs(u, 2)["burgers"], 2, METHODS, fs, 7, ("small", "tiny", "zero"), 64)


@pytest.mark.parametrize("act", sorted(PIECEWISE))
def test_piecewise_activation_derivatives_bound(act):
    """leaky_relu, gelu, clip, abs: their derivatives are select_n / comparisons / sign."""
    u = make_net(3, PIECEWISE[act], 2, 4, 1, False)
    check(programs(u, 2)["grad"], 2, ("crown",), (True,), 3, ("small", "large", "zero"), 64, act)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, phases=NO_SHRINK)
@given(
    net=NETS.map(lambda d: d)
    | st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**16),
            "act": st.sampled_from(sorted(ACTS)),
            "n_in": st.integers(1, 3),
            "width": st.sampled_from([8, 16]),
            "depth": st.integers(1, 4),
            "unscaled": st.booleans(),
        }
    ),
    program=st.sampled_from(
        ["grad", "jvp", "nested_jvp", "jacfwd", "hessian", "burgers", "lyapunov"]
    ),
    method=st.sampled_from(METHODS),
)
def test_derivatives_contain_values_many(net, program, method):
    _run(net, program, (method,), (True, False), n=500)


@pytest.mark.slow
@pytest.mark.parametrize("act", sorted(PIECEWISE))
def test_piecewise_activation_derivatives_every_method(act):
    u = make_net(11, PIECEWISE[act], 3, 6, 2, True)  # grad, hessian, ... of each
    for name, fn in programs(u, 3).items():
        check(fn, 3, METHODS, (True, False), 11, BOXES, 200, f"{act} {name}")


# ----------------------------------------------------------------------------------------------
# The derivative rewrite: what it matches, and that it only fires there.


def _tape_of(fn, n_in: int):
    box = tljax.Box(jnp.zeros(n_in), jnp.ones(n_in))
    return _tape.record_graph(_api.trace_boxed(fn, box, ()), [True], [])


def _fns(tape) -> list[str]:
    return [e.fn for e in tape.eqns if e.fn]


@pytest.mark.parametrize("act, fn", [("tanh", "sech2"), ("sigmoid", "dlogistic")])
def test_derivative_patterns_become_one_smooth_node(act, fn):
    u = make_net(0, ACTS[act], 2, 4, 2, False)
    for name in ("grad", "jvp", "jacfwd", "lyapunov"):
        fns = _fns(_tape_of(programs(u, 2)[name], 2))
        assert fns.count(fn) == 2, (name, fns)  # one per hidden layer
    # the hessian's first-order terms (the jvp of the last layer's sech2 pattern, the
    # transposes' patterns under vmap) match too
    assert fn in _fns(_tape_of(programs(u, 2)["hessian"], 2))


def test_rewrite_needs_the_same_tanh_node():
    """(g + g t)(1 - s) with s a different tanh than t is not sech2 of anything."""

    def f(x):
        t, s = jnp.tanh(x[0]), jnp.tanh(x[1])
        return (x[0] + x[0] * t) * (1.0 - s)

    def g(x):  # (1 - t)(1 + s) from two tanh of the same value: not matched either
        t, s = jnp.tanh(x[0]), jnp.tanh(x[0] + 0.0)
        return (x[1] + x[1] * t) * (1.0 - s) + (2.0 - t) * x[1]

    for fn in (f, g):
        assert "sech2" not in _fns(_tape_of(fn, 2))
        check(fn, 2, ("ibp", "crown"), (True,), 1, ("small", "large"), 64, "unmatched")


def test_rewrite_leaves_relu_networks_alone():
    u = make_net(0, jax.nn.relu, 3, 8, 2, False)
    for name in ("grad", "hessian"):
        fns = _fns(_tape_of(programs(u, 3)[name], 3))
        assert "sech2" not in fns and "dlogistic" not in fns, fns


def test_sech2_rewrite_tightens_a_tanh_gradient():
    u = make_net(1, jnp.tanh, 2, 8, 2, False)
    ux = programs(u, 2)["grad"]
    box = tljax.Box(jnp.asarray([0.2, -0.3]), jnp.asarray([0.3, -0.2]))
    new = tljax.bound(ux, box, method="crown")
    xs = points(box, 200, 0)
    assert_contains(new, xs, *values(ux, xs), True, "sech2 rewrite")
    orig = (_tape._tanh_jvp, _tape._tanh_grad)
    try:
        _tape._tanh_jvp = _tape._tanh_grad = lambda *a: None
        old = tljax.bound(lambda x: ux(x) + 0.0, box, method="crown")
    finally:
        _tape._tanh_jvp, _tape._tanh_grad = orig
    assert np.all(np.asarray(new.upper - new.lower) < np.asarray(old.upper - old.lower))


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_exact_checker_accepts_derivative_bounds(act):
    """The certificate of a gradient's bounds (sech2 / dlogistic nodes) passes the exact checker,
    which re-derives the new functions' lines in arb against their allowance."""
    from tljax.bounds import check

    u = make_net(5, ACTS[act], 2, 4, 1, False)
    ux = programs(u, 2)["grad"]
    box = tljax.Box(jnp.asarray([0.1, -0.4]), jnp.asarray([0.3, -0.1]))
    for method in ("ibp", "crown"):
        b = tljax.bound(ux, box, method=method, certificate=True, jit=False)
        r = check(b.certificate, ux)
        assert r.accepted, (method, r.reason)


@pytest.mark.long
def test_crown_skips_passes_the_operand_already_decides(monkeypatch):
    """A node computed elementwise from a node whose bounds are CROWN's or exact by then (tanh' of
    a pre-activation, its negation or scaling) gets no backward pass of its own: that pass would
    be the operand's through one relaxation line, never tighter than the interval image of the
    operand's bounds. The passes drop; the CROWN bounds agree with every pass run to rounding
    (the passes are batched differently). About 45 s: two compilations."""
    rng = np.random.default_rng(2)
    sizes = [2, 6, 6, 6, 1]
    layers = [
        (rng.normal(size=(o, i)).astype(np.float32) * 2 / np.sqrt(i), rng.normal(size=o) * 0.3)
        for i, o in itertools.pairwise(sizes)
    ]

    def u(z):
        for k, (w, b) in enumerate(layers):
            z = w @ z + b.astype(np.float32)
            z = jax.nn.softplus(z) if k < len(layers) - 1 else z
        return z[0]

    d = derivatives(u, ["t", "x", "xx"], "tx")

    def fn(z):
        v = d(z)
        return jnp.stack([v["t"] + v[""] * v["x"] - 0.01 * v["xx"], v["xx"], v["x"]])

    graph = tljax.trace(fn, jnp.zeros(2, jnp.float32))
    tape = prepare(graph, tljax.Box(jnp.zeros(2), jnp.ones(2))).tape
    pruned, (full, _) = _crown.refine_plan(tape), _crown._full_plan(tape)
    assert pruned < full, (len(pruned), len(full))
    made = {e.out.id: e for e in tape.eqns}
    for nid in full - pruned:
        e = made[nid]
        assert len(e.node_inputs) == 1 and e.kind in (Kind.UNARY, Kind.AFFINE), e

    def crown(lo, hi):
        return jnp.stack(prepare(graph, tljax.Box(lo, hi)).bounds("crown")[0])

    # compiled quickly (the long elementwise chains of smooth relaxations, see tljax.sciml)
    opts = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
    opts = compat.supported_compiler_options(opts)
    boxes, rng = [], np.random.default_rng(2)
    for w in (1e-4, 1e-2, 0.3, 2.0):
        c = rng.uniform(-3, 3, 2)
        boxes.append((jnp.asarray(c - w, jnp.float32), jnp.asarray(c + w, jnp.float32)))
    with monkeypatch.context() as m:
        m.setattr(_crown, "refine_plan", lambda tape, limit=None: _crown._full_plan(tape)[0])
        every = jax.jit(lambda lo, hi: crown(lo, hi), compiler_options=opts)
        want = [np.asarray(every(lo, hi), np.float64) for lo, hi in boxes]
    # a second function: jax.jit would reuse the first trace of `crown` (every pass run)
    got = jax.jit(lambda lo, hi: crown(lo, hi), compiler_options=opts)
    for (lo, hi), ref in zip(boxes, want, strict=True):
        b = np.asarray(got(lo, hi), np.float64)
        np.testing.assert_array_less(np.abs(b - ref), 1e-5 * (1.0 + np.abs(ref)))


def test_crown_keeps_the_pass_of_an_image_needed_before_its_operand_is_refined(monkeypatch):
    """`-z` is needed (by a product) before `z`'s own relaxed consumer refines `z`: its bounds
    would be `-z`'s loose interval, so it keeps its pass. Dropping it (a first version of the plan
    did) doubled the width of this program's CROWN bound (142.3 against 73.3)."""
    rng = np.random.default_rng(0)
    w1, w2, w3 = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(8, 2), (8, 8), (8, 8)])

    def f(x):
        h = jnp.tanh(w1 @ x)
        z = w2 @ h
        return -z * (w3 @ h) + jnp.tanh(z)

    graph = tljax.trace(f, jnp.zeros(2, jnp.float32))
    box = tljax.Box(jnp.asarray([-0.5, 0.2]), jnp.asarray([0.5, 1.0]))
    got = prepare(graph, box).bounds("crown")[0]
    with monkeypatch.context() as m:
        m.setattr(_crown, "refine_plan", lambda tape, limit=None: _crown._full_plan(tape)[0])
        want = prepare(graph, box).bounds("crown")[0]
    for a, b in zip(got, want, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_array_less(np.abs(a - b), 1e-5 * (1.0 + np.abs(b)))
