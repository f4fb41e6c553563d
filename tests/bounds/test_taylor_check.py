"""The exact checker of "taylor" certificates: its Lagrange constants proven in arb, valid
certificates accepted (far-out centres, tiny and wide boxes, derivative programs), its enclosure
containing sampled values, tampered claims / boxes / choices / programs rejected."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
import sympy.calculus.util

import tljax
from tljax.bounds import Box, check
from tljax.bounds import _taylor_check as tc
from tljax.bounds._certificate import record_graph
from tljax.core import trace

ACTS = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "abs": jnp.abs,
}
SMOOTH = ("tanh", "softplus", "sigmoid")


def _program(seed, act, scale):
    """f(z) = (u(z), u_t + u u_x) of a 2-6-6-1 network (u only for piecewise-linear ones)."""
    rng = np.random.default_rng(seed)
    W1, b1 = rng.normal(size=(6, 2)) * scale, rng.normal(size=6) * scale
    W2, W3 = rng.normal(size=(6, 6)) * scale, rng.normal(size=(1, 6))
    g = ACTS[act]

    def u(z):
        return (W3 @ g(W2 @ g(W1 @ z + b1)))[0]

    def f(z):
        if act not in SMOOTH:
            return jnp.stack([u(z), -u(z)])
        d = jax.grad(u)(z)
        return jnp.stack([u(z), d[0] + u(z) * d[1]])

    return f


def _cert(f, lo, hi):
    b = tljax.bound(
        f,
        Box(jnp.asarray(lo), jnp.asarray(hi)),
        method="taylor",
        certificate=True,
        float_format="real",
        jit=False,
    )
    return b, b.certificate


def _derive(cert, f):
    """The checker's enclosure per output (float64 numbers, rounded to nearest)."""
    with jax.enable_x64(True):
        lo = jnp.asarray(cert.box[0][0])
        g = trace(f, lo)
        tape = record_graph(g, [True], g.flatten_inputs(lo)[1:], name="t")
        derived = tc.derive(cert, tape)
    return [(np.array([float(v) for v in a]), np.array([float(v) for v in b])) for a, b in derived]


# the k-th derivative of tanh / sech2 is s * q(t), t = tanh, s = 1 - t²: q per (prim, k)
_FACTOR = {
    ("tanh", 2): lambda t: -2 * t,
    ("tanh", 3): lambda t: 6 * t * t - 2,
    ("sech2", 2): lambda t: 6 * t * t - 2,
    ("sech2", 3): lambda t: t * (16 - 24 * t * t),
}


@pytest.mark.parametrize("key", sorted(_FACTOR))
def test_lagrange_constants_are_proven_in_arb(key):
    prim = {"tanh": jax.lax.tanh_p, "sech2": tc.sech2_p}[key[0]]
    top, per_s = tc._LAGRANGE[prim][key[1] - 2]
    q = _FACTOR[key]
    # the formula is the k-th derivative (jax's, at sample points)
    f = jnp.tanh if key[0] == "tanh" else (lambda x: 1 - jnp.tanh(x) ** 2)
    for _ in range(key[1]):
        f = jax.grad(f)
    with jax.enable_x64(True):
        xs = np.linspace(-6, 6, 97)
        got = np.array([float(f(jnp.float64(x))) for x in xs])
    t = np.tanh(xs)
    np.testing.assert_allclose(got, (1 - t * t) * q(t), atol=1e-12)
    # |q(t)| <= per_s and |s q(t)| <= top on [-1, 1]: the polynomials' exact extremes (sympy)
    tt = sympy.Symbol("t", real=True)
    dom = sympy.Interval(-1, 1)
    for expr, limit in ((q(tt), per_s), ((1 - tt**2) * q(tt), top)):
        expr = sympy.expand(expr)
        hi = sympy.calculus.util.maximum(expr, tt, dom)
        lo = sympy.calculus.util.minimum(expr, tt, dom)
        bound = sympy.Rational(str(limit)) if not isinstance(limit, int) else sympy.Integer(limit)
        assert sympy.Max(hi, -lo) <= bound, (key, expr, hi, lo, bound)


