"""`symbols` and `symbolic`: a JAX function's jaxpr evaluated over sympy expressions.

The expressions are read off the same jaxpr that JAX runs (through the one walker, under the
``"symbolic"`` semantics of `tljax.interpret._symbolic`). Host-side only: not traceable.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import sympy

from ..core import InputError, compat, trace
from ..interpret import as_object_array, get_semantics, run

compat.register_exclusion(__file__)


def symbols(name: str, shape: tuple[int, ...] | int = (), **assumptions) -> np.ndarray:
    """An object array of fresh sympy symbols, real by default.

    Elements are named ``name`` (scalar), ``name_i`` (vector) or ``name_i_j`` (matrix), and so on.

    Args:
      name: the base name.
      shape: the array shape (an int means a vector).
      **assumptions: sympy assumptions (default ``real=True``; e.g. ``positive=True``).

    Returns:
      A numpy object array of `sympy.Symbol` of the given shape (0-d for a scalar).

    Example:
      >>> symbols("W", (2, 2))
      array([[W_0_0, W_0_1],
             [W_1_0, W_1_1]], dtype=object)
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    assumptions = {"real": True, **assumptions}
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        label = "_".join([name, *map(str, idx)]) if idx else name
        out[idx] = sympy.Symbol(label, **assumptions)
    return out


def _is_symbolic_leaf(x) -> bool:
    return isinstance(x, sympy.Basic) or (isinstance(x, np.ndarray) and x.dtype == object)


def _placeholder(x, dtype):
    shape = np.shape(x) if isinstance(x, np.ndarray) else ()
    return np.zeros(shape, dtype=dtype)


def _unwrap(x):
    if isinstance(x, np.ndarray) and x.dtype == object and x.ndim == 0:
        return x[()]
    return x


def symbolic(fn, *args, dtype=jnp.float32):
    """Evaluates `fn(*args)` symbolically: sympy expressions for every output.

    `fn` is traced with JAX (symbolic inputs stand in as arrays of `dtype`), then its jaxpr is
    evaluated over sympy expressions: every float literal and concrete input becomes the exact
    rational it stores, and no rounding happens (the real-number meaning of the program).
    Host-side: `symbolic` is not traceable and cannot be jitted or differentiated; to get a
    derivative, pass `jax.grad(fn)` (its jaxpr is evaluated) or `sympy.diff` the result.

    Args:
      fn: a JAX function.
      *args: pytrees whose leaves are symbol arrays (from `symbols`), sympy expressions, or
        concrete arrays/numbers (lifted to exact rationals).
      dtype: the dtype symbolic leaves are traced with (default float32).

    Returns:
      `fn`'s output structure, with each array leaf a numpy object array of sympy expressions and
      each scalar leaf a sympy expression.

    Raises:
      UnsupportedPrimitiveError: a primitive has no symbolic rule, or needs a concrete value (an
        argmax or gather index) that depends on a symbol; the message names it and where it is.

    Example:
      >>> x = symbols("x", 3)
      >>> symbolic(lambda v: jnp.sum(jax.nn.softmax(v)), x)   # an expression in x_0, x_1, x_2
    """
    placeholders = jtu.tree_map(
        lambda x: _placeholder(x, dtype) if _is_symbolic_leaf(x) else x,
        args,
        is_leaf=_is_symbolic_leaf,
    )
    name = getattr(fn, "__name__", "fn")
    graph = trace(fn, *placeholders, name=name)
    flat_args, tree = jtu.tree_flatten(args, is_leaf=_is_symbolic_leaf)
    _flat_ph, tree_ph = jtu.tree_flatten(placeholders)
    if tree != tree_ph:
        raise InputError(
            f"symbolic({name}): arguments have an unexpected structure {tree}; pass pytrees of "
            "symbol arrays, sympy expressions and concrete arrays"
        )
    leaves = [a for a, m in zip(flat_args, graph.in_mask, strict=True) if m]
    # By name, so rules added with `tljax.register_rule("symbolic", prim)` are used.
    out = run(graph, get_semantics("symbolic"), leaves)
    return graph.unflatten_outputs([_unwrap(o) for o in out])


def substitute(tree, mapping: Mapping):
    """`expr.subs(mapping)` on every sympy leaf of a pytree (object arrays included).

    Example:
      >>> x = symbols("x")
      >>> substitute(x[()] ** 2, {x[()]: sympy.Rational(1, 2)})
      1/4
    """
    mapping = dict(mapping)

    def sub(leaf):
        if isinstance(leaf, np.ndarray) and leaf.dtype == object:
            out = np.empty(leaf.shape, dtype=object)
            for idx in np.ndindex(leaf.shape):
                out[idx] = sympy.sympify(leaf[idx]).subs(mapping)
            return out
        if isinstance(leaf, sympy.Basic):
            return leaf.subs(mapping)
        return leaf

    return jtu.tree_map(sub, tree, is_leaf=_is_symbolic_leaf)


def bindings(syms, values) -> dict:
    """``{symbol: exact value}`` pairing a symbol array with a same-shaped concrete array.

    Values are converted exactly (floats via ``as_integer_ratio``).

    Example:
      >>> bindings(symbols("x", 2), np.float32([0.5, 2.0]))
      {x_0: 1/2, x_1: 2}
    """
    s = as_object_array(syms) if not isinstance(syms, np.ndarray) else syms
    v = as_object_array(np.asarray(values) if not isinstance(values, np.ndarray) else values)
    if s.shape != v.shape:
        raise InputError(f"bindings: symbols have shape {s.shape} but values have shape {v.shape}")
    return {s[i]: v[i] for i in np.ndindex(s.shape)}
