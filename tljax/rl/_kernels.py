"""Markov kernels on finite spaces: stochastic matrices and conditional samplers.

A kernel from X = {0..n−1} to Y = {0..m−1} is a row-stochastic matrix K[x, y] = Pr(y | x). Kernels
compose by the Chapman-Kolmogorov equation (K₁K₂)[x, z] = Σ_y K₁[x, y] K₂[y, z]; a distribution μ
on X is pushed forward to μK on Y. The same kernel viewed as a conditional sampler is a function
`(key, x) -> y`, and composing samplers (run one, feed the result to the next) samples the product
kernel.

Float functions are traceable JAX; the `*_exact` functions are host-side over `Fraction`s (floats
are converted exactly with `as_integer_ratio`).

References:
  Norris, *Markov Chains* (1997), §1.1 (Chapman-Kolmogorov), §1.7 (invariant distributions),
  §1.9 (reversibility / detailed balance).
  Hastings, "Monte Carlo sampling methods using Markov chains and their applications",
  Biometrika 57 (1970).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from tljax.core import InputError, ShapeMismatchError
from tljax.rl._distributions import Categorical
from tljax.rl._exact import fraction_array, matmul_exact, solve_exact

Sampler = Callable[[jax.Array, jax.Array], jax.Array]


def _check_matrix(where: str, K) -> jax.Array:
    K = jnp.asarray(K)
    if K.ndim != 2:
        raise ShapeMismatchError(
            f"{where}: a kernel is a matrix K[x, y] of rank 2; got shape {K.shape}."
        )
    return K


def is_stochastic(K: Any, *, atol: float = 1e-6) -> bool:
    """Whether `K` (host, concrete) has non-negative entries and rows summing to 1 within `atol`."""
    K = np.asarray(K, dtype=np.float64)
    return bool(K.ndim == 2 and np.all(K >= 0) and np.all(np.abs(K.sum(axis=1) - 1) <= atol))


def compose(*kernels: jax.Array) -> jax.Array:
    """Chapman-Kolmogorov composition K₁K₂⋯K_n (first kernel applied first).

    Arguments:
      - `kernels`: matrices of shapes (n₀, n₁), (n₁, n₂), ….

    Returns:
      the product kernel, shape (n₀, n_k).
    """
    if not kernels:
        raise InputError("compose: need at least one kernel.")
    Ks = [_check_matrix("compose", K) for K in kernels]
    for i, (a, b) in enumerate(itertools.pairwise(Ks)):
        if a.shape[1] != b.shape[0]:
            raise ShapeMismatchError(
                f"compose: kernel {i} maps to {a.shape[1]} states but kernel {i + 1} starts from "
                f"{b.shape[0]}."
            )
    out = Ks[0]
    for K in Ks[1:]:
        out = out @ K
    return out


def kernel_power(K: jax.Array, n: int) -> jax.Array:
    """The n-step kernel Kⁿ (K⁰ = I), by repeated squaring."""
    K = _check_matrix("kernel_power", K)
    return jnp.linalg.matrix_power(K, n)


def pushforward(mu, K: jax.Array):
    """The law of y ~ K(x, ·) when x ~ μ: (μK)[y] = Σ_x μ[x] K[x, y].

    Arguments:
      - `mu`: a probability vector (n,) or a `Categorical`; the result has the same type.
      - `K`: kernel (n, m).
    """
    K = _check_matrix("pushforward", K)
    if isinstance(mu, Categorical):
        # Work in log space so zero-probability categories stay exactly -inf.
        return Categorical(jnp.log(mu.probs @ K))
    mu = jnp.asarray(mu)
    if mu.shape[-1] != K.shape[0]:
        raise ShapeMismatchError(
            f"pushforward: `mu` has {mu.shape[-1]} states but `K` starts from {K.shape[0]}."
        )
    return mu @ K


def kernel_sampler(K: jax.Array) -> Sampler:
    """The kernel as a conditional sampler `(key, x) -> y` with y ~ K[x, ·]."""
    logK = jnp.log(_check_matrix("kernel_sampler", K))

    def sample(key, x):
        return jax.random.categorical(key, logK[x])

    return sample


def compose_samplers(*samplers: Sampler) -> Sampler:
    """Runs samplers in sequence with independent keys: samples the composed kernel."""

    def sample(key, x):
        for k, s in zip(jax.random.split(key, len(samplers)), samplers, strict=True):
            x = s(k, x)
        return x

    return sample


class FiniteKernel(eqx.Module):
    """A Markov kernel on finite spaces as a pytree holding its matrix `K[x, y]`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> k = FiniteKernel(jnp.array([[0.0, 1.0], [1.0, 0.0]]))
      >>> int(k.sample(jax.random.key(0), 0)), k.then(k).matrix.tolist()
      (1, [[1.0, 0.0], [0.0, 1.0]])
    """

    matrix: jax.Array

    def __init__(self, matrix):
        self.matrix = _check_matrix(
            "FiniteKernel", jnp.asarray(matrix, dtype=jnp.result_type(float))
        )

    def sample(self, key: jax.Array, x: jax.Array) -> jax.Array:
        """y ~ K[x, ·]."""
        return jax.random.categorical(key, jnp.log(self.matrix[x]))

    def then(self, other: FiniteKernel) -> FiniteKernel:
        """The composition "self, then other" (matrix product)."""
        return FiniteKernel(compose(self.matrix, other.matrix))

    def pushforward(self, mu):
        """μK, see `pushforward`."""
        return pushforward(mu, self.matrix)


def stationary_distribution(K: jax.Array) -> jax.Array:
    """π with πK = π, Σπ = 1, by solving (Kᵀ − I)π = 0 with one equation replaced by Σπ = 1.

    Unique when the chain has a single recurrent class; otherwise the system is singular and the
    result is not meaningful (use `stationary_distribution_exact`, which raises).
    """
    K = _check_matrix("stationary_distribution", K)
    n = K.shape[0]
    A = (K.T - jnp.eye(n, dtype=K.dtype)).at[-1].set(1.0)
    b = jnp.zeros((n,), K.dtype).at[-1].set(1.0)
    return jnp.linalg.solve(A, b)


def stationary_distribution_exact(K: Any) -> np.ndarray:
    """The stationary distribution in exact rationals (flint solve), object array (n,) of Fractions.

    Raises:
      InputError: when the solution is not unique (more than one recurrent class).
    """
    Kq = fraction_array(K)
    n = Kq.shape[0]
    A = Kq.T.copy()
    for i in range(n):
        A[i, i] -= 1
    A[-1, :] = Fraction(1)
    b = np.array([Fraction(0)] * (n - 1) + [Fraction(1)], dtype=object)
    return solve_exact(A, b)


def compose_exact(*kernels: Any) -> np.ndarray:
    """Exact Chapman-Kolmogorov product of kernels given as floats (converted exactly) or
    Fractions."""
    out = fraction_array(kernels[0])
    for K in kernels[1:]:
        out = matmul_exact(out, fraction_array(K))
    return out


def detailed_balance_gap(K: jax.Array, pi: jax.Array) -> jax.Array:
    """max_{x,y} |π(x)K(x,y) − π(y)K(y,x)| (0 iff K is reversible w.r.t. π)."""
    flow = jnp.asarray(pi)[:, None] * _check_matrix("detailed_balance_gap", K)
    return jnp.max(jnp.abs(flow - flow.T))


def check_detailed_balance_exact(K: Any, pi: Any):
    """Exactly checks π(x)K(x,y) = π(y)K(y,x) for all pairs.

    Returns:
      `(holds, counterexample)`: counterexample is `None` or `(x, y, π(x)K(x,y), π(y)K(y,x))`.
    """
    Kq, pq = fraction_array(K), fraction_array(pi)
    n = Kq.shape[0]
    for x in range(n):
        for y in range(x + 1, n):
            a, b = pq[x] * Kq[x, y], pq[y] * Kq[y, x]
            if a != b:
                return False, (x, y, a, b)
    return True, None


def metropolis_hastings(proposal: jax.Array, target: jax.Array) -> jax.Array:
    """The Metropolis-Hastings transition matrix for a proposal Q and a target π (float, traceable).

    K(x, y) = Q(x, y)·min(1, π(y)Q(y, x) / (π(x)Q(x, y))) for y ≠ x, i.e. min(π(x)Q(x,y),
    π(y)Q(y,x))/π(x);
    K(x, x) = 1 − Σ_{y≠x} K(x, y). K is reversible with respect to π (detailed balance).

    Arguments:
      - `proposal`: stochastic matrix Q (n, n).
      - `target`: positive weights π (n,), normalised or not.

    Returns:
      K, shape (n, n).
    """
    Q = _check_matrix("metropolis_hastings", proposal)
    target = jnp.asarray(target, Q.dtype)
    if target.shape != (Q.shape[0],):
        raise ShapeMismatchError(
            f"metropolis_hastings: `target` has shape {target.shape}, expected ({Q.shape[0]},)."
        )
    flow = target[:, None] * Q
    K = jnp.minimum(flow, flow.T) / target[:, None]
    K = K * (1 - jnp.eye(Q.shape[0], dtype=Q.dtype))
    return K + jnp.diag(1 - jnp.sum(K, axis=1))


def metropolis_hastings_exact(proposal: Any, target: Any) -> np.ndarray:
    """The Metropolis-Hastings matrix in exact rationals, from the acceptance probability
    α(x, y) = min(1, π(y)Q(y,x) / (π(x)Q(x,y))); K(x, y) = Q(x, y)α(x, y), y ≠ x.

    Arguments:
      - `proposal`: Q (n, n), floats (converted exactly) or Fractions; rows must sum to 1 exactly.
      - `target`: π (n,), positive; need not be normalised.

    Returns:
      object array (n, n) of Fractions.
    """
    Q, p = fraction_array(proposal), fraction_array(target)
    n = Q.shape[0]
    if Q.shape != (n, n) or p.shape != (n,):
        raise ShapeMismatchError(
            f"metropolis_hastings_exact: need Q (n, n) and π (n,), got {Q.shape}, {p.shape}."
        )
    bad = [x for x in range(n) if p[x] <= 0 or sum(Q[x]) != 1 or any(q < 0 for q in Q[x])]
    if bad:
        raise InputError(
            f"metropolis_hastings_exact: states {bad[:10]} have π ≤ 0 or a proposal row that is "
            f"not exactly "
            "stochastic; pass Fractions or dyadic floats and a positive target."
        )
    K = np.full((n, n), Fraction(0), dtype=object)
    for x in range(n):
        for y in range(n):
            if y != x and Q[x, y] != 0:
                K[x, y] = Q[x, y] * min(Fraction(1), (p[y] * Q[y, x]) / (p[x] * Q[x, y]))
        K[x, x] = 1 - sum(K[x, y] for y in range(n) if y != x)
    return K
