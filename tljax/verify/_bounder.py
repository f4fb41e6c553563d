"""Compiled, batched bound computations for the search (one compile per network and shape).

`tljax.bound` compiles per function object, with the spec matrix baked in. The search wants one
compiled program for every domain, disjunct set and (for networks of one architecture) every
set of weights, so it bounds the wrapper `g(x, spec, *args) = spec @ fn(x, *args)`: the spec and
the weights are *arguments* of the compiled code. The wrapper is made once per `fn` and kept, so
`bound`'s own cache applies too.
"""

from __future__ import annotations

import collections
import functools as ft
import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..bounds import REFINE_FLOOR, REFINE_RATIO, Box, bound, prepare
from ..core import processes
from ._attack import _objective

# `bound(..., jit=False)` runs inside this module's jit (a nested jit may not carry compiler
# options). XLA's default optimisation is kept: `xla_backend_optimization_level=0` (what
# `tljax.bound` uses for single calls) saved ~15% compile time but ran a 256-box ACAS Xu batch
# 2.5x slower (1.12 s vs 0.45 s), and the search runs thousands of batches.
COMPILER_OPTIONS: dict = {}

_WRAPPERS: dict = {}
_COMPILED: dict = {}
_MAX = 64


def pad_batch(size: int, *arrays) -> list:
    """`arrays` (leading axis = domains) padded to `size` rows by repeating the first row: the
    compiled programs have a fixed batch; callers drop the padded rows of the results."""
    pad = size - arrays[0].shape[0]
    if not pad:
        return list(arrays)
    return [np.concatenate([a, np.repeat(a[:1], pad, 0)]) for a in arrays]


def _batch_jit(run, batch: int, n_batched: int):
    """`jax.jit(run)`; with several local devices, the first `n_batched` arguments (leading axis
    = the batch of domains) are split across them and the rest replicated. Domains are
    independent, so each device bounds its share with no communication, and the results are the
    unsharded program's. A batch that is not a multiple of the device count runs unsharded.
    Under `jax.distributed` the mesh spans every process's devices (`_GlobalBatch`)."""
    if processes.group_size() > 1:
        return _GlobalBatch(run, batch, n_batched)
    devices = jax.local_devices()
    if len(devices) < 2 or batch % len(devices):
        return jax.jit(run, compiler_options=COMPILER_OPTIONS)
    mesh = Mesh(np.asarray(devices), ("domains",))
    split, same = NamedSharding(mesh, P("domains")), NamedSharding(mesh, P())
    n_args = len(inspect.signature(run).parameters)
    shardings = (split,) * n_batched + (same,) * (n_args - n_batched)
    return jax.jit(run, compiler_options=COMPILER_OPTIONS, in_shardings=shardings)


# Per sharded batch over several processes: calls, devices spanned, and bytes every process
# receives in the results' all-gather (read by tests and bench/multihost.py).
BATCH_STATS: dict = {"calls": 0, "spans": collections.Counter(), "bytes_in": 0, "bytes": 0}


