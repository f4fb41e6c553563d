"""`tljax.bound(fn, box, *args)`: certified output bounds of a model over an input box."""

from __future__ import annotations

import collections
import dataclasses
import functools as ft
import os
import warnings

import jax
import jax.extend.core
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ..core import (
    Graph,
    InputError,
    InvalidBoxError,
    RuleError,
    ShapeMismatchError,
    TljaxError,
    UnsupportedPrimitiveError,
    compat,
    iter_eqns,
    trace,
)
from ..interpret import evaluate_numpy, numpy_covers
from ._box import Bounds, Box, _validate, box_check, box_valid
from ._certificate import SplitParams, _contracts, make_certificate
from ._relax import Options
from ._session import REFINE_FLOOR, REFINE_RATIO, Problem, available_memory, program_model

compat.register_exclusion(__file__)


METHODS = ("ibp", "affine", "crown", "crown-ibp", "alpha-crown", "taylor")

_CACHE: collections.OrderedDict = collections.OrderedDict()
# XLA's full backend optimisation halves the run time of a compiled bound program but doubles its
# compile time; TLJAX_FAST_COMPILE=1 trades the other way (the test suite uses it). The bounds are
# sound either way: float-sound bounds allow any evaluation order.
_FAST_COMPILE_OPTIONS: dict = {"xla_backend_optimization_level": 0}


def _compiler_options() -> dict:
    return dict(_FAST_COMPILE_OPTIONS) if os.environ.get("TLJAX_FAST_COMPILE") == "1" else {}


_CACHE_SIZE = 64

# A bound program's first call is evaluated on the host by numpy (`tljax.interpret`'s "numpy"
# semantics): tracing plus milliseconds, where XLA compiles for seconds (0.7-6 ms per equation).
# The second call with the same function, shapes and options compiles. A program of more than
# `HOST_ONLY_EQNS` equations is never compiled by `bound` (its compile takes minutes; numpy
# evaluates it in seconds); `jax.jit(lambda b: tljax.bound(..., jit=False))` still compiles it.
# TLJAX_FIRST_CALL=compile compiles from the first call, as before.
HOST_ONLY_EQNS = 40_000
# ...and only while numpy's work (`_host_work`) stays small: alpha-CROWN's 40 steps on the
# verivital CNN (1.6e10) kept numpy 15 s where XLA compiles in 3 s; on a 5-layer ResNet (8e8)
# numpy took 4 s where XLA compiled for 12 s.
HOST_MAX_WORK = 1e10


# Bytes per coefficient of CROWN's widest intermediate pass at its peak: the float32
# coefficients, their temporaries and XLA's buffers (the verivital max-pooling CNN's pass of
# 430M coefficients: 41 measured for CROWN, about 160 for alpha-CROWN's gradient through it).
PASS_BYTES = {"crown": 48, "alpha-crown": 192}
_PASS_COSTS: collections.OrderedDict = collections.OrderedDict()


def _pass_costs(fn, graph, boxes, arg_leaves, opts, largest_only=False):
    """Per function and input shapes, kept (warm calls walk nothing): the largest node of the
    program (a pooling window's node is its output times the window, as the tape stacks it),
    then, unless `largest_only`, the costs of CROWN's intermediate passes (largest first), of
    the output's pass, and where the widest starts."""
    key = (id(fn), graph.in_tree, tuple((a.shape, str(a.dtype)) for a in graph.in_avals))
    hit = _PASS_COSTS.get(key)
    if hit is None or hit[0] is not fn:
        sizes = (
            np.prod(getattr(v.aval, "shape", ())) * np.prod(e.params.get("window_dimensions", ()))
            for e in iter_eqns(graph.jaxpr)
            for v in e.outvars
        )
        hit = [fn, int(max(sizes, default=0)), None]
        _PASS_COSTS[key] = hit
        while len(_PASS_COSTS) > _CACHE_SIZE:
            _PASS_COSTS.popitem(last=False)
    _PASS_COSTS.move_to_end(key)
    if largest_only:
        return hit[1]
    if hit[2] is None:
        p = Problem.from_graph(graph, boxes, arg_leaves, options=opts)
        costs, out = p.refine_costs()
        hit[2] = (costs, out, *(p.widest_pass() if costs else (0, "")))
    return hit[2]


