"""Branch and bound: input splitting and ReLU splitting over batched, compiled bounds.

Domains are processed in fixed-size batches (padded), so each network compiles one bound program
per batch size. A domain is a case box (input splitting: a sub-box; ReLU splitting: the case box
with split constraints). Its *margin* is the certified lower bound of
`min_k max_i (C_k y - d_k)_i` (see `_spec.Group.margins`); margin > 0 proves the domain safe and
makes it a leaf of the certificate. The search is depth-first in batches (the children with the
lowest margins are processed next), which keeps memory bounded by depth x batch.

Branching heuristics:

- input splitting, "unstable" (default): split the coordinate that causes most of the spread of
  the ReLU inputs likely to be unstable in the box (linearised at its centre, per layer
  normalised, see `_bounder._spread_fn`): CROWN's looseness comes from the relaxation gaps of
  unstable neurons, which shrink with their input ranges. On the ACAS Xu instances that
  "objective" could not finish (prop_1 on 2_x, prop_2 on 1_x) a prototype needed 190-620
  domains with it, 220-3300 with the widest absolute edge (alpha-beta-CROWN's "naive"),
  72k with the widest edge relative to the root box, and >100k with "objective".
- input splitting, smart gradient: split the coordinate with the largest `width_j * |d r / d x_j|`
  at the box centre, where `r` is one row of `C y - d` (how much that row can move along the
  coordinate inside the box). "objective" (the default before "unstable") takes the row that
  decides the float
  objective at the centre (the best row of the hardest disjunct there); "gradient" takes the row
  whose certified lower bound is closest to proving its disjunct, in the disjunct hardest to
  prove (on 8 ACAS Xu instances neither dominated: 10670 vs 8250 domains in total, but
  "objective" was better on 5). Flat regions fall back to the widest coordinate relative to the
  root box; "widest" always takes that.
- ReLU splitting with beta-CROWN (default, `Search.relu_split_beta`), BaBSR: among unstable free
  neurons (`l < 0 < u` under the domain's splits) take the largest
  `sum_r -min(L_rj, 0) * (-l u / (u - l))` over the rows r of the disjuncts not yet ruled out,
  `L_rj` the row's coefficient on the neuron's output in the domain's own optimised bound: what
  the intercept of its upper relaxation costs the bound. On mnist_fc prop_6 (eps 0.03) this
  needed 25 domains where the fixed score below needed 3663.
- ReLU splitting without beta (and the fallback where the score above is zero everywhere):
  `|d objective / d relu_j| * (-l u / (u - l))`, the sensitivity of the float margin to the
  neuron at the case centre times the gap of its triangle relaxation.

Falsification during the search: input splitting probes every box centre and periodically runs
PGD seeded inside the open boxes with the lowest margins (`attack_domains`); ReLU splitting
evaluates, per domain, the input corner that minimises its worst row's linear bound (where the
bound is nearly tight that corner is a near-counterexample: mnist_fc prop_2 is sat at such a
corner, which PGD from random starts missed) and seeds PGD with the lowest ones.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._attack import attack, attack_arrays, attack_domains, batch_objective, confirm
from ._bounder import input_split_bounder, pad_batch, relu_split_bounder
from ._spec import Group, f32_inward, f32_outward

# Batch of the small compiled beta-CROWN program (see `Search.relu_split_beta`), and the most
# memory a batch's beta-CROWN parameters may take (larger networks split with plain bounds).
BETA_SMALL_BATCH = 16
BETA_MAX_BATCH_BYTES = 1 << 30


@dataclasses.dataclass
class Options:
    """Search settings (see `tljax.verify` for their meaning)."""

    method: str = "crown"
    batch_size: int = 256
    split: str = "auto"
    branching: str = "unstable"
    attack: bool = True
    alpha: bool | str = "auto"
    max_depth: int = 200
    seed: int = 0
    relu_split_inputs: int = 64
    beta: bool | str = "auto"
    beta_iters: int = 10
    beta_root_iters: int = 50


@dataclasses.dataclass
class LeafSet:
    """Leaves of one group: arrays with one row per leaf."""

    case: list = dataclasses.field(default_factory=list)
    lower: list = dataclasses.field(default_factory=list)
    upper: list = dataclasses.field(default_factory=list)
    splits: list = dataclasses.field(default_factory=list)
    bounds: list = dataclasses.field(default_factory=list)
    method: list = dataclasses.field(default_factory=list)
    witness: list = dataclasses.field(default_factory=list)

    def add(self, case, lower, upper, splits, bounds, method, witness=None):
        self.case.append(np.asarray(case, np.int64).reshape(-1))
        self.lower.append(np.asarray(lower, np.float64).reshape(len(self.case[-1]), -1))
        self.upper.append(np.asarray(upper, np.float64).reshape(len(self.case[-1]), -1))
        self.splits.append(np.asarray(splits, np.int8).reshape(len(self.case[-1]), -1))
        self.bounds.append(np.asarray(bounds, np.float32).reshape(len(self.case[-1]), -1))
        self.method.extend([method] * len(self.case[-1]))
        self.witness.append(witness)

    def arrays(self) -> dict:
        if not self.case:
            return {
                "case": np.zeros(0, np.int64),
                "lower": None,
                "upper": None,
                "splits": None,
                "bounds": None,
                "method": (),
                "witness": None,
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
            "witness": self._witness(),
        }

    def _witness(self):
        """beta-CROWN parameters per leaf: `(alpha, beta)` float16 (N, R, s), NaN for leaves that
        have none; None when no leaf has any."""
        if all(w is None for w in self.witness):
            return None
        ref = next(w for w in self.witness if w is not None)
        shape = ref[0].shape[1:]
        alphas, betas = [], []
        for c, w in zip(self.case, self.witness, strict=True):
            if w is None:
                w = (np.full((len(c), *shape), np.nan, np.float16),) * 2
            alphas.append(w[0])
            betas.append(w[1])
        return np.concatenate(alphas), np.concatenate(betas)


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

    def falsify_domains(self, group: Group, lo, hi, margin, n_domains=256):
        """PGD seeded in the `n_domains` open domains with the lowest margins, then the full
        attack (`falsify`) on the lowest one."""
        if not self.opts.attack:
            return
        self.check_time()
        worst = np.argsort(margin, kind="stable")[:n_domains]
        xs, vals = attack_domains(
            self.fn, self.args, group, lo[worst], hi[worst], self.shape, key=self.next_key()
        )
        self.stats["domain_attacks"] = self.stats.get("domain_attacks", 0) + 1
        if vals.size:
            self.stats["attack_best"] = min(self.stats.get("attack_best", np.inf), float(vals[0]))
        self.try_candidates(group, xs, vals)
        self.falsify(group, (lo[worst[0]], hi[worst[0]]))

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
        use_spread = opts.branching == "unstable"
        bounder = input_split_bounder(
            self.fn,
            self.shape,
            method=opts.method,
            batch=B,
            rows=rows,
            n_args=len(self.args),
            spread=use_spread,
        )
        root_lo = np.stack([b[0] for b in group.boxes])
        root_hi = np.stack([b[1] for b in group.boxes])
        root_w = np.where(root_hi > root_lo, root_hi - root_lo, 1.0)
        cases = np.arange(len(group.boxes))

        def bound_batch(lo, hi):
            m = lo.shape[0]
            lo32, hi32 = pad_batch(B, *f32_outward(lo, hi))
            nonlocal bounder
            call = (jnp.asarray(lo32), jnp.asarray(hi32), *arrays, self.args)
            try:
                lower, v, jac, rows_c, spread = bounder(*call)
            except Exception as err:
                if not use_spread or "spread" in self.stats:
                    raise
                self.stats["spread"] = "off"
                self.notes.append(
                    f"branching 'unstable' unavailable ({type(err).__name__}): using 'objective'"
                )
                bounder = input_split_bounder(
                    self.fn,
                    self.shape,
                    method=opts.method,
                    batch=B,
                    rows=rows,
                    n_args=len(self.args),
                )
                lower, v, jac, rows_c, spread = bounder(*call)
            lower, v, jac = np.asarray(lower)[:m], np.asarray(v)[:m], np.asarray(jac)[:m]
            grad = (jac, np.asarray(rows_c)[:m], np.asarray(spread)[:m])
            self.stats["domains"] = self.stats.get("domains", 0) + m
            self.stats["batches"] = self.stats.get("batches", 0) + 1
            return lower, v, grad

        masks = group.masks()

        def objective_dims(width, rel, jac, rows_c, lower, branching):
            # "gradient": the row closest to proving its disjunct (by its bound), in the
            # disjunct hardest to prove; "objective": the same by the centre's float values
            vals = lower if branching == "gradient" else rows_c
            s = np.nan_to_num(vals.astype(np.float64) - group.d[None, :], nan=-np.inf)
            per = np.where(masks[None], s[:, None, :], -np.inf)  # (B, K, R)
            k = np.argmin(per.max(axis=2), axis=1)
            row = np.argmax(per[np.arange(len(k)), k], axis=1)
            grad = jac[np.arange(len(row)), row]
            score = width * np.abs(np.nan_to_num(grad.astype(np.float64)))
            flat = ~np.any(score > 0, axis=1)
            return np.where(flat, np.argmax(rel, axis=1), np.argmax(score, axis=1))

        def choose(lo, hi, probe, lower, case):
            jac, rows_c, spread = probe
            width = hi - lo
            rel = width / root_w[case]
            if opts.branching == "unstable" and self.stats.get("spread") != "off":
                # width x spread of the likely unstable ReLUs; where none is likely unstable
                # (the domain is nearly linear) the objective row's gradient decides
                score = np.nan_to_num(spread.astype(np.float64), nan=0.0, posinf=0.0)
                flat = ~np.any(score > 0, axis=1)
                dims = np.argmax(score, axis=1)
                if np.any(flat):
                    alt = objective_dims(width, rel, jac, rows_c, lower, "objective")
                    dims = np.where(flat, alt, dims)
            elif opts.branching in ("gradient", "objective", "unstable"):
                b = "gradient" if opts.branching == "gradient" else "objective"
                dims = objective_dims(width, rel, jac, rows_c, lower, b)
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
                        (grad[0][bad], grad[1][bad], grad[2][bad]),
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
        next_attack = time.monotonic() + 2.0
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
            # occasionally attack the open boxes with the lowest margins (sat cases hidden in
            # small regions): PGD seeded inside each of them, and a full attack on the lowest
            if opts.attack and st[0].shape[0] and time.monotonic() > next_attack:
                t0 = time.monotonic()
                self.falsify_domains(group, st[0], st[1], st[4])
                next_attack = time.monotonic() + max(2.0, 3.0 * (time.monotonic() - t0))
        return "unsat"

    # --- ReLU splitting --------------------------------------------------------------------
    def _children(self, lo, hi, splits, br):
        """The two children of each domain, stacked (all first children, then all second ones):
        ReLU `br >= 0` split active / inactive, or input coordinate `-br - 1` halved."""
        rows_k = np.arange(lo.shape[0])
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
        stack = np.concatenate
        return stack([a_lo, b_lo]), stack([a_hi, b_hi]), stack([a_sp, b_sp])

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
        if opts.beta is True or (opts.beta == "auto" and opts.method != "ibp"):
            # per domain, slopes and multipliers for every (row, neuron): (alpha, beta) in
            # float32 for a batch must stay well below the memory
            if 8 * rows * total * B <= BETA_MAX_BATCH_BYTES:
                return self.relu_split_beta(group, leaves, shapes, sens, root_w, taps is not None)
            self.notes.append(
                f"beta-CROWN off: {rows} rows x {total} ReLUs x batch {B} parameters exceed "
                f"{BETA_MAX_BATCH_BYTES >> 20} MiB; domains bounded by {opts.method}"
            )

        def bound_batch(lo, hi, splits):
            m = splits.shape[0]
            lo32, hi32, splits = pad_batch(B, *f32_outward(lo, hi), splits)
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
                c_lo, c_hi, c_sp = self._children(lo, hi, splits, br)
                out = process(
                    c_lo,
                    c_hi,
                    np.concatenate([case, case]),
                    c_sp,
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

    def relu_split_beta(self, group, leaves, shapes, sens, root_w, scored: bool) -> str:
        """ReLU splitting with beta-CROWN bounds (see `tljax.bounds._crown.split_bound`).

        Each case box gets its ReLU input bounds once (`relu_root_bounder`: CROWN, then
        alpha-CROWN on them); every domain of that case reuses them, clipped by its splits, and
        optimises its output bound over the lower slopes and the split multipliers, warm-started
        from its parent's. A verified domain becomes a leaf with its parameters as witness (they
        reproduce its bounds exactly: `Certificate.check(rebound=True)`).
        """
        from ._bounder import beta_bounder, relu_root_bounder

        opts = self.opts
        B = opts.batch_size
        R = group.spec.shape[0]
        total = int(sum(int(np.prod(s)) for s in shapes))
        spec = jnp.asarray(group.spec)
        n_args = len(self.args)
        root = relu_root_bounder(self.fn, self.shape, shapes, rows=R, n_args=n_args)
        # two compiled batch sizes (the large one only compiled once enough domains are open):
        # a beta-CROWN domain costs ~100x an input-split one, and hard instances often need
        # only tens of domains
        sizes = sorted({min(BETA_SMALL_BATCH, B), B})

        def bounder_for(m):
            size = next((z for z in sizes if z >= m), sizes[-1])
            return size, beta_bounder(
                self.fn, self.shape, shapes, batch=size, rows=R, n_args=n_args
            )

        rb = []
        for blo, bhi in group.boxes:
            self.check_time()
            lo32, hi32 = f32_outward(blo, bhi)
            rlo, rhi = root(jnp.asarray(lo32), jnp.asarray(hi32), spec, self.args)
            rb.append((np.asarray(rlo, np.float32), np.asarray(rhi, np.float32)))
        rb_lo = np.stack([r[0] for r in rb])
        rb_hi = np.stack([r[1] for r in rb])

        def bound_batch(lo, hi, case, splits, alpha, beta, iters):
            m = splits.shape[0]
            size, bounder = bounder_for(m)
            lo32, hi32 = f32_outward(lo, hi)
            args = pad_batch(size, lo32, hi32, splits, rb_lo[case], rb_hi[case], alpha, beta)
            lo32, hi32, sp, rlo, rhi, al, be = args
            lower, a, b, ulo, uhi, sc, corners = bounder(
                jnp.asarray(lo32),
                jnp.asarray(hi32),
                jnp.asarray(sp, jnp.int8),
                jnp.asarray(rlo),
                jnp.asarray(rhi),
                jnp.asarray(al, jnp.float32),
                jnp.asarray(be, jnp.float32),
                jnp.asarray(iters, jnp.int32),
                spec,
                self.args,
            )
            self.stats["domains"] = self.stats.get("domains", 0) + m
            self.stats["batches"] = self.stats.get("batches", 0) + 1
            probe_corners(np.asarray(lower)[:m], np.asarray(corners)[:m], case, size)
            # the parameters are float16 numbers (split_bound keeps them so): stored exactly
            return (
                np.asarray(lower)[:m],
                np.asarray(a)[:m].astype(np.float16),
                np.asarray(b)[:m].astype(np.float16),
                np.asarray(ulo)[:m].astype(np.float64),
                np.asarray(uhi)[:m].astype(np.float64),
                self._branch_scores(group, np.asarray(lower)[:m], np.asarray(sc)[:m]),
            )

        objective = batch_objective(self.fn, self.shape)
        arrays = attack_arrays(group)
        inner = np.stack([np.stack(f32_inward(*b)) for b in group.boxes])  # (cases, 2, n)
        seeds: dict = {"x": None, "case": None, "t": time.monotonic()}

        def probe_corners(lower, corners, case, size):
            """Falsification from the bounds: per domain, the input corner minimising the linear
            bound of its worst open row is evaluated (a counterexample where the bound is
            tight); the lowest become PGD seeds (`seed_attack`)."""
            if not opts.attack:
                return
            s = np.asarray(lower, np.float64) - group.d[None, :]
            s = np.where(group.owner[None, :] >= 0, s, np.inf)
            row = np.argmin(s, axis=1)
            x = corners[np.arange(len(row)), row].astype(np.float32)
            # the bound's box is rounded outward: the corner into the case box's float32 points
            x = np.clip(x, inner[case, 0], inner[case, 1])
            (xp,) = pad_batch(size, x)
            v = np.asarray(objective(jnp.asarray(xp), *arrays, self.args))[: x.shape[0]]
            v = np.where(np.isnan(v), np.inf, v)
            self.stats["attack_best"] = min(self.stats.get("attack_best", np.inf), float(v.min()))
            if np.any(v <= 0):
                self.try_candidates(group, x, v)
            keep = np.argsort(s[np.arange(len(row)), row], kind="stable")[:BETA_SMALL_BATCH]
            if seeds["x"] is None:
                seeds["x"], seeds["case"] = x[keep], case[keep]
            else:
                seeds["x"] = np.concatenate([x[keep], seeds["x"]])[:256]
                seeds["case"] = np.concatenate([case[keep], seeds["case"]])[:256]

        def seed_attack():
            """PGD in the case boxes from the seeds of `probe_corners`, at most a quarter of
            the time (and not within 2 s of the last)."""
            if not opts.attack or seeds["x"] is None or time.monotonic() < seeds["t"]:
                return
            self.check_time()
            t0 = time.monotonic()
            c = seeds["case"]
            xs, vals = attack_domains(
                self.fn,
                self.args,
                group,
                np.stack([group.boxes[k][0] for k in c]),
                np.stack([group.boxes[k][1] for k in c]),
                self.shape,
                key=self.next_key(),
                starts=seeds["x"],
            )
            self.stats["domain_attacks"] = self.stats.get("domain_attacks", 0) + 1
            if vals.size:
                self.stats["attack_best"] = min(self.stats["attack_best"], float(vals[0]))
            self.try_candidates(group, xs, vals)
            seeds["x"] = None
            seeds["t"] = time.monotonic() + max(2.0, 3.0 * (time.monotonic() - t0))

        def choose(lo, hi, case, splits, plo, phi, bscore):
            """Per domain: a neuron index >= 0, or -(j + 1) to halve input j (no unstable
            neuron left: the domain is linear in the input and its box keeps the bound loose).

            The score is BaBSR's from the domain's own bound (`bscore`, see `split_bound`); where
            it is zero everywhere, the margin's sensitivity at the case centre times the
            relaxation gap."""
            unstable = (splits == 0) & (plo < 0) & (phi > 0)
            if scored:
                gap = np.where(unstable, -plo * phi / np.maximum(phi - plo, 1e-30), 0.0)
            else:
                gap = np.ones_like(plo)
            w = np.stack([sens[c] for c in case])
            fallback = np.where(unstable, w * gap, -1.0)
            primary = np.where(unstable, bscore, 0.0)
            has = np.any(primary > 0, axis=1, keepdims=True)
            score = np.where(has, np.where(unstable, primary, -1.0), fallback)
            k = np.argmax(score, axis=1)
            none = score[np.arange(len(k)), k] < 0
            rel = (hi - lo) / np.stack([root_w[c] for c in case])
            mid = 0.5 * (lo + hi)
            rel = np.where((mid > lo) & (mid < hi), rel, -1.0)
            j = np.argmax(rel, axis=1)
            if np.any(none & (rel[np.arange(len(j)), j] < 0)):
                raise _Stuck()
            return np.where(none, -(j + 1), k)

        def process(lo, hi, case, splits, depth, alpha, beta, iters):
            keep = []
            for s in range(0, splits.shape[0], B):
                sl = slice(s, s + B)
                lower, a, b, plo, phi, bscore = bound_batch(
                    lo[sl], hi[sl], case[sl], splits[sl], alpha[sl], beta[sl], iters
                )
                margin = group.margins(lower)
                ok = margin > 0
                if np.any(ok):
                    leaves.add(
                        np.asarray(group.cases)[case[sl][ok]],
                        lo[sl][ok],
                        hi[sl][ok],
                        splits[sl][ok],
                        lower[ok],
                        "beta-crown",
                        witness=(a[ok], b[ok]),
                    )
                bad = ~ok
                if np.any(bad):
                    br = choose(
                        lo[sl][bad],
                        hi[sl][bad],
                        case[sl][bad],
                        splits[sl][bad],
                        plo[bad],
                        phi[bad],
                        bscore[bad],
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
                            a[bad],
                            b[bad],
                        )
                    )
            if not keep:
                return None
            return tuple(np.concatenate([k[i] for k in keep]) for i in range(9))

        try:
            n_cases = len(group.boxes)
            pending = process(
                np.stack([b[0] for b in group.boxes]),
                np.stack([b[1] for b in group.boxes]),
                np.arange(n_cases),
                np.zeros((n_cases, total), np.int8),
                np.zeros(n_cases, np.int64),
                np.full((n_cases, R, total), np.nan, np.float16),
                np.zeros((n_cases, R, total), np.float16),
                opts.beta_root_iters,
            )
            if pending is None:
                return "unsat"
            order = np.argsort(-pending[5], kind="stable")
            st = [a[order] for a in pending]
            while st[0].shape[0]:
                self.check_time()
                seed_attack()
                self.report(st[0].shape[0], float(np.min(st[5])))
                # small batches while few domains are open (no large compile for easy cases)
                if st[0].shape[0] >= sizes[-1] // 4:
                    k = min(st[0].shape[0], sizes[-1] // 2)
                else:
                    k = min(st[0].shape[0], sizes[0] // 2)
                lo, hi, case, splits, depth, _, br, al, be = (a[-k:] for a in st)
                st = [a[:-k] for a in st]
                if np.any(depth >= opts.max_depth):
                    self.notes.append(f"a domain reached the maximum split depth {opts.max_depth}")
                    return "unknown"
                c_lo, c_hi, c_sp = self._children(lo, hi, splits, br)
                out = process(
                    c_lo,
                    c_hi,
                    np.concatenate([case, case]),
                    c_sp,
                    np.concatenate([depth, depth]) + 1,
                    np.concatenate([al, al]),
                    np.concatenate([be, be]),
                    opts.beta_iters,
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

    @staticmethod
    def _branch_scores(group: Group, lower, scores):
        """Per domain and neuron: the BaBSR scores (B, R, s) summed over the rows of the
        disjuncts its bounds do not rule out yet."""
        s = np.asarray(lower, np.float64) - group.d[None, :]
        masks = group.masks()  # (K, R)
        per = np.where(masks[None], s[:, None, :], -np.inf).max(axis=2)  # (B, K)
        open_k = ~(per > 0)
        w = (open_k[:, :, None] & masks[None]).any(axis=1).astype(np.float64)  # (B, R)
        sc = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0, posinf=0.0)
        return np.einsum("br,brs->bs", w, sc)


class _Stuck(Exception):
    pass


def probe_objective(fn, shape, group: Group, xs, args):
    """Float objectives of points `xs` (P, n) (used by tests and the final re-check)."""
    return np.asarray(
        batch_objective(fn, shape)(jnp.asarray(xs, jnp.float32), *attack_arrays(group), tuple(args))
    )
