"""`prepare(fn, box, *args)`: one bound problem (traced graph, tape, input bounds, options).

Every bound computation starts the same way: trace `fn`, record its bound tape with the boxed
inputs as nodes and the other arguments as constants, attach the box to the input nodes (subnormal
ends moved outward, as the program reads them as zero) and choose the rounding model. `Problem`
holds that set-up once; its methods are the computations other packages run on it (CROWN /
alpha-CROWN bounds, the ReLU input bounds of a box, beta-CROWN bounds of a split domain), so
they need no private module of `tljax.bounds`.

`prepare` runs eagerly or inside `jax.jit` / `jax.vmap` (a traced box or traced arguments are
recorded as such); it is cheap next to the computations, so compiled callers prepare inside
their own jit.

Example:
  >>> p = tljax.bounds.prepare(fn, tljax.Box(lo, hi), params)
  >>> (lower, upper), = p.bounds("crown")
  >>> p.relu_shapes()
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from ..core import Graph, InputError, InvalidBoxError, trace
from . import _float_model as fm
from ._box import Box
from ._crown import refine_cost, refine_plan, relu_eqns, root_relu_bounds, run_method, split_bound
from ._relax import Options
from ._rules import Kind
from ._tape import Node, Tape, record_graph
from ._taylor import run_taylor
from ._zonotope import run_affine

# CROWN passes worth their cost: at most max(REFINE_FLOOR, REFINE_RATIO x the output's pass)
# coefficients. On the verivital max-pooling CNN every pooling node's pass carries 54M to 430M
# (128x to 920x the output's) and took 14 s per box (minutes for alpha-CROWN) for bounds within
# 1e-4 of the interval-based ones; every MLP of the shared suites stays under the floor.
REFINE_FLOOR = 1 << 22
REFINE_RATIO = 64


def available_memory(total: bool = False) -> int:
    """Bytes of memory this process may use now (available physical memory), or with `total`
    the machine's physical memory (the same on every call); 4 GiB where the OS does not say."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES" if total else "SC_AVPHYS_PAGES")
        return int(pages) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def program_model(float_format=None, who: str = "tljax.bound") -> fm.ProgramModel:
    """The rounding model of a program in `float_format` (None / "float32", a name of
    `_float_model.PROGRAM_MODELS` such as "bf16", or a `ProgramModel`)."""
    if float_format is None or float_format in ("fp32", "float32"):
        return fm.FLOAT32
    if float_format == "real":
        return fm.REAL
    if isinstance(float_format, fm.ProgramModel):
        return float_format
    if not isinstance(float_format, str) or float_format not in fm.PROGRAM_MODELS:
        raise InputError(
            f"{who}: float_format={float_format!r} is not supported; use one of "
            f"{sorted(fm.PROGRAM_MODELS)}, 'float32', 'real' or a tljax.bounds.ProgramModel"
        )
    return fm.PROGRAM_MODELS[float_format]


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A bound problem: `fn(x, *args)` with `x` in a box (see `prepare`).

    Attributes:
      graph: the traced `Graph` of `fn`.
      tape: its bound tape (boxed inputs are the tape's input nodes).
      in_bounds: `{input node id: (lower, upper)}`, broadcast to the nodes' shapes.
      options: the `Options` (float soundness, rounding model) of every computation.
    """

    graph: Graph
    tape: Tape
    in_bounds: dict
    options: Options
    name: str = "bound"

    @classmethod
    def from_graph(
        cls, graph: Graph, box_leaves, arg_leaves, *, options: Options, name: str = "bound"
    ) -> Problem:
        """The problem of a traced `graph` whose first `len(box_leaves)` flat inputs are boxed
        (`box_leaves`: `(lower, upper)` per leaf) and the rest are `arg_leaves` (flat)."""
        n_box = len(box_leaves)
        mask = [True] * n_box + [False] * (len(graph.in_avals) - n_box)
        tape = record_graph(graph, mask, arg_leaves, name=name)
        in_bounds = {}
        for node, (lo, hi) in zip(tape.inputs, box_leaves, strict=True):
            lo, hi = jnp.asarray(lo, node.dtype), jnp.asarray(hi, node.dtype)
            if lo.dtype in (jnp.float32, jnp.float64):
                # subnormal ends moved outward: the program and this computation read them as 0
                lo, hi = fm.outside_subnormal(lo, up=False), fm.outside_subnormal(hi, up=True)
            in_bounds[node.id] = (
                jnp.broadcast_to(lo, node.shape),
                jnp.broadcast_to(hi, node.shape),
            )
        return cls(graph, tape, in_bounds, options, name)

    def relu_shapes(self) -> list[tuple]:
        """Input shapes of the ReLUs in tape order: the layout of `relu_splits`, `splits`,
        `relu_bounds` and the per-ReLU parameters below."""
        return [tuple(self.tape.eqns[i].inputs[0].shape) for i in relu_eqns(self.tape)]

    def bounds(
        self,
        method: str = "crown",
        spec=None,
        *,
        alpha_iters=20,
        alpha_lr=0.1,
        splits=None,
        symbols: int | None = None,
    ) -> list:
        """`(lower, upper)` of every output (or of `spec @ output` for one output) by `method`
        ("ibp", "affine", "crown", "crown-ibp", "alpha-crown", or "taylor": order-2 Taylor models,
        programs of at most 8 inputs, real-valued only); `splits` as `_Pass.propagate` takes
        them (per ReLU +1 / -1 / 0, or None); `symbols`: for "affine", a window of that many
        symbols reused by the latest relaxations (deep programs; default: a budget)."""
        if method == "affine":
            if splits is not None:
                raise InputError("relu_splits needs method 'crown' or 'alpha-crown' (got 'affine')")
            return run_affine(self.tape, self.in_bounds, self.options, spec, window=symbols)[0]
        if method == "taylor":
            if splits is not None or spec is not None:
                raise InputError(
                    "method 'taylor' bounds the outputs themselves: no relu_splits or spec "
                    "(bound spec @ output by writing it into the function)"
                )
            return run_taylor(self.tape, self.in_bounds, self.options)
        outs, _ = run_method(
            self.tape,
            self.in_bounds,
            self.options,
            method,
            spec,
            alpha_iters=alpha_iters,
            alpha_lr=alpha_lr,
            splits=splits,
        )
        return outs

    def refine_costs(self, rows: int | None = None) -> tuple[list[int], int]:
        """What CROWN's passes carry at their widest, per domain (`refine_cost`): the costs of
        the nodes CROWN would tighten (largest first) and of the pass from the output (`rows`
        rows of a spec, default the output's size). A search picks its batch and
        `refine_limit` from them."""
        tape = self.tape
        cost = refine_cost(tape)
        plan = sorted((cost[i] for i in refine_plan(tape)), reverse=True)
        out = 0
        for o in tape.outputs:
            if isinstance(o, Node):
                r = o.size if rows is None else rows
                out = max(out, cost[o.id] // (2 * o.size) * 2 * r)
        return plan, out

    def widest_pass(self, limit: int | None = None) -> tuple[int, str]:
        """The widest pass CROWN runs for an intermediate node when passes over `limit`
        coefficients are skipped (None: none skipped): its coefficients per domain and where it
        starts (the equation whose operand it tightens, its shape); (0, "") when none runs."""
        tape = self.tape
        cost = refine_cost(tape)
        plan = refine_plan(tape, limit)
        if not plan:
            return 0, ""
        best, nid = max((cost[i], i) for i in plan)
        for e in tape.eqns:
            for n in e.node_inputs if e.kind is not Kind.AFFINE else ():
                if n.id == nid:
                    at = e.where()
                    at = at if at.startswith("at ") else f"at {at}"
                    return best, f"the input {n.shape} of {e.prim} {at}"
        return best, f"a node of shape {tape.nodes[nid].shape}"

    def root_relu_bounds(self, *, iters: int, lr: float, with_alphas: bool = False):
        """Bounds of every ReLU input over the box (CROWN, then `iters` alpha-CROWN steps on
        them): a list of `(lo, hi)` in `relu_shapes` order, valid in every sub-domain."""
        return root_relu_bounds(
            self.tape, self.in_bounds, self.options, iters=iters, lr=lr, with_alphas=with_alphas
        )

    def split_bound(
        self,
        lam,
        *,
        relu_bounds,
        splits,
        alpha,
        beta,
        iters,
        lr: float = 0.1,
        use_beta: bool = True,
    ):
        """beta-CROWN lower bounds of the rows of `lam @ output` over the part of the box where
        the ReLU `splits` hold, from `relu_bounds` (e.g. `root_relu_bounds` of an enclosing box)
        and warm-start slopes `alpha` / multipliers `beta` (per ReLU, (rows, *shape)).

        Returns `(lower, alpha, beta, used_bounds, scores, corners)`: the optimised parameters,
        the ReLU input bounds used, BaBSR branching scores per (row, neuron) and per row the input
        point minimising the row's linear bound."""
        return split_bound(
            self.tape,
            self.in_bounds,
            self.options,
            lam,
            relu_bounds=relu_bounds,
            splits=splits,
            alpha=alpha,
            beta=beta,
            iters=iters,
            lr=lr,
            use_beta=use_beta,
        )


def prepare(
    fn,
    box: Box,
    *args,
    float_sound: bool = True,
    float_format=None,
    name: str = "bound",
    refine_limit: int | None = None,
) -> Problem:
    """The bound problem of `fn(x, *args)` for `x` in `box` (the set-up every bound runs on).

    Arguments:
      fn: a function (or a traced `Graph`) taking the boxed input first.
      box: a `Box` over the first argument (a pytree box for pytree inputs); its leaves may be
        traced.
      *args: the other arguments (constants of the bound computation; may be traced).
      float_sound: bounds also cover the float program's rounding and their own.
      float_format: the program's arithmetic (see `program_model`).
      name: the tape's name (shown in errors).
      refine_limit: see `tljax.bound`.

    Returns:
      A `Problem`.
    """
    if not isinstance(box, Box):
        raise InvalidBoxError(
            f"tljax.bounds.prepare: box must be a tljax.Box, got {type(box).__name__}; build one "
            "with tljax.Box(lower, upper)"
        )
    example = (box.lower, *args)
    graph = fn if isinstance(fn, Graph) else trace(fn, *example)
    lows, highs = jtu.tree_leaves(box.lower), jtu.tree_leaves(box.upper)
    leaves = graph.flatten_inputs(*example)
    program = program_model(float_format, "tljax.bounds.prepare")
    opts = Options(
        float_sound=bool(float_sound),
        program=program,
        refine_limit=refine_limit,
        matvec=any(isinstance(v, jax.core.Tracer) for v in lows + highs),
    )
    boxes = list(zip(lows, highs, strict=True))
    return Problem.from_graph(graph, boxes, leaves[len(lows) :], options=opts, name=name)