class _GlobalBatch:
    """`run` jitted over a 1-D mesh of every process's devices (multi-controller SPMD).

    Every process calls it with the same whole batch (numpy; the search's host state is the same
    everywhere): each one hands its devices only their rows (`make_array_from_callback`), the
    program bounds each shard without communication, and its outputs are all-gathered into the
    compiled program (replicated out-shardings), so every process gets the whole result and
    takes the same branching decisions. A batch that is not a multiple of the global device
    count is padded to one (the first row repeated; every output has the batch axis first and
    the padded rows are dropped)."""

    def __init__(self, run, batch: int, n_batched: int):
        devices = jax.devices()
        self.n_batched, self.batch = n_batched, batch
        self.padded = -(-batch // len(devices)) * len(devices)
        mesh = Mesh(np.asarray(devices), ("domains",))
        self.split, self.same = NamedSharding(mesh, P("domains")), NamedSharding(mesh, P())
        n_args = len(inspect.signature(run).parameters)
        shardings = (self.split,) * n_batched + (self.same,) * (n_args - n_batched)
        self.fn = jax.jit(
            run, compiler_options=COMPILER_OPTIONS, in_shardings=shardings, out_shardings=self.same
        )
        self.n_devices = len(devices)
        self.replicated: dict = {}  # id(weight) -> (weight, its global copy): weights persist

    def _put(self, x, sharding):
        a = np.asarray(x)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    def _same(self, x):
        if isinstance(x, np.ndarray) or np.ndim(x) == 0:
            return self._put(x, self.same)
        hit = self.replicated.get(id(x))
        if hit is None or hit[0] is not x:
            if len(self.replicated) > 256:
                self.replicated.clear()
            hit = (x, self._put(x, self.same))
            self.replicated[id(x)] = hit
        return hit[1]

    def __call__(self, *args):
        head = pad_batch(self.padded, *(np.asarray(a) for a in args[: self.n_batched]))
        head = [self._put(a, self.split) for a in head]
        tail = jax.tree_util.tree_map(self._same, args[self.n_batched :])
        with processes.collective("a sharded bound batch"):
            out = self.fn(*head, *tail)
            # every device holds the whole (replicated) result: read this process's copy
            host = jax.tree_util.tree_map(
                lambda o: np.asarray(o.addressable_data(0))[: self.batch], out
            )
        BATCH_STATS["calls"] += 1
        BATCH_STATS["spans"][len(head[0].sharding.device_set)] += 1
        total = sum(a.nbytes for a in jax.tree_util.tree_leaves(host))
        BATCH_STATS["bytes"] += total
        BATCH_STATS["bytes_in"] += total * (self.n_devices - jax.local_device_count()) // max(
            self.n_devices, 1
        )
        return host


def _keep(cache: dict, key, fn, build):
    hit = cache.get(key)
    if hit is None or hit[0] is not fn:
        while len(cache) >= _MAX:
            cache.pop(next(iter(cache)))
        hit = (fn, build())
        cache[key] = hit
    return hit[1]


def spec_fn(fn):
    """`g(x, spec, *args) = spec @ flatten(fn(x, *args))`, one stable object per `fn`."""

    def build():
        def g(x, spec, *args):
            return spec @ fn(x, *args).reshape(-1)

        g.__name__ = f"spec_of_{getattr(fn, '__name__', 'fn')}"
        return g

    return _keep(_WRAPPERS, ("spec", id(fn)), fn, build)


def _spread_fn(fn, shape):
    """`(x (n,), width (n,), args) -> (n,)`: the "unstable" branching score of one box.

    At the box centre `x`, the ReLU inputs `z` of every layer and their input Jacobian `J` (forward
    mode, one tangent per input) are computed. A neuron is *likely unstable* when its linearised
    range `|z_i| < sum_j |J_ij| width_j / 2` crosses zero. Per layer, input j scores the share of
    the likely unstable neurons' spread it causes (`sum_i |J_ij| width_j` over them, normalised to
    sum 1); the layers' shares are added. Splitting the top coordinate shrinks the relaxation gaps
    that keep the bound loose. All zeros when there is no ReLU or none is likely unstable. A
    heuristic input only: soundness never depends on it.
    """
    from ._taps import Taps

    taps = Taps(fn, shape)

    def pre(x, args):
        _, recs = taps._run(x.reshape(shape), args)
        return [r.reshape(-1).astype(jnp.float32) for r in recs]

    def score(x, width, args):
        n = x.shape[0]
        vals, lin = jax.linearize(lambda x: pre(x, args), x)
        if not vals:
            return jnp.zeros_like(width)
        jac = jax.vmap(lin)(jnp.eye(n, dtype=x.dtype))  # per layer (n, size)
        total = jnp.zeros_like(width)
        for v, j in zip(vals, jac, strict=True):
            a = jnp.abs(j) * width[:, None]  # (n, size): spread of each neuron along each input
            unstable = jnp.abs(v) < 0.5 * jnp.sum(a, axis=0)
            s = jnp.sum(jnp.where(unstable[None, :], a, 0.0), axis=1)
            total = total + s / jnp.maximum(jnp.sum(s), 1e-30)
        return jnp.where(jnp.isfinite(total), total, 0.0)

    return score


