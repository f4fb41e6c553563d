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

Scope of the checker: every equation kind of the tape (`_tape.py`), re-derived in tape order:

- affine equations (dot_general, conv, add/sub/neg, mul/div by constants, sums, structural ops);
- relu and abs: exact in float; their lines (and alpha slopes) are checked at the interval ends
  and at the kink 0, which decides exactly for a convex piecewise-linear f;
- smooth unary functions (tanh, logistic, exp, softplus, x*x, sqrt, ...): nothing float is
  trusted. The output interval is the rigorous range of the real f on the checked input
  interval (`_smooth.enclose`) widened by the float program's error; a claimed line is accepted
  only if `_smooth.check_line` proves it against the real f moved by the largest such error on
  the interval. The error model: the program's f(x) is within k ulps of the real f(x), i.e.
  |error| <= 2 k u_out |f(x)| + 2 eta (k = `_float_model.ULPS[s.ulps]`, flush-to-zero of a
  tiny result included); a subnormal input is read as +-0 (DAZ), so where the interval meets
  (-eta, eta) the points (x, f(+-0) +- error) (`Smooth.f0`) are covered as well; functions
  whose float results are >= 0 (`Smooth.nonneg`: correctly rounded x*x and sqrt, and XLA's exp,
  logistic and softplus, whose k-ulp results cannot change sign) are clipped at 0;
