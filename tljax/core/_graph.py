"""`trace(fn, *example_args) -> Graph`: the model's jaxpr plus the pytree plumbing around it."""

from __future__ import annotations

import collections
import dataclasses
import sys
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np

from . import _jaxpr_compat as compat
from ._errors import InputError, ShapeMismatchError

compat.register_exclusion(__file__)


def is_array_leaf(x) -> bool:
    """Whether a pytree leaf is traced as an array (jax/numpy arrays and Python numbers, no
    bools)."""
    return isinstance(
        x, jax.Array | np.ndarray | np.generic | float | int | complex
    ) and not isinstance(x, bool)


def _nnx():
    # An NNX module exists only once its author imported flax.nnx: never import it here (1-2 s).
    return sys.modules.get("flax.nnx")


@dataclasses.dataclass(frozen=True)
class _NNXArg:
    """An NNX module argument, split into its graph definition (static) and state (traced)."""

    graphdef: Any
    state: Any


jtu.register_pytree_node(
    _NNXArg, lambda a: ((a.state,), a.graphdef), lambda gd, ch: _NNXArg(gd, ch[0])
)


def _split_modules(args):
    nnx = _nnx()
    if nnx is None:
        return args
    return jtu.tree_map(
        lambda a: _NNXArg(*nnx.split(a)) if isinstance(a, nnx.Module) else a,
        args,
        is_leaf=lambda a: isinstance(a, nnx.Module),
    )


def _merge_modules(args):
    nnx = _nnx()
    if nnx is None:
        return args
    return jtu.tree_map(
        lambda a: nnx.merge(a.graphdef, a.state) if isinstance(a, _NNXArg) else a,
        args,
        is_leaf=lambda a: isinstance(a, _NNXArg),
    )


def _callable(fn):
    nnx = _nnx()
    if nnx is not None and isinstance(fn, nnx.Module):
        graphdef, state = nnx.split(fn)
        return lambda *a: nnx.merge(graphdef, state)(*a)
    if not callable(fn):
        raise InputError(
            f"tljax.trace expects a callable (function or module), got {type(fn).__name__}"
        )
    return fn


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """A traced program: the closed jaxpr every semantics consumes, plus its pytree structure.

    Attributes:
      closed_jaxpr: the `ClosedJaxpr` (a `Jaxpr` carrying consts on JAX 0.11+).
      in_tree: treedef of the example arguments (after splitting NNX modules).
      in_mask: per flat input leaf, whether it is traced (array) or kept static.
      static_leaves: the non-array leaves, by flat index (None where traced).
      out_tree: treedef of the outputs.
      name: the function's name, for tables and errors.
    """

    closed_jaxpr: Any
    in_tree: Any
    in_mask: tuple[bool, ...]
    static_leaves: tuple
    out_tree: Any
    name: str = "fn"

    @property
    def jaxpr(self):
        return compat.open_jaxpr(self.closed_jaxpr)[0]

    @property
    def consts(self) -> list:
        return compat.open_jaxpr(self.closed_jaxpr)[1]

    @property
    def in_avals(self) -> list:
        return [v.aval for v in self.jaxpr.invars]

    @property
    def out_avals(self) -> list:
        return [v.aval for v in self.jaxpr.outvars]

    def flatten_inputs(self, *args) -> list:
        """The traced leaves of `args`, checked against the example's structure, shapes and
        dtypes."""
        args = _split_modules(args)
        leaves, tree = jtu.tree_flatten(args)
        if tree != self.in_tree:
            raise ShapeMismatchError(
                f"inputs of {self.name!r} have structure {tree}, but the graph was traced with "
                f"{self.in_tree}; pass arguments shaped like the example given to tljax.trace"
            )
        out, problems = [], []
        avals = iter(self.in_avals)
        for k, (leaf, traced) in enumerate(zip(leaves, self.in_mask, strict=True)):
            if not traced:
                continue
            aval = next(avals)
            shape = np.shape(leaf)
            if tuple(shape) != tuple(aval.shape):
                problems.append(f"leaf {k}: expected shape {tuple(aval.shape)}, got {tuple(shape)}")
            out.append(leaf)
        if problems:
            raise ShapeMismatchError(
                f"inputs of {self.name!r} do not match the traced example:\n  "
                + "\n  ".join(problems)
                + "\n  Pass arrays shaped like the example given to tljax.trace, or trace the "
                "function again with an example of the new shape."
            )
        return out

    def unflatten_outputs(self, leaves):
        return jtu.tree_unflatten(self.out_tree, list(leaves))

    def census(self) -> collections.Counter:
        """How often each primitive occurs, counting inside sub-jaxprs (jit, scan, ...) too."""
        counts: collections.Counter = collections.Counter()
        for eqn in iter_eqns(self.jaxpr):
            counts[eqn.primitive.name] += 1
        return counts

    def primitives(self) -> set:
        """The set of primitive objects used anywhere in the graph."""
        return {eqn.primitive for eqn in iter_eqns(self.jaxpr)}

    def __call__(self, *args):
        """Runs the graph with XLA (reference semantics, eager)."""
        leaves = self.flatten_inputs(*args)
        out = jax.core.eval_jaxpr(self.jaxpr, self.consts, *leaves)
        return self.unflatten_outputs(out)

    def __str__(self) -> str:
        head = f"Graph {self.name!r}: {len(self.in_avals)} inputs, {len(self.out_avals)} outputs\n"
        census = ", ".join(f"{k}:{v}" for k, v in sorted(self.census().items()))
        return head + f"primitives: {census}\n" + str(self.closed_jaxpr)

    def __repr__(self) -> str:
        ins, outs = [str(a) for a in self.in_avals], [str(a) for a in self.out_avals]
        return f"<Graph {self.name!r} in={ins} out={outs}>"


