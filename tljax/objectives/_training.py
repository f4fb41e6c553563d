"""A jit-compiled training loop over Optax for Equinox and Flax NNX models, and checkpoints.

`train` compiles one step (`value_and_grad` of the loss, `optimizer.update`,
`optax.apply_updates`, plus the on-device gather of the minibatch and running sums of the loss
and metrics) with `jax.jit` and calls it from a Python loop, exactly like a hand-written
training loop; the host synchronises once per epoch (evaluation, early stopping, progress bar,
checkpoint). Compiled steps are cached per (model structure, loss function, optimizer), so
repeated `train` calls with the same objects do not recompile.

Why not a `lax.scan` over the steps of an epoch: XLA:CPU runs convolutions inside loop bodies
without its fast kernels (a small CNN trained 25x slower that way on our CPU machines), while
the dispatch cost of a jitted step is already small next to a training step.

Model kinds:

- **Equinox (or any pytree)**: trained leaves are the inexact arrays,
  `eqx.partition(model, eqx.is_inexact_array)`; everything else is held fixed.
- **Flax NNX**: `nnx.split(model, nnx.Param, ...)`; `nnx.Param` variables are trained, other
  variables (batch statistics, RNG counters) are carried through the steps and written back.

Loss functions receive the model, a batch and a fresh PRNG key, so certified-training losses
(IBP/CROWN bounds of the model on a box around `x`) plug in unchanged:

    loss_fn(model, (x, y), key) -> loss                       # or (loss, metrics)
    loss_fn(model, state, (x, y), key) -> (loss, new_state)   # with train(..., state=...),
                                                              # or (loss, new_state, metrics)

`metrics` is a dict of scalars (e.g. `{"accuracy": ...}`), averaged per epoch into the history
and shown in the progress bar.
"""

from __future__ import annotations

import dataclasses
import functools as ft
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tljax.core import InputError, processes

__all__ = ["EarlyStopping", "load_checkpoint", "save_checkpoint", "train"]


class EarlyStopping(NamedTuple):
    """Stop when the evaluation metric has not improved for `patience` epochs.

    Attributes:
      patience: epochs without improvement before stopping.
      metric: key of the dict returned by `eval_fn` (default: its first key).
      mode: `"max"` (e.g. accuracy) or `"min"` (e.g. loss).
      min_delta: an improvement must exceed this.
      restore_best: return the model (and optimizer state) of the best epoch.
    """

    patience: int = 5
    metric: str | None = None
    mode: str = "max"
    min_delta: float = 0.0
    restore_best: bool = True


# ------------------------------------------------------------------------------------------------
# Model adapters: what is trained, what is carried, how to rebuild the model
# ------------------------------------------------------------------------------------------------


def _nnx():
    """flax.nnx if the model could be one (imported lazily: flax is slow to import)."""
    if "flax" not in sys.modules:
        return None
    from flax import nnx

    return nnx


def _is_nnx(model: Any) -> bool:
    nnx = _nnx()
    return nnx is not None and isinstance(model, nnx.Module)


@dataclasses.dataclass(frozen=True)
class _Adapter:
    """split(model) -> (params, static, carried); merge(params, static, carried) -> model;
    carried_after(model) -> the carried part after a call that may have mutated the model.

    The two adapters are module-level singletons so that compiled epochs are cached across
    `train` calls with the same loss function and optimizer."""

    split: Callable[[Any], tuple[Any, Any, Any]]
    merge: Callable[[Any, Any, Any], Any]
    carried_after: Callable[[Any], Any]


def _eqx_split(m):
    params, static = eqx.partition(m, eqx.is_inexact_array)
    return params, static, None


def _eqx_merge(params, static, carried):
    del carried
    return eqx.combine(params, static)


def _nnx_split(m):
    graphdef, params, rest = _nnx().split(m, _nnx().Param, ...)
    return params, graphdef, rest


