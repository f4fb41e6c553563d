"""`tljax.bound(fn, box, *args)`: certified output bounds of a model over an input box."""

from __future__ import annotations

import collections
import dataclasses
import functools as ft
import os

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ..core import _jaxpr_compat as compat
from ..core._errors import InputError, InvalidBoxError
from ..core._graph import Graph, trace
from . import _float_model as fm
from ._box import Bounds, Box, _validate, box_check, box_valid
from ._crown import run_method
from ._relax import Options
from ._tape import record_graph

compat.register_exclusion(__file__)


METHODS = ("ibp", "affine", "crown", "crown-ibp", "alpha-crown")

_CACHE: collections.OrderedDict = collections.OrderedDict()
# XLA's full backend optimisation halves the run time of a compiled bound program but doubles its
# compile time; TLJAX_FAST_COMPILE=1 trades the other way (the test suite uses it). The bounds are
# sound either way: float-sound bounds allow any evaluation order.
_FAST_COMPILE_OPTIONS: dict = {"xla_backend_optimization_level": 0}


def _compiler_options() -> dict:
    return dict(_FAST_COMPILE_OPTIONS) if os.environ.get("TLJAX_FAST_COMPILE") == "1" else {}


_CACHE_SIZE = 64


def _program_model(float_format) -> fm.ProgramModel:
    if float_format is None or float_format in ("fp32", "float32"):
        return fm.FLOAT32
    if isinstance(float_format, fm.ProgramModel):
        return float_format
    table = {
        "bf16": fm.ProgramModel(
            2.0**-8, 2.0**-24, 2.0**-126, "bfloat16 ops, float32 accumulation, FTZ"
        ),
        "bfloat16": fm.ProgramModel(
            2.0**-8, 2.0**-24, 2.0**-126, "bfloat16 ops, float32 accumulation, FTZ"
        ),
        "fp16": fm.ProgramModel(
            2.0**-11, 2.0**-24, 2.0**-14, "float16 ops, float32 accumulation, FTZ"
        ),
        "float16": fm.ProgramModel(
            2.0**-11, 2.0**-24, 2.0**-14, "float16 ops, float32 accumulation, FTZ"
        ),
    }
    if float_format not in table:
        raise InputError(
            f"float_format {float_format!r} is not supported; use one of {sorted(table)} or a ProgramModel"
        )
    return table[float_format]


def _compute(
    graph: Graph, n_box: int, box_leaves, arg_leaves, splits=None, *, check_box=False, **kw
):
    """`_compute_bounds`, then the invalid-box policy below (`kw`: its keyword options)."""
    outs = _compute_bounds(graph, n_box, box_leaves, arg_leaves, splits, **kw)
    # An invalid box (lower > upper or NaN somewhere; under jit/vmap it could not be checked
    # when the Box was built) gets NaN bounds: never a finite pair that looks valid. Per batch
    # element under vmap, since this runs inside the mapped program.
    if check_box:
        box_check(box_leaves, "tljax.bound")
    ok = box_valid(box_leaves)
    return [(_invalid_to(ok, lo, +1), _invalid_to(ok, hi, -1)) for lo, hi in outs]


def _invalid_to(ok, v, side):
    # NaN where the box is invalid; integer and bool outputs (no NaN) get the empty interval
    # [max, min] of their type instead.
    v = jnp.asarray(v)
    if jnp.issubdtype(v.dtype, jnp.inexact):
        return jnp.where(ok, v, jnp.nan).astype(v.dtype)
    if v.dtype == jnp.bool_:
        return jnp.where(ok, v, side > 0)
    info = jnp.iinfo(v.dtype)
    return jnp.where(ok, v, info.max if side > 0 else info.min).astype(v.dtype)


