"""Kernel boundary: an accelerated operation declared as ONE primitive with a reference jaxpr.

`tljax.kernel(reference, implementations={"gpu": fast_fn})` returns a callable that, when traced,
emits one equation of the primitive `kernel_p` whose params carry the reference function's closed
jaxpr. Two worlds read that one equation differently:

- **Execution** (eager, `jax.jit`, the `reference` semantics, which re-binds primitives as JAX
  would) lowers it per platform: to the implementation registered for the platform being compiled
  for (`mlir.register_lowering(kernel_p, ..., platform=...)`), or to the reference jaxpr where the
  kernel has none.
- **Every other tljax semantics** (exact, float emulation, interval/CROWN, symbolic, `compare`)
  walks the REFERENCE jaxpr: the walker's `HIGHER_ORDER` table gets a recursion rule for
  `kernel_p` when this module is imported.

So results about a model with kernels are results about the reference; that the implementation
computes the reference to within the declared tolerance is a *contract*, checked by
`check_kernel` and listed per graph by `kernel_contracts` (which kernels, what tolerance, what
evidence). Differentiation uses the reference's derivative (a JVP rule that runs the kernel for the
primal and `jax.jvp` of the reference for the tangent) unless a kernel VJP is given; `jax.vmap`
gives one kernel equation again, with the reference vmapped and the implementation vmapped.

Semantics with concrete passthrough (the bound recorder) bind a kernel equation whose inputs are
all concrete directly, i.e. run the implementation, like any concrete subcomputation of the
program; only kernels that touch the bounded input are walked.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools as ft
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.interpreters import ad, batching, mlir

from . import _jaxpr_compat as compat
from ._errors import InputError, TljaxError
from ._graph import Graph, is_array_leaf, iter_eqns, trace
from ._walker import HIGHER_ORDER, eval_jaxpr

compat.register_exclusion(__file__)

__all__ = [
    "Kernel",
    "KernelCheck",
    "KernelContract",
    "KernelContractError",
    "KernelEvidence",
    "Tolerance",
    "check_kernel",
    "format_contracts",
    "kernel",
    "kernel_contracts",
    "kernel_p",
]


class KernelContractError(TljaxError, AssertionError):
    """An implementation of a kernel is outside its declared tolerance (or has the wrong type)."""


# ----------------------------------------------------------------------------------------------
# Platforms. Keys users may give and the lowering platforms they cover.

_PLATFORM_KEYS = {
    "cpu": ("cpu",),
    "gpu": ("cuda", "rocm"),
    "cuda": ("cuda",),
    "rocm": ("rocm",),
    "tpu": ("tpu",),
}
_LOWERING_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def _impl_key_for(
    implementations: Mapping[str, Callable], lowering_platform: str | None
) -> str | None:
    """The implementation key serving a lowering platform ("cuda" before "gpu"), or None."""
    if lowering_platform is None:
        return None
    for key in (lowering_platform, "gpu" if lowering_platform in ("cuda", "rocm") else None):
        if key is not None and key in implementations:
            return key
    return None


def _devices_for(key: str) -> list:
    """Local devices an implementation key runs on ([] when the platform is absent)."""
    backend = "gpu" if key in ("gpu", "cuda", "rocm") else key
    try:
        devs = jax.local_devices(backend=backend)
    except RuntimeError:  # "Unknown backend" when the platform is not present
        return []
    if key in ("cuda", "rocm") and _lowering_platform("gpu") != key:
        return []  # a CUDA implementation is not evidence about a ROCm GPU, and vice versa
    return devs


# ----------------------------------------------------------------------------------------------
# Tolerances.


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Elementwise contract ``|impl - ref| <= atol + rtol * |ref|`` (NaN only where ref is NaN).

    Attributes:
      atol: absolute tolerance.
      rtol: relative tolerance.
    """

    atol: float
    rtol: float

    def __post_init__(self):
        for what, v in (("atol", self.atol), ("rtol", self.rtol)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise InputError(f"Tolerance.{what} must be a finite number >= 0, got {v!r}")

    @classmethod
    def of(cls, spec) -> Tolerance:
        """A float (atol = rtol = spec), an ``(atol, rtol)`` pair, a dict or a `Tolerance`."""
        if isinstance(spec, Tolerance):
            return spec
        if isinstance(spec, int | float) and not isinstance(spec, bool):
            return cls(float(spec), float(spec))
        if isinstance(spec, tuple) and len(spec) == 2:
            return cls(float(spec[0]), float(spec[1]))
        if isinstance(spec, Mapping) and set(spec) <= {"atol", "rtol"}:
            return cls(float(spec.get("atol", 0.0)), float(spec.get("rtol", 0.0)))
        raise InputError(
            f"cannot read a tolerance from {spec!r}; give a float (atol = rtol), an (atol, rtol) "
            "pair, {'atol': ..., 'rtol': ...} or a tljax.Tolerance"
        )

    def __str__(self) -> str:
        return f"atol={self.atol:g}, rtol={self.rtol:g}"


def _tolerance_table(spec) -> Mapping[str, Tolerance]:
    """``{dtype name or "default": Tolerance}``; a plain spec applies to every dtype."""
    if isinstance(spec, Mapping) and not set(spec) <= {"atol", "rtol"}:
        table = {}
        for k, v in spec.items():
            name = "default" if k == "default" else np.dtype(k).name
            table[name] = Tolerance.of(v)
        return MappingProxyType(table)
    return MappingProxyType({"default": Tolerance.of(spec)})


# ----------------------------------------------------------------------------------------------
# The primitive.

kernel_p = jcore.Primitive("kernel")
kernel_p.multiple_results = True


def _open(jaxpr):
    return compat.open_jaxpr(jaxpr)


def _out_avals(jaxpr) -> list:
    inner, _ = _open(jaxpr)
    return [v.aval for v in inner.outvars]


def _in_avals(jaxpr) -> list:
    inner, _ = _open(jaxpr)
    return [v.aval for v in inner.invars]


def _eval_reference(*args, jaxpr, **params):
    """The reference jaxpr as a JAX function (also the lowering where no implementation exists)."""
    del params
    inner, consts = _open(jaxpr)
    return jax.core.eval_jaxpr(inner, consts, *args)


def _run_implementation(impl_key, *args, kernel, jaxpr, in_tree, out_tree, vmap_axes, name):
    """Calls the implementation on pytree arguments, vmapped once per batching level."""
    impl = kernel.implementations[impl_key]

    def call(*flat):
        out = impl(*jtu.tree_unflatten(in_tree, list(flat)))
        leaves, tree = jtu.tree_flatten(out)
        if tree != out_tree:
            raise KernelContractError(
                f"implementation {impl_key!r} of kernel {name!r} returned structure {tree}, but "
                f"the reference returns {out_tree}; return the same pytree as the reference"
            )
        return leaves

    f = call
    for axes in vmap_axes:  # innermost vmap first: that is the order the batch rule saw them
        f = jax.vmap(f, in_axes=axes)
    outs = list(f(*args))
    problems = []
    for k, (o, a) in enumerate(zip(outs, _out_avals(jaxpr), strict=True)):
        if tuple(jnp.shape(o)) != tuple(a.shape) or jnp.result_type(o) != a.dtype:
            problems.append(
                f"output {k}: {jnp.result_type(o).name}{list(jnp.shape(o))} where the reference "
                f"gives {a.dtype.name}{list(a.shape)}"
            )
    if problems:
        raise KernelContractError(
            f"implementation {impl_key!r} of kernel {name!r} does not match the reference's output "
            "types:\n  " + "\n  ".join(problems) + "\n  Cast or reshape inside the implementation "
            "(e.g. run a bfloat16 kernel and cast back to the reference dtype)."
        )
    return outs


def _abstract_eval(*avals, jaxpr, **params):
    del params
    expected = _in_avals(jaxpr)
    if [(tuple(a.shape), a.dtype) for a in avals] != [(tuple(a.shape), a.dtype) for a in expected]:
        raise TljaxError(
            f"kernel called with {[a.str_short() for a in avals]} but its reference jaxpr takes "
            f"{[a.str_short() for a in expected]} (this is a bug in tljax's kernel batching rule)"
        )
    return _out_avals(jaxpr)


kernel_p.def_abstract_eval(_abstract_eval)

_EAGER: collections.OrderedDict = collections.OrderedDict()
_EAGER_SIZE = 256


def _eager_impl(*args, **params):
    """Eager calls compile the single equation, so they take the same lowering as `jax.jit`."""
    # Under disable_jit, jit would call this again: run the Python function instead.
    if getattr(jax.config, "jax_disable_jit", False):
        kernel = params["kernel"]
        key = _impl_key_for(kernel.implementations, _lowering_platform(jax.default_backend()))
        if key is None:
            return _eval_reference(*args, **params)
        return _run_implementation(key, *args, **params)
    cache_key = tuple(sorted(params.items(), key=lambda kv: kv[0]))
    fn = _EAGER.get(cache_key)
    if fn is None:
        fn = jax.jit(ft.partial(kernel_p.bind, **params))
        _EAGER[cache_key] = fn
        while len(_EAGER) > _EAGER_SIZE:
            _EAGER.popitem(last=False)
    return fn(*args)


kernel_p.def_impl(_eager_impl)


def _lowering_platform(backend: str) -> str:
    if backend == "gpu":
        try:
            version = str(jax.local_devices(backend="gpu")[0].client.platform_version).lower()
        except Exception:  # noqa: BLE001 - best effort: CUDA is the common case
            version = ""
        return "rocm" if "rocm" in version else "cuda"
    return backend


def _lowering(platform: str | None):
    def rule(ctx, *args, kernel, **params):
        key = _impl_key_for(kernel.implementations, platform)
        fn = _eval_reference if key is None else ft.partial(_run_implementation, key)
        return mlir.lower_fun(fn, multiple_results=True)(ctx, *args, kernel=kernel, **params)

    return rule


mlir.register_lowering(kernel_p, _lowering(None))
for _plat in _LOWERING_PLATFORMS:
    mlir.register_lowering(kernel_p, _lowering(_plat), platform=_plat)


def _instantiate(t):
    """A tangent as an array: symbolic zeros (`ad.Zero`) become explicit zeros of their aval."""
    inst = getattr(ad, "instantiate_zeros", None)
    if inst is not None:
        return inst(t)
    aval = getattr(t, "aval", None)  # fallback for a JAX without the helper: Zero carries .aval
    if type(t).__name__ == "Zero" and aval is not None:
        return jnp.zeros(aval.shape, aval.dtype)
    return t


def _jvp(primals, tangents, *, jaxpr, **params):
    """Primal from the kernel (its implementation), tangent from the reference's derivative."""
    out = kernel_p.bind(*primals, jaxpr=jaxpr, **params)
    ref = ft.partial(_eval_reference, jaxpr=jaxpr)
    _, t_out = jax.jvp(lambda *a: ref(*a), list(primals), [_instantiate(t) for t in tangents])
    return out, list(t_out)


ad.primitive_jvps[kernel_p] = _jvp


def _batch(args, dims, *, kernel, jaxpr, vmap_axes, **params):
    """vmap gives one kernel equation again: reference vmapped, implementation vmapped."""
    axes = tuple(None if d is None else 0 for d in dims)
    moved = [x if d is None else jnp.moveaxis(x, d, 0) for x, d in zip(args, dims, strict=True)]
    size = next(jnp.shape(x)[0] for x, d in zip(moved, dims, strict=True) if d is not None)
    batched = kernel._batched_jaxpr(jaxpr, axes, int(size))
    out = kernel_p.bind(
        *moved, kernel=kernel, jaxpr=batched, vmap_axes=(*vmap_axes, axes), **params
    )
    return out, [0] * len(out)


batching.primitive_batchers[kernel_p] = _batch


def _walk_reference(ctx, invals):
    """Recursion rule of every semantics that recurses: walk the reference jaxpr."""
    ref = compat.sub_jaxpr(ctx.eqn, "reference")
    label = f"kernel({ctx.eqn.params['name']})"
    return eval_jaxpr(ctx.semantics, ref.jaxpr, ref.consts, invals, path=ctx.path + (label,))


# The walker's extension points: all recursing semantics (and `iter_eqns`, which asks compat for
# sub-jaxprs) see the reference from now on.
compat.register_sub_jaxprs(
    kernel_p, lambda params: (compat.SubJaxpr("reference", "jaxpr", None, *_open(params["jaxpr"])),)
)
HIGHER_ORDER[kernel_p] = _walk_reference


# ----------------------------------------------------------------------------------------------
# The user-facing kernel object.


@dataclasses.dataclass(frozen=True, eq=False)
class Kernel:
    """An accelerated operation with a reference definition; create with `tljax.kernel`.

    Calling it traces to ONE `kernel_p` equation. Hashable by identity (it is a primitive param).

    Attributes:
      name: the name used in jaxprs, walker paths, errors and contract tables.
      reference: the reference function (pure JAX); its jaxpr is what tljax semantics interpret.
      implementations: ``{platform: fn}`` with platform ``"cpu"``, ``"gpu"`` (CUDA and ROCm),
        ``"cuda"``, ``"rocm"`` or ``"tpu"``; each fn takes and returns what `reference` does.
      tolerances: ``{dtype name or "default": Tolerance}`` the implementations promise.
      vjp: optional ``vjp(args, out, cotangent) -> tuple of argument cotangents`` replacing the
        reference's derivative in reverse mode.
    """

    name: str
    reference: Callable
    implementations: Mapping[str, Callable]
    tolerances: Mapping[str, Tolerance]
    vjp: Callable | None = None
    _jaxprs: dict = dataclasses.field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Kernel({self.name!r}, implementations={sorted(self.implementations)})"

    def tolerance_for(self, dtype) -> Tolerance:
        """The tolerance that applies to outputs of `dtype`."""
        name = np.dtype(dtype).name
        return self.tolerances.get(name, self.tolerances.get("default", Tolerance(0.0, 0.0)))

    @property
    def tolerance(self) -> Tolerance:
        """The default tolerance (see `tolerance_for` for per-dtype entries)."""
        return self.tolerance_for("float32")

    # -- tracing --------------------------------------------------------------------------------

    def _flatten(self, args) -> tuple[list, Any]:
        leaves, in_tree = jtu.tree_flatten(args)
        bad = [
            k
            for k, x in enumerate(leaves)
            if not (is_array_leaf(x) or isinstance(x, jax.core.Tracer))
        ]
        if bad:
            kinds = ", ".join(f"leaf {k}: {type(leaves[k]).__name__}" for k in bad)
            raise InputError(
                f"kernel {self.name!r} takes arrays only, got non-array leaves ({kinds}); bind "
                "options with functools.partial before tljax.kernel, e.g. "
                "tljax.kernel(functools.partial(attention, is_causal=True))"
            )
        return [jnp.asarray(x) for x in leaves], in_tree

    def reference_jaxpr(self, *args):
        """The closed reference jaxpr for arguments shaped like `args` (cached per shapes)."""
        leaves, in_tree = self._flatten(args)
        return self._reference(in_tree, tuple(jax.typeof(x) for x in leaves))[0]

    def _reference(self, in_tree, avals):
        key = ("ref", in_tree, tuple((tuple(a.shape), a.dtype, a.weak_type) for a in avals))
        hit = self._jaxprs.get(key)
        if hit is None:

            def flat_ref(*flat):
                return self.reference(*jtu.tree_unflatten(in_tree, list(flat)))

            specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
            closed, out_shape = jax.make_jaxpr(flat_ref, return_shape=True)(*specs)
            inner, _ = _open(closed)
            if inner.effects:
                raise InputError(
                    f"the reference of kernel {self.name!r} has side effects ({inner.effects}); a "
                    "kernel reference must be a pure function (remove debug prints/callbacks)"
                )
            hit = (closed, jtu.tree_structure(out_shape))
            self._jaxprs[key] = hit
        return hit

    def _batched_jaxpr(self, jaxpr, axes, size):
        key = ("vmap", id(jaxpr), axes, size)
        hit = self._jaxprs.get(key)
        if hit is None:
            specs = [
                jax.ShapeDtypeStruct(
                    ((size,) if ax is not None else ()) + tuple(a.shape),
                    a.dtype,
                    weak_type=a.weak_type,
                )
                for a, ax in zip(_in_avals(jaxpr), axes, strict=True)
            ]
            fn = jax.vmap(ft.partial(_eval_reference, jaxpr=jaxpr), in_axes=axes)
            hit = (jax.make_jaxpr(fn)(*specs), jaxpr)  # keep the parent alive: id() stays unique
            self._jaxprs[key] = hit
        return hit[0]

    def bind(self, *args):
        """Emits the kernel equation (no custom VJP); returns the reference's output pytree."""
        leaves, in_tree = self._flatten(args)
        avals = tuple(jax.typeof(x) for x in leaves)
        closed, out_tree = self._reference(in_tree, avals)
        outs = kernel_p.bind(
            *leaves,
            kernel=self,
            jaxpr=closed,
            name=self.name,
            in_tree=in_tree,
            out_tree=out_tree,
            vmap_axes=(),
        )
        return jtu.tree_unflatten(out_tree, outs)

    def __call__(self, *args):
        if self.vjp is None:
            return self.bind(*args)
        return self._with_vjp(*args)

    @ft.cached_property
    def _with_vjp(self):
        @jax.custom_vjp
        def call(*args):
            return self.bind(*args)

        def fwd(*args):
            out = self.bind(*args)
            return out, (args, out)

        def bwd(res, g):
            args, out = res
            cts = self.vjp(args, out, g)
            if not isinstance(cts, tuple) or len(cts) != len(args):
                raise InputError(
                    f"the vjp of kernel {self.name!r} must return a tuple with one cotangent per "
                    f"argument ({len(args)}), got {type(cts).__name__}"
                    + (f" of length {len(cts)}" if isinstance(cts, tuple) else "")
                )
            return cts

        call.defvjp(fwd, bwd)
        return call

    @property
    def evidence(self) -> tuple:
        """Every `KernelEvidence` recorded for this kernel by `check_kernel` (oldest first)."""
        return tuple(_EVIDENCE.get(self, ()))


def kernel(
    reference: Callable | None = None,
    *,
    implementations: Mapping[str, Callable] | None = None,
    tolerance=1e-5,
    name: str | None = None,
    vjp: Callable | None = None,
):
    """Declares an accelerated operation: one primitive, executed by `implementations`, interpreted
    by every tljax semantics through `reference`.

    Args:
      reference: a pure JAX function of arrays (pytrees of arrays) defining the operation. Bind
        non-array options with `functools.partial` first. Omit it to use `kernel` as a decorator.
      implementations: ``{platform: fn}``; platform is ``"cpu"``, ``"gpu"`` (CUDA and ROCm),
        ``"cuda"``, ``"rocm"`` or ``"tpu"``. Each fn has the reference's signature and output
        types. Where no implementation is registered for the platform compiled for, the reference
        is compiled.
      tolerance: what the implementations promise against the reference, elementwise
        ``|impl - ref| <= atol + rtol |ref|``: a float (atol = rtol), an ``(atol, rtol)`` pair, a
        `Tolerance`, or a dict by output dtype name, e.g. ``{"float32": 1e-5, "bfloat16": 2e-2}``.
      name: name in jaxprs, paths and contract tables (default: the reference's ``__name__``).
      vjp: optional ``vjp(args, out, cotangent) -> tuple`` with one cotangent per argument; by
        default reverse mode differentiates the reference.

    Returns:
      A `Kernel`, callable like `reference`.

    Example:
      >>> k = tljax.kernel(lambda x: jnp.tanh(x) * 2.0,
      ...                  implementations={"gpu": my_fused_tanh2}, tolerance=1e-6, name="tanh2")
      >>> jax.jit(k)(x)                                   # my_fused_tanh2 on GPU, reference on CPU
      >>> tljax.evaluate(k, x, semantics="exact")         # exact value of the reference
      >>> tljax.check_kernel(k, x)                        # records the evidence
    """
    if reference is None:
        return lambda fn: kernel(
            fn, implementations=implementations, tolerance=tolerance, name=name, vjp=vjp
        )
    if not callable(reference):
        raise InputError(
            f"tljax.kernel: reference must be a function, got {type(reference).__name__}"
        )
    impls = dict(implementations or {})
    bad = [k for k in impls if k not in _PLATFORM_KEYS]
    if bad:
        raise InputError(
            f"tljax.kernel: unknown platform(s) {bad} in implementations; use "
            f"{sorted(_PLATFORM_KEYS)}"
        )
    not_callable = [k for k, f in impls.items() if not callable(f)]
    if not_callable:
        raise InputError(f"tljax.kernel: implementations {not_callable} are not callable")
    if name is None:
        name = getattr(reference, "__name__", None) or getattr(
            getattr(reference, "func", None), "__name__", "kernel"
        )
        if name == "<lambda>":
            name = "kernel"
    return Kernel(
        name=str(name),
        reference=reference,
        implementations=MappingProxyType(impls),
        tolerances=_tolerance_table(tolerance),
        vjp=vjp,
    )


# ----------------------------------------------------------------------------------------------
# Conformance: evidence that an implementation meets its contract.


@dataclasses.dataclass(frozen=True)
class KernelEvidence:
    """One conformance check of one implementation of one kernel.

    Attributes:
      kernel: the kernel's name.
      implementation: the implementation key (``"gpu"``, ``"cpu"``, ...).
      platform: the device platform it ran on; device_kind: e.g. ``"NVIDIA H100 80GB HBM3"``.
      tolerance: the tolerance checked (per output dtype: the loosest that applied).
      max_abs_error: the largest ``|impl - ref|`` over all cases and outputs.
      max_ratio: the largest ``|impl - ref| / (atol + rtol |ref|)``; <= 1 means within tolerance.
      worst_case: the label of the case that produced `max_ratio`.
      n_cases: number of input cases; shapes: the input shapes checked (the contract is evidence
        for these shapes and dtypes).
      passed: whether every case was within tolerance.
      checked_at: UTC time (ISO 8601); jax_version: the JAX that ran the check.
    """

    kernel: str
    implementation: str
    platform: str
    device_kind: str
    tolerance: Tolerance
    max_abs_error: float
    max_ratio: float
    worst_case: str
    n_cases: int
    shapes: tuple
    passed: bool
    checked_at: str
    jax_version: str

    def __str__(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return (
            f"{status} kernel {self.kernel!r} impl {self.implementation!r} on {self.platform} "
            f"({self.device_kind}): max |err| {self.max_abs_error:.3g}, {self.max_ratio:.3g}x of "
            f"tolerance ({self.tolerance}), worst case {self.worst_case!r}, {self.n_cases} cases, "
            f"shapes {list(self.shapes)}, jax {self.jax_version}, {self.checked_at}"
        )


_EVIDENCE: dict[Kernel, list[KernelEvidence]] = {}


@dataclasses.dataclass(frozen=True)
class KernelCheck:
    """What `check_kernel` did: evidence per implementation checked, and what it skipped."""

    kernel: Kernel
    evidence: tuple[KernelEvidence, ...]
    skipped: Mapping[str, str]

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.evidence)

    def __str__(self) -> str:
        lines = [str(e) for e in self.evidence]
        lines += [
            f"SKIP kernel {self.kernel.name!r} impl {k!r}: {why}" for k, why in self.skipped.items()
        ]
        return "\n".join(lines) if lines else f"kernel {self.kernel.name!r}: nothing to check"


def _scale_of(x: np.ndarray) -> float:
    if x.size == 0:
        return 1.0
    s = float(np.max(np.abs(x.astype(np.float64))))
    return s if s > 0 and math.isfinite(s) else 1.0


def _random_like(x: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    dt = x.dtype
    if dt == np.bool_:
        return rng.random(x.shape) < 0.5
    if np.issubdtype(dt, np.integer):
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 1)
        return rng.integers(lo, hi + 1, size=x.shape).astype(dt)
    if np.issubdtype(dt, np.complexfloating):
        return (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)).astype(dt) * scale
    return (rng.standard_normal(x.shape) * scale).astype(dt)


