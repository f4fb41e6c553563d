"""Branch and bound: one loop over batches of domains, with pluggable bounding and branching.

A *domain* is a case box, or a sub-box of it (input splitting), with ReLU split constraints
(ReLU splitting). Its *margin* is the certified lower bound of `min_k max_i (C_k y - d_k)_i`
(see `_spec.Group.margins`); margin > 0 proves the domain safe and makes it a leaf of the
certificate. The loop is the pure pair `init(strategy, roots)` / `step(strategy, state)` over a
`State` (the open domains, a stack whose last rows have the lowest margins, and the closed
leaves): `step` pops a batch, splits each domain in two along its branching decision, bounds
the children (`Strategy.bound`), closes those with margin > 0 and branches the others
(`Strategy.branch`). The search is depth-first in batches, so memory stays bounded by depth x
batch; every compiled bound program has a fixed batch (padded).

Strategies (bounding + branching):

- `InputSplit` (networks with few inputs), branching "unstable" (default): split the coordinate
  that causes most of the spread of the ReLU inputs likely to be unstable in the box
  (linearised at its centre, per layer normalised, see `_bounder._spread_fn`): CROWN's looseness
  comes from the relaxation gaps of unstable neurons, which shrink with their input ranges. On
  the ACAS Xu instances that "objective" could not finish (prop_1 on 2_x, prop_2 on 1_x) a
  prototype needed 190-620 domains with it, 220-3300 with the widest absolute edge
  (alpha-beta-CROWN's "naive"), 72k with the widest edge relative to the root box, and >100k
  with "objective". "objective" / "gradient": the coordinate with the largest
  `width_j * |d r / d x_j|` at the box centre, `r` the row that decides the float objective there
  ("objective") or the row whose certified bound is closest to proving its disjunct
  ("gradient"); flat regions fall back to the widest coordinate relative to the root box, which
  "widest" always takes.
- `BetaSplit` (default ReLU splitting): beta-CROWN bounds warm-started from the parent's slopes
  and multipliers; BaBSR branching: among unstable free neurons take the largest
  `sum_r -min(L_rj, 0) * (-l u / (u - l))` over the rows of the disjuncts not yet ruled out
  (`L_rj` the row's coefficient on the neuron's output in the domain's own bound). On mnist_fc
  prop_6 (eps 0.03) this needed 25 domains where the fixed score below needed 3663.
- `ReluSplit` (without beta, or when its parameters would not fit in memory): each domain bounded
  by `method` with its splits clipping the ReLU input intervals; branching (also the BaBSR
  fallback where that score is zero everywhere) by `|d objective / d relu_j| * (-l u / (u - l))`.
  A domain without unstable neurons left halves its widest input instead.

Falsification is a hook (`Falsifier`): every bounded batch may carry candidate points (box
centres and the vertex the domain's linearisation says is lowest for input splitting; per domain,
the input corner minimising its worst row's linear bound for beta-CROWN, where mnist_fc prop_2's
counterexample lies), and between steps PGD runs, seeded inside the open domains with the
lowest margins or from those corners, at most a quarter of the time.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..bounds import available_memory
from ..core import processes
from ._attack import attack, attack_arrays, attack_domains, batch_objective, confirm
from ._bounder import (
    input_split_bounder,
    memory_plan,
    pad_batch,
    relu_split_bounder,
)
from ._spec import Group, f32_inward, f32_outward

# Batch of the small compiled beta-CROWN program (see `BetaSplit`), and the most memory a batch's
# beta-CROWN parameters may take (larger networks split with plain bounds).
BETA_SMALL_BATCH = 16
BETA_MAX_BATCH_BYTES = 1 << 30
# Per domain at most this many beta-CROWN parameters (rows x ReLUs): on the verivital max-pooling
# CNN (16 x 40,608) one optimisation step of 16 domains took 3.5 s, a CROWN bound of 256 domains
# well under one; the mnist_fc MLPs have 16 x 512.
BETA_MAX_PARAMS = 1 << 17
# Every corner of a case box is tried as a candidate up to this many inputs (2^12 points).
MAX_CORNER_INPUTS = 12


@dataclasses.dataclass
class SearchOptions:
    """Search settings (see `tljax.verify` for their meaning)."""

    method: str = "crown"
    batch_size: int = 256
    split: str = "auto"
    branching: str = "unstable"
    attack: bool = True
    alpha: bool | str = "auto"
    max_depth: int = 200
    seed: int = 0
    # input splitting halves one coordinate per split: past a few inputs ReLU splitting wins (a
    # 25-input CNN: 1.6 s by ReLU splits, 25 s by input splits; bench/resnet_ref.py)
    relu_split_inputs: int = 16
    beta: bool | str = "auto"
    beta_iters: int = 10
    beta_root_iters: int = 50
    semantics: str = "float32"
    memory_budget: int | None = None


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


class Stuck(Exception):
    """A domain cannot be split any further (the message says why)."""


# --- domains and the loop ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Domains:
    """A batch of domains, one row each (a pytree of numpy arrays).

    Attributes:
      lo, hi: (N, n) float64 boxes over the flattened input.
      case: (N,) index into `group.boxes`.
      splits: (N, s) int8 ReLU split constraints (+1 active, -1 inactive, 0 free; s = 0 for
        input splitting).
      depth: (N,) number of splits from the case box.
      warm: per-domain strategy arrays the children inherit (beta-CROWN's slopes and
        multipliers).
      margin: (N,) certified margins, once bounded.
      branch: (N,) branching decision, once bounded: a neuron index >= 0, or -(j + 1) to halve
        input coordinate j.
    """

    lo: np.ndarray
    hi: np.ndarray
    case: np.ndarray
    splits: np.ndarray
    depth: np.ndarray
    warm: tuple = ()
    margin: np.ndarray | None = None
    branch: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.case.shape[0])

    def map(self, f) -> Domains:
        return jax.tree_util.tree_map(f, self)

    @staticmethod
    def concat(parts: list[Domains]) -> Domains:
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)

    def children(self) -> Domains:
        """The two children of each domain, stacked (all first children, then all second):
        ReLU `branch >= 0` split active / inactive, or input coordinate `-branch - 1` halved."""
        rows = np.arange(len(self))
        a_lo, a_hi, a_sp = self.lo.copy(), self.hi.copy(), self.splits.copy()
        b_lo, b_hi, b_sp = self.lo.copy(), self.hi.copy(), self.splits.copy()
        br = self.branch
        neuron = br >= 0
        a_sp[rows[neuron], br[neuron]] = 1
        b_sp[rows[neuron], br[neuron]] = -1
        r, j = rows[~neuron], -br[~neuron] - 1
        mid = 0.5 * (self.lo[r, j] + self.hi[r, j])
        a_hi[r, j] = mid
        b_lo[r, j] = mid
        two = np.concatenate
        return Domains(
            two([a_lo, b_lo]),
            two([a_hi, b_hi]),
            two([self.case, self.case]),
            two([a_sp, b_sp]),
            two([self.depth, self.depth]) + 1,
            tuple(two([w, w]) for w in self.warm),
        )


jax.tree_util.register_dataclass(
    Domains,
    data_fields=["lo", "hi", "case", "splits", "depth", "warm", "margin", "branch"],
    meta_fields=[],
)


@dataclasses.dataclass(frozen=True)
class Bounded:
    """What a strategy computed for a batch of domains.

    Attributes:
      lower: (N, R) certified lower bounds of the group's spec rows.
      info: per-domain arrays the strategy's `branch` reads.
      warm: per-domain arrays the children start from.
      witness: stored with the leaves (beta-CROWN parameters), or None.
      probe: candidate counterexamples `(points (N, n) float32, float objectives (N,))` or None.
    """

    lower: np.ndarray
    info: tuple = ()
    warm: tuple = ()
    witness: tuple | None = None
    probe: tuple | None = None


class State(NamedTuple):
    """The search state of one group.

    open: bounded, unverified domains; a stack whose last rows are popped first.
    leaves: closed batches `(cases, lo, hi, splits, lower, method, witness)` (`LeafSet.add`).
    verdict: None while domains are open, then "unsat" or "unknown" (`note` says why).
    """

    open: Domains
    leaves: tuple = ()
    verdict: str | None = None
    note: str = ""


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err)


def _bound(strategy, dom: Domains, *, root: bool):
    """Bounds `dom` in chunks; returns (open domains, margins and decisions set, leaf batches)."""
    group, hook = strategy.group, strategy.hook
    keep, leaves = [], []
    for s in range(0, len(dom), strategy.chunk):
        part = dom.map(lambda a, s=s: a[s : s + strategy.chunk])
        try:
            b = strategy.bound(part, root=root)
        except Exception as err:  # only out-of-memory is turned into a verdict
            if not _out_of_memory(err):
                raise
            mem = getattr(strategy.search, "mem", {})
            raise Stuck(
                f"out of memory bounding {len(part)} domains (batch {strategy.chunk}): "
                f"{str(err).splitlines()[0][:200]}; the widest CROWN pass starts at "
                f"{mem.get('widest', '?')}; pass a smaller memory_budget= or batch_size="
            ) from err
        hook.probed(group, part, b)
        margin = group.margins(b.lower)
        ok = margin > 0
        if np.any(ok):
            witness = None if b.witness is None else tuple(w[ok] for w in b.witness)
            cases = np.asarray(group.cases)[part.case[ok]]
            leaves.append(
                (
                    cases,
                    part.lo[ok],
                    part.hi[ok],
                    part.splits[ok],
                    b.lower[ok],
                    strategy.name,
                    witness,
                )
            )
            strategy.closed(part.map(lambda a, ok=ok: a[ok]))
        bad = ~ok
        if np.any(bad):
            sub = part.map(lambda a, bad=bad: a[bad])
            info = tuple(a[bad] for a in b.info)
            sub = dataclasses.replace(sub, warm=tuple(w[bad] for w in b.warm), margin=margin[bad])
            keep.append(dataclasses.replace(sub, branch=strategy.branch(sub, b.lower[bad], info)))
    return (Domains.concat(keep) if keep else None), tuple(leaves)


def _by_margin(dom: Domains) -> Domains:
    """Highest margin first: the lowest end on top of the stack."""
    order = np.argsort(-dom.margin, kind="stable")
    return dom.map(lambda a: a[order])


def init(strategy, roots: Domains, *, alpha: bool = True) -> State:
    """Bounds the case boxes (then, with `alpha`, `refine_roots`)."""
    try:
        dom, leaves = _bound(strategy, roots, root=True)
    except Stuck as why:
        return State(roots, (), "unknown", str(why))
    if dom is None:
        return State(roots.map(lambda a: a[:0]), leaves, "unsat")
    state = State(_by_margin(dom), leaves)
    return refine_roots(strategy, state) if alpha else state


def refine_roots(strategy, state: State) -> State:
    """alpha-CROWN on the open case boxes, where the strategy asks for it."""
    if state.verdict is not None or not strategy.alpha_roots:
        return state
    try:
        dom, more = strategy.search.alpha_roots(strategy.group, state.open)
    except Stuck as why:
        return state._replace(verdict="unknown", note=str(why))
    leaves = state.leaves + more
    if dom is None:
        return State(state.open.map(lambda a: a[:0]), leaves, "unsat")
    return State(_by_margin(dom), leaves)


def step(strategy, state: State) -> State:
    """Pops a batch, bounds its children, closes the verified ones, pushes the others."""
    top_k = strategy.pop(len(state.open))
    top = state.open.map(lambda a: a[len(state.open) - top_k :])
    rest = state.open.map(lambda a: a[: len(state.open) - top_k])
    max_depth = strategy.search.opts.max_depth
    if np.any(top.depth >= max_depth):
        return state._replace(
            verdict="unknown", note=f"a domain reached the maximum split depth {max_depth}"
        )
    stats = strategy.search.stats
    if top.splits.shape[1]:
        stats["input_splits"] = stats.get("input_splits", 0) + int(np.sum(top.branch < 0))
    try:
        kids, leaves = _bound(strategy, top.children(), root=False)
    except Stuck as why:
        return state._replace(verdict="unknown", note=str(why))
    stats["max_depth"] = max(stats.get("max_depth", 0), int(top.depth.max()) + 1)
    opened = rest if kids is None else Domains.concat([rest, _by_margin(kids)])
    return State(opened, state.leaves + leaves, None if len(opened) else "unsat")


# --- strategies ----------------------------------------------------------------------------------


class _Strategy:
    """Shared parts: the search context, the group, leaf tag, chunk (compiled batch) and hook."""

    alpha_roots = False

    def __init__(self, search, group: Group, name: str, hook):
        self.search, self.group, self.name, self.hook = search, group, name, hook
        self.chunk = search.mem["batch"]
        self.limit = search.mem["refine_limit"]
        # compiled batch sizes: one, or a small one too while few domains are open
        self.sizes = [self.chunk]
        self.root_w = np.stack([np.where(hi > lo, hi - lo, 1.0) for lo, hi in group.boxes])

    def roots(self, n_splits: int = 0) -> Domains:
        k = len(self.group.boxes)
        return Domains(
            np.stack([b[0] for b in self.group.boxes]),
            np.stack([b[1] for b in self.group.boxes]),
            np.arange(k),
            np.zeros((k, n_splits), np.int8),
            np.zeros(k, np.int64),
            self.warm_roots(k),
        )

    def warm_roots(self, k: int) -> tuple:
        return ()

    def pop(self, n_open: int) -> int:
        # the large batch only once enough domains are open (no large compile for easy cases)
        size = self.sizes[-1] if n_open >= self.sizes[-1] // 4 else self.sizes[0]
        return min(n_open, size // 2)

    def size_for(self, m: int) -> int:
        """The compiled batch that `m` domains are padded to."""
        return next((z for z in self.sizes if z >= m), self.sizes[-1])

    def closed(self, dom: Domains) -> None:
        pass

    def count(self, m: int) -> None:
        stats = self.search.stats
        stats["domains"] = stats.get("domains", 0) + m
        stats["batches"] = stats.get("batches", 0) + 1


class InputSplit(_Strategy):
    """Sub-boxes bounded by `method`; branching by `opts.branching` (module docstring)."""

    def __init__(self, search, group: Group):
        opts = search.opts
        super().__init__(search, group, opts.method, Falsifier(search, "domains"))
        self.alpha_roots = opts.alpha is True
        self.spread = opts.branching == "unstable"
        self.arrays = attack_arrays(group)
        self.bounder = self._bounder(self.spread)
        self.objective = batch_objective(search.fn, search.shape)

    def _bounder(self, spread: bool):
        s = self.search
        return input_split_bounder(
            s.fn,
            s.shape,
            method=s.opts.method,
            batch=self.chunk,
            rows=self.group.spec.shape[0],
            n_args=len(s.args),
            spread=spread,
            refine_limit=self.limit,
        )

    def bound(self, dom: Domains, *, root: bool) -> Bounded:
        s, m = self.search, len(dom)
        lo32, hi32 = pad_batch(self.chunk, *f32_outward(dom.lo, dom.hi))
        call = (jnp.asarray(lo32), jnp.asarray(hi32), *self.arrays, s.args)
        try:
            out = self.bounder(*call)
        except Exception as err:  # the spread score needs the taps; without, "objective"
            if not self.spread or isinstance(err, processes.PeerLostError):
                raise
            self.spread = False
            s.stats["spread"] = "off"
            s.notes.append(
                f"branching 'unstable' unavailable ({type(err).__name__}): using 'objective'"
            )
            self.bounder = self._bounder(False)
            out = self.bounder(*call)
        lower, v, jac, rows_c, spread = (np.asarray(a)[:m] for a in out)
        self.count(m)
        # candidates: the box centres (evaluated by the bound program) and, below the roots
        # (whose corners `Search.try_corners` tried), the vertices the linearisation puts lowest
        probe = ((0.5 * (dom.lo + dom.hi), v),)
        if not root:
            vx = self._low_vertex(dom, jac, rows_c).astype(np.float32)
            (xp,) = pad_batch(self.chunk, vx)
            vv = np.asarray(self.objective(jnp.asarray(xp), *self.arrays, s.args))[:m]
            probe += ((vx, np.where(np.isnan(vv), np.inf, vv)),)
        return Bounded(lower, (jac, rows_c, spread), probe=probe)

    def _low_vertex(self, dom, jac, rows_c):
        """Per box, the vertex where the deciding row's linearisation at the centre is lowest."""
        s = np.nan_to_num(rows_c.astype(np.float64) - self.group.d[None, :], nan=-np.inf)
        per = np.where(self.group.masks()[None], s[:, None, :], -np.inf)
        k = np.argmin(per.max(axis=2), axis=1)
        row = np.argmax(per[np.arange(len(k)), k], axis=1)
        g = jac[np.arange(len(row)), row]
        return np.where(g > 0, dom.lo, dom.hi)

    def branch(self, dom: Domains, lower, info) -> np.ndarray:
        jac, rows_c, spread = info
        lo, hi = dom.lo, dom.hi
        width = hi - lo
        rel = width / self.root_w[dom.case]
        branching = self.search.opts.branching
        if branching == "unstable" and self.spread:
            # width x spread of the likely unstable ReLUs; where none is likely unstable (the
            # domain is nearly linear) the objective row's gradient decides
            score = np.nan_to_num(spread.astype(np.float64), nan=0.0, posinf=0.0)
            dims = np.argmax(score, axis=1)
            flat = ~np.any(score > 0, axis=1)
            if np.any(flat):
                alt = self._objective_dims(width, rel, jac, rows_c, lower, "objective")
                dims = np.where(flat, alt, dims)
        elif branching in ("gradient", "objective", "unstable"):
            b = "gradient" if branching == "gradient" else "objective"
            dims = self._objective_dims(width, rel, jac, rows_c, lower, b)
        else:
            dims = np.argmax(rel, axis=1)
        # a coordinate that cannot be halved any more at float64 resolution is not chosen
        mid = 0.5 * (lo + hi)
        ok = (mid > lo) & (mid < hi)
        stuck = ~ok[np.arange(len(dims)), dims]
        if np.any(stuck):
            if not np.all(np.any(ok, axis=1)):
                raise Stuck("a domain cannot be split further at float64 resolution")
            dims = np.where(stuck, np.argmax(np.where(ok, rel, -1.0), axis=1), dims)
        return -(dims + 1)

    def _objective_dims(self, width, rel, jac, rows_c, lower, branching):
        # "gradient": the row closest to proving its disjunct (by its bound), in the disjunct
        # hardest to prove; "objective": the same by the centre's float values
        vals = lower if branching == "gradient" else rows_c
        s = np.nan_to_num(vals.astype(np.float64) - self.group.d[None, :], nan=-np.inf)
        per = np.where(self.group.masks()[None], s[:, None, :], -np.inf)  # (B, K, R)
        k = np.argmin(per.max(axis=2), axis=1)
        row = np.argmax(per[np.arange(len(k)), k], axis=1)
        grad = jac[np.arange(len(row)), row]
        score = width * np.abs(np.nan_to_num(grad.astype(np.float64)))
        flat = ~np.any(score > 0, axis=1)
        return np.where(flat, np.argmax(rel, axis=1), np.argmax(score, axis=1))

    def closed(self, dom: Domains) -> None:
        vol = np.prod(np.where(dom.hi > dom.lo, dom.hi - dom.lo, 1.0) / self.root_w[dom.case], 1)
        stats = self.search.stats
        stats["verified_volume"] = stats.get("verified_volume", 0.0) + float(np.sum(vol))


