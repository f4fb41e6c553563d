"""Certificates of networks with every relaxation kind of the tape (smooth unary functions, abs,
products of two nodes, max pooling as ReLU rewrites with monotone hints or as a "concretize"
equation): honest ones are accepted and contain sampled float32 outputs, tampered ones are
rejected with a reason naming the equation."""

import copy
import dataclasses
import functools as ft
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds import _certificate
from tljax.bounds._certificate import Certificate, check

RNG = np.random.RandomState(0)
PARAMS = [
    ((RNG.randn(o, i) / np.sqrt(i)).astype(np.float32), (RNG.randn(o) * 0.1).astype(np.float32))
    for i, o in itertools.pairwise([4, 6, 6, 3])
]
X = RNG.randn(4).astype(np.float32)
EPS = 0.2


def _pair(h):  # a product of two nodes (McCormick), keeping the width
    return jnp.concatenate([h[:3] * h[3:], h[:3]])


# per network: the activation of the first and of the second hidden layer
ACTS = {
    "tanh": (jnp.tanh, jnp.tanh),
    "sigmoid": (jax.nn.sigmoid, jax.nn.sigmoid),
    "abs": (jnp.abs, jnp.abs),
    "square": (lambda h: h * h, lambda h: h * h),
    "softplus": (jax.nn.softplus, jax.nn.softplus),
    "mul": (_pair, _pair),
    "relu-tanh": (jax.nn.relu, jnp.tanh),
    "select": (jax.nn.leaky_relu, lambda h: jax.nn.hard_tanh(2.0 * h)),  # where(cmp, ., .)
}


def net_of(name):
    acts = ACTS[name]

    def net(x):
        h = x
        for k, (w, b) in enumerate(PARAMS):
            h = w @ h + b
            if k < 2:
                h = acts[k](h)
        return h

    return net


def _box():
    return tljax.Box.linf(X, EPS)


def _samples(fn, box, n=256, seed=1):
    """float32 outputs (jit, XLA:CPU) at the box corners and at uniform points inside."""
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))), np.float32)
    inside = lo + (hi - lo) * np.random.RandomState(seed).rand(n, lo.size).astype(np.float32)
    return np.asarray(jax.jit(jax.vmap(fn))(np.concatenate([corners, inside])))


FAST = [(a, "crown") for a in ACTS if a != "relu-tanh"] + [("select", "ibp")]
FAST += [("tanh", "ibp"), ("mul", "ibp")]
SLOW = [(a, "ibp") for a in ("sigmoid", "abs", "square", "softplus")]
SLOW += [("relu-tanh", "crown"), ("relu-tanh", "alpha-crown")]
CASES = FAST + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW]


@ft.cache
def _cert(name, method):
    kw = {"alpha_iters": 3} if method == "alpha-crown" else {}
    b = tljax.bound(net_of(name), _box(), method=method, certificate=True, jit=False, **kw)
    return b.certificate


@pytest.fixture(scope="module")
def certs():
    class _Lazy(dict):
        def __missing__(self, key):
            return _cert(*key)

    return _Lazy()


@pytest.mark.parametrize(("name", "method"), CASES)
def test_honest_accepted_and_contains_samples(certs, name, method):
    c = certs[(name, method)]
    r = check(c, net_of(name))
    assert r.accepted, r.reason
    assert "float program re-derived exactly" in r.reason
    ys = _samples(net_of(name), _box())
    assert np.all(c.lower[0] <= ys.min(axis=0)), (c.lower[0], ys.min(axis=0))
    assert np.all(c.upper[0] >= ys.max(axis=0)), (c.upper[0], ys.max(axis=0))
    if method == "alpha-crown":
        assert len(c.passes) == 2 and c.passes[1]["alphas"]


def _tamper(c, edit):
    d = {f.name: copy.deepcopy(getattr(c, f.name)) for f in dataclasses.fields(c)}
    edit(d)
    return Certificate(**d)


def _eqn_of(c, name, relaxed=True):
    """(equation index, tape name) of the first equation named `name` with a relaxation."""
    for i, (_, fn, _) in enumerate(c.tape):
        if fn == name and (not relaxed or str(i) in c.passes[0]["relax"]):
            return i
    raise AssertionError(f"no {name} equation")


def _unstable(lines):
    """An index where the relaxation is not a constant pair of lines (a varying function)."""
    return int(np.argmax(np.abs(lines[3] - lines[1])))


