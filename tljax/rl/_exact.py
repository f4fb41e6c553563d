"""Exact rational counterparts of the dynamic-programming routines (host-side, not traceable).

Numbers are Python `fractions.Fraction`; arrays are numpy `object` arrays of `Fraction`. Linear
systems are solved with python-flint's `fmpq_mat.solve` (exact Gaussian elimination over ℚ).
Floats are converted **exactly** with `float.as_integer_ratio` (a float32 0.1 becomes
13421773/134217728, never 1/10); pass `Fraction`s (or ints) to mean exact decimal values.

References:
  Puterman, *Markov Decision Processes* (1994), §6.2 (policy evaluation as a linear system),
  §6.4 (policy iteration), §6.3 (value iteration and its stopping rule).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

import flint
import numpy as np

from tljax.core import InputError, ShapeMismatchError


def to_fraction(x: Any) -> Fraction:
    """Converts a number exactly to a `Fraction`.

    Floats (Python, numpy, or 0-d arrays of any float dtype) go through `as_integer_ratio`, so the
    result is exactly the binary value held; ints, `Fraction`s and flint `fmpq`/`fmpz` are exact.

    Raises:
      InputError: for NaN, ±inf, or a type that has no exact rational value.
    """
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (bool, np.bool_)):
        return Fraction(int(x))
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    if isinstance(x, flint.fmpq):
        return Fraction(int(x.p), int(x.q))
    if isinstance(x, flint.fmpz):
        return Fraction(int(x))
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return to_fraction(x[()])
    if hasattr(x, "__array__") and not hasattr(x, "as_integer_ratio"):
        arr = np.asarray(x)  # a 0-d jax Array
        if arr.ndim == 0:
            return to_fraction(arr[()])
    if isinstance(x, (float, np.floating)) or hasattr(x, "as_integer_ratio"):
        try:
            f = float(x) if not isinstance(x, (float, np.floating)) else x
            if not math.isfinite(float(f)):
                raise InputError(
                    f"to_fraction: {x!r} is not finite; exact arithmetic needs finite inputs."
                )
            # np.float16/32/bfloat16 widen exactly to float64, so the ratio is the stored value.
            return Fraction(*float(f).as_integer_ratio())
        except (TypeError, ValueError) as err:
            raise InputError(f"to_fraction: cannot convert {x!r} exactly: {err}") from err
    raise InputError(
        f"to_fraction: cannot convert {type(x).__name__} {x!r} to an exact rational; pass a float, "
        f"int or Fraction."
    )


def fraction_array(x: Any) -> np.ndarray:
    """An object array of `Fraction`s with the shape of `x`, each entry converted by
    `to_fraction`."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        arr = x
    elif hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        # Widen low-precision floats to float64 exactly so `as_integer_ratio` sees the same value.
        if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
            arr = arr.astype(np.float64)
    else:
        arr = np.array(x, dtype=object)
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = to_fraction(arr[idx])
    return out


def _fmpq_mat(a: np.ndarray) -> flint.fmpq_mat:
    n, m = a.shape
    return flint.fmpq_mat(n, m, [flint.fmpq(f.numerator, f.denominator) for f in a.ravel()])


def _from_fmpq_mat(m: flint.fmpq_mat) -> np.ndarray:
    out = np.empty((m.nrows(), m.ncols()), dtype=object)
    for i in range(m.nrows()):
        for j in range(m.ncols()):
            e = m[i, j]
            out[i, j] = Fraction(int(e.p), int(e.q))
    return out


def solve_exact(A: Any, b: Any) -> np.ndarray:
    """Solves `A x = b` exactly over ℚ (flint `fmpq_mat.solve`).

    Arguments:
      - `A`: square matrix (n, n) of floats / ints / Fractions.
      - `b`: right-hand side (n,) or (n, k).

    Returns:
      `x` as an object array of `Fraction`s with the shape of `b`.

    Raises:
      InputError: when `A` is singular (the message says so; check the chain is irreducible or γ <
      1).
    """
    A = fraction_array(A)
    b = fraction_array(b)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or b.shape[0] != A.shape[0] or b.ndim not in (1, 2):
        raise ShapeMismatchError(
            f"solve_exact: need A (n, n) and b (n,) or (n, k); got {A.shape} and {b.shape}."
        )
    b2 = b.reshape(b.shape[0], -1)
    try:
        x = _fmpq_mat(A).solve(_fmpq_mat(b2))
    except ZeroDivisionError as err:
        raise InputError(
            f"solve_exact: the {A.shape[0]}×{A.shape[0]} matrix is singular over ℚ; for policy "
            f"evaluation "
            "check γ < 1, for a stationary distribution check the chain has a single recurrent "
            "class."
        ) from err
    return _from_fmpq_mat(x).reshape(b.shape)


