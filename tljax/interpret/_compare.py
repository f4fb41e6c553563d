"""`tljax.compare`: run one graph under several semantics and measure each against `exact`.

Errors are computed exactly (the computed float is read as the dyadic it is, the difference to the
exact value is formed in exact arithmetic) and only then rounded to float64 for the table. Where
the exact value is an enclosure (a transcendental function was involved), the error reported is
``|computed - midpoint| + radius``, an upper bound, and the row is flagged ``~``.

With ``per_equation=True`` every equation's output is recorded under every semantics by deriving,
for each semantics, a variant whose rules wrap the original rules (no second walker): the
comparison is then keyed by (sub-jaxpr path, equation position), so the first equation whose
error jumps is visible together with its source line and layer name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax.tree_util as jtu
import numpy as np

from ..core import (
    HIGHER_ORDER,
    Graph,
    InputError,
    Semantics,
    compat,
    eval_closed,
    format_contracts,
    kernel_contracts,
    trace,
)
from . import _exact_values as ev
from ._exact_results import floor_log2, format_of_dtype
from ._registry import get_semantics, run
from ._rounding import Format

compat.register_exclusion(__file__)


@dataclasses.dataclass(frozen=True)
class ErrorStats:
    """Error of one computed tensor against the exact one.

    Attributes:
      max_abs: max |computed - exact| (float64, rounded from the exact difference).
      max_rel: max |computed - exact| / |exact| (inf where exact is 0 and computed is not).
      max_ulp: max distance in units in the last place of the exact value in the computed format
        (nan for integer / bool tensors).
      enclosure: the exact value was an enclosure; the numbers are upper bounds
        (distance to the midpoint plus the radius).
      nonfinite: number of NaN / inf entries in the computed tensor (their error counts as inf).
      size: number of entries.
      argmax_ulp: index of the worst entry (by ulp, or by abs error for integers), or None.
    """

    max_abs: float
    max_rel: float
    max_ulp: float
    enclosure: bool = False
    nonfinite: int = 0
    size: int = 0
    argmax_ulp: tuple | None = None


@dataclasses.dataclass(frozen=True)
class OutputRow:
    """Per output leaf: its name, shape, dtype and the stats of each compared semantics."""

    leaf: str
    shape: tuple
    dtype: str
    stats: dict


@dataclasses.dataclass(frozen=True)
class EquationRow:
    """Per equation: where it is, what it is, and the stats of each compared semantics.

    Attributes:
      index: order in which the exact semantics evaluated it.
      path: one ``(position of the calling equation, label)`` per enclosing higher-order
        equation, e.g. ``((2, "custom_jvp(relu)"), (0, "jit(relu)"))`` or
        ``((4, "scan[step 2]"),)``.
      position: the equation's index inside its (sub-)jaxpr.
      primitive: primitive name.
      output: output index for multiple-result primitives.
      source: ``file.py:line:col (function)`` of the user code.
      name_stack: the `jax.named_scope` chain (layer names).
      stats: ``{semantics name: ErrorStats}``; a semantics that took another branch is absent.
    """

    index: int
    path: tuple
    position: int
    primitive: str
    output: int
    source: str
    name_stack: str
    stats: dict

    @property
    def where(self) -> str:
        """``"2:custom_jvp(relu)/0:jit(relu)/0"``: calling positions and labels, then the
        position."""
        levels = [f"{p}:{label}" for p, label in self.path]
        return "/".join(levels + [str(self.position)]) + (f"#{self.output}" if self.output else "")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Result of `compare`: output rows, optional equation rows, and failures.

    `str(comparison)` is a readable table; `first_divergence(name, ulp)` finds the first equation
    whose error exceeds a threshold. `kernel_contracts` lists the `tljax.kernel`s of the graph:
    exact and emulated semantics walk their references, "reference" runs the platform's
    implementation, so the numbers for those semantics rest on the kernels' contracts.
    """

    name: str
    exact: str
    semantics: tuple
    outputs: list
    equations: list | None = None
    failures: dict = dataclasses.field(default_factory=dict)
    kernel_contracts: tuple = ()

    def first_divergence(self, semantics: str, ulp: float = 1.0) -> EquationRow | None:
        """The first equation (in evaluation order) whose max ulp error under `semantics` is
        above `ulp`."""
        for row in self.equations or []:
            s = row.stats.get(semantics)
            if s is not None and (s.max_ulp > ulp or (math.isnan(s.max_ulp) and s.max_abs > 0)):
                return row
        return None

    def __str__(self) -> str:
        return format_comparison(self)


