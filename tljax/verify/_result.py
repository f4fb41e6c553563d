"""Verification results, unsat certificates and their re-check."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ._attack import Counterexample, confirm
from ._coverage import check_cover
from ._spec import Group, make_groups

VERDICTS = ("unsat", "sat", "unknown", "timeout")


@dataclasses.dataclass(frozen=True)
class GroupLeaves:
    """The leaves of one group of cases (see `tljax.verify._spec.Group`).

    Attributes:
      group: the cases, boxes and stacked spec that the leaves' bounds refer to.
      case: (N,) index into `prop.cases` of each leaf's case.
      lower, upper: (N, n) float64 leaf boxes over the flattened input.
      splits: (N, s) int8 ReLU split constraints (s = 0 for input splitting).
      bounds: (N, R) float32 certified lower bounds of the spec rows over each leaf.
      method: per leaf, the bound method that produced `bounds`.
      bound_certificates: per leaf, the `tljax.bound(..., certificate=True)` certificate, or None
        when they were not requested (or the bounds package does not provide them yet). A
        ReLU-split leaf's certificate is about its split domain (its `relu_splits` must equal
        the leaf's `splits`).
      witness: for "beta-crown" leaves, the parameters that produced `bounds`: `(alpha, beta)`
        float16 arrays (N, R, s) (NaN rows for other leaves), or None. With the case box's ReLU
        input bounds (recomputed), they reproduce the bounds exactly (`check(rebound=True)`).
    """

    group: Group
    case: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    splits: np.ndarray
    bounds: np.ndarray
    method: tuple
    bound_certificates: tuple | None = None
    witness: tuple | None = None

    def __len__(self) -> int:
        return int(self.case.shape[0])


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """Outcome of `Result.check` / `SearchCertificate.check`.

    Attributes:
      accepted: True when every check passed.
      reasons: what failed (empty when accepted).
      checked: what was checked, in words.
    """

    accepted: bool
    reasons: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.accepted


@dataclasses.dataclass(frozen=True)
class SearchCertificate:
    """Evidence for an `unsat` verdict: the search leaves, per group of cases.

    The property holds when (1) for every case, the leaves of that case cover the case's input box
    (checked exactly by `tljax.verify.check_cover`), and (2) every leaf's certified bounds rule out
    every unsafe disjunct (some row of each disjunct has `lower - d > 0`). `check` re-verifies
    both, optionally recomputing every leaf's bounds.
    """

    groups: tuple[GroupLeaves, ...]
    input_shape: tuple[int, ...]
    float_sound: bool = True

    @property
    def n_leaves(self) -> int:
        return sum(len(g) for g in self.groups)

    def check(
        self, prop, fn=None, *args, rebound: bool = False, batch_size: int = 256
    ) -> CheckReport:
        """Re-verifies the certificate against `prop`.

        Args:
          prop: the `tljax.io.Property` that was verified.
          fn, *args: the network (needed for `rebound` and for bound certificates).
          rebound: recompute every leaf's bounds from scratch and require them to rule the leaf
            out too (costs about as much as the search's bounding).
          batch_size: batch for `rebound`.

        Returns:
          A `CheckReport`; `accepted` only if every check passed.
        """
        reasons: list[str] = []
        checked: list[str] = []
        expected = make_groups(prop, prop.n_outputs)
        if len(expected) != len(self.groups):
            return CheckReport(
                False,
                (f"the certificate has {len(self.groups)} groups, the property {len(expected)}",),
            )
        for gi, (want, got) in enumerate(zip(expected, self.groups, strict=True)):
            g = got.group
            same = (
                want.cases == g.cases
                and want.spec.shape == g.spec.shape
                and np.array_equal(want.spec, g.spec)
                and np.array_equal(want.d, g.d)
                and np.array_equal(want.owner, g.owner)
                and np.array_equal(want.residual, g.residual)
                and all(
                    np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                    for a, b in zip(want.boxes, g.boxes, strict=True)
                )
            )
            if not same:
                reasons.append(f"group {gi}: its spec or boxes differ from the property's")
                continue
            checked.append(f"group {gi}: spec and boxes match the property")
            if len(got) == 0:
                reasons.append(f"group {gi}: no leaves")
                continue
            margins = want.margins(got.bounds.astype(np.float64))
            bad = np.flatnonzero(~(margins > 0))
            if bad.size:
                reasons.append(
                    f"group {gi}: {bad.size} leaves do not rule out the unsafe set (first: leaf "
                    f"{int(bad[0])}, margin {float(margins[bad[0]])!r})"
                )
            else:
                checked.append(f"group {gi}: all {len(got)} leaves have margin > 0")
            for ci, case in enumerate(want.cases):
                sel = got.case == case
                if not np.any(sel):
                    reasons.append(f"case {case}: no leaf")
                    continue
                ok, why = check_cover(
                    want.boxes[ci][0],
                    want.boxes[ci][1],
                    got.lower[sel],
                    got.upper[sel],
                    got.splits[sel],
                )
                if ok:
                    checked.append(
                        f"case {case}: {int(sel.sum())} leaves cover the input box (exact)"
                    )
                else:
                    reasons.append(f"case {case}: {why}")
            if rebound:
                if fn is None:
                    reasons.append("rebound=True needs the network: pass fn and its args")
                else:
                    r = _rebound(got, fn, args, self.input_shape, batch_size)
                    (checked if r is None else reasons).append(
                        r or f"group {gi}: recomputed bounds rule out every leaf"
                    )
            if got.bound_certificates is not None:
                r = _check_bound_certificates(got, fn, args)
                (checked if r is None else reasons).append(
                    r or f"group {gi}: every bound certificate accepted"
                )
        return CheckReport(not reasons, tuple(reasons), tuple(checked))


def _rebound(leaves: GroupLeaves, fn, args, shape, batch_size) -> str | None:
    import jax.numpy as jnp

    from ._attack import attack_arrays
    from ._bounder import input_split_bounder, pad_batch, relu_split_bounder, single_bound
    from ._spec import f32_outward

    g = leaves.group
    rows = g.spec.shape[0]
    n = len(leaves)
    lower_all = np.zeros((n, rows), np.float32)
    methods = np.asarray(leaves.method)
    for method in sorted(set(leaves.method)):
        idx = np.flatnonzero(methods == method)
        if method == "beta-crown":
            why = _rebound_beta(leaves, idx, fn, args, shape, batch_size, lower_all)
            if why is not None:
                return why
            continue
        if method == "alpha-crown" and leaves.splits.shape[1]:
            # case boxes alpha-CROWN ruled out before any split (`Search.alpha_roots`): by the
            # program that bounded them, one box at a time (the split-domain program has no
            # input-space hull planes)
            root = idx[~np.any(leaves.splits[idx] != 0, axis=1)]
            for j in root:
                lo32, hi32 = f32_outward(leaves.lower[j], leaves.upper[j])
                lower_all[j] = np.asarray(
                    single_bound(
                        fn, lo32, hi32, shape, jnp.asarray(g.spec), tuple(args), method=method
                    )
                )
            idx = np.setdiff1d(idx, root)
            if not idx.size:
                continue
        if leaves.splits.shape[1] == 0:
            # The search's program also computes its branching score ("unstable"); with or
            # without it the bounds are sound, but each leaf's are reproduced bit for bit by the
            # program that made them: each leaf keeps the best of both.
            arrays = attack_arrays(g)
            lower_all[idx] = -np.inf
            todo = idx
            for spread in (False, True):
                bd = input_split_bounder(
                    fn,
                    shape,
                    method=method,
                    batch=batch_size,
                    rows=rows,
                    n_args=len(args),
                    spread=spread,
                )
                for s in range(0, todo.size, batch_size):
                    part = todo[s : s + batch_size]
                    lo32, hi32 = pad_batch(
                        batch_size, *f32_outward(leaves.lower[part], leaves.upper[part])
                    )
                    out = bd(jnp.asarray(lo32), jnp.asarray(hi32), *arrays, tuple(args))[0]
                    lower_all[part] = np.maximum(lower_all[part], np.asarray(out)[: part.size])
                todo = idx[~(g.margins(lower_all[idx].astype(np.float64)) > 0)]
                if not todo.size:
                    break
            continue
        else:
            from ..bounds import Box, relu_shapes

            lo0, hi0 = f32_outward(*g.boxes[0])
            shapes = relu_shapes(
                fn, Box(jnp.asarray(lo0).reshape(shape), jnp.asarray(hi0).reshape(shape)), *args
            )
            from ._taps import Taps

            taps = Taps(fn, shape)  # same compiled program as the search's when the taps match
            taps = taps if taps.matches(shapes, args) else None
            bd = relu_split_bounder(
                fn,
                shape,
                shapes,
                method=method,
                batch=batch_size,
                rows=rows,
                n_args=len(args),
                taps=taps,
            )
        for s in range(0, idx.size, batch_size):
            part = idx[s : s + batch_size]
            lo32, hi32, sp = pad_batch(
                batch_size,
                *f32_outward(leaves.lower[part], leaves.upper[part]),
                leaves.splits[part],
            )
            out = bd(
                jnp.asarray(lo32),
                jnp.asarray(hi32),
                jnp.asarray(sp, jnp.int8),
                jnp.asarray(g.spec),
                tuple(args),
            )[0]
            lower_all[part] = np.asarray(out)[: part.size]
    margins = g.margins(lower_all.astype(np.float64))
    bad = np.flatnonzero(~(margins > 0))
    if bad.size:
        return (
            f"recomputed bounds do not rule out {bad.size} leaves (first: leaf {int(bad[0])}, "
            f"margin {float(margins[bad[0]])!r})"
        )
    return None


def _rebound_beta(leaves: GroupLeaves, idx, fn, args, shape, batch_size, lower_all) -> str | None:
    """Recomputes beta-CROWN leaves: each case box's ReLU input bounds from scratch, then every
    leaf's bounds at its witness parameters (no optimisation); fills `lower_all[idx]`."""
    import jax.numpy as jnp

    from ..bounds import Box, relu_shapes
    from ._bounder import relu_root_bounder
    from ._spec import f32_outward

    if leaves.witness is None:
        return "beta-crown leaves carry no witness parameters to recompute their bounds from"
    g = leaves.group
    rows = g.spec.shape[0]
    spec = jnp.asarray(g.spec)
    lo0, hi0 = f32_outward(*g.boxes[0])
    shapes = relu_shapes(
        fn, Box(jnp.asarray(lo0).reshape(shape), jnp.asarray(hi0).reshape(shape)), *args
    )
    root = relu_root_bounder(fn, shape, shapes, rows=rows, n_args=len(args))
    rb = []
    for blo, bhi in g.boxes:
        lo32, hi32 = f32_outward(blo, bhi)
        rlo, rhi = root(jnp.asarray(lo32), jnp.asarray(hi32), spec, tuple(args))
        rb.append((np.asarray(rlo, np.float32), np.asarray(rhi, np.float32)))
    where = {c: k for k, c in enumerate(g.cases)}
    box_of = np.asarray([where[int(c)] for c in leaves.case])
    alpha, beta = leaves.witness
    if np.any(np.isnan(alpha[idx])) or np.any(np.isnan(beta[idx])):
        return "a beta-crown leaf has no witness parameters"
    # The search bounds domains with two compiled batch sizes; a leaf's bounds are reproduced
    # bit for bit by the program that made them. Every program is sound, so each leaf keeps the
    # best of the small-batch program and, where that does not rule it out, the large one.
    from ._bab import BETA_SMALL_BATCH

    lower_all[idx] = -np.inf
    todo = idx
    for size in sorted({min(BETA_SMALL_BATCH, batch_size), batch_size}):
        _beta_batches(
            leaves,
            todo,
            fn,
            args,
            shape,
            shapes,
            size,
            rows,
            spec,
            rb,
            box_of,
            alpha,
            beta,
            lower_all,
        )
        todo = idx[~(leaves.group.margins(lower_all[idx].astype(np.float64)) > 0)]
        if not todo.size:
            break
    return None


def _beta_batches(
    leaves, idx, fn, args, shape, shapes, size, rows, spec, rb, box_of, alpha, beta, out
):
    """`out[idx] = max(out[idx], bounds at the witnesses)` with the `size`-batch program."""
    import jax.numpy as jnp

    from ._bounder import beta_bounder, pad_batch
    from ._spec import f32_outward

    bd = beta_bounder(fn, shape, shapes, batch=size, rows=rows, n_args=len(args))
    for s in range(0, idx.size, size):
        part = idx[s : s + size]
        lo32, hi32 = f32_outward(leaves.lower[part], leaves.upper[part])
        arrays = [
            lo32,
            hi32,
            leaves.splits[part],
            np.stack([rb[k][0] for k in box_of[part]]),
            np.stack([rb[k][1] for k in box_of[part]]),
            np.asarray(alpha[part], np.float32),
            np.asarray(beta[part], np.float32),
        ]
        arrays = pad_batch(size, *arrays)
        got = bd(
            jnp.asarray(arrays[0]),
            jnp.asarray(arrays[1]),
            jnp.asarray(arrays[2], jnp.int8),
            jnp.asarray(arrays[3]),
            jnp.asarray(arrays[4]),
            jnp.asarray(arrays[5]),
            jnp.asarray(arrays[6]),
            jnp.asarray(0, jnp.int32),
            spec,
            tuple(args),
        )[0]
        out[part] = np.maximum(out[part], np.asarray(got)[: part.size])


def _check_bound_certificates(leaves: GroupLeaves, fn, args) -> str | None:
    """Each leaf's bound certificate must be accepted by `tljax.bounds.check`, be about a box that
    contains the leaf and the leaf's ReLU splits, and claim bounds that rule the leaf out."""
    import jax.numpy as jnp

    from ._bounder import spec_fn
    from ._spec import f32_outward

    try:
        from ..bounds import check as bounds_check
    except ImportError:
        return "the leaves carry bound certificates but tljax.bounds.check is not available"
    if fn is None:
        return "bound certificates need the network to be checked: pass fn and its args"
    if len(leaves.bound_certificates) != len(leaves):
        return f"{len(leaves.bound_certificates)} bound certificates for {len(leaves)} leaves"
    g = spec_fn(fn)
    spec = jnp.asarray(leaves.group.spec)
    for i, cert in enumerate(leaves.bound_certificates):
        if cert is None:
            return f"leaf {i} has no bound certificate"
        lo32, hi32 = f32_outward(leaves.lower[i], leaves.upper[i])
        box_lo = np.asarray(cert.box[0][0], np.float64).reshape(-1)
        box_hi = np.asarray(cert.box[0][1], np.float64).reshape(-1)
        if box_lo.shape != lo32.shape or np.any(box_lo > lo32) or np.any(box_hi < hi32):
            return f"leaf {i}: its bound certificate is about a box that does not contain the leaf"
        why = _same_splits(getattr(cert, "relu_splits", None), leaves.splits[i])
        if why is not None:
            return f"leaf {i}: {why}"
        claimed = np.asarray(cert.lower[0], np.float64).reshape(1, -1)
        if not leaves.group.margins(claimed)[0] > 0:
            return f"leaf {i}: its bound certificate's bounds do not rule out the unsafe set"
        res = bounds_check(cert, g, spec, *args)
        if not res.accepted:
            return f"leaf {i}: bound certificate rejected: {res.reason}"
    return None


def _same_splits(cert_splits, leaf_splits) -> str | None:
    """None when a bound certificate's `relu_splits` are the leaf's (flat int8 vector), else why.

    A certificate about a larger domain (fewer splits) would do, but its claims are those of the
    leaf's own splits; requiring equality keeps the check simple and exact."""
    want = np.asarray(leaf_splits, np.int64).reshape(-1)
    if cert_splits is None:
        got = np.zeros(0, np.int64)
    else:
        got = np.concatenate(
            [np.asarray(v, np.int64).reshape(-1) for v in cert_splits if v is not None]
            or [np.zeros(0, np.int64)]
        )
        if any(v is None for v in cert_splits) and np.any(want != 0):
            return "its bound certificate leaves some ReLUs without their split arrays"
    if not np.any(want != 0) and not np.any(got != 0):
        return None
    if got.shape != want.shape or not np.array_equal(got, want):
        return "its bound certificate's ReLU splits differ from the leaf's"
    return None


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome of `tljax.verify`.

    Attributes:
      verdict: "unsat" (the property holds: no input of any box reaches the unsafe set), "sat"
        (`counterexample` violates it), "unknown" (the search gave up) or "timeout".
      counterexample: a confirmed `Counterexample` when sat, else None.
      certificate: the `SearchCertificate` when unsat, else None.
      time: wall time in seconds.
      stats: counters (domains bounded, leaves, maximum depth, attack objective, ...).
      notes: remarks from the search (rejected candidates, why it stopped, skipped parts).
      semantics: what the counterexample had to violate ("float32": the program as it runs;
        "real": the real-valued network too), see `tljax.verify`.
    """

    verdict: str
    counterexample: Counterexample | None = None
    certificate: SearchCertificate | None = None
    time: float = 0.0
    stats: dict = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()
    context: Any = dataclasses.field(default=None, repr=False, compare=False)
    semantics: str = "float32"

    def check(self, *, rebound: bool = False) -> CheckReport:
        """Re-verifies the verdict with the network and property it was computed for.

        sat: the counterexample is re-executed (float32 through XLA and in exact arithmetic) and
        must violate the property under the result's `semantics`. unsat: the certificate's
        coverage and leaf margins are re-checked exactly (and, with `rebound=True`, every leaf's
        bounds are recomputed).
        unknown / timeout: nothing to check (accepted, with a note).
        """
        if self.context is None:
            return CheckReport(False, ("this Result carries no network/property to check against",))
        fn, args, prop, shape = self.context
        if self.verdict == "sat":
            if self.counterexample is None:
                return CheckReport(False, ("verdict sat without a counterexample",))
            c = confirm(fn, args, prop, self.counterexample.x, shape, semantics=self.semantics)
            if c.counterexample is None:
                return CheckReport(False, (f"the counterexample does not re-check: {c.reason}",))
            return CheckReport(
                True, (), (f"counterexample re-executed: {c.counterexample.describe()}",)
            )
        if self.verdict == "unsat":
            if self.certificate is None:
                return CheckReport(False, ("verdict unsat without a certificate",))
            return self.certificate.check(prop, fn, *args, rebound=rebound)
        return CheckReport(True, (), (f"verdict {self.verdict}: nothing to check",))

    def vnncomp(self) -> str:
        """The VNN-COMP result file text: `unsat`, `unknown`, `timeout`, or `sat` with the
        assignment `((X_0 v) ... (Y_0 v))` (input flattened row-major, float32 values printed so
        that they read back exactly)."""
        if self.verdict != "sat":
            return self.verdict + "\n"
        cex = self.counterexample
        xs = np.asarray(cex.x, np.float32).reshape(-1)
        ys = np.asarray(cex.y, np.float32).reshape(-1)
        lines = [f"(X_{i} {float(v)!r})" for i, v in enumerate(xs)]
        lines += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(ys)]
        return "sat\n(" + "\n".join(lines) + ")\n"

    def __str__(self) -> str:
        extra = ""
        if self.verdict == "unsat" and self.certificate is not None:
            extra = f", {self.certificate.n_leaves} leaves"
        if self.verdict == "sat" and self.counterexample is not None:
            extra = f", counterexample in case {self.counterexample.case}"
            if self.counterexample.float_only:
                extra += ", a violation of the float32 program only"
        return f"{self.verdict} ({self.time:.2f}s{extra})"
