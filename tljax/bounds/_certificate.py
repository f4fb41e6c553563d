"""Bound certificates: what a bound computation claims, and an exact-arithmetic checker for it.

A `Certificate` (from `tljax.bound(..., certificate=True)`) holds, as float64 numbers (dyadic
rationals, stored exactly by `tljax.io.save_json`):

- the input box and the claimed output bounds (per output element, or per row of `spec`);
- one or more *passes*; each pass claims an interval for the input of every relaxed equation
  (and for every output node) and the linear relaxation used for each ReLU
  (``a_l x + b_l <= relu(x) <= a_u x + b_u`` on the claimed input interval), plus for
  alpha-CROWN the per-row lower slopes used in each back-substitution.

`check(cert, fn, *args)` re-records the program from `fn` and re-derives every claim in exact
rational arithmetic (python-flint `fmpq` / `fmpq_mat`), in tape order:

1. each claimed input interval of a relaxed equation is implied by the box and the *earlier*
   (already checked) claims: exact interval propagation, and where that is not enough, exact
   CROWN back-substitution through the affine equations and the earlier relaxations;
2. each relaxation is valid on its claimed interval (exactly: the lines are checked at the
   interval ends and at the kink of the ReLU, which is enough for piecewise-linear convex f);
3. the claimed final bounds follow in the same way (the best pass counts per row).

Passes are checked in order, and the node bounds a pass establishes (its derived intervals, or
its checked claims where tighter) are available to every later pass: the later pass's derived
interval of a node is intersected with them. They hold on the whole domain, so this is sound.

ReLU-split domains (branch and bound). A certificate may carry `relu_splits`: per ReLU equation
(tape order, the numbering of `bound(..., relu_splits=)`) an array s over its input with +1
(active), -1 (inactive) or 0 (free). Every claim is then about the *leaf domain*

    D = {x in box : s_i * z_i(x) >= 0 for every split neuron i},

z_i(x) being the input of the ReLU as the (float) program computes it. The checker re-derives
claims for D as follows; each step is valid for every x in D:

- interval of a split neuron's input: the derived interval (and the earlier passes' bounds)
  intersected with [0, inf) (active) or (-inf, 0] (inactive), since s_i z_i(x) >= 0 on D. Where
  that intersection is empty, D is empty and every claim holds: the certificate is accepted with
  the reason "empty domain" (the producer then claims +-float64 max);
- relaxations are checked on the claimed interval intersected with the split's half-line (an
  active neuron may be relaxed by the identity relu(z) = z, an inactive one by 0);
- split multipliers (beta-CROWN): a pass may carry, per start of a back-substitution and ReLU
  equation, `betas` (rows, *shape) >= 0 (negative entries are rejected; the producer records them
  as `_Pass.backward` uses them, max(beta, 0)). For x in D and beta >= 0,
  c·f(x) >= c·f(x) - sum_i beta_i s_i z_i(x), because every term s_i z_i(x) is >= 0; the
  back-substitution therefore adds -beta_i s_i to the multiplier of z_i when it reaches the ReLU
  and carries it back through z_i's producers like any other multiplier (including the float
  rounding allowances of the affine equations that compute z_i). Entries where s_i = 0 (and
  multipliers of ReLUs without splits) contribute nothing.

So an accepted split certificate proves the claim on D only; that the leaves of a search cover
the box (D's of both signs of each split) is checked separately (`tljax.verify.check_cover`).

Kernel contracts: a program with `tljax.kernel` equations is bounded through the kernels'
reference jaxprs; the certificate's `kernel_contracts` names the contracts (implementation
within tolerance of the reference) on which transferring the claim to the compiled program rests,
and `check` repeats them in its reason ("rests on kernel contracts: ...").

Scope of the checker (honest): ReLU networks whose tape has only affine equations (dot_general,
conv, add/sub/neg, mul/div by constants, reductions by sum, structural ops) and ReLU (max(x, 0),
also max(a, b) / min / abs-free rewrites that yield ReLUs). Smooth nonlinearities (tanh, exp,
logistic, ...), products of two bounded values and "concretize" equations are rejected with
"unsupported relaxation kind". The box must be a single array.

What is checked, for a float-sound certificate, is the claim for the *float program* as the error
model of `_float_model` describes it: every affine equation's result is the exact operation on its
(float) operands plus an error of at most `rel(n)·(|L|·max|x| + |f0|) + (n+1)·η` (n its number of
summed terms; any summation order, FMA, flush-to-zero), ReLU exact. The checker re-derives these
allowances in exact rationals from the certified intervals of the operands (`rel` and η from the
certificate's `program_model`) and carries them through both the interval sweep and every
back-substitution, so a claim valid for the real network but not for the float program (the
known floating-point attack) is rejected. A certificate with `float_sound=False` is checked for
the real-valued network only.

The linear part of each affine equation is materialised exactly as a matrix by applying the
equation's JVP to unit vectors: every entry is a single product `1 * w` plus exact zeros, hence
exact (division by a constant is special-cased as an exact reciprocal). Weights that are
subnormal would be flushed to zero by XLA:CPU here.
"""

from __future__ import annotations

import dataclasses
import time
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flint import fmpq, fmpq_mat
from jax import lax

from ..core._graph import Graph, trace
from ._relax import Options
from ._tape import Node, TapeEqn, apply_affine, record_graph, terms

FORMAT = "tljax-certificate-1"
_FLOAT = "float program re-derived exactly with the rounding allowances of {}"
_REAL = "real-valued semantics re-derived exactly (certificate not float-sound)"


