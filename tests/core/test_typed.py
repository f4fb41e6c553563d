"""Tests of tljax.core._typed.typed: jaxtyping annotations checked at call/trace time."""
# ruff: noqa: F722, F821  (jaxtyping dimension strings are not Python expressions)

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float, Int, Shaped, jaxtyped

from tljax.core._errors import ShapeMismatchError
from tljax.core._typed import typed


@typed
def affine(
    x: Float[Array, "batch n"], w: Float[Array, "n m"], b: Float[Array, "#m"] | None = None
) -> Float[Array, "batch m"]:
    y = x @ w
    return y if b is None else y + b


def test_matching_call_returns_the_result():
    out = affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(4))
    np.testing.assert_array_equal(out, np.full((2, 4), 4.0))
    assert affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(1)).shape == (2, 4)  # "#m": 1 ok


def test_shape_mismatch_names_argument_expected_and_actual():
    msg = (
        "affine(): argument 'w' has shape (5, 4) but Float[Array, 'n m'] expects shape (n=3, m); "
        "n was bound by argument 'x'."
    )
    with pytest.raises(ShapeMismatchError, match=re.escape(msg)):
        affine(jnp.ones((2, 3)), jnp.ones((5, 4)))


def test_optional_argument_checked_when_given():
    msg = "argument 'b' has shape (5,) but Float[Array, '#m'] expects shape (m=4)"
    with pytest.raises(ShapeMismatchError, match=re.escape(msg)):
        affine(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(5))


def test_dtype_mismatch_is_reported():
    msg = "argument 'x' has dtype int32 but Float[Array, 'batch n'] needs a float dtype"
    with pytest.raises(ShapeMismatchError, match=re.escape(msg)):
        affine(jnp.ones((2, 3), jnp.int32), jnp.ones((3, 4)))


def test_numpy_input_gets_a_conversion_hint():
    with pytest.raises(ShapeMismatchError, match=re.escape("(convert it with jnp.asarray)")):
        affine(np.ones((2, 3), np.float32), jnp.ones((3, 4)))


def test_error_is_a_value_error_too():
    with pytest.raises(ValueError):
        affine(jnp.ones((2, 3)), jnp.ones((4, 4)))


def test_return_value_checked():
    @typed
    def bad(x: Float[Array, "n"]) -> Float[Array, "n"]:
        return jnp.concatenate([x, x])

    msg = "bad(): return value has shape (6,) but Float[Array, 'n'] expects shape (n=3)"
    with pytest.raises(ShapeMismatchError, match=re.escape(msg)):
        bad(jnp.ones(3))


def test_checked_at_trace_time_under_jit_and_vmap():
    traces = []

    @typed
    def f(x: Float[Array, "n"], y: Float[Array, "n"]) -> Float[Array, ""]:
        traces.append(x.shape)
        return jnp.sum(x * y)

    jitted = jax.jit(f)
    assert float(jitted(jnp.ones(3), jnp.ones(3))) == 3.0
    jitted(jnp.ones(3), jnp.ones(3))
    assert traces == [(3,)]  # second call hits the cache: the check costs nothing at run time
    with pytest.raises(ShapeMismatchError, match=re.escape("argument 'y' has shape (4,)")):
        jitted(jnp.ones(3), jnp.ones(4))
    out = jax.vmap(f)(jnp.ones((5, 3)), jnp.ones((5, 3)))  # per-example shapes are checked
    assert out.shape == (5,)


def test_variadic_and_fixed_dimensions():
    @typed
    def g(x: Float[Array, "*batch 3"], y: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        return x.sum(-1) + y

    assert g(jnp.ones((2, 5, 3)), jnp.ones((2, 5))).shape == (2, 5)
    assert g(jnp.ones(3), jnp.ones(())).shape == ()
    with pytest.raises(ShapeMismatchError, match=re.escape("expects shape (*batch, 3)")):
        g(jnp.ones((2, 4)), jnp.ones(2))
    with pytest.raises(ShapeMismatchError, match=re.escape("expects shape (2, 5)")):
        g(jnp.ones((2, 5, 3)), jnp.ones((2, 6)))


def test_symbolic_expression_dimension():
    @typed
    def diff(x: Float[Array, "n"]) -> Float[Array, "n-1"]:
        return x[1:] - x[:-1]

    assert diff(jnp.arange(4.0)).shape == (3,)

    @typed
    def wrong(x: Float[Array, "n"]) -> Float[Array, "n-1"]:
        return x

    with pytest.raises(ShapeMismatchError, match=re.escape("expects shape (n-1=3)")):
        wrong(jnp.arange(4.0))


def test_non_array_annotations_are_checked():
    @typed
    def h(x: Float[Array, "n"], k: int) -> Float[Array, "n"]:
        return x * k

    assert h(jnp.ones(2), 3).shape == (2,)
    with pytest.raises(
        ShapeMismatchError, match=re.escape("h(): argument 'k' = 'a' does not match")
    ):
        h(jnp.ones(2), "a")


def test_methods_and_keyword_arguments():
    class Model:
        @typed
        def __call__(self, x: Float[Array, "n"], *, scale: Float[Array, ""]) -> Float[Array, "n"]:
            return x * scale

    assert Model()(jnp.ones(2), scale=jnp.array(2.0)).shape == (2,)
    with pytest.raises(ShapeMismatchError, match=re.escape("argument 'scale' has shape (2,)")):
        Model()(jnp.ones(2), scale=jnp.ones(2))


# Oracle: jaxtyping's own isinstance checks (in one jaxtyped context, so dimensions bind across
# arguments) must accept exactly what `typed` accepts.
_ANNOTATIONS = [
    (Float[Array, "a b"], Float[Array, "b"]),
    (Float[Array, "*s c"], Float[Array, "*s"]),
    (Float[Array, "a 2"], Float[Array, "#a"]),
    (Shaped[Array, "_ a"], Int[Array, "a"]),
    (Float[Array, "... a"], Float[Array, "a ..."]),
]
_SHAPES = [(2,), (2, 2), (3, 2), (2, 3), (1,), (3,), (1, 2), (2, 2, 2)]


@pytest.mark.parametrize("ann_x, ann_y", _ANNOTATIONS)
def test_verdicts_agree_with_jaxtyping(ann_x, ann_y):
    @typed
    def f(x: ann_x, y: ann_y):
        return None

    dtype_y = jnp.int32 if ann_y.dtypes == Int[Array, ""].dtypes else jnp.float32
    checked = 0
    for sx, sy in itertools.product(_SHAPES, _SHAPES):
        x, y = jnp.zeros(sx), jnp.zeros(sy, dtype_y)
        with jaxtyped("context"):
            expected = isinstance(x, ann_x) and isinstance(y, ann_y)
        try:
            f(x, y)
            ours = True
        except ShapeMismatchError:
            ours = False
        assert ours == expected, (ann_x, ann_y, sx, sy)
        checked += 1
    assert checked == len(_SHAPES) ** 2