def input_split_bounder(
    fn,
    shape,
    *,
    method: str,
    batch: int,
    rows: int,
    n_args: int,
    spread: bool = False,
    refine_limit: int | None = None,
):
    """Jitted `(lo (B, n), hi (B, n), spec, d, mask, real, args) ->
    (lower (B, R), obj (B,), jac (B, R, n), rows (B, R), spread (B, n))`.

    `lower` are certified lower bounds of the spec rows over each box; `obj` is the float
    objective at each box centre (a falsification probe) and `jac` the input Jacobian of the spec
    rows there and their values (the branching heuristic's inputs). With `spread`, the
    "unstable" branching score of each box (`_spread_fn`), else zeros.
    """
    g = spec_fn(fn)

    def build():
        spread_one = _spread_fn(fn, shape) if spread else None

        def one_bound(lo, hi, spec, args):
            b = bound(
                g,
                Box(lo.reshape(shape), hi.reshape(shape)),
                spec,
                *args,
                method=method,
                jit=False,
                refine_limit=refine_limit,
                lower_only=True,  # the margins' lower bounds are what the search reads
            )
            return b.lower

        obj = ft.partial(_objective, fn, shape)

        def rows(x, spec, args):
            return spec @ fn(x.reshape(shape), *args).reshape(-1).astype(spec.dtype)

        jac = jax.jacrev(rows)

        def run(lo, hi, spec, d, mask, real, args):
            lower = jax.vmap(one_bound, in_axes=(0, 0, None, None))(lo, hi, spec, args)
            centre = 0.5 * (lo + hi)
            v = jax.vmap(obj, in_axes=(0, None, None, None, None, None))(
                centre, spec, d, mask, real, args
            )
            j = jax.vmap(jac, in_axes=(0, None, None))(centre, spec, args)
            r = jax.vmap(rows, in_axes=(0, None, None))(centre, spec, args)
            if spread_one is None:
                sp = jnp.zeros_like(lo)
            else:
                sp = jax.vmap(spread_one, in_axes=(0, 0, None))(centre, hi - lo, args)
            return lower, v, j, r, sp

        return _batch_jit(run, batch, 2)

    key = ("input", id(fn), tuple(shape), method, batch, rows, n_args, spread, refine_limit)
    return _keep(_COMPILED, key, fn, build)


def relu_split_bounder(
    fn,
    shape,
    relu_shapes,
    *,
    method: str,
    batch: int,
    rows: int,
    n_args: int,
    taps=None,
    refine_limit: int | None = None,
):
    """Jitted `(lo (B, n), hi (B, n), splits (B, s), spec, args) ->
    (lower (B, R), pre_lower (B, s), pre_upper (B, s))`.

    `splits` are flat ReLU split vectors (+1/-1/0) in the layout of `relu_shapes`. With `taps`
    (a `Taps` of `fn`), the bounds of every ReLU input under the domain's splits are returned
    too (for the branching score); without, those two arrays are zeros.
    """
    sizes = [int(jnp.prod(jnp.asarray(s))) if len(s) else 1 for s in relu_shapes]
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    total = offsets[-1]

    def unflatten(flat):
        return [
            flat[offsets[i] : offsets[i + 1]].reshape(relu_shapes[i]).astype(jnp.int32)
            for i in range(len(sizes))
        ]

    if taps is not None:
        target = taps.spec_taps_fn()
    else:
        target = spec_fn(fn)

    def build():
        def one(lo, hi, flat, spec, args):
            b = bound(
                target,
                Box(lo.reshape(shape), hi.reshape(shape)),
                spec,
                *args,
                method=method,
                relu_splits=unflatten(flat),
                jit=False,
                refine_limit=refine_limit,
                lower_only=True,  # the margins' lower bounds are what the search reads
            )
            if taps is None:
                return b.lower, jnp.zeros(total, b.lower.dtype), jnp.zeros(total, b.lower.dtype)
            lows, highs = b.lower, b.upper
            return (
                lows[0],
                jnp.concatenate([v.reshape(-1) for v in lows[1:]]),
                jnp.concatenate([v.reshape(-1) for v in highs[1:]]),
            )

        def run(lo, hi, splits, spec, args):
            return jax.vmap(one, in_axes=(0, 0, 0, None, None))(lo, hi, splits, spec, args)

        return _batch_jit(run, batch, 3)

    key = ("relu", id(fn), tuple(shape), method, batch, rows, n_args, taps is not None)
    key += (refine_limit,)
    return _keep(_COMPILED, key, fn, build)