# ----------------------------------------------------------------------------------------------
# The certificate.


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A checkable bound claim (see the module docstring).

    Attributes:
      method: "ibp", "crown" or "alpha-crown".
      float_sound: whether the claim was produced with float-sound (outward) rounding (always
        True for produced certificates; `requested_float_sound` is what `bound` was asked for).
      requested_float_sound: the `float_sound` argument of `bound`.
      jax_version: the jax version that produced it.
      program_model: the float program's rounding model (dict: u_out, u_acc, eta, name).
      box: list (one per box leaf) of (lower, upper) float64 arrays.
      box_dtypes: dtype names of the box leaves.
      spec: the spec matrix (float64) or None.
      lower, upper: claimed bounds, a list with one float64 array per output (with `spec`, one
        array of shape (m,)).
      passes: list of dicts {"nodes": {id: (lo, hi)}, "relax": {eqn: (a_l, b_l, a_u, b_u)},
        "alphas": {"start:eqn": array (rows, *shape)}, "betas": {"start:eqn": array (rows,
        *shape)}}; "start" is a node id, "out" (the first output) or "outK" (the K-th).
      tape: signature of the recorded program: list of (kind, name, out shape).
      relu_splits: None, or per ReLU equation (tape order, the layout of `bound(...,
        relu_splits=)`) an int8 array over its input (+1 active, -1 inactive, 0 free) or None:
        every claim is then about the leaf domain D = {x in box : s*z(x) >= 0 per split neuron}.
      kernel_contracts: the `tljax.kernel` contracts the claim rests on (plain data: per kernel
        its name, tolerances, implementations and evidence); empty without kernels.
    """

    method: str
    float_sound: bool
    requested_float_sound: bool
    jax_version: str
    program_model: dict
    box: list
    box_dtypes: list
    spec: Any
    lower: list
    upper: list
    passes: list
    tape: list
    format: str = FORMAT
    relu_splits: list | None = None
    kernel_contracts: list = dataclasses.field(default_factory=list)

    def to_json(self, path) -> None:
        """Writes the certificate with every float stored exactly (hex floats)."""
        from ..io import save_json

        save_json(dataclasses.asdict(self), path)

    @classmethod
    def from_json(cls, path) -> Certificate:
        from ..io import load_json

        d = load_json(path)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Outcome of `check`: `accepted`, a `reason` (precise on rejection) and the time taken."""

    accepted: bool
    reason: str
    seconds: float

    def __bool__(self) -> bool:
        return self.accepted


def _f64(x) -> np.ndarray:
    return np.array(jax.device_get(x), dtype=np.float64)


def _signature(tape) -> list:
    sig = []
    for e in tape.eqns:
        name = e.fn or (e.prim.name if e.prim is not None else "")
        sig.append([e.kind, name, list(e.out.shape)])
    return sig


def _key_str(key) -> str:
    """String form of a backward pass's start key: a node id, "out" (first output) or "outK"."""
    if isinstance(key, tuple):  # ("out", k): the k-th output (`_crown._out_key`)
        return f"out{key[1]}"
    return str(key)


def _pass_record(tape, p, alphas=None, betas=None) -> dict:
    nodes, relax = {}, {}
    for i, e in enumerate(tape.eqns):
        if e.kind in ("unary", "mul", "concretize"):
            for n in e.node_inputs:
                lo, hi = p.bounds[n.id]
                nodes[str(n.id)] = (_f64(lo), _f64(hi))
        if i in p.relax:
            r = p.relax[i]
            if e.kind == "unary":
                relax[str(i)] = tuple(_f64(jnp.broadcast_to(v, e.out.shape)) for v in r)
            else:  # mul: McCormick planes (recorded; the checker rejects them)
                relax[str(i)] = tuple(_f64(v) for pl in r for v in pl)
    for o in tape.outputs:
        if isinstance(o, Node):
            lo, hi = p.bounds[o.id]
            nodes[str(o.id)] = (_f64(lo), _f64(hi))
    # as `_Pass.backward` uses them: slopes clipped to [0, 1], multipliers to >= 0
    al = {f"{_key_str(k)}:{i}": _f64(jnp.clip(v, 0.0, 1.0)) for (k, i), v in (alphas or {}).items()}
    be = {f"{_key_str(k)}:{i}": _f64(jnp.maximum(v, 0.0)) for (k, i), v in (betas or {}).items()}
    return {"nodes": nodes, "relax": relax, "alphas": al, "betas": be}


def _alpha_pass(tape, in_bounds, opts, spec, plan, iters, lr, splits=None):
    """alpha-CROWN (`_crown._alpha_crown`): the pass at its final slopes, the slopes and the
    bounds of that pass (None when there is nothing to optimise)."""
    from ._crown import _alpha_crown, _finish, _Pass

    state: dict = {}
    _alpha_crown(tape, in_bounds, opts, spec, plan, iters, lr, splits, record=state)
    a = state.get("alphas")
    if not a:
        return None
    p = _Pass(tape, in_bounds, opts)
    p.propagate("crown", alphas=a, plan=plan, splits=splits)
    return p, a, _finish(p, "crown", spec, alphas=a)


@dataclasses.dataclass(frozen=True)
class SplitParams:
    """beta-CROWN parameters of one ReLU-split domain, for `bound(..., relu_splits=, split_params=)`
    (the bounds of a `tljax.verify` leaf reproduced from its witness).

    The domain's ReLU input bounds are alpha-CROWN bounds over `root_box` without splits
    (`_crown.root_relu_bounds`, `root_iters` Adam steps of `root_lr`; the per-row best slopes are
    recorded so the checker can re-derive them), clipped by the splits; the output bound is
    `_crown.split_bound` at the slopes `alpha` and multipliers `beta` (optimised further for
    `iters` steps of `lr`).

    Attributes:
      alpha, beta: per ReLU (the layout of `relu_splits`), arrays (m, *shape) over the m rows of the
        output (or of `spec`): lower slopes (NaN: CROWN's choice) and multipliers (>= 0); None:
        CROWN's slopes and zero multipliers.
      root_box: the box the ReLU input bounds are computed over (must contain the box; None: the
        box itself).
    """

    alpha: Any = None
    beta: Any = None
    root_box: Any = None
    iters: int = 0
    lr: float = 0.1
    root_iters: int = 20
    root_lr: float = 0.1