def matmul_exact(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Exact product of two object arrays of Fractions (via flint), shapes (n, k) @ (k, m) or
    (k,)."""
    A, B = fraction_array(A), fraction_array(B)
    vec = B.ndim == 1
    out = _from_fmpq_mat(_fmpq_mat(A) * _fmpq_mat(B.reshape(B.shape[0], -1)))
    return out[:, 0] if vec else out


@dataclasses.dataclass(frozen=True)
class RationalMDP:
    """An MDP with exact rational entries (host-side).

    Attributes:
      P: object array (S, A, S) of Fractions, each row summing to exactly 1.
      R: object array (S, A) or (S, A, S) of Fractions.
      gamma: Fraction in [0, 1).
    """

    P: np.ndarray
    R: np.ndarray
    gamma: Fraction

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def expected_reward(self) -> np.ndarray:
        """r(s, a) = Σ_s′ P(s′|s,a) R(s,a,s′), exact; shape (S, A)."""
        if self.R.ndim == 2:
            return self.R
        return (self.P * self.R).sum(axis=-1)


def rational_mdp(
    mdp: Any = None, *, P: Any = None, R: Any = None, gamma: Any = None, check: bool = True
) -> RationalMDP:
    """Converts an `MDP` (or arrays `P`, `R`, `gamma`) exactly to a `RationalMDP`.

    Each float becomes the rational number it holds (`as_integer_ratio`); a float32 MDP whose rows
    sum to 1 only up to rounding is rejected when `check` is set, because the exact results would
    then be about a different (sub-stochastic) process. Build such MDPs with dyadic probabilities
    (e.g. `random_mdp(..., denominator=8)`) or pass `Fraction`s.

    Raises:
      InputError: non-stochastic rows (exactly), negative entries, or γ outside [0, 1).
    """
    if mdp is not None:
        if isinstance(mdp, RationalMDP):
            return mdp
        P, R, gamma = mdp.P, mdp.R, mdp.gamma
    Pq, Rq, g = fraction_array(P), fraction_array(R), to_fraction(gamma)
    if Pq.ndim != 3 or Pq.shape[0] != Pq.shape[2] or Rq.shape not in (Pq.shape[:2], Pq.shape):
        raise ShapeMismatchError(
            f"rational_mdp: need P (S, A, S) and R (S, A) or (S, A, S); got {Pq.shape}, {Rq.shape}."
        )
    if check:
        bad = [
            (s, a, str(Pq[s, a].sum()))
            for s in range(Pq.shape[0])
            for a in range(Pq.shape[1])
            if Pq[s, a].sum() != 1 or any(p < 0 for p in Pq[s, a])
        ]
        if bad or not (0 <= g < 1):
            raise InputError(
                f"rational_mdp: not an exact MDP: rows (s, a, sum) {bad[:5]} are not exactly "
                f"stochastic"
                f"{'' if 0 <= g < 1 else f', gamma={g} outside [0, 1)'}. Use dyadic probabilities "
                "(random_mdp(..., denominator=8)) or Fractions, or pass check=False."
            )
    return RationalMDP(Pq, Rq, g)


def _stochastic_policy_exact(mdp: RationalMDP, policy: Any) -> np.ndarray:
    pol = np.asarray(policy) if not isinstance(policy, np.ndarray) else policy
    if pol.ndim == 1 and pol.dtype.kind in "iu":
        pi = np.full((mdp.n_states, mdp.n_actions), Fraction(0), dtype=object)
        for s, a in enumerate(pol):
            pi[s, int(a)] = Fraction(1)
        return pi
    if pol.shape == (mdp.n_states, mdp.n_actions):
        return fraction_array(pol)
    raise ShapeMismatchError(
        f"policy has shape {pol.shape} (dtype {pol.dtype}); expected int (S,) = ({mdp.n_states},) "
        f"or "
        f"(S, A) = ({mdp.n_states}, {mdp.n_actions})."
    )


def q_values_exact(mdp: Any, v: Any) -> np.ndarray:
    """Exact Q(s, a) = r(s, a) + γ Σ_s′ P(s′|s,a) v(s′), object array (S, A)."""
    m = rational_mdp(mdp)
    v = fraction_array(v)
    return m.expected_reward() + m.gamma * np.einsum("sat,t->sa", m.P, v)


def bellman_expectation_exact(mdp: Any, policy: Any, v: Any) -> np.ndarray:
    """Exact (T^π v)(s) = Σ_a π(a|s) Q(s, a); object array (S,)."""
    m = rational_mdp(mdp)
    return (_stochastic_policy_exact(m, policy) * q_values_exact(m, v)).sum(axis=-1)


def bellman_optimality_exact(mdp: Any, v: Any) -> np.ndarray:
    """Exact (T v)(s) = max_a Q(s, a); object array (S,)."""
    q = q_values_exact(mdp, v)
    return np.array([max(row) for row in q], dtype=object)


def greedy_policy_exact(mdp: Any, v: Any) -> np.ndarray:
    """argmax_a Q(s, a) in exact arithmetic (lowest index on exact ties); int array (S,)."""
    q = q_values_exact(mdp, v)
    return np.array(
        [max(range(len(row)), key=lambda a, row=row: (row[a], -a)) for row in q], dtype=np.int64
    )


def evaluate_policy_exact(mdp: Any, policy: Any) -> np.ndarray:
    """V^π exactly: solves (I − γ P_π) V = r_π over ℚ with flint's `fmpq_mat.solve`.

    Arguments:
      - `mdp`: an `MDP` (floats converted exactly), a `RationalMDP`, or anything `rational_mdp`
      takes.
      - `policy`: deterministic int (S,) or stochastic (S, A) (floats converted exactly, Fractions
      kept).

    Returns:
      object array (S,) of `Fraction`s.

    Example:
      >>> from fractions import Fraction
      >>> m = rational_mdp(P=[[[1]]], R=[[1]], gamma=Fraction(1, 3))
      >>> evaluate_policy_exact(m, np.array([0])).tolist()
      [Fraction(3, 2)]
    """
    m = rational_mdp(mdp)
    pi = _stochastic_policy_exact(m, policy)
    P_pi = np.einsum("sa,sat->st", pi, m.P)
    r_pi = (pi * m.expected_reward()).sum(axis=-1)
    A = np.eye(m.n_states, dtype=int).astype(object) - m.gamma * P_pi
    return solve_exact(A, r_pi)


def policy_iteration_exact(mdp: Any, policy0: Any = None, max_iterations: int = 10_000):
    """Howard's policy iteration in exact arithmetic.

    Switches an action only on a strict exact improvement, so it terminates (at most A^S steps) at a
    policy π with T V^π = V^π exactly, i.e. V^π = V*.

    Returns:
      `(policy, v, iterations)`: int array (S,), object array (S,) of Fractions, int.
    """
    m = rational_mdp(mdp)
    pi = (
        np.zeros(m.n_states, dtype=np.int64)
        if policy0 is None
        else np.asarray(policy0, dtype=np.int64).copy()
    )
    for k in range(1, max_iterations + 1):
        v = evaluate_policy_exact(m, pi)
        q = q_values_exact(m, v)
        new = pi.copy()
        for s in range(m.n_states):
            best = max(range(m.n_actions), key=lambda a, s=s: (q[s, a], -a))
            if q[s, best] > q[s, pi[s]]:
                new[s] = best
        if np.array_equal(new, pi):
            return pi, v, k
        pi = new
    raise InputError(
        f"policy_iteration_exact: no convergence in {max_iterations} iterations (raise "
        f"max_iterations)."
    )


def sup_norm_exact(x: np.ndarray) -> Fraction:
    """max_i |x_i| over an object array of Fractions (0 for an empty array)."""
    return max((abs(e) for e in np.asarray(x, dtype=object).ravel()), default=Fraction(0))


def value_iteration_exact(mdp: Any, eps: Any, v0: Any = None, max_iterations: int = 100_000):
    """Value iteration in exact arithmetic with the stopping rule ‖V_{k+1} − V_k‖_∞ < ε(1−γ)/(2γ).

    Returns:
      `(v, policy, iterations, last_diff)` where `policy` is greedy with respect to `v` (exactly);
      then ‖V^policy − V*‖_∞ ≤ 2γ/(1−γ)·last_diff < ε (Puterman Thm 6.3.1).
    """
    m = rational_mdp(mdp)
    eps = to_fraction(eps)
    v = np.full(m.n_states, Fraction(0), dtype=object) if v0 is None else fraction_array(v0)
    threshold = eps * (1 - m.gamma) / (2 * m.gamma) if m.gamma > 0 else None
    for k in range(1, max_iterations + 1):
        new = bellman_optimality_exact(m, v)
        diff = sup_norm_exact(new - v)
        v = new
        if threshold is None or diff < threshold:
            return v, greedy_policy_exact(m, v), k, diff
    raise InputError(f"value_iteration_exact: no convergence in {max_iterations} iterations.")
