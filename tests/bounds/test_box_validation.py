"""Invalid input boxes never give finite bounds: eager errors, NaN bounds under jit / vmap, an
opt-in checkify error; and the error message for a primitive the bounds have no rule for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import tljax
from tljax.core._errors import InvalidBoxError, UnsupportedPrimitiveError

METHODS = ["ibp", "crown", "crown-ibp", "affine", "alpha-crown"]
KW = {"alpha-crown": {"alpha_iters": 1}}

_W1 = np.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]], np.float32)
_W2 = np.array([[1.0, -1.0], [2.0, 0.5], [-1.0, 1.0]], np.float32)


def net(x):
    return jax.nn.relu(x @ _W1 + 0.1) @ _W2


GOOD = (np.array([-0.2, 0.1], np.float32), np.array([0.3, 0.4], np.float32))
# entry 1 inverted (lower > upper), entry 0 fine
INVERTED = (np.array([-0.2, 0.5], np.float32), np.array([0.3, 0.4], np.float32))
WITH_NAN = (np.array([-0.2, np.nan], np.float32), np.array([0.3, 0.4], np.float32))


def _bound(lo, hi, method, **kw):
    return tljax.bound(net, tljax.Box(lo, hi), method=method, **KW.get(method, {}), **kw)


def _all_nan(b):
    return bool(np.all(np.isnan(b.lower)) and np.all(np.isnan(b.upper)))


def _finite(b):
    return bool(np.all(np.isfinite(b.lower)) and np.all(np.isfinite(b.upper)))


def test_eager_invalid_boxes_raise_listing_entries():
    with pytest.raises(InvalidBoxError, match=r"index \(1,\): lower 0\.5 > upper 0\.4"):
        tljax.Box(*INVERTED)
    with pytest.raises(InvalidBoxError, match=r"index \(1,\): NaN"):
        tljax.Box(*WITH_NAN)
    # a box rebuilt as a pytree skips Box's check: bound checks it
    flipped = jax.tree.map(lambda v: -v, tljax.Box(*GOOD))
    with pytest.raises(InvalidBoxError, match=r"tljax\.bound: the input box is invalid"):
        tljax.bound(net, flipped)


@pytest.mark.parametrize("method", METHODS)
def test_traced_invalid_boxes_give_nan_bounds_under_jit(method):
    f = jax.jit(lambda lo, hi: _bound(lo, hi, method))
    assert _finite(f(*GOOD))
    for bad in (INVERTED, WITH_NAN):
        assert _all_nan(f(*bad)), (method, bad)


# The check is the same code for every method (`_api._compute`); the slowest to compile run with
# `-m slow`.
@pytest.mark.parametrize(
    "method",
    METHODS[:3] + [pytest.param(m, marks=pytest.mark.slow) for m in METHODS[3:]],
)
def test_traced_invalid_boxes_give_nan_bounds_under_vmap(method):
    good = jax.jit(lambda lo, hi: _bound(lo, hi, method))(*GOOD)
    # only the invalid batch elements are NaN
    lo = np.stack([GOOD[0], INVERTED[0], WITH_NAN[0]])
    hi = np.stack([GOOD[1], INVERTED[1], WITH_NAN[1]])

    def g(lo, hi):
        return _bound(lo, hi, method)

    for b in (jax.vmap(g)(lo, hi), jax.jit(jax.vmap(g))(lo, hi)):
        assert b.lower.shape == (3, 2)
        np.testing.assert_allclose(b.lower[0], good.lower, rtol=1e-6)
        np.testing.assert_allclose(b.upper[0], good.upper, rtol=1e-6)
        assert np.all(np.isnan(b.lower[1:])) and np.all(np.isnan(b.upper[1:]))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_traced_invalid_box_with_spec_and_without_jit(method):
    spec = np.array([[1.0, -1.0]], np.float32)
    f = jax.jit(lambda lo, hi: _bound(lo, hi, method, spec=spec))
    assert _all_nan(f(*INVERTED))
    assert _finite(f(*GOOD))
    h = jax.jit(lambda lo, hi: _bound(lo, hi, method, jit=False))
    assert _all_nan(h(*WITH_NAN))
    assert _finite(h(*GOOD))


def test_check_box_raises_under_checkify_with_the_offending_entry():
    f = checkify.checkify(jax.jit(lambda lo, hi: _bound(lo, hi, "crown", check_box=True)))
    err, b = f(*INVERTED)
    assert _all_nan(b)
    with pytest.raises(
        Exception,
        match=r"invalid input box .*leaf 0: 1 bad entries, first at flat "
        r"index 1 \(lower=0\.5, upper=0\.4",
    ):
        err.throw()
    err, b = f(*GOOD)
    err.throw()  # nothing to report
    assert _finite(b)
    # per batch element under vmap
    lo = np.stack([GOOD[0], WITH_NAN[0]])
    hi = np.stack([GOOD[1], WITH_NAN[1]])
    g = jax.vmap(lambda lo, hi: _bound(lo, hi, "ibp", check_box=True))
    err, b = checkify.checkify(g)(lo, hi)
    with pytest.raises(Exception, match=r"leaf 0: 1 bad entries, first at flat index 1 \(lower=na"):
        err.throw()
    assert _finite(jax.tree.map(lambda v: v[0], b)) and np.all(np.isnan(b.lower[1]))


def test_missing_bound_rule_names_tljax_bounds_register():
    def fn(x):
        return jax.lax.erf_inv(x)  # the source line the message must name

    line = fn.__code__.co_firstlineno + 1
    with pytest.raises(UnsupportedPrimitiveError) as info:
        tljax.bound(fn, tljax.Box(jnp.zeros(2), jnp.full(2, 0.5)))
    msg = str(info.value)
    assert "no rule for primitive 'erf_inv'" in msg
    assert f"test_box_validation.py:{line}" in msg
    assert "tljax.bounds.register(jax.extend.core.primitives.erf_inv_p" in msg
    assert "register_rule" not in msg
    # other semantics keep naming tljax.register_rule
    with pytest.raises(UnsupportedPrimitiveError, match=r"tljax\.register_rule\('exact'"):
        tljax.interpret.evaluate(
            lambda x: jax.lax.igamma(x, x), np.full(2, 0.5, np.float32), semantics="exact"
        )