def _cases(
    example: list[np.ndarray], n_random: int, seed: int, edge_cases: bool
) -> list[tuple[str, list]]:
    """Input cases: the example, random draws at the example's scale, and edge cases."""
    rng = np.random.default_rng(seed)
    cases = [("example", list(example))]
    scales = [_scale_of(x) for x in example]
    for i in range(n_random):
        cases.append(
            (
                f"random[{i}]",
                [_random_like(x, rng, s) for x, s in zip(example, scales, strict=True)],
            )
        )
    if edge_cases:

        def floats(f):
            return [f(x) if np.issubdtype(x.dtype, np.inexact) else x for x in example]

        cases.append(("zeros", floats(np.zeros_like)))
        cases.append(("ones", floats(np.ones_like)))
        cases.append(("tiny", floats(lambda x: (_random_like(x, rng, 1.0) * 1e-6).astype(x.dtype))))
        cases.append(("large", floats(lambda x: (_random_like(x, rng, 1.0) * 1e3).astype(x.dtype))))
        cases.append(("constant", floats(lambda x: np.full_like(x, 0.5))))
    return cases


def _compare_outputs(ref: list, got: list, kernel: Kernel) -> tuple[float, float, Tolerance]:
    max_abs, max_ratio, loosest = 0.0, 0.0, Tolerance(0.0, 0.0)
    for r, g in zip(ref, got, strict=True):
        tol = kernel.tolerance_for(r.dtype)
        if tol.atol + tol.rtol > loosest.atol + loosest.rtol:
            loosest = tol
        r64 = (
            np.asarray(r).astype(np.float64)
            if not np.iscomplexobj(r)
            else np.asarray(r).astype(np.complex128)
        )
        g64 = np.asarray(g).astype(r64.dtype)
        if r64.shape != g64.shape:
            return math.inf, math.inf, tol
        nan_r, nan_g = np.isnan(r64), np.isnan(g64)
        if np.any(nan_r != nan_g):
            return math.inf, math.inf, tol
        with np.errstate(invalid="ignore", over="ignore"):
            both_inf = np.isinf(r64) & np.isinf(g64) & (r64 == g64)
            err = np.where(nan_r | both_inf, 0.0, np.abs(g64 - r64))
            allowed = tol.atol + tol.rtol * np.abs(np.where(np.isfinite(r64), r64, 0.0))
            ratio = np.where(
                err == 0,
                0.0,
                np.where(allowed > 0, err / np.where(allowed > 0, allowed, 1.0), np.inf),
            )
        if err.size:
            max_abs = max(max_abs, float(np.max(err)))
            max_ratio = max(max_ratio, float(np.max(ratio)))
    return max_abs, max_ratio, loosest


