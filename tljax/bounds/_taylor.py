"""The "taylor" method: order-2 Taylor models over a recorded tape, for programs of few inputs.

Every node value is enclosed as `P(ε) + [-R, R]`: a polynomial of degree <= 2 in the normalised
inputs ε in [-1, 1]^d (monomials 1, ε_i, ε_i·ε_j for i <= j) plus a remainder radius R >= 0
(elementwise). Affine equations act on the coefficients exactly as on a zonotope's generators;
products keep the degree-2 part and move the degree-3/4 terms into R; tanh and its derivative
sech2 (the node the tape records for tanh') are expanded around the polynomial's centre value to
second order (cubic Lagrange term) or to first order (quadratic Lagrange term) whichever leaves
the smaller remainder, the Lagrange terms bounded over the input's interval (saturated neurons
get tiny remainders). Other nonlinearities take their chord relaxation (`_smooth.relax`). Only
nonlinearities get intervals (from their operand's model), and where that interval is four
times narrower than the model the model is replaced by it; affine and product nodes carry their
models only: a pass is a few operations per node, so it compiles fast (the Burgers PINN
residual, 239 tape equations: 20K jaxpr equations, 17 s) and runs fast (0.13 ms per leaf in a
batch of 64, against about 80 ms for the zonotope).

Why: on a small box a first-order method (zonotope, CROWN) leaves relaxation gaps quadratic in
the pre-activation widths; here they are cubic. On the Burgers PINN residual at the shock a
10^-3 x 10^-4 leaf bounds within 4% of the sampled value (the zonotope: 17%). On large boxes the
remainders, which do not cancel, grow: there the zonotope is tighter.

Soundness: for the real-valued program (`float_format="real"`) or with `float_sound=False`. With
`float_sound` the remainder also absorbs this computation's rounding (every coefficient's error
bounded by γ_n times the magnitudes it sums, the derivatives at the centre by the tanh error
model `_float_model.ULPS`), and every concretised end is rounded outward; the rounding of a
float32 / bf16 program is not modelled here (refused).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import InputError
from . import _float_model as fm
from ._drive import Forward, forward
from ._relax import Intervals, Options, _clean
from ._rules import Kind, relu_p, sech2_p
from ._tape import Node, Tape
from ._zonotope import affine_forward, centre_radius

# inputs past this many coordinates: M = 1 + d + d(d+1)/2 coefficients per neuron
TAYLOR_MAX_INPUTS = 8
# Bounds of |f''| and |f'''| over an interval where sech² <= s (t = tanh): tanh'' = -2ts,
# tanh''' = s(6t² - 2); sech2'' = s(6t² - 2), sech2''' = ts(16 - 24t²). With |t| <= 1 each is
# at most a constant times s, and at most its maximum over the reals (4/(3√3) = 0.7698, 2;
# 2, 6.16): saturated neurons (s tiny) get tiny remainders.
_LOCAL = {
    lax.tanh_p: ((0.77, 2.0), (2.0, 4.0)),
    sech2_p: ((2.0, 4.0), (6.2, 16.0)),
}


def _local(prim, k, s_hi):
    """An upper bound of |f^(k)| (k = 2, 3) over an interval where sech² <= s_hi."""
    top, per_s = _LOCAL[prim][k - 2]
    return jnp.minimum(top, per_s * s_hi)


def _derivs(prim, c):
    """(f, f', f''/2) at c, and an absolute bound of their computation's error here."""
    t = jnp.tanh(c)
    s = 1.0 - t * t
    if prim is lax.tanh_p:
        out = (t, s, -t * s)
    else:  # sech2: f = s, f' = -2ts, f'' = s(6t² - 2)
        out = (s, -2.0 * t * s, s * (3.0 * t * t - 1.0))
    u = fm.unit(c.dtype)
    # |t̃ - t| <= e_t (XLA's tanh within ULPS ulps, |t| <= 1); s, ts, s(3t² - 1) are
    # polynomials in t with coefficients <= 3 on [-1, 1]: their errors are <= 16 (e_t + 2u)
    e_t = 2.0 * fm.ULPS["tanh"] * u + fm.tiny(c.dtype)
    return out, 16.0 * (e_t + 2.0 * u)


class _TM:
    """P(ε) + [-R, R]; P has shape (M, *shape), row 0 the constant term."""

    __slots__ = ("P", "R")

    def __init__(self, P, R):
        self.P, self.R = P, R


class _TaylorPass(Forward):
    """Taylor models as a forward domain (`_drive.forward`), intersected with intervals."""

    def __init__(self, tape: Tape, in_bounds: dict, opts: Options):
        p = opts.program
        if opts.float_sound and (p.u_out or p.u_acc or p.eta):
            raise InputError(
                "method 'taylor' bounds the real-valued program: pass float_format='real' "
                "(or float_sound=False); for the float program's own rounding use 'affine' or "
                "'crown'"
            )
        d = sum(n.size for n in tape.inputs)
        if d > TAYLOR_MAX_INPUTS:
            raise InputError(
                f"method 'taylor' is for programs of at most {TAYLOR_MAX_INPUTS} input coordinates "
                f"(this one has {d}): it carries (d+1)(d+2)/2 coefficients per value; use "
                "'affine' or 'crown'"
            )
        self.tape, self.opts, self.fs = tape, opts, opts.float_sound
        self.bounds = dict(in_bounds)
        self.intervals = Intervals(self.bounds, opts)
        self.d = d
        self.pairs = [(i, j) for i in range(d) for j in range(i, d)]
        self.M = 1 + d + len(self.pairs)
        self._a, self._b = np.asarray(self.pairs).T
        self.z: dict[int, _TM] = {}
        # per equation, the choices a certificate records (`_taylor_check` follows them): where
        # the expansion is second order ("order2") and where the model became its interval
        self.choices: dict[int, dict] = {}
        k = 0
        for n in tape.inputs:
            lo, hi = in_bounds[n.id]
            c, rad = centre_radius(lo, hi, self.fs)
            P = jnp.zeros((self.M, n.size), lo.dtype).at[0].set(c.reshape(-1))
            idx = jnp.arange(n.size)
            P = P.at[1 + k + idx, idx].set(rad.reshape(-1))
            k += n.size
            self.z[n.id] = _TM(P.reshape(self.M, *n.shape), jnp.zeros_like(c))

    # -- helpers ---------------------------------------------------------------------------------

    def _parts(self, P):
        return P[0], P[1 : 1 + self.d], P[1 + self.d :]

    def _sum_abs(self, P):
        """An upper bound of sum |P_m| (rounded up): |P(ε) - P_0| <= it minus |P_0|."""
        S = jnp.sum(jnp.abs(P), axis=0)
        return fm.inflate(S * (1.0 + fm.gamma(self.M + 1, fm.unit(S.dtype)))) if self.fs else S

    def _cross(self, xl, yl):
        """The degree-2 coefficients of (Σ xl_i ε_i)(Σ yl_j ε_j), in `pairs` order."""
        a, b = self._a, self._b
        off = (a != b).reshape((-1,) + (1,) * (xl.ndim - 1))
        return xl[a] * yl[b] + jnp.where(off, xl[b] * yl[a], 0.0)

    def _gamma(self, n, dt):
        return fm.gamma(n, fm.unit(dt)) if self.fs else 0.0

    def _up(self, R):
        """A remainder computed from nonnegative terms in a dozen operations, rounded up (their
        relative error is below 16u: inflate by 32u); NaN (0 * inf) becomes inf."""
        if self.fs:
            R = fm.inflate(R, 32.0) + fm.tiny(R.dtype)
        return jnp.where(jnp.isnan(R), jnp.inf, R)

    def _range(self, t: _TM):
        """Sound (lo, hi) of the model: squares ε_i² lie in [0, 1], other monomials in [-1, 1]."""
        c, lin, quad = self._parts(t.P)
        sq = (self._a == self._b).reshape((-1,) + (1,) * c.ndim)
        a = jnp.sum(jnp.abs(lin), 0) + jnp.sum(jnp.where(sq, 0.0, jnp.abs(quad)), 0)
        qlo = jnp.sum(jnp.where(sq, jnp.minimum(quad, 0.0), 0.0), 0)
        qhi = jnp.sum(jnp.where(sq, jnp.maximum(quad, 0.0), 0.0), 0)
        lo, hi = c - a + qlo, c + a + qhi
        if self.fs:
            # lo and hi: sums of M + 2 terms, each <= sum |P_m|
            err = self._up(self._gamma(self.M + 2, c.dtype) * self._sum_abs(t.P) + t.R)
            return _clean(fm.down(lo - err), fm.up(hi + err))
        return _clean(lo - t.R, hi + t.R)

    def _const(self, lo, hi):
        """The interval [lo, hi] as a model (constant + remainder)."""
        finite = jnp.isfinite(lo) & jnp.isfinite(hi)
        mid = jnp.where(finite, (lo + hi) / 2, 0.0)
        rad = jnp.maximum(hi - mid, mid - lo)
        rad = jnp.where(finite, fm.up(rad) if self.fs else rad, jnp.inf)
        P = jnp.zeros((self.M, *mid.shape), mid.dtype).at[0].set(mid)
        return _TM(P, rad)

    def _smooth_interval(self, prim, l, u):
        """The interval of tanh / sech2 on [l, u], and an upper bound of sech² there, for the
        real-valued program only. The table's intervals (`_smooth.interval`) give the same ends
        but carry the float program's terms (subnormal inputs, flushes, range clamps): through
        them the Burgers residual's pass compiled 30% and ran 75% slower (measured)."""
        dt = l.dtype
        e = 2.0 * fm.ULPS["tanh"] * fm.unit(dt) + fm.tiny(dt) if self.fs else 0.0
        near = jnp.where((l <= 0) & (u >= 0), 0.0, jnp.minimum(jnp.abs(l), jnp.abs(u)))
        far = jnp.maximum(jnp.abs(l), jnp.abs(u))
        # 1 - t̃² with |t̃ - t| <= e: off by at most 2e + e² and two roundings
        es = 2.0 * e + 4.0 * fm.unit(dt) if self.fs else 0.0
        s_hi = jnp.minimum(1.0 - jnp.tanh(near) ** 2 + es, 1.0)
        if prim is lax.tanh_p:
            lo = jnp.maximum(jnp.tanh(l) - e, -1.0)
            hi = jnp.minimum(jnp.tanh(u) + e, 1.0)
        else:
            lo, hi = jnp.maximum(1.0 - jnp.tanh(far) ** 2 - es, 0.0), s_hi
        if self.fs:
            lo, hi, s_hi = fm.down(lo), fm.up(hi), fm.up(s_hi)
        return _clean(lo, hi), s_hi

    # -- the forward domain ----------------------------------------------------------------------

    def range_of(self, n: Node):
        """The bounds of node `n`, from its model when first asked for."""
        if n.id not in self.bounds:
            self.bounds[n.id] = self._range(self.z[n.id])
        return self.bounds[n.id]

    def enter(self, i, e):
        # affine and product nodes keep their models only (their intervals would be computed,
        # and compiled, for nothing); a nonlinearity gets the interval of its output, from its
        # operands' ranges
        if e.kind in (Kind.AFFINE, Kind.MUL):
            return
        for n in e.node_inputs:
            self.range_of(n)
        if e.prim in _LOCAL:
            self.bounds[e.out.id] = self._smooth_interval(e.prim, *self.bounds[e.inputs[0].id])[0]
        else:
            self.bounds[e.out.id] = self.intervals.image(i, e)

    def leave(self, i, e, t):
        if e.out.id not in self.bounds:
            self.z[e.out.id] = t
            return
        ilo, ihi = self.bounds[e.out.id]
        zlo, zhi = self._range(t)
        self.bounds[e.out.id] = (jnp.maximum(ilo, zlo), jnp.minimum(ihi, zhi))
        # a model no better than the interval is replaced by it; "four times narrower" keeps
        # models that equal their interval up to rounding (they carry the correlations)
        better = ~((ihi - ilo) >= 0.25 * (zhi - zlo))
        better = better & jnp.isfinite(ilo) & jnp.isfinite(ihi)
        self.choices.setdefault(i, {})["interval"] = better
        c = self._const(ilo, ihi)
        self.z[e.out.id] = _TM(jnp.where(better[None], c.P, t.P), jnp.where(better, c.R, t.R))

    def affine(self, i, e):
        ins = e.node_inputs
        ts = [self.z[n.id] for n in ins]
        # the zonotope's affine step on the coefficient rows (no program rounding: the
        # real-valued program, see __init__)
        c, rest, R = affine_forward(
            e,
            [t.P[0] for t in ts],
            [t.P[1:] for t in ts],
            [t.R for t in ts],
            self.fs,
            mags=lambda: [self._sum_abs(t.P) for t in ts],
        )
        P = jnp.concatenate([c[None], rest])
        return _TM(P, jnp.where(jnp.isnan(R), jnp.inf, R))

    def _linear(self, t: _TM, lam, mid, gap):
        """λ·t + mid + [-gap, gap], elementwise (non-finite parts: an infinite remainder)."""
        finite = jnp.isfinite(lam) & jnp.isfinite(mid) & jnp.isfinite(gap)
        lam0, mid0 = jnp.where(finite, lam, 0.0), jnp.where(finite, mid, 0.0)
        P = (lam0[None] * t.P).at[0].add(mid0)
        err = jnp.abs(lam0) * t.R + jnp.where(finite, gap, 0.0)
        if self.fs:
            # one product per coefficient and one sum on the constant
            u = fm.unit(P.dtype)
            err = err + 2.0 * u * (jnp.abs(lam0) * self._sum_abs(t.P) + jnp.abs(mid0))
        return P, jnp.where(finite, self._up(err), jnp.inf)

    def unary(self, i, e):
        x = e.inputs[0]
        tx = self.z[x.id]
        l, u = self.bounds[x.id]
        if e.prim is relu_p or e.prim is lax.abs_p:
            ylo, yhi = self.bounds[e.out.id]
            stable_pos, stable_neg = l >= 0, u <= 0
            sign = jnp.where(stable_pos, 1.0, -1.0 if e.prim is lax.abs_p else 0.0)
            P, R = self._linear(tx, sign, jnp.zeros_like(l), jnp.zeros_like(l))
            exact = stable_pos | stable_neg
            c = self._const(ylo, yhi)
            return _TM(jnp.where(exact[None], P, c.P), jnp.where(exact, R, c.R))
        if e.prim in _LOCAL:
            # the Lagrange point lies between the centre value and x: bound over both
            c0 = tx.P[0]
            _, s_hi = self._smooth_interval(e.prim, jnp.minimum(l, c0), jnp.maximum(u, c0))
            t, self.choices.setdefault(i, {})["order2"] = self._taylor(e.prim, tx, s_hi)
            return t
        lam, b_l, _, b_u = e.rule.relax(l, u, self.opts)
        mid = (b_l + b_u) / 2
        gap = jnp.maximum(b_u - mid, mid - b_l)
        if self.fs:
            gap = fm.up(jnp.maximum(fm.up(b_u - mid), fm.up(mid - b_l)))
        return _TM(*self._linear(tx, lam, mid, gap))

    def _taylor(self, prim, t: _TM, s_hi):
        """f(c0 + δ) = f(c0) + f'(c0) δ + f''(c0)/2 δ² + f'''(ξ)/6 δ³, δ = Q + ρ, |ρ| <= R, or
        to first order f(c0) + f'(c0) δ + f''(ξ)/2 δ² where that remainder is smaller (large δ);
        the Lagrange terms bounded over the input interval (`_local`)."""
        c0 = t.P[0]
        dt = c0.dtype
        Q = t.P.at[0].set(0.0)
        _, lin, quad = self._parts(Q)
        SQ = self._sum_abs(Q)  # |Q| <= SQ
        D = self._up(SQ + t.R)  # |δ| <= D
        (f0, f1, f2), e_der = _derivs(prim, c0)
        # Q² kept to degree 2: (Σ a_i ε_i)²; dropped 2·lin·quad + quad²
        Q2 = jnp.zeros_like(Q).at[1 + self.d :].set(self._cross(lin, lin))
        L1, L2 = jnp.sum(jnp.abs(lin), 0), jnp.sum(jnp.abs(quad), 0)
        drop = 2.0 * L1 * L2 + L2 * L2
        P1 = (f1[None] * Q).at[0].set(f0)
        P2 = P1 + f2[None] * Q2
        R1 = jnp.abs(f1) * t.R + 0.5 * _local(prim, 2, s_hi) * D * D
        R2 = (
            jnp.abs(f1) * t.R
            + jnp.abs(f2) * (drop + 2.0 * SQ * t.R + t.R * t.R)
            + (_local(prim, 3, s_hi) / 6.0) * D * D * D
        )
        if self.fs:
            u = fm.unit(dt)
            # the derivatives' errors times |δ|^k, and each coefficient's product rounding
            e1 = e_der * (1.0 + D) + 4.0 * u * (jnp.abs(f1) * SQ + jnp.abs(f0))
            R1 = R1 + e1
            R2 = R2 + e1 + e_der * D * D + 4.0 * u * jnp.abs(f2) * L1 * L1
        R1, R2 = self._up(R1), self._up(R2)
        use = R2 < R1
        return _TM(jnp.where(use[None], P2, P1), jnp.where(use, R2, R1)), use

    def mul(self, i, e):
        x, y = e.node_inputs
        shape = e.out.shape

        def bc(t):
            return jnp.broadcast_to(t.P, (self.M, *shape)), jnp.broadcast_to(t.R, shape)

        (Px, Rx), (Py, Ry) = bc(self.z[x.id]), bc(self.z[y.id])
        x0, xl, xq = self._parts(Px)
        y0, yl, yq = self._parts(Py)
        quad = x0[None] * yq + y0[None] * xq + self._cross(xl, yl)
        P = jnp.concatenate([(x0 * y0)[None], x0[None] * yl + y0[None] * xl, quad])
        Lx, Qx = jnp.sum(jnp.abs(xl), 0), jnp.sum(jnp.abs(xq), 0)
        Ly, Qy = jnp.sum(jnp.abs(yl), 0), jnp.sum(jnp.abs(yq), 0)
        Sx, Sy = self._sum_abs(Px), self._sum_abs(Py)  # |x - ρx| <= Sx
        R = Sx * Ry + Sy * Rx + Rx * Ry + (Lx * Qy + Ly * Qx + Qx * Qy)
        if self.fs:
            # at most 4 products summed per coefficient, each <= the product of the sums
            R = R + self.M * self._gamma(5, P.dtype) * Sx * Sy
        return _TM(P, self._up(R))

    def select(self, i, e):
        return self._const(*self.bounds[e.out.id])

    def concretize(self, i, e):
        return self._const(*self.bounds[e.out.id])


def run_taylor(tape: Tape, in_bounds: dict, opts: Options, *, with_pass: bool = False):
    """Taylor-model bounds `(lower, upper)` of every tape output (and the pass, whose `choices`
    a certificate records, with `with_pass`)."""
    p = _TaylorPass(tape, in_bounds, opts)
    forward(tape, p)
    out = []
    for o in tape.outputs:
        if isinstance(o, Node):
            out.append(p.range_of(o))
        else:
            v = jnp.asarray(o)
            out.append((v, v))
    return (out, p) if with_pass else out
