"""Branch and bound: input splitting and ReLU splitting over batched, compiled bounds.

Domains are processed in fixed-size batches (padded), so each network compiles one bound program
per batch size. A domain is a case box (input splitting: a sub-box; ReLU splitting: the case box
with split constraints). Its *margin* is the certified lower bound of
`min_k max_i (C_k y - d_k)_i` (see `_spec.Group.margins`); margin > 0 proves the domain safe and
makes it a leaf of the certificate. The search is depth-first in batches (the children with the
lowest margins are processed next), which keeps memory bounded by depth x batch.

Branching heuristics:

- input splitting, smart gradient: split the coordinate with the largest `width_j * |d r / d x_j|`
  at the box centre, where `r` is one row of `C y - d` (how much that row can move along the
  coordinate inside the box). "objective" (default) takes the row that decides the float
  objective at the centre (the best row of the hardest disjunct there); "gradient" takes the row
  whose certified lower bound is closest to proving its disjunct, in the disjunct hardest to
  prove (on 8 ACAS Xu instances neither dominated: 10670 vs 8250 domains in total, but
  "objective" was better on 5). Flat regions fall back to the widest coordinate relative to the
  root box; "widest" always takes that.
- ReLU splitting, BaBSR-like: among unstable free neurons (`l < 0 < u` under the domain's splits)
  take the largest `|d objective / d relu_j| * (-l u / (u - l))`: the sensitivity of the margin to
  that neuron times the gap of its triangle relaxation (the intercept of the upper line).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._attack import attack, attack_arrays, batch_objective, confirm
from ._bounder import input_split_bounder, relu_split_bounder
from ._spec import Group, f32_outward


@dataclasses.dataclass
class Options:
    """Search settings (see `tljax.verify` for their meaning)."""

    method: str = "crown"
    batch_size: int = 256
    split: str = "auto"
    branching: str = "objective"
    attack: bool = True
    alpha: bool | str = "auto"
    max_depth: int = 200
    seed: int = 0
    relu_split_inputs: int = 64


@dataclasses.dataclass
class LeafSet:
    """Leaves of one group: arrays with one row per leaf."""

    case: list = dataclasses.field(default_factory=list)
    lower: list = dataclasses.field(default_factory=list)
    upper: list = dataclasses.field(default_factory=list)
    splits: list = dataclasses.field(default_factory=list)
    bounds: list = dataclasses.field(default_factory=list)
    method: list = dataclasses.field(default_factory=list)

    def add(self, case, lower, upper, splits, bounds, method):
        self.case.append(np.asarray(case, np.int64).reshape(-1))
        self.lower.append(np.asarray(lower, np.float64).reshape(len(self.case[-1]), -1))
        self.upper.append(np.asarray(upper, np.float64).reshape(len(self.case[-1]), -1))
        self.splits.append(np.asarray(splits, np.int8).reshape(len(self.case[-1]), -1))
        self.bounds.append(np.asarray(bounds, np.float32).reshape(len(self.case[-1]), -1))
        self.method.extend([method] * len(self.case[-1]))

    def arrays(self) -> dict:
        if not self.case:
            return {
                "case": np.zeros(0, np.int64),
                "lower": None,
                "upper": None,
                "splits": None,
                "bounds": None,
                "method": (),
            }
        width = max(s.shape[1] for s in self.splits)
        splits = [np.pad(s, ((0, 0), (0, width - s.shape[1]))) for s in self.splits]
        return {
            "case": np.concatenate(self.case),
            "lower": np.concatenate(self.lower),
            "upper": np.concatenate(self.upper),
            "splits": np.concatenate(splits),
            "bounds": np.concatenate(self.bounds),
            "method": tuple(self.method),
        }


class Outcome(Exception):
    """Raised inside the search to stop it with a verdict ("sat" or "timeout")."""

    def __init__(self, verdict: str, counterexample=None):
        super().__init__(verdict)
        self.verdict = verdict
        self.counterexample = counterexample


class Search:
    """One verification run over all groups of a property."""

    def __init__(
        self, fn, args, prop, shape, opts: Options, deadline: float, bar, stats: dict, notes: list
    ):
        self.fn, self.args, self.prop, self.shape = fn, tuple(args), prop, tuple(shape)
        self.opts, self.deadline, self.bar, self.stats, self.notes = (
            opts,
            deadline,
            bar,
            stats,
            notes,
        )
        self.key = jax.random.PRNGKey(opts.seed)
        self.rejected = 0
        self.seen: set[bytes] = set()
        self.start = time.monotonic()
        self.best = -np.inf

    # --- helpers ---------------------------------------------------------------------------
    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self):
        if self.time_left() <= 0:
            raise Outcome("timeout")

    def next_key(self):
        self.key, k = jax.random.split(self.key)
        return k

    def report(self, left: int, best: float):
        self.best = best
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"domains left {left}, best bound {best:.4g}, {time.monotonic() - self.start:.1f}s",
                refresh=False,
            )
            self.bar.update(1)

    def try_candidates(self, group: Group, xs, vals, limit=3):
        """Confirms up to `limit` candidates with objective <= 0; raises Outcome("sat")."""
        xs = np.asarray(xs)
        vals = np.asarray(vals)
        order = np.argsort(vals, kind="stable")
        for i in order[:limit]:
            if not vals[i] <= 0:
                break
            key = np.asarray(xs[i], np.float32).tobytes()
            if key in self.seen:  # already rejected: an exact re-evaluation would say the same
                continue
            self.seen.add(key)
            res = confirm(self.fn, self.args, self.prop, xs[i], self.shape, cases=list(group.cases))
            if res.counterexample is not None:
                raise Outcome("sat", res.counterexample)
            self.rejected += 1
            if len(self.notes) < 20:
                self.notes.append(f"candidate rejected on re-execution: {res.reason}")

    # --- phases ----------------------------------------------------------------------------
    def falsify(self, group: Group, case_box):
        if not self.opts.attack:
            return
        self.check_time()
        # one attack size everywhere: one compile per network
        xs, vals = attack(self.fn, self.args, group, *case_box, self.shape, key=self.next_key())
        self.stats["attack_best"] = min(
            self.stats.get("attack_best", np.inf), float(vals[0]) if vals.size else np.inf
        )
        self.try_candidates(group, xs, vals)

    def use_relu_split(self, group: Group) -> bool:
        mode = self.opts.split
        if mode == "input":
            return False
        if mode == "relu":
            return True
        return group.boxes[0][0].size > self.opts.relu_split_inputs

    def run_group(self, group: Group, leaves: LeafSet, *, skip_root_attack: bool = False) -> str:
        """Verifies one group; returns "unsat" or "unknown" (raises Outcome for sat/timeout)."""
        if not skip_root_attack:
            for box in group.boxes:
                self.falsify(group, box)
        if self.use_relu_split(group):
            return self.relu_split(group, leaves)
        return self.input_split(group, leaves)

    def alpha_roots(self, group: Group, leaves: LeafSet, relu_mode: bool, lo, hi, case):
        """alpha-CROWN on unverified case boxes; returns a mask of those it could not verify."""
        use = self.opts.alpha is True or (self.opts.alpha == "auto" and relu_mode)
        if not use or self.opts.method == "alpha-crown":
            return np.ones(len(case), bool)
        from ._bounder import single_bound

        left = np.ones(len(case), bool)
        for i in range(len(case)):
            self.check_time()
            lo32, hi32 = f32_outward(lo[i], hi[i])
            lower = np.asarray(
                single_bound(
                    self.fn,
                    lo32,
                    hi32,
                    self.shape,
                    jnp.asarray(group.spec),
                    self.args,
                    method="alpha-crown",
                )
            )
            self.stats["alpha_roots"] = self.stats.get("alpha_roots", 0) + 1
            if group.margins(lower[None, :])[0] > 0:
                nsp = 0
                leaves.add(
                    np.asarray(group.cases)[[case[i]]],
                    lo[i][None],
                    hi[i][None],
                    np.zeros((1, nsp)),
                    lower[None, :],
                    "alpha-crown",
                )
                left[i] = False
        return left

    # --- input splitting -------------------------------------------------------------------
    def input_split(self, group: Group, leaves: LeafSet) -> str:
        opts = self.opts
        B = opts.batch_size
        arrays = attack_arrays(group)
        rows = group.spec.shape[0]
        bounder = input_split_bounder(
            self.fn, self.shape, method=opts.method, batch=B, rows=rows, n_args=len(self.args)
        )
        root_lo = np.stack([b[0] for b in group.boxes])
        root_hi = np.stack([b[1] for b in group.boxes])
        root_w = np.where(root_hi > root_lo, root_hi - root_lo, 1.0)
        cases = np.arange(len(group.boxes))

        def bound_batch(lo, hi):
            m = lo.shape[0]
            lo32, hi32 = f32_outward(lo, hi)
            pad = B - m
            if pad:
                lo32 = np.concatenate([lo32, np.repeat(lo32[:1], pad, 0)])
                hi32 = np.concatenate([hi32, np.repeat(hi32[:1], pad, 0)])
            lower, v, jac, rows_c = bounder(
                jnp.asarray(lo32), jnp.asarray(hi32), *arrays, self.args
            )
            lower, v, jac = np.asarray(lower)[:m], np.asarray(v)[:m], np.asarray(jac)[:m]
            grad = (jac, np.asarray(rows_c)[:m])
            self.stats["domains"] = self.stats.get("domains", 0) + m
            self.stats["batches"] = self.stats.get("batches", 0) + 1
            return lower, v, grad

        masks = group.masks()

        def choose(lo, hi, probe, lower, case):
            jac, rows_c = probe
            width = hi - lo
            rel = width / root_w[case]
            if opts.branching in ("gradient", "objective"):
                # "gradient": the row closest to proving its disjunct (by its bound), in the
                # disjunct hardest to prove; "objective": the same by the centre's float values
                vals = lower if opts.branching == "gradient" else rows_c
                s = np.nan_to_num(vals.astype(np.float64) - group.d[None, :], nan=-np.inf)
                per = np.where(masks[None], s[:, None, :], -np.inf)  # (B, K, R)
                k = np.argmin(per.max(axis=2), axis=1)
                row = np.argmax(per[np.arange(len(k)), k], axis=1)
                grad = jac[np.arange(len(row)), row]
                score = width * np.abs(np.nan_to_num(grad.astype(np.float64)))
                flat = ~np.any(score > 0, axis=1)
                dims = np.where(flat, np.argmax(rel, axis=1), np.argmax(score, axis=1))
            else:
                dims = np.argmax(rel, axis=1)
            # a coordinate that cannot be halved any more at float64 resolution is not chosen
            mid = 0.5 * (lo + hi)
            ok = (mid > lo) & (mid < hi)
            stuck = ~ok[np.arange(len(dims)), dims]
            if np.any(stuck):
                alt = np.argmax(np.where(ok, rel, -1.0), axis=1)
                dims = np.where(stuck & np.any(ok, axis=1), alt, dims)
            return dims

        def process(lo, hi, case, depth, method_tag):
            """Bounds boxes in batches; returns the unverified ones (with margins, split dims)."""
            keep = []
            for s in range(0, lo.shape[0], B):
                sl = slice(s, s + B)
                lower, v, grad = bound_batch(lo[sl], hi[sl])
                margin = group.margins(lower)
                ok = margin > 0
                if np.any(ok):
                    leaves.add(
                        cases_of(case[sl][ok]),
                        lo[sl][ok],
                        hi[sl][ok],
                        np.zeros((int(ok.sum()), 0)),
                        lower[ok],
                        method_tag,
                    )
                    self.stats["verified_volume"] = self.stats.get("verified_volume", 0.0) + float(
                        np.sum(
                            np.prod(
                                np.where(hi[sl][ok] > lo[sl][ok], hi[sl][ok] - lo[sl][ok], 1.0)
                                / root_w[case[sl][ok]],
                                axis=1,
                            )
                        )
                    )
                # centre probes: float objective of the box centres (exact re-check on hit)
                if np.any(v <= 0):
                    centres = 0.5 * (lo[sl] + hi[sl])
                    self.try_candidates(group, centres, v, limit=2)
                bad = ~ok
                if np.any(bad):
                    dims = choose(
                        lo[sl][bad],
                        hi[sl][bad],
                        (grad[0][bad], grad[1][bad]),
                        lower[bad],
                        case[sl][bad],
                    )
                    keep.append(
                        (lo[sl][bad], hi[sl][bad], case[sl][bad], depth[sl][bad], margin[bad], dims)
                    )
            if not keep:
                return None
            return tuple(np.concatenate([k[i] for k in keep]) for i in range(6))

        def cases_of(idx):
            return np.asarray(group.cases)[idx]

        pending = process(root_lo, root_hi, cases, np.zeros(len(cases), np.int64), opts.method)
        if pending is None:
            return "unsat"
        left = self.alpha_roots(group, leaves, False, pending[0], pending[1], pending[2])
        if not np.any(left):
            return "unsat"
        pending = tuple(a[left] for a in pending)
        # stack (depth-first): arrays, top = end
        st_lo, st_hi, st_case, st_depth, st_margin, st_dim = pending
        order = np.argsort(-st_margin, kind="stable")  # lowest margin on top
        st = [a[order] for a in (st_lo, st_hi, st_case, st_depth, st_margin, st_dim)]
        last_attack = time.monotonic()
        while st[0].shape[0]:
            self.check_time()
            self.report(st[0].shape[0], float(np.min(st[4])))
            k = min(st[0].shape[0], B // 2)
            lo, hi, case, depth, _, dim = (a[-k:] for a in st)
            st = [a[:-k] for a in st]
            if np.any(depth >= opts.max_depth):
                self.notes.append(f"a domain reached the maximum split depth {opts.max_depth}")
                return "unknown"
            mid = 0.5 * (lo[np.arange(k), dim] + hi[np.arange(k), dim])
            if np.any((mid <= lo[np.arange(k), dim]) | (mid >= hi[np.arange(k), dim])):
                self.notes.append("a domain cannot be split further at float64 resolution")
                return "unknown"
            left_hi = hi.copy()
            left_hi[np.arange(k), dim] = mid
            right_lo = lo.copy()
            right_lo[np.arange(k), dim] = mid
            c_lo = np.concatenate([lo, right_lo])
            c_hi = np.concatenate([left_hi, hi])
            c_case = np.concatenate([case, case])
            c_depth = np.concatenate([depth, depth]) + 1
            self.stats["max_depth"] = max(self.stats.get("max_depth", 0), int(c_depth.max()))
            out = process(c_lo, c_hi, c_case, c_depth, opts.method)
            if out is not None:
                order = np.argsort(-out[4], kind="stable")
                st = [np.concatenate([a, b[order]]) for a, b in zip(st, out, strict=True)]
            # occasionally attack the most promising open box (sat cases hidden in small regions)
            if opts.attack and st[0].shape[0] and time.monotonic() - last_attack > 5.0:
                last_attack = time.monotonic()
                i = int(np.argmin(st[4]))
                self.falsify(group, (st[0][i], st[1][i]))
        return "unsat"

    # --- ReLU splitting --------------------------------------------------------------------
    def relu_split(self, group: Group, leaves: LeafSet) -> str:
        from ..bounds import Box, relu_shapes
        from ._taps import Taps

        opts = self.opts
        B = opts.batch_size
        rows = group.spec.shape[0]
        lo0, hi0 = f32_outward(*group.boxes[0])
        shapes = relu_shapes(
            self.fn,
            Box(jnp.asarray(lo0).reshape(self.shape), jnp.asarray(hi0).reshape(self.shape)),
            *self.args,
        )
        if not shapes:
            self.notes.append("no ReLU to split: falling back to input splitting")
            return self.input_split(group, leaves)
        sizes = [int(np.prod(s)) for s in shapes]
        total = int(sum(sizes))
        taps = Taps(self.fn, self.shape)
        if not taps.matches(shapes, self.args):
            self.notes.append(
                "ReLU taps do not match the bound tape: neurons scored without intermediate bounds"
            )
            taps = None
        bounder = relu_split_bounder(
            self.fn,
            self.shape,
            shapes,
            method=opts.method,
            batch=B,
            rows=rows,
            n_args=len(self.args),
            taps=taps,
        )
        spec = jnp.asarray(group.spec)
        arrays = attack_arrays(group)

        # sensitivity of the margin to each ReLU output, at the centre of each case box
        sens = {}
        for ci, (blo, bhi) in enumerate(group.boxes):
            if taps is None:
                sens[ci] = np.ones(total)
                continue
            s, dv, mask, real = arrays

            def objective(y, s=s, dv=dv, mask=mask, real=real):
                v = s @ y.astype(s.dtype) - dv
                per = jnp.max(jnp.where(mask, v[None, :], -jnp.inf), axis=1)
                return jnp.min(jnp.where(real, per, jnp.inf))

            w = taps.sensitivity(
                objective, jnp.asarray(0.5 * (blo + bhi), jnp.float32), self.args, sizes
            )
            sens[ci] = np.where(np.isfinite(w), w, 0.0) + 1e-12

        root_w = {ci: np.where(b[1] > b[0], b[1] - b[0], 1.0) for ci, b in enumerate(group.boxes)}

        def bound_batch(lo, hi, splits):
            m = splits.shape[0]
            lo32, hi32 = f32_outward(lo, hi)
            pad = B - m
            if pad:
                splits = np.concatenate([splits, np.repeat(splits[:1], pad, 0)])
                lo32 = np.concatenate([lo32, np.repeat(lo32[:1], pad, 0)])
                hi32 = np.concatenate([hi32, np.repeat(hi32[:1], pad, 0)])
            lower, plo, phi = bounder(
                jnp.asarray(lo32), jnp.asarray(hi32), jnp.asarray(splits, jnp.int8), spec, self.args
            )
            self.stats["domains"] = self.stats.get("domains", 0) + m
            self.stats["batches"] = self.stats.get("batches", 0) + 1
            return np.asarray(lower)[:m], np.asarray(plo)[:m], np.asarray(phi)[:m]

        def choose(lo, hi, case, splits, plo, phi):
            """Branching decision per domain: a neuron index >= 0, or -(j + 1) to halve input j
            (when no unstable neuron is left: the domain is then linear in the input, and its box
            is what keeps the bound loose)."""
            plo = plo.astype(np.float64)
            phi = phi.astype(np.float64)
            if taps is None:
                unstable = splits == 0
                gap = np.ones_like(plo)
            else:
                unstable = (splits == 0) & (plo < 0) & (phi > 0)
                gap = np.where(unstable, -plo * phi / np.maximum(phi - plo, 1e-30), 0.0)
            w = np.stack([sens[c] for c in case])
            score = np.where(unstable, w * gap, -1.0)
            k = np.argmax(score, axis=1)
            none = score[np.arange(len(k)), k] < 0
            rel = (hi - lo) / np.stack([root_w[c] for c in case])
            mid = 0.5 * (lo + hi)
            rel = np.where((mid > lo) & (mid < hi), rel, -1.0)
            j = np.argmax(rel, axis=1)
            if np.any(none & (rel[np.arange(len(j)), j] < 0)):
                raise _Stuck()
            return np.where(none, -(j + 1), k)

        def process(lo, hi, case, splits, depth):
            keep = []
            for s in range(0, splits.shape[0], B):
                sl = slice(s, s + B)
                lower, plo, phi = bound_batch(lo[sl], hi[sl], splits[sl])
                margin = group.margins(lower)
                ok = margin > 0
                if np.any(ok):
                    leaves.add(
                        np.asarray(group.cases)[case[sl][ok]],
                        lo[sl][ok],
                        hi[sl][ok],
                        splits[sl][ok],
                        lower[ok],
                        opts.method,
                    )
                bad = ~ok
                if np.any(bad):
                    br = choose(
                        lo[sl][bad], hi[sl][bad], case[sl][bad], splits[sl][bad], plo[bad], phi[bad]
                    )
                    keep.append(
                        (
                            lo[sl][bad],
                            hi[sl][bad],
                            case[sl][bad],
                            splits[sl][bad],
                            depth[sl][bad],
                            margin[bad],
                            br,
                        )
                    )
            if not keep:
                return None
            return tuple(np.concatenate([k[i] for k in keep]) for i in range(7))

        try:
            n_cases = len(group.boxes)
            root_lo = np.stack([b[0] for b in group.boxes])
            root_hi = np.stack([b[1] for b in group.boxes])
            pending = process(
                root_lo,
                root_hi,
                np.arange(n_cases),
                np.zeros((n_cases, total), np.int8),
                np.zeros(n_cases, np.int64),
            )
            if pending is None:
                return "unsat"
            left = self.alpha_roots(group, leaves, True, pending[0], pending[1], pending[2])
            if not np.any(left):
                return "unsat"
            pending = tuple(a[left] for a in pending)
            order = np.argsort(-pending[5], kind="stable")
            st = [a[order] for a in pending]
            while st[0].shape[0]:
                self.check_time()
                self.report(st[0].shape[0], float(np.min(st[5])))
                k = min(st[0].shape[0], B // 2)
                lo, hi, case, splits, depth, _, br = (a[-k:] for a in st)
                st = [a[:-k] for a in st]
                if np.any(depth >= opts.max_depth):
                    self.notes.append(f"a domain reached the maximum split depth {opts.max_depth}")
                    return "unknown"
                rows_k = np.arange(k)
                a_lo, a_hi, a_sp = lo.copy(), hi.copy(), splits.copy()
                b_lo, b_hi, b_sp = lo.copy(), hi.copy(), splits.copy()
                neuron = br >= 0
                nk = np.where(neuron, br, 0)
                a_sp[rows_k[neuron], nk[neuron]] = 1
                b_sp[rows_k[neuron], nk[neuron]] = -1
                inp = ~neuron
                if np.any(inp):
                    j = -br[inp] - 1
                    r = rows_k[inp]
                    mid = 0.5 * (lo[r, j] + hi[r, j])
                    a_hi[r, j] = mid
                    b_lo[r, j] = mid
                    self.stats["input_splits"] = self.stats.get("input_splits", 0) + int(inp.sum())
                out = process(
                    np.concatenate([a_lo, b_lo]),
                    np.concatenate([a_hi, b_hi]),
                    np.concatenate([case, case]),
                    np.concatenate([a_sp, b_sp]),
                    np.concatenate([depth, depth]) + 1,
                )
                self.stats["max_depth"] = max(self.stats.get("max_depth", 0), int(depth.max()) + 1)
                if out is not None:
                    order = np.argsort(-out[5], kind="stable")
                    st = [np.concatenate([a, b[order]]) for a, b in zip(st, out, strict=True)]
        except _Stuck:
            self.notes.append(
                "a domain can be split no further (no unstable ReLU, box at float64 resolution)"
            )
            return "unknown"
        return "unsat"


class _Stuck(Exception):
    pass


def probe_objective(fn, shape, group: Group, xs, args):
    """Float objectives of points `xs` (P, n) (used by tests and the final re-check)."""
    return np.asarray(
        batch_objective(fn, shape)(jnp.asarray(xs, jnp.float32), *attack_arrays(group), tuple(args))
    )
