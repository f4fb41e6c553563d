"""Certified statements "the policy takes action a everywhere in a box of states".

`certify_policy_region` turns sampled region claims (`check_nonnegative_numeric`) into proofs. The
unsafe set "some other action's logit is at least action a's" is handed to `tljax.verify`, which
falsifies (random points and PGD), bounds the logit margins with `tljax.bound` (CROWN by default,
float-sound) over the box, and bisects the box (input splitting: the coordinate with the largest
width × |gradient|) until every sub-box is certified, a counterexample is confirmed, or the time
budget runs out. A certified verdict is then re-checked: the leaf boxes must cover the box
(checked exactly, in rational arithmetic) and every leaf's certified margin must be > 0.

`policy_region_claim` wraps either check as a `Claim`. These live in `tljax.proofs`, not in
`tljax.rl`, because they use `tljax.bound` and `tljax.verify`: `tljax.rl` builds on core only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tljax.bounds import Box
from tljax.core import InputError, InvalidBoxError, ShapeMismatchError
from tljax.io import Property
from tljax.rl import policy_logit_margin_fn, policy_logits, sample_box
from tljax.verify import verify

from ._claims import Claim, Evidence

VERDICTS = ("certified", "refuted", "unknown")
METHODS = ("crown", "alpha-crown", "ibp")

# One wrapper `(state, params) -> logits` per policy function, kept alive with it: tljax.verify
# caches its compiled programs per function object, so a fresh lambda per call would recompile.
_WRAPPERS: dict[int, tuple[Callable, Callable]] = {}


def _state_first(policy: Callable) -> Callable:
    hit = _WRAPPERS.get(id(policy))
    if hit is None or hit[0] is not policy:

        def logits(state, params):
            return policy(params, state)

        logits.__name__ = f"{getattr(policy, '__name__', 'policy')}_of_state"
        if len(_WRAPPERS) >= 16:
            _WRAPPERS.pop(next(iter(_WRAPPERS)))
        hit = (policy, logits)
        _WRAPPERS[id(policy)] = hit
    return hit[1]


@dataclasses.dataclass(frozen=True)
class PolicyRegionResult:
    """What `certify_policy_region` found.

    Attributes:
      verdict: "certified" (proved: at every state of the box, float32 or real, logit(action) is
        strictly larger than every other logit, so the greedy policy takes `action`), "refuted"
        (`counterexample` is a state of the box where it does not) or "unknown" (budget spent).
      action: the claimed action.
      lower, upper: the box, float64 arrays of shape (n,).
      leaves_lower, leaves_upper: (N, n) float64 leaf boxes of a certified verdict; they cover
        the box (re-checked exactly). Shape (0, n) for other verdicts.
      leaf_margins: (N,) certified lower bounds, per leaf, of logit(action) − max of the other
        logits (rounded down); all > 0 for a certified verdict.
      counterexample: a float32 state (n,) inside the box where the policy's float32 (XLA) and
        exact logits both give another action at least as large a logit, or None.
      counterexample_margin: logit(action) − max other logit at `counterexample` (float32, ≤ 0),
        or NaN.
      seconds: wall-clock time, compilation included.
      detail: one line on how the verdict was reached.
      result: the underlying `tljax.verify.Result` (its `check()` re-verifies the verdict).
      prop: the `tljax.io.Property` that was decided (unsafe set: another action's logit ≥
        logit(action)).
    """

    verdict: str
    action: int
    lower: np.ndarray
    upper: np.ndarray
    leaves_lower: np.ndarray
    leaves_upper: np.ndarray
    leaf_margins: np.ndarray
    counterexample: np.ndarray | None
    counterexample_margin: float
    seconds: float
    detail: str
    result: Any = dataclasses.field(repr=False)
    prop: Any = dataclasses.field(repr=False)

    @property
    def certified(self) -> bool:
        return self.verdict == "certified"

    @property
    def num_boxes(self) -> int:
        """Number of leaf boxes of a certified verdict (0 otherwise)."""
        return int(self.leaves_lower.shape[0])

    @property
    def min_margin(self) -> float:
        """The smallest certified leaf margin (a lower bound of the margin over the box), or NaN."""
        return float(np.min(self.leaf_margins)) if self.leaf_margins.size else math.nan

    def check(self, *, rebound: bool = False):
        """Re-verifies the verdict (`tljax.verify.Result.check`): coverage of the leaves and their
        margins exactly (and with `rebound=True` every leaf's bounds recomputed), or the
        counterexample re-executed in float32 and exact arithmetic. Returns a `CheckReport`."""
        return self.result.check(rebound=rebound)


def _box64(lower, upper, who: str = "certify_policy_region") -> tuple[np.ndarray, np.ndarray]:
    if isinstance(lower, Box):
        if upper is not None:
            raise InvalidBoxError(
                f"{who}: pass either a tljax.Box or `lower` and `upper`, not both."
            )
        lower, upper = lower.lower, lower.upper
    elif upper is None:
        raise InvalidBoxError(f"{who}: the box needs `lower` and `upper` (or one tljax.Box).")
    try:
        lo = np.asarray(lower, np.float64)
        hi = np.asarray(upper, np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidBoxError(f"{who}: the box must be numeric ({err})") from err
    if lo.shape != hi.shape or lo.ndim != 1:
        raise InvalidBoxError(
            f"{who}: `lower` {lo.shape} and `upper` {hi.shape} must be equal 1-D "
            "shapes (one entry per state coordinate)."
        )
    bad = [
        (i, float(a), float(b))
        for i, (a, b) in enumerate(zip(lo, hi, strict=True))
        if not (np.isfinite(a) and np.isfinite(b) and a <= b)
    ]
    if bad:
        raise InvalidBoxError(
            f"{who}: every coordinate needs finite lower <= upper; offending "
            f"(index, lower, upper) = {bad}."
        )
    return lo, hi


def _num_actions(policy: Callable, params, n: int) -> int:
    try:
        out = jax.eval_shape(policy, params, jax.ShapeDtypeStruct((n,), jnp.float32))
    except Exception as err:  # re-raised with the shape that was tried
        first = str(err).splitlines()[0] if str(err) else ""
        raise ShapeMismatchError(
            f"certify_policy_region: policy(params, state) failed for a state of shape ({n},) "
            f"(the box's shape): {type(err).__name__}: {first}. The box needs one interval per "
            "state coordinate (cart-pole: 4, (x, x_dot, theta, theta_dot)), and `params` must "
            "be the policy's parameters."
        ) from err
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1 or leaves[0].ndim != 1 or leaves[0].shape[0] < 2:
        shapes = [tuple(x.shape) for x in leaves]
        raise ShapeMismatchError(
            f"certify_policy_region: the policy must map one state ({n},) to a logit vector "
            f"(n_actions,) with n_actions >= 2; it returned {shapes}."
        )
    return int(leaves[0].shape[0])


def certify_policy_region(
    params,
    lower: Sequence[float] | np.ndarray | Box,
    upper: Sequence[float] | np.ndarray | None = None,
    *,
    action: int = 1,
    policy: Callable | None = None,
    method: str = "crown",
    timeout: float = 120.0,
    batch_size: int = 64,
    seed: int = 0,
) -> PolicyRegionResult:
    """Proves or refutes "the greedy policy takes `action` at every state in [lower, upper]".

    The policy's logits are bounded with `tljax.bound` (float-sound: the bounds hold for the
    float32 program as executed, any summation order, and for the real-valued network) over the
    box; where one box is too loose it is bisected, through `tljax.verify`'s input-splitting
    branch and bound, until every leaf box has a certified lower bound of
    logit(action) − logit(b) above zero for every other action b. A tie counts against the
    claim (`argmax` would pick the lower index), so "certified" means a strict preference.

    The box is read as float64 numbers; bounds are computed over the smallest float32 box that
    contains each leaf, so they also hold for every float32 state the box rounds to.

    Arguments:
      - `params`: the policy's parameters (e.g. `train_ppo(...).params`).
      - `lower`, `upper`: the state box, 1-D of the state's size (cart-pole: (x, ẋ, θ, θ̇));
        or a `tljax.Box` as `lower` alone.
      - `action`: the claimed action (cart-pole: 1 = push right, 0 = push left).
      - `policy`: `policy(params, state) -> logits` of one state (default `policy_logits`).
      - `method`: bound method, "crown" (default), "alpha-crown" or "ibp".
      - `timeout`: wall-clock budget in seconds for the search, compilation included (about
        10 s on 2 CPU cores the first time a policy architecture is seen); the verdict is
        "unknown" when it runs out.
      - `batch_size`: boxes bounded per compiled call (one compile per size).
      - `seed`: seed of the falsifier (random points and PGD on the margin).

    Returns:
      a `PolicyRegionResult`: `verdict`, `num_boxes`, `min_margin`, the leaf boxes, a
      counterexample state for "refuted", and `check()` to re-verify.

    Raises:
      InvalidBoxError: shapes differ, the box is not 1-D, or an entry is NaN, infinite or has
        lower > upper.
      ShapeMismatchError: the policy cannot be applied to a state of the box's size, or does not
        return one logit vector.
      InputError: `action` is not one of the policy's actions, or a bad `method` / `timeout`.

    Example:
      Training takes about 10 s, so the example is not run by doctest.

      >>> res = train_ppo(jax.random.key(0))  # doctest: +SKIP
      >>> c = certify_policy_region(res.params, [-1, -0.5, 0.05, 0.5], [1, 0.5, 0.2094, 2],
      ...                           action=1)  # doctest: +SKIP
      >>> c.verdict, c.num_boxes, c.min_margin > 0  # doctest: +SKIP
      ('certified', 3, True)
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputError(
            f"certify_policy_region: unknown method {method!r}; choose one of {METHODS}"
        )
    if not (isinstance(timeout, int | float) and timeout > 0 and not math.isnan(timeout)):
        raise InputError(
            f"certify_policy_region: timeout must be a positive number of seconds, got {timeout!r}"
        )
    policy = policy_logits if policy is None else policy
    if not callable(policy):
        raise InputError(
            f"certify_policy_region: policy must be callable, got {type(policy).__name__}"
        )
    lo, hi = _box64(lower, upper)
    n = lo.shape[0]
    n_actions = _num_actions(policy, params, n)
    if (
        isinstance(action, bool)
        or not isinstance(action, int | np.integer)
        or not 0 <= action < n_actions
    ):
        raise InputError(
            f"certify_policy_region: action must be an int in [0, {n_actions}) for this policy, "
            f"got {action!r}"
        )
    action = int(action)

    # Unsafe: for some other action b, logit(b) >= logit(action), i.e. (e_action - e_b) @ y <= 0.
    disjuncts = []
    for b in range(n_actions):
        if b != action:
            c = np.zeros((1, n_actions))
            c[0, action], c[0, b] = 1.0, -1.0
            disjuncts.append((c, np.zeros(1)))
    prop = Property(
        input_boxes=((lo, hi),),
        unsafe=tuple(disjuncts),
        pairing=(tuple(range(len(disjuncts))),),
        n_inputs=n,
        n_outputs=n_actions,
        path=f"<policy takes action {action} on a box>",
    )
    fn = _state_first(policy)
    res = verify(
        fn,
        prop,
        params,
        timeout=timeout,
        method=method,
        batch_size=batch_size,
        seed=seed,
        progress=False,
    )
    empty = np.zeros((0, n), np.float64)
    cex, cex_margin = None, math.nan
    leaves_lo, leaves_hi, margins = empty, empty, np.zeros(0, np.float64)
    domains = res.stats.get("domains", 0)
    if res.verdict == "unsat":
        report = res.check()
        if report.accepted:
            (gl,) = res.certificate.groups
            leaves_lo, leaves_hi = np.asarray(gl.lower), np.asarray(gl.upper)
            margins = gl.group.margins(gl.bounds)
            verdict = "certified"
            detail = (
                f"certified with tljax.bound ({method}, float-sound) on {len(gl)} leaf boxes "
                f"({domains} boxes bounded); leaves cover the box (exact check); min certified "
                f"margin {float(np.min(margins)):.4g}"
            )
        else:  # never expected: a certificate that does not re-check is not a proof
            verdict = "unknown"
            detail = "the search's certificate did not re-check: " + "; ".join(report.reasons)
    elif res.verdict == "sat":
        verdict = "refuted"
        cex = np.asarray(res.counterexample.x, np.float32).reshape(n)
        y = np.asarray(jax.jit(policy)(params, jnp.asarray(cex)), np.float32)
        cex_margin = float(y[action] - np.max(np.delete(y, action)))
        note = res.counterexample.exact_note
        detail = f"refuted: at state {cex.tolist()} the float32 logits are {y.tolist()} " + (
            f"({note})" if note else "(the exact rational logits agree)"
        )
    else:
        verdict = "unknown"
        detail = (
            f"{res.verdict}: neither certified nor refuted within {timeout:g} s "
            f"({domains} boxes bounded)" + (f"; {'; '.join(res.notes)}" if res.notes else "")
        )
    return PolicyRegionResult(
        verdict,
        action,
        lo,
        hi,
        leaves_lo,
        leaves_hi,
        np.asarray(margins, np.float64),
        cex,
        cex_margin,
        time.perf_counter() - t0,
        detail,
        res,
        prop,
    )


