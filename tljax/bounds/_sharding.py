"""Batched bounds and branch-and-bound domains sharded over devices (and hosts).

`bound_sharded(fn, lowers, uppers, *args)` bounds a batch of boxes (leading axis) with
`tljax.bound`'s computation, vmapped over the boxes and split across a 1-D device mesh with
`jax.shard_map`: each device bounds its own boxes, no communication. Parameters (`*args`) are
replicated. The batch is padded to a multiple of the device count (by repeating the last box) and
the padding dropped from the result. See `docs/multi_device.md` for multi-GPU and multi-host use.
"""

from __future__ import annotations

import collections
import functools as ft
import inspect

import jax
import jax.tree_util as jtu
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..core import Graph, InputError, InvalidBoxError, compat, is_array_leaf, processes, trace
from ._api import METHODS, bound
from ._box import Bounds, Box

compat.register_exclusion(__file__)

__all__ = ["batch_mesh", "bound_sharded"]

_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 32


def _shard_map():
    """`jax.shard_map` (JAX >= 0.7) or the experimental one, with replication checks off."""
    sm = getattr(jax, "shard_map", None)
    if sm is None:  # pragma: no cover - older JAX
        from jax.experimental.shard_map import shard_map as sm
    params = inspect.signature(sm).parameters
    off = (
        {"check_vma": False}
        if "check_vma" in params
        else {"check_rep": False}
        if "check_rep" in params
        else {}
    )
    return ft.partial(sm, **off)


def batch_mesh(devices=None, *, axis_name: str = "batch") -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process, `jax.devices()`).

    Args:
      devices: the devices to shard over.
      axis_name: the mesh axis name.

    Returns:
      A `jax.sharding.Mesh` with one axis.
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise InputError("batch_mesh: no devices given")
    return Mesh(np.array(devs), (axis_name,))


def _leading(tree, what) -> int:
    sizes = {int(np.shape(x)[0]) for x in jtu.tree_leaves(tree) if np.ndim(x) >= 1}
    if any(np.ndim(x) == 0 for x in jtu.tree_leaves(tree)):
        raise InvalidBoxError(
            f"bound_sharded: every leaf of {what} needs a leading batch axis; got a scalar leaf"
        )
    if len(sizes) != 1:
        raise InvalidBoxError(
            f"bound_sharded: leaves of {what} have different batch sizes {sorted(sizes)}"
        )
    return sizes.pop()


def _pad(x, n: int):
    """Pads the leading axis to length `n` by repeating the last entry."""
    x = np.asarray(x)
    if x.shape[0] == n:
        return x
    reps = np.repeat(x[-1:], n - x.shape[0], axis=0)
    return np.concatenate([x, reps], axis=0)


def _to_global(x, sharding, process_local: bool):
    if process_local:
        return jax.make_array_from_process_local_data(sharding, x)
    x = np.asarray(x)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _to_host(arr, process_local: bool) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(arr)
    if process_local:  # this process's rows, in order
        shards = sorted(arr.addressable_shards, key=lambda s: s.index[0].start or 0)
        return np.concatenate([np.asarray(s.data) for s in shards], axis=0)
    return np.asarray(processes.gather(arr, what="bound_sharded's results"))


