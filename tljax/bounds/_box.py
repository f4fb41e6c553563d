"""Input boxes and output bounds: pytrees with validated `lower` / `upper`."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ..core import InvalidBoxError


def _concrete(x) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001 - tracers are validated elsewhere (at the concrete boundary)
        return None


def _leaf_problem(x) -> str:
    """Why `x` cannot be a box leaf ('' when it can): boxes hold real numbers."""
    if isinstance(x, jax.core.Tracer):
        dt = x.dtype
    elif x is None or isinstance(x, str | bytes):
        return f"is {x!r}, not an array"
    else:
        try:
            dt = np.asarray(x).dtype
        except Exception:  # noqa: BLE001 - e.g. a ragged list: reported as not an array
            return f"is a {type(x).__name__} that is not an array"
    if not any(jnp.issubdtype(dt, t) for t in (jnp.integer, jnp.floating, jnp.bool_)):
        return (
            f"has dtype {dt} ({type(x).__name__}); a box holds real numbers: give float arrays "
            "(complex inputs: box the real and imaginary parts as two float leaves)"
        )
    return ""


def _validate(lower, upper, what="Box"):
    ll, lt = jtu.tree_flatten(lower)
    ul, ut = jtu.tree_flatten(upper)
    if lt != ut:
        raise InvalidBoxError(
            f"{what}: lower and upper have different structures: {lt} vs {ut}; give both ends "
            "the same pytree (same keys, same nesting), e.g. Box.linf(x, eps) from one example x"
        )
    if not ll:
        raise InvalidBoxError(
            f"{what} has no array leaves (lower is {lower!r}); give arrays (or a pytree of "
            "arrays) shaped like the function's first argument"
        )
    problems = []
    for k, (lo, hi) in enumerate(zip(ll, ul, strict=True)):
        kinds = [_leaf_problem(v) for v in (lo, hi)]
        if any(kinds):
            sides = zip(("lower", "upper"), kinds, strict=True)
            problems += [f"leaf {k}: {side} {p}" for side, p in sides if p]
            continue
        if np.shape(lo) != np.shape(hi):
            problems.append(
                f"leaf {k}: lower has shape {np.shape(lo)}, upper has shape {np.shape(hi)} "
                "(give both ends one shape)"
            )
            continue
        lo_c, hi_c = _concrete(lo), _concrete(hi)
        if lo_c is None or hi_c is None:
            continue
        lo_c = lo_c.astype(np.float64)
        hi_c = hi_c.astype(np.float64)
        bad_nan = np.argwhere(np.isnan(lo_c) | np.isnan(hi_c))
        for idx in bad_nan[:20]:
            t = tuple(int(i) for i in idx)
            problems.append(f"leaf {k} index {t}: NaN (lower={lo_c[t]}, upper={hi_c[t]})")
        bad = np.argwhere(lo_c > hi_c)
        for idx in bad[:20]:
            t = tuple(int(i) for i in idx)
            problems.append(
                f"leaf {k} index {t}: lower {float(lo_c[t])!r} > upper {float(hi_c[t])!r}"
            )
        extra = max(0, len(bad) - 20) + max(0, len(bad_nan) - 20)
        if extra:
            problems.append(f"... and {extra} more offending indices in leaf {k}")
    if problems:
        raise InvalidBoxError(
            f"{what} is invalid ({len(problems)} problem(s)); every entry needs lower <= upper and "
            "no NaN:\n  " + "\n  ".join(problems)
        )


def box_valid(box_leaves) -> jax.Array:
    """Scalar bool, traceable: every entry of every `(lower, upper)` leaf pair has
    lower <= upper and no NaN (a NaN fails the comparison)."""
    ok = jnp.asarray(True)
    for lo, hi in box_leaves:
        ok = ok & jnp.all(jnp.asarray(lo) <= jnp.asarray(hi))
    return ok


def box_check(box_leaves, where: str) -> None:
    """`jax.experimental.checkify.check` that the box is valid, naming per offending leaf the
    number of bad entries and the first one (flat index, lower, upper). Needs a caller inside
    `checkify.checkify`."""
    from jax.experimental import checkify

    parts, vals = [], []
    for k, (lo, hi) in enumerate(box_leaves):
        flat = ~(jnp.asarray(lo) <= jnp.asarray(hi)).reshape(-1)
        if flat.size == 0:
            continue
        i = jnp.argmax(flat)
        parts.append(
            f"leaf {k}: {{}} bad entries, first at flat index {{}} (lower={{}}, upper={{}})"
        )
        vals += [jnp.sum(flat), i, jnp.ravel(lo)[i], jnp.ravel(hi)[i]]
    checkify.check(
        box_valid(box_leaves),
        f"{where}: invalid input box (every entry needs lower <= upper and no NaN): "
        + "; ".join(parts),
        *vals,
    )


@jtu.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box `{x : lower <= x <= upper}` over an array or a pytree of arrays.

    Validated on construction when the values are concrete: shapes must match, lower <= upper
    everywhere and no NaN; `InvalidBoxError` lists every offending index. Boxes are pytrees, so a
    batch of boxes (leading axis) can be mapped over with `jax.vmap`.

    Inside `jax.jit` / `jax.vmap` the values are traced and cannot be checked when the box is
    built. `tljax.bound` then checks them inside its program: the bounds computed from an
    invalid box are NaN, both ends, for each affected batch element (never a finite pair that
    looks valid); `bound(..., check_box=True)` under `jax.experimental.checkify.checkify`
    instead reports the offending entries as a checkify error. `tljax.bound` re-checks a
    concrete box too (one rebuilt without validation, e.g. by `jax.tree.map`, still raises).

    Example:
      >>> box = tljax.Box(jnp.zeros(3), jnp.ones(3))
      >>> box = tljax.Box.linf(x, 0.01, clip=(0.0, 1.0))
    """

    lower: Any
    upper: Any

    def __post_init__(self):
        _validate(self.lower, self.upper)
        # boxes rebuilt as pytrees (tree_unflatten) skip this; `bound` validates those
        object.__setattr__(self, "_validated", True)

    @classmethod
    def linf(cls, center, eps, clip: tuple | None = None) -> Box:
        """The L-infinity ball of radius `eps` around `center`, optionally clipped to `clip`."""
        lo = jtu.tree_map(lambda c: jnp.asarray(c) - eps, center)
        hi = jtu.tree_map(lambda c: jnp.asarray(c) + eps, center)
        if clip is not None:
            lo = jtu.tree_map(lambda v: jnp.maximum(v, clip[0]), lo)
            hi = jtu.tree_map(lambda v: jnp.minimum(v, clip[1]), hi)
        return cls(lo, hi)

    @classmethod
    def point(cls, x) -> Box:
        return cls(x, x)

    @property
    def center(self):
        return jtu.tree_map(
            lambda a, b: (jnp.asarray(a) + jnp.asarray(b)) / 2, self.lower, self.upper
        )

    def sample(self, key, n: int):
        """`n` points drawn uniformly from the box (leading axis n), plus nothing else."""
        leaves, tree = jtu.tree_flatten(self.lower)
        his = jtu.tree_leaves(self.upper)
        keys = jax.random.split(key, len(leaves))
        out = [
            jax.random.uniform(
                k, (n, *np.shape(lo)), minval=jnp.asarray(lo), maxval=jnp.asarray(hi)
            )
            for k, lo, hi in zip(keys, leaves, his, strict=True)
        ]
        return jtu.tree_unflatten(tree, out)

    def tree_flatten(self):
        return (self.lower, self.upper), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        obj = object.__new__(cls)
        object.__setattr__(obj, "lower", children[0])
        object.__setattr__(obj, "upper", children[1])
        return obj