def _split_passes(tape, in_bounds, opts, spec, splits, params: SplitParams):
    """The two passes of a beta-CROWN split domain: returns (passes, outs, empty).

    Pass 0: alpha-CROWN bounds of every ReLU input over the root box (no splits; valid over the
    domain, which lies inside). Pass 1: the domain's pass (`split_bound` with pass 0's ReLU input
    bounds, the domain box and the splits), whose output rows carry `alpha` and `beta`.
    """
    from ._crown import _finish, _Pass, refine_plan, relu_eqns, root_relu_bounds, split_bound

    outs = [o for o in tape.outputs if isinstance(o, Node)]
    splits = splits if splits is not None else [None] * len(relu_eqns(tape))
    if len(tape.outputs) != 1 or not outs:
        raise ValueError("split_params needs a function with one array output")
    out = outs[0]
    plan = refine_plan(tape)
    relus = relu_eqns(tape)
    xs = [tape.eqns[i].inputs[0] for i in relus]
    root_in = in_bounds if params.root_box is None else params.root_box
    _, alphas = root_relu_bounds(
        tape, root_in, opts, iters=params.root_iters, lr=params.root_lr, with_alphas=True
    )
    p0 = _Pass(tape, root_in, opts)
    p0.propagate("crown", alphas=alphas, plan=plan)
    outs0 = _finish(p0, "crown", spec)
    C = jnp.eye(out.size, dtype=out.dtype) if spec is None else jnp.asarray(spec, out.dtype)
    C = C.reshape(-1, out.size)
    m = C.shape[0]
    lam = jnp.concatenate([C, -C]).reshape(2 * m, *out.shape)

    def rows(v, fill, x):
        # the given rows for the lower bounds, `fill` for the upper bounds' rows
        top = jnp.full((m, *x.shape), fill, jnp.float32) if v is None else v
        top = jnp.asarray(top, jnp.float32).reshape(m, *x.shape)
        return jnp.concatenate([top, jnp.full((m, *x.shape), fill, jnp.float32)])

    alpha = [
        rows(None if params.alpha is None else params.alpha[k], jnp.nan, x)
        for k, x in enumerate(xs)
    ]
    beta = [rows(None if params.beta is None else params.beta[k], 0.0, x) for k, x in enumerate(xs)]
    state: dict = {}
    lb, *_ = split_bound(
        tape,
        in_bounds,
        opts,
        lam,
        relu_bounds=[p0.bounds[x.id] for x in xs],
        splits=[
            jnp.zeros(x.shape, jnp.int32) if s is None else s
            for s, x in zip(splits, xs, strict=True)
        ],
        alpha=alpha,
        beta=beta,
        iters=params.iters,
        lr=params.lr,
        state=state,
    )
    p1 = state["pass"]
    lo, hi = lb[:m], -lb[m:]
    if spec is None:
        ilo, ihi = p1.bounds[out.id]
        lo = jnp.maximum(lo.reshape(out.shape), ilo)
        hi = jnp.minimum(hi.reshape(out.shape), ihi)
    ((lo0, hi0),) = outs0
    lo, hi = jnp.maximum(lo, lo0), jnp.minimum(hi, hi0)
    split_eqns = {i for i, s in zip(relus, splits, strict=True) if s is not None and np.any(s != 0)}
    betas = {k: v for k, v in state["betas"].items() if k[1] in split_eqns}
    passes = [_pass_record(tape, p0, alphas), _pass_record(tape, p1, state["alphas"], betas)]
    return passes, [(lo, hi)], bool(p1.empty)


def _norm_splits(tape, relu_splits):
    """`relu_splits` as one int8 array (or None) per ReLU equation of the tape."""
    from ._crown import relu_eqns

    relus = relu_eqns(tape)
    if relu_splits is None:
        return None
    if len(relu_splits) > len(relus):
        raise ValueError(f"{len(relu_splits)} split arrays for {len(relus)} ReLUs")
    out = []
    for k, i in enumerate(relus):
        s = relu_splits[k] if k < len(relu_splits) else None
        x = tape.eqns[i].inputs[0]
        out.append(None if s is None else np.asarray(s).astype(np.int8).reshape(x.shape))
    return out


def _contracts(graph) -> list:
    """The kernel contracts of `graph` as plain (JSON-able) data."""
    from ..core._kernel import kernel_contracts

    res = []
    for c in kernel_contracts(graph):
        res.append(
            {
                "name": c.name,
                "occurrences": int(c.occurrences),
                "implementations": list(c.implementations),
                "tolerance": {k: [float(t.atol), float(t.rtol)] for k, t in c.tolerances.items()},
                "evidence": [
                    {
                        "implementation": e.implementation,
                        "platform": e.platform,
                        "device_kind": e.device_kind,
                        "passed": bool(e.passed),
                        "max_ratio": float(e.max_ratio),
                        "checked_at": e.checked_at,
                    }
                    for e in c.evidence
                ],
                "checked": list(c.checked),
                "unchecked": list(c.unchecked),
            }
        )
    return res