def single_bound(
    fn, lo, hi, shape, spec, args, *, method: str, splits=None, refine_limit: int | None = None
):
    """Lower bounds of the spec rows over one box (`bound`'s own compile cache)."""
    g = spec_fn(fn)
    b = bound(
        g,
        Box(jnp.asarray(lo).reshape(shape), jnp.asarray(hi).reshape(shape)),
        jnp.asarray(spec),
        *args,
        method=method,
        relu_splits=splits,
        refine_limit=refine_limit,
    )
    return b.lower


# --- beta-CROWN for ReLU splitting ------------------------------------------------------------
# Root: alpha-CROWN on the ReLU input bounds of a case box (iterations, Adam step). Domains:
# beta-CROWN on the output with those bounds (`tljax.bounds.Problem.split_bound`).
ROOT_ITERS = 20
ROOT_LR = 0.1
BETA_LR = 0.1


def _problem(g, shape, lo, hi, spec, args, refine_limit=None):
    """The bound problem of `g(x, spec, *args)` with `x` boxed in `[lo, hi]` (float-sound
    float32)."""
    box = Box(lo.reshape(shape), hi.reshape(shape))
    return prepare(g, box, spec, *args, name="beta-crown", refine_limit=refine_limit)


def _layout(relu_shapes):
    sizes = [int(np.prod(s)) if len(s) else 1 for s in relu_shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return sizes, offsets


def relu_root_bounder(
    fn, shape, relu_shapes, *, rows: int, n_args: int, refine_limit: int | None = None
):
    """Jitted `(lo (n,), hi (n,), spec, args) -> (relu_lo (s,), relu_hi (s,))`: bounds of every ReLU
    input over one box (`root_relu_bounds`, flat in the layout of `relu_shapes`)."""
    g = spec_fn(fn)

    def build():
        def run(lo, hi, spec, args):
            p = _problem(g, shape, lo, hi, spec, args, refine_limit)
            b = p.root_relu_bounds(iters=ROOT_ITERS, lr=ROOT_LR)
            return (
                jnp.concatenate([v[0].reshape(-1) for v in b]),
                jnp.concatenate([v[1].reshape(-1) for v in b]),
            )

        return jax.jit(run, compiler_options=COMPILER_OPTIONS)

    key = ("relu-root", id(fn), tuple(shape), tuple(map(tuple, relu_shapes)), rows, n_args)
    key += (refine_limit,)
    return _keep(_COMPILED, key, fn, build)


def beta_bounder(
    fn,
    shape,
    relu_shapes,
    *,
    batch: int,
    rows: int,
    n_args: int,
    use_beta: bool = True,
    refine_limit: int | None = None,
):
    """Jitted beta-CROWN over a batch of ReLU-split domains:

    `(lo (B, n), hi (B, n), splits (B, s) int8, relu_lo (B, s), relu_hi (B, s), alpha (B, R, s),
    beta (B, R, s), iters, spec, args) -> (lower (B, R), alpha, beta, used_lo (B, s),
    used_hi (B, s), scores (B, R, s), corners (B, R, n))`

    `relu_lo/hi` must hold over each domain (e.g. `relu_root_bounder` of its case box); `alpha` NaN
    entries start from CROWN's slopes; `iters` is a runtime count (0: evaluate the given
    parameters, which reproduces a leaf's bounds from its witness). See `Problem.split_bound`.
    """
    g = spec_fn(fn)
    sizes, offsets = _layout(relu_shapes)

    def unflatten(flat, lead=()):
        return [
            flat[..., offsets[k] : offsets[k + 1]].reshape(*lead, *relu_shapes[k])
            for k in range(len(sizes))
        ]

    def build():
        def one(lo, hi, sp, rlo, rhi, alpha, beta, iters, spec, args):
            p = _problem(g, shape, lo, hi, spec, args, refine_limit)
            R = spec.shape[0]
            lam = jnp.eye(R, dtype=jnp.float32)
            lower, a, b, used, scores, corners = p.split_bound(
                lam,
                relu_bounds=list(zip(unflatten(rlo), unflatten(rhi), strict=True)),
                splits=[v.astype(jnp.int32) for v in unflatten(sp)],
                alpha=unflatten(alpha, (R,)),
                beta=unflatten(beta, (R,)),
                iters=iters,
                lr=BETA_LR,
                use_beta=use_beta,
            )

            def flat(vs, lead=()):
                return jnp.concatenate([v.reshape(*lead, -1) for v in vs], axis=-1)

            return (
                lower,
                flat(a, (R,)),
                flat(b, (R,)),
                flat([u[0] for u in used]),
                flat([u[1] for u in used]),
                flat(scores, (R,)),
                corners.reshape(R, -1),
            )

        def run(lo, hi, sp, rlo, rhi, alpha, beta, iters, spec, args):
            return jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0, 0, None, None, None))(
                lo, hi, sp, rlo, rhi, alpha, beta, iters, spec, args
            )

        return _batch_jit(run, batch, 7)

    key = (
        "beta",
        id(fn),
        tuple(shape),
        tuple(map(tuple, relu_shapes)),
        batch,
        rows,
        n_args,
        use_beta,
        refine_limit,
    )
    return _keep(_COMPILED, key, fn, build)


