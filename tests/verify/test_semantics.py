"""Counterexamples of the program as it runs (float32) versus the real-valued network, and
violations exactly at a vertex of the input box."""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from tljax.io import Property
from tljax.verify import verify

# b absorbs the input in float32: x + 2^24 rounds to 2^24 for |x| <= 1 (the float32 spacing
# there is 2), so the float32 program returns 0 where the exact network returns x.
BIG = 2.0**24


def _affine2(x, params):
    w1, b1, w2, b2 = params
    return (x @ w1 + b1) @ w2 + b2


def _absorbing():
    return (
        jnp.ones((1, 1), jnp.float32),
        jnp.full((1,), BIG, jnp.float32),
        jnp.ones((1, 1), jnp.float32),
        jnp.full((1,), -BIG, jnp.float32),
    )


def _prop(lo, hi, c, d):
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return Property(
        input_boxes=((lo, hi),),
        unsafe=((np.asarray(c, np.float64), np.asarray(d, np.float64)),),
        pairing=((0,),),
        n_inputs=lo.size,
        n_outputs=np.asarray(c).shape[1],
        path="<test>",
    )


# unsafe: y <= 0.25 on x in [0.5, 1]
FLOAT_ONLY = _prop([0.5], [1.0], [[1.0]], [0.25])


def test_the_network_disagrees_in_float32_and_exactly():
    # independent of tljax: numpy float32 and rational arithmetic on the same formula
    for x in (0.5, 0.75, 1.0):
        f32 = (np.float32(x) * np.float32(1) + np.float32(BIG)) * np.float32(1) - np.float32(BIG)
        exact = (Fraction(x) + Fraction(BIG)) - Fraction(BIG)
        assert f32 == np.float32(0.0) and f32 <= 0.25  # float32 violates
        assert exact == Fraction(x) and exact > Fraction(1, 4)  # exact does not
    # XLA computes the float32 value numpy does
    y = jax.jit(_affine2)(jnp.asarray([0.75], jnp.float32), _absorbing())
    assert float(y[0]) == 0.0


def test_float32_violation_is_sat_and_says_so():
    res = verify(_affine2, FLOAT_ONLY, _absorbing(), timeout=30)
    assert res.verdict == "sat", (res, res.notes)
    cex = res.counterexample
    assert cex.float_only and cex.exact_violates is False
    x = float(cex.x.reshape(-1)[0])
    assert 0.5 <= x <= 1.0 and float(cex.y[0]) == 0.0 and cex.y_exact[0] == Fraction(x)
    assert "float32 execution and not in exact arithmetic" in cex.describe()
    assert any("float32 execution and not in exact arithmetic" in n for n in res.notes)
    assert "float32 program only" in str(res)
    report = res.check()
    assert report.accepted and "not in exact arithmetic" in report.checked[0]
    # the same counterexample does not re-check under the real-valued reading
    import dataclasses

    assert not dataclasses.replace(res, semantics="real").check().accepted


def test_real_semantics_keeps_the_old_answer():
    res = verify(_affine2, FLOAT_ONLY, _absorbing(), timeout=4, semantics="real")
    assert res.verdict in ("unknown", "timeout"), res
    assert res.stats["rejected_candidates"] >= 1


def test_violation_both_ways_is_not_float_only():
    # unsafe y <= 0.6 on [0.5, 1]: float32 (y = 0) violates it everywhere, the exact network
    # (y = x) on [0.5, 0.6]; the real-valued reading needs a point of that part
    prop = _prop([0.5], [1.0], [[1.0]], [0.6])
    res = verify(_affine2, prop, _absorbing(), timeout=30, semantics="real")
    assert res.verdict == "sat" and res.counterexample.exact_violates is True
    assert not res.counterexample.float_only
    assert float(res.counterexample.x.reshape(-1)[0]) <= 0.6


N = 8


def _corner_net(x, w):
    # y = relu(sum(x) - (N - 0.5)): flat (zero gradient) except in a sliver at the all-ones
    # vertex, where y reaches 0.5 exactly
    return jax.nn.relu(x @ w - (N - 0.5))


def test_violation_exactly_at_a_vertex_is_found():
    w = jnp.ones((N, 1), jnp.float32)
    # unsafe y >= 0.5 on [0, 1]^N: only x = (1, ..., 1) reaches it, in float32 and exactly
    prop = _prop(np.zeros(N), np.ones(N), [[-1.0]], [-0.5])
    xs = np.random.default_rng(0).uniform(0, 1, (20000, N)).astype(np.float32)
    assert np.all(np.asarray(jax.vmap(lambda x: _corner_net(x, w))(xs)) < 0.5)  # sampling misses
    for semantics in ("float32", "real"):
        res = verify(_corner_net, prop, w, timeout=60, semantics=semantics)
        assert res.verdict == "sat", (semantics, res, res.notes)
        np.testing.assert_array_equal(res.counterexample.x.reshape(-1), np.ones(N, np.float32))
        assert res.counterexample.exact_violates is True
        assert res.stats.get("domains", 0) == 0  # found among the vertices, before any bound
        assert res.check().accepted