def contracts_text(contracts) -> str:
    """One line naming the kernel contracts (from `Certificate.kernel_contracts`), "" if none."""
    if not contracts:
        return ""
    parts = []
    for c in contracts:
        tol = ", ".join(f"{k}: atol {a!r}, rtol {r!r}" for k, (a, r) in c["tolerance"].items())
        parts.append(
            f"{c['name']} x{c['occurrences']} ({tol}; checked {c['checked']}, unchecked "
            f"{c['unchecked']})"
        )
    return "rests on kernel contracts: " + "; ".join(parts)


def make_certificate(
    graph,
    n_box,
    boxes,
    arg_leaves,
    *,
    method,
    opts,
    spec=None,
    bounds=None,
    alpha_iters: int = 40,
    alpha_lr: float = 0.25,
    relu_splits=None,
    split_params: SplitParams | None = None,
) -> Certificate:
    """Re-runs the bound computation eagerly (always float-sound) and records its claims.

    The claimed bounds are those of this float-sound re-run (for alpha-CROWN: the better of the
    CROWN pass and the pass at the final optimised slopes), so with `float_sound=False` or when
    alpha-CROWN's best iterate was not its last, they can be slightly wider than `bounds`. With
    `relu_splits` the claims are about the split domain (see `Certificate`); with `split_params`
    they are the beta-CROWN bounds of `_split_passes`. Where the splits leave no point of the
    box, the claimed bounds are +-float64 max (the checker proves the domain empty).
    """
    from ._crown import refine_plan, run_method

    del bounds
    copts = Options(float_sound=True, program=opts.program)
    mask = [True] * n_box + [False] * (len(graph.in_avals) - n_box)
    tape = record_graph(graph, mask, arg_leaves, name=method)

    def box_bounds(bs):
        res = {}
        for node, (lo, hi) in zip(tape.inputs, bs, strict=True):
            lo = jnp.broadcast_to(jnp.asarray(lo, node.dtype), node.shape)
            hi = jnp.broadcast_to(jnp.asarray(hi, node.dtype), node.shape)
            res[node.id] = (lo, hi)
        return res

    in_bounds = box_bounds(boxes)
    splits = _norm_splits(tape, relu_splits)
    if split_params is not None:
        if split_params.root_box is not None:
            split_params = dataclasses.replace(
                split_params, root_box=box_bounds(split_params.root_box)
            )
        passes, outs, empty = _split_passes(tape, in_bounds, copts, spec, splits, split_params)
    else:
        base_method = "crown" if method == "alpha-crown" else method
        jsplits = (
            None
            if splits is None
            else [None if s is None else jnp.asarray(s, jnp.int32) for s in splits]
        )
        outs, p = run_method(tape, in_bounds, copts, base_method, spec, splits=jsplits)
        passes = [_pass_record(tape, p)]
        empty = bool(p.empty)
        if method == "alpha-crown":
            res = _alpha_pass(
                tape, in_bounds, copts, spec, refine_plan(tape), alpha_iters, alpha_lr, jsplits
            )
            if res is not None:
                pa, a, outs_a = res
                passes.append(_pass_record(tape, pa, a))
                outs = [
                    (jnp.maximum(lo, la), jnp.minimum(hi, ha))
                    for (lo, hi), (la, ha) in zip(outs, outs_a, strict=True)
                ]
    big = np.finfo(np.float64).max
    lows = [np.full(np.shape(lo), big) if empty else _f64(lo) for lo, _ in outs]
    highs = [np.full(np.shape(hi), -big) if empty else _f64(hi) for _, hi in outs]
    pm = opts.program
    return Certificate(
        method=method,
        float_sound=True,
        requested_float_sound=bool(opts.float_sound),
        jax_version=jax.__version__,
        program_model={"u_out": pm.u_out, "u_acc": pm.u_acc, "eta": pm.eta, "name": pm.name},
        box=[(_f64(in_bounds[n.id][0]), _f64(in_bounds[n.id][1])) for n in tape.inputs],
        box_dtypes=[str(n.dtype) for n in tape.inputs],
        spec=None if spec is None else np.asarray(spec, np.float64),
        lower=lows,
        upper=highs,
        passes=passes,
        tape=_signature(tape),
        relu_splits=splits,
        kernel_contracts=_contracts(graph),
    )


# ----------------------------------------------------------------------------------------------
# Exact arithmetic helpers: vectors are 1-D object arrays of fmpq, matrices fmpq_mat.


class _Reject(Exception):
    pass


def _q(x) -> np.ndarray:
    """float array -> object array of exact fmpq (rejects non-finite numbers)."""
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise _Reject("non-finite number in the certificate")
    out = np.empty(a.shape, dtype=object)
    flat = out.reshape(-1)
    for k, v in enumerate(a.reshape(-1).tolist()):
        n, d = v.as_integer_ratio()
        flat[k] = fmpq(n, d)
    return out


def _mat(obj2d) -> fmpq_mat:
    r, c = obj2d.shape
    return fmpq_mat(r, c, list(obj2d.reshape(-1)))


def _unmat(m: fmpq_mat) -> np.ndarray:
    return np.array(m.entries(), dtype=object).reshape(m.nrows(), m.ncols())


def _matmul(a: np.ndarray, m) -> np.ndarray:
    """(S, N) object array times an fmpq_mat (N, K) (or None = identity)."""
    if m is None:
        return a
    return _unmat(_mat(a) * m)


def _pos(a):
    return np.where(a > 0, a, 0)


def _neg(a):
    return np.where(a < 0, a, 0)


def _relu(a):
    return np.where(a > 0, a, 0)


def _fmt(v) -> str:
    return f"{float(Fraction(int(v.p), int(v.q))):.17g}"