@pytest.mark.parametrize(
    ("name", "fn"),
    [("tanh", "tanh"), ("sigmoid", "logistic"), ("softplus", "softplus"), ("square", "square")],
)
def test_smooth_lines_tampered(certs, name, fn):
    c = certs[(name, "crown")]
    i = _eqn_of(c, fn)
    r = _unstable(c.passes[0]["relax"][str(i)])
    net = net_of(name)

    def raise_lower(d):  # the lower intercept raised: the line cuts into f
        d["passes"][0]["relax"][str(i)][1][r] += 1e-3

    def lower_upper(d):  # the upper line moved inward
        d["passes"][0]["relax"][str(i)][3][r] -= 1e-3

    for edit, what in [
        (raise_lower, f"{fn} equation {i} index {r}: lower line"),
        (lower_upper, f"{fn} equation {i} index {r}: upper line"),
    ]:
        res = check(_tamper(c, edit), net)
        assert not res.accepted and what in res.reason, (what, res.reason)
    # The lower slope turned about x = 0: either way the certificate is rejected; the way that
    # lifts the line where it touches f (not at 0) breaks the line itself.
    reasons = []
    for da in (0.05, -0.05):
        t = _tamper(
            c,
            lambda d, da=da: d["passes"][0]["relax"][str(i)][0].__setitem__(
                r, d["passes"][0]["relax"][str(i)][0][r] + da
            ),
        )
        res = check(t, net)
        assert not res.accepted, da
        reasons.append(res.reason)
    assert any(f"{fn} equation {i} index {r}: lower line" in x for x in reasons), reasons


def test_abs_lines_tampered(certs):
    c = certs[("abs", "crown")]
    i = _eqn_of(c, "abs")
    b_u = c.passes[0]["relax"][str(i)][3]
    r = int(np.argmax(b_u))  # a neuron whose interval contains 0

    def lower_upper(d):
        d["passes"][0]["relax"][str(i)][3][r] -= 1e-3

    def raise_lower(d):
        d["passes"][0]["relax"][str(i)][1][r] += 1e-3

    for edit, what in [
        (lower_upper, f"abs equation {i} index {r}: upper line"),
        (raise_lower, f"abs equation {i} index {r}: lower line"),
    ]:
        res = check(_tamper(c, edit), net_of("abs"))
        assert not res.accepted and what in res.reason, (what, res.reason)


def test_mccormick_planes_tampered(certs):
    c = certs[("mul", "crown")]
    i = _eqn_of(c, "mul")
    r = 0
    for k, what in [(2, "lower plane"), (5, "upper plane"), (0, "lower plane")]:

        def edit(d, k=k):  # the constant (k = 2, 5) or the x coefficient (k = 0) moved
            v = d["passes"][0]["relax"][str(i)][k]
            v[r] += 1e-3 if k == 2 else (-1e-3 if k == 5 else 0.05)

        res = check(_tamper(c, edit), net_of("mul"))
        assert not res.accepted and f"mul equation {i} index {r}: {what}" in res.reason, res.reason


@pytest.mark.parametrize("name", ["tanh", "mul"])
def test_claimed_interval_narrowed(certs, name):
    # the claimed input interval of a second-layer relaxed equation (a CROWN bound) narrowed
    c = certs[(name, "crown")]
    fn = "tanh" if name == "tanh" else "mul"
    ids = sorted(int(k) for k in c.passes[0]["nodes"])
    # node ids grow along the tape: the last claim before the output's is an input of the
    # last relaxed equation
    nid = str(ids[-2])

    def edit(d):
        d["passes"][0]["nodes"][nid][0][0] += 1e-3

    res = check(_tamper(c, edit), net_of(name))
    assert not res.accepted and f"node {nid} (input of {fn} equation" in res.reason, res.reason
    assert "claimed lower" in res.reason


def test_smooth_float_allowance_is_required():
    # tanh on [0.5, 0.75]: the real tanh is >= tanh(0.5) there, the float32 program's tanh only
    # up to its ulp allowance. A claim just below tanh(0.5) holds for the real function only.
    def net(x):
        return jnp.tanh(x)

    box = tljax.Box(jnp.array([0.5], jnp.float32), jnp.array([0.75], jnp.float32))
    b = tljax.bound(net, box, method="ibp", certificate=True, jit=False)
    assert check(b.certificate, net).accepted
    forged = dataclasses.replace(b.certificate, lower=[np.array([math.tanh(0.5) - 1e-9])])
    r = check(forged, net)
    assert not r.accepted and "output 0 index 0: claimed lower" in r.reason, r.reason
    r = check(dataclasses.replace(forged, float_sound=False), net)
    assert r.accepted and "real-valued" in r.reason, r.reason
    # above the real minimum: rejected under both semantics
    wrong = dataclasses.replace(
        forged, lower=[np.array([math.tanh(0.5) + 1e-9])], float_sound=False
    )
    assert not check(wrong, net).accepted


def test_function_without_exact_description_rejected(certs, monkeypatch):
    monkeypatch.setattr(_certificate, "_smooth_of", lambda e: None)
    r = check(certs[("tanh", "ibp")], net_of("tanh"))
    assert not r.accepted and "no exact description" in r.reason and "tanh" in r.reason


# ----------------------------------------------------------------------------------------------
# Max pooling: unpadded as pairwise max = ReLU rewrites with "monotone" hints, padded as one
# "concretize" equation.


