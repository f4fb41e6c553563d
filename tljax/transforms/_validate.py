"""`validate(original, transformed, box)`: check a transformation's claim and certify its deviation.

Three kinds of evidence, each recorded with its time:

1. **Points.** On a set of inputs (box corners, centre and random points of the box, or zeros,
   ones and random values without a box, or the caller's `inputs`) the two graphs are evaluated
   under the `exact` semantics and compared against the claim (equal for exact passes; within
   ``atol + rtol*|o|`` for a stated tolerance; two enclosures that do not overlap prove a
   difference), and executed in float32 (op by op, or compiled whole for `float_mode="jit"`
   claims) and compared bit for bit where the claim says so. For an emulation claim the float
   results of the transformed graph must equal the original under the named semantics
   (``float[bf16]``). Every violation is reported with the input that shows it.
2. **Certified deviation over the box.** CROWN bounds ``d(x) = t(x) - o(x)`` on one combined
   graph that runs both on the same `x` (`float_sound=True` by default: the bound holds for the
   float32 programs as executed, any summation order). The result is
   ``max |d|`` over the box and every output element. Both graphs are given to the bound
   recorder with constants folded and scans unrolled (`for_bounds`). When the two graphs have
   the same normal form (`normal_form`: inline, dce, constant folding, unrolling, cse, all of
   which keep float results; compared as expression DAGs by `fingerprints`) they are the same
   float program and the deviation is 0 with no
   relaxation: CROWN on two copies of one network relaxes each copy's unstable ReLUs on its own
   and would report a gap that is not there.
3. **Precision lowering.** A graph with `reduce_precision` cannot be bounded directly, so every
   rounding becomes ``v + (u|v| + eta) * t`` with a noise input `t` in [-1, 1] (sound for
   round-to-nearest to p bits, `u = 2^-p`), and CROWN bounds the difference over the box times
   the noise cube: the certified deviation is then the worst-case float error of the lowered
   program relative to the original over the box. An IBP pass checks that no rounding site can
   overflow (else the deviation is infinite). This bounds the *difference graph*, not the
   lowered graph's range: `tljax.bound(..., float_format="bf16")` gives bounds of the bf16
   program's values, whose width is the output range plus error and cannot separate the two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from fractions import Fraction

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ..bounds import METHODS, Box, bound, trace_boxed
from ..core import Graph, InputError, ShapeMismatchError, TljaxError, compat, eval_jaxpr, trace
from ..interpret import get_semantics
from ..interpret import run as run_semantics
from ._build import pass_semantics
from ._precision import has_rounding, relax_rounding
from ._promises import Promise
from ._provenance import PassRecord, attach_validation, provenance

compat.register_exclusion(__file__)


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One violation of a claim, with the input that shows it.

    Attributes:
      check: ``"exact"``, ``"float"`` or ``"emulation"``.
      input_label: how the input was chosen (``"lower corner"``, ``"random 2"``, ``"given 0"``).
      inputs: the flat input leaves (numpy arrays).
      output: index of the output leaf.
      index: index of the element in that leaf.
      original, transformed: the two values (floats; midpoints for enclosures).
      deviation: a certain lower bound of ``|t - o|`` at this element (exact check), or the float
        difference.
      allowed: what the claim allowed here.
    """

    check: str
    input_label: str
    inputs: tuple
    output: int
    index: tuple
    original: float
    transformed: float
    deviation: float
    allowed: float

    def __str__(self) -> str:
        xs = "; ".join(
            np.array2string(np.asarray(x), precision=9, threshold=12, separator=", ")
            for x in self.inputs
        )
        return (
            f"{self.check} check at input '{self.input_label}' = {xs}: output "
            f"{self.output}{list(self.index)} "
            f"original {self.original!r}, transformed {self.transformed!r}, |t-o| >= "
            f"{self.deviation:.6g} "
            f"(claim allows {self.allowed:.3g})"
        )


@dataclasses.dataclass(frozen=True)
class Stage:
    """One kind of point check: how many inputs, the largest deviation seen, violations, time."""

    name: str
    inputs: int = 0
    max_deviation: float = 0.0
    violations: int = 0
    seconds: float = 0.0
    skipped: str = ""
    proven: float = 0.0  # exact stage: the largest difference proven (disjoint enclosures)

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        v = f", {self.violations} violation(s)" if self.violations else ", no violation"
        return (
            f"{self.name}: {self.inputs} input(s), max |t-o| = {self.max_deviation:.3g}{v} "
            f"({self.seconds:.2f} s)"
        )