def check_kernel(
    k: Kernel,
    *example,
    n_random: int = 4,
    edge_cases: bool = True,
    seed: int = 0,
    cases: list | None = None,
    implementations: list[str] | None = None,
    raise_on_failure: bool = True,
) -> KernelCheck:
    """Checks each implementation of `k` against its reference and records the evidence.

    For every implementation whose platform is present, the kernel is compiled for that platform
    (so the registered implementation runs, at the default matmul precision) and compared with the
    reference compiled for the same device in true float32 matmul precision, on: the example,
    `n_random` random draws at the example's scale, and edge cases (zeros, ones, tiny, large,
    constant inputs). The evidence (kernel, implementation, tolerance,
    max error, when, JAX version, platform) is stored and shown by `kernel_contracts(graph)`.

    Args:
      k: the kernel.
      *example: arguments shaped like real calls (their shapes and dtypes are what is checked).
      n_random: random cases.
      edge_cases: add the edge cases.
      seed: seed of the random cases.
      cases: extra ``(label, args)`` cases, e.g. adversarial inputs known for this operation.
      implementations: check only these keys (default: all of `k.implementations`).
      raise_on_failure: raise `KernelContractError` when an implementation is out of tolerance
        (the failing evidence is recorded first).

    Returns:
      A `KernelCheck` with one `KernelEvidence` per checked implementation and the skipped ones
      (platform
      not present here) with the reason.

    Example:
      >>> report = tljax.check_kernel(tljax.layers.flash_attention_kernel, q, k, v)
      >>> print(report)
    """
    if not isinstance(k, Kernel):
        raise InputError(f"check_kernel expects a tljax Kernel, got {type(k).__name__}")
    leaves, in_tree = k._flatten(example)
    example_np = [np.asarray(x) for x in leaves]
    all_cases = _cases(example_np, n_random, seed, edge_cases)
    for label, args in cases or ():
        c_leaves, c_tree = k._flatten(args)
        if c_tree != in_tree:
            raise InputError(
                f"check_kernel: case {label!r} has structure {c_tree}, the example has {in_tree}"
            )
        all_cases.append((str(label), [np.asarray(x) for x in c_leaves]))
    keys = list(k.implementations) if implementations is None else list(implementations)
    unknown = [key for key in keys if key not in k.implementations]
    if unknown:
        raise InputError(
            f"check_kernel: kernel {k.name!r} has no implementation(s) {unknown}; it has "
            f"{sorted(k.implementations)}"
        )

    def run_kernel(*flat):
        return jtu.tree_leaves(k.bind(*jtu.tree_unflatten(in_tree, list(flat))))

    def run_reference(*flat):
        return jtu.tree_leaves(k.reference(*jtu.tree_unflatten(in_tree, list(flat))))

    evidence, skipped = [], {}
    for key in keys:
        devs = _devices_for(key)
        if not devs:
            skipped[key] = (
                f"no {key} device present (platforms here: "
                f"{sorted({d.platform for d in jax.devices()})})"
            )
            continue
        dev = devs[0]
        f_kernel = jax.jit(run_kernel)
        f_ref = jax.jit(run_reference)
        max_abs, worst_ratio, worst_label, worst_tol = 0.0, -1.0, "", k.tolerance
        for label, args in all_cases:
            placed = [jax.device_put(a, dev) for a in args]
            got = [np.asarray(o) for o in f_kernel(*placed)]
            # The reference in true float32 (no TF32 matmuls on GPUs): the contract is measured
            # against what the reference means, not against another fast approximation of it.
            with jax.default_matmul_precision("float32"):
                ref = [np.asarray(o) for o in f_ref(*placed)]
            abs_err, ratio, tol = _compare_outputs(ref, got, k)
            max_abs = max(max_abs, abs_err)
            if ratio > worst_ratio:
                worst_ratio, worst_label, worst_tol = ratio, label, tol
        ev = KernelEvidence(
            kernel=k.name,
            implementation=key,
            platform=dev.platform,
            device_kind=str(dev.device_kind),
            tolerance=worst_tol,
            max_abs_error=max_abs,
            max_ratio=max(worst_ratio, 0.0),
            worst_case=worst_label,
            n_cases=len(all_cases),
            shapes=tuple(f"{x.dtype.name}{list(x.shape)}" for x in example_np),
            passed=bool(worst_ratio <= 1.0),
            checked_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            jax_version=jax.__version__,
        )
        _EVIDENCE.setdefault(k, []).append(ev)
        evidence.append(ev)
    report = KernelCheck(k, tuple(evidence), MappingProxyType(skipped))
    failed = [e for e in evidence if not e.passed]
    if failed and raise_on_failure:
        raise KernelContractError(
            "kernel implementation outside its declared tolerance:\n  "
            + "\n  ".join(str(e) for e in failed)
            + "\n  Fix the implementation, or declare the tolerance it really meets "
            "(tljax.kernel(..., tolerance=...)); results of tljax semantics are about the "
            "reference."
        )
    return report


