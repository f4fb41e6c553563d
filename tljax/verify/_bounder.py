"""Compiled, batched bound computations for the search (one compile per network and shape).

`tljax.bound` compiles per function object, with the spec matrix baked in. The search wants one
compiled program for every domain, disjunct set and (for networks of one architecture) every
set of weights, so it bounds the wrapper `g(x, spec, *args) = spec @ fn(x, *args)`: the spec and
the weights are *arguments* of the compiled code. The wrapper is made once per `fn` and kept, so
`bound`'s own cache applies too.
"""

from __future__ import annotations

import functools as ft

import jax
import jax.numpy as jnp

from ..bounds import Box, bound
from ._attack import _objective

# `bound(..., jit=False)` runs inside this module's jit (a nested jit may not carry compiler
# options). XLA's default optimisation is kept: `xla_backend_optimization_level=0` (what
# `tljax.bound` uses for single calls) saved ~15% compile time but ran a 256-box ACAS Xu batch
# 2.5x slower (1.12 s vs 0.45 s), and the search runs thousands of batches.
COMPILER_OPTIONS: dict = {}

_WRAPPERS: dict = {}
_COMPILED: dict = {}
_MAX = 64


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


def input_split_bounder(fn, shape, *, method: str, batch: int, rows: int, n_args: int):
    """Jitted `(lo (B, n), hi (B, n), spec, d, mask, real, args) -> (lower (B, R), obj (B,), jac (B, R, n), rows (B, R))`.

    `lower` are certified lower bounds of the spec rows over each box; `obj` is the float
    objective at each box centre (a falsification probe) and `jac` the input Jacobian of the spec
    rows there and their values (the branching heuristic's inputs).
    """
    g = spec_fn(fn)

    def build():
        def one_bound(lo, hi, spec, args):
            b = bound(
                g, Box(lo.reshape(shape), hi.reshape(shape)), spec, *args, method=method, jit=False
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
            return lower, v, j, r

        return jax.jit(run, compiler_options=COMPILER_OPTIONS)

    return _keep(_COMPILED, ("input", id(fn), tuple(shape), method, batch, rows, n_args), fn, build)


def relu_split_bounder(
    fn, shape, relu_shapes, *, method: str, batch: int, rows: int, n_args: int, taps=None
):
    """Jitted `(lo (B, n), hi (B, n), splits (B, s), spec, args) -> (lower (B, R), pre_lower (B, s), pre_upper (B, s))`.

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

        return jax.jit(run, compiler_options=COMPILER_OPTIONS)

    key = ("relu", id(fn), tuple(shape), method, batch, rows, n_args, taps is not None)
    return _keep(_COMPILED, key, fn, build)


def single_bound(fn, lo, hi, shape, spec, args, *, method: str, splits=None):
    """Lower bounds of the spec rows over one box (`bound`'s own compile cache)."""
    g = spec_fn(fn)
    b = bound(
        g,
        Box(jnp.asarray(lo).reshape(shape), jnp.asarray(hi).reshape(shape)),
        jnp.asarray(spec),
        *args,
        method=method,
        relu_splits=splits,
    )
    return b.lower