class ReluSplit(_Strategy):
    """Split domains bounded by `method` from scratch (splits clip the ReLU input intervals)."""

    def __init__(self, search, group: Group, relu):
        super().__init__(search, group, search.opts.method, Falsifier(search, None))
        opts = search.opts
        self.relu = relu
        self.alpha_roots = opts.alpha in (True, "auto")
        # a small compiled batch while few domains are open (the roots: one domain)
        self.sizes = sorted({min(BETA_SMALL_BATCH, self.chunk), self.chunk})

    def _bounder(self, size: int):
        s = self.search
        return relu_split_bounder(
            s.fn,
            s.shape,
            self.relu.shapes,
            method=s.opts.method,
            batch=size,
            rows=self.group.spec.shape[0],
            n_args=len(s.args),
            taps=self.relu.taps,
            refine_limit=self.limit,
        )

    def roots(self, n_splits: int = 0) -> Domains:
        return super().roots(self.relu.total)

    def bound(self, dom: Domains, *, root: bool) -> Bounded:
        del root
        s, m = self.search, len(dom)
        size = self.size_for(m)
        lo32, hi32, sp = pad_batch(size, *f32_outward(dom.lo, dom.hi), dom.splits)
        lower, plo, phi = self._bounder(size)(
            jnp.asarray(lo32),
            jnp.asarray(hi32),
            jnp.asarray(sp, jnp.int8),
            jnp.asarray(self.group.spec),
            s.args,
        )
        self.count(m)
        plo, phi = (np.asarray(a)[:m].astype(np.float64) for a in (plo, phi))
        return Bounded(np.asarray(lower)[:m], (plo, phi))

    def branch(self, dom: Domains, lower, info) -> np.ndarray:
        plo, phi = info
        return self.relu.choose(dom, plo, phi, None, known=self.relu.taps is not None)