CASES = [
    # act, weight scale, centre, half-widths
    ("tanh", 0.5, (-98.6, 29.1), (0.11, 0.7)),
    ("tanh", 4.0, (-0.23, 0.23), (5.6e-5, 5e-6)),
    ("tanh", 2.0, (0.59, -0.36), (0.15, 3.8e-4)),
    ("tanh", 0.5, (0.97, -0.23), (1.58, 0.039)),
    ("tanh", 3.0, (0.3, -0.2), (1e-7, 1e-7)),
    ("softplus", 2.0, (-0.26, -0.78), (2.6e-5, 9.7e-5)),
    ("softplus", 2.0, (16.0, 58.1), (4.9, 3.0)),
    ("sigmoid", 2.0, (96.8, -99.5), (3.6e-4, 2.6e-6)),
    ("sigmoid", 4.0, (-0.5, -0.57), (3.3, 0.022)),
    ("relu", 4.0, (0.15, 0.21), (1.36, 1.93)),
    ("abs", 4.0, (73.2, 83.0), (0.026, 7.4)),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{k}" for k, c in enumerate(CASES)])
def test_certificate_accepted_and_encloses_samples(case):
    act, scale, c, w = case
    f = _program(len(CASES) + CASES.index(case), act, scale)
    with jax.enable_x64(True):
        c, w = np.asarray(c), np.asarray(w)
        b, cert = _cert(f, c - w, c + w)
        res = check(cert, f)
        assert res.accepted, res.reason
        assert "taylor" in res.reason and "arb" in res.reason
        # the claim is the bound's own (the eager float-sound run)
        np.testing.assert_allclose(cert.lower[0], b.lower, rtol=1e-9, atol=1e-300)
        ((dlo, dhi),) = _derive(cert, f)
        assert np.all(dlo >= cert.lower[0]) and np.all(dhi <= cert.upper[0])
        # sampled float64 values (corners included) inside the checker's enclosure, up to the
        # float64 evaluation's own error
        pts = np.random.default_rng(0).uniform(c - w, c + w, (2000, 2))
        pts[:4] = [c + w * np.array(s) for s in ((-1, -1), (-1, 1), (1, -1), (1, 1))]
        vals = np.asarray(jax.vmap(f)(jnp.asarray(pts)))
        slack = 1e-12 * (1 + np.abs(vals))
        assert np.all(vals >= dlo - slack) and np.all(vals <= dhi + slack)


@pytest.fixture(scope="module")
def certified():
    f = _program(7, "tanh", 2.0)
    with jax.enable_x64(True):
        lo, hi = np.array([0.1, -0.3]), np.array([0.13, -0.28])
        _, cert = _cert(f, lo, hi)
    return f, cert


def _check64(cert, f):
    with jax.enable_x64(True):
        return check(cert, f)


def test_json_roundtrip_accepted(certified, tmp_path):
    f, cert = certified
    cert.to_json(tmp_path / "c.json")
    back = type(cert).from_json(tmp_path / "c.json")
    assert _check64(back, f).accepted


def test_tightened_claim_rejected(certified):
    f, cert = certified
    ((dlo, dhi),) = _derive(cert, f)
    # a claim just inside the derived enclosure fails on each side
    lower = cert.lower[0].copy()
    lower[1] = np.nextafter(dlo[1], np.inf) + 1e-12 * abs(dlo[1])
    r = _check64(dataclasses.replace(cert, lower=[lower]), f)
    assert not r.accepted and "output 0 index 1: claimed lower" in r.reason
    upper = cert.upper[0].copy()
    upper[0] = dhi[0] - 1e-12 * abs(dhi[0])
    r = _check64(dataclasses.replace(cert, upper=[upper]), f)
    assert not r.accepted and "claimed upper" in r.reason


def test_widened_box_rejected(certified):
    f, cert = certified
    lo, hi = cert.box[0]
    r = _check64(dataclasses.replace(cert, box=[(lo - 0.01, hi + 0.01)]), f)
    assert not r.accepted and "claimed" in r.reason


def test_perturbed_program_rejected(certified):
    f, cert = certified

    def g(z):
        return f(z) * jnp.asarray([1.0, 1.001])

    r = _check64(cert, g)
    assert not r.accepted


def test_tampered_choices_only_loosen(certified):
    f, cert = certified
    ((dlo, dhi),) = _derive(cert, f)
    choices = cert.passes[0]["taylor_choices"]
    flipped = {i: {k: 1 - v for k, v in c.items()} for i, c in choices.items()}
    tampered = dataclasses.replace(cert, passes=[{"taylor_choices": flipped}])
    with jax.enable_x64(True):
        ((tlo, thi),) = _derive(tampered, f)
        lo, hi = cert.box[0]
        pts = np.random.default_rng(1).uniform(lo, hi, (4000, 2))
        vals = np.asarray(jax.vmap(f)(jnp.asarray(pts)))
    # the flipped computation is another sound enclosure (looser here), never a wrong one
    slack = 1e-12 * (1 + np.abs(vals))
    assert np.all(vals >= tlo - slack) and np.all(vals <= thi + slack)
    assert np.any(tlo < dlo) or np.any(thi > dhi)
    assert not _check64(tampered, f).accepted
    # a malformed choice is named
    i = next(iter(choices))
    bad = {**choices, i: {k: np.zeros(3, np.int8) for k in choices[i]}}
    r = _check64(dataclasses.replace(cert, passes=[{"taylor_choices": bad}]), f)
    assert not r.accepted and "choice" in r.reason


def test_float64_certificate_needs_x64(certified):
    f, cert = certified
    r = check(cert, f)  # x64 off: the program would be traced in float32
    assert not r.accepted and "enable_x64" in r.reason


def test_refusals():
    f = _program(1, "tanh", 1.0)
    with jax.enable_x64(True):
        box = Box(jnp.zeros(2), jnp.ones(2) * 0.1)
        with pytest.raises(tljax.core.InputError, match="affine"):
            tljax.bound(f, box, method="affine", certificate=True)
        _, cert = _cert(f, np.zeros(2), np.ones(2) * 0.1)
        r = check(dataclasses.replace(cert, passes=[]), f)
        assert not r.accepted and "one pass" in r.reason
        r = check(dataclasses.replace(cert, spec=np.ones((1, 2))), f)
        assert not r.accepted and "spec" in r.reason