- mul (a product of two nodes): the four claimed planes (McCormick's lower and upper A and B)
  are checked at the four corners of the operands' certified box (a plane minus x*y is
  bilinear, so that decides exactly), with the float product's rounding u_out |x y| + 2 eta;
  the interval is the exact corner hull widened by the same rounding. A pass uses the A planes,
  or with McCormick weights (alpha-CROWN's, in [0, 1], checked) per row the exact convex
  combinations w A + (1 - w) B, valid because both planes are;
- concretize (an interval-only equation): the exact image of the interval ends for primitives
  the checker evaluates exactly (max/min, reduce_max/min, max pooling: selections, applied to
  the ranks of the values; stop_gradient; floor, ceil, round, sign); any other is rejected with
  the primitive's name;
- hints (`TapeEqn.hint`): "monotone" (the exact hull of a max/min rewrite, evaluated as above;
  one the checker cannot evaluate is ignored, which only loosens) and "nonpos" (`x - y <= `
  the subtraction's own rounding allowance where the program's y >= x).
The box must be a single array; non-finite numbers in a certificate are rejected. A float64
certificate is checked under `jax.enable_x64(True)` only (without it the program would be
re-recorded with its constants rounded to float32: another program).

Methods whose claims the checker re-derives by re-running the computation itself, with no
passes to check, register in `_CHECKERS` (`register_checker`): "taylor" certificates are
re-derived by Taylor models in arb ball arithmetic (`_taylor_check`), following the producer's
recorded choices.

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
import math
import time
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flint import fmpq, fmpq_mat
from jax import lax

from ..core import (
    CertificateError,
    Graph,
    compat,
    kernel_contracts,
    load_json,
    save_json,
    trace,
)
from . import _float_model as fm
from . import _smooth
from ._crown import (
    _alpha_crown,
    _finish,
    _Pass,
    refine_plan,
    relu_eqns,
    root_relu_bounds,
    run_method,
    split_bound,
)
from ._drive import Backward, Forward, backward, forward
from ._relax import Options
from ._rules import Kind, relu_p
from ._tape import Node, TapeEqn, apply_affine, bind_prim, record_graph, terms
from ._taylor import run_taylor

FORMAT = "tljax-certificate-1"
_FLOAT = "float program re-derived exactly with the rounding allowances of {}"
_REAL = "real-valued semantics re-derived exactly (certificate not float-sound)"


# ----------------------------------------------------------------------------------------------
# The certificate.


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A checkable bound claim (see the module docstring).

    Attributes:
      method: "ibp", "crown", "crown-ibp", "alpha-crown", or "taylor" (claims about the
        real-valued program; its one pass holds only the producer's choices per equation,
        {"taylor_choices": {eqn: {"order2" / "interval": int8 mask}}}, and the checker re-runs
        the Taylor models in ball arithmetic following them, `_taylor_check`).
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
      passes: list of dicts {"nodes": {id: (lo, hi)}, "relax": {eqn: (a_l, b_l, a_u, b_u)
        for unary equations, the 12 arrays of four planes (a_x, a_y, c) for products},
        "alphas": {"start:eqn": array (rows, *shape), or (rows, 2, *shape) for a product: the
        weights of its lower and upper A planes}, "betas": {"start:eqn": array (rows, *shape)}};
        "start" is a node id, "out" (the first output) or "outK" (the K-th).
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
        save_json(dataclasses.asdict(self), path)

    @classmethod
    def from_json(cls, path) -> Certificate:
        d = load_json(path)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CertificateError(
                f"{path}: not a {FORMAT} file (format: {got!r}); read a file written by "
                "Certificate.to_json"
            )
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
        sig.append([e.kind.value, name, list(e.out.shape)])
    return sig


def _key_str(key) -> str:
    """String form of a backward pass's start key: a node id, "out" (first output) or "outK"."""
    if isinstance(key, tuple):  # ("out", k): the k-th output (`_crown._out_key`)
        return f"out{key[1]}"
    return str(key)


def _pass_record(tape, p, alphas=None, betas=None) -> dict:
    nodes, relax = {}, {}
    for i, e in enumerate(tape.eqns):
        if e.kind != Kind.AFFINE:
            for n in e.node_inputs:
                lo, hi = p.bounds[n.id]
                nodes[str(n.id)] = (_f64(lo), _f64(hi))
        if i in p.relax and e.kind != Kind.SELECT:  # select masks are re-derived by the checker
            r = p.relax[i]
            if e.kind == Kind.UNARY:
                relax[str(i)] = tuple(_f64(jnp.broadcast_to(v, e.out.shape)) for v in r)
            else:  # mul: McCormick planes (x, y and constant coefficients, lower then upper)
                relax[str(i)] = tuple(_f64(v) for pl in r for v in pl)
    for o in tape.outputs:
        if isinstance(o, Node):
            lo, hi = p.bounds[o.id]
            nodes[str(o.id)] = (_f64(lo), _f64(hi))
    # as `_Pass.backward` uses them: slopes clipped to [0, 1], multipliers to >= 0. A NaN slope
    # (a NaN gradient in the optimisation) gave its rows a bound of -inf there; any slope in
    # [0, 1] gives those rows a valid bound, so 0 is recorded in its place.
    al = {
        f"{_key_str(k)}:{i}": _f64(jnp.nan_to_num(jnp.clip(v, 0.0, 1.0), nan=0.0))
        for (k, i), v in (alphas or {}).items()
    }
    be = {f"{_key_str(k)}:{i}": _f64(jnp.maximum(v, 0.0)) for (k, i), v in (betas or {}).items()}
    return {"nodes": nodes, "relax": relax, "alphas": al, "betas": be}


def _alpha_pass(tape, in_bounds, opts, spec, plan, iters, lr, splits=None):
    """alpha-CROWN (`_crown._alpha_crown`): the pass at its final slopes, the slopes and the
    bounds of that pass (None when there is nothing to optimise)."""

    state: dict = {}
    # (the checker does not re-derive the input-space hull planes yet)
    _alpha_crown(tape, in_bounds, opts, spec, plan, iters, lr, splits, record=state, hull=False)
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

    outs = [o for o in tape.outputs if isinstance(o, Node)]
    splits = splits if splits is not None else [None] * len(relu_eqns(tape))
    if len(tape.outputs) != 1 or not outs:
        raise ValueError("split_params needs a function with one array output")
    out = outs[0]
    plan = refine_plan(tape, opts.refine_limit)
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

    del bounds
    copts = Options(float_sound=True, program=opts.program, refine_limit=opts.refine_limit)
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
    if method == "taylor":
        if spec is not None or relu_splits is not None:
            raise CertificateError(
                "a taylor certificate bounds the outputs themselves: no spec or relu_splits"
            )
        # the claim is about the real-valued program, whatever `bound` was asked for
        copts = Options(float_sound=True, program=fm.REAL)
        outs, tp = run_taylor(tape, in_bounds, copts, with_pass=True)
        choices = {
            str(i): {k: np.asarray(v, np.int8).reshape(-1) for k, v in c.items()}
            for i, c in tp.choices.items()
        }
        passes, empty = [{"taylor_choices": choices}], False
    elif split_params is not None:
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
                tape,
                in_bounds,
                copts,
                spec,
                refine_plan(tape, copts.refine_limit),
                alpha_iters,
                alpha_lr,
                jsplits,
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
    pm = copts.program
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


_ZERO = fmpq(0)


def _relu(a):
    return np.where(a > 0, a, _ZERO)


def _abs(a):
    return np.where(a < 0, -a, a)


def _min(a, b):
    return np.where(a < b, a, b)


def _max(a, b):
    return np.where(a > b, a, b)


# Piecewise-linear convex functions with one kink, at 0: exact in float, checked exactly.
_PIECEWISE = {relu_p: _relu, lax.abs_p: _abs}


def _bcast_index(n: Node, shape) -> np.ndarray:
    """Flat index into `n` of every element of its broadcast to `shape`."""
    idx = np.arange(n.size).reshape(n.shape)
    return np.broadcast_to(idx, shape).reshape(-1)


def _unbroadcast(g: np.ndarray, n: Node, shape) -> np.ndarray:
    """Coefficients (S, prod(shape)) on the broadcast of `n` summed back onto `n`'s elements."""
    idx = _bcast_index(n, shape)
    if idx.shape[0] == n.size and np.array_equal(idx, np.arange(n.size)):
        return g
    out = np.empty((g.shape[0], n.size), dtype=object)
    out[...] = fmpq(0)
    np.add.at(out, (slice(None), idx), g)
    return out


def _frac(v) -> Fraction:
    return Fraction(int(v.p), int(v.q)) if isinstance(v, fmpq) else Fraction(v)


def _fq(v) -> fmpq:
    """An exact rational (Fraction, int or fmpq) as fmpq."""
    if isinstance(v, fmpq):
        return v
    v = Fraction(v)
    return fmpq(v.numerator, v.denominator)


def _fmt(v) -> str:
    return f"{float(_frac(v)):.17g}"


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


def _name(e: TapeEqn) -> str:
    return e.fn or (e.prim.name if e.prim is not None else e.kind.value)


def _smooth_of(e: TapeEqn):
    """The `_smooth.Smooth` description of a unary equation's function, None if there is none."""
    return e.rule.smooth


def _unit(dtype) -> Fraction:
    try:
        return Fraction(fm.unit(dtype))
    except KeyError:  # a dtype the bound computation does not run in
        return Fraction(0)


# Primitives whose exact interval the checker evaluates: each output element is one of the
# operands' elements (or padding) chosen by comparisons, so the primitive commutes with any
# increasing map of the values; applied to the values' ranks (integers) it is exact.
_SELECTING = frozenset(
    p
    for p in (
        lax.max_p,
        lax.min_p,
        lax.reduce_max_p,
        lax.reduce_min_p,
        lax.reduce_window_max_p,
        getattr(lax, "reduce_window_min_p", None),
    )
    if p is not None
)


def _round_half(v: fmpq, method) -> fmpq:
    f = fmpq(v.floor())
    d = v - f
    if d != fmpq(1, 2):
        return f + 1 if d > fmpq(1, 2) else f
    away = int(method) == 0  # lax.RoundingMethod.AWAY_FROM_ZERO
    up = v > 0 if away else int(f.p) % 2 == 1
    return f + 1 if up else f


# Elementwise, exact in float and nondecreasing: evaluated exactly at the interval ends.
_ELEMENTWISE = {
    lax.floor_p: lambda v, p: fmpq(v.floor()),
    lax.ceil_p: lambda v, p: fmpq(v.ceil()),
    lax.sign_p: lambda v, p: fmpq(int(v > 0) - int(v < 0)),
    lax.round_p: lambda v, p: _round_half(v, p.get("rounding_method", 0)),
}
_EXACT_NAMES = ", ".join(
    sorted({p.name for p in _SELECTING | set(_ELEMENTWISE)} | {"stop_gradient"})
)


def _monotone_image(prim, params, inputs, bnd: dict, out: Node):
    """Exact interval (lo, hi) of `prim(*inputs)`, nondecreasing in every operand, from the
    intervals `bnd` of its node operands; None if the checker cannot evaluate `prim` exactly."""
    nodes = [v for v in inputs if isinstance(v, Node)]
    if prim is compat.stop_gradient_p and len(inputs) == 1 and nodes:
        return bnd[nodes[0].id]
    if prim in _ELEMENTWISE and len(inputs) == 1 and nodes and nodes[0].shape == out.shape:
        g = _ELEMENTWISE[prim]
        lo, hi = bnd[nodes[0].id]
        return (
            np.array([g(v, params) for v in lo], dtype=object),
            np.array([g(v, params) for v in hi], dtype=object),
        )
    if prim not in _SELECTING:
        return None
    consts = [np.asarray(v, np.float64) for v in inputs if not isinstance(v, Node)]
    if any(np.isnan(c).any() for c in consts):
        return None
    values = set()
    for n in nodes:
        values.update(bnd[n.id][0].tolist())
        values.update(bnd[n.id][1].tolist())
    for c in consts:
        values.update(_q(c[np.isfinite(c)]).tolist())
    table = sorted(values)
    rank = {v: k + 1 for k, v in enumerate(table)}  # -inf: 0, +inf: len + 1
    top = len(table) + 1
    if top >= 2**31 - 1:
        return None

    def ranks(end):
        ops = []
        for v in inputs:
            if isinstance(v, Node):
                r = [rank[t] for t in bnd[v.id][end]]
                ops.append(jnp.asarray(np.array(r, np.int32).reshape(v.shape)))
            else:
                c = np.asarray(v, np.float64)
                fin = np.isfinite(c)
                r = np.where(c < 0, 0, top).astype(np.int32)
                r[fin] = [rank[t] for t in _q(c[fin]).tolist()]
                ops.append(jnp.asarray(r))
        res = np.asarray(jnp.broadcast_to(bind_prim(prim, params, ops), out.shape)).reshape(-1)
        if np.any((res <= 0) | (res >= top)):
            raise _Reject(f"{prim.name}: the interval of its result is unbounded")
        return np.array([table[int(k) - 1] for k in res], dtype=object)

    return ranks(0), ranks(1)


def exact_select(e: TapeEqn, ends) -> tuple:
    """where(cmp(a, b), c1, c0) over exact intervals: (t, f, lo, hi), the masks where the
    comparison is decided true / false on the intervals of a and b (comparisons are exact in
    float), then the chosen case's interval, or the hull where undecided. `ends(v, shape)` gives
    an operand's exact ends (flat object arrays of fmpq or exact arb numbers)."""
    shape = e.out.shape
    la, ha = ends(e.inputs[0], shape)
    lb, hb = ends(e.inputs[1], shape)
    cmp = e.params["cmp"].name
    if cmp == "is_finite":  # every derived interval is finite (non-finite ones are rejected)
        t, f = np.ones(la.shape, bool), np.zeros(la.shape, bool)
    else:
        t, f = {
            "gt": (la > hb, ha <= lb),
            "ge": (la >= hb, ha < lb),
            "lt": (ha < lb, la >= hb),
            "le": (ha <= lb, la > hb),
            "eq": ((la == ha) & (lb == hb) & (la == lb), (ha < lb) | (la > hb)),
            "ne": ((ha < lb) | (la > hb), (la == ha) & (lb == hb) & (la == lb)),
        }[cmp]
        t, f = np.asarray(t, bool), np.asarray(f, bool)
    if e.params["negate"]:
        t, f = f, t
    l0, h0 = ends(e.inputs[2], shape)
    l1, h1 = ends(e.inputs[3], shape)
    lo = np.where(t, l1, np.where(f, l0, _min(l0, l1)))
    hi = np.where(t, h1, np.where(f, h0, _max(h0, h1)))
    return t, f, lo, hi


class _Empty(Exception):
    """The split constraints leave no point of the box (proved exactly): every claim holds."""


class _ExactAdjoint(Backward):
    """The checker's back-substitution (`_drive.backward`) in exact rationals: the rows' constant
    terms, from the certificate's lines checked in the forward sweep and the derived intervals."""

    def __init__(self, ck: _Checker, key: str, rows: np.ndarray, S: int):
        self.ck, self.key, self.rows = ck, key, rows
        self.bias = np.array([fmpq(0)] * S, dtype=object)

    def interval(self, L, n: Node):
        lo, hi = self.ck.bnd[n.id]
        self.bias = (
            self.bias
            + (_matmul(_pos(L), _mat(lo[:, None])) + _matmul(_neg(L), _mat(hi[:, None])))[:, 0]
        )

    def affine(self, i, e, L):
        ck = self.ck
        a = ck.aff[i]
        self.bias = self.bias + _matmul(L, _mat(a.f0[:, None]))[:, 0]
        if ck.m[i] is not None:
            self.bias = self.bias - _matmul(_pos(L) - _neg(L), _mat(ck.m[i][:, None]))[:, 0]
        return [
            (n, L if J is None else _unmat(_mat(L) * J.transpose()))
            for n, J in zip(e.node_inputs, a.J, strict=True)
        ]

    def unary(self, i, e, L):
        ck, key, rows = self.ck, self.key, self.rows
        if i not in ck.relax:
            raise _Reject(f"{ck.where()}: {e.fn} equation {i} has no relaxation")
        a_l, b_l, a_u, b_u = ck.relax[i]
        if (key, i) in ck.alphas:  # relu / abs only (`check_alpha_keys`)
            al = ck.alphas[(key, i)]
            if al.shape[1] != a_l.shape[0] or rows.max() >= al.shape[0]:
                raise _Reject(f"{ck.where()}: alpha slopes {key}:{i} have the wrong shape")
            a_l = al[rows]
        else:
            a_l = a_l[None, :]
        Lp, Ln = _pos(L), _neg(L)
        g = Lp * a_l + Ln * a_u[None, :]
        if (key, i) in ck.betas:
            # on the domain s*x >= 0: subtracting beta*s*x (beta >= 0) keeps a lower bound
            be = ck.betas[(key, i)]
            if be.shape[1] != a_u.shape[0] or rows.max() >= be.shape[0]:
                raise _Reject(f"{ck.where()}: split multipliers {key}:{i} have the wrong shape")
            g = g - be[rows] * ck.signs[i][None, :]
        self.bias = self.bias + (Lp * b_l[None, :] + Ln * b_u[None, :]).sum(axis=1)
        return [(e.inputs[0], g)]

    def mul(self, i, e, L):
        ck, key, rows = self.ck, self.key, self.rows
        if i not in ck.relax:
            raise _Reject(f"{ck.where()}: mul equation {i} has no relaxation")
        r = ck.relax[i]  # planes lower A, upper A, lower B, upper B (checked in `_Checker.mul`)
        axl, ayl, cl, axu, ayu, cu = (v[None, :] for v in r[:6])
        if (key, i) in ck.alphas:
            # a convex combination of the A and B planes per row: exact here
            w = ck.alphas[(key, i)]
            n = r[0].shape[0]
            if w.shape[1] != 2 * n or rows.max() >= w.shape[0]:
                raise _Reject(f"{ck.where()}: McCormick weights {key}:{i} have the wrong shape")
            w = w[rows]
            if np.any(w < 0) or np.any(w > 1):
                raise _Reject(f"{ck.where()}: McCormick weights {key}:{i} outside [0, 1]")
            a, b = w[:, :n], w[:, n:]

            def mix(t, va, vb):
                return t * va[None, :] + (1 - t) * vb[None, :]

            axl, ayl, cl = (mix(a, va, vb) for va, vb in zip(r[0:3], r[6:9], strict=True))
            axu, ayu, cu = (mix(b, va, vb) for va, vb in zip(r[3:6], r[9:12], strict=True))
        Lp, Ln = _pos(L), _neg(L)
        self.bias = self.bias + (Lp * cl + Ln * cu).sum(axis=1)
        return [
            (n, _unbroadcast(Lp * al + Ln * au, n, e.out.shape))
            for n, al, au in zip(e.node_inputs, (axl, ayl), (axu, ayu), strict=True)
        ]

    def select(self, i, e, L):
        # exact where the derived intervals decide the predicate, the interval elsewhere
        m0, m1 = self.ck.sel[i]
        out = []
        for c, m in zip(e.inputs[2:], (m0, m1), strict=True):
            g = np.where(m[None, :], L, _ZERO)
            if isinstance(c, Node):
                out.append((c, _unbroadcast(g, c, e.out.shape)))
            else:
                cv = _q(np.broadcast_to(np.asarray(c, np.float64), e.out.shape)).reshape(-1)
                self.bias = self.bias + (g * cv[None, :]).sum(axis=1)
        self.interval(np.where((~m0 & ~m1)[None, :], L, _ZERO), e.out)
        return out

    def concretize(self, i, e, L):
        # a free value in its derived interval
        self.interval(L, e.out)
        return []

    def input(self, n, L):
        self.interval(L, n)


class _Checker(Forward):
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
        self.sel: dict[int, tuple] = {}  # (surely false, surely true) per select equation
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
        rows = np.arange(lam.shape[0]) if rows is None else np.asarray(rows)
        adj = _ExactAdjoint(self, key, rows, lam.shape[0])
        backward(self.tape, [(start, lam)], adj)
        return adj.bias

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
        if (len(bad_lo) or len(bad_hi)) and key is not None and (self.relax or self.sel):
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
                f"{self.where()}: {what}: claimed interval has {clo.shape[0]} entries, node has "
                f"{n.size}"
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

    def round1(self, mag: np.ndarray) -> np.ndarray:
        """Allowance of one rounded operation with a result of magnitude <= `mag` (as an affine
        equation of one term: u_out * mag + 2 eta), zero for the real-valued semantics."""
        if self.model is None:
            return np.array([_ZERO] * mag.shape[0], dtype=object)
        u_out, _, eta = self.model
        return mag * _fq(u_out) + _fq(2 * eta)

    def relax_of(self, i: int, e: TapeEqn, count: int, size: int) -> tuple:
        r = self.relax[i]
        if len(r) != count or any(v.shape[0] != size for v in r):
            raise _Reject(f"{self.where()}: {_name(e)} equation {i}: relaxation has the wrong size")
        return r

    def piecewise_valid(self, i: int, e: TapeEqn, x: Node):
        """relu / abs lines (and alpha slopes) on x's interval: f minus a line is piecewise linear
        with its kink at 0 and f is convex, so the ends (upper line) and the ends and the kink
        (lower lines) decide exactly."""
        if i not in self.relax:
            return
        fn, f = e.fn, _PIECEWISE[e.prim]
        lo, hi = self.bnd[x.id]
        a_l, b_l, a_u, b_u = self.relax_of(i, e, 4, x.size)
        for p, name in ((lo, "lower end"), (hi, "upper end")):
            ok = a_u * p + b_u >= f(p)
            for r in np.nonzero(~ok.astype(bool))[0][:1]:
                raise _Reject(
                    f"{self.where()}: {fn} equation {i} index {int(r)}: upper line "
                    f"{_fmt(a_u[r])}*x + {_fmt(b_u[r])} is below {fn} at the {name} x={_fmt(p[r])}"
                )
        kink = np.where(lo > 0, lo, np.where(hi < 0, hi, _ZERO))
        lines = [("", a_l[None, :])] + [
            (f" (alpha slopes of start {s}, row {{}})", v)
            for (s, j), v in self.alphas.items()
            if j == i
        ]
        for label, al in lines:
            for p, name in ((lo, "lower end"), (hi, "upper end"), (kink, "kink")):
                ok = (al * p[None, :] + b_l[None, :] <= f(p)[None, :]).astype(bool)
                bad = np.argwhere(~ok)
                if len(bad):
                    s, r = int(bad[0][0]), int(bad[0][1])
                    raise _Reject(
                        f"{self.where()}: {fn} equation {i} index {r}{label.format(s)}: lower line "
                        f"{_fmt(al[s, r])}*x + {_fmt(b_l[r])} is above {fn} at the {name} "
                        f"x={_fmt(p[r])}"
                    )

    def unary(self, i: int, e: TapeEqn) -> tuple:
        """Checks the relaxation of a unary equation; returns the interval of its output."""
        x = e.inputs[0]
        lo, hi = self.bnd[x.id]
        if e.prim in _PIECEWISE:  # exact in float
            self.piecewise_valid(i, e, x)
            if e.prim is relu_p:
                return _relu(lo), _relu(hi)
            return _relu(_max(lo, -hi)), _max(-lo, hi)
        s = _smooth_of(e)
        if s is None:
            raise _Reject(
                f"{self.where()}: unary equation {i} ({e.fn}, {e.where()}): the checker has no "
                f"exact description (_smooth.Smooth) of {e.fn!r}"
            )

        # The float program's f at x is f(x) + d with |d| <= q |f(x)| + eta2: k ulps of the
        # result (k = `ULPS[s.ulps]`), a result below the normal range possibly flushed, plus
        # the absolute part of `s` (`abs_ulps` u + `abs_eta` eta). It reads a subnormal input as
        # +-0 (DAZ), returning f(+-0) (within `s.f0`) instead.
        q, eta2, eta = Fraction(0), Fraction(0), None
        if self.model is not None:
            u_out, _, eta = self.model
            k = Fraction(fm.ULPS[s.ulps])
            uu = max(u_out, _unit(x.dtype))
            q = 2 * k * uu
            eta2 = Fraction(s.abs_ulps) * u_out + (2 + Fraction(s.abs_eta)) * eta
        lines = self.relax_of(i, e, 4, x.size) if i in self.relax else None
        olo, ohi = [], []
        for r in range(x.size):
            l, u = _frac(lo[r]), _frac(hi[r])
            try:
                fl, fu = (Fraction(v) for v in _smooth.enclose(s, l, u))
            except (ValueError, ArithmeticError, NotImplementedError) as err:
                raise _Reject(
                    f"{self.where()}: {e.fn} equation {i} index {r}: no enclosure of {e.fn} on "
                    f"[{float(l):.17g}, {float(u):.17g}] ({err})"
                ) from None
            ylo, yhi = fl - q * abs(fl) - eta2, fu + q * abs(fu) + eta2
            # points (x, y) the float program may produce for x in the subnormal part of [l, u]
            daz = []
            if eta is not None and l < eta and u > -eta:
                if not all(math.isfinite(v) for v in s.f0):
                    raise _Reject(
                        f"{self.where()}: {e.fn} equation {i} index {r}: the float program's "
                        f"{e.fn} of a flushed subnormal input is unbounded"
                    )
                f0 = [Fraction(v) for v in s.f0]
                e0 = q * max(abs(v) for v in f0) + eta2
                ylo, yhi = min(ylo, f0[0] - e0), max(yhi, f0[1] + e0)
                daz = [
                    (max(l, -eta), f0[0] - e0, f0[1] + e0),
                    (min(u, eta), f0[0] - e0, f0[1] + e0),
                ]
            if lines is not None:
                # a line valid against f moved by the largest error on [l, u] is valid against
                # the float program's f there
                err = q * max(abs(fl), abs(fu)) + eta2
                a_l, b_l, a_u, b_u = (_frac(v[r]) for v in lines)
                for side, a, b, shifted in (
                    ("lower", a_l, b_l, b_l + err),
                    ("upper", a_u, b_u, b_u - err),
                ):
                    ok = _smooth.check_line(s, a, shifted, l, u, side)
                    for px, y0lo, y0hi in daz:
                        ok = ok and (a * px + b <= y0lo if side == "lower" else a * px + b >= y0hi)
                    if not ok:
                        rel = "below" if side == "lower" else "above"
                        raise _Reject(
                            f"{self.where()}: {e.fn} equation {i} index {r}: {side} line "
                            f"{float(a):.17g}*x + {float(b):.17g} is not proven {rel} the float "
                            f"program's {e.fn} on [{float(l):.17g}, {float(u):.17g}] (float "
                            f"error allowance {float(err):.3g})"
                        )
            if s.nonneg:
                ylo = max(ylo, Fraction(0))
            olo.append(_fq(ylo))
            ohi.append(_fq(yhi))
        return np.array(olo, dtype=object), np.array(ohi, dtype=object)

    def mul(self, i: int, e: TapeEqn) -> tuple:
        """Checks the planes of a product of two nodes; returns the interval of its output.

        A plane a x + b y + c minus x y is bilinear, so its extremes over the operands' box are
        at the four corners: checking the corners (with the float product's rounding allowance)
        decides validity exactly."""
        x, y = e.node_inputs
        shape = e.out.shape
        lx, ux = (v[_bcast_index(x, shape)] for v in self.bnd[x.id])
        ly, uy = (v[_bcast_index(y, shape)] for v in self.bnd[y.id])
        corners = [(lx, ly), (lx, uy), (ux, ly), (ux, uy)]
        prods = [p * q for p, q in corners]
        lo, hi = prods[0], prods[0]
        for p in prods[1:]:
            lo, hi = _min(lo, p), _max(hi, p)
        err = self.round1(_max(_abs(lo), _abs(hi)))
        if i in self.relax:
            planes = self.relax_of(i, e, 12, e.out.size)
            # the A planes (CROWN's) and the B planes (alpha-CROWN mixes them with A)
            for (px, py), p in zip(corners, prods, strict=True):
                for side, (a, b, c) in (
                    ("lower", planes[0:3]),
                    ("upper", planes[3:6]),
                    ("lower", planes[6:9]),
                    ("upper", planes[9:12]),
                ):
                    v = a * px + b * py + c
                    ok = v + err <= p if side == "lower" else v - err >= p
                    for r in np.nonzero(~ok.astype(bool))[0][:1]:
                        raise _Reject(
                            f"{self.where()}: mul equation {i} index {int(r)}: {side} plane "
                            f"{_fmt(a[r])}*x + {_fmt(b[r])}*y + {_fmt(c[r])} fails at the corner "
                            f"x={_fmt(px[r])}, y={_fmt(py[r])} of the operands' box"
                        )
        return lo - err, hi + err

    def _ends(self, v, shape) -> tuple:
        """Exact interval ends of an operand (node or constant), broadcast to `shape`, flat."""
        if isinstance(v, Node):
            lo, hi = self.bnd[v.id]
            idx = _bcast_index(v, shape)
            return lo[idx], hi[idx]
        c = _q(np.broadcast_to(np.asarray(v, np.float64), shape)).reshape(-1)
        return c, c

    def select(self, i: int, e: TapeEqn) -> tuple:
        t, f, lo, hi = exact_select(e, self._ends)
        self.sel[i] = (f, t)
        return lo, hi

    def concretize(self, i: int, e: TapeEqn) -> tuple:
        img = _monotone_image(e.prim, e.params, e.inputs, self.bnd, e.out)
        if img is None:
            name = e.prim.name if e.prim is not None else "?"
            raise _Reject(
                f"{self.where()}: concretize equation {i} ({name}, {e.where()}): the checker "
                f"cannot evaluate {name} exactly (it can: {_EXACT_NAMES})"
            )
        return img

    def apply_hint(self, i: int, e: TapeEqn, lo, hi) -> tuple:
        """Intersects with the interval fact `e.hint` (see `TapeEqn`); a hint the checker cannot
        evaluate is ignored (hints only tighten)."""
        h = e.hint
        if h[0] == "monotone":
            img = _monotone_image(h[1], h[2], h[3], self.bnd, e.out)
            return (lo, hi) if img is None else (_max(lo, img[0]), _min(hi, img[1]))
        if h[0] == "nonpos" and e.kind == Kind.AFFINE:
            # `x - y` with the program's y >= x: at most the subtraction's own rounding (the
            # program may contract it with the product that made x), as `_relax` argues
            m = self.m[i]
            cap = m if m is not None else np.array([_ZERO] * e.out.size, dtype=object)
            where = np.broadcast_to(np.asarray(h[1], bool), e.out.shape).reshape(-1)
            return lo, np.where(where & (hi > cap), cap, hi)
        return lo, hi

    def check_alpha_keys(self):
        eqns = self.tape.eqns
        for s, j in list(self.alphas) + list(self.betas):
            ok = 0 <= j < len(eqns) and eqns[j].kind == Kind.UNARY and eqns[j].prim in _PIECEWISE
            # McCormick weights (alphas only) on products
            mul = 0 <= j < len(eqns) and eqns[j].kind == Kind.MUL
            ok = ok or (mul and (s, j) not in self.betas)
            if not ok:
                raise _Reject(
                    f"{self.where()}: slopes or multipliers {s}:{j} on an equation that is not a "
                    "relu, abs or (McCormick weights) a product"
                )

    def sweep(self):
        self.check_alpha_keys()
        forward(self.tape, self)

    # The forward domain (`_drive.forward`): the claimed intervals of a relaxed equation's
    # operands are checked before it; each kind derives its output's interval exactly.
    def enter(self, i: int, e: TapeEqn):
        if e.kind == Kind.UNARY:
            x = e.inputs[0]
            self.node_claim(x, f"node {x.id} (input of {e.fn} equation {i})", self.signs.get(i))
        elif e.kind != Kind.AFFINE:
            for n in e.node_inputs:
                self.node_claim(n, f"node {n.id} (input of {e.kind.value} equation {i})")

    def leave(self, i: int, e: TapeEqn, value):
        if e.hint:
            value = self.apply_hint(i, e, *value)
        self.bnd[e.out.id] = value

    def affine(self, i: int, e: TapeEqn) -> tuple:
        if i not in self.aff:
            self.aff[i] = _Affine(e)
        ins = [self.bnd[n.id] for n in e.node_inputs]
        self.m[i] = self.allowance(e, self.aff[i], ins)
        m = self.m[i] if self.m[i] is not None else fmpq(0)
        return self.aff[i].interval(ins, m)

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
            if self.relax or self.sel:
                lam = np.concatenate([C, -C])
                low = self.backward(o, lam, "out" if k == 0 else f"out{k}")
                m = C.shape[0]
                dlo = np.where(low[:m] > dlo, low[:m], dlo)
                dhi = np.where(-low[m:] < dhi, -low[m:], dhi)
            res.append((dlo, dhi))
        return res


# Methods whose certificates carry no passes: the checker re-derives the claim itself.
# method -> (derive(cert, tape) -> [(lo, hi) fmpq vectors per output], what the check shows)
_CHECKERS: dict[str, tuple] = {}


def register_checker(method: str, derive, what: str) -> None:
    """Registers the exact re-derivation of `method`'s claims (see `_CHECKERS`)."""
    _CHECKERS[method] = (derive, what)


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
    if (
        np.dtype(cert.box_dtypes[0]).itemsize == 8
        and jax.dtypes.canonicalize_dtype(np.float64) != np.float64
    ):
        # traced without x64 the program would be another one (its constants rounded to float32)
        raise _Reject(
            f"the certificate is about a {cert.box_dtypes[0]} program: check it under "
            "jax.enable_x64(True)"
        )
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
    own = _CHECKERS.get(cert.method)
    if own is not None:
        derived = own[0](cert, tape)
    for k, pass_ in enumerate([] if own is not None else cert.passes):
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
                f"output {j} index {int(r)}: claimed lower {_fmt(clo[r])} > derived lower "
                f"{_fmt(dlo[r])}"
            )
        for r in np.nonzero(chi < dhi)[0][:1]:
            raise _Reject(
                f"output {j} index {int(r)}: claimed upper {_fmt(chi[r])} < derived upper "
                f"{_fmt(dhi[r])}"
            )
    if own is not None:
        return f"accepted ({cert.method}): {own[1]}"
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