class BetaSplit(_Strategy):
    """Split domains bounded by beta-CROWN, warm-started from their parents.

    Each case box gets its ReLU input bounds once (`relu_root_bounder`: CROWN, then alpha-CROWN
    on them); every domain of that case reuses them, clipped by its splits, and optimises its
    output bound over the lower slopes and the split multipliers. A verified domain becomes a
    leaf with its parameters as witness (they reproduce its bounds exactly:
    `SearchCertificate.check(rebound=True)`).
    """

    def __init__(self, search, group: Group, relu):
        from ._bounder import relu_root_bounder

        super().__init__(search, group, "beta-crown", Falsifier(search, "seeds"))
        self.relu = relu
        self.rows = group.spec.shape[0]
        self.spec = jnp.asarray(group.spec)
        # two compiled batch sizes (the large one only compiled once enough domains are open):
        # a beta-CROWN domain costs ~100x an input-split one, and hard instances often need only
        # tens of domains
        self.sizes = sorted({min(BETA_SMALL_BATCH, self.chunk), self.chunk})
        root = relu_root_bounder(
            search.fn, search.shape, relu.shapes, rows=self.rows, n_args=len(search.args),
            refine_limit=self.limit,
        )  # fmt: skip
        rb = []
        for blo, bhi in group.boxes:
            search.check_time()
            lo32, hi32 = f32_outward(blo, bhi)
            rlo, rhi = root(jnp.asarray(lo32), jnp.asarray(hi32), self.spec, search.args)
            rb.append((np.asarray(rlo, np.float32), np.asarray(rhi, np.float32)))
        self.rb_lo = np.stack([r[0] for r in rb])
        self.rb_hi = np.stack([r[1] for r in rb])
        self.objective = batch_objective(search.fn, search.shape)
        self.arrays = attack_arrays(group)
        self.inner = np.stack([np.stack(f32_inward(*b)) for b in group.boxes])  # (cases, 2, n)

    def roots(self, n_splits: int = 0) -> Domains:
        return super().roots(self.relu.total)

    def warm_roots(self, k: int) -> tuple:
        shape = (k, self.rows, self.relu.total)
        return np.full(shape, np.nan, np.float16), np.zeros(shape, np.float16)

    def bound(self, dom: Domains, *, root: bool) -> Bounded:
        from ._bounder import beta_bounder

        s, m, opts = self.search, len(dom), self.search.opts
        size = self.size_for(m)
        bounder = beta_bounder(
            s.fn, s.shape, self.relu.shapes, batch=size, rows=self.rows, n_args=len(s.args),
            refine_limit=self.limit,
        )  # fmt: skip
        alpha, beta = dom.warm
        args = pad_batch(
            size, *f32_outward(dom.lo, dom.hi), dom.splits, self.rb_lo[dom.case],
            self.rb_hi[dom.case], alpha, beta,
        )  # fmt: skip
        dtypes = (None, None, jnp.int8, None, None, jnp.float32, jnp.float32)
        iters = opts.beta_root_iters if root else opts.beta_iters
        out = bounder(
            *(jnp.asarray(a, t) for a, t in zip(args, dtypes, strict=True)),
            jnp.asarray(iters, jnp.int32),
            self.spec,
            s.args,
        )
        lower, a, b, ulo, uhi, sc, corners = (np.asarray(v)[:m] for v in out)
        self.count(m)
        probe = self._corners(dom, lower, corners, size) if opts.attack else None
        # the parameters are float16 numbers (split_bound keeps them so): stored exactly
        a, b = a.astype(np.float16), b.astype(np.float16)
        info = (ulo.astype(np.float64), uhi.astype(np.float64), self._scores(lower, sc))
        return Bounded(lower, info, warm=(a, b), witness=(a, b), probe=probe)

    def _corners(self, dom, lower, corners, size):
        """Per domain, the input corner minimising the linear bound of its worst open row (a
        counterexample where the bound is tight), with its float objective and that bound."""
        s = np.asarray(lower, np.float64) - self.group.d[None, :]
        s = np.where(self.group.owner[None, :] >= 0, s, np.inf)
        row = np.argmin(s, axis=1)
        x = corners[np.arange(len(row)), row].astype(np.float32)
        # the bound's box is rounded outward: the corner into the case box's float32 points
        x = np.clip(x, self.inner[dom.case, 0], self.inner[dom.case, 1])
        (xp,) = pad_batch(size, x)
        v = np.asarray(self.objective(jnp.asarray(xp), *self.arrays, self.search.args))
        v = np.where(np.isnan(v[: len(x)]), np.inf, v[: len(x)])
        return x, v, s[np.arange(len(row)), row]

    def _scores(self, lower, scores):
        """Per domain and neuron: the BaBSR scores (B, R, s) summed over the rows of the
        disjuncts its bounds do not rule out yet."""
        s = np.asarray(lower, np.float64) - self.group.d[None, :]
        masks = self.group.masks()  # (K, R)
        per = np.where(masks[None], s[:, None, :], -np.inf).max(axis=2)  # (B, K)
        w = ((~(per > 0))[:, :, None] & masks[None]).any(axis=1).astype(np.float64)  # (B, R)
        sc = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0, posinf=0.0)
        return np.einsum("br,brs->bs", w, sc)

    def branch(self, dom: Domains, lower, info) -> np.ndarray:
        plo, phi, bscore = info
        return self.relu.choose(dom, plo, phi, bscore, known=True)