# ----------------------------------------------------------------------------------------------
# Error measurement.


def _format_of(sem: Semantics | None, computed: np.ndarray) -> Format | None:
    """The format whose ulp is the unit: a float semantics' target format, else the dtype's."""
    fmt = getattr(getattr(sem, "options", None), "format", None)
    if isinstance(fmt, Format):
        return fmt
    dt = getattr(computed, "source_dtype", None) if computed.dtype == object else computed.dtype
    if dt is not None and ev.is_float_dtype(dt):
        return format_of_dtype(dt)
    return None


def _ball_mid_rad(b: np.ndarray) -> tuple[ev.Dy, ev.Dy]:
    def parts(f):
        ms, es = [], []
        for x in b.flat:
            m, e = f(x).man_exp()
            ms.append(int(m))
            es.append(int(e))
        if not ms:
            return ev.Dy(np.zeros(b.shape, np.int64), 0)
        e0 = min(e for m, e in zip(ms, es, strict=True) if m) if any(ms) else 0
        arr = np.array(
            [m << (e - e0) if m else 0 for m, e in zip(ms, es, strict=True)], dtype=object
        )
        return ev.Dy(arr.reshape(b.shape), e0)

    return parts(lambda x: x.mid()), parts(lambda x: x.rad())


def _floor_log2_abs(v) -> np.ndarray:
    """floor(log2|v|) per entry of a Dy / Q (entries that are 0 get a very small number)."""
    if isinstance(v, ev.Dy):
        bl = ev.bitlen(v.m)
        return np.where(bl > 0, bl - 1 + v.e, -(1 << 40))
    out = np.empty(v.shape, np.int64)
    for i in np.ndindex(*v.shape):
        x = v.q[i]
        out[i] = floor_log2(abs(int(x.p)), int(x.q)) if x != 0 else -(1 << 40)
    return out


def _scaled_f64(v, shift: np.ndarray) -> np.ndarray:
    """|v| * 2**shift per entry, as float64, without overflow from big intermediate ints."""
    if isinstance(v, ev.Dy):
        return np.abs(ev.approx_f64_scaled(v.m, v.e + shift))
    return np.abs(np.ldexp(ev.approx_f64(v), shift.astype(np.int64)))


def _dy_add(a: ev.Dy, b: ev.Dy) -> ev.Dy:
    _, (x, y), e = ev.unify(a, b)
    return ev.Dy(ev.obj(x) + ev.obj(y), e)


