"""THE jaxpr walker: every semantics of tljax evaluates jaxprs through `eval_jaxpr` below.

The walker owns traversal, environments, literals, DropVars, recursion into the closed set of
higher-order primitives (jit, closed_call, custom_jvp_call, custom_vjp_call, remat, cond, scan,
while) and error location. A semantics only supplies a rule table and a few hooks
(`tljax.core.Semantics`). Scatter's combiner jaxpr and similar params are NOT sub-calls.
"""

from __future__ import annotations

import dataclasses
import functools as ft
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _jaxpr_compat as compat
from ._errors import RuleError, TljaxError, UnsupportedPrimitiveError
from ._semantics import Semantics

compat.register_exclusion(__file__)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a rule may know about the equation it evaluates."""

    semantics: Semantics
    eqn: Any
    path: tuple[str, ...]

    @property
    def primitive(self):
        return self.eqn.primitive

    @property
    def in_avals(self) -> list:
        return [v.aval for v in self.eqn.invars]

    @property
    def out_avals(self) -> list:
        return [v.aval for v in self.eqn.outvars]

    def where(self) -> str:
        return where(self.eqn, self.path)

    def walk(self, jaxpr, consts, args, *, label: str = "") -> list:
        """Evaluates a sub-jaxpr under the same semantics (for rules that recurse themselves)."""
        return eval_jaxpr(
            self.semantics, jaxpr, consts, args, path=self.path + ((label,) if label else ())
        )


def where(eqn, path=()) -> str:
    """Location line: user source, layer name stack, and the path through sub-jaxprs."""
    parts = [f"at {compat.source_line(eqn)}"]
    ns = compat.name_stack(eqn)
    if ns:
        parts.append(f"in layer {ns}")
    if path:
        parts.append("inside " + " > ".join(path))
    return ", ".join(parts)


def _format_params(params: dict) -> str:
    items = []
    for k, v in sorted(params.items()):
        s = repr(v)
        if len(s) > 60:
            s = s[:57] + "..."
        items.append(f"{k}={s}")
    return ", ".join(items) if items else "none"


_ADD_RULE_MSG = (
    "Register one with `tljax.register_rule({sem!r}, {prim})` or evaluate this sub-function under "
    "a semantics that supports it (`Graph.census()` and `tljax.interpret.coverage(fn, *args)` list "
    "what each "
    "semantics supports)."
)


def unsupported(sem: Semantics, eqn, path, *, fix: str | None = None) -> UnsupportedPrimitiveError:
    """The error for a primitive `sem` has no rule for: primitive, params, location, what to do.

    fix: what to do (formatted with `{prim}` and `{name}`); default: registering a rule with
    `tljax.register_rule`.
    """
    prim = eqn.primitive
    handle = f"jax.extend.core.primitives.{prim.name.replace('-', '_')}_p"
    if fix is None:
        todo = _ADD_RULE_MSG.format(sem=sem.name, prim=handle)
    else:
        todo = fix.format(prim=handle, name=prim.name)
    msg = (
        f"semantics {sem.name!r} has no rule for primitive {prim.name!r} "
        f"(params: {_format_params(eqn.params)})\n  {where(eqn, path)}\n  " + todo
    )
    err = UnsupportedPrimitiveError(msg)
    err.tljax_located = True
    return err


def _located(err: BaseException) -> bool:
    return bool(getattr(err, "tljax_located", False))


def eval_jaxpr(sem: Semantics, jaxpr, consts, args, *, path: tuple[str, ...] = ()) -> list:
    """Evaluates an open `jaxpr` with `consts` bound to its constvars, under `sem`.

    `consts` are concrete arrays (lifted here); `args` are already values of the semantics (or
    concrete arrays where the semantics passes concrete values through).
    """
    env: dict = {}

    def read(v):
        if compat.is_literal(v):
            return sem.lift(compat.literal_value(v), v.aval)
        return env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = sem.lift(c, v.aval)
    args = list(args)
    if len(args) != len(jaxpr.invars):
        raise TljaxError(f"jaxpr expects {len(jaxpr.invars)} inputs, got {len(args)}")
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    # values are dropped after their last use: a long program's intermediates would otherwise
    # all stay alive (gigabytes for a mapped bound program)
    outs = {v for v in jaxpr.outvars if not compat.is_literal(v)}
    last: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not compat.is_literal(v):
                last[v] = i
    for i, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        outvals = eval_eqn(sem, eqn, invals, path)
        for v, o in zip(eqn.outvars, outvals, strict=True):
            if not compat.is_dropvar(v) and (v in last or v in outs):
                env[v] = o
        for v in eqn.invars:
            if not compat.is_literal(v) and last[v] == i and v not in outs:
                env.pop(v, None)
    return [read(v) for v in jaxpr.outvars]


def eval_closed(sem: Semantics, closed, args, *, path=()) -> list:
    jaxpr, consts = compat.open_jaxpr(closed)
    return eval_jaxpr(sem, jaxpr, consts, args, path=path)


def bind(eqn, vals) -> list:
    """Re-binds an equation's primitive on concrete values (JAX arrays, numpy arrays or tracers)."""
    prim = eqn.primitive
    out = prim.bind(*vals, **compat.bind_params(prim, eqn.params))
    return list(out) if prim.multiple_results else [out]


