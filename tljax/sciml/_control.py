"""Neural controllers and their Lyapunov certificates (Yang et al., ICML 2024), on `tljax.verify`.

`load_closed_loop` rebuilds a shipped closed loop (controller, neural Lyapunov function, explicit
Euler step) in plain `jax.numpy` from its `.npz` weights. `verify_lyapunov` proves the
discrete-time condition on `{x in box minus hole : V(x) <= rho}` by input-splitting branch and
bound, one sub-box of `box minus hole` at a time; `verify_lyapunov_continuous` proves
`grad V(x) . f(x) < 0` on a level-set band, bounding the derivative program itself.

The networks are written for tight bounds, with the same real-valued function as the source:
leaky ReLU as `a x + (1 - a) relu(x)` (one ReLU relaxation instead of a `max` of two linear
terms), the clip as `min(max(v, lo), hi)`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core import InputError
from ..io import Property
from ..verify import verify

__all__ = [
    "ClosedLoop",
    "ContinuousResult",
    "LyapunovResult",
    "SubBoxResult",
    "load_closed_loop",
    "lyapunov_sub_boxes",
    "verify_lyapunov",
    "verify_lyapunov_continuous",
]

SYSTEMS = ("pendulum", "path_tracking")

# Physical constants of the two systems (control/README.md; not stored in the .npz files).
PENDULUM = {"m": 0.15, "l": 0.5, "beta": 0.1, "g": 9.81}
PATH_TRACKING = {"v": 2.0, "L": 1.0, "R": 10.0}

_NET_KEYS = tuple(
    f"{net}_L{i}_{kind}"
    for net in ("controller", "lyapunov_phi")
    for i in range(4)
    for kind in ("weight", "bias")
)
_CONSTANT_KEYS = (
    "lyapunov_R",
    "box_lo",
    "box_hi",
    "hole_lo",
    "hole_hi",
    "rho",
    "kappa",
    "spec_tol",
    "u_lo",
    "u_hi",
    "u_eq",
    "lyapunov_eps",
    "leaky_relu_slope",
    "dt",
)


# --- the closed loop ---------------------------------------------------------------------------


def _relu(x):
    return jnp.maximum(x, 0.0)


def _mlp(layers, x, act):
    """`layers` = [(W (out, in), b (out,)), ...] in PyTorch layout; `act` between layers."""
    h = x
    for k, (w, b) in enumerate(layers):
        h = w @ h + b
        if k < len(layers) - 1:
            h = act(h)
    return h


@dataclasses.dataclass(frozen=True, eq=False)
class ClosedLoop:
    """A neural controller in closed loop with its plant and its neural Lyapunov function.

    All functions take one state `x` of shape `(n,)` (float32) and are plain JAX (traceable,
    jittable, boundable). They are built once, so `tljax.verify` compiles each once.

    Attributes:
      system: "pendulum" or "path_tracking".
      policy: `x -> u` (shape (1,)), `clip(N(x) - N(0) + u*, u_lo, u_hi)`.
      lyapunov: `x -> V(x)` (scalar), `|phi(x) - phi(0)| + ||(eps I + R^T R) x||_1`.
      step: `x -> x+ = x + dt f(x, policy(x))` (explicit Euler).
      spec_outputs: `x -> Y = [(1 - kappa) V(x) - V(x+), V(x), x+_0, ..., x+_{n-1}]`, the output
        vector of the shipped VNN-LIB specs.
      vector_field: `x -> f(x, policy(x))` (continuous time).
      box_lo, box_hi, hole_lo, hole_hi: float64 (n,) corners of the box B and the hole H.
      rho, kappa, tol: level set, decay rate and output tolerance of the spec.
      params: the weights and constants read (numpy), for `with_params`.
      path: the file read (or "").
      form: "difference" or "direct" (see `load_closed_loop`).
    """

    system: str
    policy: Callable
    lyapunov: Callable
    step: Callable
    spec_outputs: Callable
    vector_field: Callable
    box_lo: np.ndarray
    box_hi: np.ndarray
    hole_lo: np.ndarray
    hole_hi: np.ndarray
    rho: float
    kappa: float
    tol: float
    params: dict = dataclasses.field(repr=False)
    path: str = ""
    form: str = "difference"

    @property
    def n_states(self) -> int:
        return int(self.box_lo.shape[0])

    def with_params(self, **updates) -> ClosedLoop:
        """A new closed loop with some arrays of `params` replaced (e.g. a perturbed controller:
        `loop.with_params(controller_L3_weight=-loop.params["controller_L3_weight"])`)."""
        unknown = sorted(set(updates) - set(self.params))
        if unknown:
            raise InputError(
                f"ClosedLoop.with_params: unknown array(s) {unknown}; the closed loop has "
                f"{sorted(self.params)}"
            )
        new = dict(self.params)
        for k, v in updates.items():
            v = np.asarray(v)
            if v.shape != np.shape(self.params[k]):
                raise InputError(
                    f"ClosedLoop.with_params: {k} has shape {v.shape}, expected "
                    f"{np.shape(self.params[k])}"
                )
            new[k] = v
        return _build(self.system, new, self.path, self.form)


def _detect_system(path: str) -> str:
    name = pathlib.Path(path).name.lower()
    if "pendulum" in name:
        return "pendulum"
    if "path_tracking" in name:
        return "path_tracking"
    raise InputError(
        f"load_closed_loop: cannot tell the system from the file name {name!r} (expected "
        "'pendulum' or 'path_tracking' in it); pass system='pendulum' or system='path_tracking'"
    )


def load_closed_loop(
    path: str | os.PathLike, *, system: str | None = None, form: str = "difference"
) -> ClosedLoop:
    """Reads a shipped closed loop (`pendulum_state_feedback.npz`, `path_tracking_...npz`).

    Arguments:
      path: the `.npz` file (layout in `benchmarks/sciml/control/README.md`).
      system: "pendulum" or "path_tracking"; default: from the file name.
      form: how `N(x) - N(0)` and `phi(x) - phi(0)` are computed in float32: "difference"
        (default: propagate differences from the pre-activations at 0, whose rounding error
        scales with |x|, see `_delta_net`) or "direct" (two network evaluations and a
        subtraction, as the source writes it; its worst-case rounding error is too large to
        certify path tracking next to the hole).

    Returns:
      A `ClosedLoop` with float32 JAX functions `policy`, `lyapunov`, `step`, `spec_outputs`,
      `vector_field` and the spec's constants.

    Raises:
      InputError: missing file, unknown system, missing or mis-shaped arrays.

    Example:
      >>> loop = load_closed_loop("control/pendulum_state_feedback.npz")  # doctest: +SKIP
      >>> loop.spec_outputs(jnp.array([0.5, -1.0]))  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(
            f"load_closed_loop: no such file {path!r} (working directory {os.getcwd()!r}); pass "
            "a .npz file from benchmarks/sciml/control"
        )
    if system is None:
        system = _detect_system(path)
    if system not in SYSTEMS:
        raise InputError(f"load_closed_loop: unknown system {system!r}; choose one of {SYSTEMS}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as err:
        raise InputError(f"load_closed_loop: {path!r} is not a readable .npz file ({err})") from err
    missing = [k for k in (*_NET_KEYS, *_CONSTANT_KEYS) if k not in data]
    if missing:
        raise InputError(
            f"load_closed_loop: {path!r} lacks the array(s) {missing}; expected the layout of "
            "benchmarks/sciml/control/README.md"
        )
    params = {k: data[k] for k in (*_NET_KEYS, *_CONSTANT_KEYS)}
    for k in ("ref_x", "ref_out"):
        if k in data:
            params[k] = data[k]
    return _build(system, params, path, form)


def _layers(params, net):
    out = []
    for i in range(4):
        w = np.asarray(params[f"{net}_L{i}_weight"], np.float32)
        b = np.asarray(params[f"{net}_L{i}_bias"], np.float32).reshape(-1)
        if w.ndim != 2 or w.shape[0] != b.shape[0]:
            raise InputError(
                f"load_closed_loop: {net}_L{i}_weight has shape {w.shape} and its bias "
                f"{b.shape}; expected (out, in) and (out,)"
            )
        out.append((jnp.asarray(w), jnp.asarray(b)))
    return out


def _delta_net(layers, slope: float):
    """`x -> N(x) - N(0)` for an MLP with (leaky) ReLU `slope`, in difference form.

    The pre-activations at 0, `c_k`, are computed once in float64 and rounded to float32; then
    `z_k = W_k d_(k-1)` (no bias) and `d_k = act(c_k + z_k) - act(c_k)`, written as
    `slope z + (1 - slope) (relu(c + z) - relu(c))` (see below for the relu difference). Every
    float32 intermediate that reaches the output then scales with `|x|`, not with the network's
    activations (up to 145 in path tracking's phi): the direct `phi(x) - phi(0)` carries a
    worst-case rounding error of ~1.7e-4 near the hole, as large as the spec's margin there. In
    real arithmetic this is `N'(x) - N'(0)` for the same network with each hidden bias moved by at
    most half a float32 ulp of its `c_k` (layer 0 exactly: `c_0` is its bias).
    """
    cs = []
    h = np.zeros(layers[0][0].shape[1], np.float64)
    for w, b in layers[:-1]:
        c = np.asarray(w, np.float64) @ h + np.asarray(b, np.float64)
        h = np.where(c > 0, c, slope * c)
        cs.append(c.astype(np.float32))
    a = np.float32(slope)
    # relu(c + z) - relu(c) = m z + relu(s (z + c)) with m = 1, s = -1 where c >= 0 and m = 0,
    # s = 1 where c < 0: a stable neuron's relu input is then about -|c| (off), so no active
    # relu passes a value of size |c| (float-sound CROWN loses the linear relaxation's
    # cancellations through active relu/max terms of large magnitude). One relu over the whole
    # layer, multiplications by exact 0/1/-1 constants: no slicing (it tripled the compile time).
    consts = [
        (
            jnp.asarray((c >= 0).astype(np.float32)),
            jnp.asarray(np.where(c >= 0, -1.0, 1.0), jnp.float32),
            jnp.asarray(np.where(c >= 0, -c, c)),
        )
        for c in cs
    ]

    def delta(x):
        d = x
        for k, (w, _) in enumerate(layers):
            z = w @ d
            if k == len(layers) - 1:
                return z
            m, sign, sc = consts[k]
            r = m * z + _relu(sign * z + sc)
            d = r if slope == 0 else a * z + (1 - a) * r
        return d

    return delta


def _build(system: str, params: dict, path: str, form: str = "difference") -> ClosedLoop:
    f32 = np.float32
    ctrl = _layers(params, "controller")
    phi = _layers(params, "lyapunov_phi")
    r = np.asarray(params["lyapunov_R"], np.float64)
    n = int(np.asarray(params["box_lo"]).reshape(-1).shape[0])
    if n != 2 or ctrl[0][0].shape[1] != n or phi[0][0].shape[1] != n or r.shape[1] != n:
        raise InputError(
            f"load_closed_loop: the shipped systems have 2 states; got a box of {n}, controller "
            f"input {ctrl[0][0].shape[1]}, phi input {phi[0][0].shape[1]}, R {r.shape}"
        )
    eps = float(params["lyapunov_eps"])
    # eps I + R^T R in float64, rounded once (the source forms it in float32; agreement ~1e-7).
    m_lin = jnp.asarray((eps * np.eye(n) + r.T @ r).astype(f32))
    slope = float(params["leaky_relu_slope"])
    a = f32(slope)
    u_lo = jnp.asarray(np.asarray(params["u_lo"], f32).reshape(-1))
    u_hi = jnp.asarray(np.asarray(params["u_hi"], f32).reshape(-1))
    u_eq = jnp.asarray(np.asarray(params["u_eq"], f32).reshape(-1))
    dt = f32(params["dt"])
    kappa = float(params["kappa"])
    zero = np.zeros(n, f32)

    if form == "difference":
        n_delta = _delta_net(ctrl, 0.0)
        phi_delta = _delta_net(phi, slope)
    elif form == "direct":

        def leaky(h):
            return a * h + (1 - a) * _relu(h)

        def n_net(x):
            return _mlp(ctrl, x, _relu)

        def phi_net(x):
            return _mlp(phi, x, leaky)

        n0 = jnp.asarray(np.asarray(jax.jit(n_net)(zero), f32))
        phi0 = jnp.asarray(np.asarray(jax.jit(phi_net)(zero), f32))

        def n_delta(x):
            return n_net(x) - n0

        def phi_delta(x):
            return phi_net(x) - phi0

    else:
        raise InputError(
            f"load_closed_loop: form={form!r}; choose 'difference' (default) or 'direct'"
        )

    def policy(x):
        # clip(v, lo, hi) as v + relu(lo - v) - relu(. - hi): both relus are off inside the
        # limits (tighter float-sound bounds than min/max there, see `_delta_net`)
        v = n_delta(x) + u_eq
        v = v + _relu(u_lo - v)
        return v - _relu(v - u_hi)

    def lyapunov(x):
        return jnp.abs(phi_delta(x))[0] + jnp.sum(jnp.abs(m_lin @ x))

    if system == "pendulum":
        c = PENDULUM
        ml2 = c["m"] * c["l"] ** 2
        k_damp, k_grav, k_u = f32(c["beta"] / ml2), f32(c["g"] / c["l"]), f32(1.0 / ml2)

        def dynamics(x, u):
            return jnp.stack([x[1], -k_damp * x[1] + k_grav * jnp.sin(x[0]) + k_u * u[0]])

    else:
        c = PATH_TRACKING
        v, k_u, r_v = f32(c["v"]), f32(c["v"] / c["L"]), f32(c["R"] / c["v"])

        def dynamics(x, u):
            turn = jnp.cos(x[1]) / (r_v - jnp.sin(x[1]))
            return jnp.stack([v * jnp.sin(x[1]), k_u * u[0] - turn])

    def vector_field(x):
        return dynamics(x, policy(x))

    def step(x):
        return x + dt * vector_field(x)

    one_minus_kappa = f32(1.0 - kappa)

    def spec_outputs(x):
        x_next = step(x)
        v_now = lyapunov(x)
        return jnp.concatenate(
            [jnp.stack([one_minus_kappa * v_now - lyapunov(x_next), v_now]), x_next]
        )

    for fn, name in (
        (policy, "policy"),
        (lyapunov, "lyapunov"),
        (step, "step"),
        (spec_outputs, "spec_outputs"),
        (vector_field, "vector_field"),
    ):
        fn.__name__ = f"{system}_{name}"

    def vec(k):
        return np.asarray(params[k], np.float64).reshape(-1)

    return ClosedLoop(
        system=system,
        policy=policy,
        lyapunov=lyapunov,
        step=step,
        spec_outputs=spec_outputs,
        vector_field=vector_field,
        box_lo=vec("box_lo"),
        box_hi=vec("box_hi"),
        hole_lo=vec("hole_lo"),
        hole_hi=vec("hole_hi"),
        rho=float(params["rho"]),
        kappa=kappa,
        tol=float(params["spec_tol"]),
        params=params,
        path=path,
        form=form,
    )


# --- discrete-time Lyapunov condition ----------------------------------------------------------


def lyapunov_sub_boxes(box_lo, box_hi, hole_lo, hole_hi) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 2n boxes whose union is `box minus the open hole` (control/README.md's split).

    Box 2i keeps `x_i` in `[hole_hi_i, box_hi_i]`, box 2i+1 in `[box_lo_i, hole_lo_i]`; the
    coordinates before i lie in the hole's range, those after it span the box.
    """
    lo, hi = (np.asarray(v, np.float64).reshape(-1) for v in (box_lo, box_hi))
    hlo, hhi = (np.asarray(v, np.float64).reshape(-1) for v in (hole_lo, hole_hi))
    if not (lo.shape == hi.shape == hlo.shape == hhi.shape):
        raise InputError(
            f"lyapunov_sub_boxes: box ({lo.shape}, {hi.shape}) and hole ({hlo.shape}, "
            f"{hhi.shape}) corners must have one shape (n,)"
        )
    bad = ~(np.isfinite(lo) & np.isfinite(hi) & (lo <= hlo) & (hlo <= hhi) & (hhi <= hi))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"lyapunov_sub_boxes: coordinate {i} needs finite box_lo <= hole_lo <= hole_hi <= "
            f"box_hi, got box [{lo[i]}, {hi[i]}] and hole [{hlo[i]}, {hhi[i]}]"
        )
    out = []
    for i in range(lo.shape[0]):
        for side in (0, 1):
            blo, bhi = lo.copy(), hi.copy()
            blo[:i], bhi[:i] = hlo[:i], hhi[:i]
            if side == 0:
                blo[i] = hhi[i]
            else:
                bhi[i] = hlo[i]
            out.append((blo, bhi))
    return out


@dataclasses.dataclass(frozen=True)
class SubBoxResult:
    """One sub-box of `box minus hole` and the `tljax.verify` result on it.

    Attributes:
      index: k in the README's numbering.
      lower, upper: float64 corners of the sub-box.
      verdict: "unsat" (the conditions hold on it), "sat", "unknown", "timeout" or "skipped"
        (not run: the budget was spent or an earlier sub-box was sat).
      result: the `tljax.verify.Result` (None when skipped).
    """

    index: int
    lower: np.ndarray
    upper: np.ndarray
    verdict: str
    result: Any = None

    @property
    def leaves(self) -> int:
        return int(self.result.stats.get("leaves", 0)) if self.result is not None else 0

    @property
    def domains(self) -> int:
        return int(self.result.stats.get("domains", 0)) if self.result is not None else 0

    @property
    def time(self) -> float:
        return float(self.result.time) if self.result is not None else 0.0


_OVERALL = ("sat", "timeout", "unknown", "skipped")


def _overall(verdicts) -> str:
    if all(v == "unsat" for v in verdicts):
        return "unsat"
    for v in _OVERALL:
        if v in verdicts:
            return "unknown" if v == "skipped" else v
    return "unknown"


@dataclasses.dataclass(frozen=True)
class LyapunovResult:
    """Outcome of `verify_lyapunov`.

    Attributes:
      verdict: "unsat" when every sub-box is unsat (the conditions are proved), "sat" with a
        `counterexample`, else "timeout" or "unknown".
      sub_boxes: one `SubBoxResult` per sub-box.
      time: wall time in seconds (compilation included).
      counterexample: the confirmed `tljax.verify.Counterexample` of the first sat sub-box: `x`
        (float32 state), `y` the float32 outputs `Y`, `y_exact` the exact ones.
      violated: which condition the counterexample breaks, in words ("" when none).
    """

    verdict: str
    sub_boxes: tuple[SubBoxResult, ...]
    time: float
    counterexample: Any = None
    violated: str = ""

    @property
    def leaves(self) -> int:
        return sum(s.leaves for s in self.sub_boxes)

    @property
    def domains(self) -> int:
        return sum(s.domains for s in self.sub_boxes)

    def leaf_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """The certified leaf boxes of the unsat sub-boxes, float64 `(lower (N, n), upper)`."""
        los, his = [], []
        for s in self.sub_boxes:
            cert = None if s.result is None else s.result.certificate
            for g in () if cert is None else cert.groups:
                if len(g):
                    los.append(g.lower)
                    his.append(g.upper)
        if not los:
            return np.zeros((0, 0)), np.zeros((0, 0))
        return np.concatenate(los), np.concatenate(his)

    def check(self):
        """Re-checks every sub-box's result (`tljax.verify.Result.check`: exact leaf coverage and
        margins for unsat, float32 and exact re-execution for sat). Returns a list of
        `CheckReport`s, one per run sub-box."""
        return [s.result.check() for s in self.sub_boxes if s.result is not None]

    def __str__(self) -> str:
        parts = ", ".join(f"{s.index}: {s.verdict}" for s in self.sub_boxes)
        return f"{self.verdict} ({self.time:.1f}s, {self.leaves} leaves; {parts})"


_SPEC_FNS: dict = {}


def _discrete_spec_fn(lyapunov, step, kappa: float):
    """`x -> [(1 - kappa) V(x) - V(x+), V(x), x+]`, one object per (V, step, kappa) so that
    `tljax.verify` compiles it once."""
    key = (id(lyapunov), id(step), float(kappa))
    hit = _SPEC_FNS.get(key)
    if hit is not None and hit[0] is lyapunov and hit[1] is step:
        return hit[2]
    c = np.float32(1.0 - kappa)

    def spec_outputs(x):
        x_next = jnp.reshape(step(x), (-1,))
        v_now = jnp.reshape(lyapunov(x), ())
        v_next = jnp.reshape(lyapunov(x_next), ())
        return jnp.concatenate([jnp.stack([c * v_now - v_next, v_now]), x_next])

    while len(_SPEC_FNS) >= 16:
        _SPEC_FNS.pop(next(iter(_SPEC_FNS)))
    _SPEC_FNS[key] = (lyapunov, step, spec_outputs)
    return spec_outputs


def _unsafe_discrete(box_lo, box_hi, rho: float, tol: float):
    """The spec's unsafe disjuncts over `Y` (each with `Y_1 <= rho`): `Y_0 <= -tol`, and each
    `x+_i` below `box_lo_i - tol` or above `box_hi_i + tol`."""
    n = box_lo.shape[0]
    m = n + 2
    level = np.eye(m)[1]
    out = [(np.stack([level, np.eye(m)[0]]), np.array([rho, -tol]))]
    for i in range(n):
        e = np.eye(m)[2 + i]
        out.append((np.stack([level, e]), np.array([rho, box_lo[i] - tol])))
        out.append((np.stack([level, -e]), np.array([rho, -(box_hi[i] + tol)])))
    return [(c.astype(np.float64), d.astype(np.float64)) for c, d in out]


def _describe_violation(y: np.ndarray, rho, tol, box_lo, box_hi) -> str:
    y = np.asarray(y, np.float64).reshape(-1)
    what = []
    if y[0] <= -tol:
        what.append(f"V(x+) - (1 - kappa) V(x) = {-y[0]:.6g} > tol")
    for i in range(box_lo.shape[0]):
        if y[2 + i] <= box_lo[i] - tol or y[2 + i] >= box_hi[i] + tol:
            what.append(f"x+_{i} = {y[2 + i]:.6g} leaves [{box_lo[i]}, {box_hi[i]}]")
    return f"V(x) = {y[1]:.6g} <= rho = {rho}, and " + "; ".join(what) if what else ""


def _check_number(name, value, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InputError(f"verify_lyapunov: {name} must be a number, got {type(value).__name__}")
    if not np.isfinite(value) or (positive and value <= 0):
        raise InputError(
            f"verify_lyapunov: {name} must be finite{' and > 0' if positive else ''}, got {value!r}"
        )
    return float(value)


def verify_lyapunov(
    system,
    step: Callable | None = None,
    *,
    box: tuple | None = None,
    hole: tuple | None = None,
    rho: float | None = None,
    kappa: float | None = None,
    tol: float | None = None,
    timeout: float | None = None,
    certificates: bool | int = False,
    sub_boxes: tuple[int, ...] | None = None,
    method: str = "crown",
    branching: str = "widest",
    batch_size: int = 256,
    stop_on_sat: bool = True,
    seed: int = 0,
) -> LyapunovResult:
    """Proves the discrete-time Lyapunov conditions of a closed loop, or refutes them.

    On `{x in box minus hole : V(x) <= rho}`: `V(x+) - V(x) <= -kappa V(x) + tol` and `x+` in
    the box (to `tol`), with `x+ = step(x)`. The region is covered by the 2n sub-boxes of
    `lyapunov_sub_boxes`, each verified by `tljax.verify` (input-splitting branch and bound,
    float-sound bounds: an unsat verdict holds for the float32 program as it runs and for the
    real-valued one). A counterexample is re-executed in float32 and in exact arithmetic
    before it is reported.

    Arguments:
      system: a `ClosedLoop` (its `lyapunov`, `step` and spec constants are used), or the
        Lyapunov function `V(x) -> scalar` (then `step`, `box`, `hole`, `rho`, `kappa` are
        needed).
      step: `x -> x+` (shape (n,)); only with a function `system`.
      box, hole: `(lower, upper)` pairs of (n,) arrays, hole inside box (a `ClosedLoop`'s by
        default).
      rho, kappa, tol: level set, decay rate and tolerance (a `ClosedLoop`'s by default; tol
        defaults to 1e-6 otherwise).
      timeout: seconds for all sub-boxes together (None: no limit).
      certificates: attach exactly checkable bound certificates to the leaves (see
        `tljax.verify.verify`).
      sub_boxes: which sub-boxes to verify (default: all 2n).
      method, branching, batch_size, seed: passed to `tljax.verify.verify`; "widest" branching
        suits these 2-input programs (it needs no ReLU taps and compiles faster).
      stop_on_sat: skip the remaining sub-boxes once one is sat.

    Returns:
      A `LyapunovResult` (verdict per sub-box and overall, leaves, domains, wall time,
      counterexample).

    Raises:
      InputError: missing or inconsistent arguments (what is missing and how to pass it).

    Example:
      >>> loop = load_closed_loop("pendulum_state_feedback.npz")  # doctest: +SKIP
      >>> res = verify_lyapunov(loop, sub_boxes=(0,), timeout=300)  # doctest: +SKIP
      >>> res.verdict, res.leaves  # doctest: +SKIP
    """

    t0 = time.monotonic()
    if isinstance(system, ClosedLoop):
        if step is not None:
            raise InputError(
                "verify_lyapunov: pass either a ClosedLoop or (V, step), not a ClosedLoop and a "
                "step"
            )
        lyap, step_fn = system.lyapunov, system.step
        box = box if box is not None else (system.box_lo, system.box_hi)
        hole = hole if hole is not None else (system.hole_lo, system.hole_hi)
        rho = system.rho if rho is None else rho
        kappa = system.kappa if kappa is None else kappa
        tol = system.tol if tol is None else tol
    else:
        if not callable(system) or not callable(step):
            raise InputError(
                "verify_lyapunov: pass a ClosedLoop, or the Lyapunov function V and step as "
                f"callables (got {type(system).__name__} and {type(step).__name__})"
            )
        given = (("box", box), ("hole", hole), ("rho", rho), ("kappa", kappa))
        missing = [name for name, v in given if v is None]
        if missing:
            raise InputError(
                f"verify_lyapunov: with functions V and step, also pass {missing} (e.g. "
                "box=(lo, hi), hole=(-h, h), rho=1.0, kappa=0.01)"
            )
        lyap, step_fn = system, step
        tol = 1e-6 if tol is None else tol
    rho = _check_number("rho", rho)
    kappa = _check_number("kappa", kappa)
    tol = _check_number("tol", tol)
    if tol < 0:
        raise InputError(f"verify_lyapunov: tol must be >= 0, got {tol!r}")
    if timeout is not None:
        _check_number("timeout", timeout, positive=True)
    boxes = lyapunov_sub_boxes(box[0], box[1], hole[0], hole[1])
    box_lo = np.asarray(box[0], np.float64).reshape(-1)
    box_hi = np.asarray(box[1], np.float64).reshape(-1)
    n = box_lo.shape[0]
    if isinstance(system, ClosedLoop) and kappa == system.kappa:
        fn = system.spec_outputs
    else:
        fn = _discrete_spec_fn(lyap, step_fn, kappa)
    try:
        y = jax.eval_shape(fn, jax.ShapeDtypeStruct((n,), jnp.float32))
    except Exception as err:  # re-raised with what was tried
        raise InputError(
            f"verify_lyapunov: evaluating V and step on a state of shape ({n},) (the box's) "
            f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; V "
            "must return a scalar and step an (n,) array"
        ) from err
    if y.shape != (n + 2,):
        raise InputError(
            f"verify_lyapunov: step must return a state of shape ({n},) and V a scalar; the "
            f"spec outputs have shape {y.shape}"
        )
    chosen = tuple(range(len(boxes))) if sub_boxes is None else tuple(sub_boxes)
    bad = [k for k in chosen if not (isinstance(k, int) and 0 <= k < len(boxes))]
    if bad:
        raise InputError(
            f"verify_lyapunov: sub_boxes {bad} out of range; there are {len(boxes)} (0..."
            f"{len(boxes) - 1})"
        )
    unsafe = _unsafe_discrete(box_lo, box_hi, rho, tol)
    deadline = None if timeout is None else t0 + timeout
    results: list[SubBoxResult] = []
    cex, violated = None, ""
    for k in chosen:
        lo, hi = boxes[k]
        left = None if deadline is None else deadline - time.monotonic()
        if (left is not None and left <= 0) or (cex is not None and stop_on_sat):
            results.append(SubBoxResult(k, lo, hi, "skipped"))
            continue
        prop = Property(
            input_boxes=((lo, hi),),
            unsafe=tuple(unsafe),
            pairing=(tuple(range(len(unsafe))),),
            n_inputs=n,
            n_outputs=n + 2,
            path=f"<verify_lyapunov sub-box {k}>",
        )
        res = verify(
            fn,
            prop,
            timeout=left,
            method=method,
            branching=branching,
            batch_size=batch_size,
            certificates=certificates,
            seed=seed,
        )
        results.append(SubBoxResult(k, lo, hi, res.verdict, res))
        if res.verdict == "sat" and cex is None:
            cex = res.counterexample
            violated = _describe_violation(cex.y, rho, tol, box_lo, box_hi)
    verdict = _overall([r.verdict for r in results])
    return LyapunovResult(verdict, tuple(results), time.monotonic() - t0, cex, violated)


# --- continuous-time Lyapunov condition --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContinuousResult:
    """Outcome of `verify_lyapunov_continuous`.

    Attributes:
      verdict: "unsat" (Vdot < -margin on the band: proved), "sat" (a confirmed
        counterexample), "unknown" or "timeout".
      time: wall time in seconds (compilation included).
      counterexample: the `tljax.verify.Counterexample` (`x`; `y` = float32 `[Vdot(x), V(x)]`,
        `y_exact` the exact ones), or None.
      result: the underlying `tljax.verify.Result`.
    """

    verdict: str
    time: float
    counterexample: Any = None
    result: Any = None

    @property
    def leaves(self) -> int:
        return int(self.result.stats.get("leaves", 0))

    @property
    def domains(self) -> int:
        return int(self.result.stats.get("domains", 0))

    def check(self):
        """`tljax.verify.Result.check` of the underlying result."""
        return self.result.check()

    def __str__(self) -> str:
        extra = ""
        if self.counterexample is not None:
            x = np.asarray(self.counterexample.x).tolist()
            vdot, v = np.asarray(self.counterexample.y, np.float64)[:2]
            extra = f", x = {x}: Vdot = {vdot:.6g}, V = {v:.6g}"
        return f"{self.verdict} ({self.time:.1f}s, {self.leaves} leaves{extra})"


def _continuous_spec_fn(lyapunov, field):
    """`x -> [grad V(x) . f(x), V(x)]`: the derivative program `tljax.verify` bounds."""
    key = ("ct", id(lyapunov), id(field))
    hit = _SPEC_FNS.get(key)
    if hit is not None and hit[0] is lyapunov and hit[1] is field:
        return hit[2]

    def scalar_v(x):
        return jnp.reshape(lyapunov(x), ())

    grad_v = jax.grad(scalar_v)

    def vdot_and_v(x):
        xdot = jnp.reshape(field(x), (-1,))
        return jnp.stack([jnp.dot(grad_v(x), xdot), scalar_v(x)])

    while len(_SPEC_FNS) >= 16:
        _SPEC_FNS.pop(next(iter(_SPEC_FNS)))
    _SPEC_FNS[key] = (lyapunov, field, vdot_and_v)
    return vdot_and_v


def verify_lyapunov_continuous(
    lyapunov: Callable,
    field: Callable,
    box: tuple,
    c1: float,
    c2: float,
    *,
    margin: float = 0.0,
    timeout: float | None = None,
    certificates: bool | int = False,
    method: str = "crown",
    branching: str = "widest",
    batch_size: int = 256,
    seed: int = 0,
) -> ContinuousResult:
    """Proves `Vdot(x) = grad V(x) . f(x) < -margin` on the band `{x in box : c1 <= V(x) <= c2}`.

    The program handed to `tljax.verify` is `x -> [jax.grad(V)(x) . f(x), V(x)]`: the derivative
    is bounded as a program (its jaxpr holds V's backward pass), not estimated. The unsafe set is
    `{Vdot >= -margin, c1 <= V <= c2}`; an unsat verdict proves the strict decrease on the band
    for the float32 program and the real-valued one. With `c1 > 0` the band excludes the
    equilibrium, where Vdot = 0.

    Arguments:
      lyapunov: `V(x) -> scalar`, differentiable almost everywhere (`jax.grad` must trace it).
      field: the closed-loop vector field `x -> xdot`, shape (n,).
      box: `(lower, upper)` (n,) arrays.
      c1, c2: the band's levels, `c1 <= c2`.
      margin: decrease to prove (0: strict decrease).
      timeout, certificates, method, branching, batch_size, seed: see `tljax.verify.verify`.

    Returns:
      A `ContinuousResult`.

    Raises:
      InputError: bad levels, box, or functions of the wrong shape.

    Example:
      >>> res = verify_lyapunov_continuous(lambda x: x @ x, lambda x: -x,
      ...                                  (-jnp.ones(2), jnp.ones(2)), 0.01, 1.0)  # doctest: +SKIP
      >>> res.verdict  # doctest: +SKIP
      'unsat'
    """

    t0 = time.monotonic()
    if not callable(lyapunov) or not callable(field):
        raise InputError(
            "verify_lyapunov_continuous: V and f must be callables of the state, got "
            f"{type(lyapunov).__name__} and {type(field).__name__}"
        )
    c1 = _check_number("c1", c1)
    c2 = _check_number("c2", c2)
    margin = _check_number("margin", margin)
    if c1 > c2:
        raise InputError(f"verify_lyapunov_continuous: the band needs c1 <= c2, got {c1} > {c2}")
    if timeout is not None:
        _check_number("timeout", timeout, positive=True)
    try:
        lo, hi = (np.asarray(v, np.float64).reshape(-1) for v in box)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"verify_lyapunov_continuous: box must be a (lower, upper) pair of arrays ({err})"
        ) from err
    if lo.shape != hi.shape or not np.all(np.isfinite(lo) & np.isfinite(hi) & (lo <= hi)):
        raise InputError(
            f"verify_lyapunov_continuous: box needs finite lower <= upper of one shape, got "
            f"{lo.tolist()} and {hi.tolist()}"
        )
    n = lo.shape[0]
    fn = _continuous_spec_fn(lyapunov, field)
    try:
        jax.eval_shape(fn, jax.ShapeDtypeStruct((n,), jnp.float32))
    except Exception as err:  # re-raised with what was tried
        raise InputError(
            f"verify_lyapunov_continuous: grad V(x) . f(x) on a state of shape ({n},) failed: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; V must "
            "return a scalar and f an (n,) array"
        ) from err
    # unsafe: -Vdot <= margin, -V <= -c1, V <= c2
    c = np.array([[-1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    d = np.array([margin, -c1, c2])
    prop = Property(
        input_boxes=((lo, hi),),
        unsafe=((c, d),),
        pairing=((0,),),
        n_inputs=n,
        n_outputs=2,
        path="<verify_lyapunov_continuous>",
    )
    res = verify(
        fn,
        prop,
        timeout=timeout,
        method=method,
        branching=branching,
        batch_size=batch_size,
        certificates=certificates,
        seed=seed,
    )
    return ContinuousResult(res.verdict, time.monotonic() - t0, res.counterexample, res)