# ----------------------------------------------------------------------------------------------
# Region statements as claims.

CARTPOLE_STATE_NAMES = ("x", "x_dot", "theta", "theta_dot")


def check_nonnegative_numeric(
    fn: Callable[[jax.Array], jax.Array],
    lower: Sequence[float],
    upper: Sequence[float],
    *,
    key: jax.Array | None = None,
    grid_points_per_dim: int = 9,
    num_random: int = 100_000,
    names: Sequence[str] | None = None,
) -> Evidence:
    """Numeric evidence for "fn(s) ≥ 0 for all s in [lower, upper]": evaluates `fn` on samples.

    Arguments:
      - `fn`: scalar function of one point (vmapped here).
      - `lower`, `upper`: the box, 1-D.
      - `key`: PRNG key for the random points (default `jax.random.key(0)`).
      - `grid_points_per_dim`, `num_random`: sampling density.
      - `names`: coordinate names for the counterexample.

    Returns:
      `Evidence(holds, detail, counterexample)`; `holds` means "no sampled point violates it" (not a
      proof); the counterexample is the sampled point with the most negative value, as a dict.
    """
    key = jax.random.key(0) if key is None else key
    pts = sample_box(
        key, lower, upper, grid_points_per_dim=grid_points_per_dim, num_random=num_random
    )
    vals = np.asarray(jax.jit(jax.vmap(fn))(pts))
    i = int(np.argmin(vals))
    n_bad = int(np.sum(vals < 0))
    names = names or [f"s{j}" for j in range(pts.shape[1])]
    worst = {n: float(v) for n, v in zip(names, np.asarray(pts[i]), strict=True)}
    detail = (
        f"numeric only: {len(vals)} sampled states ({grid_points_per_dim}^{pts.shape[1]} grid + "
        f"{num_random} "
        f"uniform), min value {vals[i]:.4g}, {n_bad} negative"
    )
    if n_bad:
        return Evidence(False, detail, {**worst, "value": float(vals[i])})
    return Evidence(True, detail + f"; closest to violation at {worst}")


