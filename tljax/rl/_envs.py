"""Built-in finite environments: gridworld, the Strens chain, and a seeded random-MDP generator.

All three return an `MDP` (float arrays, validated). Probabilities chosen as dyadic rationals
(k/2^m) are represented exactly in float32, so `tljax.rl.rational_mdp` converts them back to the
intended rationals; `random_mdp(..., denominator=2**m)` produces such MDPs for exact checks.

References:
  Sutton & Barto (2018), Example 4.1 (gridworld); Strens, "A Bayesian framework for reinforcement
  learning", ICML 2000 (the 5-state chain).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tljax.core import InputError
from tljax.rl._mdp import MDP

# Action order of `gridworld`: row/column deltas.
GRID_ACTIONS = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left


def gridworld(
    n_rows: int = 4,
    n_cols: int = 4,
    *,
    goal: tuple[int, int] | None = None,
    walls: Sequence[tuple[int, int]] = (),
    slip: float = 0.125,
    gamma: float = 0.9,
    goal_reward: float = 1.0,
    step_reward: float = 0.0,
) -> MDP:
    """A gridworld with an absorbing goal, walls and slippery moves.

    States are cells numbered `row * n_cols + col`; actions 0..3 move up, right, down, left. With
    probability 1 − `slip` the intended move happens, otherwise a uniformly random one of the four
    (so the intended move has total probability 1 − 3·slip/4). Moves into a wall or off the grid
    leave the agent in place. The goal is absorbing with reward 0; entering it from another cell
    pays `goal_reward`; every other transition pays `step_reward`. Rewards are given per
    transition, as `R[s, a, s′]`.

    Arguments:
      - `n_rows`, `n_cols`: grid size.
      - `goal`: (row, col) of the goal cell; default the bottom-right corner.
      - `walls`: cells that cannot be entered (their rows in `P` are self-loops, unreachable).
      - `slip`: probability of a random move, in [0, 1].
      - `gamma`: discount in [0, 1).
      - `goal_reward`, `step_reward`: rewards.

    Returns:
      An `MDP` with S = n_rows·n_cols, A = 4 and `R` of shape (S, 4, S).

    Example:
      >>> m = gridworld(2, 2, slip=0.0)
      >>> m.P.shape, float(m.P[0, 1, 1])
      ((4, 4, 4), 1.0)
    """
    goal = (n_rows - 1, n_cols - 1) if goal is None else tuple(goal)
    walls = {tuple(w) for w in walls}
    if not (0 <= goal[0] < n_rows and 0 <= goal[1] < n_cols) or goal in walls:
        raise InputError(
            f"gridworld: goal {goal} must be a free cell of the {n_rows}×{n_cols} grid."
        )
    if not 0.0 <= slip <= 1.0:
        raise InputError(f"gridworld: slip must be in [0, 1], got {slip}.")
    n = n_rows * n_cols
    P = np.zeros((n, 4, n))
    R = np.full((n, 4, n), float(step_reward))
    g = goal[0] * n_cols + goal[1]

    def move(r, c, d):
        rr, cc = r + GRID_ACTIONS[d][0], c + GRID_ACTIONS[d][1]
        if 0 <= rr < n_rows and 0 <= cc < n_cols and (rr, cc) not in walls:
            return rr * n_cols + cc
        return r * n_cols + c

    for r in range(n_rows):
        for c in range(n_cols):
            s = r * n_cols + c
            if s == g or (r, c) in walls:
                P[s, :, s] = 1.0
                R[s, :, :] = 0.0
                continue
            for a in range(4):
                P[s, a, move(r, c, a)] += 1.0 - slip
                for d in range(4):
                    P[s, a, move(r, c, d)] += slip / 4
            R[s, :, g] = goal_reward
    return MDP(P, R, gamma).validate()


def chain(
    n_states: int = 5,
    *,
    slip: float = 0.2,
    gamma: float = 0.9,
    small_reward: float = 2.0,
    large_reward: float = 10.0,
) -> MDP:
    """The chain of Strens (2000): exploring forward pays off late, going back pays a little now.

    Action 0 ("forward") moves from state s to s+1 with reward 0, and from the last state stays
    there
    with reward `large_reward`. Action 1 ("back") returns to state 0 with reward `small_reward`.
    With probability `slip` the other action is executed instead. Rewards are expected rewards
    `R[s, a]`.

    Returns:
      An `MDP` with S = `n_states`, A = 2.
    """
    if n_states < 2:
        raise InputError(f"chain: need at least 2 states, got {n_states}.")
    P = np.zeros((n_states, 2, n_states))
    R = np.zeros((n_states, 2))
    for s in range(n_states):
        fwd = min(s + 1, n_states - 1)
        r_fwd = large_reward if s == n_states - 1 else 0.0
        for a, p_fwd in ((0, 1.0 - slip), (1, slip)):
            P[s, a, fwd] += p_fwd
            P[s, a, 0] += 1.0 - p_fwd
            R[s, a] = p_fwd * r_fwd + (1.0 - p_fwd) * small_reward
    return MDP(P, R, gamma).validate()


def random_mdp(
    seed: int,
    n_states: int,
    n_actions: int,
    *,
    gamma: float = 0.9,
    denominator: int | None = None,
    reward_range: tuple[float, float] = (-1.0, 1.0),
    transition_rewards: bool = False,
) -> MDP:
    """A random MDP from a seed (numpy `default_rng(seed)`, so it is reproducible across JAX
    versions).

    Arguments:
      - `seed`: integer seed.
      - `n_states`, `n_actions`: S and A.
      - `gamma`: discount.
      - `denominator`: when given (a power of two keeps floats exact), every probability is an
        integer multiple of 1/denominator and every reward an integer multiple of 1/denominator in
        `reward_range`; such an MDP converts exactly to rationals. When None, rows of `P` are
        Dirichlet(1) and rewards uniform.
      - `reward_range`: (low, high) for rewards.
      - `transition_rewards`: return `R[s, a, s′]` instead of `R[s, a]`.

    Returns:
      An `MDP`.

    Example:
      >>> m = random_mdp(0, 3, 2, denominator=8)
      >>> m.P.shape, bool((m.P * 8 == (m.P * 8).round()).all())
      ((3, 2, 3), True)
    """
    rng = np.random.default_rng(seed)
    shape_r = (n_states, n_actions, n_states) if transition_rewards else (n_states, n_actions)
    lo, hi = reward_range
    if denominator is None:
        P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
        R = rng.uniform(lo, hi, size=shape_r)
    else:
        if denominator < 1:
            raise InputError(
                f"random_mdp: denominator must be a positive integer, got {denominator}."
            )
        counts = rng.multinomial(
            denominator, np.ones(n_states) / n_states, size=(n_states, n_actions)
        )
        P = counts / denominator
        k_lo, k_hi = int(np.ceil(lo * denominator)), int(np.floor(hi * denominator))
        R = rng.integers(k_lo, k_hi + 1, size=shape_r) / denominator
    return MDP(P.astype(np.float32), R.astype(np.float32), gamma).validate()
