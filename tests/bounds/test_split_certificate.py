"""Certificates of ReLU-split domains (beta-CROWN): the claims are about the domain
D = {x in box : s * z(x) >= 0 per split neuron}; honest ones are accepted by the exact checker,
tampered ones (splits, multipliers, bounds, node intervals) are rejected."""

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
from tljax.bounds import relu_shapes
from tljax.bounds._certificate import Certificate, check


def _tamper(c, edit):
    d = {f.name: copy.deepcopy(getattr(c, f.name)) for f in dataclasses.fields(c)}
    edit(d)
    return Certificate(**d)


# ---------------------------------------------------------------------------------------------
# A network where the split decides the claim: y = relu(z) + x with z = 2x, on x in [-1, 1].
# On D = {z >= 0} (neuron split active) y = 3x >= 0; over the whole box min y = -1 (x = -1).
# With the split, CROWN's identity relaxation gives y = 3x, whose minimum over the box is -3;
# the multiplier beta on the constraint z >= 0 gives min over the box of (3 - 2 beta) x, which
# is 0 for beta = 1.5 and -|3 - 2 beta| otherwise.


def kink(x):
    return jax.nn.relu(2.0 * x) + x


KBOX = tljax.Box(jnp.array([-1.0], jnp.float32), jnp.array([1.0], jnp.float32))
ACTIVE = [np.array([1], np.int8)]


@pytest.fixture(scope="module")
def kink_cert():
    params = {
        "alpha": [np.full((1, 1), np.nan, np.float32)],
        "beta": [np.full((1, 1), 1.5, np.float32)],
    }
    b = tljax.bound(
        kink, KBOX, method="crown", relu_splits=ACTIVE, split_params=params, certificate=True
    )
    return b


def test_split_claim_holds_on_the_domain_only(kink_cert):
    c = kink_cert.certificate
    r = check(c, kink)
    assert r.accepted, r.reason
    assert "on the split domain (1 ReLU split constraints)" in r.reason
    lo = float(c.lower[0][0])
    # the true minimum over D is 0 (x = 0); the claim is 0 up to the float-sound rounding
    assert -1e-5 < lo <= 0.0
    # over the whole box y reaches -1: the claim is about D, not the box
    assert float(kink(jnp.array([-1.0], jnp.float32))[0]) == -1.0 < lo
    # without the split constraint the same claims are not certified
    r = check(dataclasses.replace(c, relu_splits=None), kink)
    assert not r.accepted, r.reason
    # without the multiplier, split-CROWN derives -3 for y (the interval bound: -1)
    no_beta = _tamper(c, lambda d: d["passes"][1]["betas"].clear())
    r = check(no_beta, kink)
    assert not r.accepted and "output 0 index 0: claimed lower" in r.reason, r.reason
    plain = tljax.bound(kink, KBOX, method="crown", relu_splits=ACTIVE)
    assert float(plain.lower[0]) < -0.99


def test_split_multipliers_tampered(kink_cert):
    c = kink_cert.certificate
    (key,) = c.passes[1]["betas"]
    # rows: [lower bound of y; upper bound of y] (the upper row has no multiplier)
    np.testing.assert_array_equal(c.passes[1]["betas"][key], [[1.5], [0.0]])
    for value, what in [(-1.5, "negative"), (3.0, "claimed lower"), (1.0, "claimed lower")]:
        t = _tamper(c, lambda d, v=value: d["passes"][1]["betas"][key][0].fill(v))
        r = check(t, kink)
        assert not r.accepted and what in r.reason, (value, r.reason)


def test_flipped_split_rejected(kink_cert):
    c = kink_cert.certificate
    r = check(dataclasses.replace(c, relu_splits=[np.array([-1], np.int8)]), kink)
    assert not r.accepted, r.reason
    r = check(dataclasses.replace(c, relu_splits=[np.array([2], np.int8)]), kink)
    assert not r.accepted and "relu_splits[0]" in r.reason, r.reason


def test_empty_split_domain_is_proved_empty():
    # relu input 2x in [2, 4] split inactive (2x <= 0): no point of the box is in the domain
    box = tljax.Box(jnp.array([1.0], jnp.float32), jnp.array([2.0], jnp.float32))
    b = tljax.bound(kink, box, method="crown", relu_splits=[np.array([-1])], certificate=True)
    assert np.isposinf(np.asarray(b.lower)).all() and np.isneginf(np.asarray(b.upper)).all()
    r = check(b.certificate, kink)
    assert r.accepted and "empty domain" in r.reason, r.reason
    # the same claims with the split active are about a non-empty domain: rejected
    r = check(dataclasses.replace(b.certificate, relu_splits=[np.array([1], np.int8)]), kink)
    assert not r.accepted, r.reason


# ---------------------------------------------------------------------------------------------
# A random 2-hidden-layer MLP with splits on unstable neurons of both layers.


def mlp2(x, params):
    w1, b1, w2, b2, w3, b3 = params
    return jax.nn.relu(jax.nn.relu(x @ w1 + b1) @ w2 + b2) @ w3 + b3