def _pool_case(padded: bool):
    rng = np.random.RandomState(3)
    w = (rng.randn(2, 1, 3, 3) * 0.4).astype(np.float32)
    v = (rng.randn(2, 8 if padded else 2) * 0.5).astype(np.float32)
    pad = ((0, 0), (0, 1), (0, 1)) if padded else "VALID"
    strides = (1, 1, 1) if padded else (1, 2, 2)

    def cnn(x):
        h = jax.lax.conv_general_dilated(x[None], w, (1, 1), "VALID")[0]
        h = jax.nn.relu(h + 0.1)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2), strides, pad)
        return v @ h.reshape(-1)

    x = rng.randn(1, 4, 4).astype(np.float32)
    return cnn, tljax.Box.linf(x, 0.1)


def _pool_samples(cnn, box, n=256):
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    xs = lo + (hi - lo) * np.random.RandomState(2).rand(n, *lo.shape).astype(np.float32)
    return np.asarray(jax.jit(jax.vmap(cnn))(xs))


def _check_pool(padded: bool, method: str):
    cnn, box = _pool_case(padded)
    kw = {"alpha_iters": 3} if method == "alpha-crown" else {}
    b = tljax.bound(cnn, box, method=method, certificate=True, jit=False, **kw)
    c = b.certificate
    kinds = {k for k, _, _ in c.tape}
    assert ("concretize" in kinds) == padded
    r = check(c, cnn)
    assert r.accepted, r.reason
    ys = _pool_samples(cnn, box)
    assert np.all(c.lower[0] <= ys.min(axis=0)) and np.all(c.upper[0] >= ys.max(axis=0))
    bad = _tamper(c, lambda d: d["lower"][0].__setitem__(0, d["lower"][0][0] + 1e-3))
    res = check(bad, cnn)
    assert not res.accepted and "output 0 index 0: claimed lower" in res.reason, res.reason
    return c, cnn


def test_maxpool_ibp_uses_monotone_hints():
    # reported: a valid IBP certificate of a max-pool network was rejected (the checker ignored
    # the exact max hulls the producer intersects with)
    _check_pool(False, "ibp")


def test_maxpool_padded_concretize_ibp():
    c, cnn = _check_pool(True, "ibp")
    i = next(k for k, (kind, _, _) in enumerate(c.tape) if kind == "concretize")
    # the pooled values (relu outputs, 2x2x2) come after the relu inputs (same size) on the tape
    nid = str(max(int(k) for k, (lo, _) in c.passes[0]["nodes"].items() if lo.size == 8))

    def narrow(d):  # the claimed interval of the concretize equation's input narrowed
        hi = d["passes"][0]["nodes"][nid][1].reshape(-1)  # a view
        hi[np.argmax(hi)] -= 1e-3

    res = check(_tamper(c, narrow), cnn)
    assert not res.accepted and f"(input of concretize equation {i})" in res.reason, res.reason
    assert "claimed upper" in res.reason


@pytest.mark.slow
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_maxpool_crown(padded, method):
    _check_pool(padded, method)


def test_select_claims_tampered(certs):
    # the output claim of a where() network raised past what the derived masks and hulls allow
    c = certs[("select", "crown")]
    net = net_of("select")
    assert any(k == "select" for k, _, _ in c.tape)
    forged = dataclasses.replace(c, lower=[np.asarray(c.lower[0]) + 0.05])
    r = check(forged, net)
    assert not r.accepted and "claimed lower" in r.reason, r.reason


# ----------------------------------------------------------------------------------------------
# What the checker cannot re-derive exactly is refused with a reason, never accepted on trust.


def _sort_net(x):
    w, b = PARAMS[0]
    return jnp.sort(jnp.tanh(w @ x + b))[::2]


def test_sort_certificate_refused():
    b = tljax.bound(_sort_net, _box(), method="ibp", certificate=True, jit=False)
    r = check(b.certificate, _sort_net)
    assert not r.accepted
    assert "sort" in r.reason and "cannot evaluate" in r.reason, r.reason


def test_interval_only_registered_primitive_refused():
    from jax.extend.core import Primitive
    from jax.interpreters import batching, mlir

    p = Primitive("user_cube_root_sign")
    impl = lambda x: jnp.sign(x) * jnp.abs(x) ** (1.0 / 3.0)  # noqa: E731
    p.def_impl(impl)
    p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(p, mlir.lower_fun(impl, multiple_results=False))
    batching.defvectorized(p)

    def interval(lo, hi, opts):  # nondecreasing, with a generous relative allowance
        pad = 64 * 2.0**-24
        return impl(lo) - pad * jnp.abs(impl(lo)) - 1e-30, impl(hi) + pad * jnp.abs(
            impl(hi)
        ) + 1e-30

    tljax.bounds.register(p, interval=interval)
    try:
        fn = lambda x: PARAMS[1][0] @ p.bind(PARAMS[0][0] @ x)  # noqa: E731
        b = tljax.bound(fn, _box(), method="crown", certificate=True, jit=False)
        ys = _samples(fn, _box())
        assert np.all(np.asarray(b.lower) <= ys.min(0)) and np.all(np.asarray(b.upper) >= ys.max(0))
        r = check(b.certificate, fn)
        assert not r.accepted
        assert "user_cube_root_sign" in r.reason and "no exact description" in r.reason, r.reason
    finally:
        tljax.bounds.RULES.pop(p, None)