@dataclasses.dataclass(frozen=True)
class Validation:
    """The record `validate` returns and attaches to the transformed graph's provenance.

    Attributes:
      original, transformed: graph names.
      passes: the pass records between the two graphs (from provenance).
      claim: the claim checked.
      verdict: ``"violated"`` (a claim is broken at some input: see `mismatches`),
        ``"certified"`` (a tolerance claim holds over the whole box by the certified deviation),
        ``"consistent"`` (no violation at the inputs; certified deviation reported) or
        ``"unchecked"`` (no check could run) or ``"unclaimed"`` (no claim to check: no pass
        recorded between the graphs and no `claim=`; the deviations are only reported and
        `notes` say whether the exact semantics proved the graphs different).
      stages: the point checks (exact, float, emulation).
      mismatches: up to `max_mismatches` violations, first found first.
      certified_deviation: CROWN bound of ``max |t(x) - o(x)|`` over the box (None: not run).
      certified_per_output: the same per output leaf.
      certify_method: e.g. ``"crown, float_sound"`` or
        ``"crown over box x noise[197], float_sound"``.
      certify_seconds: time of the certified stage (tracing, compiling and running CROWN).
      allowed_over_box: the claim's tolerance over the box (from an IBP bound of the original).
      notes: anything skipped or worth knowing.
      seconds: total time.
    """

    original: str
    transformed: str
    passes: tuple[PassRecord, ...]
    claim: Promise
    verdict: str
    stages: tuple[Stage, ...]
    mismatches: tuple[Mismatch, ...]
    certified_deviation: float | None
    certified_per_output: tuple[float, ...]
    certify_method: str
    certify_seconds: float
    allowed_over_box: float | None
    notes: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """No claim was violated at any checked input."""
        return self.verdict != "violated"

    def summary(self) -> str:
        dev = (
            "not certified"
            if self.certified_deviation is None
            else f"certified max|t-o| <= {self.certified_deviation:.3g}"
        )
        names = "+".join(p.name for p in self.passes) or "(no recorded pass)"
        return f"{names}: {dev}, {sum(s.violations for s in self.stages)} violation(s)"

    def __str__(self) -> str:
        lines = [
            f"validate {self.original!r} -> {self.transformed!r}: {self.verdict.upper()} "
            f"({self.seconds:.2f} s)"
        ]
        if self.passes:
            for p in self.passes:
                lines.append(f"  pass {p}")
        else:
            lines.append("  passes: none recorded between the two graphs")
        lines.append(
            f"  claim: {self.claim.describe()}"
            + (f" [{self.claim.note}]" if self.claim.note else "")
        )
        for s in self.stages:
            lines.append(f"  {s}")
        if self.certified_deviation is not None:
            per = ", ".join(f"{d:.3g}" for d in self.certified_per_output)
            lines.append(
                f"  certified over the box ({self.certify_method}): max |t-o| <= "
                f"{self.certified_deviation:.4g}"
                f" (per output: {per}) ({self.certify_seconds:.2f} s)"
            )
            if self.allowed_over_box is not None:
                lines.append(f"  claim allows over the box: {self.allowed_over_box:.4g}")
        for m in self.mismatches:
            lines.append(f"  VIOLATION: {m}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Evaluation helpers.

_EAGER = pass_semantics("eager")  # op by op through calls, loops re-bound: identical on both sides


def _run_float(graph: Graph, leaves, mode: str) -> list:
    if mode == "jit":
        f = jax.jit(lambda *a: jax.core.eval_jaxpr(graph.jaxpr, graph.consts, *a))
        return [np.asarray(o) for o in f(*leaves)]
    jaxpr, consts = compat.open_jaxpr(graph.closed_jaxpr)
    return [
        np.asarray(o) for o in eval_jaxpr(_EAGER, jaxpr, consts, [jnp.asarray(x) for x in leaves])
    ]


def _run_named(graph: Graph, leaves, semantics: str) -> list:
    return list(run_semantics(graph, get_semantics(semantics), list(leaves)))


def _fraction(x) -> Fraction:
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool | int | np.integer | np.bool_):
        return Fraction(int(x))
    return Fraction(x)