def _compute_bounds(
    graph: Graph,
    n_box: int,
    box_leaves,
    arg_leaves,
    splits=None,
    *,
    method,
    opts,
    spec,
    alpha_iters,
    alpha_lr,
):
    mask = [True] * n_box + [False] * (len(graph.in_avals) - n_box)
    tape = record_graph(graph, mask, arg_leaves, name=method)
    in_bounds = {}
    for node, (lo, hi) in zip(tape.inputs, box_leaves, strict=True):
        lo, hi = jnp.asarray(lo, node.dtype), jnp.asarray(hi, node.dtype)
        if lo.dtype in (jnp.float32, jnp.float64):
            # subnormal ends moved outward: the program and this computation read them as 0
            lo, hi = fm.outside_subnormal(lo, up=False), fm.outside_subnormal(hi, up=True)
        in_bounds[node.id] = (jnp.broadcast_to(lo, node.shape), jnp.broadcast_to(hi, node.shape))
    if method == "affine":
        from ._zonotope import run_affine

        return run_affine(tape, in_bounds, opts, spec)[0]
    outs, _ = run_method(
        tape,
        in_bounds,
        opts,
        method,
        spec,
        alpha_iters=alpha_iters,
        alpha_lr=alpha_lr,
        splits=splits,
    )
    return outs


def relu_shapes(fn, box: Box, *args) -> list[tuple]:
    """Input shapes of the ReLUs of `fn` in tape order (the layout of `bound(..., relu_splits=)`)."""
    example = (box.lower, *args)
    graph = fn if isinstance(fn, Graph) else trace(fn, *example)
    n_box = len(jtu.tree_leaves(box.lower))
    leaves = graph.flatten_inputs(*example)
    mask = [True] * n_box + [False] * (len(graph.in_avals) - n_box)
    tape = record_graph(graph, mask, leaves[n_box:])
    return [e.inputs[0].shape for e in tape.eqns if e.kind == "unary" and e.fn == "relu"]