def policy_region_claim(
    params,
    lower: Sequence[float],
    upper: Sequence[float],
    *,
    name: str,
    prefer: int = 1,
    method: str = "certified-bound",
    timeout: float = 120.0,
    **sampling,
) -> Claim:
    """A (not registered) claim: in the state box, the cart-pole policy prefers action `prefer`.

    With `method="certified-bound"` (default) the check is `certify_policy_region`: it holds when
    logit(prefer) > logit(other) is certified at every state of the box (float32 program and real
    network), it fails with a counterexample state when one is confirmed, and it fails without one
    when the `timeout` runs out ("unknown"). With `method="numeric"` the check samples the box
    (`check_nonnegative_numeric`): "prefers" then means logit(prefer) − logit(other) ≥ 0 at every
    sample (a tie has probability zero), evidence but not proof. Run it with `c.check()`, or
    `register(c)` and then `check(name)`.

    Arguments:
      - `params`: actor-critic parameters from `train_ppo`.
      - `lower`, `upper`: the box over (x, ẋ, θ, θ̇).
      - `name`: claim name.
      - `prefer`: 1 (push right) or 0 (push left).
      - `method`: "certified-bound" or "numeric".
      - `timeout`: the certification budget in seconds.
      - `sampling`: passed to `check_nonnegative_numeric` (numeric method only).
    """
    if method not in ("certified-bound", "numeric"):
        raise InputError(
            f"policy_region_claim: method must be 'certified-bound' or 'numeric', got {method!r}"
        )
    if prefer not in (0, 1) or isinstance(prefer, bool):
        raise InputError(f"policy_region_claim: prefer must be 0 or 1, got {prefer!r}")
    if sampling and method != "numeric":
        raise InputError(
            f"policy_region_claim: sampling options {sorted(sampling)} only apply to "
            f"method='numeric'"
        )
    lower, upper = _box64(lower, upper, "policy_region_claim")
    margin = policy_logit_margin_fn(params)
    sign = 1.0 if prefer == 1 else -1.0
    box = ", ".join(
        f"{n} ∈ [{lo:.4g}, {hi:.4g}]"
        for n, lo, hi in zip(CARTPOLE_STATE_NAMES, lower, upper, strict=True)
    )
    action = "push right (+10 N)" if prefer == 1 else "push left (−10 N)"

    def check_numeric() -> Evidence:
        return check_nonnegative_numeric(
            lambda s: sign * margin(s), lower, upper, names=CARTPOLE_STATE_NAMES, **sampling
        )

    def check_certified() -> Evidence:
        res = certify_policy_region(params, lower, upper, action=prefer, timeout=timeout)
        if res.verdict == "refuted":
            cex = {
                n: float(v) for n, v in zip(CARTPOLE_STATE_NAMES, res.counterexample, strict=True)
            }
            return Evidence(False, res.detail, {**cex, "value": res.counterexample_margin})
        return Evidence(res.certified, res.detail)

    return Claim(
        name,
        f"for every cart-pole state with {box}, the policy's preferred action is {action}",
        method,
        check_certified if method == "certified-bound" else check_numeric,
        about="tljax.rl.policy_logit_margin_fn",
        tags=("rl", "ppo", "certified" if method == "certified-bound" else "numeric"),
    )