def error_stats(exact_value, computed, fmt: Format | None, *, dtype=None) -> ErrorStats:
    """Exact-then-rounded error statistics of `computed` against an internal exact value.

    `computed` is an array (any float / int / bool dtype, or an exact-semantics result), or an
    internal exact value (then `dtype` says whether it is a float tensor).
    """
    if ev.is_value(computed):
        if isinstance(computed, ev.Poison):
            raise ev.ExactDomainError(computed.message)
        if isinstance(computed, ev.Ball):
            computed = np.asarray(computed.b)
        else:
            from ._exact_results import ExactArray

            computed = ExactArray(ev.to_fractions(computed), dtype)
    c = np.asarray(computed)
    if isinstance(exact_value, ev.Poison):
        raise ev.ExactDomainError(exact_value.message)
    if tuple(c.shape) != tuple(exact_value.shape):
        c = np.broadcast_to(c, exact_value.shape)
    size = int(c.size)
    enclosure = isinstance(exact_value, ev.Ball)
    if size == 0:
        return ErrorStats(0.0, 0.0, 0.0, enclosure, 0, 0, None)
    comp_rad = None
    if c.dtype == object:  # exact-semantics results (ExactArray / Enclosure) compared to exact
        src = getattr(computed, "source_dtype", None)
        is_float = src is not None and ev.is_float_dtype(src)
        finite = np.ones(c.shape, bool)
        comp = ev.lift_array(np.asarray(c).view(np.ndarray))
        if isinstance(comp, ev.Ball):
            comp, comp_rad = _ball_mid_rad(comp.b)
            enclosure = True
    elif ev.is_float_dtype(c.dtype):
        is_float = True
        f = c.astype(np.float64)
        finite = np.isfinite(f)
        comp = ev.decompose_float(np.where(finite, f, 0.0))
    else:
        is_float = False
        finite = np.ones(c.shape, bool)
        comp = ev.lift_array(c.astype(np.int64))
    if isinstance(exact_value, ev.Ball):
        ref, rad = _ball_mid_rad(exact_value.b)
    else:
        ref, rad = exact_value, None
    if comp_rad is not None:
        rad = comp_rad if rad is None else _dy_add(rad, comp_rad)
    cls, (a, b), e = ev.unify(comp, ref)
    if cls is ev.Dy:
        diff = ev.Dy(
            np.abs(ev.obj(a) - ev.obj(b))
            if a.dtype == object or b.dtype == object
            else np.abs(a - b),
            e,
        )
    else:
        diff = ev.Q(np.abs(a - b))
    if rad is not None:  # radii are dyadic; the difference is dyadic unless `comp` was rational
        diff = _dy_add(diff, rad) if isinstance(diff, ev.Dy) else ev.Q(diff.q + ev.to_q(rad).q)
    abs_err = np.abs(ev.approx_f64(diff))
    mag = np.abs(ev.approx_f64(ref))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(
            mag > 0, abs_err / np.where(mag > 0, mag, 1.0), np.where(abs_err > 0, np.inf, 0.0)
        )
    if fmt is not None and is_float:
        k = _floor_log2_abs(ref)
        u = np.maximum(k, fmt.emin) - fmt.precision + 1
        ulp = _scaled_f64(diff, -u)
    else:
        ulp = np.full(c.shape, np.nan)
    abs_err = np.where(finite, abs_err, np.inf)
    rel = np.where(finite, rel, np.inf)
    ulp = np.where(finite, ulp, np.inf)
    key = ulp if fmt is not None and is_float else abs_err
    worst = tuple(
        int(i)
        for i in np.unravel_index(
            int(np.nanargmax(key)) if not np.all(np.isnan(key)) else 0, c.shape
        )
    )
    return ErrorStats(
        float(np.max(abs_err)),
        float(np.max(rel)),
        float(np.nanmax(ulp)) if not np.all(np.isnan(ulp)) else math.nan,
        enclosure,
        int(np.sum(~finite)),
        size,
        worst,
    )


# ----------------------------------------------------------------------------------------------
# Recording equation outputs through a derived semantics (the one walker does the walking).


def _positions(jaxpr, out: dict) -> dict:
    """id(eqn) -> its index in its own (sub-)jaxpr, for the graph and every sub-jaxpr."""
    for i, eqn in enumerate(jaxpr.eqns):
        out[id(eqn)] = (i, eqn)
        if eqn.primitive in HIGHER_ORDER:
            for sub in compat.sub_jaxprs(eqn):
                _positions(sub.jaxpr, out)
    return out


_CALLS = compat.CALL_PRIMITIVES


def recording(sem: Semantics, store: dict, positions: dict) -> Semantics:
    """A variant of `sem` that records each equation's outputs in `store`.

    Keys are ``(levels, position)``: `levels` holds one ``(position of the calling equation,
    walker path label)`` per enclosing higher-order equation, so two calls of the same function
    (which share one sub-jaxpr) and the steps of an unrolled scan stay apart. It evaluates op by
    op: higher-order primitives are recursed into and loops are unrolled (``traceable=False``), so
    every equation has a concrete value. Equations the walker synthesises (scan slicing and
    stacking) are not recorded.
    """
    stack: list[int] = []
    layers: list[str] = []  # name stacks of the calling equations: sub-jaxprs restart theirs
    sources: list[str] = []  # library code (jax.nn.relu) has no user line: show the caller's

    def position(ctx):
        pos = positions.get(id(ctx.eqn))
        return pos[0] if pos is not None and pos[1] is ctx.eqn else None

    def record(ctx, out):
        pos = position(ctx)
        if pos is not None and len(stack) == len(ctx.path):
            layer = "/".join(n for n in [*layers, compat.name_stack(ctx.eqn)] if n)
            src = compat.source_line(ctx.eqn)
            if not src.strip() or src == "<unknown source>":
                src = next((s for s in reversed(sources) if s.strip()), src)
            store[(tuple(zip(stack, ctx.path, strict=True)), pos)] = (ctx.eqn, out, layer, src)

    def wrap(rule):
        def recorder(ctx, *args, **params):
            out = rule(ctx, *args, **params)
            record(ctx, out)
            return out

        return recorder

    def enter(prim):
        def higher_order(ctx, *args, **params):
            if prim in _CALLS and sem.call_rules:
                call_rule = sem.call_rules.get(compat.call_name(ctx.eqn))
                if call_rule is not None:  # the semantics treats this call as one unit
                    return wrap(call_rule)(ctx, *args, **params)
            pos = position(ctx)
            stack.append(-1 if pos is None else pos)
            layers.append(compat.name_stack(ctx.eqn))
            sources.append(compat.source_line(ctx.eqn))
            try:
                return HIGHER_ORDER[prim](ctx, list(args))
            finally:
                stack.pop()
                layers.pop()
                sources.pop()

        return higher_order

    rules = {p: wrap(r) for p, r in sem.rules.items()}
    for prim in HIGHER_ORDER:
        if prim not in rules:
            rules[prim] = enter(prim)
    default = wrap(sem.default_rule) if sem.default_rule is not None else None
    return sem.derive(rules=rules, default_rule=default, recurse=True, traceable=False)


