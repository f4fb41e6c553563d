"""`check_grad`: jax.grad evaluated exactly vs sympy's derivative."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy
from flint import arb

from tljax.proofs._grad import check_grad, kinks_at, to_arb

W2 = np.float32([[1.0, -2.0, 0.5], [0.25, 1.0, -1.0]])


def mlp(w):
    h = jax.nn.relu(w @ jnp.float32([1.0, -2.0]) + jnp.float32([0.5, -0.25, 1.0]))
    return jnp.sum((W2 @ h - jnp.float32([1.0, 0.0])) ** 2)


W_OFF = np.float32([[0.5, 0.25], [1.0, -1.0], [-0.75, 0.5]])


def test_mlp_gradient_is_exactly_sympys_derivative():
    r = check_grad(mlp, W_OFF)
    assert r.equal and r.max_difference == 0 and not r.at_kink
    assert r.method == "exact" and "equal as rationals" in r.detail
    # Independent hand computation of one entry: pre-activations z = w @ [1, -2] + b.
    z = W_OFF.astype(object) @ np.array([1, -2], dtype=object)
    z = [Fraction(float(a)) + Fraction(float(b)) for a, b in zip(z, [0.5, -0.25, 1.0], strict=True)]
    h = [max(v, Fraction(0)) for v in z]
    y = [sum(Fraction(float(W2[i, j])) * h[j] for j in range(3)) - t for i, t in enumerate([1, 0])]
    dz0 = sum(2 * y[i] * Fraction(float(W2[i, 0])) for i in range(2)) * (1 if z[0] > 0 else 0)
    assert r.jax_grad[0, 0] == dz0  # d loss / d w[0, 0] = dz0 * x[0], x[0] = 1


def test_at_a_relu_kink_the_convention_is_explained():
    w = W_OFF.copy()
    w[0] = [0.5, 0.5]  # z_0 = 0.5 - 1 + 0.5 = 0: relu at its kink
    r = check_grad(mlp, w)
    assert r.at_kink and not r.equal
    assert "kink" in r.detail and "relu'(0) = 0" in r.detail
    assert r.jax_grad[0, 0] == 0  # JAX: relu'(0) = 0; sympy: Heaviside(0) = 1/2
    assert r.reference[0, 0] != 0


def _softmax(x):
    e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x)))
    return e / jnp.sum(e)


def test_softmax_tanh_model_gradient_lies_in_the_exact_enclosure():
    W = np.float32([[1.0, -0.5], [0.25, 2.0], [-1.0, 0.5]])
    r = check_grad(lambda x: jnp.sum(jnp.tanh(_softmax(x) @ W)), np.float32([0.5, -1.0, 2.0]))
    assert r.equal and r.method == "exact"
    assert "inside JAX's arb enclosure" in r.detail
    assert all(isinstance(g, arb) for g in r.jax_grad)
    assert float(r.max_difference) < 1e-30


def test_jax_nn_softmax_falls_back_to_the_symbolic_semantics():
    # jax.nn.softmax carries a -inf constant, which the exact semantics refuses.
    r = check_grad(
        lambda x: jnp.sum(jax.nn.softmax(jnp.tanh(x)) * jnp.arange(3.0)),
        np.float32([0.5, -1.0, 2.0]),
    )
    assert r.equal and r.method == "symbolic" and "fell back" in r.detail


def test_symbolic_method_on_a_rational_program_is_exact():
    r = check_grad(lambda x: jnp.sum(x**3 / 3.0 - x), np.float32([0.5, -2.0]), method="symbolic")
    assert r.equal and r.max_difference == 0 and list(r.jax_grad) == [sympy.Rational(-3, 4), 3]


def test_a_wrong_gradient_is_reported_unequal():
    @jax.custom_vjp
    def f(x):
        return x * x

    f.defvjp(lambda x: (x * x, x), lambda x, g: (x * g,))  # missing factor 2
    r = check_grad(lambda x: jnp.sum(f(x)), np.float32([1.5]))
    assert not r.equal and r.max_difference == Fraction(3, 2)


def test_bad_method_is_an_error():
    with pytest.raises(ValueError, match="method must be"):
        check_grad(mlp, W_OFF, method="float")


def test_helpers():
    x = sympy.Symbol("x", real=True)
    assert kinks_at(sympy.Max(x, 0) + sympy.Abs(x - 1), {x: 0}) == ["Max(0, x) has tied arguments"]
    b = to_arb(sympy.exp(sympy.Rational(1, 2)) * sympy.pi)
    assert abs(float(b.mid()) - math.exp(0.5) * math.pi) < 1e-12 and float(b.rad()) < 1e-60


def test_pytree_parameters():
    params = {"w": np.float32([[0.5, -1.0], [2.0, 0.25]]), "b": np.float32([0.5, -0.25])}
    x = np.float32([1.0, 2.0])
    r = check_grad(lambda p: jnp.sum(jax.nn.relu(p["w"] @ x + p["b"]) ** 2), params)
    assert r.equal and set(r.jax_grad) == {"w", "b"}
    # First unit is inactive (0.5 - 2 + 0.5 < 0); second: 2 z x with z = 2 + 0.5 - 0.25 = 9/4.
    assert list(r.jax_grad["b"]) == [0, Fraction(9, 2)] and r.jax_grad["w"][1, 1] == 9
