"""Exact check that the leaves of a search cover its root region.

A region is a box plus ReLU split constraints (+1 active, -1 inactive, 0 free per neuron). The
checker trusts nothing about how the leaves were made. It proves coverage by recursive
*guillotine* decomposition:

- a region is covered when one leaf contains it (leaf box contains the region's box, and every
  split constraint of the leaf is also one of the region's);
- otherwise it looks for a cut that no relevant leaf straddles: an input coordinate value `c`
  strictly inside the region with every leaf entirely on one side (`hi <= c` or `lo >= c`), or a
  neuron free in the region that some leaf constrains (leaves free in that neuron go to both
  sides). Both halves are then checked; their union is the region.

When leaves overlap so that no clean cut exists, a leaf boundary inside the region is used as a
cut anyway and the leaves across it go to both halves (each still covers its part of either
half), so any finite cover by boxes is eventually decomposed. The check fails when a region meets
no leaf. Every step compares binary64 numbers and integers, which is exact rational arithmetic:
nothing is rounded and no midpoint is recomputed.
"""

from __future__ import annotations

import numpy as np


def _box_cut(lo, hi, rlo, rhi) -> tuple[int, float] | None:
    """A coordinate cut (j, c) with rlo[j] < c < rhi[j] that no leaf straddles, or None."""
    best = None
    for j in np.flatnonzero(rhi > rlo):
        order = np.argsort(lo[:, j], kind="stable")
        slo, shi = lo[order, j], hi[order, j]
        run = np.maximum.accumulate(shi)
        ok = (run[:-1] <= slo[1:]) & (slo[1:] > rlo[j]) & (slo[1:] < rhi[j])
        if np.any(ok):
            cuts = slo[1:][ok]
            mid = 0.5 * (rlo[j] + rhi[j])  # only to prefer balanced cuts; not part of the proof
            c = cuts[np.argmin(np.abs(cuts - mid))]
            return int(j), float(c)
    return best


def _any_cut(lo, hi, rlo, rhi) -> tuple[int, float] | None:
    """A leaf boundary strictly inside the region (leaves across it are shared by both halves)."""
    for j in np.flatnonzero(rhi > rlo):
        inner = np.concatenate([lo[:, j], hi[:, j]])
        inner = inner[(inner > rlo[j]) & (inner < rhi[j])]
        if inner.size:
            return int(j), float(np.sort(inner)[inner.size // 2])
    return None


def check_cover(
    root_lower, root_upper, leaf_lower, leaf_upper, leaf_splits=None, root_splits=None
) -> tuple[bool, str]:
    """Whether the leaves cover the root region, checked exactly.

    Args:
      root_lower, root_upper: float64 arrays (n,), the box to cover.
      leaf_lower, leaf_upper: float64 arrays (N, n), the leaf boxes.
      leaf_splits: optional int array (N, s) of ReLU split constraints per leaf (+1 active,
        -1 inactive, 0 free); a leaf covers only the part of its box where they hold.
      root_splits: optional int array (s,) of constraints on the root (default: none).

    Returns:
      `(True, "")` when the leaves cover the root, else `(False, reason)` naming an uncovered
      region.
    """
    rlo = np.asarray(root_lower, np.float64).reshape(-1)
    rhi = np.asarray(root_upper, np.float64).reshape(-1)
    n = rlo.size
    lo = np.asarray(leaf_lower, np.float64).reshape(-1, n)
    hi = np.asarray(leaf_upper, np.float64).reshape(-1, n)
    if leaf_splits is None:
        sp = np.zeros((lo.shape[0], 0), np.int8)
    else:
        sp = np.asarray(leaf_splits).reshape(lo.shape[0], -1).astype(np.int8)
    rsp = (
        np.zeros(sp.shape[1], np.int8)
        if root_splits is None
        else np.asarray(root_splits, np.int8).reshape(-1)
    )
    if lo.shape[0] == 0:
        return False, "no leaves"
    if hi.shape != lo.shape or rsp.size != sp.shape[1]:
        return (
            False,
            f"inconsistent shapes: lower {lo.shape}, upper {hi.shape}, splits {sp.shape}, "
            f"root splits {rsp.shape}",
        )
    if np.isnan(lo).any() or np.isnan(hi).any():
        return False, "a leaf box has NaN bounds"
    if np.any(np.abs(sp.astype(np.int64)) > 1):
        return False, "split entries must be -1, 0 or +1"
    if np.any(rlo > rhi):
        return False, "the root box is empty or malformed (lower > upper)"
    stack = [(rlo, rhi, rsp, np.flatnonzero(~np.any(lo > hi, axis=1)))]
    while stack:
        r_lo, r_hi, r_sp, idx = stack.pop()
        # Leaves that meet the region's relative interior: overlap with positive width in every
        # coordinate where the region has width, contain the point where it has none. Covering that
        # interior suffices: a finite union of closed boxes is closed.
        wide = r_hi > r_lo
        L, H = lo[idx], hi[idx]
        meet = np.all(np.where(wide, (L < r_hi) & (H > r_lo), (L <= r_lo) & (H >= r_hi)), axis=1)
        if sp.shape[1]:
            meet &= ~np.any(sp[idx] * r_sp[None, :] < 0, axis=1)
        idx = idx[meet]
        if idx.size == 0:
            return False, _describe(r_lo, r_hi, r_sp, "no leaf meets it")
        L, H = lo[idx], hi[idx]
        contains = np.all(L <= r_lo, axis=1) & np.all(H >= r_hi, axis=1)
        if sp.shape[1]:
            s = sp[idx]
            contains &= np.all((s == 0) | (s == r_sp[None, :]), axis=1)
        if np.any(contains):
            continue
        cut = _box_cut(L, H, r_lo, r_hi)
        if cut is None and not (sp.shape[1] and np.any((sp[idx] != 0) & (r_sp[None, :] == 0))):
            cut = _any_cut(L, H, r_lo, r_hi)
        if cut is not None:
            j, c = cut
            left_hi = r_hi.copy()
            left_hi[j] = c
            right_lo = r_lo.copy()
            right_lo[j] = c
            stack.append((r_lo, left_hi, r_sp, idx))
            stack.append((right_lo, r_hi, r_sp, idx))
            continue
        if sp.shape[1]:
            free = r_sp == 0
            counts = np.sum(sp[idx] != 0, axis=0) * free
            if counts.max(initial=0) > 0:
                k = int(np.argmax(counts))
                for sign in (-1, 1):
                    sub = r_sp.copy()
                    sub[k] = sign
                    stack.append((r_lo, r_hi, sub, idx))
                continue
        return False, _describe(
            r_lo,
            r_hi,
            r_sp,
            f"{idx.size} leaves meet it but none contains it and no cut separates them",
        )
    return True, ""


def _describe(r_lo, r_hi, r_sp, why: str) -> str:
    pairs = enumerate(zip(r_lo, r_hi, strict=True))
    box = ", ".join(f"x{j} in [{float(a)!r}, {float(b)!r}]" for j, (a, b) in pairs if j < 8)
    more = " ..." if r_lo.size > 8 else ""
    splits = ""
    if r_sp.size and np.any(r_sp != 0):
        nz = np.flatnonzero(r_sp)
        splits = "; splits " + ", ".join(f"n{int(k)}={int(r_sp[k]):+d}" for k in nz[:8])
    return f"region not covered ({why}): {box}{more}{splits}"
