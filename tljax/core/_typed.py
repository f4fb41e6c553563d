"""Typed tensors: check jaxtyping annotations when a function is called or traced.

`typed` reads the jaxtyping annotations of a function (`Float[Array, "batch features"]`) and
checks every annotated argument and the return value against them, binding each named dimension
the first time it is seen and requiring the same size everywhere after that. Under `jax.jit` the
check runs once per trace (on the tracers' shapes), so it costs nothing at run time.

Array annotations are checked by our own small interpreter of jaxtyping's dimension strings, so
that the error can name the argument, the expected shape (with the sizes bound so far) and the
actual one; the test suite checks its verdicts against jaxtyping's own `isinstance`. Annotations
that are not jaxtyping arrays (`int`, `str | None`, ...) are checked with `beartype` when it is
installed and with `isinstance` for plain classes otherwise.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import inspect
import operator
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.extend
import numpy as np

from tljax.core._errors import ShapeMismatchError
from tljax.core._lazy import optional_import

__all__ = ["typed"]

# Equations traced inside a typed function are attributed to the user's code, not this wrapper.
jax.extend.source_info_util.register_exclusion(__file__)

_F = TypeVar("_F", bound=Callable[..., Any])

_FIX = "Fix the shape passed by the caller, or the annotation of the function if it is too strict."


# ------------------------------------------------------------------------------------------------
# Dimension strings
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Dim:
    """One token of a jaxtyping dimension string.

    kind is "fixed" (size), "named" (name), "expr" (name holds a Python expression over names),
    "any" (`_`, `_name`), "variadic" (`*name`, `*_`, `...`).
    """

    kind: str
    name: str = ""
    size: int = 0
    broadcastable: bool = False

    def show(self, bound: dict[str, Any]) -> str:
        if self.kind == "fixed":
            return str(self.size)
        if self.kind == "named" and self.name in bound:
            return f"{self.name}={bound[self.name]}"
        if self.kind == "variadic":
            if self.name and self.name in bound:
                return ", ".join(str(s) for s in bound[self.name]) or f"*{self.name}=()"
            return f"*{self.name}" if self.name else "..."
        if self.kind == "expr":
            value = _eval_expr(self.name, bound)
            return self.name if value is None else f"{self.name}={value}"
        return self.name or "_"


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@ft.lru_cache(maxsize=1024)
def _parse(dim_str: str) -> tuple[_Dim, ...]:
    dims = []
    for token in dim_str.split():
        broadcastable = False
        variadic = False
        # Modifiers may come in either order ("*#b" or "#*b"); "?" only affects jaxtyping's
        # tree-path scoping, which a single call does not have.
        while token[:1] in ("*", "#", "?") and token != "...":
            variadic |= token[0] == "*"
            broadcastable |= token[0] == "#"
            token = token[1:]
        if "=" in token:  # "name=expr": documentation name, checked by the expression
            token = token.split("=", 1)[1]
        if token == "...":
            dims.append(_Dim("variadic"))
        elif variadic:
            name = "" if token.startswith("_") else token
            dims.append(_Dim("variadic", name=name, broadcastable=broadcastable))
        elif token.isdigit():
            dims.append(_Dim("fixed", size=int(token), broadcastable=broadcastable))
        elif token.startswith("_"):
            dims.append(_Dim("any", name=token))
        elif _IDENT.match(token):
            dims.append(_Dim("named", name=token, broadcastable=broadcastable))
        else:
            dims.append(_Dim("expr", name=token, broadcastable=broadcastable))
    if sum(d.kind == "variadic" for d in dims) > 1:
        raise ValueError(f"dimension string {dim_str!r} has more than one variadic dimension")
    return tuple(dims)


def _eval_expr(expr: str, bound: dict[str, Any]) -> int | None:
    names = {k: v for k, v in bound.items() if isinstance(v, int)}
    try:
        value = eval(expr, {"__builtins__": {}}, names)
    except NameError:
        return None
    return int(value)


def _expected(dims: tuple[_Dim, ...], bound: dict[str, Any]) -> str:
    return "(" + ", ".join(d.show(bound) for d in dims) + ")"


# ------------------------------------------------------------------------------------------------
# Checking one value against one array annotation
# ------------------------------------------------------------------------------------------------


def _is_array_annotation(ann: Any) -> bool:
    # A jaxtyping annotation exists only once its author imported jaxtyping: no need to load it.
    jaxtyping = sys.modules.get("jaxtyping")
    return (
        jaxtyping is not None and isinstance(ann, type) and issubclass(ann, jaxtyping.AbstractArray)
    )


def _dtype_ok(dtype: Any, ann: Any) -> bool:
    allowed = ann.dtypes
    if not isinstance(allowed, tuple | list):  # jaxtyping's "any dtype" sentinel (Shaped)
        return True
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return "prng_key" in allowed
    return str(np.dtype(dtype)) in allowed


def _dtype_family(ann: Any) -> str:
    # "Float[jaxlib._jax.Array, 'b f']" -> "Float"
    return ann.__name__.split("[", 1)[0]


def _type_name(t: Any) -> str:
    if t is jax.Array:
        return "jax.Array"
    return f"{t.__module__}.{t.__qualname__}" if isinstance(t, type) else str(t)


def _show_annotation(ann: Any) -> str:
    return (
        f"{_dtype_family(ann)}[{_type_name(ann.array_type).removeprefix('jax.')}, {ann.dim_str!r}]"
    )


def _match_shape(
    shape: tuple[int, ...], dims: tuple[_Dim, ...], bound: dict[str, Any]
) -> dict[str, Any] | None:
    """Return the new bindings if `shape` matches `dims` given `bound`, else None."""
    new: dict[str, Any] = {}
    n_var = sum(d.kind == "variadic" for d in dims)
    if n_var == 0 and len(shape) != len(dims):
        return None
    if n_var == 1 and len(shape) < len(dims) - 1:
        return None
    # Split the shape around the variadic dimension.
    if n_var:
        i = next(k for k, d in enumerate(dims) if d.kind == "variadic")
        n_after = len(dims) - i - 1
        pairs = list(zip(dims[:i], shape[:i], strict=True))
        pairs += list(zip(dims[i + 1 :], shape[len(shape) - n_after :], strict=True))
        var_dim, var_shape = dims[i], tuple(shape[i : len(shape) - n_after])
        if var_dim.name:
            seen = bound.get(var_dim.name, new.get(var_dim.name))
            if seen is None:
                new[var_dim.name] = var_shape
            elif not _variadic_ok(var_shape, seen, var_dim.broadcastable):
                return None
    else:
        pairs = list(zip(dims, shape, strict=True))
    exprs = []
    for dim, size in pairs:
        if dim.kind == "fixed":
            if size != dim.size and not (dim.broadcastable and size == 1):
                return None
        elif dim.kind == "named":
            if dim.broadcastable and size == 1:
                continue
            seen = bound.get(dim.name, new.get(dim.name))
            if seen is None:
                new[dim.name] = size
            elif seen != size:
                return None
        elif dim.kind == "expr":
            exprs.append((dim, size))
    # Expressions are evaluated once every plain name of this annotation is bound.
    for dim, size in exprs:
        value = _eval_expr(dim.name, {**bound, **new})
        if value is None or (value != size and not (dim.broadcastable and size == 1)):
            return None
    return new


def _variadic_ok(shape: tuple[int, ...], seen: tuple[int, ...], broadcastable: bool) -> bool:
    if not broadcastable:
        return shape == seen
    if len(shape) != len(seen):
        return False
    return all(a == b or a == 1 for a, b in zip(shape, seen, strict=True))


@dataclasses.dataclass
class _Memo:
    """Sizes bound so far in one call, and which argument bound each name (for messages)."""

    bound: dict[str, Any] = dataclasses.field(default_factory=dict)
    origin: dict[str, str] = dataclasses.field(default_factory=dict)


def _check_array(value: Any, ann: Any, what: str, fn_name: str, memo: _Memo) -> str | None:
    """Check one value; on success update `memo` and return None, else return the message."""
    where = f"{fn_name}(): {what}"
    expected = _show_annotation(ann)
    array_type = ann.array_type
    if array_type is not Any and not isinstance(value, array_type):
        hint = (
            " (convert it with jnp.asarray)" if isinstance(value, np.ndarray | float | int) else ""
        )
        return (
            f"{where} must be a {_type_name(array_type)}{hint} matching {expected}, "
            f"got a {_type_name(type(value))}."
        )
    dims = _parse(ann.dim_str)
    shape = tuple(value.shape)
    if not _dtype_ok(value.dtype, ann):
        return (
            f"{where} has dtype {value.dtype} but {expected} needs a "
            f"{_dtype_family(ann).lower()} dtype. Cast the argument (e.g. x.astype(...)) or "
            "change the annotation."
        )
    new = _match_shape(shape, dims, memo.bound)
    if new is None:
        names = sorted(
            {d.name for d in dims if d.name and d.kind in ("named", "variadic")} & set(memo.bound)
        )
        origin = "".join(f"; {n} was bound by {memo.origin[n]}" for n in names if n in memo.origin)
        return (
            f"{where} has shape {shape} but {expected} expects shape "
            f"{_expected(dims, memo.bound)}{origin}. {_FIX}"
        )
    memo.bound.update(new)
    memo.origin.update({name: what for name in new})
    return None


def _check_value(value: Any, ann: Any, what: str, fn_name: str, memo: _Memo) -> str | None:
    if ann is inspect.Parameter.empty or ann is Any:
        return None
    if _is_array_annotation(ann):
        return _check_array(value, ann, what, fn_name, memo)
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(ann)
        if value is None and type(None) in members:
            return None
        arrays = [m for m in members if _is_array_annotation(m)]
        if arrays:
            first_error = None
            for member in arrays:
                trial = _Memo(dict(memo.bound), dict(memo.origin))
                error = _check_array(value, member, what, fn_name, trial)
                if error is None:
                    memo.bound, memo.origin = trial.bound, trial.origin
                    return None
                first_error = first_error or error
            others = [m for m in members if not _is_array_annotation(m)]
            if not others or not _plain_ok(value, ft.reduce(operator.or_, others)):
                return first_error
            return None
    if not _plain_ok(value, ann):
        return f"{fn_name}(): {what} = {value!r} does not match the annotation {ann!r}."
    return None


def _plain_ok(value: Any, ann: Any) -> bool:
    # optional: beartype checks the non-array annotations when installed (~0.1 s to import)
    door = optional_import("beartype.door")
    if door is not None:
        try:
            return bool(door.is_bearable(value, ann))
        except Exception:  # noqa: BLE001 - beartype refuses some hints (e.g. jaxtyping PyTree); do not guess
            return True
    if isinstance(ann, type):
        return isinstance(value, ann)
    return True


# ------------------------------------------------------------------------------------------------
# The decorator
# ------------------------------------------------------------------------------------------------


def typed(fn: _F) -> _F:
    """Check the jaxtyping annotations of `fn` on every call (once per trace under `jax.jit`).

    Each named dimension (`"batch"`) is bound by the first annotated argument that has it and
    must have the same size in every later argument and in the return value. Supported
    dimension syntax (jaxtyping's): fixed sizes (`3`), names (`n`), anything (`_`, `_n`),
    broadcastable (`#n`, matches `n` or 1), variadic (`*batch`, `*_`, `...`, `*#batch`), and
    expressions over bound names (`n-1`, `2*n`).

    Args:
      fn: a function (or method) whose parameters and return value may carry jaxtyping array
        annotations such as `Float[Array, "batch features"]`; `X | None` is allowed.

    Returns:
      A wrapper with the same signature that checks, then calls `fn`.

    Raises:
      ShapeMismatchError: an argument (or the result) does not match its annotation. The
        message names the function, the argument, the expected shape with the sizes bound so
        far (and which argument bound them) and the actual shape or dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxtyping import Array, Float
      >>> @typed
      ... def affine(x: Float[Array, "batch n"], w: Float[Array, "n m"]) -> Float[Array, "batch m"]:
      ...     return x @ w
      >>> affine(jnp.ones((2, 3)), jnp.ones((3, 4))).shape
      (2, 4)
    """
    signature = inspect.signature(fn)
    fn_name = getattr(fn, "__qualname__", getattr(fn, "__name__", "function"))
    hints: dict[str, Any] | None = None

    def resolve() -> dict[str, Any]:
        nonlocal hints
        if hints is None:  # resolved lazily so annotations may refer to later definitions
            try:
                hints = typing.get_type_hints(fn, include_extras=True)
            except Exception:  # noqa: BLE001 - unresolvable string annotations: use what is there
                hints = {
                    k: v
                    for k, v in getattr(fn, "__annotations__", {}).items()
                    if not isinstance(v, str)
                }
        return hints

    @ft.wraps(fn)
    def wrapper(*args, **kwargs):
        annotations = resolve()
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        memo = _Memo()
        for name, value in bound.arguments.items():
            ann = annotations.get(name, inspect.Parameter.empty)
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                items = [(f"argument '*{name}'[{i}]", v) for i, v in enumerate(value)]
            elif kind is inspect.Parameter.VAR_KEYWORD:
                items = [(f"argument '{k}' (in **{name})", v) for k, v in value.items()]
            else:
                items = [(f"argument '{name}'", value)]
            for what, item in items:
                error = _check_value(item, ann, what, fn_name, memo)
                if error is not None:
                    raise ShapeMismatchError(error)
        out = fn(*args, **kwargs)
        ann = annotations.get("return", inspect.Parameter.empty)
        error = _check_value(out, ann, "return value", fn_name, memo)
        if error is not None:
            raise ShapeMismatchError(error)
        return out

    return typing.cast(_F, wrapper)
