"""A property in the form the search needs: per group of input boxes, one stacked spec matrix.

The unsafe set of a VNN-LIB property is a union over cases `(box, [(C_k, d_k), ...])`. Cases that
share their list of disjuncts form a *group*: the search bounds all rows of all disjuncts of a
group in one call (`spec` stacked row-wise), so one domain costs one bound computation however
many disjuncts it must rule out.

A domain is ruled out (verified) when, for every disjunct k, some row i of k has a certified
lower bound of `(C y)_i - d_i` above zero: then `C_k y <= d_k` fails at every point of the domain.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..core import InputError, InvalidBoxError, ShapeMismatchError

# Row counts are padded to a few sizes so that properties with 1, 3 or 4 rows share one compiled
# bound function (the spec matrix is an argument of the compiled code, not a constant).
_MIN_ROWS = 4


def padded_rows(r: int) -> int:
    """The padded row count for `r` rows: the next power of two, at least 4."""
    n = _MIN_ROWS
    while n < r:
        n *= 2
    return n


def f32_outward(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest float32 box containing the float64 box `[lower, upper]`.

    Bounds are computed over this box: it holds every real point of the float64 box and every
    float32 input the program can be given from it.
    """
    lo = np.asarray(lower, np.float64)
    hi = np.asarray(upper, np.float64)
    lo32 = lo.astype(np.float32)
    hi32 = hi.astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = np.where(hi32.astype(np.float64) < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    return lo32.astype(np.float32), hi32.astype(np.float32)


def f32_inward(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The largest float32 box inside `[lower, upper]` (where counterexamples are searched).

    Where an interval holds no float32 number at all, `lower > upper` in the result.
    """
    lo = np.asarray(lower, np.float64)
    hi = np.asarray(upper, np.float64)
    lo32 = lo.astype(np.float32)
    hi32 = hi.astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) < lo, np.nextafter(lo32, np.float32(np.inf)), lo32)
    hi32 = np.where(hi32.astype(np.float64) > hi, np.nextafter(hi32, np.float32(-np.inf)), hi32)
    return lo32.astype(np.float32), hi32.astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Group:
    """Cases of a property that share their disjuncts, with the stacked spec.

    Attributes:
      cases: indices into `prop.cases`.
      boxes: `(lower, upper)` float64 arrays of shape (n_inputs,), one per case.
      disjuncts: the shared `[(C, d), ...]` (float64, as read).
      spec: float32 matrix (R, n_out): all rows of all disjuncts, zero-padded to R rows, then
        (only when some C entry is not a float32 number) the n_out identity rows.
      d: float64 (R,): right-hand sides (0 on padding rows).
      owner: int (R,): the disjunct of each row; -1 padding, -2 identity rows.
      residual: float64 (R, n_out): `C - float32(C)` on disjunct rows (zero when C is
        float32-exact).
    """

    cases: tuple[int, ...]
    boxes: tuple[tuple[np.ndarray, np.ndarray], ...]
    disjuncts: tuple[tuple[np.ndarray, np.ndarray], ...]
    spec: np.ndarray
    d: np.ndarray
    owner: np.ndarray
    residual: np.ndarray

    @property
    def n_disjuncts(self) -> int:
        return len(self.disjuncts)

    @property
    def exact_spec(self) -> bool:
        return not np.any(self.residual)

    def masks(self) -> np.ndarray:
        """Boolean (K, R): row r belongs to disjunct k."""
        return self.owner[None, :] == np.arange(self.n_disjuncts)[:, None]

    def margins(self, lower: np.ndarray) -> np.ndarray:
        """Certified margin per domain from spec lower bounds `lower` (B, R) (upper bounds of the
        identity rows follow in `lower` as negated rows, see `spec_rows`).

        Returns float64 (B,): min over disjuncts of max over its rows of `lower - d`, made
        rigorous (rounded down, minus the float32-spec correction). A domain is verified iff its
        margin is > 0; +inf for an empty domain, -inf when a disjunct has no rows.
        """
        lower = np.asarray(lower, np.float64)
        s = np.nextafter(lower - self.d[None, :], -np.inf)
        s = np.where(np.isnan(s), -np.inf, s)
        if not self.exact_spec:
            s = s - self._correction(lower)
            s = np.nextafter(s, -np.inf)
        m = self.masks()
        per = np.where(m[None, :, :], s[:, None, :], -np.inf).max(axis=2)  # (B, K)
        out = per.min(axis=1) if per.shape[1] else np.full(lower.shape[0], np.inf)
        empty = np.all(np.isposinf(lower), axis=1)  # bound() marks an empty domain +inf everywhere
        return np.where(empty, np.inf, out)

    def _correction(self, lower: np.ndarray) -> np.ndarray:
        # |C y - C32 y| <= |C - C32| @ max(|y_lo|, |y_hi|); identity rows hold y_lo and -y_hi.
        ident = self.owner == -2
        n_out = self.spec.shape[1]
        ylo = lower[:, ident][:, :n_out]
        yhi_neg = lower[:, ident][:, n_out:]
        ymax = np.maximum(np.abs(ylo), np.abs(yhi_neg))
        ymax = np.where(np.isnan(ymax), np.inf, ymax)
        corr = np.abs(self.residual) @ ymax.T  # (R, B)
        corr = corr.T * (1.0 + 1e-12) + 1e-300
        return np.where(np.isnan(corr), np.inf, corr)

    def objective(self, y: np.ndarray) -> np.ndarray:
        """Float objective of concrete outputs `y` (B, n_out): <= 0 means a candidate
        counterexample (min over disjuncts of max over rows of `C y - d`)."""
        y = np.asarray(y, np.float64)
        vals = []
        for c, d in self.disjuncts:
            if c.shape[0] == 0:
                vals.append(np.full(y.shape[0], -np.inf))
            else:
                vals.append((y @ c.T - d[None, :]).max(axis=1))
        return np.min(np.stack(vals, axis=1), axis=1)


def make_groups(prop, n_outputs: int) -> list[Group]:
    """Groups the cases of `prop` by their disjunct lists (file order kept)."""
    by_key: dict[tuple, list[int]] = {}
    for i, pairs in enumerate(prop.pairing):
        by_key.setdefault(tuple(pairs), []).append(i)
    groups = []
    for pairs, cases in by_key.items():
        disjuncts = tuple(prop.unsafe[k] for k in pairs)
        rows, ds, owner = [], [], []
        for k, (c, d) in enumerate(disjuncts):
            c = np.asarray(c, np.float64).reshape(-1, n_outputs)
            rows.append(c)
            ds.append(np.asarray(d, np.float64).reshape(-1))
            owner += [k] * c.shape[0]
        c_all = np.concatenate(rows) if rows else np.zeros((0, n_outputs))
        d_all = np.concatenate(ds) if ds else np.zeros((0,))
        c32 = c_all.astype(np.float32)
        residual = c_all - c32.astype(np.float64)
        r = c_all.shape[0]
        exact = not np.any(residual)
        extra = 0 if exact else 2 * n_outputs
        total = padded_rows(r + extra)
        spec = np.zeros((total, n_outputs), np.float32)
        d = np.zeros(total)
        own = np.full(total, -1)
        res = np.zeros((total, n_outputs))
        spec[:r], d[:r], own[:r], res[:r] = c32, d_all, owner, residual
        if not exact:
            # identity rows (lower bounds of y) and negated identity rows (-upper bounds of y)
            eye = np.eye(n_outputs, dtype=np.float32)
            spec[r : r + n_outputs] = eye
            spec[r + n_outputs : r + 2 * n_outputs] = -eye
            own[r : r + 2 * n_outputs] = -2
        if r:
            # padding rows repeat the first row (their bounds are ignored, `owner` -1): zero
            # rows drive beta-CROWN's parameters and slack into subnormal floats, which ran a
            # CNN's 50 root steps 80x slower (138 s instead of 1.7 s)
            spec[r + extra :] = c32[0]
        groups.append(
            Group(
                cases=tuple(cases),
                boxes=tuple(
                    (
                        np.asarray(prop.input_boxes[i][0], np.float64),
                        np.asarray(prop.input_boxes[i][1], np.float64),
                    )
                    for i in cases
                ),
                disjuncts=disjuncts,
                spec=spec,
                d=d,
                owner=own,
                residual=res,
            )
        )
    return groups


def validate_property(prop, input_shape: tuple[int, ...], n_out: int) -> None:
    """Checks a `Property` against the network before any search.

    Raises:
      InputError: `prop` is not a `tljax.io.Property`.
      ShapeMismatchError: input or output counts differ from the network's.
      InvalidBoxError: an input box is empty, NaN or unbounded.
    """
    from ..io import Property

    if not isinstance(prop, Property):
        raise InputError(
            f"tljax.verify expects a tljax.io.Property as `prop`, got {type(prop).__name__}; read "
            "one with tljax.io.load_vnnlib(path, n_inputs, n_outputs)"
        )
    n_in = int(np.prod(input_shape, dtype=np.int64))
    if prop.n_inputs != n_in:
        raise ShapeMismatchError(
            f"property {prop.path!r} has {prop.n_inputs} inputs (X_0..X_{prop.n_inputs - 1}) but "
            f"the network input has shape {tuple(input_shape)} = {n_in} elements; pass the "
            "matching `input_shape=` to tljax.verify or the matching VNN-LIB file"
        )
    if prop.n_outputs != n_out:
        raise ShapeMismatchError(
            f"property {prop.path!r} has {prop.n_outputs} outputs (Y_j) but the network returns "
            f"{n_out} elements; check that the VNN-LIB file belongs to this network"
        )
    if not prop.input_boxes:
        raise InvalidBoxError(f"property {prop.path!r} has no input box; nothing to verify")
    problems = []
    for b, (lo, hi) in enumerate(prop.input_boxes):
        lo = np.asarray(lo, np.float64).reshape(-1)
        hi = np.asarray(hi, np.float64).reshape(-1)
        if lo.shape != (n_in,) or hi.shape != (n_in,):
            problems.append(
                f"box {b}: lower/upper have shapes {lo.shape}/{hi.shape}, expected ({n_in},)"
            )
            continue
        for i in np.flatnonzero(np.isnan(lo) | np.isnan(hi))[:10]:
            problems.append(
                f"box {b}, X_{i}: NaN bound (lower={float(lo[i])}, upper={float(hi[i])})"
            )
        for i in np.flatnonzero(lo > hi)[:10]:
            problems.append(
                f"box {b}, X_{i}: empty interval, lower {float(lo[i])!r} > upper {float(hi[i])!r}"
            )
        for i in np.flatnonzero(np.isinf(lo) | np.isinf(hi))[:10]:
            problems.append(f"box {b}, X_{i}: unbounded interval [{float(lo[i])}, {float(hi[i])}]")
    if problems:
        raise InvalidBoxError(
            f"property {prop.path!r} has invalid input boxes ({len(problems)} problem(s)); every "
            "X_i needs a finite interval with lower <= upper:\n  " + "\n  ".join(problems)
        )