# ----------------------------------------------------------------------------------------------
# Contracts of a graph.


@dataclasses.dataclass(frozen=True)
class KernelContract:
    """A kernel used by a graph and the evidence that its implementations meet the tolerance.

    Attributes:
      name: the kernel's name; kernel: the `Kernel`.
      occurrences: how many kernel equations of this kernel the graph has (sub-jaxprs included).
      implementations: its implementation keys.
      tolerances: its declared tolerances.
      evidence: every recorded `KernelEvidence` (oldest first).
    """

    name: str
    kernel: Kernel
    occurrences: int
    implementations: tuple[str, ...]
    tolerances: Mapping[str, Tolerance]
    evidence: tuple[KernelEvidence, ...]

    @property
    def checked(self) -> tuple[str, ...]:
        """Implementation keys with at least one passing check."""
        return tuple(sorted({e.implementation for e in self.evidence if e.passed}))

    @property
    def unchecked(self) -> tuple[str, ...]:
        """Implementation keys without a passing check (results on them rest on trust alone)."""
        return tuple(sorted(set(self.implementations) - set(self.checked)))

    @property
    def failed(self) -> tuple[str, ...]:
        """Implementation keys whose latest check failed."""
        latest: dict[str, KernelEvidence] = {}
        for e in self.evidence:
            latest[e.implementation] = e
        return tuple(sorted(k for k, e in latest.items() if not e.passed))

    def __str__(self) -> str:
        tols = ", ".join(f"{k}: {v}" for k, v in self.tolerances.items())
        head = (
            f"kernel {self.name!r} x{self.occurrences}: implementations "
            f"{list(self.implementations)} "
            f"promise [{tols}] against the reference; checked {list(self.checked)}, unchecked "
            f"{list(self.unchecked)}" + (f", FAILED {list(self.failed)}" if self.failed else "")
        )
        return "\n".join([head, *(f"    {e}" for e in self.evidence)])