def eval_eqn(sem: Semantics, eqn, invals, path=()) -> list:
    """Evaluates one equation under `sem`; the single dispatch point of tljax."""
    prim = eqn.primitive
    ctx = Context(sem, eqn, path)
    if sem.concrete_passthrough and not any(sem.is_abstract(v) for v in invals):
        # Nothing here carries the semantics: JAX computes it (constant folding, index math),
        # or the host where that gives the same bits (no kernel compiled per shape).
        host = sem.host_rules.get(prim)
        if host is not None and not any(isinstance(v, jax.core.Tracer) for v in invals):
            return _guard(ctx, lambda: _normalise(prim, host(ctx, *invals, **eqn.params)))
        return _guard(ctx, lambda: bind(eqn, invals))
    rule = sem.rules.get(prim)
    if rule is None and prim in _CALL_PRIMS and sem.call_rules:
        rule = sem.call_rules.get(compat.call_name(eqn))
    if rule is None:
        if sem.recurse and prim in HIGHER_ORDER:
            return _guard(ctx, lambda: HIGHER_ORDER[prim](ctx, invals), wrap_located=False)
        if sem.default_rule is not None:
            rule = sem.default_rule
        elif eqn.effects and not eqn.outvars:
            return []  # e.g. debug_print: executed only by the reference semantics
        else:
            raise unsupported(sem, eqn, path)
    return _guard(ctx, lambda: _normalise(prim, rule(ctx, *invals, **eqn.params)))


def _normalise(prim, out) -> list:
    if prim.multiple_results:
        return list(out)
    return [out]


def _guard(ctx: Context, thunk, wrap_located: bool = True):
    try:
        return thunk()
    except Exception as err:
        if _located(err) or (not wrap_located and isinstance(err, TljaxError)):
            raise
        if isinstance(err, TljaxError):
            # raised on purpose by the rule: its message is for the user; add the place only
            where = ctx.where()
            if where in str(err):
                err.tljax_located = True
                raise
            try:
                new = type(err)(f"{err}\n  {where}")
            except Exception:  # noqa: BLE001 - exotic constructor: keep the rule's error
                raise err from None
            new.tljax_located = True
            raise new from err
        if isinstance(
            err, jax.errors.ConcretizationTypeError | jax.errors.TracerBoolConversionError
        ):
            hint = (
                "a rule needed a concrete value but got a traced one; evaluate this semantics "
                "outside jax.jit or make the value static"
            )
        else:
            hint = "this is a bug in the rule or an input it does not support"
        msg = (
            f"semantics {ctx.semantics.name!r} failed on primitive {ctx.primitive.name!r} "
            f"(params: {_format_params(ctx.eqn.params)}): {type(err).__name__}: {err}\n  "
            f"{ctx.where()}\n  ({hint})"
        )
        cls = type(err) if isinstance(err, TljaxError) else RuleError
        try:
            new = cls(msg)
        except Exception:  # noqa: BLE001 - exotic constructor: fall back to RuleError
            new = RuleError(msg)
        new.tljax_located = True
        raise new from err


# ----------------------------------------------------------------------------------------------
# Higher-order primitives: one recursion rule each, shared by every semantics.


def _call(label: str):
    def rule(ctx: Context, invals):
        sub = compat.sub_jaxpr(ctx.eqn, "call")
        name = compat.call_name(ctx.eqn)
        path = ctx.path + (f"{label}({name})",)
        return eval_jaxpr(ctx.semantics, sub.jaxpr, sub.consts, invals, path=path)

    return rule


def _remat(ctx: Context, invals):
    sub = compat.sub_jaxpr(ctx.eqn, "remat")
    return eval_jaxpr(ctx.semantics, sub.jaxpr, sub.consts, invals, path=ctx.path + ("remat",))


def _walk_fn(sem, sub: compat.SubJaxpr, path):
    return lambda *args: eval_jaxpr(sem, sub.jaxpr, sub.consts, list(args), path=path)


def _cond(ctx: Context, invals):
    sem = ctx.semantics
    branches = compat.sub_jaxprs(ctx.eqn)
    index, ops = invals[0], invals[1:]
    idx = sem.concrete(index)
    if idx is not None:
        i = int(np.clip(int(np.asarray(idx)), 0, len(branches) - 1))
        return _walk_fn(sem, branches[i], ctx.path + (f"cond[branch {i}]",))(*ops)
    if sem.traceable:
        fns = [_walk_fn(sem, b, ctx.path + (f"cond[branch {k}]",)) for k, b in enumerate(branches)]
        return list(jax.lax.switch(index, [lambda *a, f=f: tuple(f(*a)) for f in fns], *ops))
    if sem.join is None or sem.branch_indices is None:
        raise TljaxError(
            f"semantics {sem.name!r} cannot evaluate a cond whose branch index is not concrete; "
            "make the predicate depend only on constants, or use a semantics that joins branches"
        )
    ks = sem.branch_indices(index, len(branches))
    outs = [_walk_fn(sem, branches[k], ctx.path + (f"cond[branch {k}]",))(*ops) for k in ks]
    return outs[0] if len(outs) == 1 else sem.join(outs)


