"""Falsification: random sampling and PGD on the property margin, and the concrete re-check.

The objective of a concrete output `y` is `min_k max_i (C_k y - d_k)_i`; it is <= 0 exactly when
`y` lies in some unsafe polytope `{C_k y <= d_k}`. The attack minimises it over the float32 points
of an input box with signed-gradient steps (batched, jitted). A candidate is then re-checked
concretely (`confirm`): the float32 output computed by XLA and the exact rational output of the
same program (`tljax.evaluate(..., semantics="exact")`) are compared against the stored
constraints in exact arithmetic. Under the default `semantics="float32"` the program as it runs
decides (VNN-COMP's checker executes it in float32): a float32 violation is a counterexample even
where the exact output is safe, and the counterexample says so. Under `semantics="real"` only a
point that violates the property under both is reported.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import time
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from ..core import InputError, UnsupportedPrimitiveError
from ._spec import Group, f32_inward


def _objective(fn, shape, x, spec, d, mask, real, args):
    """Float32 margin of one flat input `x`: <= 0 means a candidate counterexample."""
    y = fn(x.reshape(shape), *args).reshape(-1)
    v = spec @ y.astype(spec.dtype) - d
    per = jnp.max(jnp.where(mask, v[None, :], -jnp.inf), axis=1)
    per = jnp.where(real, per, jnp.inf)
    return jnp.min(per)


def attack_arrays(group: Group):
    """(spec, d, mask, real) float32/bool arrays of fixed padded shapes for the attack objective."""
    r = group.spec.shape[0]
    mask = np.zeros((r, r), bool)
    real = np.zeros(r, bool)
    k = group.n_disjuncts
    if k > r:  # more disjuncts than padded rows (some without rows): pad further
        mask = np.zeros((k, r), bool)
        real = np.zeros(k, bool)
    mask[:k] = group.masks()
    real[:k] = True
    return (
        jnp.asarray(group.spec, jnp.float32),
        jnp.asarray(group.d, jnp.float32),
        jnp.asarray(mask),
        jnp.asarray(real),
    )


_COMPILED: dict = {}


def _cached(kind, fn, *key, build):
    k = (kind, id(fn), *key)
    hit = _COMPILED.get(k)
    if hit is None or hit[0] is not fn:
        if len(_COMPILED) > 64:
            _COMPILED.pop(next(iter(_COMPILED)))
        hit = (fn, build())
        _COMPILED[k] = hit
    return hit[1]


def batch_objective(fn, shape):
    """Jitted `(xs (P, n), spec, d, mask, real, args) -> (P,)` float32 objectives."""

    def build():
        one = ft.partial(_objective, fn, shape)
        return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None, None)))

    return _cached("obj", fn, tuple(shape), build=build)


def _pgd_fn(fn, shape, steps: int):
    def build():
        obj = ft.partial(_objective, fn, shape)
        vg = jax.vmap(jax.value_and_grad(obj), in_axes=(0, None, None, None, None, None))

        def run(x0, eta0, lo, hi, spec, d, mask, real, args):
            width = hi - lo

            def step(carry, t):
                x, best_x, best_v = carry
                v, g = vg(x, spec, d, mask, real, args)
                v = jnp.where(jnp.isnan(v), jnp.inf, v)
                better = v < best_v
                best_x = jnp.where(better[:, None], x, best_x)
                best_v = jnp.where(better, v, best_v)
                # step size decays from eta0 (a fraction of the box, per start) to nothing
                # (cosine schedule)
                eta = eta0[:, None] * 0.5 * (1.0 + jnp.cos(jnp.pi * t / steps)) + 1e-5
                x = jnp.clip(x - eta * width * jnp.sign(g), lo, hi)
                return (x, best_x, best_v), None

            # the steps stop once some start holds a violation: the caller confirms it (on the
            # verivital CNN a full chunk of 100 steps takes ~5 s, a violation often comes in a few)
            def cond(carry):
                t, _, _, best_v = carry
                return (t < steps) & ~jnp.any(best_v < 0)

            def body(carry):
                t, *rest = carry
                return (t + 1.0, *step(tuple(rest), t)[0])

            init = (jnp.float32(0), x0, x0, jnp.full(x0.shape[0], jnp.inf, jnp.float32))
            _, x, best_x, best_v = jax.lax.while_loop(cond, body, init)
            v = jax.vmap(obj, in_axes=(0, None, None, None, None, None))(
                x, spec, d, mask, real, args
            )
            v = jnp.where(jnp.isnan(v), jnp.inf, v)
            better = v < best_v
            return jnp.where(better[:, None], x, best_x), jnp.where(better, v, best_v)

        return jax.jit(run)

    return _cached("pgd", fn, tuple(shape), steps, build=build)


# Initial PGD step sizes (fractions of the box width), cycled over the starts. Large steps cross
# the box; small ones descend into narrow valleys: on ACAS Xu 1_5 prop_2 the violating region is
# a thin sliver, found from the best random samples with 0.01 but not with 0.25 or 0.05.
STEP_SCALES = (0.25, 0.05, 0.01, 0.002)
# PGD runs in chunks of this many starts (one compiled program); after the first chunk, more run
# while the next one is expected to end within `ATTACK_BUDGET` seconds of the PGD's start. On
# ACAS Xu and mnist_fc every chunk fits (the attack is unchanged); on the verivital CNN a
# 1024-start PGD took 59 s (its 2x2 one-channel convolution runs at ~1.5 GFLOP/s here).
PGD_CHUNK = 256
ATTACK_BUDGET = 5.0


def _pgd_chunks(pgd, starts, eta0, lo, hi, arrays, args, budget: float):
    """`pgd` over `starts` in chunks of `PGD_CHUNK` (see there), the chunks ordered so that each
    holds every step size and a share of the best-ranked starts; no chunk runs after one that
    found a violation (objective < 0). Returns the (points, values) of the chunks that ran."""
    n = starts.shape[0]
    if n <= PGD_CHUNK or n % PGD_CHUNK:
        return pgd(starts, eta0, lo, hi, *arrays, args)
    k = n // PGD_CHUNK
    groups = len(STEP_SCALES)
    # blocks of consecutive starts (one per step size) dealt round-robin to the chunks
    idx = np.arange(n).reshape(-1, groups)
    order = np.concatenate([idx[c::k].reshape(-1) for c in range(k)])
    t0 = time.monotonic()
    xs, vs = [], []
    for c in range(k):
        sel = order[c * PGD_CHUNK : (c + 1) * PGD_CHUNK]
        t = time.monotonic()
        px, pv = pgd(starts[sel], eta0[sel], lo[sel], hi[sel], *arrays, args)
        xs.append(np.asarray(px))
        vs.append(np.asarray(pv))
        now = time.monotonic()
        # a violation in hand is confirmed by the caller before more chunks are worth running
        if c + 1 < k and (now - t0 + (now - t) > budget or np.min(vs[-1]) < 0):
            break
    return np.concatenate(xs), np.concatenate(vs)


def attack(
    fn,
    args,
    group: Group,
    lower,
    upper,
    shape,
    *,
    key,
    n_samples=16384,
    n_restarts=1024,
    steps=100,
    budget=ATTACK_BUDGET,
    pgd=True,
):
    """Random samples, then PGD from the best of them and from random points, inside the float32
    points of a box (the starts cycle through the step sizes `STEP_SCALES`; chunks of starts run
    while they fit `budget` seconds, see `PGD_CHUNK`). `pgd=False`: the samples only.

    Returns:
      `(xs, values)`: float32 candidates (P, n) sorted by objective (lowest first) and their float32
      objectives; empty arrays when the box holds no float32 point.
    """
    lo32, hi32 = f32_inward(lower, upper)
    if np.any(lo32 > hi32):
        return np.zeros((0, lo32.size), np.float32), np.zeros(0, np.float32)
    arrays = attack_arrays(group)
    lo, hi = jnp.asarray(lo32), jnp.asarray(hi32)
    k1, k2 = jax.random.split(key)
    u = jax.random.uniform(k1, (n_samples, lo32.size), jnp.float32)
    xs = jnp.clip(lo + u * (hi - lo), lo, hi)
    xs = xs.at[0].set(jnp.clip(0.5 * (lo + hi), lo, hi))
    vals = batch_objective(fn, shape)(xs, *arrays, args)
    vals = jnp.where(jnp.isnan(vals), jnp.inf, vals)
    order = jnp.argsort(vals)
    if not pgd:
        return np.asarray(xs[order]), np.asarray(vals[order])
    n_best = (3 * n_restarts) // 4
    starts = jnp.concatenate(
        [
            xs[order[:n_best]],
            jnp.clip(
                lo + jax.random.uniform(k2, (n_restarts - n_best, lo32.size)) * (hi - lo), lo, hi
            ),
        ]
    )
    eta0 = jnp.asarray(np.resize(np.asarray(STEP_SCALES, np.float32), n_restarts))
    # per-start boxes (as `attack_domains` passes them): one compiled PGD for both
    lo_p = jnp.broadcast_to(lo, starts.shape)
    hi_p = jnp.broadcast_to(hi, starts.shape)
    px, pv = _pgd_chunks(_pgd_fn(fn, shape, steps), starts, eta0, lo_p, hi_p, arrays, args, budget)
    all_x = np.concatenate([np.asarray(xs[order[:n_best]]), np.asarray(px)])
    all_v = np.concatenate([np.asarray(vals[order[:n_best]]), np.asarray(pv)])
    o = np.argsort(all_v, kind="stable")
    return all_x[o], all_v[o]


def attack_domains(
    fn,
    args,
    group: Group,
    lowers,
    uppers,
    shape,
    *,
    key,
    per_domain=4,
    steps=100,
    starts=None,
    n_restarts=1024,
    budget=ATTACK_BUDGET,
):
    """PGD seeded by search domains: from the centre and `per_domain - 1` random points of each
    box `[lowers[i], uppers[i]]` (the open domains of branch and bound with the lowest certified
    margins: where the bound cannot rule a violation out), each start confined to its own box.
    With `starts` (one point per box, e.g. where a domain's linear bound is lowest), the first
    start of each box is that point instead of its centre. The boxes are cycled (or cut) to
    exactly `n_restarts` starts: the same compiled PGD as `attack`'s.

    Returns `(xs, values)` like `attack` (empty when no box holds a float32 point).
    """
    lo32, hi32 = f32_inward(np.atleast_2d(lowers), np.atleast_2d(uppers))
    ok = np.all(lo32 <= hi32, axis=1)
    lo32, hi32 = lo32[ok], hi32[ok]
    if not lo32.shape[0]:
        return np.zeros((0, np.shape(lowers)[-1]), np.float32), np.zeros(0, np.float32)
    if starts is not None:
        starts = np.asarray(starts, np.float32)[ok]
    n_dom = max(n_restarts // per_domain, 1)
    pick = np.resize(np.arange(lo32.shape[0]), n_dom)
    lo32, hi32 = lo32[pick], hi32[pick]
    if starts is not None:
        starts = starts[pick]
    arrays = attack_arrays(group)
    lo = jnp.asarray(np.repeat(lo32, per_domain, axis=0))
    hi = jnp.asarray(np.repeat(hi32, per_domain, axis=0))
    u = jax.random.uniform(key, lo.shape, jnp.float32)
    u = u.at[::per_domain].set(0.5)  # the centres
    starts_all = lo + u * (hi - lo)
    if starts is not None:
        starts_all = starts_all.at[::per_domain].set(jnp.asarray(starts))
    starts = jnp.clip(starts_all, lo, hi)
    eta0 = jnp.asarray(np.resize(np.asarray(STEP_SCALES, np.float32), lo.shape[0]))
    px, pv = _pgd_chunks(_pgd_fn(fn, shape, steps), starts, eta0, lo, hi, arrays, args, budget)
    px, pv = np.asarray(px), np.asarray(pv)
    o = np.argsort(pv, kind="stable")
    return px[o], pv[o]


@dataclasses.dataclass(frozen=True)
class Counterexample:
    """A confirmed violation of the property.

    Attributes:
      x: float32 input of the network's input shape (inside the case's box, exactly).
      y: float32 output computed by XLA at `x`, flattened.
      y_exact: the exact rational output at `x` (object array of `Fraction`), or None when the
        exact semantics does not support the program (see `exact_note`).
      case: index into `prop.cases` of the box that holds `x`.
      disjunct: index into `prop.unsafe` of a polytope that holds the outputs.
      exact_note: why `y_exact` is None, else "".
      exact_violates: whether the exact output violates the property too (None: unknown). False
        means the violation exists in float32 execution and not in exact arithmetic (possible
        only under `semantics="float32"`).
    """

    x: np.ndarray
    y: np.ndarray
    y_exact: np.ndarray | None
    case: int
    disjunct: int
    exact_note: str = ""
    exact_violates: bool | None = None

    @property
    def float_only(self) -> bool:
        """The float32 program violates the property here, the exact (real-valued) one does not."""
        return self.exact_violates is False

    def describe(self) -> str:
        """One sentence on which arithmetic the violation holds in."""
        if self.float_only:
            return (
                "the violation exists in float32 execution and not in exact arithmetic (the "
                "real-valued network satisfies the property at this input)"
            )
        if self.exact_violates is None:
            return "the float32 output violates the property (exact output unavailable)"
        return "the float32 and the exact outputs both violate the property"


def _rows_hold(c: np.ndarray, d: np.ndarray, y) -> bool:
    """`C y <= d` in exact rational arithmetic (`y` floats or Fractions)."""
    yq = [
        v if isinstance(v, Fraction) else Fraction(float(v))
        for v in np.asarray(y, dtype=object).reshape(-1)
    ]
    for row, rhs in zip(np.asarray(c, np.float64), np.asarray(d, np.float64), strict=True):
        acc = Fraction(0)
        for a, v in zip(row, yq, strict=True):
            if a:
                acc += Fraction(float(a)) * v
        if acc > Fraction(float(rhs)):
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """Outcome of re-executing a candidate: the counterexample, or why it was rejected."""

    counterexample: Counterexample | None
    float_violates: bool
    exact_violates: bool | None
    reason: str


SEMANTICS = ("float32", "real")


def confirm(fn, args, prop, x, shape, *, cases=None, semantics: str = "float32") -> Confirmation:
    """Re-executes candidate `x` and checks it against `prop` exactly.

    `x` is rounded to float32 (the program's input type) and must lie in a case box exactly. The
    float32 output is computed by XLA (`jax.jit(fn)`), the exact output by the exact semantics;
    both are tested against the stored `(C, d)` with rational arithmetic.

    Policy: with `semantics="float32"` (default) a float32 violation is a counterexample; its
    `exact_violates` says whether the real-valued network violates the property there too. With
    `semantics="real"` a counterexample needs both to violate it for the same case; a candidate
    on which they disagree is rejected with the reason. When the exact semantics does not support
    the program, the float verdict alone decides and `Counterexample.exact_note` says so.
    """
    if semantics not in SEMANTICS:
        raise InputError(
            f"tljax.verify: unknown semantics {semantics!r}; choose one of {SEMANTICS} "
            "(float32: the program as it runs; real: the real-valued network as well)"
        )
    x32 = np.asarray(x, np.float32).reshape(shape)
    xf = x32.astype(np.float64).reshape(-1)
    idx = range(len(prop.cases)) if cases is None else cases
    inside = [i for i in idx if np.all(prop.cases[i][0] <= xf) and np.all(xf <= prop.cases[i][1])]
    if not inside:
        return Confirmation(None, False, None, "the point lies outside every input box")
    y = np.asarray(jax.jit(fn)(jnp.asarray(x32), *args), np.float32).reshape(-1)
    if not np.all(np.isfinite(y)):
        return Confirmation(None, False, None, "the float output is not finite")
    float_hit = _first_hit(prop, inside, y.astype(np.float64))
    try:
        y_ex = np.asarray(_exact(fn, x32, args), dtype=object).reshape(-1)
        note = ""
    except (UnsupportedPrimitiveError, NotImplementedError) as err:
        y_ex, note = (
            None,
            f"exact semantics unavailable ({str(err).splitlines()[0]}); float check only",
        )
    exact_hit = None if y_ex is None else _first_hit(prop, inside, y_ex)
    exact_violates = None if y_ex is None else exact_hit is not None
    if float_hit is None:
        reason = "the float32 output satisfies the property"
        if exact_hit is not None:
            reason += " (the exact output violates it: float and exact disagree)"
        return Confirmation(None, False, exact_violates, reason)
    if semantics == "real" and exact_violates is False:
        return Confirmation(
            None,
            True,
            False,
            "the float32 output violates the property but the exact output does not (float and "
            "exact disagree; semantics='real' asks for both)",
        )
    case, disjunct = float_hit
    cex = Counterexample(
        x=x32,
        y=y,
        y_exact=y_ex,
        case=case,
        disjunct=disjunct,
        exact_note=note,
        exact_violates=exact_violates,
    )
    return Confirmation(cex, True, exact_violates, "")


def _first_hit(prop, inside, y):
    """The first `(case, disjunct)` whose unsafe polytope holds `y` exactly, or None."""
    for i in inside:
        for k in prop.pairing[i]:
            c, d = prop.unsafe[k]
            if _rows_hold(c, d, y):
                return i, k
    return None


def _exact(fn, x32, args):
    from ..interpret import evaluate

    return evaluate(fn, jnp.asarray(x32), *args, semantics="exact")