class _Affine:
    """Exact linear parts (per node operand) and constant part of one affine equation."""

    def __init__(self, e: TapeEqn):
        ins = e.node_inputs
        zeros = [jnp.zeros(n.shape, n.dtype) for n in ins]
        f0 = apply_affine(e, zeros, mode="zero")
        self.f0 = _q(np.asarray(f0, np.float64).reshape(-1))
        self.J = []  # fmpq_mat (in_size, out_size) per operand, or None for the identity
        self.Jp = []
        self.Jn = []
        scale = None
        ee = e
        if e.prim is lax.div_p:
            c = e.inputs[1]
            scale = np.broadcast_to(np.asarray(c, np.float64), e.out.shape).reshape(-1)
            ee = dataclasses.replace(e, inputs=[e.inputs[0], jnp.ones_like(jnp.asarray(c))])
        for k, n in enumerate(ins):

            def lin(v, k=k, n=n):
                tang = [jnp.zeros_like(z) for z in zeros]
                tang[k] = v.reshape(n.shape)
                return jax.jvp(lambda *xs: apply_affine(ee, list(xs)), zeros, tang)[1].reshape(-1)

            eye = jnp.eye(n.size, dtype=n.dtype)
            jt = np.asarray(jax.vmap(lin)(eye), np.float64)  # (in, out): row = image of unit vec
            if scale is None and jt.shape[0] == jt.shape[1] and np.array_equal(jt, np.eye(n.size)):
                self.J.append(None)
                self.Jp.append(None)
                self.Jn.append(None)
                continue
            q = _q(jt)
            if scale is not None:
                if np.any(scale == 0):
                    raise _Reject(f"division by zero in {e.where()}")
                inv = np.array([1 / _q(s)[()] for s in scale], dtype=object)
                q = q * inv[None, :]
            self.J.append(_mat(q))
            self.Jp.append(_mat(_pos(q)))
            self.Jn.append(_mat(_neg(q)))

    def magnitude(self, xmax: list) -> np.ndarray:
        """|L|·xmax + |f0| (exact), for the operands' magnitude bounds `xmax`."""
        out = np.abs(self.f0)
        for x, J, Jp, Jn in zip(xmax, self.J, self.Jp, self.Jn, strict=True):
            out = out + (x if J is None else _matmul(x[None, :], Jp - Jn)[0])
        return out

    def interval(self, ins: list[tuple], m) -> tuple:
        lo = self.f0 - m
        hi = self.f0 + m
        for (l, h), J, Jp, Jn in zip(ins, self.J, self.Jp, self.Jn, strict=True):
            if J is None:
                lo, hi = lo + l, hi + h
                continue
            L, H = l[None, :], h[None, :]
            lo = lo + (_matmul(L, Jp) + _matmul(H, Jn))[0]
            hi = hi + (_matmul(H, Jp) + _matmul(L, Jn))[0]
        return lo, hi


class _Empty(Exception):
    """The split constraints leave no point of the box (proved exactly): every claim holds."""