@ft.lru_cache(maxsize=4096)
def _index_jaxpr(aval_shape, aval_dtype, i):
    return jax.make_jaxpr(lambda x: x[i])(jax.ShapeDtypeStruct(aval_shape, aval_dtype))


@ft.lru_cache(maxsize=4096)
def _stack_jaxpr(aval_shape, aval_dtype, n):
    s = jax.ShapeDtypeStruct(aval_shape, aval_dtype)
    return jax.make_jaxpr(lambda *xs: jnp.stack(xs))(*([s] * n))


def _apply_closed(sem, closed, args, path):
    jaxpr, consts = compat.open_jaxpr(closed)
    return eval_jaxpr(sem, jaxpr, consts, args, path=path)


def _scan(ctx: Context, invals):
    sem, p = ctx.semantics, ctx.eqn.params
    n_consts, n_carry = compat.scan_layout(p)
    length, reverse = int(p["length"]), bool(p["reverse"])
    consts, carry = invals[:n_consts], invals[n_consts : n_consts + n_carry]
    xs = invals[n_consts + n_carry :]
    body = compat.sub_jaxpr(ctx.eqn, "body")
    if sem.traceable:
        f = _walk_fn(sem, body, ctx.path + ("scan",))

        def step(c, x):
            out = f(*consts, *c, *x)
            return tuple(out[:n_carry]), tuple(out[n_carry:])

        c, ys = jax.lax.scan(step, tuple(carry), tuple(xs), length=length, reverse=reverse)
        return [*c, *ys]
    x_avals = [v.aval for v in ctx.eqn.invars[n_consts + n_carry :]]
    y_avals = [v.aval for v in body.jaxpr.outvars[n_carry:]]
    ys_steps = []
    order = range(length - 1, -1, -1) if reverse else range(length)
    for i in order:
        path = ctx.path + (f"scan[step {i}]",)
        x_i = [
            _apply_closed(sem, _index_jaxpr(a.shape, a.dtype, i), [x], path)[0]
            for a, x in zip(x_avals, xs, strict=True)
        ]
        out = eval_jaxpr(sem, body.jaxpr, body.consts, [*consts, *carry, *x_i], path=path)
        carry, ys_steps_i = out[:n_carry], out[n_carry:]
        ys_steps.append(ys_steps_i)
    if reverse:
        ys_steps.reverse()
    ys = []
    for k, a in enumerate(y_avals):
        if length == 0:
            ys.append(sem.lift(np.zeros((0, *a.shape), a.dtype), None))
        else:
            ys.append(
                _apply_closed(
                    sem,
                    _stack_jaxpr(a.shape, a.dtype, length),
                    [s[k] for s in ys_steps],
                    ctx.path + ("scan[stack]",),
                )[0]
            )
    return [*carry, *ys]


def _while(ctx: Context, invals):
    sem, p = ctx.semantics, ctx.eqn.params
    nc, nb = compat.while_layout(p)
    cconsts, bconsts, carry = invals[:nc], invals[nc : nc + nb], invals[nc + nb :]
    cond_f = _walk_fn(sem, compat.sub_jaxpr(ctx.eqn, "cond"), ctx.path + ("while[cond]",))
    body_f = _walk_fn(sem, compat.sub_jaxpr(ctx.eqn, "body"), ctx.path + ("while[body]",))
    if sem.traceable:
        out = jax.lax.while_loop(
            lambda c: cond_f(*cconsts, *c)[0], lambda c: tuple(body_f(*bconsts, *c)), tuple(carry)
        )
        return list(out)
    step = 0
    while True:
        pred = sem.concrete(cond_f(*cconsts, *carry)[0])
        if pred is None:
            raise TljaxError(
                f"semantics {sem.name!r} cannot evaluate a while loop whose predicate is not "
                f"concrete (after {step} iterations); bound the loop with a static trip count "
                "(fori_loop with Python ints becomes a scan) or use a concrete predicate"
            )
        if not bool(np.asarray(pred)):
            return list(carry)
        carry = body_f(*bconsts, *carry)
        step += 1


HIGHER_ORDER = {
    compat.jit_p: _call("jit"),
    compat.closed_call_p: _call("call"),
    compat.custom_jvp_call_p: _call("custom_jvp"),
    compat.custom_vjp_call_p: _call("custom_vjp"),
    compat.remat_p: _remat,
    compat.cond_p: _cond,
    compat.scan_p: _scan,
    compat.while_p: _while,
}
_CALL_PRIMS = compat.CALL_PRIMITIVES