def _nnx_merge(params, graphdef, rest):
    # copy=True: fresh Variables at the current trace level, so the model may mutate them
    # (BatchNorm statistics) inside value_and_grad.
    return _nnx().merge(graphdef, params, rest, copy=True)


def _nnx_carried(m):
    return _nnx().split(m, _nnx().Param, ...)[2]


_EQX = _Adapter(_eqx_split, _eqx_merge, lambda m: None)
_NNX = _Adapter(_nnx_split, _nnx_merge, _nnx_carried)


def _adapter(model: Any) -> _Adapter:
    return _NNX if _is_nnx(model) else _EQX


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def _check_data(data: Any) -> tuple[Any, int]:
    leaves = jtu.tree_leaves(data)
    if not leaves:
        raise InputError("tljax.objectives.train: `data` has no arrays; pass e.g. (x, y).")
    sizes = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
    if len(sizes) != 1 or None in sizes:
        raise InputError(
            "tljax.objectives.train: every array in `data` needs the same leading (example) axis, "
            f"got leading sizes {sorted(map(str, sizes))}."
        )
    return jtu.tree_map(jnp.asarray, data), sizes.pop()


def _split_loss_output(out: Any, stateful: bool) -> tuple[Any, Any, dict]:
    """Normalise the loss function's output to (loss, new_state, metrics)."""
    if stateful:
        if not isinstance(out, tuple) or len(out) not in (2, 3):
            raise InputError(
                "tljax.objectives.train: with `state=` the loss must return (loss, new_state) or "
                f"(loss, new_state, metrics), got {type(out).__name__}."
            )
        return out[0], out[1], (out[2] if len(out) == 3 else {})
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], dict):
            raise InputError(
                "tljax.objectives.train: the loss must return a scalar or (loss, metrics_dict); "
                "a model with state needs `train(..., state=...)`."
            )
        return out[0], None, out[1]
    return out, None, {}


class _Hashed:
    """A static pytree used as a cache key: equal when structure and leaves are equal."""

    def __init__(self, tree: Any):
        self.tree = tree
        leaves, treedef = jtu.tree_flatten(tree)
        try:
            self._key: Any = (treedef, tuple(leaves))
            self._hash = hash(self._key)
        except TypeError:  # unhashable leaves (e.g. integer arrays): equal only to itself
            self._key = None
            self._hash = id(tree)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Hashed):
            return NotImplemented
        if self._key is None or other._key is None:
            return self.tree is other.tree
        try:
            return bool(self._key == other._key)
        except Exception:  # noqa: BLE001 - leaves whose == is elementwise: treat as different
            return False