def _raw_run(graph: Graph, sem: Semantics, leaves: list) -> list:
    """Outputs before `finalize` (the exact semantics' internal values)."""
    lift_in = sem.lift_input or sem.lift
    vals = []
    for k, (x, a) in enumerate(zip(leaves, graph.in_avals, strict=True)):
        try:
            vals.append(lift_in(x, a))
        except InputError as err:
            raise InputError(f"input leaf {k} ({a}) of {graph.name!r}: {err}") from err
    return eval_closed(sem, graph.closed_jaxpr, vals)


def _leaf_names(graph: Graph) -> list[str]:
    n = len(graph.out_avals)
    try:
        tree = jtu.tree_unflatten(graph.out_tree, list(range(n)))
        flat, _ = jtu.tree_flatten_with_path(tree)
        return ["out" + jtu.keystr(p) for p, _ in flat]
    except Exception:  # noqa: BLE001 - names are cosmetic
        return [f"out[{i}]" for i in range(n)]


def _as_list(x) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


def compare(
    fn,
    *inputs,
    semantics: Sequence[str | Semantics] = ("reference",),
    per_equation: bool = False,
    exact: str | Semantics = "exact",
) -> Comparison:
    """Runs `fn(*inputs)` under several semantics and measures each against `exact`.

    Args:
      fn: a function, module or `tljax.Graph`.
      *inputs: the inputs (the same for every semantics).
      semantics: names (``"reference"``, ``"float[bf16]"``, ...) or `Semantics` to compare. Any
        semantics whose values are arrays works.
      per_equation: also compare every equation's output (evaluated op by op, recursing into
        jit / cond / scan), keyed by sub-jaxpr path and position, with source line and layer.
      exact: the exact semantics to measure against (``"exact[256]"`` for wider enclosures).

    Returns:
      A `Comparison`; ``print(result)`` shows the table.

    Example:
      >>> res = tljax.compare(mlp, params, x, semantics=["reference", "float[bf16]"],
      ...                     per_equation=True)
      >>> print(res)
      >>> res.first_divergence("float[bf16]", ulp=1.0).source
    """
    graph = fn if isinstance(fn, Graph) else trace(fn, *inputs)
    leaves = graph.flatten_inputs(*inputs)
    ex_sem = get_semantics(exact)
    sems = [get_semantics(s) for s in semantics]
    names = [s.name for s in sems]
    exact_out = _raw_run(graph, ex_sem, leaves)
    failures: dict[str, str] = {}
    outs: dict[str, list] = {}
    for s in sems:
        try:
            outs[s.name] = run(graph, s, leaves)
        except Exception as err:  # noqa: BLE001 - one failing semantics must not hide the others
            failures[s.name] = f"{type(err).__name__}: {err}"
    rows = []
    for k, (name, ex_v, aval) in enumerate(
        zip(_leaf_names(graph), exact_out, graph.out_avals, strict=True)
    ):
        stats = {}
        for s in sems:
            if s.name in outs:
                comp = np.asanyarray(outs[s.name][k])
                stats[s.name] = error_stats(ex_v, comp, _format_of(s, comp))
        rows.append(OutputRow(name, tuple(aval.shape), str(aval.dtype), stats))
    equations = None
    if per_equation:
        equations = _per_equation(graph, leaves, ex_sem, sems, failures)
    return Comparison(
        graph.name, ex_sem.name, tuple(names), rows, equations, failures, kernel_contracts(graph)
    )