def _memory_limit(fn, graph, boxes, arg_leaves, method, opts) -> int | None:
    """A `refine_limit` that keeps CROWN's widest intermediate pass within half the machine's
    memory (a warning says what keeps interval bounds), or None when every pass fits. Of the
    machine's, not of what is free now: the same call gives the same bounds every time."""
    per = PASS_BYTES[method]
    budget = available_memory(total=True) // 2
    # no pass is wider than twice the largest node squared: most programs stop here
    largest = _pass_costs(fn, graph, boxes, arg_leaves, opts, largest_only=True)
    if 2 * largest * largest * per <= budget:
        return None
    costs, out, widest, where = _pass_costs(fn, graph, boxes, arg_leaves, opts)
    if not costs or costs[0] * per <= budget:
        return None
    # a program this wide: also skip the passes not worth their cost (`REFINE_RATIO`)
    limit = max(min(budget // per, max(REFINE_FLOOR, REFINE_RATIO * out)), 1)
    kept = sum(c > limit for c in costs)
    warnings.warn(
        f"tljax.bound: {kept} of {len(costs)} intermediate nodes keep their interval bounds "
        f"(sound, looser): {method}'s pass for the widest, {where}, carries {widest:,} "
        f"coefficients (~{widest * per / 2**30:.1f} GiB at its peak, over half the machine's "
        f"memory, {budget / 2**30:.1f} GiB). refine_limit=<coefficients> sets the cut-off yourself",
        RuntimeWarning,
        stacklevel=3,
    )
    return limit


def _out_of_memory(err, fn, graph, boxes, arg_leaves, method, opts) -> MemoryError:
    """The error for an allocation XLA refused: which pass, how large, what to do."""
    costs, _, widest, where = _pass_costs(fn, graph, boxes, arg_leaves, opts)
    what = (
        f"its widest intermediate CROWN pass, {where}, carries {widest:,} coefficients per box "
        f"(~{widest * PASS_BYTES.get(method, 48) / 2**30:.1f} GiB)"
        if costs
        else "it has no intermediate CROWN pass: the output's pass or the box batch is too large"
    )
    return MemoryError(
        f"tljax.bound: out of memory computing {method} bounds of {graph.name!r}: {what}. Pass "
        f"refine_limit=<coefficients> (intermediate passes over it keep interval bounds), bound "
        f"fewer boxes per call, or use method='crown-ibp'. XLA said: {str(err).splitlines()[0]}"
    )


def _host_first_calls() -> bool:
    return os.environ.get("TLJAX_FIRST_CALL", "numpy") != "compile"


def _host_work(jaxpr, trips: int) -> float:
    """What numpy would do for `jaxpr`: the products' operations (dot_general,
    conv_general_dilated) and every other equation's output elements, loop bodies counted
    `trips` times."""
    total = 0.0
    for e in jaxpr.eqns:
        name = e.primitive.name
        out = float(np.prod(getattr(e.outvars[0].aval, "shape", ()))) if e.outvars else 0.0
        if name == "dot_general":
            (lc, _), _ = e.params["dimension_numbers"]
            shape = e.invars[0].aval.shape
            total += 2.0 * out * float(np.prod([shape[d] for d in lc]))
        elif name == "conv_general_dilated":
            rhs = e.invars[1].aval.shape
            o = rhs[e.params["dimension_numbers"].rhs_spec[0]]
            total += 2.0 * out * float(np.prod(rhs)) / max(o, 1)
        else:
            total += out
        reps = trips if name in ("while", "scan") else 1
        for sub in compat.sub_jaxprs(e):
            total += reps * _host_work(sub.jaxpr, trips)
    return total


def _host_call(run, args, traced=None, trips: int = 1) -> tuple[list | None, int, tuple | None]:
    """`run(*args)` evaluated by numpy (outputs as JAX arrays), the program's equation count and
    its traced jaxpr (`traced`, when given, is reused: no tracing); outputs None when numpy
    cannot run it (a primitive without a numpy rule, values spread over several devices) or
    its products (loops run `trips` times) would keep numpy longer than XLA compiles."""
    leaves = jtu.tree_leaves(args)
    if any(isinstance(v, jax.Array) and len(v.sharding.device_set) > 1 for v in leaves):
        return None, 0, None
    first = traced is None  # a reused trace already passed the checks below
    if first:
        traced = jax.make_jaxpr(run, return_shape=True)(*args)
    closed, shapes = traced
    jaxpr = compat.open_jaxpr(closed)[0]
    size = sum(1 for _ in iter_eqns(jaxpr))
    if numpy_covers(jaxpr) or (first and _host_work(jaxpr, trips) > HOST_MAX_WORK):
        return None, size, None
    try:
        outs = evaluate_numpy(closed, leaves)
    except RuleError as err:  # a numpy rule's defect must not cost the user the answer
        warnings.warn(
            f"tljax.bound: the host evaluation of the first call failed, compiling instead "
            f"(please report it): {err}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None, size, None
    # device_put, not jnp.asarray: that compiles a copy kernel for a broadcast (strided) array;
    # np.array, not np.ascontiguousarray: that makes a scalar 1-d
    outs = [jax.device_put(np.array(o, order="C")) for o in outs]
    return jtu.tree_unflatten(jtu.tree_structure(shapes), outs), size, traced


def _host_traced(closed, cache: dict):
    """A traceable function of the program's flat inputs that evaluates `closed` by numpy on
    the host through `jax.pure_callback`, for programs too large to compile, called inside a
    user's `jax.jit` / `jax.vmap`.

    Under `jax.vmap` the callback receives the whole batch (unmapped inputs with size-1 axes)
    and evaluates the mapped program, traced once per batch layout and kept in `cache`: one
    numpy run per batch, so the interpreter's per-equation cost is paid once for all boxes.
    Differentiating it differentiates the traced program itself (compiled as usual).
    """
    jaxpr = compat.open_jaxpr(closed)[0]
    rank0 = len(jaxpr.invars[0].aval.shape)  # the first box leaf's rank, unmapped
    out_avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in jaxpr.outvars]
    program = jax.extend.core.jaxpr_as_fun(closed)

    def host(*leaves):
        leaves = [np.asarray(v) for v in leaves]
        k = leaves[0].ndim - rank0  # mapped axes: expand_dims gives every input the same number
        if k == 0:
            outs = evaluate_numpy(closed, leaves)
            return tuple(np.asarray(o, a.dtype) for o, a in zip(outs, out_avals, strict=True))
        lead = np.broadcast_shapes(*(v.shape[:k] for v in leaves))
        n = int(np.prod(lead))
        axes = tuple(None if n > 1 and max(v.shape[:k]) == 1 else 0 for v in leaves)
        flat = [
            v.reshape(v.shape[k:])
            if a is None
            else np.broadcast_to(v, lead + v.shape[k:]).reshape((n, *v.shape[k:]))
            for v, a in zip(leaves, axes, strict=True)
        ]
        mapped = cache.get((axes, n))
        if mapped is None:
            # mapping the traced program: 2x faster than tracing the bound code under vmap
            mapped = jax.make_jaxpr(jax.vmap(program, in_axes=axes))(*flat)
            cache[(axes, n)] = mapped
        outs = evaluate_numpy(mapped, flat)
        return tuple(
            np.asarray(o, a.dtype).reshape(lead + a.shape)
            for o, a in zip(outs, out_avals, strict=True)
        )

    @jax.custom_jvp
    def run(*leaves):
        return jax.pure_callback(host, tuple(out_avals), *leaves, vmap_method="expand_dims")

    @run.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(lambda *xs: tuple(program(*xs)), primals, tangents)

    return run


def _nested_host_call(entry, run, args):
    """`run(*args)` inside a user's `jax.jit` / `jax.vmap` as a host callback (`_host_traced`)
    when its program has more than `HOST_ONLY_EQNS` equations, else None (the entry compiles
    from then on, as a nested jit whose trace is the one made here)."""
    if entry[1] is None:
        entry[1] = jax.jit(run)
    if entry[2] == "host":
        traced = entry[1].trace(*args)
        closed = traced.jaxpr
        jaxpr = compat.open_jaxpr(closed)[0]
        size = sum(1 for _ in iter_eqns(jaxpr))
        flat = jtu.tree_leaves(args)
        if size <= HOST_ONLY_EQNS or numpy_covers(jaxpr) or len(jaxpr.invars) != len(flat):
            entry[2] = "jit"
            return None
        entry[2], entry[3] = "host always", (closed, traced.out_info)
    if entry[4] is None:
        entry[4] = _host_traced(entry[3][0], {})
    outs = entry[4](*jtu.tree_leaves(args))
    return jtu.tree_unflatten(jtu.tree_structure(entry[3][1]), list(outs))


# ---------------------------------------------------------------------------------------------
# Checking what the user passed, before anything reaches the bound computation.

_LINEN_APPLY: collections.OrderedDict = collections.OrderedDict()


def adapt_fn(fn):
    """`fn` as `bound` calls it, `fn(x, *args)`.

    Flax Linen's `module.apply(variables, x)` takes the variables first, while `bound(fn, box,
    params)` passes the boxed input first: the bound method is wrapped to swap them. The wrapper
    is kept per module so the compile cache (keyed by the function) is reused across calls.
    """
    module = getattr(fn, "__self__", None)
    if module is None or getattr(fn, "__name__", "") != "apply":
        return fn
    try:
        from flax import linen
    except Exception:  # noqa: BLE001 - flax is optional here
        return fn
    if not isinstance(module, linen.Module) or fn.__func__ is not linen.Module.apply:
        return fn
    entry = _LINEN_APPLY.get(id(module))
    if entry is None or entry[0] is not module:

        def apply_input_first(x, variables, *args):
            return module.apply(variables, x, *args)

        apply_input_first.__name__ = f"{type(module).__name__}.apply"
        entry = (module, apply_input_first)
        _LINEN_APPLY[id(module)] = entry
        while len(_LINEN_APPLY) > _CACHE_SIZE:
            _LINEN_APPLY.popitem(last=False)
    return entry[1]


def _dtype_of(v) -> np.dtype:
    dt = getattr(v, "dtype", None)
    return np.dtype(dt if dt is not None else np.asarray(v).dtype)


def _describe(tree) -> str:
    def one(v):
        return f"{_dtype_of(v).name}{list(np.shape(v))}"

    try:
        return str(jtu.tree_map(one, tree)).replace("'", "")
    except Exception:  # noqa: BLE001 - only for a message
        return type(tree).__name__


def trace_boxed(fn, box: Box, args, who: str = "tljax.bound") -> Graph:
    """`trace(fn, box.lower, *args)`, with a failure while tracing explained in terms of the box.

    A box of the wrong shape or structure typically surfaces as a JAX error deep in the user's
    code (a `dot_general` shape error, a `KeyError` from a dict input): say that it is the box.
    """
    if isinstance(fn, Graph):
        return fn
    if not callable(fn):
        raise InputError(
            f"{who}: fn must be a function or a module, got {type(fn).__name__}; call "
            f"{who}(fn, box, *args) with the model first"
        )
    try:
        return trace(fn, box.lower, *args)
    except TljaxError:
        raise
    except jax.errors.ConcretizationTypeError as err:
        raise InputError(
            f"{who}: {getattr(fn, '__name__', type(fn).__name__)} uses the value of its input in "
            "Python control flow (if / bool() / float() / int() on a traced array), which cannot "
            "be traced and so cannot be bounded. Write the branch with jnp.where or jax.lax.cond. "
            f"JAX said: {str(err).splitlines()[0]}"
        ) from err
    except KeyError as err:
        missing = err.args[0] if err.args else None
        if isinstance(box.lower, dict) and missing not in box.lower:
            raise InvalidBoxError(
                f"{who}: {getattr(fn, '__name__', 'fn')} reads key {missing!r} of its input, but "
                f"the box has keys {sorted(map(str, box.lower))}; add {missing!r} to both "
                "box.lower and box.upper (a point interval [v, v] for an input that is not varied)"
            ) from err
        raise _shape_error(fn, box, args, who, err) from err
    except (TypeError, ValueError, IndexError, AttributeError) as err:
        raise _shape_error(fn, box, args, who, err) from err


def _shape_error(fn, box, args, who, err) -> ShapeMismatchError:
    name = getattr(fn, "__name__", type(fn).__name__)
    first = (str(err).splitlines() or [""])[0]
    extra = f"; further arguments: {_describe(args)}" if args else ""
    return ShapeMismatchError(
        f"{who}: tracing {name!r} on an input shaped like the box failed with "
        f"{type(err).__name__}: {first}\n  the box: {_describe(box.lower)}{extra}\n  Give a box "
        f"shaped like {name!r}'s first argument (e.g. tljax.Box.linf(x, eps) from an example x) "
        f"and pass the other arguments after it, {who}(fn, box, *args). If the box is right, "
        "the error is in the function itself (see the cause above)."
    )


def _check_box_dtypes(box_lo) -> None:
    problems = []
    for k, v in enumerate(box_lo):
        dt = _dtype_of(v)
        wide = (np.dtype(np.float32), np.dtype(np.float64))
        if jnp.issubdtype(dt, jnp.floating) and dt not in wide:
            problems.append(f"leaf {k} is {dt.name}{list(np.shape(v))}")
    if problems:
        raise InvalidBoxError(
            "tljax.bound: the box has leaves in a narrow float format ("
            + "; ".join(problems)
            + "): bounds are computed in float32 and cannot run in that format soundly. Give a "
            "float32 box (Box(lower.astype(jnp.float32), upper.astype(jnp.float32))) for the "
            "float32 version of the program, with float_format='bf16' or 'fp16' to also cover "
            "that arithmetic in the program (float32 accumulation)."
        )


def _check_hull(input_hull):
    if input_hull is not None and not isinstance(input_hull, bool | np.bool_):
        raise InputError(
            f"tljax.bound: input_hull must be None (convolutions), True or False, got "
            f"{input_hull!r}"
        )
    return None if input_hull is None else bool(input_hull)


def _check_options(alpha_iters, alpha_lr, spec):
    if isinstance(alpha_iters, bool) or not isinstance(alpha_iters, int | np.integer):
        raise InputError(
            f"tljax.bound: alpha_iters must be an int >= 0 (alpha-CROWN's optimisation steps), "
            f"got {alpha_iters!r} ({type(alpha_iters).__name__})"
        )
    if alpha_iters < 0:
        raise InputError(
            f"tljax.bound: alpha_iters={alpha_iters} is negative; give the number of alpha-CROWN "
            "optimisation steps, >= 0 (0: plain CROWN slopes)"
        )
    try:
        lr_ok = float(alpha_lr) > 0 and np.isfinite(float(alpha_lr))
    except (TypeError, ValueError):
        lr_ok = False
    if not lr_ok:
        raise InputError(
            f"tljax.bound: alpha_lr={alpha_lr!r} must be a finite positive number (Adam's step "
            "size for alpha-CROWN, default 0.25)"
        )
    if spec is None:
        return None
    if isinstance(spec, jax.core.Tracer):
        raise InputError(
            "tljax.bound: spec is a traced value (inside jit/vmap); it is compiled into the bound "
            "program and must be concrete. Pass a per-example matrix C as an extra argument and "
            "bound `lambda x, C, *args: C @ fn(x, *args)` instead (as "
            "tljax.objectives.margin_lower_bounds does)"
        )
    try:
        spec_arr = np.asarray(spec)
    except Exception as err:
        raise InputError(
            f"tljax.bound: spec must be a numeric matrix (m, n_out), got {type(spec).__name__}"
        ) from err
    if spec_arr.dtype.kind not in "biuf":
        raise InputError(
            "tljax.bound: spec must be a numeric matrix of shape (m, n_out), got dtype "
            f"{spec_arr.dtype}"
        )
    if spec_arr.ndim < 2 or spec_arr.shape[0] == 0:
        raise InputError(
            f"tljax.bound: spec has shape {spec_arr.shape}; it must be a matrix (m, n_out) with "
            "m >= 1 rows, one per linear function of the output to bound (one row: spec[None, :])"
        )
    if not np.all(np.isfinite(spec_arr.astype(np.float64))):
        bad = np.argwhere(~np.isfinite(spec_arr.astype(np.float64)))[0]
        raise InputError(
            f"tljax.bound: spec has a non-finite entry at {tuple(int(i) for i in bad)}; every "
            "coefficient must be a finite number"
        )
    return spec_arr


_RELU_SHAPES: collections.OrderedDict = collections.OrderedDict()


def _relu_layout(fn, graph: Graph, n_box: int, arg_leaves) -> list[tuple]:
    """Input shapes of the ReLUs in tape order, cached per function and input signature."""

    key = (id(fn), graph.in_tree, tuple((a.shape, str(a.dtype)) for a in graph.in_avals))
    entry = _RELU_SHAPES.get(key)
    if entry is None or entry[0] is not fn:
        # only the tape's layout is read: the box values are placeholders
        boxes = [(jnp.zeros(a.shape, a.dtype),) * 2 for a in graph.in_avals[:n_box]]
        p = Problem.from_graph(graph, boxes, arg_leaves, options=Options())
        entry = (fn, p.relu_shapes())
        _RELU_SHAPES[key] = entry
        while len(_RELU_SHAPES) > _CACHE_SIZE:
            _RELU_SHAPES.popitem(last=False)
    return entry[1]


def _check_relu_splits(relu_splits, shapes: list[tuple]) -> None:
    """`relu_splits`: at most one entry per ReLU, each None or an int array over that ReLU's
    input (its shape, or flat) with values in {-1, 0, +1}."""
    layout = "use tljax.bounds.relu_shapes(fn, box, *args) for the layout"
    if not isinstance(relu_splits, list | tuple):
        raise InputError(
            f"tljax.bound: relu_splits must be a list with one entry (an int array or None) per "
            f"ReLU, got {type(relu_splits).__name__}; {layout}"
        )
    if len(relu_splits) > len(shapes):
        raise InputError(
            f"tljax.bound: relu_splits has {len(relu_splits)} entries but the function has "
            f"{len(shapes)} ReLU(s) (input shapes {shapes}); give at most one entry per ReLU "
            f"(trailing ReLUs may be left out: they are free); {layout}"
        )
    for k, (s, shape) in enumerate(zip(relu_splits, shapes, strict=False)):
        if s is None:
            continue
        size = int(np.prod(shape, dtype=np.int64))
        got = tuple(np.shape(s))
        if got != tuple(shape) and got != (size,):
            raise ShapeMismatchError(
                f"tljax.bound: relu_splits[{k}] has shape {got}, but ReLU {k} has input shape "
                f"{tuple(shape)}; give an int array of that shape (or flat, ({size},)) with +1 "
                f"(active), -1 (inactive) or 0 (free) per neuron; {layout}"
            )
        dtype = _dtype_of(s)
        if dtype.kind not in "iu":
            raise InputError(
                f"tljax.bound: relu_splits[{k}] has dtype {dtype}; give an integer array of +1, "
                "-1 and 0 (e.g. np.int8)"
            )
        if isinstance(s, jax.core.Tracer):
            continue  # values unknown under jit/vmap: the domain clipping reads only their signs
        vals = np.asarray(s)
        bad = np.argwhere((vals != -1) & (vals != 0) & (vals != 1))
        if bad.size:
            idx = tuple(int(i) for i in bad[0])
            raise InputError(
                f"tljax.bound: relu_splits[{k}] holds {int(vals[idx])} at index {idx} "
                f"({len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'}); the only values are +1 "
                "(neuron forced active), -1 (inactive) and 0 (free)"
            )


def _compute(
    graph: Graph,
    box_leaves,
    arg_leaves,
    splits=None,
    alpha=None,
    *,
    check_box=False,
    method,
    opts,
    spec,
    alpha_iters=None,
    alpha_lr=None,
):
    """`Problem.bounds` of `graph` over the box, then the invalid-box policy below. `alpha`:
    alpha-CROWN's (steps, rate) as arguments of a compiled program, in place of the static
    `alpha_iters` / `alpha_lr`."""
    if alpha is not None:
        alpha_iters, alpha_lr = alpha
    p = Problem.from_graph(graph, box_leaves, arg_leaves, options=opts, name=method)
    outs = p.bounds(method, spec, alpha_iters=alpha_iters, alpha_lr=alpha_lr, splits=splits)
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


def relu_shapes(fn, box: Box, *args) -> list[tuple]:
    """Input shapes of the ReLUs of `fn` in tape order (the layout of `bound(...,
    relu_splits=)`)."""
    fn = adapt_fn(fn)
    example = (box.lower, *args)
    graph = trace_boxed(fn, box, args, "tljax.bounds.relu_shapes")
    n_box = len(jtu.tree_leaves(box.lower))
    return _relu_layout(fn, graph, n_box, graph.flatten_inputs(*example)[n_box:])


def _check_limit(limit, who: str):
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise InputError(
            f"{who}: refine_limit must be a positive int (coefficients per pass) or None, got "
            f"{limit!r}"
        )
    return int(limit)


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
    refine_limit: int | None = None,
    lower_only: bool = False,
    input_hull: bool | None = None,
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
        differentiates through), ``"alpha-crown"`` (ReLU lower slopes and the McCormick
        weights of products optimised with Adam) or ``"taylor"`` (order-2 Taylor models: a
        degree-2 polynomial in the inputs plus a remainder per value; for programs of at most
        `TAYLOR_MAX_INPUTS` input coordinates and the real-valued program,
        ``float_format="real"`` or ``float_sound=False``: PDE residuals and other derivative
        programs on small boxes, where first-order methods lose the second-order terms).
      float_sound: also contain what the float32 program computes at every point of the box, with
        any summation order, FMA contraction and flush-to-zero, and round this computation
        outward. With False, bounds are for the real-valued network computed in plain float
        (what peers report).
      float_format: the program's arithmetic when it is not float32: ``"bf16"`` or ``"fp16"``
        (float32 accumulation), or ``"real"``: the program's mathematical function, no program
        rounding charged while the bound computation still rounds outward (in float64 under
        `jax.enable_x64`, rigorous bounds of the real-valued network).
      spec: optional matrix `C` of shape (m, n_out): bound `C @ y` (y the flattened single
        output) directly, as robustness margins need.
      certificate: also return a `Certificate` (IBP / CROWN / CROWN-IBP / alpha-CROWN) checkable
        in exact arithmetic by `tljax.bounds.check` (with `relu_splits`, about the split domain);
        with method "taylor", a claim about the real-valued program that `check` re-derives by
        Taylor models in ball arithmetic.
      alpha_iters, alpha_lr: alpha-CROWN's optimisation budget.
      relu_splits: for branch and bound: a list (one entry per ReLU in the order of
        `relu_shapes(fn, box)`) of int arrays, +1 = neuron forced active, -1 = inactive, 0 = free,
        or None. The bounds then hold on the part of the box where the constraints hold (when some
        lower bound exceeds its upper bound, that part is empty).
      split_params: with `relu_splits`, a `tljax.bounds._certificate.SplitParams` (or a dict of
        its fields): beta-CROWN at the given slopes and split multipliers (a `tljax.verify` leaf's
        witness) with ReLU input bounds from alpha-CROWN over `root_box`; the bounds are those of
        an eager, float-sound run (the certificate's claims). One array output only.
      jit: compile the computation (cached per function, shapes and options). The first call
        of each is evaluated by numpy on the host instead (no compilation: tracing plus
        milliseconds; bounds equal to the compiled ones up to rounding, as sound); the second
        compiles, and a program of more than `HOST_ONLY_EQNS` equations stays on the host.
        `TLJAX_FIRST_CALL=compile` compiles from the first call.
      check_box: under `jax.jit` / `jax.vmap` (a traced box), also run a
        `jax.experimental.checkify.check` that the box is valid, whose error names the offending
        entries; the call must then be inside `checkify.checkify(...)` (else JAX refuses to
        compile the unfunctionalized check). Without it an invalid traced box only makes the
        bounds NaN (see below).
      refine_limit: CROWN tightens an intermediate node only when its pass carries at most this
        many coefficients (twice the node's size times the widest node it reaches, see
        `tljax.bounds.refine_cost`); the others keep interval bounds. Bounds memory and time on
        wide convolutions with pooling (`tljax.verify` sets it from the memory it has). None:
        every node.
      lower_only: only `lower` is wanted (a verification margin): CROWN's passes from the
        outputs carry half the rows, and `upper` is the output's interval bound from the
        forward sweep (sound, looser). Methods "crown" and "crown-ibp"; alpha-CROWN's optimised
        passes and certificates bound both sides.
      input_hull: alpha-CROWN also optimises, per row, neuron and input term, planes above
        first-layer ReLUs whose input is a convolution or product of the box itself (at most
        64 terms per neuron): they reach each neuron's convex hull over the box, where CROWN's
        line reaches the triangle. None (default): convolution layers (the verivital CNN's
        open margins -0.49 -> +0.42); True: also dense layers (ACAS Xu: 0.3% narrower, twice
        the steps); False: never. Not in certificates yet (`certificate=True` leaves them out).

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
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"tljax.bound: unknown method={method!r}; choose one of {METHODS}")
    if not isinstance(box, Box):
        raise InvalidBoxError(
            f"tljax.bound: box must be a tljax.Box, got {type(box).__name__}; build one with "
            "tljax.Box(lower, upper) or tljax.Box.linf(x, eps), and pass it second: "
            "tljax.bound(fn, box, *args)"
        )
    if not getattr(box, "_validated", False):  # rebuilt as a pytree: check its concrete leaves
        _validate(box.lower, box.upper, what="tljax.bound: the input box")
    spec_arr = _check_options(alpha_iters, alpha_lr, spec)
    box_lo = jtu.tree_leaves(box.lower)
    box_hi = jtu.tree_leaves(box.upper)
    traced_box = any(isinstance(v, jax.core.Tracer) for v in box_lo + box_hi)
    opts = Options(
        float_sound=bool(float_sound),
        program=program_model(float_format),
        refine_limit=_check_limit(refine_limit, "tljax.bound"),
        matvec=traced_box,  # a mapped (or jitted) call: see Options
        lower_only=bool(lower_only),
        input_hull=_check_hull(input_hull),
    )
    fn = adapt_fn(fn)
    example = (box.lower, *args)
    _check_box_dtypes(box_lo)
    graph = trace_boxed(fn, box, args)
    n_box = len(box_lo)
    all_leaves = graph.flatten_inputs(*example)
    arg_leaves = all_leaves[n_box:]
    if relu_splits is not None:
        _check_relu_splits(relu_splits, _relu_layout(fn, graph, n_box, arg_leaves))
    if spec_arr is not None and len(graph.out_avals) != 1:
        raise InputError(
            f"tljax.bound: spec needs a function with one array output; {graph.name!r} has "
            f"{len(graph.out_avals)}: bound one output (lambda x: fn(x)[0]) or give spec=None"
        )
    if spec_arr is not None and spec_arr.reshape(spec_arr.shape[0], -1).shape[1] != int(
        np.prod(graph.out_avals[0].shape)
    ):
        raise InputError(
            f"tljax.bound: spec has {spec_arr.reshape(spec_arr.shape[0], -1).shape[1]} columns "
            f"but the output of {graph.name!r} has {int(np.prod(graph.out_avals[0].shape))} "
            "elements; give spec of shape (m, output size) (the output flattened row-major)"
        )
    if split_params is not None and (relu_splits is None or method not in ("crown", "alpha-crown")):
        raise InputError("split_params needs relu_splits and method 'crown' or 'alpha-crown'")
    if split_params is not None and len(box_lo) != 1:
        raise InputError("split_params needs a single-array box")
    if method == "affine" and relu_splits is not None:
        raise InputError("relu_splits needs method 'crown' or 'alpha-crown' (got 'affine')")
    if method == "affine" and certificate:
        raise InputError(
            "tljax.bound: certificate=True supports methods 'ibp', 'crown', 'alpha-crown' and "
            "'taylor'; the checker has no affine rule yet: use method='crown' or 'alpha-crown'"
        )
    boxes = list(zip(box_lo, box_hi, strict=True))
    if (
        refine_limit is None
        and method in PASS_BYTES
        and not traced_box
        and split_params is None
        and relu_splits is None
    ):
        # never ask for more memory than there is: the widest passes keep interval bounds
        limit = _memory_limit(fn, graph, boxes, arg_leaves, method, opts)
        if limit is not None:
            opts = dataclasses.replace(opts, refine_limit=limit)
    kw = {
        "method": method,
        "opts": opts,
        "spec": spec_arr,
        "alpha_iters": alpha_iters,
        "alpha_lr": alpha_lr,
    }
    # concrete boxes were checked above; checkify.check cannot be staged outside checkify
    check = bool(check_box) and traced_box
    if split_params is not None:
        return _split_bound(
            graph, n_box, boxes, arg_leaves, relu_splits, split_params, certificate, kw
        )
    try:
        if jit:
            # compiler_options are only allowed on a top-level jit, not inside a user's jit/vmap.
            nested = any(
                isinstance(v, jax.core.Tracer)
                for v in jtu.tree_leaves((boxes, arg_leaves, relu_splits))
            )
            copts = _compiler_options()
            if method in ("affine", "taylor"):
                # XLA:CPU's fusion emitters inline the zonotope's long elementwise chains (pooling
                # layers) into kernels that recompute shared producers: minutes instead of ms.
                copts["xla_cpu_use_fusion_emitters"] = False
            # alpha-CROWN's step count and rate are arguments of the compiled program: changing
            # them does not recompile (0 steps is plain CROWN, compiled as such)
            steps = method == "alpha-crown" and alpha_iters > 0
            static = {k: v for k, v in kw.items() if not (steps and k.startswith("alpha_"))}
            alpha = (np.int32(alpha_iters), np.float32(alpha_lr)) if steps else None
            key = (
                nested,
                tuple(sorted(copts.items())),
                id(fn),
                graph.in_tree,
                tuple((a.shape, str(a.dtype)) for a in graph.in_avals),
                method,
                opts,
                None if spec_arr is None else (spec_arr.shape, spec_arr.tobytes()),
                steps or (alpha_iters, alpha_lr),
                check,
            )
            entry = _CACHE.get(key)
            if entry is None or entry[0] is not fn:
                # [fn, the jitted program (made when first needed), how the next call runs:
                # "host" (first call), "jit", or "host always" (too large to compile on reuse),
                # the traced program of a "host always" one, its host callback (nested calls)]
                entry = [fn, None, "host", None, None]
                _CACHE[key] = entry
                while len(_CACHE) > _CACHE_SIZE:
                    _CACHE.popitem(last=False)
            _CACHE.move_to_end(key)
            outs = None
            run = ft.partial(_compute, graph, check_box=check, **static)
            if entry[2] != "jit" and not nested and _host_first_calls():
                trips = max(int(alpha_iters), 1) if method == "alpha-crown" else 1
                outs, size, traced = _host_call(
                    run, (boxes, arg_leaves, relu_splits, alpha), entry[3], trips
                )
                host = outs is not None and size > HOST_ONLY_EQNS
                entry[2], entry[3] = ("host always", traced) if host else ("jit", None)
            if nested and entry[2] != "jit" and not check and _host_first_calls():
                outs = _nested_host_call(entry, run, (boxes, arg_leaves, relu_splits, alpha))
            if outs is None:
                if entry[1] is None:
                    entry[1] = jax.jit(
                        run,
                        # jaxlib 0.11 lacks some XLA:CPU flags: probed by compiling, so only here
                        compiler_options=None
                        if nested
                        else compat.supported_compiler_options(copts),
                    )
                try:
                    outs = entry[1](boxes, arg_leaves, relu_splits, alpha)
                except ValueError as err:
                    if "compiler_options" not in str(err):
                        raise
                    # called inside a user's trace with concrete values: compile as a nested jit
                    plain = jax.jit(run)
                    _CACHE[key] = [fn, plain, "jit", None, None]
                    outs = plain(boxes, arg_leaves, relu_splits, alpha)
        else:
            outs = _compute(graph, boxes, arg_leaves, relu_splits, check_box=check, **kw)
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise _out_of_memory(err, fn, graph, boxes, arg_leaves, method, opts) from err
    except UnsupportedPrimitiveError as err:
        ints = [
            f"leaf {k}: {_dtype_of(v).name}{list(np.shape(v))}"
            for k, v in enumerate(box_lo)
            if _dtype_of(v).kind in "biu"
        ]
        if not ints:
            raise
        raise UnsupportedPrimitiveError(
            f"{err}\n  The box has integer leaves ({'; '.join(ints)}): bounds carry integer "
            "inputs only through comparisons, reshapes and selections, never through arithmetic "
            "(integer overflow and rounding are not modelled). Give a float box "
            "(Box(lower.astype(jnp.float32), upper.astype(jnp.float32))) for a function that "
            "computes with x as a number: its bounds hold for every integer in the box too."
        ) from err
    lows = [o[0] for o in outs]
    highs = [o[1] for o in outs]
    if spec_arr is not None:
        lower, upper = lows[0], highs[0]
    else:
        lower, upper = graph.unflatten_outputs(lows), graph.unflatten_outputs(highs)
    cert = None
    if certificate:
        cert = make_certificate(
            graph, n_box, boxes, arg_leaves, bounds=(lows, highs), relu_splits=relu_splits, **kw
        )
    return _with_contracts(
        Bounds(lower, upper, method=method, float_sound=opts.float_sound, certificate=cert), graph
    )


def _with_contracts(b: Bounds, graph) -> Bounds:
    """`b` with `kernel_contracts` (the graph's kernel contracts as plain data)."""

    contracts = b.certificate.kernel_contracts if b.certificate is not None else _contracts(graph)
    return dataclasses.replace(b, kernel_contracts=contracts)


def _split_bound(graph, n_box, boxes, arg_leaves, relu_splits, split_params, certificate, kw):
    """`bound(..., relu_splits=, split_params=)`: the eager beta-CROWN run of `make_certificate`."""

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