def _bounds_of(v):
    """(lower, upper) object arrays of Fractions of an exact-semantics result leaf."""
    if type(v).__name__ == "Enclosure":
        return np.asarray(v.lower, dtype=object), np.asarray(v.upper, dtype=object)
    a = np.asarray(v, dtype=object)
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(*a.shape):
        out[idx] = _fraction(a[idx])
    return out, out


def _as_float(x: Fraction) -> float:
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


# ----------------------------------------------------------------------------------------------
# Inputs.


def _box_leaves(graph: Graph, box) -> tuple[list, list]:
    lo = [np.asarray(v) for v in jtu.tree_leaves(box.lower)]
    hi = [np.asarray(v) for v in jtu.tree_leaves(box.upper)]
    avals = graph.in_avals
    if len(lo) != len(avals):
        raise ShapeMismatchError(
            f"the box has {len(lo)} leaves but {graph.name!r} has {len(avals)} traced inputs; "
            "give a Box "
            "over the graph's argument (a tuple of boxes' leaves for several arguments)"
        )
    for k, (a, l) in enumerate(zip(avals, lo, strict=True)):
        if tuple(np.broadcast_shapes(l.shape, a.shape)) != tuple(a.shape):
            raise ShapeMismatchError(
                f"box leaf {k} has shape {l.shape}, the graph input is {a.str_short()}"
            )
    lo = [np.broadcast_to(l, a.shape).astype(a.dtype) for l, a in zip(lo, avals, strict=True)]
    hi = [np.broadcast_to(h, a.shape).astype(a.dtype) for h, a in zip(hi, avals, strict=True)]
    return lo, hi


def _make_inputs(graph: Graph, box, inputs, n_random: int, seed: int) -> list[tuple[str, list]]:
    if inputs is not None:
        out = []
        for k, item in enumerate(inputs):
            args = item if isinstance(item, tuple) else (item,)
            out.append((f"given {k}", [np.asarray(x) for x in graph.flatten_inputs(*args)]))
        return out
    rng = np.random.default_rng(seed)
    avals = graph.in_avals
    pts: list[tuple[str, list]] = []
    if box is not None:
        lo, hi = _box_leaves(graph, box)
        pairs = list(zip(lo, hi, strict=True))

        def between(u):  # u in [0, 1]: lo + u (hi - lo), rounded into the box's dtype
            return [(l + u(l.shape) * (h.astype(np.float64) - l)).astype(l.dtype) for l, h in pairs]

        pts.append(("lower corner", lo))
        pts.append(("upper corner", hi))
        pts.append(("centre", between(lambda shape: np.full(shape, 0.5))))
        for k in range(n_random):
            pts.append((f"random corner {k}", between(lambda shape: rng.random(shape) < 0.5)))
            pts.append((f"random {k}", between(rng.random)))
        return pts

    def fill(kind):
        out = []
        for a in avals:
            dt = np.dtype(a.dtype)
            if dt.kind == "b":
                out.append(rng.random(a.shape) < 0.5)
            elif dt.kind in "iu":
                out.append(rng.integers(0, 4, size=a.shape).astype(dt))
            elif kind == "zeros":
                out.append(np.zeros(a.shape, dt))
            elif kind == "ones":
                out.append(np.ones(a.shape, dt))
            else:
                out.append((rng.normal(size=a.shape) * kind).astype(dt))
        return out

    pts.append(("zeros", fill("zeros")))
    pts.append(("ones", fill("ones")))
    for k in range(n_random):
        pts.append((f"random normal {k}", fill(1.0)))
    pts.append(("random normal x10", fill(10.0)))
    return pts


# ----------------------------------------------------------------------------------------------
# Point checks.


