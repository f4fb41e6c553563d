"""certify_sup / certify_pinn: the certificates hold at sampled points, fail for a perturbed
network, carry exact leaf certificates, and the derivatives are the network's."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.bounds import check
from tljax.core import InputError
from tljax.sciml import certify_pinn, certify_sup, derivatives

NU = 0.01 / np.pi


def _mlp(seed, sizes=(2, 8, 8, 1), scale=0.9):
    rng = np.random.default_rng(seed)
    Ws = [
        (
            (rng.normal(size=(o, i)) * scale / np.sqrt(i)).astype(np.float32),
            (rng.normal(size=o) * 0.3).astype(np.float32),
        )
        for i, o in itertools.pairwise(sizes)
    ]

    def u(z):
        h = z
        for W, b in Ws[:-1]:
            h = jnp.tanh(jnp.asarray(W, z.dtype) @ h + jnp.asarray(b, z.dtype))
        W, b = Ws[-1]
        return (jnp.asarray(W, z.dtype) @ h + jnp.asarray(b, z.dtype))[0]

    return u, Ws


def _burgers(d, z):
    del z
    return d["t"] + d[""] * d["x"] - NU * d["xx"]


def test_derivatives_match_reverse_mode_in_float64():
    u, _ = _mlp(0)
    with jax.enable_x64(True):
        d = derivatives(u, ["t", "x", "xx", "tx"], "tx")
        H = jax.hessian(u)
        g = jax.grad(u)
        for z in np.random.default_rng(1).uniform(-1, 1, (5, 2)):
            z = jnp.asarray(z, jnp.float64)
            v = d(z)
            np.testing.assert_allclose(v[""], u(z), rtol=1e-12)
            np.testing.assert_allclose([v["t"], v["x"]], g(z), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose([v["xx"], v["tx"]], [H(z)[1, 1], H(z)[0, 1]], rtol=1e-9)


@pytest.mark.parametrize(
    "semantics", ["real", pytest.param("float32", marks=pytest.mark.slow)]
)
def test_residual_certificate_holds_at_sampled_points(semantics):
    u, _ = _mlp(2, sizes=(2, 6, 1))
    dfn = derivatives(u, ["t", "x", "xx"], "tx")
    with jax.enable_x64(semantics == "real"):
        c = certify_sup(
            lambda z: _burgers(dfn(z), z),
            [0.0, -1.0],
            [0.5, 0.0],
            name="residual",
            semantics=semantics,
            initial=4,
            batch=32,
            samples=10_000,
            timeout=120,
        )
    assert c.reached and c.certified <= c.goal
    assert c.certified >= c.sampled  # a certificate is never below a sampled value
    assert c.ratio <= 1.1 + 1e-9
    # 10^4+ points in every leaf (corners included), evaluated in the certificate's arithmetic
    rc = c.recheck(per_leaf=10_000, max_points=2_000_000)
    assert rc["points"] >= 10_000 * min(c.leaves, 200)
    assert rc["violations"] == 0
    assert rc["max_abs"] <= c.certified


def test_perturbed_network_breaks_the_certificate():
    u, _ = _mlp(3, sizes=(1, 8, 1))
    c = certify_sup(
        lambda x: u(x), [-1.0], [1.0], semantics="float32", initial=8, batch=16, samples=4000
    )
    assert c.recheck(per_leaf=2000)["violations"] == 0
    # the same leaves checked against a perturbed network: values leave the certified bounds
    bumped = dataclasses.replace(c, fn=lambda x: u(x) + 0.05 * jnp.cos(3.0 * x[0]))
    assert bumped.recheck(per_leaf=2000)["violations"] > 0
    # and certifying the perturbed network against the original goal fails
    c2 = certify_sup(
        lambda x: 1.3 * u(x),
        [-1.0],
        [1.0],
        semantics="float32",
        goal=c.goal,
        initial=8,
        batch=16,
        samples=4000,
        max_leaves=64,
    )
    assert not c2.reached and c2.certified > c.goal


def test_leaf_carries_an_exact_certificate():
    u, _ = _mlp(4, sizes=(1, 4, 1))
    c = certify_sup(lambda x: u(x), [-1.0], [1.0], semantics="float32", initial=4, batch=8)
    _, report = c.certificate(int(np.argmax(c.f_upper)))
    assert report.accepted
    # the certified bound of that leaf contains its sampled values
    i = int(np.argmax(c.f_upper))
    xs = np.linspace(c.lower[i, 0], c.upper[i, 0], 257, dtype=np.float32)
    vals = np.asarray(jax.vmap(lambda x: u(jnp.atleast_1d(x)))(jnp.asarray(xs)))
    assert vals.min() >= c.f_lower[i] and vals.max() <= c.f_upper[i]


def test_taylor_leaf_certificate_states_the_leaf_bound():
    # real semantics: Taylor leaves, and their certificates re-derived in ball arithmetic
    u, Ws = _mlp(5, sizes=(2, 6, 1))
    dfn = derivatives(u, ["t", "x", "xx"], "tx")

    def r(z):
        return _burgers(dfn(z), z).reshape(1)

    with jax.enable_x64(True):
        c = certify_sup(r, [0.0, -1.0], [0.5, 0.0], initial=4, batch=32, samples=2000)
        assert c.method == "taylor"
        i = int(np.argmax(np.maximum(np.abs(c.f_lower), np.abs(c.f_upper))))
        cert, report = c.certificate(i)
        assert report.accepted and cert.method == "taylor", report.reason
        # the certificate claims the leaf's own bound (same computation, eager vs batched)
        np.testing.assert_allclose(cert.lower[0], [c.f_lower[i]], rtol=1e-9)
        np.testing.assert_allclose(cert.upper[0], [c.f_upper[i]], rtol=1e-9)
        # the same program with the first layer's weights scaled by 1.001 fails the check
        Ws[0][0][...] *= 1.001
        bumped = check(cert, r)
        assert not bumped.accepted and "claimed" in bumped.reason, bumped.reason


def test_closed_form_residual_is_enclosed():
    # u = tanh(a t + b x + c): residual u_t + u u_x - nu u_xx has the closed form
    # (1 - u^2) (a + b u + 2 nu b^2 u); its sup over a fine float64 grid is the reference
    a, b, c0 = 0.7, -1.3, 0.2

    def u(z):
        return jnp.tanh(a * z[0] + b * z[1] + c0)

    grid = np.stack(np.meshgrid(np.linspace(0, 1, 801), np.linspace(-1, 1, 801)), -1)
    v = np.tanh(a * grid[..., 0] + b * grid[..., 1] + c0)
    ref = np.abs((1 - v**2) * (a + b * v + 2 * NU * b**2 * v)).max()
    with jax.enable_x64(True):
        rep = certify_pinn(
            u,
            _burgers,
            [0.0, -1.0],
            [1.0, 1.0],
            partials=["t", "x", "xx"],
            which=["residual"],
            semantics="real",
            rel_goal=0.02,
            batch=32,
            samples=40_000,
        )
    r = rep["residual"]
    assert r.reached
    assert ref <= r.certified <= 1.02 * r.sampled + 1e-12
    assert abs(r.sampled - ref) < 1e-3 * ref  # the sampled max agrees with the closed form


def test_initial_and_boundary_faces():
    u, _ = _mlp(5, sizes=(2, 6, 1))
    rep = certify_pinn(
        u,
        _burgers,
        [0.0, -1.0],
        [1.0, 1.0],
        partials=["t", "x", "xx"],
        initial=lambda x: -jnp.sin(jnp.pi * x[0]),
        boundary=[(1, -1.0, 0.0), (1, 1.0, 0.0)],
        which=["initial", "boundary"],
        semantics="float32",
        batch=16,
        samples=4000,
    )
    names = [c.name for c in rep.certificates]
    assert names == ["initial", "boundary x=-1", "boundary x=1"]
    ts = np.linspace(0, 1, 501, dtype=np.float32)
    edge = np.asarray(jax.vmap(lambda t: u(jnp.stack([t, jnp.float32(1.0)])))(jnp.asarray(ts)))
    assert np.abs(edge).max() <= rep["boundary x=1"].certified
    for c in rep.certificates:
        assert c.reached and c.recheck(per_leaf=10_000)["violations"] == 0
    assert "| initial |" in rep.table()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lower": [0.0, 1.0], "upper": [1.0, -1.0]}, "lower <= upper"),
        ({"lower": [0.0, np.nan], "upper": [1.0, 1.0]}, "invalid domain"),
        ({"lower": [0.0], "upper": [1.0, 1.0]}, "must be"),
        ({"semantics": "bf16"}, "semantics"),
        ({"split": "random"}, "split"),
    ],
)
def test_bad_input_says_what(kw, match):
    u, _ = _mlp(6)
    args = {"lower": [0.0, -1.0], "upper": [1.0, 1.0], **kw}
    with pytest.raises(InputError, match=match):
        certify_sup(u, args.pop("lower"), args.pop("upper"), **args)


def test_bad_partial_name():
    u, _ = _mlp(6)
    with pytest.raises(InputError, match="partial 'y'"):
        derivatives(u, ["y"], "tx")


def test_greedy_split_cuts_where_the_bound_is_loose():
    """0.1 t + x sin(3x): every leaf centre stays at x = 0 while only t is cut, where the
    gradient points along t alone, so the gradient rule never cuts x and never reaches the goal
    (the product's bound needs x cut); the greedy rule bounds both cuts and cuts x."""
    f = lambda z: 0.1 * z[0] + z[1] * jnp.sin(3.0 * z[1])  # noqa: E731
    kw = dict(method="crown", semantics="float32", initial=1, batch=8, max_leaves=96, samples=4096)
    greedy = certify_sup(f, [0.0, -1.0], [1.0, 1.0], split="greedy", **kw)
    blind = certify_sup(f, [0.0, -1.0], [1.0, 1.0], split="gradient", **kw)
    assert greedy.reached and greedy.certified <= greedy.goal
    assert not blind.reached
    assert np.all(blind.upper[:, 1] - blind.lower[:, 1] == 2.0)  # x never cut
    assert np.min(greedy.upper[:, 1] - greedy.lower[:, 1]) < 0.5
    assert greedy.recheck(per_leaf=64)["violations"] == 0