class _Static:
    """Plain data (lists, dicts) made hashable and comparable by value for pytree aux data."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Static) and repr(self.value) == repr(other.value)

    def __hash__(self):
        return hash(repr(self.value))


@jtu.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Bounds:
    """Certified output bounds, `lower` / `upper` in the output's pytree structure.

    Attributes:
      lower, upper: the bounds.
      method: how they were computed ("ibp", "crown", ...).
      float_sound: whether they also contain the float32 program's outputs.
      certificate: a `Certificate` when requested, else None.
      kernel_contracts: the `tljax.kernel` contracts the bounds rest on (plain data; the bounds
        are about the kernels' references, the compiled program runs their implementations).
    """

    lower: Any
    upper: Any
    method: str = ""
    float_sound: bool = True
    certificate: Any = None
    kernel_contracts: Any = ()

    @property
    def width(self):
        return jtu.tree_map(lambda a, b: b - a, self.lower, self.upper)

    def contains(self, y, *, strict: bool = False) -> bool:
        """Whether the (pytree of) array(s) `y` lies inside the bounds."""

        def inside(lo, hi, v):
            v = np.asarray(v)
            return bool(np.all((np.asarray(lo) <= v) & (v <= np.asarray(hi))))

        ok = jtu.tree_map(
            inside,
            self.lower,
            self.upper,
            y,
        )
        return all(jtu.tree_leaves(ok))

    def tree_flatten(self):
        # kernel_contracts is plain data (lists of dicts), so it rides in the aux data, wrapped
        # to be hashable: jit caches on treedefs.
        aux = (self.method, self.float_sound, _Static(self.kernel_contracts))
        return (self.lower, self.upper, self.certificate), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "lower", children[0])
        object.__setattr__(obj, "upper", children[1])
        object.__setattr__(obj, "certificate", children[2])
        object.__setattr__(obj, "method", aux[0])
        object.__setattr__(obj, "float_sound", aux[1])
        object.__setattr__(obj, "kernel_contracts", aux[2].value if len(aux) > 2 else ())
        return obj

    def __repr__(self) -> str:
        return (
            f"Bounds(method={self.method!r}, float_sound={self.float_sound},\n"
            f"  lower={self.lower},\n  upper={self.upper})"
        )