def iter_eqns(jaxpr):
    """All equations of a jaxpr and (depth first) of its higher-order sub-jaxprs."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in compat.sub_jaxprs(eqn):
            yield from iter_eqns(sub.jaxpr)


def trace(fn, *example_args, name: str | None = None) -> Graph:
    """Traces `fn(*example_args)` into a `Graph`.

    Array leaves of the arguments (jax/numpy arrays and Python numbers) become the graph's inputs;
    other leaves stay static. Flax NNX modules among the arguments are split into graphdef (static)
    and state (traced); an Equinox module is a pytree, so its array leaves are traced too. When `fn`
    itself is a module, its parameters are constants of the graph.

    Args:
      fn: a function, an Equinox module or a Flax NNX module (a Linen model: pass
        `lambda params, x: model.apply(params, x)`).
      *example_args: arguments with the shapes and dtypes the graph will be used with.
      name: a name for tables and errors (default: the function's name).

    Returns:
      The `Graph`.

    Example:
      >>> g = tljax.trace(lambda x: jnp.tanh(x) * 2.0, jnp.ones(3))
      >>> g.census()
      Counter({'tanh': 1, 'mul': 1})
    """
    if isinstance(fn, Graph):
        return fn
    call = _callable(fn)
    args = _split_modules(example_args)
    leaves, in_tree = jtu.tree_flatten(args)
    mask = tuple(is_array_leaf(x) for x in leaves)
    static = tuple(None if m else x for x, m in zip(leaves, mask, strict=True))
    # tracing needs only shapes and dtypes: no device copies (a float64 -> float32 conversion
    # would compile a kernel, ~0.1 s of a first call)
    traced = [x for x, m in zip(leaves, mask, strict=True) if m]

    def flat_fn(*tleaves):
        it = iter(tleaves)
        full = [next(it) if m else s for m, s in zip(mask, static, strict=True)]
        a = _merge_modules(jtu.tree_unflatten(in_tree, full))
        return call(*a)

    closed, out_shape = compat.make_jaxpr(flat_fn, *traced)
    out_leaves, out_tree = jtu.tree_flatten(out_shape)
    del out_leaves
    fname = name or getattr(fn, "__name__", None) or type(fn).__name__
    return Graph(closed, in_tree, mask, static, out_tree, name=str(fname))
