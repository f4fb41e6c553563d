"""ReLU taps: the inputs of every ReLU of a program, in the order `tljax.bound` numbers them.

The branching score of ReLU splitting needs, per domain, the bounds of each ReLU's input and the
sensitivity of the property margin to each ReLU's output. `tljax.bound` reads `max(a, b)` as
`b + relu(a - b)` (just `relu(a)` when `b` is a constant zero) and `min(a, b)` as
`a - relu(a - b)`, numbering ReLUs in evaluation order. `Taps` re-evaluates the program through the
tljax walker (reference semantics, recursing into jit / custom_jvp calls) and records the same
`a - b` values, so `bound(taps_fn, ...)` returns their bounds, and adds a zero "delta" to each
max/min output whose gradient is the sensitivity.

This is a heuristic input only: soundness never depends on it. `Taps.matches(relu_shapes)`
guards against a numbering mismatch (e.g. a max between two weight-only values, which the bound
tape evaluates concretely and does not count); on a mismatch the search scores neurons without
taps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import compat, eval_jaxpr, tree_max, window_slices


def _is_concrete(v) -> bool:
    return not isinstance(v, jax.core.Tracer)


class Taps:
    """Pre-activation taps of `fn(x, *args)` (see module docstring)."""

    def __init__(self, fn, shape):
        self.fn = fn
        self.shape = tuple(shape)
        self._spec_taps = None

    def _run(self, x, args, deltas=None):
        from ..interpret import get_semantics

        recorded: list = []
        it = iter(deltas) if deltas is not None else None

        def add_delta(out):
            if it is None:
                return out
            return out + next(it).reshape(out.shape).astype(out.dtype)

        def _max(ctx, a, b, **params):
            out = lax.max(a, b)
            if _is_concrete(a) and not _is_concrete(b):
                a, b = b, a
            if _is_concrete(a) and _is_concrete(b):
                return out  # constant folding: not a ReLU of the bound tape
            if _is_concrete(b):
                c = np.asarray(b)
                if c.size and np.all(np.isneginf(c)):
                    return out
                if np.all(c == 0) and tuple(np.shape(a)) == tuple(np.shape(out)):
                    recorded.append(a)
                    return add_delta(out)
            recorded.append(jnp.broadcast_to(a - b, np.shape(out)))
            return add_delta(out)

        def _min(ctx, a, b, **params):
            out = lax.min(a, b)
            if _is_concrete(a) and _is_concrete(b):
                return out
            recorded.append(jnp.broadcast_to(a - b, np.shape(out)))
            return add_delta(out)

        def _pool(ctx, x, **params):
            # the bound tape's max pooling (unpadded, undilated): a tree of pairwise maxima
            out = lax.reduce_window_max_p.bind(x, **params)
            if _is_concrete(x) or any(p != (0, 0) for p in params["padding"]):
                return out
            if any(d != 1 for d in (*params["base_dilation"], *params["window_dilation"])):
                return out
            win, strides = params["window_dimensions"], params["window_strides"]
            stack = jnp.stack(window_slices(x, win, strides, out.shape))
            return tree_max(stack, lambda a, b: _max(ctx, a, b))

        sem = get_semantics("reference").derive(
            name="relu-taps",
            rules={lax.max_p: _max, lax.min_p: _min, lax.reduce_window_max_p: _pool},
            recurse=True,
        )
        closed = jax.make_jaxpr(self.fn)(x, *args)
        jaxpr, consts = compat.open_jaxpr(closed)
        flat_args = jax.tree_util.tree_leaves((x, *args))
        outs = eval_jaxpr(sem, jaxpr, consts, flat_args)
        return outs[0], recorded

    def pre_shapes(self, args) -> list[tuple]:
        """Shapes of the recorded ReLU inputs, in order."""
        x = jax.ShapeDtypeStruct(self.shape, jnp.float32)
        shapes = jax.eval_shape(lambda x, *a: self._run(x, a)[1], x, *args)
        return [tuple(s.shape) for s in shapes]

    def matches(self, relu_shapes, args) -> bool:
        try:
            return [tuple(s) for s in relu_shapes] == self.pre_shapes(args)
        except Exception:  # noqa: BLE001 - any failure only disables the heuristic
            return False

    def spec_taps_fn(self):
        """`g(x, spec, *args) -> (spec @ y, *relu_inputs)`; one stable object per `Taps`."""
        if self._spec_taps is None:

            def g(x, spec, *args):
                y, pre = self._run(x, args)
                return (spec @ y.reshape(-1), *pre)

            self._spec_taps = g
        return self._spec_taps

    def sensitivity(self, objective, x, args, sizes) -> np.ndarray:
        """|d objective(y) / d relu output| at input `x`, flat over all ReLUs (float64)."""
        deltas = [jnp.zeros((s,), jnp.float32) for s in sizes]

        def f(ds):
            y, _ = self._run(jnp.asarray(x).reshape(self.shape), args, ds)
            return objective(y.reshape(-1))

        grads = jax.grad(f)(deltas)
        return (
            np.abs(np.concatenate([np.asarray(g, np.float64).reshape(-1) for g in grads]))
            if grads
            else np.zeros(0)
        )