N, H = 6, 16
SPEC = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], np.float32)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(N, H), (H,), (H, H), (H,), (H, 3), (3,)]
    scale = [1 / np.sqrt(N), 0.1, 1 / np.sqrt(H), 0.1, 1 / np.sqrt(H), 0.1]
    return tuple(
        jnp.asarray(rng.normal(size=s) * c, jnp.float32) for s, c in zip(sizes, scale, strict=True)
    )


PARAMS = _params()
LO, HI = -np.ones(N, np.float32), np.ones(N, np.float32)
BOX = tljax.Box(jnp.asarray(LO), jnp.asarray(HI))


def _pre(xs):
    w1, b1, w2, b2, _, _ = (np.asarray(a, np.float64) for a in PARAMS)
    z1 = xs @ w1 + b1
    return z1, np.maximum(z1, 0) @ w2 + b2


@pytest.fixture(scope="module")
def split_case():
    """Splits on 3 sampled-unstable neurons per layer, and the beta-CROWN certificate."""
    xs = np.random.default_rng(1).uniform(LO, HI, (20000, N))
    z1, z2 = _pre(xs)
    splits = []
    for z in (z1, z2):
        unstable = np.flatnonzero((z.min(0) < 0) & (z.max(0) > 0))
        s = np.zeros(H, np.int8)
        s[unstable[:3]] = [1, -1, 1]
        splits.append(s)
    assert [e.shape for e in splits] == [
        tuple(s) for s in relu_shapes(lambda x: mlp2(x, PARAMS), BOX)
    ]

    def f(x):
        return SPEC @ mlp2(x, PARAMS)

    b = tljax.bound(
        f, BOX, method="crown", relu_splits=splits, split_params={"iters": 20}, certificate=True
    )
    return f, splits, b


def test_beta_certificate_accepted_and_sound(split_case, tmp_path):
    f, splits, b = split_case
    c = b.certificate
    assert len(c.passes) == 2 and c.passes[1]["betas"]
    assert any(np.any(v > 0) for v in c.passes[1]["betas"].values())
    r = check(c, f)
    assert r.accepted, r.reason
    c.to_json(tmp_path / "split.json")
    r2 = check(Certificate.from_json(tmp_path / "split.json"), f)
    assert r2.accepted and r2.reason == r.reason, r2.reason
    # sound on D: below every sampled output of a point satisfying the splits
    xs = np.random.default_rng(2).uniform(LO, HI, (200000, N))
    z1, z2 = _pre(xs)
    ok = np.ones(len(xs), bool)
    for z, s in zip((z1, z2), splits, strict=True):
        ok &= np.all((s == 0) | (s * z >= 0), axis=1)
    assert ok.sum() > 100
    ys = np.asarray(jax.vmap(f)(jnp.asarray(xs[ok], jnp.float32)))
    assert np.all(c.lower[0] <= ys.min(0)) and np.all(c.upper[0] >= ys.max(0))
    # beta-CROWN beats split-CROWN without multipliers on some row
    plain = tljax.bound(f, BOX, method="crown", relu_splits=splits)
    assert np.all(c.lower[0] >= np.asarray(plain.lower) - 1e-4)


def test_beta_certificate_tampered(split_case):
    f, splits, b = split_case
    c = b.certificate
    x1 = str(next(int(k) for k in c.passes[1]["nodes"]))  # the first ReLU's input node

    def flip(d):
        d["relu_splits"] = [-s for s in d["relu_splits"]]

    def drop(d):
        d["relu_splits"] = None

    def raise_lower(d):
        d["lower"][0][0] += 0.05

    def big_beta(d):
        for v in d["passes"][1]["betas"].values():
            v *= 1000.0

    def negative_beta(d):
        v = next(iter(d["passes"][1]["betas"].values()))
        v.flat[np.flatnonzero(v.reshape(-1) > 0)[0]] = -0.5

    j = int(np.flatnonzero(splits[0] > 0)[0])  # an active-split neuron of layer 1

    def narrow_active(d):
        # the split implies only x >= 0 (the neuron is unstable over the box)
        lo, hi = d["passes"][1]["nodes"][x1]
        assert lo[j] == 0.0 and hi[j] > 0
        lo[j] = 0.5 * hi[j]

    for edit, what in [
        (flip, ""),
        (drop, ""),
        (raise_lower, "output 0 index 0: claimed lower"),
        (big_beta, "claimed lower"),
        (negative_beta, "negative"),
        (narrow_active, f"index {j}: claimed lower"),
    ]:
        r = check(_tamper(c, edit), f)
        assert not r.accepted and what in r.reason, (edit.__name__, r.reason)


def _split_certificate_of(method, split_case, **kw):
    f, splits, _ = split_case
    b = tljax.bound(f, BOX, method=method, relu_splits=splits, certificate=True, **kw)
    r = check(b.certificate, f)
    assert r.accepted and "split domain" in r.reason, (method, r.reason)
    assert not check(dataclasses.replace(b.certificate, relu_splits=None), f).accepted


def test_split_crown_certificate(split_case):
    _split_certificate_of("crown", split_case)


@pytest.mark.slow
def test_split_alpha_crown_certificate(split_case):
    # ~15 s: the eager alpha-CROWN re-run of the certificate compiles op by op
    _split_certificate_of("alpha-crown", split_case, alpha_iters=5)
