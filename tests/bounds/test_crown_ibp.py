"""`tljax.bound(..., method="crown-ibp")`: IBP intermediate bounds, one CROWN backward pass.

Checked against an independent float64 numpy implementation of CROWN-IBP (Zhang et al. 2020)
for a two-hidden-layer ReLU network, against sampled float32 outputs and box corners, and
against IBP (never looser) and full CROWN (never tighter on these nets).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax

D, H, K = 4, 12, 3


def _params(seed):
    r = np.random.default_rng(seed)
    return (
        r.normal(size=(D, H)).astype(np.float32),
        (0.1 * r.normal(size=H)).astype(np.float32),
        (r.normal(size=(H, H)) / 3).astype(np.float32),
        (0.1 * r.normal(size=H)).astype(np.float32),
        (r.normal(size=(H, K)) / 3).astype(np.float32),
        (0.1 * r.normal(size=K)).astype(np.float32),
    )


def relu_net(x, p):
    w1, b1, w2, b2, w3, b3 = p
    h = jax.nn.relu(x @ w1 + b1)
    h = jax.nn.relu(h @ w2 + b2)
    return h @ w3 + b3


def tanh_net(x, p):
    w1, b1, w2, b2, w3, b3 = p
    h = jnp.tanh(x @ w1 + b1)
    h = jax.nn.relu(h @ w2 + b2)
    return h @ w3 + b3


def _ibp_affine(lo, hi, w, b):
    c, r = (lo + hi) / 2, (hi - lo) / 2
    return c @ w + b - r @ np.abs(w), c @ w + b + r @ np.abs(w)


def _relax(l, u):
    # CROWN's ReLU lines: upper chord; lower slope 1 if u > -l else 0 (stable neurons exact)
    unstable = (l < 0) & (u > 0)
    a_u = np.where(unstable, u / np.where(unstable, u - l, 1.0), (l >= 0).astype(float))
    b_u = np.where(unstable, -a_u * l, 0.0)
    a_l = np.where(unstable, (u > -l).astype(float), (l >= 0).astype(float))
    return a_l, a_u, b_u


def reference_crown_ibp(p, lo, hi, spec):
    """float64 CROWN-IBP lower/upper bounds of `spec @ relu_net(x)` over [lo, hi]."""
    w1, b1, w2, b2, w3, b3 = (np.asarray(a, np.float64) for a in p)
    l1, u1 = _ibp_affine(lo, hi, w1, b1)
    l2, u2 = _ibp_affine(np.maximum(l1, 0), np.maximum(u1, 0), w2, b2)
    ly, uy = _ibp_affine(np.maximum(l2, 0), np.maximum(u2, 0), w3, b3)

    def lower(c):  # rows of c: lower bounds of c @ y
        lam, bias = c @ w3.T, c @ b3
        for (l, u), w, b in (((l2, u2), w2, b2), ((l1, u1), w1, b1)):
            a_l, a_u, b_u = _relax(l, u)
            g = np.maximum(lam, 0) * a_l + np.minimum(lam, 0) * a_u
            bias = bias + np.minimum(lam, 0) @ b_u
            lam, bias = g @ w.T, bias + g @ b
        return bias + np.maximum(lam, 0) @ lo + np.minimum(lam, 0) @ hi

    cp, cn = np.maximum(spec, 0), np.minimum(spec, 0)
    ibp_lo, ibp_hi = cp @ ly + cn @ uy, cp @ uy + cn @ ly
    return np.maximum(lower(spec), ibp_lo), np.minimum(-lower(-spec), ibp_hi)


def _box(seed, eps):
    x = np.random.default_rng(100 + seed).uniform(-1, 1, D).astype(np.float32)
    return tljax.Box(x - eps, x + eps)


def _points(box, n=2000):
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    corners = np.array(list(itertools.product(*zip(lo, hi, strict=True))), np.float32)
    return np.concatenate([np.asarray(box.sample(jax.random.key(0), n)), corners])


SPEC = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]], np.float32)


@pytest.mark.parametrize("spec", [None, SPEC], ids=["plain", "spec"])
def test_matches_independent_reference(spec):
    for seed, eps in ((0, 0.05), (1, 0.3)):
        p, box = _params(seed), _box(seed, eps)
        b = tljax.bound(relu_net, box, p, method="crown-ibp", float_sound=False, spec=spec)
        c = np.eye(K) if spec is None else spec.astype(np.float64)
        rlo, rhi = reference_crown_ibp(
            p, np.asarray(box.lower, np.float64), np.asarray(box.upper, np.float64), c
        )
        np.testing.assert_allclose(b.lower, rlo, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.upper, rhi, rtol=1e-4, atol=1e-4)
        # the reference is not CROWN: full CROWN is strictly tighter somewhere at this width
        if eps == 0.3:
            cr = tljax.bound(relu_net, box, p, method="crown", float_sound=False, spec=spec)
            assert np.any(np.asarray(cr.lower) > rlo + 1e-3)


@pytest.mark.parametrize("net", [relu_net, tanh_net], ids=["relu", "tanh"])
def test_sound_and_between_ibp_and_crown(net):
    for seed, eps in ((3, 0.4),):
        p, box = _params(seed), _box(seed, eps)
        pts = _points(box)
        ys = np.asarray(jax.jit(jax.vmap(net, in_axes=(0, None)))(pts, p))
        got = {m: tljax.bound(net, box, p, method=m) for m in ("ibp", "crown-ibp", "crown")}
        cibp = got["crown-ibp"]
        assert cibp.method == "crown-ibp" and cibp.float_sound
        assert np.all(ys >= np.asarray(cibp.lower)) and np.all(ys <= np.asarray(cibp.upper))
        # intersected with IBP: never looser, exactly
        assert np.all(np.asarray(cibp.lower) >= np.asarray(got["ibp"].lower))
        assert np.all(np.asarray(cibp.upper) <= np.asarray(got["ibp"].upper))
        # CROWN's intermediate bounds are tighter: on these nets it is never looser
        assert np.all(np.asarray(got["crown"].lower) >= np.asarray(cibp.lower) - 1e-5)
        assert np.all(np.asarray(got["crown"].upper) <= np.asarray(cibp.upper) + 1e-5)
        # spec bounds contain the specified outputs, and never looser than IBP's
        s = tljax.bound(net, box, p, method="crown-ibp", spec=SPEC)
        si = tljax.bound(net, box, p, method="ibp", spec=SPEC)
        m = ys @ SPEC.T
        assert np.all(m >= np.asarray(s.lower)) and np.all(m <= np.asarray(s.upper))
        assert np.all(np.asarray(s.lower) >= np.asarray(si.lower))
        assert np.all(np.asarray(s.upper) <= np.asarray(si.upper))


def test_certificate_is_checked_exactly():
    p, box = _params(4), _box(4, 0.1)
    b = tljax.bound(relu_net, box, p, method="crown-ibp", spec=SPEC[:1], certificate=True)
    assert b.certificate.method == "crown-ibp"
    res = tljax.bounds.check(b.certificate, relu_net, p)
    assert res.accepted, res.reason
    np.testing.assert_array_less(np.asarray(b.certificate.lower[0]) - 1e-6, b.upper)


def test_differentiable_in_the_parameters():
    # the gradient of the summed lower bounds matches the float64 reference's finite difference
    p, box = _params(5), _box(5, 0.1)
    lo64, hi64 = (np.asarray(v, np.float64) for v in (box.lower, box.upper))

    def f(q):
        return jnp.sum(tljax.bound(relu_net, box, q, method="crown-ibp", float_sound=False).lower)

    g = jax.grad(f)(p)
    d = [np.random.default_rng(6 + k).normal(size=a.shape) for k, a in enumerate(p)]
    h = 1e-4

    def ref(t):
        q = [np.asarray(a, np.float64) + t * v for a, v in zip(p, d, strict=True)]
        return reference_crown_ibp(q, lo64, hi64, np.eye(K))[0].sum()

    fd = (ref(h) - ref(-h)) / (2 * h)
    an = sum(float(np.vdot(np.asarray(a, np.float64), v)) for a, v in zip(g, d, strict=True))
    assert an == pytest.approx(fd, rel=1e-3, abs=1e-3)