@dataclasses.dataclass
class ReluLayout:
    """The ReLUs of a network for splitting: shapes, taps, and per case the margin's
    sensitivity to each ReLU output at the box centre."""

    shapes: list
    taps: object
    sens: np.ndarray
    root_w: np.ndarray

    @property
    def total(self) -> int:
        return int(self.sens.shape[1])

    def choose(self, dom: Domains, plo, phi, bscore, *, known: bool) -> np.ndarray:
        """Per domain: a neuron index >= 0, or -(j + 1) to halve input j (no unstable neuron
        left: the domain is linear in the input and its box keeps the bound loose).

        The score is BaBSR's (`bscore`) where it is positive somewhere, else the margin's
        sensitivity at the case centre times the relaxation gap (1 without taps). `known`: the
        ReLU input bounds `plo`, `phi` are real (else every free neuron counts as unstable)."""
        free = dom.splits == 0
        unstable = free & (plo < 0) & (phi > 0) if known else free
        if self.taps is not None:
            gap = np.where(unstable, -plo * phi / np.maximum(phi - plo, 1e-30), 0.0)
        else:
            gap = np.ones_like(plo, dtype=np.float64)
        score = np.where(unstable, self.sens[dom.case] * gap, -1.0)
        if bscore is not None:
            primary = np.where(unstable, bscore, 0.0)
            has = np.any(primary > 0, axis=1, keepdims=True)
            score = np.where(has, np.where(unstable, primary, -1.0), score)
        k = np.argmax(score, axis=1)
        none = score[np.arange(len(k)), k] < 0
        rel = (dom.hi - dom.lo) / self.root_w[dom.case]
        mid = 0.5 * (dom.lo + dom.hi)
        rel = np.where((mid > dom.lo) & (mid < dom.hi), rel, -1.0)
        j = np.argmax(rel, axis=1)
        if np.any(none & (rel[np.arange(len(j)), j] < 0)):
            raise Stuck(
                "a domain can be split no further (no unstable ReLU, box at float64 resolution)"
            )
        return np.where(none, -(j + 1), k)


