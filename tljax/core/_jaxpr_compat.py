"""Every version-sensitive fact about JAX's jaxpr API, in one place.

tljax supports jax 0.10.x (Python 3.11) and 0.11.x (Python 3.12+). JAX 0.11 merged `ClosedJaxpr`
into `Jaxpr`, replaced scan's `num_consts/num_carry` with `ft_in/ft_out` and added the
`one_minus_square` primitive (in derivatives of tanh/asin/acos/atanh). Nothing outside this
module may touch those details; `tests/core/test_compat.py` has one test per fact so that an upgrade
fails there first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend.core as jcore
import numpy as np
from jax.extend import source_info_util
from jax.extend.core import primitives as _prims

JAX_VERSION = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())

Jaxpr = jcore.Jaxpr
ClosedJaxpr = jcore.ClosedJaxpr
Literal = jcore.Literal
Var = jcore.Var
DropVar = jcore.DropVar
Primitive = jcore.Primitive

# Higher-order primitives: the closed set the walker recurses into. Key by object, never by name.
jit_p = _prims.jit_p
closed_call_p = _prims.closed_call_p
custom_jvp_call_p = _prims.custom_jvp_call_p
custom_vjp_call_p = _prims.custom_vjp_call_p
remat_p = _prims.remat_p
cond_p = _prims.cond_p
scan_p = _prims.scan_p
while_p = _prims.while_p
# First-order primitives that only appear through jax internals.
add_any_p = _prims.add_jaxvals_p
stop_gradient_p = _prims.stop_gradient_p
square_p = getattr(_prims, "square_p", None)
# JAX 0.11+ only: `1 - x**2` as one primitive (no params; XLA gets `(1 + x) * (1 - x)`). It appears
# in the derivatives of tanh, asin, acos and atanh, which 0.10 wrote with `sub`/`mul`.
one_minus_square_p = getattr(_prims, "one_minus_square_p", None)


def open_jaxpr(j: Any) -> tuple[Any, list]:
    """(open jaxpr, consts) for a ClosedJaxpr (0.10) or a merged Jaxpr (0.11+) or an open Jaxpr."""
    if ClosedJaxpr is not Jaxpr and isinstance(j, ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    consts = getattr(j, "consts", None)
    if consts is not None and ClosedJaxpr is Jaxpr:
        # 0.11+: a Jaxpr carries its consts; its constvars are bound to them.
        return j, list(consts)
    return j, []


def closed_jaxpr_parts(j: Any) -> tuple[Any, list]:
    """Alias of `open_jaxpr` for readability where a closed jaxpr is expected."""
    return open_jaxpr(j)


def scan_layout(params: dict) -> tuple[int, int]:
    """(number of consts, number of carries) of a scan equation."""
    if "num_consts" in params:
        return int(params["num_consts"]), int(params["num_carry"])
    n_consts, n_carry, _ = (len(t) for t in params["ft_in"].unpack())
    return n_consts, n_carry


# ----------------------------------------------------------------------------------------------
# Where higher-order primitives keep their sub-jaxprs. Everything that walks, rewrites or searches
# sub-jaxprs asks `sub_jaxprs`; nobody else reads these params.


class SubJaxpr(NamedTuple):
    """One sub-jaxpr of a higher-order equation.

    Attributes:
      role: ``"call"`` (jit, closed_call, custom_jvp/vjp_call: runs once on the equation's inputs),
        ``"remat"``, ``"branch"`` (cond), ``"body"`` (scan, while) or ``"cond"`` (while's
        predicate),
        or what `register_sub_jaxprs` gave.
      param: the equation param holding it (``"jaxpr"``, ``"call_jaxpr"``, ``"branches"``, ...).
      index: position inside a tuple param (cond's branches), else None.
      jaxpr: the open jaxpr; consts: the values of its constvars (empty for an open param).
    """

    role: str
    param: str
    index: int | None
    jaxpr: Any
    consts: list


def _one(role: str, param: str):
    def get(params: dict) -> tuple[SubJaxpr, ...]:
        return (SubJaxpr(role, param, None, *open_jaxpr(params[param])),)

    return get


def _cond_subs(params: dict) -> tuple[SubJaxpr, ...]:
    # branches[0] is the FALSE branch of lax.cond; the index operand is an int32.
    return tuple(
        SubJaxpr("branch", "branches", i, *open_jaxpr(b)) for i, b in enumerate(params["branches"])
    )


def _while_subs(params: dict) -> tuple[SubJaxpr, ...]:
    return (
        SubJaxpr("cond", "cond_jaxpr", None, *open_jaxpr(params["cond_jaxpr"])),
        SubJaxpr("body", "body_jaxpr", None, *open_jaxpr(params["body_jaxpr"])),
    )


# The closed set of higher-order primitives. scatter's `update_jaxpr` is a combiner, not a call,
# so blind `jaxprs_in_params` recursion is never used.
_SUB_JAXPRS: dict[Any, Callable[[dict], tuple[SubJaxpr, ...]]] = {
    jit_p: _one("call", "jaxpr"),
    closed_call_p: _one("call", "call_jaxpr"),
    custom_jvp_call_p: _one("call", "call_jaxpr"),
    custom_vjp_call_p: _one("call", "call_jaxpr"),
    remat_p: _one("remat", "jaxpr"),  # an OPEN jaxpr: no consts
    cond_p: _cond_subs,
    scan_p: _one("body", "jaxpr"),
    while_p: _while_subs,
}
CALL_PRIMITIVES = frozenset([jit_p, closed_call_p, custom_jvp_call_p, custom_vjp_call_p])


def sub_jaxprs(eqn: Any) -> tuple[SubJaxpr, ...]:
    """The sub-jaxprs of a higher-order equation with their roles; () for a first-order one."""
    get = _SUB_JAXPRS.get(eqn.primitive)
    return () if get is None else get(eqn.params)


def sub_jaxpr(eqn: Any, role: str) -> SubJaxpr:
    """The single sub-jaxpr of `eqn` with `role` (e.g. a call's ``"call"``, a scan's ``"body"``)."""
    found = [s for s in sub_jaxprs(eqn) if s.role == role]
    if len(found) != 1:
        roles = [s.role for s in sub_jaxprs(eqn)]
        raise ValueError(
            f"primitive {eqn.primitive.name!r} has sub-jaxpr roles {roles}, not exactly one "
            f"{role!r}; use `sub_jaxprs(eqn)` for several"
        )
    return found[0]


def is_higher_order(prim: Any) -> bool:
    """Whether `prim` carries sub-jaxprs that evaluation recurses into."""
    return prim in _SUB_JAXPRS


def register_sub_jaxprs(prim: Any, get: Callable[[dict], tuple[SubJaxpr, ...]]) -> None:
    """Declares where a tljax-defined higher-order primitive (e.g. `kernel_p`) keeps sub-jaxprs."""
    _SUB_JAXPRS[prim] = get


# ----------------------------------------------------------------------------------------------
# Primitives by name (as printed in jaxprs). Tables are keyed by Primitive objects; names are
# resolved here once, because printed names and attribute names differ and change across versions.

_PRINTED_TO_ATTR = {"add_any": "add_jaxvals", "remat2": "remat", "pjit": "jit"}


def primitive_by_name(name: str) -> Any | None:
    """The primitive printed as `name` in jaxprs (``"add_any"``, ``"scatter-add"``, ``"remat2"``
    work too), from `jax.lax` or `jax.extend.core.primitives`; None where this JAX lacks it."""
    attr = _PRINTED_TO_ATTR.get(name, name).replace("-", "_") + "_p"
    for mod in (jax.lax, _prims):
        p = getattr(mod, attr, None)
        if isinstance(p, Primitive):
            return p
    return None


def primitives_by_name(*names: str) -> list:
    """`primitive_by_name` for each name, skipping those this JAX version lacks."""
    found = (primitive_by_name(n) for n in names)
    return [p for p in found if p is not None]


def while_layout(params: dict) -> tuple[int, int]:
    """(number of predicate consts, number of body consts) of a while equation."""
    return int(params["cond_nconsts"]), int(params["body_nconsts"])


def bind_params(prim: Any, params: dict) -> dict:
    """Params to pass to `prim.bind` when re-binding an equation (call-like primitives need
    this)."""
    out = prim.get_bind_params(params)
    if isinstance(out, tuple):  # JAX < 0.9.2 returned (subfuns, params)
        subfuns, p = out
        if subfuns:
            raise NotImplementedError("re-binding with subfuns needs jax >= 0.9.2")
        return p
    return out


def is_literal(v: Any) -> bool:
    return isinstance(v, Literal)


def is_dropvar(v: Any) -> bool:
    return isinstance(v, DropVar)


def literal_value(lit: Any) -> np.ndarray:
    """The value of a Literal as a numpy array of its aval's dtype (exactly, never via str)."""
    return np.asarray(lit.val, dtype=lit.aval.dtype)


def call_name(eqn: Any) -> str:
    """Human name of a call-like equation: jit's `name`, or the wrapped function's name."""
    p = eqn.params
    if "name" in p:
        return str(p["name"])
    sub = p.get("call_jaxpr") or p.get("jaxpr")
    if sub is not None:
        inner, _ = open_jaxpr(sub)
        dbg = getattr(inner, "debug_info", None)
        name = getattr(dbg, "func_name", None)
        if name:
            return str(name).split(" ")[0]
    return eqn.primitive.name


def source_line(eqn: Any) -> str:
    """`file.py:line:col (function)` of the user code that produced the equation."""
    try:
        return source_info_util.summarize(eqn.source_info)
    except Exception:  # noqa: BLE001 - location is best effort, never a new failure
        return "<unknown source>"


def name_stack(eqn: Any) -> str:
    """The `jax.named_scope` chain under which the equation was traced (layer names)."""
    try:
        return str(eqn.source_info.name_stack)
    except Exception:  # noqa: BLE001
        return ""


def make_jaxpr(fn, *args):
    """`jax.make_jaxpr(fn, return_shape=True)(*args)` -> (closed jaxpr, out shape pytree)."""
    return jax.make_jaxpr(fn, return_shape=True)(*args)


@functools.cache
def compiler_option_supported(name: str, value: Any) -> bool:
    """Whether XLA on the default backend accepts `jax.jit(..., compiler_options={name: value})`.

    XLA flags come and go with jaxlib: `xla_cpu_use_fusion_emitters` exists in 0.10 and is refused
    in 0.11 ("No such compile option"). Probed once per (name, value) by compiling a tiny program.
    """
    try:
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - XlaRuntimeError/JaxRuntimeError/ValueError by version
        return False
    return True


def supported_compiler_options(options: dict) -> dict:
    """`options` without the entries this jaxlib's XLA refuses (see `compiler_option_supported`)."""
    return {k: v for k, v in options.items() if compiler_option_supported(k, v)}


def register_exclusion(path: str) -> None:
    """Hide a tljax file from user tracebacks."""
    try:
        source_info_util.register_exclusion(path)
    except Exception:  # noqa: BLE001
        pass
