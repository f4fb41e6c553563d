"""Affine / batch-norm folding: what disappears, the new weights against an independent formula,
shared pre-activations, and CROWN verdicts before and after folding."""

import jax
import jax.numpy as jnp
import numpy as np

import tljax
import tljax.transforms as T
from tljax.core import iter_eqns

EPS = 1e-5


def names(graph):
    return [e.primitive.name for e in iter_eqns(graph.jaxpr)]


def const_of(graph, eqn, k):
    """The constant bound to operand `k` of `eqn` (a constvar of the top-level jaxpr)."""
    v = eqn.invars[k]
    i = graph.jaxpr.constvars.index(v)
    return np.asarray(graph.consts[i])


def test_fold_removes_batch_norm_and_scales_weights(cnn, cnn_parts):
    g, _ = cnn
    _, _, parts = cnn_parts
    folded = T.fold_affine(g)
    assert not {"rsqrt", "sqrt", "div", "sub", "mul"} & set(names(folded))
    assert names(folded).count("conv_general_dilated") == 2
    rec = T.provenance(folded).passes[-1]
    assert rec.stats["folded_scales"] == 3 and not rec.claim.exact
    # first conv: k1 * gamma / sqrt(var + eps) per output channel, computed here in float64
    _, var, gamma, _ = (np.asarray(a, np.float64) for a in parts["bn1"])
    scale = gamma / np.sqrt(var + EPS)
    conv = next(e for e in folded.jaxpr.eqns if e.primitive.name == "conv_general_dilated")
    np.testing.assert_allclose(
        const_of(folded, conv, 1), parts["k1"] * scale[:, None, None, None], rtol=1e-6
    )
    # eqx.nn.Linear (weight @ x, weight on the left) followed by eqx.nn.BatchNorm
    m3, v3, g3, b3 = (np.asarray(a, np.float64) for a in parts["bn3"])
    s3 = g3 / np.sqrt(v3 + EPS)
    dense = next(e for e in folded.jaxpr.eqns if e.primitive.name == "dot_general")
    np.testing.assert_allclose(const_of(folded, dense, 0), parts["w3"] * s3[:, None], rtol=1e-6)
    add = next(e for e in folded.jaxpr.eqns if dense.outvars[0] in e.invars)
    assert add.primitive.name == "add"
    bias = const_of(folded, add, 1 - add.invars.index(dense.outvars[0]))
    np.testing.assert_allclose(bias, (parts["b3"] - m3) * s3 + b3, rtol=1e-6, atol=1e-7)


def test_fold_keeps_a_shared_preactivation_correct():
    w = np.float32([[1.0, -2.0], [0.5, 0.25]])

    def f(x):
        y = x @ w
        return jax.nn.relu(y) + (y * 3.0 - 1.0), y * 0.5

    g = tljax.trace(f, np.ones(2, np.float32))
    folded = T.fold_affine(g)
    assert names(folded).count("dot_general") == 3  # raw y, y*3-1 and y*0.5 each folded once
    v = T.validate(g, folded, certify=False)
    assert v.ok, str(v)


def test_fold_is_exact_when_only_biases_move(acas):
    g, _ = acas
    folded = T.fold_affine(T.constant_fold(g))
    assert T.provenance(folded).passes[-1].claim.exact
    v = T.validate(g, folded, certify=False)
    assert v.ok and v.stages[0].max_deviation == 0.0, str(v)


def margin_spec(logits):
    c = int(np.argmax(logits))
    rows = [np.eye(len(logits))[c] - np.eye(len(logits))[j] for j in range(len(logits)) if j != c]
    return np.asarray(rows, np.float32)


def test_bn_folding_keeps_crown_verdicts(cnn):
    """CROWN margin lower bounds on several boxes: the same sign pattern before and after folding.

    CROWN runs on `T.for_bounds(g)` (constants folded, bitwise the same float program): the bound
    recorder does not take constant subexpressions such as `rsqrt(var + eps)` yet."""
    g, x = cnn
    folded = T.fold_affine(g)
    original = T.for_bounds(g)
    spec = margin_spec(np.asarray(g(x)))
    signs, lows = [], []
    for eps in (0.01, 0.2, 0.3):  # both margins certified, one, none
        box = tljax.Box(jnp.asarray(x) - eps, jnp.asarray(x) + eps)
        lo_o = np.asarray(tljax.bound(original, box, spec=spec).lower)
        lo_f = np.asarray(tljax.bound(folded, box, spec=spec).lower)
        signs.append((tuple(lo_o > 0), tuple(lo_f > 0)))
        lows.append((lo_o, lo_f))
    assert all(a == b for a, b in signs), signs
    assert [sum(s[0]) for s in signs] == [2, 1, 0]
    for lo_o, lo_f in lows:  # and the bounds themselves barely move
        np.testing.assert_allclose(lo_f, lo_o, atol=1e-3, rtol=1e-3)


def test_fold_leaves_loop_bodies_and_folds_after_them():
    w = np.float32([[1.0, -2.0], [0.5, 0.25]])

    def f(xs):
        def step(c, x):
            y = (x @ w) * 2.0 + 1.0  # inside the body: kept as written
            return c + y, y

        c, ys = jax.lax.scan(step, jnp.zeros(2, jnp.float32), xs)
        return (c @ w) * 3.0 - 1.0, ys  # after the loop: folded

    g = tljax.trace(f, np.ones((3, 2), np.float32))
    folded = T.fold_affine(g)
    body = next(e for e in folded.jaxpr.eqns if e.primitive.name == "scan")
    inner = tljax.core.compat.open_jaxpr(body.params["jaxpr"])[0]
    assert [e.primitive.name for e in inner.eqns].count("mul") == 1
    assert [e.primitive.name for e in folded.jaxpr.eqns] == ["scan", "dot_general", "add"]
    xs = np.float32([[0.5, -1.0], [2.0, 0.25], [1.0, 1.0]])
    want = np.float64(xs) @ w * 2 + 1  # independent: numpy in float64
    np.testing.assert_allclose(np.asarray(folded(xs)[1]), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(folded(xs)[0]), want.sum(0) @ w * 3 - 1, rtol=1e-6)