def relu_layout(search, group: Group) -> ReluLayout | None:
    """Shapes, taps and sensitivities of the ReLUs (None when the network has none)."""
    from ..bounds import Box, relu_shapes
    from ._taps import Taps

    lo0, hi0 = f32_outward(*group.boxes[0])
    shape = search.shape
    box = Box(jnp.asarray(lo0).reshape(shape), jnp.asarray(hi0).reshape(shape))
    shapes = relu_shapes(search.fn, box, *search.args)
    if not shapes:
        return None
    sizes = [int(np.prod(s)) for s in shapes]
    taps = Taps(search.fn, shape)
    if not taps.matches(shapes, search.args):
        search.notes.append(
            "ReLU taps do not match the bound tape: neurons scored without intermediate bounds"
        )
        taps = None
    s_, dv, mask, real = attack_arrays(group)

    def objective(y):
        v = s_ @ y.astype(s_.dtype) - dv
        per = jnp.max(jnp.where(mask, v[None, :], -jnp.inf), axis=1)
        return jnp.min(jnp.where(real, per, jnp.inf))

    sens = []
    for blo, bhi in group.boxes:
        if taps is None:
            sens.append(np.ones(sum(sizes)))
            continue
        centre = jnp.asarray(0.5 * (blo + bhi), jnp.float32)
        w = taps.sensitivity(objective, centre, search.args, sizes)
        sens.append(np.where(np.isfinite(w), w, 0.0) + 1e-12)
    root_w = np.stack([np.where(hi > lo, hi - lo, 1.0) for lo, hi in group.boxes])
    return ReluLayout(shapes, taps, np.stack(sens), root_w)