class _Checker:
    def __init__(self, cert: Certificate, tape, pass_: dict, k: int, carried=None, signs=None):
        """`carried`: node bounds established by the earlier passes (valid on the domain);
        `signs`: per ReLU equation index, the split signs over its input (object vector)."""
        self.cert, self.tape, self.k = cert, tape, k
        self.carried = carried or {}
        self.signs = signs or {}
        self.claims = {
            int(i): (_q(lo).reshape(-1), _q(hi).reshape(-1))
            for i, (lo, hi) in pass_["nodes"].items()
        }
        self.relax = {
            int(i): tuple(_q(v).reshape(-1) for v in r) for i, r in pass_["relax"].items()
        }
        self.alphas = {}
        for key, v in pass_["alphas"].items():
            s, i = key.rsplit(":", 1)
            self.alphas[(s, int(i))] = _q(v).reshape(v.shape[0], -1)
        self.betas = {}
        for key, v in pass_.get("betas", {}).items():
            s, i = key.rsplit(":", 1)
            b = _q(v).reshape(np.shape(v)[0], -1)
            if np.any(b < 0):
                raise _Reject(f"pass {k}: split multipliers {key} has a negative entry")
            if int(i) in self.signs:  # elsewhere s = 0: the term is zero
                self.betas[(s, int(i))] = b
        self.bnd: dict[int, tuple] = {}
        self.aff: dict[int, _Affine] = {}
        self.m: dict[int, np.ndarray] = {}  # float-program allowance per affine equation
        pm = cert.program_model
        self.model = (
            (Fraction(pm["u_out"]), Fraction(pm["u_acc"]), Fraction(pm["eta"]))
            if cert.float_sound
            else None
        )
        for n, (lo, hi) in zip(tape.inputs, cert.box, strict=True):
            self.bnd[n.id] = (_q(lo).reshape(-1), _q(hi).reshape(-1))

    def where(self) -> str:
        return f"pass {self.k}"

    # Exact CROWN back-substitution: lower bounds of the rows of lam . start.
    def backward(self, start: Node, lam: np.ndarray, key: str, rows=None) -> np.ndarray:
        """`rows`: which rows of the full back-substitution (the layout of per-row alpha slopes:
        [eye; -eye] for a node, [C; -C] for the output) the rows of `lam` are."""
        S = lam.shape[0]
        rows = np.arange(S) if rows is None else np.asarray(rows)
        acc = {start.id: lam}
        bias = np.array([fmpq(0)] * S, dtype=object)
        end = start.eqn_index if start.eqn_index is not None else -1
        for i in range(end, -1, -1):
            e = self.tape.eqns[i]
            L = acc.pop(e.out.id, None)
            if L is None:
                continue
            if e.kind == "affine":
                a = self.aff[i]
                bias = bias + _matmul(L, _mat(a.f0[:, None]))[:, 0]
                if self.m[i] is not None:
                    bias = bias - _matmul(_pos(L) - _neg(L), _mat(self.m[i][:, None]))[:, 0]
                for n, J in zip(e.node_inputs, a.J, strict=True):
                    g = L if J is None else _unmat(_mat(L) * J.transpose())
                    acc[n.id] = acc[n.id] + g if n.id in acc else g
            else:  # relu (others were rejected in the forward sweep)
                if i not in self.relax:
                    raise _Reject(f"{self.where()}: relu equation {i} has no relaxation")
                a_l, b_l, a_u, b_u = self.relax[i]
                if (key, i) in self.alphas:
                    al = self.alphas[(key, i)]
                    if al.shape[1] != a_l.shape[0] or rows.max() >= al.shape[0]:
                        raise _Reject(
                            f"{self.where()}: alpha slopes {key}:{i} have the wrong shape"
                        )
                    a_l = al[rows]
                else:
                    a_l = a_l[None, :]
                Lp, Ln = _pos(L), _neg(L)
                g = Lp * a_l + Ln * a_u[None, :]
                if (key, i) in self.betas:
                    # on the domain s*x >= 0: subtracting beta*s*x (beta >= 0) keeps a lower bound
                    be = self.betas[(key, i)]
                    if be.shape[1] != a_u.shape[0] or rows.max() >= be.shape[0]:
                        raise _Reject(
                            f"{self.where()}: split multipliers {key}:{i} have the wrong shape"
                        )
                    g = g - be[rows] * self.signs[i][None, :]
                bias = bias + (Lp * b_l[None, :] + Ln * b_u[None, :]).sum(axis=1)
                x = e.inputs[0]
                acc[x.id] = acc[x.id] + g if x.id in acc else g
        for n in self.tape.inputs:
            L = acc.pop(n.id, None)
            if L is None:
                continue
            lo, hi = self.bnd[n.id]
            bias = (
                bias
                + (_matmul(_pos(L), _mat(lo[:, None])) + _matmul(_neg(L), _mat(hi[:, None])))[:, 0]
            )
        return bias

    def _verify(
        self, node: Node, what: str, clo, chi, C=None, dlo=None, dhi=None, key=None, clip=None
    ):
        """Checks clo <= derived lower and derived upper <= chi for the rows of C . node
        (`clip`: applied to the derived bounds after a back-substitution, e.g. the splits)."""
        size = node.size
        if C is None:
            C = np.eye(size, dtype=np.int64).astype(object)
            dlo, dhi = self.bnd[node.id]
        bad_lo = np.nonzero(clo > dlo)[0]
        bad_hi = np.nonzero(chi < dhi)[0]
        if (len(bad_lo) or len(bad_hi)) and key is not None and self.relax:
            rows = np.concatenate([C[bad_lo], -C[bad_hi]])
            low = self.backward(node, rows, key, np.concatenate([bad_lo, size + bad_hi]))
            dlo, dhi = dlo.copy(), dhi.copy()
            for j, r in enumerate(bad_lo):
                dlo[r] = max(dlo[r], low[j])
            for j, r in enumerate(bad_hi):
                dhi[r] = min(dhi[r], -low[len(bad_lo) + j])
            if clip is not None:
                dlo, dhi = clip(dlo, dhi)
        for r in np.nonzero(clo > dlo)[0][:1]:
            raise _Reject(
                f"{self.where()}: {what} index {int(r)}: claimed lower {_fmt(clo[r])} > derived "
                f"lower {_fmt(dlo[r])}"
            )
        for r in np.nonzero(chi < dhi)[0][:1]:
            raise _Reject(
                f"{self.where()}: {what} index {int(r)}: claimed upper {_fmt(chi[r])} < derived "
                f"upper {_fmt(dhi[r])}"
            )
        return dlo, dhi

    def restrict(self, n: Node, sign=None):
        """The derived interval of `n` intersected with the earlier passes' bounds and, for the
        input of a split ReLU, with the split's half-line (`sign`). Empty: the domain is."""

        def clip(lo, hi):
            if n.id in self.carried:
                clo, chi = self.carried[n.id]
                lo, hi = np.where(clo > lo, clo, lo), np.where(chi < hi, chi, hi)
            if sign is not None:
                zero = fmpq(0)
                lo = np.where((sign > 0) & (lo < zero), zero, lo)
                hi = np.where((sign < 0) & (hi > zero), zero, hi)
            bad = np.nonzero(lo > hi)[0]
            if len(bad):
                raise _Empty(
                    f"node {n.id} index {int(bad[0])}: derived interval "
                    f"[{_fmt(lo[bad[0]])}, {_fmt(hi[bad[0]])}] is empty"
                )
            return lo, hi

        self.bnd[n.id] = clip(*self.bnd[n.id])
        return clip

    def node_claim(self, n: Node, what: str, sign=None):
        clip = self.restrict(n, sign)
        if n.id not in self.claims:
            return
        clo, chi = self.claims[n.id]
        if clo.shape[0] != n.size:
            raise _Reject(
                f"{self.where()}: {what}: claimed interval has {clo.shape[0]} entries, node has {n.size}"
            )
        bad = np.nonzero(clo > chi)[0]
        if len(bad):
            raise _Reject(f"{self.where()}: {what} index {int(bad[0])}: empty claimed interval")
        C = np.eye(n.size, dtype=np.int64).astype(object)
        dlo, dhi = self.bnd[n.id]
        dlo, dhi = self._verify(n, what, clo, chi, C, dlo, dhi, key=str(n.id), clip=clip)
        # Both are valid enclosures: keep the tighter one for later derivations.
        lo = np.where(dlo > clo, dlo, clo)
        hi = np.where(dhi < chi, dhi, chi)
        self.bnd[n.id] = (lo, hi)

    def relu_valid(self, i: int, x: Node):
        if i not in self.relax:
            return
        if x.id not in self.claims:
            raise _Reject(
                f"{self.where()}: relu equation {i}: relaxation without a claimed input interval"
            )
        lo, hi = self.claims[x.id]
        if i in self.signs:  # on the domain the input of a split neuron is on its side of 0
            sign, zero = self.signs[i], fmpq(0)
            lo = np.where((sign > 0) & (lo < zero), zero, lo)
            hi = np.where((sign < 0) & (hi > zero), zero, hi)
            bad = np.nonzero(lo > hi)[0]
            if len(bad):
                raise _Empty(f"relu equation {i} index {int(bad[0])}: split outside its interval")
        a_l, b_l, a_u, b_u = self.relax[i]
        if a_l.shape[0] != x.size:
            raise _Reject(f"{self.where()}: relu equation {i}: relaxation has the wrong size")
        for p, name in ((lo, "lower end"), (hi, "upper end")):
            ok = a_u * p + b_u >= _relu(p)
            for r in np.nonzero(~ok.astype(bool))[0][:1]:
                raise _Reject(
                    f"{self.where()}: relu equation {i} index {int(r)}: upper line "
                    f"{_fmt(a_u[r])}*x + {_fmt(b_u[r])} is below relu at the {name} x={_fmt(p[r])}"
                )
        kink = np.where(lo > 0, lo, np.where(hi < 0, hi, fmpq(0)))
        lines = [("", a_l[None, :])] + [
            (f" (alpha slopes of start {s}, row {{}})", v)
            for (s, j), v in self.alphas.items()
            if j == i
        ]
        for label, al in lines:
            for p, name in ((lo, "lower end"), (hi, "upper end"), (kink, "kink")):
                ok = (al * p[None, :] + b_l[None, :] <= _relu(p)[None, :]).astype(bool)
                bad = np.argwhere(~ok)
                if len(bad):
                    s, r = int(bad[0][0]), int(bad[0][1])
                    raise _Reject(
                        f"{self.where()}: relu equation {i} index {r}{label.format(s)}: lower line "
                        f"{_fmt(al[s, r])}*x + {_fmt(b_l[r])} is above relu at the {name} x={_fmt(p[r])}"
                    )

    def allowance(self, e: TapeEqn, a: _Affine, ins: list):
        """The float program's rounding allowance at this equation (exact), or None if exact."""
        n = terms(e)[0]
        if self.model is None or n == 0:
            return None
        u_out, u_acc, eta = self.model
        g = n * u_acc / (1 - n * u_acc) if n > 1 else Fraction(0)
        rel = u_out if (u_out == u_acc and n <= 1) else g + u_out * (1 + g)
        xmax = [np.where(-lo > hi, -lo, hi) for lo, hi in ins]
        q = fmpq(rel.numerator, rel.denominator)
        e_abs = fmpq((max(n, 1) + 1) * eta.numerator, eta.denominator)
        return a.magnitude(xmax) * q + e_abs

    def sweep(self):
        for i, e in enumerate(self.tape.eqns):
            if e.kind == "affine":
                if i not in self.aff:
                    self.aff[i] = _Affine(e)
                ins = [self.bnd[n.id] for n in e.node_inputs]
                self.m[i] = self.allowance(e, self.aff[i], ins)
                m = self.m[i] if self.m[i] is not None else fmpq(0)
                self.bnd[e.out.id] = self.aff[i].interval(ins, m)
            elif e.kind == "unary" and e.fn == "relu":
                x = e.inputs[0]
                self.node_claim(x, f"node {x.id} (input of relu equation {i})", self.signs.get(i))
                self.relu_valid(i, x)
                lo, hi = self.bnd[x.id]
                self.bnd[e.out.id] = (_relu(lo), _relu(hi))
            else:
                name = e.fn or (e.prim.name if e.prim is not None else e.kind)
                raise _Reject(
                    f"unsupported relaxation kind {e.kind}:{name} (equation {i}, {e.where()}); the "
                    "checker supports affine equations and ReLU"
                )

    def finals(self, spec) -> list:
        """Derived (lower, upper) per output (object vectors), using this pass's relaxations."""
        res = []
        for k, o in enumerate(self.tape.outputs):
            if not isinstance(o, Node):
                v = _q(np.asarray(o, np.float64)).reshape(-1)
                if spec is not None:
                    v = (_mat(_q(spec)) * _mat(v[:, None])).entries()
                    v = np.array(v, dtype=object)
                res.append((v, v))
                continue
            self.restrict(o)
            lo, hi = self.bnd[o.id]
            if spec is None:
                C = np.eye(o.size, dtype=np.int64).astype(object)
                dlo, dhi = lo, hi
            else:
                C = _q(spec).reshape(-1, o.size)
                dlo = (_matmul(_pos(C), _mat(lo[:, None])) + _matmul(_neg(C), _mat(hi[:, None])))[
                    :, 0
                ]
                dhi = (_matmul(_pos(C), _mat(hi[:, None])) + _matmul(_neg(C), _mat(lo[:, None])))[
                    :, 0
                ]
            if self.relax:
                lam = np.concatenate([C, -C])
                low = self.backward(o, lam, "out" if k == 0 else f"out{k}")
                m = C.shape[0]
                dlo = np.where(low[:m] > dlo, low[:m], dlo)
                dhi = np.where(-low[m:] < dhi, -low[m:], dhi)
            res.append((dlo, dhi))
        return res