def _make_step(static, adapter, loss_fn, optimizer, stateful, rows=None):
    """The step `(params, opt_state, carried, state, sums, data, order, i, key) -> (params,
    opt_state, carried, state, sums)`, and the loss as a function of the parameters. With
    `rows` (a sharding), the minibatch is split along it: data parallel."""

    def loss_of_params(params, carried, state, batch, key):
        model = adapter.merge(params, static, carried)
        out = loss_fn(model, state, batch, key) if stateful else loss_fn(model, batch, key)
        loss, state, metrics = _split_loss_output(out, stateful)
        if jnp.shape(loss) != ():
            raise InputError(
                f"tljax.objectives.train: the loss must be a scalar, got shape {jnp.shape(loss)}; "
                "reduce it (e.g. reduction='mean')."
            )
        return loss, (adapter.carried_after(model), state, metrics)

    grad_fn = jax.value_and_grad(loss_of_params, has_aux=True)

    def step(params, opt_state, carried, state, sums, data, order, i, key):
        # Gather the minibatch on device from the epoch's permutation (no host round trip).
        idx = lax.dynamic_index_in_dim(order, i, keepdims=False)
        batch = jtu.tree_map(lambda a: jnp.take(a, idx, axis=0), data)
        if rows is not None:  # each device takes its share of the minibatch; XLA sums the grads
            batch = jtu.tree_map(lambda a: lax.with_sharding_constraint(a, rows), batch)
        (loss, (carried, state, metrics)), grads = grad_fn(
            params, carried, state, batch, jax.random.fold_in(key, i)
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        sums = jtu.tree_map(jnp.add, sums, (loss, metrics))
        return params, opt_state, carried, state, sums

    return step, loss_of_params


def _jit_step(static, adapter, loss_fn, optimizer, stateful, rows=None):
    step, loss_of_params = _make_step(static, adapter, loss_fn, optimizer, stateful, rows)
    # The jitted loss is only used by jax.eval_shape; jit caches its trace between calls.
    return jax.jit(step), jax.jit(loss_of_params)


@ft.lru_cache(maxsize=32)
def _cached_step(static, adapter, loss_fn, optimizer, stateful, rows=None):
    return _jit_step(static.tree, adapter, loss_fn, optimizer, stateful, rows)


def _compiled_step(static, adapter, loss_fn, optimizer, stateful, rows=None):
    try:
        return _cached_step(_Hashed(static), adapter, loss_fn, optimizer, stateful, rows)
    except TypeError:  # an unhashable loss function or optimizer: compile without caching
        return _jit_step(static, adapter, loss_fn, optimizer, stateful, rows)


class _DataParallel:
    """Data-parallel training over a 1-D mesh (every process's devices under jax.distributed).

    The examples are split over the mesh axis and everything else (parameters, optimizer and
    loss state, keys, the epoch's permutation) is replicated; the step itself is the
    single-device one with its minibatch constrained to the split, so XLA partitions the forward
    and backward passes and all-reduces the gradients. Every process runs the same loop, and the
    run is the single-process run on the same global data, up to the order of float sums."""

    def __init__(self, mesh: Mesh, process_local: bool):
        if len(mesh.axis_names) != 1:
            raise InputError(
                f"tljax.objectives.train needs a 1-D mesh (the data axis), got axes "
                f"{mesh.axis_names}; build one with tljax.bounds.batch_mesh(devices)"
            )
        self.rows = NamedSharding(mesh, P(mesh.axis_names[0]))
        self.same = NamedSharding(mesh, P())
        self.size = int(mesh.devices.size)
        self.process_local = process_local

    def data(self, data):
        """Global arrays of the examples (from every process's whole data, or its own part)."""

        def put(a):
            a = np.asarray(a)
            if self.process_local:
                return jax.make_array_from_process_local_data(self.rows, a)
            return jax.make_array_from_callback(a.shape, self.rows, lambda idx: a[idx])

        return jtu.tree_map(put, data)

    def replicate(self, tree):
        def put(a):
            if not eqx.is_array(a):
                return a
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # keys travel as key data
                data = jax.device_put(jax.random.key_data(a), self.same)
                return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
            return jax.device_put(a, self.same)

        return jtu.tree_map(put, tree)

    @staticmethod
    def host(tree):
        """This process's copy of replicated arrays, as ordinary single-device arrays."""

        def get(a):
            if not isinstance(a, jax.Array) or a.is_fully_addressable:
                return a
            local = a.addressable_data(0)
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                return local
            return jnp.asarray(np.asarray(local))

        return jtu.tree_map(get, tree)


@ft.partial(jax.jit, static_argnums=(2, 3))
def _epoch_setup(key, epoch, n, batch_size):
    """The epoch's minibatch indices `(steps, batch_size)` and its key for the loss keys."""
    perm_key, step_key = jax.random.split(jax.random.fold_in(key, epoch))
    steps = n // batch_size
    order = jax.random.permutation(perm_key, n)[: steps * batch_size].reshape(steps, batch_size)
    return order, step_key


def _record(history: dict[str, Any], sums: Any, steps: int) -> dict[str, str]:
    """Append one epoch's mean loss and metrics to `history`; return them formatted."""
    loss_sum, metric_sums = sums
    history["loss"].append(float(loss_sum) / steps)
    shown = {"loss": f"{history['loss'][-1]:.4f}"}
    for name, value in metric_sums.items():
        history.setdefault(name, []).append(float(value) / steps)
        shown[name] = f"{history[name][-1]:.4f}"
    return shown


def _as_metrics(value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    return {"metric": float(value)}


def _progress_bar(epochs: int, progress: bool):
    from tqdm import tqdm

    # Silent unless asked for and stdout is an interactive terminal (no logs full of bars).
    quiet = not progress or not getattr(sys.stdout, "isatty", lambda: False)()
    return tqdm(total=epochs, desc="train", unit="epoch", file=sys.stdout, disable=quiet)


def train(
    model: Any,
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    state: Any = None,
    opt_state: Any = None,
    eval_fn: Callable[..., Any] | None = None,
    early_stopping: EarlyStopping | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    mesh: Mesh | None = None,
    process_local: bool = False,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train `model` with `optimizer` on minibatches of `data`.

    Each epoch draws a permutation of the examples from `key` (so the same key gives the same
    run), cuts it into `len(data) // batch_size` minibatches (the remainder of the permutation
    is left out of that epoch, a different part each time) and runs them in one compiled
    `lax.scan`. Then `eval_fn` is called, early stopping is checked, the progress bar updated
    and checkpoints written.

    Args:
      model: an Equinox module (or any pytree: inexact arrays are trained) or a Flax NNX module
        (`nnx.Param`s are trained; other variables such as batch statistics are carried).
      loss_fn: `loss_fn(model, batch, key)` returning a scalar loss or `(loss, metrics)` with
        `metrics` a dict of scalars; with `state=`, `loss_fn(model, state, batch, key)`
        returning `(loss, new_state)` or `(loss, new_state, metrics)`. `batch` has the structure
        of `data` with a leading axis of `batch_size`.
      optimizer: any Optax `GradientTransformation`.
      data: pytree of arrays with a common leading example axis, e.g. `(x, y)`.
      epochs: maximum number of epochs.
      batch_size: examples per step.
      key: PRNG key; all randomness (permutations and loss keys) derives from it.
      state: optional non-trained state threaded through the steps (e.g.
        `tljax.layers.Sequential.init_state()` for BatchNorm).
      opt_state: optimizer state to resume from (default `optimizer.init(params)`).
      eval_fn: called after each epoch as `eval_fn(model)` (or `eval_fn(model, state)`),
        returning a float or a dict of floats; recorded in the history as `eval_<name>`.
      early_stopping: an `EarlyStopping` policy on an `eval_fn` metric (needs `eval_fn`).
      progress: show a tqdm bar with loss and metrics; it stays silent anyway when stdout is
        not a terminal.
      checkpoint_dir: if given, `last.npz` is written after every epoch and `best.npz` when the
        early-stopping (or first eval) metric improves; with `state=`, the saved model is the
        pair `(model, state)` (load with `load_checkpoint(path, (model, state), opt_state)`).
        Under `jax.distributed` only process 0 writes them.
      mesh: train data parallel over this 1-D mesh: the examples are split over its devices,
        the parameters replicated, the gradients all-reduced by XLA. Default: None on one
        process, and a mesh of every process's devices (`jax.devices()`) under
        `jax.distributed`, where every process runs `train` with the same arguments. The
        number of examples and `batch_size` must be multiples of the device count.
      process_local: with a mesh, `data` is this process's part of the examples (every process
        the same count; the global data is the processes' parts in process order, built with
        `jax.make_array_from_process_local_data`). Default: every process passes all of them.

    Returns:
      `(model, opt_state, history)`; `model` is `(model, state)` when `state=` was given.
      `history` has per-epoch lists `"loss"`, one per training metric and `"eval_<name>"` per
      eval metric; and `"epochs_run"`, `"steps"`, `"best_epoch"` (0-based, or None),
      `"stopped_early"`, `"time_s"` (wall time of the loop, compilation included).

    Example:
      >>> import jax, optax
      >>> import tljax.layers as tl
      >>> from tljax.objectives._losses import cross_entropy
      >>> x = jax.random.normal(jax.random.key(0), (64, 4)); y = (x[:, 0] > 0).astype(int)
      >>> net = tl.MLP(4, [16], 2, key=jax.random.key(1))
      >>> loss = lambda m, b, k: cross_entropy(m(b[0]), b[1])
      >>> net, opt_state, hist = train(net, loss, optax.adam(1e-2), (x, y), epochs=3,
      ...                              batch_size=16, key=jax.random.key(2), progress=False)
      >>> len(hist["loss"])
      3
    """
    if epochs < 0 or batch_size < 1:
        raise InputError(
            "tljax.objectives.train: need epochs >= 0 and batch_size >= 1, got "
            f"{epochs}, {batch_size}."
        )
    if early_stopping is not None and eval_fn is None:
        raise InputError(
            "tljax.objectives.train: early_stopping watches an eval_fn metric; pass eval_fn=..."
        )
    if early_stopping is not None and early_stopping.mode not in ("max", "min"):
        raise InputError(
            f"tljax.objectives.train: EarlyStopping.mode must be 'max' or 'min', got "
            f"{early_stopping.mode!r}."
        )
    stateful = state is not None
    if stateful and _is_nnx(model):
        raise InputError(
            "tljax.objectives.train: NNX models keep their state in variables (e.g. BatchStat); "
            "do not pass state=."
        )
    data, n = _check_data(data)
    dp = None
    if mesh is not None or processes.group_size() > 1:
        dp = _DataParallel(
            Mesh(np.asarray(jax.devices()), ("data",)) if mesh is None else mesh, process_local
        )
        n = n * jax.process_count() if process_local else n
        if n % dp.size or batch_size % dp.size:
            raise InputError(
                f"tljax.objectives.train: data parallel over {dp.size} devices needs the number "
                f"of examples ({n}) and batch_size ({batch_size}) to be multiples of {dp.size}; "
                "drop or repeat a few examples, or choose another batch_size."
            )
        data = dp.data(data)
    if batch_size > n:
        raise InputError(
            f"tljax.objectives.train: batch_size={batch_size} exceeds the {n} examples in `data`."
        )
    adapter = _adapter(model)
    params, static, carried = adapter.split(model)
    if opt_state is None:
        opt_state = optimizer.init(params)
    step_fn, loss_of_params = _compiled_step(
        static, adapter, loss_fn, optimizer, stateful, None if dp is None else dp.rows
    )
    host = (lambda t: t) if dp is None else dp.host
    if dp is not None:
        params, opt_state, carried, state, key = dp.replicate(
            (params, opt_state, carried, state, key)
        )
    steps = n // batch_size
    # Zeros shaped like (loss, metrics), found by tracing the loss once (no compilation).
    batch0 = jtu.tree_map(lambda a: a[:batch_size], data)
    loss_shape, (_, _, metric_shapes) = jax.eval_shape(
        loss_of_params, params, carried, state, batch0, key
    )
    zero_sums = jtu.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), (loss_shape, metric_shapes))
    if dp is not None:
        zero_sums = dp.replicate(zero_sums)

    def current_model(p, c, s):  # data parallel: this process's copy, on its own device
        m = adapter.merge(host(p), static, host(c))
        return (m, host(s)) if stateful else m

    def evaluate(p, c, s) -> dict[str, float]:
        m = adapter.merge(host(p), static, host(c))
        return _as_metrics(eval_fn(m, host(s)) if stateful else eval_fn(m))

    history: dict[str, Any] = {"loss": []}
    best = None  # (value, epoch, params, opt_state, carried, state)
    watched = early_stopping.metric if early_stopping is not None else None
    mode = early_stopping.mode if early_stopping is not None else "max"
    min_delta = early_stopping.min_delta if early_stopping is not None else 0.0
    stale = 0
    stopped = False
    # every process holds the same model: process 0 writes the checkpoints
    ckpt = None if checkpoint_dir is None or processes.index() else os.fspath(checkpoint_dir)
    if ckpt is not None:
        os.makedirs(ckpt, exist_ok=True)

    bar = _progress_bar(epochs, progress)
    # Without a per-epoch consumer of host values, never wait for the device inside the loop.
    sync_each_epoch = eval_fn is not None or ckpt is not None or not bar.disable
    pending = []
    start = time.perf_counter()
    try:
        for epoch in range(epochs):
            order, step_key = _epoch_setup(key, epoch, n, batch_size)
            sums = zero_sums
            for i in range(steps):
                params, opt_state, carried, state, sums = step_fn(
                    params, opt_state, carried, state, sums, data, order, i, step_key
                )
            if not sync_each_epoch:
                pending.append(sums)
                continue
            shown = _record(history, jax.device_get(host(sums)), steps)
            if eval_fn is not None:
                results = evaluate(params, carried, state)
                for name, value in results.items():
                    history.setdefault(f"eval_{name}", []).append(value)
                    shown[f"eval_{name}"] = f"{value:.4f}"
                watched = watched or next(iter(results))
                if watched not in results:
                    raise InputError(
                        f"tljax.objectives.train: early-stopping metric {watched!r} is not among "
                        f"the eval_fn results {sorted(results)}."
                    )
                value = results[watched]
                better = best is None or (
                    value > best[0] + min_delta if mode == "max" else value < best[0] - min_delta
                )
                if better:
                    best = (value, epoch, params, opt_state, carried, state)
                    stale = 0
                    if ckpt is not None:
                        save_checkpoint(
                            os.path.join(ckpt, "best.npz"),
                            current_model(params, carried, state),
                            opt_state,
                        )
                else:
                    stale += 1
            if ckpt is not None:
                save_checkpoint(
                    os.path.join(ckpt, "last.npz"), current_model(params, carried, state), opt_state
                )
            bar.set_postfix(shown, refresh=False)
            bar.update(1)
            if early_stopping is not None and stale >= early_stopping.patience:
                stopped = True
                break
    finally:
        bar.close()
    for sums in jax.device_get([host(p) for p in pending]):
        _record(history, sums, steps)
    jax.block_until_ready(params)
    history["time_s"] = time.perf_counter() - start

    epochs_run = len(history["loss"])
    history.update(
        epochs_run=epochs_run,
        steps=epochs_run * steps,
        best_epoch=None if best is None else best[1],
        stopped_early=stopped,
    )
    if early_stopping is not None and early_stopping.restore_best and best is not None:
        _, _, params, opt_state, carried, state = best
    return current_model(params, carried, state), opt_state, history


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------

_FORMAT = "tljax-checkpoint-v1"


def _array_leaves(tree: Any) -> tuple[list[tuple[str, Any]], Callable[[list[Any]], Any]]:
    """(path, array) for every array leaf, and a function rebuilding `tree` from new arrays."""
    nnx = _nnx() if _is_nnx(tree) else None
    if nnx is not None:
        graphdef, nstate = nnx.split(tree)
        items, rebuild = _array_leaves(nstate)
        return items, lambda arrays: nnx.merge(graphdef, rebuild(arrays))
    flat, treedef = jtu.tree_flatten_with_path(tree)
    positions = [i for i, (_, leaf) in enumerate(flat) if eqx.is_array(leaf)]
    items = [(jtu.keystr(flat[i][0]), flat[i][1]) for i in positions]
    leaves = [leaf for _, leaf in flat]

    def rebuild(arrays):
        new = list(leaves)
        for i, a in zip(positions, arrays, strict=True):
            new[i] = a
        return jtu.tree_unflatten(treedef, new)

    return items, rebuild


def _to_numpy(leaf: Any) -> np.ndarray:
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)


def save_checkpoint(path: str | os.PathLike, model: Any, opt_state: Any) -> None:
    """Write every array of `model` and `opt_state` to one `.npz` file (atomically).

    Non-array parts (activation functions, static config, NNX graph structure) are not stored:
    `load_checkpoint` takes them from a model of the same structure. PRNG key arrays are stored
    as their key data.

    Args:
      path: file to write (conventionally ending in `.npz`); its directory must exist.
      model: Equinox module, NNX module or any pytree (e.g. `(model, state)`).
      opt_state: the Optax state (any pytree).

    Example:
      >>> import jax, optax, tempfile, os
      >>> import tljax.layers as tl
      >>> net = tl.Linear(2, 2, key=jax.random.key(0))
      >>> opt = optax.adam(1e-3).init(net)
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
      >>> save_checkpoint(path, net, opt)
      >>> net2, opt2 = load_checkpoint(path, net, opt)
    """
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": _FORMAT}
    for part, tree in (("model", model), ("opt_state", opt_state)):
        items, _ = _array_leaves(tree)
        meta[part] = [[p, str(leaf.dtype), list(leaf.shape)] for p, leaf in items]
        for i, (_, leaf) in enumerate(items):
            value = _to_numpy(leaf)
            if not value.dtype.isbuiltin:  # ml_dtypes (bfloat16, float8): store the raw bits
                value = value.view(f"u{value.dtype.itemsize}")
            arrays[f"{part}/{i}"] = value
    arrays["meta"] = np.array(json.dumps(meta))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(
    path: str | os.PathLike, like_model: Any, like_opt_state: Any
) -> tuple[Any, Any]:
    """Read a checkpoint written by `save_checkpoint` into the structure of the `like_*` trees.

    Args:
      path: the `.npz` file.
      like_model: a model of the same structure (e.g. freshly initialised); its arrays are
        replaced, everything else is kept.
      like_opt_state: an optimizer state of the same structure (e.g. `optimizer.init(params)`).

    Returns:
      `(model, opt_state)` with the saved arrays (same shapes and dtypes as the `like_*` ones).

    Raises:
      InputError: the file is not a tljax checkpoint, or its arrays do not match the
        structure, shapes or dtypes of the `like_*` trees (all mismatches are listed).
    """
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as f:
        files = {k: f[k] for k in f.files}
    if "meta" not in files:
        raise InputError(f"tljax.objectives.load_checkpoint: {path} is not a tljax checkpoint.")
    meta = json.loads(str(files["meta"]))
    out = []
    for part, like in (("model", like_model), ("opt_state", like_opt_state)):
        items, rebuild = _array_leaves(like)
        saved = meta[part]
        if len(saved) != len(items):
            raise InputError(
                f"tljax.objectives.load_checkpoint: {path} holds {len(saved)} arrays for {part}, "
                f"the given like_{part} has {len(items)}. Build it with the same architecture "
                "and optimizer as the saved one."
            )
        problems = []
        arrays = []
        for i, ((p, leaf), (saved_path, dtype, shape)) in enumerate(zip(items, saved, strict=True)):
            if tuple(shape) != tuple(leaf.shape) or dtype != str(leaf.dtype):
                problems.append(
                    f"  {part}{p}: saved {dtype}{list(shape)} (at {saved_path}), "
                    f"expected {leaf.dtype}{list(leaf.shape)}"
                )
                continue
            value = files[f"{part}/{i}"]
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                arrays.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)))
                continue
            if value.dtype != leaf.dtype:
                value = value.view(leaf.dtype)
            arrays.append(jnp.asarray(value))
        if problems:
            raise InputError(
                f"tljax.objectives.load_checkpoint: {path} does not match like_{part}:\n"
                + "\n".join(problems)
            )
        out.append(rebuild(arrays))
    return out[0], out[1]
