"""Certified PINN residuals: sup |f| over a whole continuous domain by adaptive input branching.

A physics-informed network `u(z)` (z = (t, x, ...)) is certified by bounding three programs over
its domain: the PDE residual (a JAX function of u and its partial derivatives), the initial error
and the boundary error. Each is a scalar function of a low-dimensional input, so `certify_sup`
covers the domain with boxes (leaves), bounds every leaf with `tljax.bounds` (one compiled,
vmapped bound program for a whole batch of leaves) and splits the leaves whose bound is above the
goal, worst first, until every leaf is below it or the budget is spent. The result is always a
valid certificate: sup |f| <= max over the leaves of their bounds.

Derivatives are forward mode (`derivatives`): nested `jax.jvp` along the coordinate directions,
one program sharing the primal, common subexpressions merged (`tljax.transforms.cse`). Reverse
mode (`jax.grad`) bounds too, but its programs are longer and looser.

Semantics of a leaf bound:
- ``"float32"``: the program as float32 executes it (`tljax.bound`'s float-sound default: any
  summation order, FMA or not, flush-to-zero), computed in float32.
- ``"real"``: the network's mathematical function (its float32 weights as exact reals): the bound
  computation runs in float64 with its own rounding outward and no rounding of the program
  charged. This is what a PDE error estimate needs; the float32 program's a-priori rounding
  allowance alone is larger than a trained PINN's boundary error (see docs/sciml.md).
"""

from __future__ import annotations

import dataclasses
import functools as ft
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ..bounds import TAYLOR_MAX_INPUTS, Box, bound, check, prepare
from ..core import InputError, compat, trace
from ..transforms import cse

__all__ = [
    "PinnReport",
    "SupCertificate",
    "certify_pinn",
    "certify_sup",
    "derivatives",
]

SEMANTICS = ("real", "float32")
SPLITS = ("greedy", "gradient", "widest")


def _dtype(semantics: str):
    return jnp.float64 if semantics == "real" else jnp.float32


def _check_semantics(semantics: str, who: str) -> None:
    if semantics not in SEMANTICS:
        raise InputError(f"{who}: semantics={semantics!r}; use one of {SEMANTICS}")


def derivatives(u: Callable, partials: Sequence[str], names: str | Sequence[str]) -> Callable:
    """`z -> {"": u(z), p: d^k u / dz_p ... for p in partials}`, forward mode, primal shared.

    Args:
      u: the network, `u(z) -> scalar` (or shape (1,)) for `z` of shape (d,).
      partials: the partial derivatives wanted, as strings of variable names: ``"t"`` (du/dt),
        ``"xx"`` (d2u/dx2), ``"tx"``; orders 1 and 2.
      names: one character per input coordinate, ``"tx"`` for z = (t, x).

    Example:
      >>> d = derivatives(u, ["t", "x", "xx"], "tx")
      >>> r = lambda z: (lambda v: v["t"] + v[""] * v["x"] - nu * v["xx"])(d(z))
    """
    names = list(names)
    for p in partials:
        if not 1 <= len(p) <= 2 or any(c not in names for c in p):
            raise InputError(
                f"derivatives: partial {p!r} must be 1 or 2 of the variable names {names} "
                "(e.g. 't', 'xx', 'tx')"
            )

    def scalar(z):
        v = jnp.asarray(u(z))
        if v.size != 1:
            raise InputError(f"derivatives: u must return a scalar, got shape {v.shape}")
        return v.reshape(())

    def unit(i, z):
        return jnp.zeros_like(z).at[i].set(1.0)

    def first(i):
        return lambda z: jax.jvp(scalar, (z,), (unit(i, z),))

    def fn(z):
        out = {"": scalar(z)}
        for p in partials:
            i = names.index(p[0])
            if len(p) == 1:
                out[p] = first(i)(z)[1]
            else:
                j = names.index(p[1])
                out[p] = jax.jvp(lambda w, j=j: first(j)(w)[1], (z,), (unit(i, z),))[1]
        return out

    return fn


def _scalar_fn(fn):
    def f(z):
        v = jnp.asarray(fn(z))
        if v.size != 1:
            raise InputError(f"certify_sup: the function must return one value, got {v.shape}")
        return v.reshape(1)

    return f