def check(certificate: Certificate, fn, *args) -> CheckResult:
    """Re-derives `certificate`'s claims for `fn(x, *args)` in exact rational arithmetic.

    Returns a `CheckResult`: accepted, or the first failing claim (pass, node or output, index,
    claimed vs derived value). See the module docstring for what is and is not supported.
    """
    t0 = time.perf_counter()
    try:
        reason = _check(certificate, fn, *args)
        return CheckResult(True, reason, time.perf_counter() - t0)
    except _Empty as r:
        reason = f"accepted (empty domain): the split constraints leave no point of the box ({r})"
        extra = contracts_text(getattr(certificate, "kernel_contracts", None))
        reason = reason + ("; " + extra if extra else "")
        return CheckResult(True, reason, time.perf_counter() - t0)
    except _Reject as r:
        return CheckResult(False, str(r), time.perf_counter() - t0)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as err:
        msg = f"malformed certificate: {type(err).__name__}: {err}"
        return CheckResult(False, msg, time.perf_counter() - t0)


def _check(cert: Certificate, fn, *args) -> str:
    if cert.format != FORMAT:
        raise _Reject(f"unknown certificate format {cert.format!r}")
    if len(cert.box) != 1:
        raise _Reject("unsupported: the checker needs a single-array box")
    lo, hi = cert.box[0]
    if np.shape(lo) != np.shape(hi):
        raise _Reject("box lower and upper have different shapes")
    lo_q, hi_q = _q(lo).reshape(-1), _q(hi).reshape(-1)
    bad = np.nonzero(lo_q > hi_q)[0]
    if len(bad):
        raise _Reject(f"box index {int(bad[0])}: lower > upper")
    example = np.asarray(lo).astype(cert.box_dtypes[0])
    graph = fn if isinstance(fn, Graph) else trace(fn, example, *args)
    leaves = graph.flatten_inputs(example, *args)
    mask = [True] + [False] * (len(graph.in_avals) - 1)
    tape = record_graph(graph, mask, leaves[1:], name="check")
    sig = _signature(tape)
    if sig != [list(s[:2]) + [list(s[2])] for s in cert.tape]:
        raise _Reject("the certificate's program does not match fn (recorded tapes differ)")
    if tape.inputs[0].shape != tuple(np.shape(lo)):
        raise _Reject("box shape does not match the program input")
    spec = None if cert.spec is None else np.asarray(cert.spec, np.float64)
    signs = _split_signs(tape, cert.relu_splits)
    derived = None
    carried: dict = {}
    for k, pass_ in enumerate(cert.passes):
        c = _Checker(cert, tape, pass_, k, carried, signs)
        c.sweep()
        fin = c.finals(spec)
        carried = c.bnd  # every entry is a (checked) enclosure over the domain
        if derived is None:
            derived = fin
        else:
            derived = [
                (np.where(a[0] > b[0], a[0], b[0]), np.where(a[1] < b[1], a[1], b[1]))
                for a, b in zip(derived, fin, strict=True)
            ]
    if derived is None:
        raise _Reject("the certificate has no pass")
    if len(cert.lower) != len(derived):
        raise _Reject(f"{len(cert.lower)} claimed outputs, the program has {len(derived)}")
    for j, ((dlo, dhi), clo, chi) in enumerate(zip(derived, cert.lower, cert.upper, strict=True)):
        clo, chi = _q(clo).reshape(-1), _q(chi).reshape(-1)
        if clo.shape != dlo.shape:
            raise _Reject(
                f"output {j}: claimed bounds have {clo.shape[0]} entries, expected {dlo.shape[0]}"
            )
        for r in np.nonzero(clo > dlo)[0][:1]:
            raise _Reject(
                f"output {j} index {int(r)}: claimed lower {_fmt(clo[r])} > derived lower {_fmt(dlo[r])}"
            )
        for r in np.nonzero(chi < dhi)[0][:1]:
            raise _Reject(
                f"output {j} index {int(r)}: claimed upper {_fmt(chi[r])} < derived upper {_fmt(dhi[r])}"
            )
    what = _FLOAT.format(cert.program_model.get("name", "?")) if cert.float_sound else _REAL
    if signs:
        n = sum(int(np.count_nonzero(v)) for v in signs.values())
        what += f"; on the split domain ({n} ReLU split constraints)"
    extra = contracts_text(cert.kernel_contracts)
    what += "; " + extra if extra else ""
    return f"accepted ({cert.method}, {len(cert.passes)} pass(es)): {what}"


def _split_signs(tape, relu_splits) -> dict:
    """Per split ReLU equation index, its split signs over its input (int vector)."""
    if relu_splits is None:
        return {}
    from ._crown import relu_eqns

    relus = relu_eqns(tape)
    if len(relu_splits) > len(relus):
        raise _Reject(
            f"the certificate splits {len(relu_splits)} ReLUs, the program has {len(relus)}"
        )
    signs = {}
    for k, v in enumerate(relu_splits):
        if v is None:
            continue
        x = tape.eqns[relus[k]].inputs[0]
        a = np.asarray(v)
        if a.size != x.size or not np.all(np.isin(a, (-1, 0, 1))):
            raise _Reject(f"relu_splits[{k}]: expected {x.size} entries in {{-1, 0, 1}}")
        if np.any(a != 0):
            signs[relus[k]] = a.reshape(-1).astype(np.int64)
    return signs


__all__ = ["Certificate", "CheckResult", "check", "make_certificate"]
