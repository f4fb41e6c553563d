"""Layout-agnostic array plumbing for the exact semantics (numpy only, any dtype incl. object).

Every function here moves, selects or replicates entries without computing on them, so the same
code serves int64 mantissas, object arrays of ints, fmpq and arb. Indices are concrete ints.
"""

from __future__ import annotations

import numpy as np


def broadcast_in_dim(a: np.ndarray, shape, broadcast_dimensions) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    expanded = [1] * len(shape)
    for src, dst in enumerate(broadcast_dimensions):
        expanded[dst] = a.shape[src]
    return np.broadcast_to(a.reshape(expanded), shape)


def reshape(a: np.ndarray, new_sizes, dimensions=None) -> np.ndarray:
    if dimensions is not None:
        a = np.transpose(a, dimensions)
    return np.reshape(a, tuple(int(s) for s in new_sizes))


def slice_(a: np.ndarray, start_indices, limit_indices, strides=None) -> np.ndarray:
    strides = strides or (1,) * a.ndim
    return a[
        tuple(
            slice(int(s), int(e), int(st))
            for s, e, st in zip(start_indices, limit_indices, strides, strict=True)
        )
    ]


def clamp_starts(starts, sizes, shape) -> list[int]:
    """XLA's dynamic_slice rule: each start is clamped so the window fits in the operand."""
    return [
        min(max(int(s), 0), int(d) - int(z)) for s, z, d in zip(starts, sizes, shape, strict=True)
    ]


def dynamic_slice(a: np.ndarray, starts, slice_sizes) -> np.ndarray:
    st = clamp_starts(starts, slice_sizes, a.shape)
    return a[tuple(slice(s, s + int(z)) for s, z in zip(st, slice_sizes, strict=True))]


def dynamic_update_slice(a: np.ndarray, update: np.ndarray, starts) -> np.ndarray:
    st = clamp_starts(starts, update.shape, a.shape)
    out = np.array(a, copy=True)
    out[tuple(slice(s, s + z) for s, z in zip(st, update.shape, strict=True))] = update
    return out


def pad(a: np.ndarray, fill, padding_config) -> np.ndarray:
    """lax.pad: (low, high, interior) per dim; negative low/high crop."""
    full_shape, places, crops = [], [], []
    for n, (lo, hi, interior) in zip(a.shape, padding_config, strict=True):
        lo, hi, interior = int(lo), int(hi), int(interior)
        inner = n + max(n - 1, 0) * interior
        plo, phi = max(lo, 0), max(hi, 0)
        size = plo + inner + phi
        full_shape.append(size)
        places.append(slice(plo, plo + inner, interior + 1))
        crops.append(slice(max(-lo, 0), size - max(-hi, 0)))
    out = np.empty(full_shape, dtype=a.dtype)
    out[...] = fill
    out[tuple(places)] = a
    return out[tuple(crops)]


def iota(dtype_shape, dimension) -> np.ndarray:
    shape = tuple(int(s) for s in dtype_shape)
    ar = np.arange(shape[dimension], dtype=np.int64)
    expanded = [1] * len(shape)
    expanded[dimension] = shape[dimension]
    return np.broadcast_to(ar.reshape(expanded), shape)


def _mode_name(mode) -> str:
    name = getattr(mode, "name", None)
    return str(name if name is not None else mode).upper()


def gather_indices(operand_shape, indices: np.ndarray, dnums, slice_sizes, mode):
    """Operand index arrays and an in-bounds mask for XLA gather (offset/collapsed/batching dims).

    Returns (index tuple into the operand with the output's shape, mask of the output's batch
    positions that are in bounds broadcast to the output shape, or None when every window fits).
    """
    idx = np.asarray(indices).astype(np.int64)
    batch_shape = idx.shape[:-1]
    nb = len(batch_shape)
    offset_dims = tuple(dnums.offset_dims)
    collapsed = tuple(dnums.collapsed_slice_dims)
    start_map = tuple(dnums.start_index_map)
    op_batching = tuple(getattr(dnums, "operand_batching_dims", ()) or ())
    idx_batching = tuple(getattr(dnums, "start_indices_batching_dims", ()) or ())
    rank = len(operand_shape)
    window_dims = [d for d in range(rank) if d not in collapsed and d not in op_batching]
    window_shape = [int(slice_sizes[d]) for d in window_dims]
    out_rank = nb + len(window_dims)
    batch_out_dims = [d for d in range(out_rank) if d not in offset_dims]
    starts = np.zeros(batch_shape + (rank,), np.int64)
    for k, d in enumerate(start_map):
        starts[..., d] = idx[..., k]
    # Batching dims: the operand coordinate equals the batch coordinate of the indices.
    for od, bd in zip(op_batching, idx_batching, strict=True):
        grid = np.arange(batch_shape[bd]).reshape([-1 if i == bd else 1 for i in range(nb)])
        starts[..., od] = np.broadcast_to(grid, batch_shape)
    mname = _mode_name(mode)
    sizes = np.array([int(s) for s in slice_sizes], np.int64)
    dims = np.array(operand_shape, np.int64)
    inb = None
    if "FILL" in mname:
        inb = np.all((starts >= 0) & (starts + sizes <= dims), axis=-1)
        starts = np.clip(starts, 0, dims - sizes)
    else:  # CLIP and PROMISE_IN_BOUNDS: XLA clamps every window into the operand
        starts = np.clip(starts, 0, dims - sizes)
    # Output index grids: batch dims at batch_out_dims, window dims at offset_dims.
    out_shape = [0] * out_rank
    for i, d in enumerate(batch_out_dims):
        out_shape[d] = batch_shape[i]
    for i, d in enumerate(offset_dims):
        out_shape[d] = window_shape[i]

    def place(arr, positions):
        # arr has dims in `positions` order; expand to out_rank with 1s elsewhere.
        order = np.argsort(positions)
        arr = np.transpose(arr, list(order)) if arr.ndim > 1 else arr
        shape = [1] * out_rank
        for p in sorted(positions):
            shape[p] = out_shape[p]
        return arr.reshape(shape)

    index = []
    for d in range(rank):
        s = place(starts[..., d], batch_out_dims) if nb else starts[..., d].reshape([1] * out_rank)
        if d in window_dims:
            w = window_dims.index(d)
            off = np.arange(window_shape[w]).reshape(
                [-1 if i == offset_dims[w] else 1 for i in range(out_rank)]
            )
            s = s + off
        index.append(np.broadcast_to(s, out_shape))
    mask = None
    if inb is not None and not inb.all():
        m = place(inb, batch_out_dims) if nb else inb.reshape([1] * out_rank)
        mask = np.broadcast_to(m, out_shape)
    return tuple(index), mask, tuple(out_shape)