# --- falsification hook --------------------------------------------------------------------------


class Falsifier:
    """Counterexample search during branch and bound.

    `probed` tries a bounded batch's candidate points; `between` (called before every step) runs
    PGD at most a quarter of the time (and not within 2 s of the last run): seeded inside the
    open domains with the lowest margins ("domains") or from the lowest corners seen ("seeds").
    """

    def __init__(self, search, mode: str | None):
        self.search, self.mode = search, mode
        self.seeds: tuple | None = None
        self.next = time.monotonic()

    def start(self) -> None:
        if self.mode == "domains":
            self.next = time.monotonic() + 2.0

    def probed(self, group: Group, dom: Domains, b: Bounded) -> None:
        if b.probe is None:
            return
        s = self.search
        if self.mode != "seeds":  # box centres and linearised vertices, always tried
            for points, vals in b.probe:
                if np.any(vals <= 0):
                    s.try_candidates(group, points, vals, limit=2)
            return
        x, v, rank = b.probe
        s.stats["attack_best"] = min(s.stats.get("attack_best", np.inf), float(v.min()))
        if np.any(v <= 0):
            s.try_candidates(group, x, v)
        keep = np.argsort(rank, kind="stable")[:BETA_SMALL_BATCH]
        if self.seeds is None:
            self.seeds = (x[keep], dom.case[keep])
        else:
            self.seeds = tuple(
                np.concatenate([new[keep], old])[:256]
                for new, old in zip((x, dom.case), self.seeds, strict=True)
            )

    def between(self, group: Group, state: State) -> None:
        s = self.search
        if not s.opts.attack or self.mode is None:
            return
        # the clocks of several processes differ: the first one due starts the run for all
        (due,) = processes.agree_any(time.monotonic() >= self.next, what="the falsifier schedule")
        if not due:
            return
        if (self.mode == "seeds" and self.seeds is None) or not len(state.open):
            return
        s.check_time()
        t0 = time.monotonic()
        if self.mode == "domains":
            s.falsify_domains(group, state.open.lo, state.open.hi, state.open.margin)
        else:
            x, c = self.seeds
            lo = np.stack([group.boxes[k][0] for k in c])
            hi = np.stack([group.boxes[k][1] for k in c])
            xs, vals = attack_domains(
                s.fn, s.args, group, lo, hi, s.shape, key=s.next_key(), starts=x
            )
            s.stats["domain_attacks"] = s.stats.get("domain_attacks", 0) + 1
            if vals.size:
                s.stats["attack_best"] = min(s.stats.get("attack_best", np.inf), float(vals[0]))
            s.try_candidates(group, xs, vals)
            self.seeds = None
        self.next = time.monotonic() + max(2.0, 3.0 * (time.monotonic() - t0))