def _per_equation(graph, leaves, ex_sem, sems, failures) -> list:
    positions = _positions(graph.jaxpr, {})
    ex_store: dict = {}
    _raw_run(graph, recording(ex_sem, ex_store, positions), leaves)
    stores: dict[str, dict] = {}
    for s in sems:
        if s.name in failures:
            continue
        st: dict = {}
        try:
            _raw_run(graph, recording(s, st, positions), leaves)
        except Exception as err:  # noqa: BLE001
            failures[s.name + " (per equation)"] = f"{type(err).__name__}: {err}"
        stores[s.name] = st
    rows = []
    for idx, (key, (eqn, ex_out, layer, src)) in enumerate(ex_store.items()):
        ex_list = _as_list(ex_out) if eqn.primitive.multiple_results else [ex_out]
        for j, ex_v in enumerate(ex_list):
            stats = {}
            for s in sems:
                got = stores.get(s.name, {}).get(key)
                if got is None:
                    continue
                vals = _as_list(got[1]) if eqn.primitive.multiple_results else [got[1]]
                dtype = eqn.outvars[j].aval.dtype
                if ev.is_value(vals[j]):  # another exact semantics
                    fmt = format_of_dtype(dtype) if ev.is_float_dtype(dtype) else None
                    stats[s.name] = error_stats(ex_v, vals[j], fmt, dtype=dtype)
                    continue
                try:
                    comp = np.asarray(vals[j])
                except Exception:  # noqa: BLE001 - a value that is not an array: not comparable
                    continue
                if comp.dtype == object:
                    continue
                stats[s.name] = error_stats(ex_v, comp, _format_of(s, comp))
            rows.append(
                EquationRow(
                    idx,
                    tuple(key[0]),
                    key[1],
                    eqn.primitive.name,
                    j,
                    src,
                    layer,
                    stats,
                )
            )
    return rows


# ----------------------------------------------------------------------------------------------
# Tables.


def _num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.2e}"


def _cell(s: ErrorStats | None) -> tuple[str, str, str]:
    if s is None:
        return ("n/a", "", "")
    flag = "~" if s.enclosure else ""
    nf = f" ({s.nonfinite} nonfinite)" if s.nonfinite else ""
    return (flag + _num(s.max_abs), flag + _num(s.max_rel), flag + _num(s.max_ulp) + nf)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def format_comparison(c: Comparison, max_equations: int = 60) -> str:
    head = (
        f"compare {c.name!r} against {c.exact!r} (errors computed exactly, shown rounded; "
        "'~' = exact value is an enclosure, numbers are upper bounds)"
    )
    rows = []
    for r in c.outputs:
        for k, name in enumerate(c.semantics):
            a, rel, u = _cell(r.stats.get(name))
            rows.append(
                [
                    r.leaf if k == 0 else "",
                    f"{r.dtype}{list(r.shape)}" if k == 0 else "",
                    name,
                    a,
                    rel,
                    u,
                ]
            )
    parts = [head, _table(["output", "type", "semantics", "max abs", "max rel", "max ulp"], rows)]
    if c.equations is not None:
        eq_rows = []
        for row in c.equations[:max_equations]:
            cells = [str(row.index), row.where, row.primitive]
            for name in c.semantics:
                s = row.stats.get(name)
                cells.append(
                    ("~" if s and s.enclosure else "")
                    + (
                        _num(s.max_ulp)
                        if s and not math.isnan(s.max_ulp)
                        else (_num(s.max_abs) if s else "n/a")
                    )
                )
            cells += [row.name_stack or "", row.source]
            eq_rows.append(cells)
        header = (
            ["#", "where", "primitive"] + [f"ulp {n}" for n in c.semantics] + ["layer", "source"]
        )
        parts.append("per equation (max ulp; abs error for integer/bool outputs):")
        parts.append(_table(header, eq_rows))
        if len(c.equations) > max_equations:
            parts.append(f"... {len(c.equations) - max_equations} more equations (see .equations)")
    for name, msg in c.failures.items():
        parts.append(f"semantics {name!r} failed: {msg.splitlines()[0]}")
    if c.kernel_contracts:
        parts.append(format_contracts(c.kernel_contracts))
    return "\n".join(parts)


__all__ = [
    "Comparison",
    "EquationRow",
    "ErrorStats",
    "OutputRow",
    "compare",
    "error_stats",
]
