"""Certificates: honest ones are accepted by the exact checker, tampered ones are rejected."""

import copy
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds._certificate import Certificate, check

EPS = 0.1


def mlp(x, params):
    h = x
    for i, (w, b) in enumerate(params):
        h = w @ h + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h


def init(seed, sizes):
    rng = np.random.RandomState(seed)
    return [
        ((rng.randn(o, i) / np.sqrt(i)).astype(np.float32), (rng.randn(o) * 0.1).astype(np.float32))
        for i, o in itertools.pairwise(sizes)
    ]


PARAMS = init(0, [4, 12, 12, 3])
X = np.random.RandomState(1).randn(4).astype(np.float32)


@pytest.fixture(scope="module")
def certs():
    box = tljax.Box.linf(X, EPS)
    out = {}
    for m in ("ibp", "crown", "alpha-crown"):
        # a few alpha iterations keep the test fast; the certificate re-runs the same optimisation
        kw = {"alpha_iters": 3} if m == "alpha-crown" else {}
        b = tljax.bound(mlp, box, PARAMS, method=m, certificate=True, jit=False, **kw)
        out[m] = (b, b.certificate)
    return out


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_honest_accepted(certs, method):
    b, c = certs[method]
    assert isinstance(c, Certificate) and c.method == method and c.float_sound
    r = check(c, mlp, PARAMS)
    assert r.accepted, r.reason
    assert "float program re-derived exactly" in r.reason
    # The claim is (up to the re-run's rounding) at least as tight as the bound returned; for
    # alpha-CROWN (whose best iterate the certificate does not keep) at least as tight as CROWN.
    ref = certs["crown"][0] if method == "alpha-crown" else b
    assert np.all(c.lower[0] >= np.asarray(ref.lower) - 1e-5)
    assert np.all(c.upper[0] <= np.asarray(ref.upper) + 1e-5)
    if method == "alpha-crown":
        assert len(c.passes) == 2 and c.passes[1]["alphas"]