def _exact_stage(original, transformed, pts, claim, mismatches, limit):
    t0 = time.perf_counter()
    atol, rtol = claim.tolerance()
    worst, violations, proven = 0.0, 0, 0.0
    for label, leaves in pts:
        try:
            ro = _run_named(original, leaves, "exact")
            rt = _run_named(transformed, leaves, "exact")
        except (TljaxError, NotImplementedError, ArithmeticError) as err:
            first = str(err).splitlines()[0]
            return Stage("exact semantics", skipped=f"{type(err).__name__}: {first}")
        for k, (o, t) in enumerate(zip(ro, rt, strict=True)):
            olo, ohi = _bounds_of(o)
            tlo, thi = _bounds_of(t)
            for idx in np.ndindex(*olo.shape):
                dlo = max(Fraction(0), tlo[idx] - ohi[idx], olo[idx] - thi[idx])
                dhi = max(thi[idx] - olo[idx], ohi[idx] - tlo[idx])
                worst = max(worst, _as_float(dhi))
                proven = max(proven, _as_float(dlo))
                mag = max(abs(_as_float(olo[idx])), abs(_as_float(ohi[idx])))
                # rtol * 0 is 0 even for an infinite rtol (no claim): never inf * 0 = NaN
                allowed = atol + (rtol * mag if mag else 0.0)
                if math.isfinite(allowed) and dlo > Fraction(allowed):
                    violations += 1
                    if len(mismatches) < limit:
                        mid_o = _as_float((olo[idx] + ohi[idx]) / 2)
                        mid_t = _as_float((tlo[idx] + thi[idx]) / 2)
                        mismatches.append(
                            Mismatch(
                                "exact", label, tuple(leaves), k, idx, mid_o, mid_t,
                                _as_float(dlo), allowed,
                            )
                        )  # fmt: skip
    return Stage(
        "exact semantics", len(pts), worst, violations, time.perf_counter() - t0, proven=proven
    )