def kernel_contracts(graph_or_jaxpr) -> tuple[KernelContract, ...]:
    """Every kernel in a graph (sub-jaxprs included) with the evidence recorded for it.

    tljax semantics (exact, float emulation, bounds, symbolic) interpret a kernel's reference; what
    the compiled program runs is its implementation. This lists the contracts a result relies on
    when it is transferred to the compiled program.

    Args:
      graph_or_jaxpr: a `tljax.Graph`, a (closed) jaxpr, or a ``(fn, *example_args)`` tuple.

    Returns:
      One `KernelContract` per distinct kernel, in order of first occurrence.

    Example:
      >>> g = tljax.trace(model, params, x)
      >>> for c in tljax.kernel_contracts(g): print(c)
    """
    obj = graph_or_jaxpr
    if isinstance(obj, tuple) and obj and callable(obj[0]):
        obj = trace(obj[0], *obj[1:])
    if isinstance(obj, Graph):
        jaxpr = obj.jaxpr
    else:
        jaxpr, _ = _open(obj)
    counts: dict[Kernel, int] = {}
    for eqn in iter_eqns(jaxpr):
        if eqn.primitive is kernel_p:
            kern = eqn.params["kernel"]
            counts[kern] = counts.get(kern, 0) + 1
    return tuple(
        KernelContract(
            name=kern.name,
            kernel=kern,
            occurrences=n,
            implementations=tuple(sorted(kern.implementations)),
            tolerances=kern.tolerances,
            evidence=kern.evidence,
        )
        for kern, n in counts.items()
    )


def format_contracts(graph_or_jaxpr) -> str:
    """`kernel_contracts` as text, for reports and certificates ("" when there is no kernel).
    Also takes the contracts themselves (a tuple of `KernelContract`)."""
    obj = graph_or_jaxpr
    is_list = isinstance(obj, tuple) and all(isinstance(c, KernelContract) for c in obj)
    contracts = obj if is_list else kernel_contracts(obj)
    if not contracts:
        return ""
    return "results rest on these kernel contracts (implementation vs reference):\n" + "\n".join(
        "  " + str(c).replace("\n", "\n  ") for c in contracts
    )