def test_spec_and_json_roundtrip(tmp_path):
    box = tljax.Box.linf(X, EPS)
    spec = np.array([[1.0, -1.0, 0.0], [0.5, 0.0, -2.0]], np.float32)
    b = tljax.bound(
        mlp, box, PARAMS, method="crown", spec=spec, certificate=True, float_sound=False, jit=False
    )
    c = b.certificate
    assert c.requested_float_sound is False and c.lower[0].shape == (2,)
    r = check(c, mlp, PARAMS)
    assert r.accepted, r.reason
    c.to_json(tmp_path / "c.json")
    c2 = Certificate.from_json(tmp_path / "c.json")
    r2 = check(c2, mlp, PARAMS)
    assert r2.accepted and r2.reason == r.reason
    for a, a2 in zip(
        jax.tree.leaves(dataclasses.asdict(c)), jax.tree.leaves(dataclasses.asdict(c2)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(a2))
    # A tampered copy written and read back is still rejected.
    c3 = _tamper(c2, lambda d: d["lower"][0].__setitem__(0, d["lower"][0][0] + 1e-3))
    c3.to_json(tmp_path / "c3.json")
    assert not check(Certificate.from_json(tmp_path / "c3.json"), mlp, PARAMS).accepted


def _tamper(c, edit):
    d = {f.name: copy.deepcopy(getattr(c, f.name)) for f in dataclasses.fields(c)}
    edit(d)
    return Certificate(**d)


def _unstable(pass_, c):
    """(eqn key, index) of an unstable ReLU and its input node's key."""
    for i, (_, _, a_u, _) in pass_["relax"].items():
        for r in range(a_u.size):
            if 0.0 < a_u[r] < 1.0:
                return i, r
    raise AssertionError("no unstable neuron")


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_tampered_relaxations_rejected(certs, method):
    _, c = certs[method]
    i, r = _unstable(c.passes[0], c)

    def slope_u(d):
        d["passes"][0]["relax"][i][2][r] -= 1e-3

    def icpt_u(d):
        d["passes"][0]["relax"][i][3][r] -= 1e-3

    def slope_l(d):
        a_l = d["passes"][0]["relax"][i][0]
        a_l[r] = 1.0 + 1e-3 if a_l[r] > 0.5 else -1e-3

    def icpt_l(d):
        d["passes"][0]["relax"][i][1][r] += 1e-3

    for edit, what in [
        (slope_u, "upper line"),
        (icpt_u, "upper line"),
        (slope_l, "lower line"),
        (icpt_l, "lower line"),
    ]:
        res = check(_tamper(c, edit), mlp, PARAMS)
        assert not res.accepted and what in res.reason and f"index {r}" in res.reason, res.reason


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_tampered_alpha_rejected(certs, method):
    _, c = certs[method]
    if method == "crown":
        assert all(not p["alphas"] for p in c.passes)
        return
    key = next(iter(c.passes[1]["alphas"]))

    def edit(d):
        d["passes"][1]["alphas"][key][0, ...] = 1.0 + 1e-3

    res = check(_tamper(c, edit), mlp, PARAMS)
    assert not res.accepted and "alpha" in res.reason, res.reason


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_tampered_bounds_and_box_rejected(certs, method):
    _, c = certs[method]
    nodes = c.passes[0]["nodes"]
    # the second ReLU's input: a node whose claim comes from back-substitution (crown) or IBP
    k = sorted(nodes, key=int)[1]

    def inter_lo(d):
        d["passes"][0]["nodes"][k][0][3] += 1e-3

    def inter_hi(d):
        d["passes"][0]["nodes"][k][1][3] -= 1e-3

    def box(d):
        d["box"][0][0][1] -= 1e-3

    def final_lo(d):
        d["lower"][0][1] += 1e-3

    def final_hi(d):
        d["upper"][0][2] -= 1e-3

    for edit, what in [
        (inter_lo, f"node {k}"),
        (inter_hi, f"node {k}"),
        (box, "claimed"),
        (final_lo, "output 0 index 1"),
        (final_hi, "output 0 index 2"),
    ]:
        res = check(_tamper(c, edit), mlp, PARAMS)
        assert not res.accepted and what in res.reason, (what, res.reason)


def _cnn_case():
    rng = np.random.RandomState(3)
    w = (rng.randn(2, 1, 3, 3) * 0.4).astype(np.float32)
    v = (rng.randn(2, 2 * 3 * 3) * 0.2).astype(np.float32)

    def cnn(x, w, v):
        h = jax.lax.conv_general_dilated(x[None], w, (1, 1), "VALID")[0]
        h = jax.nn.relu(h + 0.1)
        return v @ h.reshape(-1)

    x = rng.randn(1, 5, 5).astype(np.float32)
    return cnn, tljax.Box.linf(x, 0.05), (w, v)


def _check_cnn(method):
    cnn, box, args = _cnn_case()
    b = tljax.bound(cnn, box, *args, method=method, certificate=True, jit=False)
    r = check(b.certificate, cnn, *args)
    assert r.accepted, r.reason
    bad = _tamper(b.certificate, lambda d: d["upper"][0].__setitem__(0, d["upper"][0][0] - 1e-3))
    res = check(bad, cnn, *args)
    assert not res.accepted and "output 0 index 0" in res.reason


def test_cnn_ibp():
    _check_cnn("ibp")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_cnn_crown(method):
    _check_cnn(method)


def test_tanh_network_accepted():
    # smooth functions are checked too (tests/bounds/test_certificate_kinds.py has the rest)
    def tanh_net(x, p):
        return p[1][0] @ jnp.tanh(p[0][0] @ x + p[0][1]) + p[1][1]

    p2 = init(4, [4, 5, 2])
    b = tljax.bound(tanh_net, tljax.Box.linf(X, EPS), p2, method="ibp", certificate=True, jit=False)
    r = check(b.certificate, tanh_net, p2)
    assert r.accepted, r.reason


def test_wrong_program_rejected(certs):
    _, c = certs["crown"]
    other = init(9, [4, 12, 12, 3])
    r = check(c, mlp, other)
    assert not r.accepted
    r = check(c, lambda x, p: mlp(x, p) * 2.0, PARAMS)
    assert not r.accepted and "does not match" in r.reason


def test_alpha_crown_certificate_with_two_outputs():
    # the k-th output's slopes are keyed "out{k}" (k > 0) by the producer and the checker alike
    (w1, b1), (w2, b2) = init(3, [4, 8, 5])

    def two(x):  # one hidden layer, two heads of different sizes
        h = jax.nn.relu(w1 @ x + b1)
        return w2[:3] @ h + b2[:3], w2[3:] @ h + b2[3:]

    box = tljax.Box.linf(X, EPS)
    b = tljax.bound(two, box, method="alpha-crown", certificate=True, alpha_iters=3, jit=False)
    c = b.certificate
    keys = {k.split(":")[0] for k in c.passes[1]["alphas"]}
    assert keys == {"out", "out1"}, keys
    r = check(c, two)
    assert r.accepted, r.reason
    assert [a.shape for a in c.lower] == [(3,), (2,)]
    # the second output's slopes are the ones used for it: out-of-range ones are rejected there
    k1 = next(k for k in c.passes[1]["alphas"] if k.startswith("out1:"))
    t = _tamper(c, lambda d: d["passes"][1]["alphas"][k1].fill(1.5))
    r = check(t, two)
    assert not r.accepted and "alpha slopes of start out1" in r.reason, r.reason


def test_kernel_contracts_are_stated():
    from tljax.core import _kernel as K

    def relu_affine(x, w, b):
        return jax.nn.relu(w @ x + b)

    k = K.kernel(relu_affine, implementations={"cpu": relu_affine}, tolerance=1e-6, name="ra")
    (w1, b1), (w2, b2) = init(4, [4, 6, 2])

    def net(x):
        return w2 @ k(x, w1, b1) + b2

    box = tljax.Box.linf(X, EPS)
    b = tljax.bound(net, box, method="crown", certificate=True)
    (kc,) = b.kernel_contracts
    assert kc["name"] == "ra" and kc["tolerance"] == {"default": [1e-6, 1e-6]}
    assert kc["occurrences"] == 1 and kc["implementations"] == ["cpu"]
    assert kc["evidence"] == [] and kc["unchecked"] == ["cpu"]  # never checked by check_kernel
    assert b.certificate.kernel_contracts == b.kernel_contracts
    r = check(b.certificate, net)
    assert r.accepted and "rests on kernel contracts: ra x1" in r.reason, r.reason
    assert tljax.bound(net, box, method="ibp").kernel_contracts == b.kernel_contracts
    plain = tljax.bound(lambda x: mlp(x, PARAMS), box, method="ibp")
    assert plain.kernel_contracts == []


def test_claim_valid_only_for_real_network_rejected():
    # The known floating-point attack: the real network is y = x >= 0.5 on the box, but float32
    # computes relu(x + 2^24) - 2^24 = 0 at x = 0.5. A claim y >= 0.25 holds for the real network
    # only; the checker re-derives the float program's allowances and must refuse it.
    import dataclasses

    c24 = np.float32(2.0**24)

    def net(x):
        return jax.nn.relu(x + c24) - c24

    box = tljax.Box(jnp.array([0.5], jnp.float32), jnp.array([0.75], jnp.float32))
    b = tljax.bound(net, box, method="crown", certificate=True, jit=False)
    honest = check(b.certificate, net)
    assert honest.accepted, honest.reason
    assert float(b.lower[0]) <= float(jax.jit(net)(jnp.array([0.5], jnp.float32))[0])
    forged = dataclasses.replace(b.certificate, lower=[np.array([0.25])])
    r = check(forged, net)
    assert not r.accepted and "output 0 index 0: claimed lower" in r.reason, r.reason
    # The same claim is accepted under real-valued semantics (the certificate marked not
    # float-sound).
    real = dataclasses.replace(forged, float_sound=False)
    r = check(real, net)
    assert r.accepted and "real-valued" in r.reason, r.reason
