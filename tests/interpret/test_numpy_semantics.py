"""The numpy semantics against XLA (bit for bit where both round correctly) and against float64
(sums within the any-order error bound, transcendentals within one ulp)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import tljax
from tljax.interpret import evaluate_numpy, numpy_covers

RNG = np.random.RandomState(0)


def _floats(shape, scale=1.0):
    x = (RNG.randn(*shape) * scale).astype(np.float32)
    flat = x.reshape(-1)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e-30, 3.5, -2.5, 0.5])
    flat[: min(flat.size, specials.size)] = specials[: flat.size]
    return x


A = _floats((4, 6), 3.0)
B = _floats((4, 6), 3.0)[::-1].copy()
I = RNG.randint(-50, 50, size=(4, 6)).astype(np.int32)
J = np.where(I == 0, 7, RNG.randint(-9, 9, size=(4, 6))).astype(np.int32)
J = np.where(J == 0, -3, J).astype(np.int32)

EXACT = {
    "add": (lambda a, b: a + b, (A, B)),
    "sub": (lambda a, b: a - b, (A, B)),
    "mul": (lambda a, b: a * b, (A, B)),
    "div": (lambda a, b: a / b, (A, B)),
    "max_min": (lambda a, b: (jnp.maximum(a, b), jnp.minimum(a, b)), (A, B)),
    "abs_neg_sign": (lambda a: (jnp.abs(a), -a, jnp.sign(a)), (A,)),
    "sqrt": (lambda a: jnp.sqrt(jnp.abs(a)), (A,)),
    "floor_ceil": (lambda a: (jnp.floor(a), jnp.ceil(a)), (A,)),
    "round": (
        lambda a: (
            lax.round(a, lax.RoundingMethod.AWAY_FROM_ZERO),
            lax.round(a, lax.RoundingMethod.TO_NEAREST_EVEN),
        ),
        (A,),
    ),
    "nextafter": (lambda a, b: jnp.nextafter(a, b), (A, B)),
    "isfinite": (lambda a: jnp.isfinite(a), (A,)),
    "integer_pow": (lambda a: (a**2, a**3, a**5, lax.integer_pow(a, -2)), (A,)),
    "compare": (lambda a, b: (a < b, a <= b, a == b, a != b, a > b, a >= b), (A, B)),
    "select": (lambda a, b: jnp.where(a > b, a, b), (A, B)),
    "select_n_int": (
        lambda a, b, i: lax.select_n(jnp.abs(i) % 3, a, b, a * b),
        (A, B, I),
    ),
    "clamp": (lambda a: lax.clamp(np.float32(-1.5), a, np.float32(2.0)), (A,)),
    "convert": (
        lambda a, i: (jnp.clip(a, -1e6, 1e6).astype(jnp.int32), i.astype(jnp.float32)),
        (A, I),
    ),
    "bitcast": (lambda a: lax.bitcast_convert_type(a, jnp.int32), (A,)),
    "int_div_rem": (lambda i, j: (lax.div(i, j), lax.rem(i, j)), (I, J)),
    "float_rem": (lambda a, b: lax.rem(a, b), (A, B)),
    "bits": (
        lambda i, j: (
            i & j,
            i | j,
            i ^ j,
            ~i,
            lax.shift_left(i, jnp.abs(j) % 8),
            lax.shift_right_arithmetic(i, jnp.abs(j) % 8),
            lax.shift_right_logical(i, jnp.abs(j) % 8),
        ),
        (I, J),
    ),
    "structural": (
        lambda a: (
            a.T,
            a.reshape(3, 8),
            a[None, :, None, :],
            jnp.broadcast_to(a[:, None, :], (4, 5, 6)),
            a[::-1, 1::2],
            jnp.flip(a, 1),
            jnp.concatenate([a, a * 2], axis=0),
            jnp.squeeze(a[:, :1], 1),
        ),
        (A,),
    ),
    "pad": (
        lambda a: (
            lax.pad(a, np.float32(-7), [(1, 2, 1), (-1, 3, 0)]),
            lax.pad(a, np.float32(0), [(0, -2, 2), (2, -3, 1)]),
        ),
        (A,),
    ),
    "slices": (
        lambda a, i: (
            lax.slice(a, (0, 1), (4, 6), (3, 2)),
            lax.dynamic_slice(a, (i[0, 0], np.int32(9)), (2, 3)),
            lax.dynamic_update_slice(a, a[:2, :2] * 3, (np.int32(-4), i[1, 1])),
        ),
        (A, I),
    ),
    "iota": (lambda a: a + lax.broadcasted_iota(jnp.float32, (4, 6), 1), (A,)),
    "reductions": (
        lambda a, i: (
            jnp.max(a, axis=1),
            jnp.min(a, axis=0),
            jnp.all(a > 0, axis=1),
            jnp.any(a > 0, axis=0),
            jnp.argmax(jnp.nan_to_num(a), axis=1),
            jnp.argmin(i, axis=0),
            lax.cummax(a, axis=1),
            lax.cummin(a, axis=0, reverse=True),
            jnp.prod(i[:, :3] % 5, axis=1),
        ),
        (A, I),
    ),
    "split": (lambda a: jnp.split(a, [2, 5], axis=1), (A,)),
    # lax.unstack binds `unstack` where this JAX has it (a pure rearrangement: bit for bit)
    "unstack": (lambda a: tuple(getattr(lax, "unstack", lambda x, axis: list(x))(a, axis=1)), (A,)),
    "scalars": (
        lambda a, i: (
            lax.bitcast_convert_type(a[1, 2], jnp.int32),
            a[0, 3] * a[2, 2] - a[3, 3],
            jnp.sum(a[2, 3:]) > 0,
            lax.convert_element_type(i[1, 1], jnp.float32),
            jnp.where(a[1, 1] > 0, a[0, 0], a[1, 1]),
        ),
        (A, I),
    ),
    "control_flow": (
        lambda a: (
            lax.scan(lambda c, x: (c * 0.5 - x, c + x), a[0], a[1:])[1],
            lax.fori_loop(0, 3, lambda k, c: (c - 1.0) * 1.5, a),
            lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, c[1] * 2.0), (0, a))[1],
            lax.cond(True, lambda x: x + 1, lambda x: x - 1, a),
        ),
        (A,),
    ),
}


def _same(x, y):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    if x.dtype.kind == "f":
        # bit patterns, NaN in the same places; a zero's sign may differ (IEEE leaves max(-0, +0)
        # open, XLA's round(-0.0) is +0): comparisons and every bound treat them alike
        nan, zero = np.isnan(x), x == 0
        np.testing.assert_array_equal(nan, np.isnan(y))
        np.testing.assert_array_equal(zero, y == 0)
        keep = ~nan & ~zero
        np.testing.assert_array_equal(x[keep].view(np.int32), y[keep].view(np.int32))
    else:
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_correctly_rounded_and_structural_primitives_match_xla_bit_for_bit(name):
    f, args = EXACT[name]
    got = tljax.evaluate(f, *args, semantics="numpy")
    want = jax.jit(f)(*args)
    jax.tree_util.tree_map(_same, got, want)  # shapes and dtypes included (0-d stays 0-d)


def _gamma(n: int, u: float = 2.0**-24) -> float:
    return n * u / (1 - n * u)


@pytest.mark.parametrize(
    "spec, shapes, n",
    [
        ("ij,jk->ik", ((7, 300), (300, 5)), 300),
        ("bij,bjk->bik", ((3, 4, 50), (3, 50, 6)), 50),
        ("ijk,jkl->il", ((4, 9, 11), (9, 11, 3)), 99),
        ("i,i->", ((1000,), (1000,)), 1000),
    ],
)
def test_dots_are_within_the_any_order_error_bound(spec, shapes, n):
    a = (RNG.randn(*shapes[0]) * 10).astype(np.float32)
    b = (RNG.randn(*shapes[1]) * 10).astype(np.float32)

    def f(x, y):
        return jnp.einsum(spec, x, y)

    got = np.asarray(tljax.evaluate(f, a, b, semantics="numpy"))
    assert got.dtype == np.float32
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact = np.einsum(spec, a64, b64)
    mag = np.einsum(spec, np.abs(a64), np.abs(b64))
    assert np.all(np.abs(got - exact) <= _gamma(n) * mag)
    # and near what XLA computes (the same bound, in another order)
    assert np.all(np.abs(got - np.asarray(jax.jit(f)(a, b))) <= 2 * _gamma(n) * mag)


CONVS = {
    "valid": ((2, 3, 7, 6), (4, 3, 3, 2), dict(window_strides=(1, 1), padding="VALID")),
    "strided-same": ((1, 2, 9, 8), (3, 2, 3, 3), dict(window_strides=(2, 3), padding="SAME")),
    "negative-padding": (
        (1, 2, 8, 8),
        (2, 2, 2, 3),
        dict(window_strides=(1, 2), padding=((-1, 2), (1, -2))),
    ),
    "dilated": (
        (2, 2, 6, 7),
        (3, 2, 2, 2),
        dict(
            window_strides=(1, 1),
            padding=((1, 1), (0, 2)),
            lhs_dilation=(2, 1),
            rhs_dilation=(2, 3),
        ),
    ),
    "groups": (
        (2, 4, 6, 6),
        (6, 2, 3, 3),
        dict(window_strides=(1, 1), padding="SAME", feature_group_count=2),
    ),
    "batch-groups": (
        (4, 3, 5, 5),
        (6, 3, 2, 2),
        dict(window_strides=(1, 1), padding="VALID", batch_group_count=2),
    ),
    "nhwc": (
        (2, 6, 5, 3),
        (3, 2, 3, 4),
        dict(window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
    ),
    "1d": ((3, 2, 11), (4, 2, 3), dict(window_strides=(2,), padding=((2, 1),))),
    "3d": ((1, 2, 4, 5, 3), (2, 2, 2, 3, 2), dict(window_strides=(1, 2, 1), padding="SAME")),
    "kernel-larger-than-input": (
        (1, 1, 2, 2),
        (1, 1, 3, 3),
        dict(window_strides=(1, 1), padding="VALID"),
    ),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convolutions_are_within_the_any_order_error_bound(name):
    """Every geometry of `conv_general_dilated` (strides, padding, dilations, groups, layouts,
    1-3 spatial dims), and the convolutions of its gradients (transposed kernels, dilated
    inputs, batch groups), against XLA."""
    ls, rs, kw = CONVS[name]
    x = (RNG.randn(*ls) * 10).astype(np.float32)
    w = (RNG.randn(*rs) * 10).astype(np.float32)

    def conv(a, b):
        return lax.conv_general_dilated(a, b, **kw)

    def loss(a, b, t):
        return jnp.sum(conv(a, b) * t)

    t = (RNG.randn(*jax.eval_shape(conv, x, w).shape)).astype(np.float32)
    for f, args in ((conv, (x, w)), (jax.grad(loss, argnums=(0, 1)), (x, w, t))):
        got = tljax.evaluate(f, *args, semantics="numpy")
        want = jax.jit(f)(*args)
        # the same program on magnitudes bounds every partial sum (any accumulation order)
        mag = jax.jit(f)(*(np.abs(a) for a in args))
        for g1, w1, m1 in zip(
            *(jax.tree_util.tree_leaves(v) for v in (got, want, mag)), strict=True
        ):
            g1, w1, m1 = np.asarray(g1), np.asarray(w1), np.asarray(m1, np.float64)
            assert g1.shape == w1.shape and g1.dtype == w1.dtype == np.float32, name
            n = int(np.prod(rs)) * max(ls[0], 1)  # terms per output, generously
            assert np.all(np.abs(g1 - w1) <= 2 * _gamma(n) * m1 * (1 + 1e-6)), name


@pytest.mark.parametrize(
    "window, strides, padding, base_dilation, window_dilation",
    [
        ((1, 2, 2), (1, 2, 2), "VALID", None, None),  # average pooling's sum
        ((1, 3, 3), (1, 1, 1), "SAME", None, None),
        ((1, 3, 2), (1, 2, 1), ((0, 0), (2, -1), (1, 1)), (1, 2, 1), (1, 1, 2)),
        ((2, 4, 4), (1, 3, 3), ((0, 1), (0, 0), (0, 0)), None, None),
    ],
)
def test_window_sums_are_within_the_any_order_error_bound(
    window, strides, padding, base_dilation, window_dilation
):
    x = (RNG.randn(3, 9, 8) * 10).astype(np.float32)

    def f(a):
        return lax.reduce_window(
            a, np.float32(0), lax.add, window, strides, padding, base_dilation, window_dilation
        )

    got = np.asarray(tljax.evaluate(f, x, semantics="numpy"))
    want = np.asarray(jax.jit(f)(x))
    assert got.shape == want.shape and got.dtype == np.float32
    mag = np.asarray(jax.jit(f)(np.abs(x)), np.float64)
    assert np.all(np.abs(got - want) <= 2 * _gamma(int(np.prod(window))) * mag * (1 + 1e-6))


def test_sums_are_within_the_any_order_error_bound():
    a = (RNG.randn(5, 4000) * np.exp(RNG.randn(5, 4000) * 3)).astype(np.float32)
    got = np.asarray(
        tljax.evaluate(lambda x: (jnp.sum(x, 1), jnp.cumsum(x, 1)), a, semantics="numpy")[0]
    )
    a64 = a.astype(np.float64)
    assert np.all(np.abs(got - a64.sum(1)) <= _gamma(4000) * np.abs(a64).sum(1))


WIDE = {
    "exp": (jnp.exp, np.exp, (-100, 88)),
    "exp2": (jnp.exp2, np.exp2, (-120, 120)),
    "expm1": (jnp.expm1, np.expm1, (-100, 88)),
    "log": (jnp.log, np.log, (1e-30, 1e30)),
    "log1p": (jnp.log1p, np.log1p, (-0.999, 1e30)),
    "tanh": (jnp.tanh, np.tanh, (-100, 100)),
    "logistic": (jax.nn.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (-100, 100)),
    "sin": (jnp.sin, np.sin, (-100, 100)),
    "cos": (jnp.cos, np.cos, (-100, 100)),
    "atan": (jnp.arctan, np.arctan, (-100, 100)),
    "asinh": (jnp.arcsinh, np.arcsinh, (-100, 100)),
    "sinh": (jnp.sinh, np.sinh, (-80, 80)),
    "cosh": (jnp.cosh, np.cosh, (-80, 80)),
    "rsqrt": (lax.rsqrt, lambda x: 1 / np.sqrt(x), (1e-30, 1e30)),
    # the exponent is a float32 constant of the program
    "pow": (lambda x: x**1.7, lambda x: x ** float(np.float32(1.7)), (1e-10, 1e10)),
    "erf": (lax.erf, None, (-6, 6)),
}


@pytest.mark.parametrize("name", sorted(WIDE))
def test_transcendentals_are_within_one_ulp_of_float64(name):
    f, ref, (lo, hi) = WIDE[name]
    if lo > 0:
        x = np.exp(RNG.uniform(np.log(lo), np.log(hi), 20000)).astype(np.float32)
    else:
        x = np.concatenate([RNG.uniform(lo, hi, 10000), RNG.uniform(-3, 3, 10000)])
        x = np.clip(x, lo, hi).astype(np.float32)
    got = np.asarray(tljax.evaluate(f, x, semantics="numpy"))
    assert got.dtype == np.float32
    if ref is None:
        import scipy.special

        ref = scipy.special.erf
    truth = ref(x.astype(np.float64))
    fin = np.isfinite(truth) & (np.abs(truth) < np.finfo(np.float32).max)
    ulp = np.spacing(np.abs(truth[fin]).astype(np.float32)).astype(np.float64)
    tiny = np.finfo(np.float32).tiny
    assert np.all(np.abs(got[fin] - truth[fin]) <= np.maximum(ulp, tiny)), name


def test_numpy_covers_names_what_it_cannot_run():
    closed = jax.make_jaxpr(jnp.fft.fft)(np.ones(8, np.complex64))
    assert numpy_covers(closed.jaxpr) == ["fft"]
    c = RNG.randn(4, 6).astype(np.float32)
    closed = jax.make_jaxpr(lambda x: jax.jit(jnp.tanh)(x) @ x.T)(c)
    assert numpy_covers(closed.jaxpr) == []
    np.testing.assert_allclose(
        evaluate_numpy(closed, [c])[0], np.tanh(c.astype(np.float64)) @ c.T, rtol=1e-4
    )


def test_a_rule_failure_names_the_primitive_and_the_line():
    closed = jax.make_jaxpr(lambda x: x.reshape(3, 2))(np.ones((2, 3), np.float32))
    with pytest.raises(tljax.TljaxError, match=r"'numpy' failed on primitive 'reshape'.*\n.*at "):
        evaluate_numpy(closed, [np.ones((1, 3), np.float32)])
