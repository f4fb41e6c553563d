"""The "affine" method: zonotopes (affine arithmetic) propagated forward over a recorded tape.

Every node value is enclosed as `c + G·ε + [-r, r]` with noise symbols ε in [-1, 1]^K shared by all
nodes (one per input coordinate, plus fresh ones from relaxed equations), so correlations between
neurons survive affine layers, and a remainder box `r >= 0` (elementwise) for what has no symbol
yet: rounding allowances since the last relaxed equation (whose fresh symbol absorbs them), and
everything once the symbol budget (`MAX_SYMBOLS`) is spent.

Relaxations use one slope per neuron, `f(x) ∈ λ·x + [μ_lo, μ_hi]` for x in the neuron's interval:
ReLU and abs with λ the chord slope (DeepZ), smooth functions with the chord-parallel lines of
`relax_smooth` (exact intercepts), products by the affine-arithmetic rule
`xy = cx·cy + cy·dx + cx·dy + dx·dy`. Node intervals are the zonotope's concretisation intersected
with the interval rule, so "affine" is never wider than "ibp" at any node.

Compiled by `bound` with XLA:CPU's fusion emitters off: they inline these long elementwise chains
(pooling layers give many) into kernels that recompute shared producers, minutes instead of
milliseconds. Inside a user's own jit that option cannot be set: there, prefer "crown" for pooling
networks.

Float soundness follows `_float_model`: the remainder also absorbs the rounding of this computation
(γ_n on the magnitudes it sums) and the bounded program's own rounding at every node (its
`rel(n)·S + (n+1)·η` allowance), and every concretised end is rounded outward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _float_model as fm
from ._drive import Forward, forward
from ._relax import Intervals, Options, _clean, node_abs_max, select_masks
from ._rules import Kind, relu_p
from ._tape import Node, Tape, apply_affine, terms

# Fresh symbols cost K x (node size) memory in every later generator matrix; past this many
# symbols in total, relaxation gaps go to the remainder box instead.
MAX_SYMBOLS = 4096


def centre_radius(lo, hi, fs: bool):
    """The centre of [lo, hi] and a radius covering both ends (rounded up when `fs`)."""
    c = (lo + hi) / 2
    rad = jnp.maximum(hi - c, c - lo)
    return c, fm.up(rad) if fs else rad


def affine_forward(e, cs, rows, rs, fs: bool, mags, xmax=None, program=None):
    """One affine equation on a forward model `centre + rows·ε + [-r, r]` (zonotope generators or
    Taylor coefficients on the leading axis of `rows`): (centre, rows, r). With `fs` the remainder
    also covers this computation's rounding (`mags()`: the magnitudes each row sums) and, given
    `xmax()` (the operands' largest |values|), the program's rounding under `program`."""
    c = apply_affine(e, cs)
    G = jax.vmap(lambda *gs: apply_affine(e, list(gs), mode="linear"))(*rows)
    r = apply_affine(e, rs, mode="abs")
    if fs:
        n_fwd, _ = terms(e)
        if n_fwd == 0:
            # Structural ops and negation are exact here and in the program; |L| r may
            # still round (a broadcast-sum transpose never appears forward).
            r = fm.inflate(r, 4.0)
        else:
            f0 = jnp.abs(apply_affine(e, [jnp.zeros_like(v) for v in cs], mode="zero"))
            g = fm.gamma(n_fwd + 2, fm.unit(c.dtype))
            # this computation: the centre and every row, on the model's magnitudes
            r = r * (1.0 + g) + g * (1.0 + g) * (apply_affine(e, mags(), mode="abs") + f0)
            eta = 0.0
            if xmax is not None:
                # the program: rel(n) on the magnitudes of the true values (node intervals)
                xm = apply_affine(e, xmax(), mode="abs")
                r = r + program.rel(n_fwd) * (1.0 + g) * (xm + f0)
                eta = program.eta
            r = fm.inflate(r, 8.0) + (n_fwd + 2) * (fm.tiny(c.dtype) + eta)
    return c, G, r


class _Z:
    """c + G·ε + [-r, r]; G has shape (K, *c.shape), K the number of symbols of the pass."""

    __slots__ = ("G", "R", "c", "r")

    def __init__(self, c, G, r):
        self.c, self.G, self.r = c, G, r
        self.R = None  # the radius, once computed (a pass over G: every later use reads it)


def _radius(z: _Z, fs: bool):
    """An upper bound of |G·ε| + r over ε in [-1, 1]^K (elementwise); `fs` is fixed per pass."""
    if z.R is not None:
        return z.R
    R = jnp.sum(jnp.abs(z.G), axis=0) if z.G.shape[0] else jnp.zeros_like(z.c)
    if fs:
        R = fm.inflate(R * (1.0 + fm.gamma(z.G.shape[0] + 1, fm.unit(R.dtype))), 4.0)
        R = fm.up(R + z.r)
    else:
        R = R + z.r
    z.R = R
    return R


def _concretize(z: _Z, fs: bool):
    R = _radius(z, fs)
    if fs:
        return _clean(fm.down(z.c - R), fm.up(z.c + R))
    return _clean(z.c - R, z.c + R)


def _relu_gap(l, u, fs):
    """(λ, μ_hi): relu(x) - λx ∈ [0, μ_hi] on [l, u] (λ = chord slope; exact for stable)."""
    pos, neg = l >= 0, u <= 0
    lam = jnp.where(pos, 1.0, jnp.where(neg, 0.0, u / jnp.where(pos | neg, 1.0, u - l)))
    lam = jnp.clip(lam, 0.0, 1.0)
    # relu(x) - λx is (1-λ)x on [0, u] and -λx on [l, 0]: both in [0, max((1-λ)u, -λl)].
    hi = jnp.maximum((1.0 - lam) * jnp.maximum(u, 0.0), -lam * jnp.minimum(l, 0.0))
    hi = jnp.where(pos | neg, 0.0, hi)
    return lam, (fm.up(fm.up(hi)) if fs else hi)


def _abs_gap(l, u, fs):
    """(λ, μ_hi): |x| - λx ∈ [0, μ_hi] on [l, u]."""
    pos, neg = l >= 0, u <= 0
    lam = jnp.where(pos, 1.0, jnp.where(neg, -1.0, (u + l) / jnp.where(pos | neg, 1.0, u - l)))
    lam = jnp.clip(lam, -1.0, 1.0)
    hi = jnp.maximum((1.0 - lam) * jnp.maximum(u, 0.0), -(1.0 + lam) * jnp.minimum(l, 0.0))
    hi = jnp.where(pos | neg, 0.0, hi)
    return lam, (fm.up(fm.up(hi)) if fs else hi)


class _AffinePass(Forward):
    """Zonotopes as a forward domain (`_drive.forward`), intersected with intervals."""

    def __init__(
        self,
        tape: Tape,
        in_bounds: dict,
        opts: Options,
        max_symbols: int,
        window: int | None,
    ):
        self.tape, self.opts = tape, opts
        self.fs = opts.float_sound
        self.bounds = dict(in_bounds)
        self.intervals = Intervals(self.bounds, opts)
        self.z: dict[int, _Z] = {}
        # Symbols are laid out before propagation (inputs first, then one block per relaxed
        # equation while the budget lasts), so every generator matrix has the same K rows and a
        # fresh block is a static slice update (no padding or concatenation chains).
        K = sum(n.size for n in tape.inputs)
        self.n_inputs = K
        self.offset: dict[int, int] = {}
        # evict[i]: the symbol rows equation i reuses (a window of recent blocks): their
        # coefficients move into the remainder of every node still in use.
        self.evict: dict[int, tuple[int, int]] = {}
        if window is None:
            budget = max(max_symbols, K)
            for i, e in enumerate(tape.eqns):
                if e.kind != Kind.AFFINE and K + e.out.size <= budget:
                    self.offset[i] = K
                    K += e.out.size
        else:
            # a ring of `window` symbols after the inputs: deep programs (derivative chains)
            # keep the correlations of their recent relaxations at a bounded cost
            ptr, used = K, K
            for i, e in enumerate(tape.eqns):
                s = e.out.size
                if e.kind == Kind.AFFINE or s > window:
                    continue
                if ptr + s > self.n_inputs + window:
                    ptr = self.n_inputs
                if ptr < used:
                    self.evict[i] = (ptr, ptr + s)
                self.offset[i] = ptr
                ptr += s
                used = max(used, ptr)
            K = used
            last = {}
            for i, e in enumerate(tape.eqns):
                for n in e.inputs:
                    if isinstance(n, Node):
                        last[n.id] = i
            for o in tape.outputs:
                if isinstance(o, Node):
                    last[o.id] = len(tape.eqns)
            self.last_use = last
        self.K = K
        k0 = 0
        for n in tape.inputs:
            lo, hi = in_bounds[n.id]
            c, rad = centre_radius(lo, hi, self.fs)
            G = jnp.zeros((self.K, n.size), lo.dtype)
            G = G.at[k0 : k0 + n.size].set(jnp.diag(rad.reshape(-1)))
            k0 += n.size
            self.z[n.id] = _Z(c, G.reshape(self.K, *n.shape), jnp.zeros_like(c))

    def _fresh(self, i, c, G, r, gap):
        """Adds the elementwise slack `gap` (>= 0) of equation `i` as its fresh symbols, if it
        has a block of them.

        The finite remainder joins the same symbol: a remainder box kept across layers grows like
        interval arithmetic, a symbol lets later layers cancel it.
        """
        total = r + gap
        if self.fs:
            total = fm.up(total)
        off = self.offset.get(i)
        if off is None:
            return _Z(c, G, total)
        if i in self.evict:
            a, b = self.evict[i]
            G, total = self._drop_rows(G, total, a, b)
            # every node still used after equation i loses those symbols the same way
            for nid, z in list(self.z.items()):
                if self.last_use.get(nid, -1) > i:
                    Gz, rz = self._drop_rows(z.G, z.r, a, b)
                    self.z[nid] = _Z(z.c, Gz, rz)
        size = int(np.prod(c.shape, dtype=np.int64))
        finite = jnp.isfinite(total)
        block = jnp.diag(jnp.where(finite, total, 0.0).reshape(-1)).reshape(size, *c.shape)
        G = G.at[off : off + size].set(block)
        # typed: two Python scalars would give float64 under jax_enable_x64
        return _Z(c, G, jnp.where(finite, jnp.zeros_like(c), jnp.inf))

    def _drop_rows(self, G, r, a, b):
        """Rows a:b of G folded into the remainder r (sound: |G_ab·ε| <= Σ|G_ab|)."""
        part = jnp.sum(jnp.abs(G[a:b]), axis=0)
        if self.fs:
            part = fm.inflate(part * (1.0 + fm.gamma(b - a + 1, fm.unit(part.dtype))), 4.0)
            r = fm.up(r + part)
        else:
            r = r + part
        return G.at[a:b].set(0.0), r

    def affine(self, i, e):
        ins = e.node_inputs
        zs = [self.z[n.id] for n in ins]
        c, G, r = affine_forward(
            e,
            [z.c for z in zs],
            [z.G for z in zs],
            [z.r for z in zs],
            self.fs,
            mags=lambda: [jnp.abs(z.c) + _radius(z, True) for z in zs],
            xmax=lambda: [node_abs_max(self.bounds[n.id]) for n in ins],
            program=self.opts.program,
        )
        return _Z(c, G, r)

    def _scale(self, x: _Z, lam, mid, gap):
        """λ·x + mid + [-gap, gap] (gap >= 0 elementwise, mid and gap may be infinite)."""
        finite = jnp.isfinite(mid) & jnp.isfinite(gap) & jnp.isfinite(lam)
        lam0 = jnp.where(finite, lam, 0.0)
        c = jnp.where(finite, lam0 * x.c + mid, 0.0)
        G = lam0 * x.G
        r = jnp.abs(lam0) * x.r
        if self.fs:
            uu = fm.unit(c.dtype)
            mag = jnp.abs(lam0) * (jnp.abs(x.c) + _radius(x, True)) + jnp.abs(mid)
            r = fm.inflate(r + 4.0 * uu * mag, 4.0) + fm.tiny(c.dtype)
        # Non-finite relaxations: the node's own interval, as a remainder.
        r = jnp.where(finite, r, jnp.inf)
        gap = jnp.where(finite, gap, 0.0)
        return c, G, r, gap

    def unary(self, i, e):
        x = e.inputs[0]
        zx = self.z[x.id]
        l, u = self.bounds[x.id]
        if e.prim is relu_p or e.prim is lax.abs_p:
            lam, hi = (_relu_gap if e.prim is relu_p else _abs_gap)(l, u, self.fs)
            mid, gap = hi / 2, hi / 2
            if self.fs:
                mid, gap = hi / 2, fm.up(hi / 2)  # [mid - gap, mid + gap] ⊇ [0, hi]
        else:
            # every other rule's lines share one slope (chord-parallel, `_smooth.relax`)
            lam, b_l, _, b_u = e.rule.relax(l, u, self.opts)
            mid = (b_l + b_u) / 2
            gap = jnp.maximum(b_u - mid, mid - b_l)
            if self.fs:
                gap = fm.up(jnp.maximum(fm.up(b_u - mid), fm.up(mid - b_l)))
        return self._fresh(i, *self._scale(zx, lam, mid, gap))

    def mul(self, i, e):
        x, y = e.node_inputs
        shape = e.out.shape
        K = self.K

        def bc(z):
            return (
                jnp.broadcast_to(z.c, shape),
                jnp.broadcast_to(z.G, (K, *shape)),
                jnp.broadcast_to(z.r, shape),
            )

        (cx, Gx, rx), (cy, Gy, ry) = bc(self.z[x.id]), bc(self.z[y.id])
        # the radius of a broadcast zonotope is the broadcast radius
        Dx = jnp.broadcast_to(_radius(self.z[x.id], self.fs), shape)
        Dy = jnp.broadcast_to(_radius(self.z[y.id], self.fs), shape)
        c = cx * cy
        G = cy * Gx + cx * Gy
        r = jnp.abs(cx) * ry + jnp.abs(cy) * rx
        gap = Dx * Dy
        if self.fs:
            uu = fm.unit(c.dtype)
            bx = tuple(jnp.broadcast_to(v, shape) for v in self.bounds[x.id])
            by = tuple(jnp.broadcast_to(v, shape) for v in self.bounds[y.id])
            prog = node_abs_max(bx) * node_abs_max(by)  # |xy| of the true values
            mag = (jnp.abs(cx) + Dx) * (jnp.abs(cy) + Dy)
            r = fm.inflate(r + 4.0 * uu * (mag + jnp.abs(c)) + self.opts.program.rel(1) * prog, 8.0)
            r = r + 2.0 * (fm.tiny(c.dtype) + self.opts.program.eta)
            gap = fm.up(gap)
        gap = jnp.where(jnp.isfinite(gap), gap, jnp.inf)
        r = jnp.where(jnp.isfinite(gap), r, jnp.inf)
        return self._fresh(i, c, G, r, jnp.where(jnp.isfinite(gap), gap, 0.0))

    def concretize(self, i, e):
        lo, hi = self.bounds[e.out.id]
        c = (lo + hi) / 2
        gap = jnp.maximum(hi - c, c - lo)
        finite = jnp.isfinite(c) & jnp.isfinite(gap)
        c = jnp.where(finite, c, 0.0)
        r = jnp.where(finite, jnp.zeros_like(c), jnp.inf)
        gap = jnp.where(finite, fm.up(gap) if self.fs else gap, 0.0)
        G = jnp.zeros((self.K, *c.shape), c.dtype)
        return self._fresh(i, c, G, r, gap)

    def select(self, i, e):
        # exact where the box decides the predicate; the output's interval elsewhere
        m0, m1 = select_masks(e, self.bounds)
        mu = 1.0 - m0 - m1
        shape = e.out.shape
        c = jnp.zeros(shape, e.out.dtype)
        G = jnp.zeros((self.K, *shape), e.out.dtype)
        r = jnp.zeros(shape, e.out.dtype)
        for case, m in zip(e.inputs[2:], (m0, m1), strict=True):
            if isinstance(case, Node):
                z = self.z[case.id]
                c = c + m * jnp.broadcast_to(z.c, shape)
                G = G + m * jnp.broadcast_to(z.G, (self.K, *shape))
                r = r + m * jnp.broadcast_to(z.r, shape)
            else:
                c = c + m * case
        lo, hi = self.bounds[e.out.id]
        mid = (lo + hi) / 2
        gap = jnp.maximum(hi - mid, mid - lo)
        finite = jnp.isfinite(mid) & jnp.isfinite(gap)
        c = c + mu * jnp.where(finite, mid, 0.0)
        r = jnp.where((mu > 0) & ~finite, jnp.inf, r)
        gap = mu * jnp.where(finite, fm.up(gap) if self.fs else gap, 0.0)
        return self._fresh(i, c, G, r, gap)

    def enter(self, i, e):
        # Interval rule on the (already intersected) input intervals first: the relaxations
        # read the output interval for non-finite cases.
        self.bounds[e.out.id] = self.intervals.image(i, e)

    def leave(self, i, e, z):
        ilo, ihi = self.bounds[e.out.id]
        zlo, zhi = _concretize(z, self.fs)
        self.bounds[e.out.id] = (jnp.maximum(ilo, zlo), jnp.minimum(ihi, zhi))
        self.z[e.out.id] = z

    def output(self, o, spec):
        if not isinstance(o, Node):
            v = jnp.asarray(o)
            if spec is not None:
                v = jnp.asarray(spec, v.dtype).reshape(-1, v.size) @ v.reshape(-1)
            return v, v
        lo, hi = self.bounds[o.id]
        if spec is None:
            return lo, hi
        z = self.z[o.id]
        C = jnp.asarray(spec, lo.dtype).reshape(-1, o.size)
        c = C @ z.c.reshape(-1)
        G = z.G.reshape(z.G.shape[0], -1) @ C.T
        r = jnp.abs(C) @ z.r.reshape(-1)
        # The interval route, for the intersection.
        cp, cn = jnp.maximum(C, 0), jnp.minimum(C, 0)
        ilo = cp @ lo.reshape(-1) + cn @ hi.reshape(-1)
        ihi = cp @ hi.reshape(-1) + cn @ lo.reshape(-1)
        if self.fs:
            u = fm.unit(lo.dtype)
            g = fm.gamma(o.size + 1, u)
            mag = jnp.abs(C) @ (jnp.abs(z.c) + _radius(z, True)).reshape(-1)
            r = fm.inflate(r * (1.0 + g) + g * (1.0 + g) * mag, 8.0) + (o.size + 2) * fm.tiny(
                lo.dtype
            )
            s = fm.inflate(g * (jnp.abs(C) @ node_abs_max((lo, hi)).reshape(-1)), 8.0)
            ilo, ihi = fm.down(ilo - s), fm.up(ihi + s)
        zlo, zhi = _concretize(_Z(c, G, r), self.fs)
        return jnp.maximum(ilo, zlo), jnp.minimum(ihi, zhi)


def run_affine(
    tape: Tape,
    in_bounds: dict,
    opts: Options,
    spec=None,
    max_symbols: int | None = None,
    window: int | None = None,
):
    """Zonotope bounds of every tape output (or of `spec @ output` for a single output).

    `window`: instead of a symbol budget spent in tape order, a ring of that many symbols reused
    by the most recent relaxed equations (older ones move to the remainders of the nodes still in
    use): bounded memory for deep programs."""
    p = _AffinePass(
        tape, in_bounds, opts, MAX_SYMBOLS if max_symbols is None else max_symbols, window
    )
    forward(tape, p)
    return [p.output(o, spec) for o in tape.outputs], p