def bound_sharded(
    fn,
    lowers,
    uppers,
    *args,
    method: str = "crown",
    relu_splits=None,
    mesh: Mesh | None = None,
    process_local: bool = False,
    float_sound: bool = True,
    float_format=None,
    spec=None,
    alpha_iters: int = 20,
    alpha_lr: float = 0.1,
) -> Bounds:
    """Bounds of `fn(x, *args)` over a batch of boxes, sharded over the devices of `mesh`.

    Equal to `jax.vmap` of `tljax.bound` over the boxes (same computation per box), but the batch
    is split along the mesh axis with `jax.shard_map`, so N devices bound N shares of the boxes in
    parallel. Branch-and-bound domains are boxes plus per-domain ReLU splits (`relu_splits`).

    Args:
      fn: a function, module or `Graph` taking the boxed input first.
      lowers, uppers: lower / upper corners with a leading batch axis `B` (pytrees like the input;
        for domains that share one box, broadcast it: ``jnp.broadcast_to(lo, (B, *lo.shape))``).
      *args: further concrete arguments (parameters), replicated on every device.
      method: ``"ibp"``, ``"affine"``, ``"crown"`` or ``"alpha-crown"``.
      relu_splits: None, or a list in the layout of `tljax.bounds.relu_shapes` whose entries are
        None or int arrays with a leading batch axis `B` (+1 active, -1 inactive, 0 free).
      mesh: a 1-D `jax.sharding.Mesh` (default `batch_mesh()`: all devices of all processes).
      process_local: multi-host: `lowers` / `uppers` / `relu_splits` hold only this process's
        boxes (every process the same count) and the result holds only this process's rows.
        Otherwise every process passes the whole batch and gets the whole result.
      float_sound, float_format, spec, alpha_iters, alpha_lr: as in `tljax.bound`.

    Returns:
      `Bounds` whose `lower` / `upper` have the leading batch axis `B`.

    Example:
      >>> lo = x_batch - 0.01; hi = x_batch + 0.01                 # (4096, 784)
      >>> b = tljax.bound_sharded(model, lo, hi, method="crown")    # 4096 boxes over all GPUs
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {METHODS}")
    mesh = batch_mesh() if mesh is None else mesh
    if len(mesh.axis_names) != 1:
        raise InputError(
            f"bound_sharded needs a 1-D mesh (one batch axis), got axes {mesh.axis_names}; "
            "build one with tljax.bounds.batch_mesh(devices)"
        )
    axis = mesh.axis_names[0]
    n_dev = int(mesh.devices.size)
    if jtu.tree_structure(lowers) != jtu.tree_structure(uppers):
        raise InvalidBoxError(
            f"bound_sharded: lowers and uppers have different structures: "
            f"{jtu.tree_structure(lowers)} vs {jtu.tree_structure(uppers)}"
        )
    n = _leading(lowers, "lowers")
    if n == 0:
        raise InvalidBoxError("bound_sharded: the batch is empty")
    if _leading(uppers, "uppers") != n:
        raise InvalidBoxError(
            f"bound_sharded: lowers have batch size {n}, uppers {_leading(uppers, 'uppers')}"
        )
    splits = None if relu_splits is None else list(relu_splits)
    for k, s in enumerate(splits or ()):
        if s is not None and (np.ndim(s) < 1 or np.shape(s)[0] != n):
            raise InputError(
                f"bound_sharded: relu_splits[{k}] needs a leading batch axis of size {n}, got "
                f"shape {np.shape(s)}"
            )
    # Every box is checked once, concretely, here (inside the sharded program they are tracers).
    Box(jtu.tree_map(np.asarray, lowers), jtu.tree_map(np.asarray, uppers))
    example = jtu.tree_map(lambda a: np.asarray(a)[0], lowers)
    graph = fn if isinstance(fn, Graph) else trace(fn, example, *args)
    local_devices = n_dev // max(jax.process_count(), 1) if process_local else n_dev
    padded = -(-n // local_devices) * local_devices
    lo_p = jtu.tree_map(lambda a: _pad(a, padded), lowers)
    hi_p = jtu.tree_map(lambda a: _pad(a, padded), uppers)
    sp_p = (
        None
        if splits is None
        else [None if s is None else _pad(np.asarray(s, np.int32), padded) for s in splits]
    )
    graph.flatten_inputs(example, *args)  # structure and shapes, with a clear error
    flat_args, args_tree = jtu.tree_flatten(args)
    dyn_mask = tuple(is_array_leaf(x) for x in flat_args)
    dyn_args = [np.asarray(x) for x, m in zip(flat_args, dyn_mask, strict=True) if m]
    static_args = tuple(None if m else x for x, m in zip(flat_args, dyn_mask, strict=True))

    kw = dict(
        method=method,
        float_sound=float_sound,
        float_format=float_format,
        spec=spec,
        alpha_iters=alpha_iters,
        alpha_lr=alpha_lr,
    )
    key = (
        id(fn),
        mesh,  # equal meshes (same devices and axis) share the compiled program
        jtu.tree_structure(lowers),
        tuple((np.shape(x)[1:], str(np.asarray(x).dtype)) for x in jtu.tree_leaves(lowers)),
        None if sp_p is None else tuple(None if s is None else s.shape[1:] for s in sp_p),
        tuple((np.shape(a), str(a.dtype)) for a in dyn_args),
        dyn_mask,
        method,
        float_sound,
        str(float_format),
        None if spec is None else (np.shape(spec), np.asarray(spec).tobytes()),
        alpha_iters,
        alpha_lr,
    )
    entry = _CACHE.get(key)
    if entry is None or entry[0] is not fn:
        entry = (fn, _compile(graph, mesh, axis, kw, args_tree, static_args))
        _CACHE[key] = entry
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    run = entry[1]
    batch = NamedSharding(mesh, P(axis))
    replicated = NamedSharding(mesh, P())
    g_lo = jtu.tree_map(lambda a: _to_global(a, batch, process_local), lo_p)
    g_hi = jtu.tree_map(lambda a: _to_global(a, batch, process_local), hi_p)
    g_sp = (
        None
        if sp_p is None
        else [None if s is None else _to_global(s, batch, process_local) for s in sp_p]
    )
    g_args = [_to_global(a, replicated, False) for a in dyn_args]
    lows, highs = run(g_lo, g_hi, g_sp, g_args)
    lows = jtu.tree_map(lambda a: _to_host(a, process_local)[:n], lows)
    highs = jtu.tree_map(lambda a: _to_host(a, process_local)[:n], highs)
    return Bounds(lows, highs, method=method, float_sound=bool(float_sound))


def _compile(graph: Graph, mesh: Mesh, axis: str, kw: dict, args_tree, static_args: tuple):
    def one(lo, hi, splits, dyn_args):
        it = iter(dyn_args)
        args = jtu.tree_unflatten(args_tree, [next(it) if s is None else s for s in static_args])
        b = bound(graph, Box(lo, hi), *args, jit=False, relu_splits=splits, **kw)
        return b.lower, b.upper

    def local(lo, hi, splits, dyn_args):
        return jax.vmap(one, in_axes=(0, 0, 0, None))(lo, hi, splits, dyn_args)

    sharded = _shard_map()(
        local,
        mesh=mesh,
        in_specs=(P(axis), P(axis), P(axis), P()),
        out_specs=(P(axis), P(axis)),
    )
    return jax.jit(sharded)