def bound(
    fn,
    box: Box,
    *args,
    method: str = "crown",
    float_sound: bool = True,
    float_format=None,
    spec=None,
    certificate: bool = False,
    alpha_iters: int = 40,
    alpha_lr: float = 0.25,
    relu_splits=None,
    split_params=None,
    jit: bool = True,
    check_box: bool = False,
) -> Bounds:
    """Certified bounds of `fn(x, *args)` for every `x` in `box`.

    Args:
      fn: a function, Equinox module or Flax NNX module (or a `Graph`) taking the boxed input first.
      box: a `Box` over the first argument (a pytree box for pytree inputs).
      *args: further (concrete) arguments, e.g. parameters.
      method: ``"ibp"``, ``"affine"`` (zonotopes: affine arithmetic forward, one noise symbol per
        input coordinate and per relaxed neuron), ``"crown"`` (backward linear relaxation with
        CROWN intermediate bounds), ``"crown-ibp"`` (Zhang et al. 2020: IBP intermediate bounds,
        then one CROWN backward pass from the output or spec, intersected with IBP: never
        looser than IBP, about as cheap, usually looser than CROWN; what certified training
        differentiates through) or ``"alpha-crown"`` (ReLU lower slopes optimised with Adam).
      float_sound: also contain what the float32 program computes at every point of the box, with
        any summation order, FMA contraction and flush-to-zero, and round this computation
        outward. With False, bounds are for the real-valued network computed in plain float
        (what peers report).
      float_format: the program's arithmetic when it is not float32: ``"bf16"`` or ``"fp16"``
        (float32 accumulation).
      spec: optional matrix `C` of shape (m, n_out): bound `C @ y` (y the flattened single
        output) directly, as robustness margins need.
      certificate: also return a `Certificate` (IBP / CROWN / CROWN-IBP / alpha-CROWN) checkable
        in exact arithmetic by `tljax.bounds.check` (with `relu_splits`, about the split domain).
      alpha_iters, alpha_lr: alpha-CROWN's optimisation budget.
      relu_splits: for branch and bound: a list (one entry per ReLU in the order of
        `relu_shapes(fn, box)`) of int arrays, +1 = neuron forced active, -1 = inactive, 0 = free,
        or None. The bounds then hold on the part of the box where the constraints hold (when some
        lower bound exceeds its upper bound, that part is empty).
      split_params: with `relu_splits`, a `tljax.bounds._certificate.SplitParams` (or a dict of
        its fields): beta-CROWN at the given slopes and split multipliers (a `tljax.verify` leaf's
        witness) with ReLU input bounds from alpha-CROWN over `root_box`; the bounds are those of
        an eager, float-sound run (the certificate's claims). One array output only.
      jit: compile the computation (cached per function and shapes).
      check_box: under `jax.jit` / `jax.vmap` (a traced box), also run a
        `jax.experimental.checkify.check` that the box is valid, whose error names the offending
        entries; the call must then be inside `checkify.checkify(...)` (else JAX refuses to
        compile the unfunctionalized check). Without it an invalid traced box only makes the
        bounds NaN (see below).

    Invalid boxes: a concrete box with lower > upper or NaN anywhere raises `InvalidBoxError`
    (listing the entries), here or when the `Box` is built. A traced box cannot be checked
    before the program runs: the program checks it and returns NaN for both bounds, all outputs,
    of every (batch element's) invalid box, for every method; never a finite pair.

    Returns:
      `Bounds` with `lower` / `upper` in the output's pytree structure (shape (m,) with `spec`);
      its `kernel_contracts` attribute lists the `tljax.kernel` contracts the bounds rest on
      (plain data, empty without kernels): they hold for the kernels' references.

    Example:
      >>> b = tljax.bound(model, tljax.Box.linf(x, 0.01))
      >>> b.lower, b.upper
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {METHODS}")
    if not isinstance(box, Box):
        raise InvalidBoxError(f"box must be a tljax.Box, got {type(box).__name__}")
    if not getattr(box, "_validated", False):  # rebuilt as a pytree: check its concrete leaves
        _validate(box.lower, box.upper, what="tljax.bound: the input box")
    opts = Options(float_sound=bool(float_sound), program=_program_model(float_format))
    example = (box.lower, *args)
    graph = fn if isinstance(fn, Graph) else trace(fn, *example)
    box_lo = jtu.tree_leaves(box.lower)
    box_hi = jtu.tree_leaves(box.upper)
    n_box = len(box_lo)
    all_leaves = graph.flatten_inputs(*example)
    arg_leaves = all_leaves[n_box:]
    spec_arr = None if spec is None else np.asarray(spec)
    if spec_arr is not None and len(graph.out_avals) != 1:
        raise InputError(
            f"spec needs a function with one array output; {graph.name!r} has {len(graph.out_avals)}"
        )
    if spec_arr is not None and spec_arr.reshape(spec_arr.shape[0], -1).shape[1] != int(
        np.prod(graph.out_avals[0].shape)
    ):
        raise InputError(
            f"spec has {spec_arr.reshape(spec_arr.shape[0], -1).shape[1]} columns but the output has "
            f"{int(np.prod(graph.out_avals[0].shape))} elements"
        )
    if split_params is not None and (relu_splits is None or method not in ("crown", "alpha-crown")):
        raise InputError("split_params needs relu_splits and method 'crown' or 'alpha-crown'")
    if split_params is not None and len(box_lo) != 1:
        raise InputError("split_params needs a single-array box")
    if method == "affine" and relu_splits is not None:
        raise InputError("relu_splits needs method 'crown' or 'alpha-crown' (got 'affine')")
    traced_box = any(isinstance(v, jax.core.Tracer) for v in box_lo + box_hi)
    if method == "affine" and certificate:
        raise InputError(
            "certificate=True supports methods 'ibp', 'crown' and 'alpha-crown'; the checker has no "
            "zonotope rule yet: use method='crown' or 'alpha-crown'"
        )
    kw = {
        "method": method,
        "opts": opts,
        "spec": spec_arr,
        "alpha_iters": alpha_iters,
        "alpha_lr": alpha_lr,
    }
    # concrete boxes were checked above; checkify.check cannot be staged outside checkify
    check = bool(check_box) and traced_box
    boxes = list(zip(box_lo, box_hi, strict=True))
    if split_params is not None:
        return _split_bound(
            graph, n_box, boxes, arg_leaves, relu_splits, split_params, certificate, kw
        )
    if jit:
        # compiler_options are only allowed on a top-level jit, not inside a user's jit/vmap.
        nested = any(
            isinstance(v, jax.core.Tracer)
            for v in jtu.tree_leaves((boxes, arg_leaves, relu_splits))
        )
        copts = _compiler_options()
        if method == "affine":
            # XLA:CPU's fusion emitters inline the zonotope's long elementwise chains (pooling
            # layers) into kernels that recompute shared producers: minutes instead of ms.
            copts["xla_cpu_use_fusion_emitters"] = False
        copts = compat.supported_compiler_options(copts)  # jaxlib 0.11 has no such XLA:CPU flag
        key = (
            nested,
            tuple(sorted(copts.items())),
            id(fn),
            graph.in_tree,
            tuple((a.shape, str(a.dtype)) for a in graph.in_avals),
            method,
            opts,
            None if spec_arr is None else (spec_arr.shape, spec_arr.tobytes()),
            alpha_iters,
            alpha_lr,
            check,
        )
        entry = _CACHE.get(key)
        if entry is None or entry[0] is not fn:
            compiled = jax.jit(
                ft.partial(_compute, graph, n_box, check_box=check, **kw),
                compiler_options=None if nested else copts,
            )
            entry = (fn, compiled)
            _CACHE[key] = entry
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        try:
            outs = entry[1](boxes, arg_leaves, relu_splits)
        except ValueError as err:
            if "compiler_options" not in str(err):
                raise
            # called inside a user's trace with concrete values: compile as a nested jit
            plain = jax.jit(ft.partial(_compute, graph, n_box, check_box=check, **kw))
            _CACHE[key] = (fn, plain)
            outs = plain(boxes, arg_leaves, relu_splits)
    else:
        outs = _compute(graph, n_box, boxes, arg_leaves, relu_splits, check_box=check, **kw)
    lows = [o[0] for o in outs]
    highs = [o[1] for o in outs]
    if spec_arr is not None:
        lower, upper = lows[0], highs[0]
    else:
        lower, upper = graph.unflatten_outputs(lows), graph.unflatten_outputs(highs)
    cert = None
    if certificate:
        from ._certificate import make_certificate

        cert = make_certificate(
            graph, n_box, boxes, arg_leaves, bounds=(lows, highs), relu_splits=relu_splits, **kw
        )
    return _with_contracts(
        Bounds(lower, upper, method=method, float_sound=opts.float_sound, certificate=cert), graph
    )


def _with_contracts(b: Bounds, graph) -> Bounds:
    """`b` with `kernel_contracts` (the graph's kernel contracts as plain data)."""
    from ._certificate import _contracts

    contracts = b.certificate.kernel_contracts if b.certificate is not None else _contracts(graph)
    return dataclasses.replace(b, kernel_contracts=contracts)


def _split_bound(graph, n_box, boxes, arg_leaves, relu_splits, split_params, certificate, kw):
    """`bound(..., relu_splits=, split_params=)`: the eager beta-CROWN run of `make_certificate`."""
    from ._certificate import SplitParams, make_certificate

    if isinstance(split_params, dict):
        split_params = SplitParams(**split_params)
    if split_params.root_box is not None:
        rb = split_params.root_box
        root = list(zip(jtu.tree_leaves(rb.lower), jtu.tree_leaves(rb.upper), strict=True))
        split_params = dataclasses.replace(split_params, root_box=root)
    if any(isinstance(v, jax.core.Tracer) for v in jtu.tree_leaves((boxes, arg_leaves))):
        raise InputError("split_params runs eagerly: call bound outside jit / vmap")
    try:
        cert = make_certificate(
            graph,
            n_box,
            boxes,
            arg_leaves,
            relu_splits=relu_splits,
            split_params=split_params,
            **kw,
        )
    except ValueError as err:
        raise InputError(f"split_params: {err}") from err
    dt = np.dtype(graph.out_avals[0].dtype)
    lo64, hi64 = np.asarray(cert.lower[0]), np.asarray(cert.upper[0])
    lower, upper = lo64.astype(dt), hi64.astype(dt)  # rounded outward below
    lower = jnp.asarray(np.where(lower > lo64, np.nextafter(lower, dt.type(-np.inf)), lower))
    upper = jnp.asarray(np.where(upper < hi64, np.nextafter(upper, dt.type(np.inf)), upper))
    if kw["spec"] is None:
        lower, upper = graph.unflatten_outputs([lower]), graph.unflatten_outputs([upper])
    b = Bounds(
        lower,
        upper,
        method=kw["method"],
        float_sound=True,
        certificate=cert if certificate else None,
        kernel_contracts=cert.kernel_contracts,
    )
    return b