@dataclasses.dataclass
class SupCertificate:
    """sup |f| over a box, certified leaf by leaf.

    Attributes:
      name: what f is ("residual", ...).
      lower, upper: (n, d) leaf corners; the leaves cover the domain.
      f_lower, f_upper: (n,) certified bounds of f on each leaf.
      certified: max over leaves of max(|f_lower|, |f_upper|): sup |f| <= certified.
      sampled: max |f| at the sampled points (a lower bound of sup |f|).
      goal: the target the branching aimed for (None: budget only).
      reached: every leaf's bound is <= goal.
      batches, bounded: compiled batches run and leaf bounds computed.
      wall_s, compile_s: total time and the first batch's (tracing + compilation).
      method, semantics: how the leaves were bounded.
      fn: f itself (for re-checks).
    """

    name: str
    lower: np.ndarray
    upper: np.ndarray
    f_lower: np.ndarray
    f_upper: np.ndarray
    certified: float
    sampled: float
    goal: float | None
    reached: bool
    batches: int
    bounded: int
    wall_s: float
    compile_s: float
    method: str
    semantics: str
    fn: Callable = dataclasses.field(repr=False)

    @property
    def leaves(self) -> int:
        return len(self.lower)

    @property
    def ratio(self) -> float:
        """certified / sampled (>= 1; 1.1 is "within 10%")."""
        return self.certified / self.sampled if self.sampled > 0 else float("inf")

    def recheck(self, per_leaf: int = 8, seed: int = 0, max_points: int = 400_000) -> dict:
        """Samples points inside the leaves (corners included), evaluates f in the semantics'
        arithmetic, and counts values outside their leaf's certified bounds."""
        rng = np.random.default_rng(seed)
        n, d = self.lower.shape
        reps = max(1, min(per_leaf, max_points // max(n, 1)))
        idx = np.repeat(np.arange(n), reps)
        frac = rng.uniform(size=(len(idx), d))
        frac[::reps] = 0.0  # each leaf's first point is its lower corner
        pts = self.lower[idx] + frac * (self.upper[idx] - self.lower[idx])
        pts = np.minimum(np.maximum(pts, self.lower[idx]), self.upper[idx])
        with jax.enable_x64(self.semantics == "real"):
            vals = _evaluate(self.fn, pts, self.semantics)
        bad = (vals < self.f_lower[idx]) | (vals > self.f_upper[idx])
        return {
            "points": len(idx),
            "violations": int(bad.sum()),
            "max_abs": float(np.abs(vals).max()),
        }

    def certificate(self, i: int):
        """A certificate of leaf `i` that `tljax.bounds.check` re-derives exactly; returns
        (certificate, check report). Taylor leaves get a "taylor" certificate (the Taylor
        models re-run in ball arithmetic: the leaf's own bound, up to rounding); other leaves a
        CROWN certificate, which can be looser than the leaf's bound and states its own."""
        with jax.enable_x64(self.semantics == "real"):
            dt = _dtype(self.semantics)
            box = Box(jnp.asarray(self.lower[i], dt), jnp.asarray(self.upper[i], dt))
            f = _scalar_fn(self.fn)
            b = bound(
                f,
                box,
                method="taylor" if self.method == "taylor" else "crown",
                certificate=True,
                float_format="real" if self.semantics == "real" else None,
                jit=False,  # one box: the eager run costs less than compiling
            )
            return b.certificate, check(b.certificate, f)

    def row(self) -> dict:
        return {
            "quantity": self.name,
            "certified": self.certified,
            "sampled": self.sampled,
            "ratio": self.ratio,
            "leaves": self.leaves,
            "bounded": self.bounded,
            "reached": self.reached,
            "wall_s": self.wall_s,
            "compile_s": self.compile_s,
        }


def _evaluate(fn, pts, semantics, chunk: int = 65536):
    f = jax.jit(jax.vmap(_scalar_fn(fn)))
    dt = _dtype(semantics)
    out = [
        np.asarray(f(jnp.asarray(pts[i : i + chunk], dt)), np.float64)[:, 0]
        for i in range(0, len(pts), chunk)
    ]
    return np.concatenate(out) if out else np.zeros(0)


@ft.lru_cache(maxsize=16)
def _bound_program(fn, d: int, batch: int, method: str, semantics: str):
    """One compiled program bounding `batch` leaves at once: (lo, hi) (batch, d) -> (l, h)."""
    dt = _dtype(semantics)
    graph = cse(trace(_scalar_fn(fn), jnp.zeros(d, dt)))
    ff = "real" if semantics == "real" else None

    def one(lo, hi):
        ((l, h),) = prepare(graph, Box(lo, hi), float_format=ff).bounds(method)
        return l[0], h[0]

    # XLA:CPU's fusion emitters turn the long elementwise chains of relaxations into kernels
    # that recompute shared producers (minutes of compilation); TLJAX_FAST_COMPILE=1 also skips
    # the backend optimisation (half the compile time, slower batches)
    opts = {"xla_cpu_use_fusion_emitters": False}
    if os.environ.get("TLJAX_FAST_COMPILE") == "1":
        opts["xla_backend_optimization_level"] = 0
    return jax.jit(jax.vmap(one), compiler_options=compat.supported_compiler_options(opts))


def _progress(total, desc, quiet):
    return tqdm(total=total, desc=desc, unit="leaf", file=sys.stderr, disable=quiet, leave=False)


def certify_sup(
    fn: Callable,
    lower,
    upper,
    *,
    name: str = "f",
    method: str = "auto",
    semantics: str = "real",
    goal: float | None = None,
    rel_goal: float | None = 0.1,
    initial: int | Sequence[int] = 8,
    batch: int | None = None,
    max_leaves: int = 1_000_000,
    timeout: float = 600.0,
    samples: int = 1_000_000,
    split: str = "greedy",
    progress: bool | None = None,
) -> SupCertificate:
    """Certifies sup |fn(z)| over the box [lower, upper] by adaptive input branching.

    Args:
      fn: `z -> scalar` for z of shape (d,), d small (1-3).
      lower, upper: the domain's corners.
      method: the leaf bound: "taylor" (order-2 Taylor models: a leaf costs about 0.1 ms and
        the bound's looseness is cubic in the leaf size; real semantics, at most
        `TAYLOR_MAX_INPUTS` coordinates), "affine" (zonotopes: tighter on large leaves, about
        500x the cost), "crown", "ibp", "alpha-crown"; "auto": "taylor" where it applies, else
        "affine".
      semantics: "real" (the mathematical function; bound computation in float64) or "float32"
        (the program as float32 runs it).
      goal: split until every leaf's bound of |fn| is <= goal.
      rel_goal: when `goal` is None, goal = (1 + rel_goal) * the sampled max.
      initial: leaves per coordinate of the starting grid.
      batch: leaves bounded per compiled call (fixed: one compilation); default 2048 for
        "taylor" (cheap leaves), 256 otherwise.
      max_leaves, timeout: the budget; the certificate stays valid when it runs out, with
        `reached=False`.
      samples: grid points (about) where fn is evaluated for the sampled max.
      split: "greedy" (bound the two halves along every coordinate and keep the split whose
        worse half is lowest: 2d bounds per split, d of them discarded), "gradient" (the
        coordinate with the largest |df/dz_i| * width at the centre: one bound per child, but
        the centre's gradient can point away from where the bound is loose, e.g. across a
        shock) or "widest" (largest width relative to the domain).
      progress: a progress bar on stderr (default: when stderr is a terminal).
    """
    _check_semantics(semantics, "certify_sup")
    if split not in SPLITS:
        raise InputError(f"certify_sup: split={split!r}; use one of {SPLITS}")
    t_start = time.perf_counter()
    if method == "auto":
        d_in = np.atleast_1d(np.asarray(lower)).size
        method = "taylor" if semantics == "real" and d_in <= TAYLOR_MAX_INPUTS else "affine"
    if batch is None:
        batch = 2048 if method == "taylor" else 256
    with jax.enable_x64(semantics == "real"):
        lo = np.atleast_1d(np.asarray(lower, np.float64))
        hi = np.atleast_1d(np.asarray(upper, np.float64))
        if lo.shape != hi.shape or lo.ndim != 1:
            raise InputError(f"certify_sup: lower {lo.shape} and upper {hi.shape} must be (d,)")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
            raise InputError(f"certify_sup: invalid domain [{lo}, {hi}] (need lower <= upper)")
        d = lo.size
        if semantics == "float32" and not (
            np.all(lo.astype(np.float32) == lo) and np.all(hi.astype(np.float32) == hi)
        ):
            # the float32 program only sees float32 inputs: widen to them
            lo = np.nextafter(lo.astype(np.float32), -np.inf).astype(np.float64)
            hi = np.nextafter(hi.astype(np.float32), np.inf).astype(np.float64)

        # sampled max on a grid (a lower bound of the sup; also the default goal)
        per = max(2, round(samples ** (1.0 / d)))
        grid = np.stack(
            np.meshgrid(*[np.linspace(lo[k], hi[k], per) for k in range(d)], indexing="ij"), -1
        ).reshape(-1, d)
        sampled = float(np.max(np.abs(_evaluate(fn, grid, semantics))))
        if goal is None and rel_goal is not None:
            goal = (1.0 + rel_goal) * sampled

        # starting grid of leaves
        counts = [initial] * d if isinstance(initial, int) else list(initial)
        edges = [np.linspace(lo[k], hi[k], counts[k] + 1) for k in range(d)]
        cells = list(itertools.product(*[range(c) for c in counts]))
        L = np.array([[edges[k][c[k]] for k in range(d)] for c in cells])
        H = np.array([[edges[k][c[k] + 1] for k in range(d)] for c in cells])
        scale = np.where(hi > lo, hi - lo, 1.0)

        prog = _bound_program(fn, d, batch, method, semantics)
        grad = jax.jit(jax.vmap(jax.grad(lambda z: _scalar_fn(fn)(z)[0])))
        dt = _dtype(semantics)
        compile_s = 0.0
        batches = bounded = 0

        def run(Lb, Hb):
            nonlocal compile_s, batches, bounded
            n = len(Lb)
            pad = batch - n
            Lp = np.concatenate([Lb, np.repeat(Lb[:1], pad, 0)]) if pad else Lb
            Hp = np.concatenate([Hb, np.repeat(Hb[:1], pad, 0)]) if pad else Hb
            t0 = time.perf_counter()
            fl, fh = prog(jnp.asarray(Lp, dt), jnp.asarray(Hp, dt))
            fl, fh = np.asarray(fl, np.float64)[:n], np.asarray(fh, np.float64)[:n]
            if batches == 0:
                compile_s = time.perf_counter() - t0
            batches += 1
            bounded += n
            return fl, fh

        def bound_all(Ls, Hs):
            out_l, out_h = [], []
            for i in range(0, len(Ls), batch):
                fl, fh = run(Ls[i : i + batch], Hs[i : i + batch])
                out_l.append(fl)
                out_h.append(fh)
            return np.concatenate(out_l), np.concatenate(out_h)

        def greedy_split(Lp, Hp, parent):
            # every coordinate's two halves in one set of batches; per leaf the coordinate whose
            # worse half has the lowest bound wins, unless no cut closes 1/16 of the gap to the
            # goal: one cut can gain nothing where two would (a bound loose on both halves), and
            # a tiny gain along a thin coordinate would then be taken forever; the relatively
            # widest coordinate is cut instead
            n = len(Lp)
            halves = [_halves(Lp, Hp, np.full(n, k)) for k in range(d)]
            # child (k, j) of leaf i sits at row (2k + j) n + i
            cl = np.concatenate([half[0] for pair in halves for half in pair])
            ch = np.concatenate([half[1] for pair in halves for half in pair])
            fl, fh = bound_all(cl, ch)
            v = _abs_bound(fl, fh).reshape(d, 2, n).max(axis=1)
            best = np.argmin(v, axis=0)
            gain = parent - v[best, np.arange(n)]
            gap = parent - (goal if goal is not None else 0.0)
            blind = ~(gain >= gap / 16)  # NaN / inf gaps included
            best = np.where(blind, np.argmax((Hp - Lp) / scale, axis=1), best)
            sel = np.concatenate([(2 * best + j) * n + np.arange(n) for j in (0, 1)])
            return cl[sel], ch[sel], fl[sel], fh[sel]

        quiet = (not sys.stderr.isatty()) if progress is None else not progress
        bar = _progress(max_leaves, f"certify {name}", quiet)
        FL, FH = bound_all(L, H)
        bar.update(len(L))
        while True:
            val = _abs_bound(FL, FH)
            worst = float(val.max())
            bar.set_postfix(bound=f"{worst:.4g}", goal=f"{goal:.4g}" if goal else "-")
            over = np.nonzero(val > goal)[0] if goal is not None else np.argsort(-val)
            if goal is not None and len(over) == 0:
                break
            if len(L) + batch // 2 > max_leaves or time.perf_counter() - t_start > timeout:
                break
            # the worst leaves first; each splits in two
            per = max(1, batch // (2 * d if split == "greedy" else 2))
            pick = over[np.argsort(-val[over])][:per]
            Lp, Hp = L[pick], H[pick]
            if split == "greedy":
                newL, newH, nl, nh = greedy_split(Lp, Hp, val[pick])
            else:
                w = Hp - Lp
                if split == "gradient":
                    g = np.abs(np.asarray(grad(jnp.asarray((Lp + Hp) / 2, dt)), np.float64))
                    score = np.where(np.isfinite(g), g, 0.0) * w + 1e-12 * w / scale
                else:
                    score = w / scale
                (L1, H1), (L2, H2) = _halves(Lp, Hp, np.argmax(score, axis=1))
                newL, newH = np.concatenate([L1, L2]), np.concatenate([H1, H2])
                nl, nh = bound_all(newL, newH)
            keep = np.ones(len(L), bool)
            keep[pick] = False
            L = np.concatenate([L[keep], newL])
            H = np.concatenate([H[keep], newH])
            FL = np.concatenate([FL[keep], nl])
            FH = np.concatenate([FH[keep], nh])
            bar.update(len(pick))
        bar.close()
        certified = float(np.max(_abs_bound(FL, FH)))
        return SupCertificate(
            name=name,
            lower=L,
            upper=H,
            f_lower=FL,
            f_upper=FH,
            certified=certified,
            sampled=sampled,
            goal=goal,
            reached=goal is not None and certified <= goal,
            batches=batches,
            bounded=bounded,
            wall_s=time.perf_counter() - t_start,
            compile_s=compile_s,
            method=method,
            semantics=semantics,
            fn=fn,
        )


def _abs_bound(fl, fh):
    """The bound of |f| on each leaf from its bounds of f (a NaN bound counts as infinite)."""
    v = np.maximum(np.abs(fl), np.abs(fh))
    return np.where(np.isnan(v), np.inf, v)


def _halves(L, H, k):
    """The two halves of boxes [L, H] (n, d) cut at the middle of coordinate k[i]."""
    rows = np.arange(len(L))
    mid = L[rows, k] + (H[rows, k] - L[rows, k]) / 2
    H1, L2 = H.copy(), L.copy()
    H1[rows, k] = mid
    L2[rows, k] = mid
    return (L.copy(), H1), (L2, H.copy())


@dataclasses.dataclass
class PinnReport:
    """The three certificates of a PINN: residual, initial error, boundary error(s)."""

    certificates: list[SupCertificate]

    def __getitem__(self, name: str) -> SupCertificate:
        for c in self.certificates:
            if c.name == name:
                return c
        raise KeyError(name)

    def table(self) -> str:
        head = "| quantity | certified sup | sampled max | ratio | leaves | wall s | compile s |"
        rows = [head, "|---|---|---|---|---|---|---|"]
        for c in self.certificates:
            rows.append(
                f"| {c.name} | {c.certified:.6g} | {c.sampled:.6g} | {c.ratio:.3f} | "
                f"{c.leaves} | {c.wall_s:.1f} | {c.compile_s:.1f} |"
            )
        return "\n".join(rows)


def certify_pinn(
    u: Callable,
    residual: Callable,
    lower,
    upper,
    *,
    partials: Sequence[str] = (),
    names: str | Sequence[str] = "tx",
    initial: Callable | None = None,
    boundary: Sequence[tuple[int, float, Callable | float]] = (),
    which: Sequence[str] = ("residual", "initial", "boundary"),
    **kw,
) -> PinnReport:
    """Certifies sup |residual|, sup |initial error| and sup |boundary error| of a PINN.

    Args:
      u: the network, `u(z) -> scalar`, z = (t, x, ...).
      residual: `residual(d, z) -> scalar`, `d` the dict of `derivatives(u, partials, names)`
        (`d[""]` is u, `d["x"]` du/dx, `d["xx"]` ...).
      lower, upper: the space-time domain.
      partials, names: the derivatives the residual reads; one name per coordinate.
      initial: `g(x)`: the initial error u(0, x) - g(x) over the domain's face at the lower end
        of coordinate 0 (time).
      boundary: `(coordinate, value, h)` triples: the error u(z) - h(z) on the face
        z[coordinate] = value (h a function of the remaining coordinates or a constant).
      which: the quantities to certify.
      **kw: passed to `certify_sup` (method, semantics, goal, rel_goal, batch, timeout, ...).
    """
    lo = np.atleast_1d(np.asarray(lower, np.float64))
    hi = np.atleast_1d(np.asarray(upper, np.float64))
    out = []
    if "residual" in which:
        dfn = derivatives(u, partials, names)
        out.append(certify_sup(lambda z: residual(dfn(z), z), lo, hi, name="residual", **kw))
    faces = []
    if initial is not None and "initial" in which:
        faces.append(("initial", 0, lo[0], initial))
    if "boundary" in which:
        for coord, value, h in boundary:
            label = f"boundary {names[coord]}={value:g}" if len(boundary) > 1 else "boundary"
            faces.append((label, coord, value, h))
    for label, coord, value, h in faces:
        rest = [i for i in range(lo.size) if i != coord]

        def face_fn(y, coord=coord, value=value, h=h, rest=rest):
            z = jnp.insert(y, coord, jnp.asarray(value, y.dtype))
            target = h(y) if callable(h) else h
            return jnp.asarray(u(z)).reshape(()) - jnp.asarray(target, y.dtype).reshape(())

        out.append(certify_sup(face_fn, lo[rest], hi[rest], name=label, **kw))
    return PinnReport(out)