def scatter_indices(operand_shape, indices: np.ndarray, updates_shape, dnums, mode):
    """Operand index arrays (shaped like `updates`) and a keep-mask for XLA scatter."""
    idx = np.asarray(indices).astype(np.int64)
    batch_shape = idx.shape[:-1]
    nb = len(batch_shape)
    uw = tuple(dnums.update_window_dims)
    inserted = tuple(dnums.inserted_window_dims)
    to_op = tuple(dnums.scatter_dims_to_operand_dims)
    op_batching = tuple(getattr(dnums, "operand_batching_dims", ()) or ())
    idx_batching = tuple(getattr(dnums, "scatter_indices_batching_dims", ()) or ())
    rank = len(operand_shape)
    window_dims = [d for d in range(rank) if d not in inserted and d not in op_batching]
    urank = len(updates_shape)
    scatter_dims = [d for d in range(urank) if d not in uw]
    window_sizes = np.ones(rank, np.int64)
    for i, d in enumerate(window_dims):
        window_sizes[d] = updates_shape[uw[i]]
    starts = np.zeros(batch_shape + (rank,), np.int64)
    for k, d in enumerate(to_op):
        starts[..., d] = idx[..., k]
    for od, bd in zip(op_batching, idx_batching, strict=True):
        grid = np.arange(batch_shape[bd]).reshape([-1 if i == bd else 1 for i in range(nb)])
        starts[..., od] = np.broadcast_to(grid, batch_shape)
    dims = np.array(operand_shape, np.int64)
    mname = _mode_name(mode)
    keep = None
    if "CLIP" in mname or "PROMISE" in mname:
        starts = np.clip(starts, 0, dims - window_sizes)
    else:  # FILL_OR_DROP: a window that does not fit is dropped
        keep = np.all((starts >= 0) & (starts + window_sizes <= dims), axis=-1)

    def place(arr):
        shape = [1] * urank
        for p in scatter_dims:
            shape[p] = updates_shape[p]
        return arr.reshape(shape) if nb else arr.reshape([1] * urank)

    index = []
    for d in range(rank):
        s = place(starts[..., d])
        if d in window_dims:
            w = window_dims.index(d)
            off = np.arange(updates_shape[uw[w]]).reshape(
                [-1 if i == uw[w] else 1 for i in range(urank)]
            )
            s = s + off
        index.append(np.broadcast_to(s, updates_shape))
    mask = None
    if keep is not None:
        mask = np.broadcast_to(place(keep), updates_shape)
    return tuple(index), mask


def windows(
    a: np.ndarray,
    window_dimensions,
    window_strides,
    padding,
    base_dilation=None,
    window_dilation=None,
):
    """All windows of `a` (XLA reduce_window / conv geometry) as index arrays plus a validity mask.

    Returns (gathered array of shape out_shape + window_shape, mask of the same shape that is
    False where a window position falls in padding or between dilated base elements, or None).
    """
    rank = a.ndim
    base_dilation = base_dilation or (1,) * rank
    window_dilation = window_dilation or (1,) * rank
    idx_parts, valid_parts, out_shape, win_shape = [], [], [], []
    for d in range(rank):
        n, w, s = a.shape[d], int(window_dimensions[d]), int(window_strides[d])
        lo, hi = (int(p) for p in padding[d])
        bd, wd = int(base_dilation[d]), int(window_dilation[d])
        nd = (n - 1) * bd + 1 if n > 0 else 0
        span = (w - 1) * wd + 1
        o = max((lo + nd + hi - span) // s + 1, 0)
        out_shape.append(o)
        win_shape.append(w)
        pos = np.arange(o)[:, None] * s + np.arange(w)[None, :] * wd - lo  # dilated-base coords
        valid = (pos >= 0) & (pos < nd) & (pos % bd == 0)
        src = np.clip(pos // bd, 0, max(n - 1, 0))
        idx_parts.append(src)
        valid_parts.append(valid)
    # Broadcast per-dim (o_d, w_d) grids into (o_0..o_r, w_0..w_r).
    index, mask = [], None
    for d in range(rank):
        shape = [1] * (2 * rank)
        shape[d] = out_shape[d]
        shape[rank + d] = win_shape[d]
        index.append(idx_parts[d].reshape(shape))
        vm = valid_parts[d].reshape(shape)
        if not vm.all():
            mask = vm if mask is None else (mask & vm)
    full = tuple(out_shape) + tuple(win_shape)
    if a.size == 0 or 0 in full:
        return np.empty(full, dtype=a.dtype), None
    gathered = a[tuple(np.broadcast_to(i, full) for i in index)]
    if mask is not None:
        mask = np.broadcast_to(mask, full)
    return gathered, mask