def _float_stage(name, run_o, run_t, pts, must_equal: bool, mismatches, limit):
    t0 = time.perf_counter()
    worst, violations = 0.0, 0
    for label, leaves in pts:
        try:
            ro, rt = run_o(leaves), run_t(leaves)
        except (TljaxError, NotImplementedError) as err:
            return Stage(name, skipped=f"{type(err).__name__}: {str(err).splitlines()[0]}")
        for k, (o, t) in enumerate(zip(ro, rt, strict=True)):
            o, t = np.asarray(o), np.asarray(t)
            if o.dtype.kind in "fc":
                with np.errstate(invalid="ignore", over="ignore"):
                    d = np.abs(t.astype(np.float64) - o.astype(np.float64))
                d = np.where(np.isnan(o) & np.isnan(t), 0.0, d)
                d = np.where(np.isnan(d), np.inf, d)
            else:
                d = (o != t).astype(np.float64)
            if d.size:
                worst = max(worst, float(np.max(d)))
            if must_equal and np.any(d != 0):
                bad = np.argwhere(d != 0)
                violations += len(bad)
                if len(mismatches) < limit:
                    idx = tuple(int(i) for i in bad[0])
                    mismatches.append(
                        Mismatch(
                            name,
                            label,
                            tuple(leaves),
                            k,
                            idx,
                            float(o[idx]),
                            float(t[idx]),
                            float(d[idx]),
                            0.0,
                        )
                    )
    return Stage(name, len(pts), worst, violations, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# Certified deviation.


def _float_outputs(graph: Graph) -> list[int]:
    return [
        k for k, a in enumerate(graph.out_avals) if np.issubdtype(np.dtype(a.dtype), np.floating)
    ]


def for_bounds(graph: Graph) -> Graph:
    """The graph as the bound recorder gets it: scans unrolled, constants folded.

    Both passes keep float results (constant subexpressions are evaluated once in float32, as
    JAX evaluates them eagerly); the recorder then sees no constant subexpression and no loop.
    """
    from ._passes import constant_fold, unroll

    return constant_fold(unroll(graph))  # unrolled first: a scan's first step may fold


def normal_form(graph: Graph) -> Graph:
    """Inlined, dead code removed, constants folded, scans unrolled, common subexpressions merged:
    every step keeps the float program's results."""
    from ._passes import cse, dce, inline

    return cse(for_bounds(dce(inline(graph))))


def fingerprints(graph: Graph) -> list[str]:
    """A hash per output of the expression DAG computing it (primitive, params and operands,
    recursively; constants by their bytes, inputs by position): equal for the same computation
    whatever the order of the equations."""
    jaxpr, consts = compat.open_jaxpr(graph.closed_jaxpr)
    h: dict = {}

    def digest(*parts) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()

    def key(a) -> str:
        if compat.is_literal(a):
            v = compat.literal_value(a)
            return digest("literal", v.dtype.str, v.shape, v.tobytes())
        return h[a]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        c = np.asarray(c)
        h[v] = digest("const", c.dtype.str, c.shape, c.tobytes())
    for k, v in enumerate(jaxpr.invars):
        h[v] = digest("input", k, str(v.aval))
    for eqn in jaxpr.eqns:
        params = repr(sorted(eqn.params.items()))
        base = digest(eqn.primitive.name, params, [key(a) for a in eqn.invars], str(eqn.effects))
        for j, o in enumerate(eqn.outvars):
            if not compat.is_dropvar(o):
                h[o] = digest(base, j, str(o.aval))
    return [key(v) for v in jaxpr.outvars]


def _certify(original, transformed, box, method, float_sound):
    lo, hi = _box_leaves(original, box)
    ks = _float_outputs(original)
    if not ks:
        return None, (), "no float output", None
    # Equal normal forms are the same float program: the deviation is 0, with no relaxation.
    if float_sound and fingerprints(normal_form(original)) == fingerprints(
        normal_form(transformed)
    ):
        return 0.0, tuple(0.0 for _ in ks), "identical float programs after normalisation", None
    original, transformed = for_bounds(original), for_bounds(transformed)
    n_in = len(lo)
    relaxed = [relax_rounding(g) if has_rounding(g) else None for g in (original, transformed)]
    ns = [r.n if r is not None else 0 for r in relaxed]
    sizes = [int(np.prod(original.out_avals[k].shape)) for k in ks]

    def split(z):
        xs, rest = list(z[:n_in]), list(z[n_in:])
        return xs, [rest.pop(0) if n else None for n in ns]

    def run(i, g, xs, t, scales):
        if relaxed[i] is None:
            return jax.core.eval_jaxpr(g.jaxpr, g.consts, *xs)
        return relaxed[i](xs, t, scales=scales)

    box_lo = [jnp.asarray(v) for v in lo] + [-jnp.ones(n) for n in ns if n]
    box_hi = [jnp.asarray(v) for v in hi] + [jnp.ones(n) for n in ns if n]
    zbox = Box(box_lo, box_hi)
    what = (
        method
        + (f" over box x noise[{sum(ns)}]" if sum(ns) else "")
        + (", float_sound" if float_sound else "")
    )
    scales = [None, None]
    if sum(ns):
        # Site magnitudes over the box (interval pass on the |v|-scaled noise form): they give
        # affine noise scales, and show whether a rounding can overflow.
        for i in range(2):
            if relaxed[i] is None:
                continue

            def sites(z, i=i):
                xs, ts = split(z)
                vals = relaxed[i](xs, ts[i], sites=True)[1]
                return jnp.concatenate([jnp.ravel(v).astype(jnp.float32) for v in vals])

            sb = bound(sites, zbox, method="ibp", float_sound=float_sound)
            mag = np.maximum(
                np.abs(np.asarray(sb.lower, np.float64)), np.abs(np.asarray(sb.upper, np.float64))
            )
            over = mag >= relaxed[i].overflow()
            if np.any(over):
                top = float(np.max(mag[over]))
                return (
                    math.inf,
                    tuple(math.inf for _ in ks),
                    what,
                    f"a rounding site may overflow (|v| up to {top:.3g})",
                )
            scales[i] = relaxed[i].error_scales(mag)

    def diff(z):
        xs, ts = split(z)
        o = run(0, original, xs, ts[0], scales[0])
        t = run(1, transformed, xs, ts[1], scales[1])
        return jnp.concatenate([jnp.ravel(t[k] - o[k]).astype(jnp.float32) for k in ks])

    b = bound(diff, zbox, method=method, float_sound=float_sound)
    dev = np.maximum(
        np.abs(np.asarray(b.lower, np.float64)), np.abs(np.asarray(b.upper, np.float64))
    )
    per, start = [], 0
    for s in sizes:
        per.append(float(np.max(dev[start : start + s])) if s else 0.0)
        start += s
    return float(np.max(dev)) if dev.size else 0.0, tuple(per), what, None


def _output_magnitude(graph, box, float_sound) -> float:
    graph = for_bounds(graph)
    lo, hi = _box_leaves(graph, box)
    ks = _float_outputs(graph)

    def f(z):
        o = jax.core.eval_jaxpr(graph.jaxpr, graph.consts, *z)
        return jnp.concatenate([jnp.ravel(o[k]).astype(jnp.float32) for k in ks])

    b = bound(
        f,
        Box([jnp.asarray(v) for v in lo], [jnp.asarray(v) for v in hi]),
        method="ibp",
        float_sound=float_sound,
    )
    return float(max(np.max(np.abs(np.asarray(b.lower))), np.max(np.abs(np.asarray(b.upper)))))


# ----------------------------------------------------------------------------------------------
# Entry point.


def _graph_of(x, example, what: str, box=None) -> Graph:
    if isinstance(x, Graph):
        return x
    if not callable(x):
        raise InputError(
            f"tljax.validate: {what} must be a Graph or a function, got {type(x).__name__}"
        )
    if example is None:
        raise InputError(
            f"tljax.validate: {what} is a function, not a Graph; pass a Graph (tljax.trace) or a "
            "box / inputs to trace it with"
        )
    if box is not None:
        return trace_boxed(x, box, (), "tljax.validate")
    return trace(x, *example)


def _check_arguments(box, inputs, method, n_random, max_mismatches) -> None:
    if box is not None and not isinstance(box, Box):
        raise InputError(
            f"tljax.validate: box must be a tljax.Box, got {type(box).__name__}; build one with "
            "tljax.Box(lower, upper) (test inputs given as arrays go to inputs=[...])"
        )
    if inputs is not None and (not isinstance(inputs, list | tuple) or not inputs):
        raise InputError(
            "tljax.validate: inputs must be a non-empty list of argument tuples (or single arrays "
            f"for one-argument graphs), got {type(inputs).__name__}"
        )
    if method not in METHODS:
        raise InputError(f"tljax.validate: unknown method={method!r}; choose one of {METHODS}")
    for name, v in (("n_random", n_random), ("max_mismatches", max_mismatches)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"tljax.validate: {name}={v!r} must be an int >= 0")


def validate(
    original,
    transformed,
    box=None,
    *,
    claim: Promise | None = None,
    inputs=None,
    n_random: int = 2,
    seed: int = 0,
    exact: bool = True,
    certify: bool = True,
    method: str = "crown",
    float_sound: bool = True,
    max_mismatches: int = 5,
    attach: bool = True,
) -> Validation:
    """Checks that `transformed` keeps the promise of the passes that made it from `original`.

    Args:
      original: the input `Graph` of the passes.
      transformed: their output `Graph` (same inputs and output structure).
      box: optional `tljax.Box` over the graph's argument (leaves in the graph's input order):
        its corners, centre and random points are the test inputs, and the deviation is
        certified over it.
      claim: the `Promise` to check; default: the composed claims of the passes recorded between
        the two graphs (`tljax.transforms.provenance`), or "no claim" if there are none.
      inputs: explicit test inputs instead of generated ones: a list of argument tuples (or
        single arrays for one-argument graphs).
      n_random: random points (and random corners) per generated input set.
      seed: seed of the generated inputs.
      exact: run the exact-semantics check (skipped with a note when a primitive has no exact
        rule, e.g. an opaque exported call).
      certify: compute the certified deviation over `box` (needs a box).
      method: bound method for the certified deviation (``"crown"``, ``"ibp"``, ``"alpha-crown"``).
      float_sound: certify for the float32 programs as executed (default) rather than the reals.
      max_mismatches: how many violations to keep with their inputs.
      attach: attach the record to `transformed`'s provenance.

    Returns:
      A `Validation` (print it for a report; `.ok`, `.verdict`, `.mismatches`,
      `.certified_deviation`).

    Example:
      >>> g = tljax.trace(model, x)
      >>> folded = tljax.transforms.fold_affine(g)
      >>> v = tljax.validate(g, folded, tljax.Box.linf(x, 0.05))
      >>> print(v)
    """
    t_start = time.perf_counter()
    _check_arguments(box, inputs, method, n_random, max_mismatches)
    if claim is not None and not isinstance(claim, Promise):
        raise InputError(
            f"tljax.validate: claim must be a tljax.transforms.Promise, got {type(claim).__name__}"
        )
    example = None
    if box is not None:
        example = (box.lower,)
    elif inputs:
        example = inputs[0] if isinstance(inputs[0], tuple) else (inputs[0],)
    original = _graph_of(original, example, "original", box)
    transformed = _graph_of(transformed, example, "transformed", box)
    _check_signatures(original, transformed)
    prov = provenance(transformed)
    passes = prov.passes_since(original)
    if claim is None:
        claim = prov.claim_since(original) or Promise.nothing("no recorded pass between the graphs")
    notes: list[str] = []
    pts = _make_inputs(original, box, inputs, n_random, seed)
    mismatches: list[Mismatch] = []
    stages = []
    if exact:
        stages.append(_exact_stage(original, transformed, pts, claim, mismatches, max_mismatches))
    mode = claim.float_mode
    stages.append(
        _float_stage(
            f"float ({mode})",
            lambda l: _run_float(original, l, mode),
            lambda l: _run_float(transformed, l, mode),
            pts,
            claim.bitwise,
            mismatches,
            max_mismatches,
        )
    )
    if claim.emulates:
        stages.append(
            _float_stage(
                f"emulation ({claim.emulates} of the original)",
                lambda l: [np.asarray(o) for o in _run_named(original, l, claim.emulates)],
                lambda l: _run_float(transformed, l, "eager"),
                pts,
                True,
                mismatches,
                max_mismatches,
            )
        )
    dev, per, what, secs, allowed = None, (), "", 0.0, None
    if certify and box is not None:
        t0 = time.perf_counter()
        try:
            dev, per, what, note = _certify(original, transformed, box, method, float_sound)
            if note:
                notes.append(note)
            if dev is not None and not claim.exact and claim.atol is not None:
                allowed = claim.atol + claim.rtol * _output_magnitude(original, box, float_sound)
        except (TljaxError, NotImplementedError) as err:
            notes.append(
                f"certified deviation not computed: {type(err).__name__}: "
                f"{str(err).splitlines()[0]}"
            )
        secs = time.perf_counter() - t0
    elif certify:
        notes.append("no box given: no certified deviation")
    for s in stages:
        if s.skipped:
            notes.append(f"{s.name} skipped: {s.skipped}")
    if _no_promise(claim):
        notes.extend(_unclaimed_notes(stages, dev, box is not None and certify))
    if any(s.violations for s in stages):
        verdict = "violated"
    elif _no_promise(claim):
        verdict = "unclaimed"
    elif allowed is not None and dev is not None and dev <= allowed:
        verdict = "certified"
    elif any(not s.skipped for s in stages) or dev is not None:
        verdict = "consistent"
    else:
        verdict = "unchecked"
    result = Validation(
        original.name,
        transformed.name,
        passes,
        claim,
        verdict,
        tuple(stages),
        tuple(mismatches),
        dev,
        per,
        what,
        secs,
        allowed,
        tuple(notes),
        time.perf_counter() - t_start,
    )
    if attach:
        attach_validation(transformed, result)
    return result


def _no_promise(claim: Promise) -> bool:
    return not (claim.exact or claim.bitwise or claim.emulates or claim.atol is not None)


def _unclaimed_notes(stages, dev, certified: bool) -> list[str]:
    """With no claim nothing can be violated: say what the checks saw and what was not checked."""
    notes = [
        "no claim: nothing was checked against a promise (no pass recorded between the graphs "
        "and no claim= given); the deviations above are only observations. To check "
        "equivalence, pass claim=tljax.transforms.Promise(exact=True) (same real values) or "
        "Promise(atol=..., rtol=...)"
    ]
    exact = next((s for s in stages if s.name == "exact semantics" and not s.skipped), None)
    if exact is not None and exact.proven > 0:
        notes.append(
            f"the graphs DIFFER: the exact semantics proves |t-o| >= {exact.proven:.3g} at some "
            "checked input"
        )
    elif dev == 0:
        notes.append("the certified deviation over the box is 0: the graphs agree on all of it")
    elif exact is not None and exact.max_deviation == 0:
        notes.append(
            f"the graphs agree exactly at all {exact.inputs} checked inputs (not a proof over "
            "the whole box)"
        )
    if not certified or dev is None:
        notes.append("no certified deviation over a box was computed")
    return notes


def _check_signatures(a: Graph, b: Graph) -> None:
    problems = []
    if a.in_tree != b.in_tree:
        problems.append(f"input structures differ: {a.in_tree} vs {b.in_tree}")
    for what, xs, ys in (("input", a.in_avals, b.in_avals), ("output", a.out_avals, b.out_avals)):
        if len(xs) != len(ys):
            problems.append(f"{len(xs)} vs {len(ys)} {what}s")
            continue
        for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
            if tuple(x.shape) != tuple(y.shape) or x.dtype != y.dtype:
                problems.append(f"{what} {k}: {x.str_short()} vs {y.str_short()}")
    if problems:
        raise ShapeMismatchError(
            f"validate: {a.name!r} and {b.name!r} do not have the same signature: "
            + "; ".join(problems)
            + ". A transformation must keep inputs and outputs; compare graphs of the same "
            "function."
        )