# --- memory ------------------------------------------------------------------------------------
# A search tightens an intermediate node by CROWN only while its pass carries at most
# max(REFINE_FLOOR, REFINE_RATIO x the output pass) coefficients per domain (`tljax.bounds`).
# Bytes a coefficient costs while a pass runs: float32 L and the temporaries beside it.
COEF_BYTES = 16
MIN_BATCH = 8


def memory_plan(fn, shape, box, spec, args, *, batch: int, budget: int) -> dict:
    """Domains per compiled batch and the `refine_limit` for a search on `fn` within `budget`
    bytes: the batch halves (down to `MIN_BATCH`) until the widest pass fits, and only then do
    wider intermediate passes fall back to interval bounds (never below the output pass's own
    size: one domain at a time if even that is too much).

    Returns `{"batch", "refine_limit", "per_domain" (bytes), "dropped" (nodes kept at interval
    bounds), "note"}`."""
    p = prepare(spec_fn(fn), Box(*(jnp.asarray(v).reshape(shape) for v in box)), spec, *args)
    costs, out = p.refine_costs(int(np.shape(spec)[0]))
    limit = max(REFINE_FLOOR, REFINE_RATIO * out)
    peak = max([c for c in costs if c <= limit] + [out, 1])
    b = max(int(batch), 1)
    while b > MIN_BATCH and b * peak * COEF_BYTES > budget:
        b //= 2
    if b * peak * COEF_BYTES > budget:
        limit = min(limit, max(budget // (b * COEF_BYTES), out))
        peak = max([c for c in costs if c <= limit] + [out, 1])
        while b > 2 and b * peak * COEF_BYTES > budget:
            b //= 2
    dropped = sum(c > limit for c in costs)
    note = ""
    if dropped or b < batch:
        note = (
            f"memory plan: batch {b} (asked {batch}), {dropped} of {len(costs)} intermediate "
            f"nodes on interval bounds (a CROWN pass over {limit:,} coefficients), "
            f"~{b * peak * COEF_BYTES >> 20} MiB per batch of {budget >> 20} MiB"
        )
    return {
        "batch": b,
        "refine_limit": limit if costs and max(costs) > limit else None,
        "per_domain": peak * COEF_BYTES,
        "dropped": int(dropped),
        "note": note,
        "widest": _widest_pass(p, limit, out),
    }


def _widest_pass(problem, limit: int, out: int) -> str:
    """Where the widest CROWN pass a search runs under `limit` starts: the equation whose
    operand it tightens, its shape and size (the output's pass, `out` coefficients, if wider)."""
    best, where = problem.widest_pass(limit)
    if best <= out:
        return f"the output ({out:,} coefficients per domain)"
    return f"{where} ({best:,} coefficients per domain)"