# --- the search ----------------------------------------------------------------------------------


class Search:
    """One verification run over all groups of a property: the context the strategies share
    (network, options, deadline, PRNG key, statistics, notes, progress bar)."""

    def __init__(
        self,
        fn,
        args,
        prop,
        shape,
        opts: SearchOptions,
        deadline: float,
        bar,
        stats: dict,
        notes: list,
    ):
        self.fn, self.args, self.prop, self.shape = fn, tuple(args), prop, tuple(shape)
        self.opts, self.deadline, self.bar = opts, deadline, bar
        self.stats, self.notes = stats, notes
        self.key = jax.random.PRNGKey(opts.seed)
        self.rejected = 0
        self.seen: set[bytes] = set()
        self.start = time.monotonic()
        self.best = -np.inf
        # Under jax.distributed every process runs this search in lockstep on the same host
        # state; the few local inputs (clocks, falsifier finds) go through `processes`.
        self.group = processes.group_size()
        self.index = processes.index()

    def check_time(self):
        late = self.deadline - time.monotonic() <= 0
        if self.group > 1:  # the first process out of time stops all of them
            (late,) = processes.agree_any(late, what="the timeout check")
        if late:
            raise Outcome("timeout")

    def next_key(self):
        self.key, k = jax.random.split(self.key)
        # each process attacks from its own starts (process 0 from the single-process ones)
        return jax.random.fold_in(k, self.index) if self.index else k

    def report(self, n_open: int, n_closed: int, best: float):
        self.best = best
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"open {n_open}, closed {n_closed}, best margin {best:.4g}", refresh=False
            )
            self.bar.update(1)

    def try_candidates(self, group: Group, xs, vals, limit=3, slack=0.0):
        """Confirms up to `limit` candidates with objective <= `slack`; raises Outcome("sat").

        With several processes, a counterexample confirmed on any of them is sent to all (the
        lowest process index wins), so all stop with the same one."""
        found = None
        try:
            self._try_candidates(group, xs, vals, limit, slack)
        except Outcome as out:
            found = out
        if self.group > 1 and processes.agree_any(found is not None, what="the falsifier")[0]:
            cex = None if found is None else found.counterexample
            cexs = processes.allgather_objects(cex, what="the counterexample")
            found = Outcome("sat", next(c for c in cexs if c is not None))
        if found is not None:
            raise found

    def _try_candidates(self, group: Group, xs, vals, limit, slack):
        xs = np.asarray(xs)
        vals = np.asarray(vals)
        for i in np.argsort(vals, kind="stable")[:limit]:
            if not vals[i] <= slack:
                break
            key = np.asarray(xs[i], np.float32).tobytes()
            if key in self.seen:  # already rejected: an exact re-evaluation would say the same
                continue
            self.seen.add(key)
            res = confirm(
                self.fn, self.args, self.prop, xs[i], self.shape,
                cases=list(group.cases), semantics=self.opts.semantics,
            )  # fmt: skip
            if res.counterexample is not None:
                raise Outcome("sat", res.counterexample)
            self.rejected += 1
            if len(self.notes) < 20:
                self.notes.append(f"candidate rejected on re-execution: {res.reason}")

    def falsify(self, group: Group, case_box, pgd: bool = True):
        """The box's corners, random samples and (`pgd`) the gradient attack; raises
        Outcome("sat") on a confirmed counterexample."""
        if not self.opts.attack:
            return
        self.check_time()
        self.try_corners(group, case_box)
        # one attack size everywhere: one compile per network
        xs, vals = attack(
            self.fn, self.args, group, *case_box, self.shape, key=self.next_key(), pgd=pgd
        )
        self.stats["attack_best"] = min(
            self.stats.get("attack_best", np.inf), float(vals[0]) if vals.size else np.inf
        )
        self.try_candidates(group, xs, vals)

    def try_corners(self, group: Group, case_box):
        """The vertices of a case box with at most `MAX_CORNER_INPUTS` non-degenerate edges (a
        violation exactly at a corner is where random starts and PGD steps rarely land), the
        lowest few re-checked exactly even when their float objective is barely positive."""
        lo32, hi32 = f32_inward(*case_box)
        free = np.flatnonzero(hi32 > lo32)
        if np.any(lo32 > hi32) or free.size > MAX_CORNER_INPUTS:
            return
        n = 16384  # the attack's sample count: the same compiled objective
        bits = np.asarray(list(itertools.product((0, 1), repeat=free.size)), bool)
        xs = np.repeat(lo32[None], max(len(bits), 1), 0)
        xs[:, free] = np.where(bits, hi32[free], lo32[free])
        (xp,) = pad_batch(n, xs)
        v = batch_objective(self.fn, self.shape)(jnp.asarray(xp), *attack_arrays(group), self.args)
        v = np.asarray(v)[: len(xs)]
        v = np.where(np.isnan(v), np.inf, v)
        # float rounding can hide an exact violation at a vertex: the lowest few go to `confirm`
        slack = 1e-5 * (1.0 + float(np.max(np.abs(group.d), initial=0.0)))
        self.try_candidates(group, xs, v, limit=3, slack=slack)

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

    def alpha_roots(self, group: Group, dom: Domains):
        """alpha-CROWN on unverified case boxes: (the domains it could not verify, leaves)."""
        if self.opts.method == "alpha-crown":
            return dom, ()
        from ._bounder import single_bound

        left = np.ones(len(dom), bool)
        leaves = []
        for i in range(len(dom)):
            self.check_time()
            lo32, hi32 = f32_outward(dom.lo[i], dom.hi[i])
            lower = np.asarray(
                single_bound(
                    self.fn, lo32, hi32, self.shape, jnp.asarray(group.spec), self.args,
                    method="alpha-crown", refine_limit=self.mem["refine_limit"],
                )
            )  # fmt: skip
            self.stats["alpha_roots"] = self.stats.get("alpha_roots", 0) + 1
            if group.margins(lower[None, :])[0] > 0:
                case = np.asarray(group.cases)[[dom.case[i]]]
                leaves.append(
                    (case, dom.lo[i][None], dom.hi[i][None], dom.splits[i][None], lower[None],
                     "alpha-crown", None)
                )  # fmt: skip
                left[i] = False
        return (dom.map(lambda a: a[left]) if left.any() else None), tuple(leaves)

    def plan_memory(self, group: Group) -> dict:
        """`memory_plan` for `group` within `opts.memory_budget` (default: half the memory
        available now); its note, if any, goes to the result's notes."""
        opts = self.opts
        budget = opts.memory_budget
        if budget is None:
            budget = available_memory() // 2
        if self.group > 1:  # one plan for every process: the smallest memory decides
            budget = min(processes.allgather_objects(int(budget), what="the memory budget"))
        mem = memory_plan(
            self.fn, self.shape, f32_outward(*group.boxes[0]), group.spec, self.args,
            batch=opts.batch_size, budget=int(budget),
        )  # fmt: skip
        if mem["note"]:
            self.notes.append(mem["note"])
        self.stats["batch_size"] = mem["batch"]
        return mem

    def strategy(self, group: Group):
        """The bounding and branching strategy for `group` (module docstring)."""
        opts = self.opts
        self.mem = self.plan_memory(group)
        relu = opts.split == "relu" or (
            opts.split == "auto" and group.boxes[0][0].size > opts.relu_split_inputs
        )
        if not relu:
            return InputSplit(self, group)
        layout = relu_layout(self, group)
        if layout is None:
            self.notes.append("no ReLU to split: falling back to input splitting")
            return InputSplit(self, group)
        if opts.beta is True or (opts.beta == "auto" and opts.method != "ibp"):
            # per domain, slopes and multipliers for every (row, neuron): (alpha, beta) in float32
            # for a batch must stay well below the memory
            rows = group.spec.shape[0]
            fit = BETA_MAX_BATCH_BYTES // (8 * rows * layout.total)
            if rows * layout.total > BETA_MAX_PARAMS:
                self.notes.append(
                    f"beta-CROWN off: {rows} rows x {layout.total} ReLUs of parameters per domain "
                    f"(more than {BETA_MAX_PARAMS:,}); domains bounded by {opts.method}"
                )
                return ReluSplit(self, group, layout)
            if fit >= min(BETA_SMALL_BATCH, self.mem["batch"]):
                if fit < self.mem["batch"]:  # a smaller batch rather than no beta-CROWN
                    self.mem["batch"] = 1 << (int(fit).bit_length() - 1)
                    self.stats["batch_size"] = self.mem["batch"]
                    self.notes.append(
                        f"beta-CROWN batch {self.mem['batch']}: {rows} rows x {layout.total} "
                        f"ReLUs of parameters per domain"
                    )
                return BetaSplit(self, group, layout)
            self.notes.append(
                f"beta-CROWN off: {rows} rows x {layout.total} ReLUs x batch {self.mem['batch']} "
                f"parameters exceed {BETA_MAX_BATCH_BYTES >> 20} MiB; domains bounded by "
                f"{opts.method}"
            )
        return ReluSplit(self, group, layout)

    def begin_group(self, group: Group) -> tuple:
        """`(strategy, state)`: the group's strategy and its case boxes bounded (`init`; the
        strategy's alpha-CROWN of the roots waits for `run_group`, after the attack)."""
        strategy = self.strategy(group)
        return strategy, init(strategy, strategy.roots(), alpha=False)

    def attack_open(self, group: Group, state: State) -> None:
        """The gradient attack on the case boxes the root bounds left open (every box when the
        roots could not be bounded)."""
        if state.verdict == "unsat":
            return
        cases = range(len(group.boxes)) if state.verdict else np.unique(state.open.case)
        for c in cases:
            self.falsify(group, group.boxes[int(c)])

    def run_group(self, group: Group, leaves: LeafSet, begun: tuple) -> str:
        """Verifies one group from `begun = begin_group(group)` (its open boxes attacked by
        `attack_open`); returns "unsat" or "unknown" (raises Outcome for sat/timeout)."""
        strategy, state = begun
        state = refine_roots(strategy, state)
        strategy.hook.start()
        n_closed = 0
        try:
            while state.verdict is None:
                self.check_time()
                strategy.hook.between(group, state)
                n_closed = sum(len(leaf[0]) for leaf in state.leaves)
                self.report(len(state.open), n_closed, float(np.min(state.open.margin)))
                state = step(strategy, state)
        finally:
            for leaf in state.leaves:
                leaves.add(*leaf)
        if state.note:
            self.notes.append(state.note)
        return state.verdict


def probe_objective(fn, shape, group: Group, xs, args):
    """Float objectives of points `xs` (P, n) (used by tests and the final re-check)."""
    return np.asarray(
        batch_objective(fn, shape)(jnp.asarray(xs, jnp.float32), *attack_arrays(group), tuple(args))
    )
