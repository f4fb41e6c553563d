"""The exact checker of "taylor" certificates: the Taylor-model pass re-run in ball arithmetic.

A certificate of method "taylor" claims output bounds of the *real-valued* program over a box
(the producer bounds the program's mathematical function, `_taylor`). Its evidence is the
computation itself: `derive` re-records the program and runs order-2 Taylor models over the tape
again, every coefficient an arb ball (python-flint, 128 bits: each operation's rounding is inside
the ball), every remainder an upper bound of nonnegative arb terms, the transcendental values
(tanh at the expansion point, sech² over an interval, the smooth functions' ranges) rigorous arb
enclosures; nothing float is trusted. The claim is accepted when it contains the derived
enclosure.

The steps are those of `_taylor` (its docstring has the algebra), re-derived here:

- affine equations: the exact linear part (`_Affine`, as the CROWN checker uses it) applied to
  the coefficients, |L| to the remainders;
- products: degree 2 kept, the degree-3/4 terms and the remainders' products into R;
- tanh and sech2: expansion at the (exact) midpoint c0 of the operand's constant coefficient, to
  first or second order as the producer chose (recorded); the Lagrange terms bounded over the hull
  of the operand's interval and c0 by this module's own constants (`_LAGRANGE`, derived below
  and checked in arb by the tests);
- relu / abs: exact where the operand's sign is fixed, else the output interval; other smooth
  functions: the producer's chord relaxation where `_smooth.check_line` proves both lines
  against the real function, else the output interval (`_smooth.enclose`);
- each nonlinearity's output interval is intersected with its model's range, and the model is
  replaced by that interval where the producer did (recorded).

The producer's choices (first or second order, model or interval) are heuristics on its own
float values; the checker follows the recorded ones so that it re-derives the same computation
(its own values sometimes choose otherwise and end looser). Every choice is sound, so a tampered
choice can only loosen what the checker derives.

Selections (`where`) and interval-only equations (max, pooling, rounding) take the exact image of
their operands' intervals, as the CROWN checker derives it; one it cannot evaluate exactly is
rejected with the equation's name.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from flint import arb, ctx, fmpq
from jax import lax

from . import _float_model as fm
from . import _smooth
from ._certificate import (
    _PIECEWISE,
    Certificate,
    _Affine,
    _bcast_index,
    _monotone_image,
    _name,
    _Reject,
    _smooth_of,
    exact_select,
    register_checker,
)
from ._drive import Forward, forward
from ._relax import Options
from ._rules import Kind, relu_p, sech2_p
from ._tape import Node, Tape

PREC = 128

# Upper bounds of |f''| and |f'''| where sech² <= s, with t = tanh (|t| <= 1, s = 1 - t²):
#   tanh'' = -2ts: <= 2s, and <= 4/(3√3) = 0.7698 over the reals;
#   tanh''' = s(6t² - 2): 6t² - 2 in [-2, 4] so <= 4s; with v = t², (1 - v)(6v - 2) lies in
#     [-2, 2/3]: <= 2;
#   sech2'' = tanh''': the same;  sech2''' = ts(16 - 24t²): |t(16 - 24t²)| <= 8 on [-1, 1]
#     (at |t| = 1; 5.03 at the interior critical point), so <= 8s; over the reals
#     max |t (1 - t²)(16 - 24t²)| = 4.09 (t = 0.40): <= 4.2.
# (top, per_s) per primitive and order; tests/bounds/test_taylor_check.py re-proves each in arb.
_LAGRANGE = {
    lax.tanh_p: ((Fraction(77, 100), 2), (2, 4)),
    sech2_p: ((2, 4), (Fraction(21, 5), 8)),
}

_ZERO = arb(0)
_up = np.frompyfunc(lambda v: v.upper(), 1, 1)
_lo = np.frompyfunc(lambda v: v.lower(), 1, 1)
_mid = np.frompyfunc(lambda v: v.mid(), 1, 1)


def _A(v) -> arb:
    """An exact rational (fmpq, Fraction, int) or a finite float as an arb ball."""
    if isinstance(v, fmpq):
        return arb(v)
    if isinstance(v, float) and not np.isfinite(v):
        return arb(v)  # exact ±inf (a NaN is a ball of everything)
    v = Fraction(v)
    return arb(fmpq(v.numerator, v.denominator))


def _arr(vals) -> np.ndarray:
    vals = list(vals)
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return out


def _frac(v: arb) -> Fraction:
    if not v.is_finite():
        raise _Reject(f"no finite enclosure derived ({v})")
    return _smooth._frac(v)


class _TM:
    """P(ε) + [-R, R] over flat node values: P (M, size) arb balls, R (size,) exact upper bounds."""

    __slots__ = ("P", "R")

    def __init__(self, P, R):
        self.P, self.R = P, R


class _BallTaylor(Forward):
    """Taylor models in arb over a tape (the `_taylor._TaylorPass` steps, re-derived)."""

    def __init__(self, tape: Tape, box: list, choices: dict):
        self.tape = tape
        self.choices = choices
        self.d = d = sum(n.size for n in tape.inputs)
        self.pairs = [(i, j) for i in range(d) for j in range(i, d)]
        self.M = 1 + d + len(self.pairs)
        self.sq = np.array([i == j for i, j in self.pairs], bool)
        self.z: dict[int, _TM] = {}
        self.bnd: dict[int, tuple] = {}  # node id -> (lo, hi) exact arb vectors
        self.aff: dict[int, tuple] = {}
        k = 0
        for n, (lo, hi) in zip(tape.inputs, box, strict=True):
            lo = [Fraction(v) for v in np.asarray(lo, np.float64).reshape(-1).tolist()]
            hi = [Fraction(v) for v in np.asarray(hi, np.float64).reshape(-1).tolist()]
            P = self._zeros(n.size)
            for r in range(n.size):
                P[0, r] = _A((lo[r] + hi[r]) / 2)
                P[1 + k + r, r] = _A((hi[r] - lo[r]) / 2)
            k += n.size
            self.z[n.id] = _TM(P, _arr([_ZERO] * n.size))
            self.bnd[n.id] = (_arr(map(_A, lo)), _arr(map(_A, hi)))

    def _zeros(self, size: int) -> np.ndarray:
        P = np.empty((self.M, size), dtype=object)
        P[...] = _ZERO
        return P

    def where(self, i: int, e) -> str:
        return f"taylor check: equation {i} ({_name(e)}, {e.where()})"

    def choice(self, i: int, e, what: str, size: int) -> np.ndarray:
        """The producer's recorded choice (a mask over the output); every choice is sound."""
        c = self.choices.get(str(i), {}).get(what)
        if c is None:
            raise _Reject(f"{self.where(i, e)}: the certificate records no {what!r} choice")
        c = np.asarray(c).reshape(-1)
        if c.shape != (size,) or not np.all(np.isin(c, (0, 1))):
            raise _Reject(f"{self.where(i, e)}: {what!r} choice is not a 0/1 mask of {size}")
        return c.astype(bool)

    # -- the model's helpers ---------------------------------------------------------------------

    def _cross(self, xl, yl):
        """Degree-2 coefficients of (Σ xl_i ε_i)(Σ yl_j ε_j), in `pairs` order."""
        return np.stack([xl[a] * yl[b] + (xl[b] * yl[a] if a != b else 0) for a, b in self.pairs])

    def range(self, t: _TM) -> tuple:
        """Rigorous (lo, hi) of the model: squares ε_i² in [0, 1], other monomials in [-1, 1]."""
        d = self.d
        c, lin, quad = t.P[0], t.P[1 : 1 + d], t.P[1 + d :]
        a = np.sum(np.abs(lin), axis=0) + np.sum(np.abs(quad[~self.sq]), axis=0)
        sq = quad[self.sq]
        qlo = np.sum(np.minimum(_lo(sq), _ZERO), axis=0)
        qhi = np.sum(np.maximum(_up(sq), _ZERO), axis=0)
        return _lo(c - a + qlo - t.R), _up(c + a + qhi + t.R)

    def range_of(self, n: Node) -> tuple:
        if n.id not in self.bnd:
            self.bnd[n.id] = self.range(self.z[n.id])
        return self.bnd[n.id]

    def _const(self, lo, hi) -> _TM:
        P = self._zeros(len(lo))
        P[0] = (lo + hi) / 2
        return _TM(P, _up((hi - lo) / 2))

    def _linear(self, t: _TM, lam, mid, gap) -> _TM:
        P = lam[None] * t.P
        P[0] = P[0] + mid
        return _TM(P, _up(np.abs(lam) * t.R + gap))

    # -- the forward domain ----------------------------------------------------------------------

    def enter(self, i, e):
        if e.kind in (Kind.AFFINE, Kind.MUL):
            return
        for n in e.node_inputs:
            self.range_of(n)
        if e.kind == Kind.SELECT:
            self.bnd[e.out.id] = exact_select(e, self._ends)[2:]
            return
        if e.kind == Kind.CONCRETIZE:
            self.bnd[e.out.id] = self._concretize(i, e)
            return
        x = e.inputs[0]
        lo, hi = self.range_of(x)
        if e.prim in _PIECEWISE:
            if e.prim is relu_p:
                self.bnd[e.out.id] = (np.maximum(lo, _ZERO), np.maximum(hi, _ZERO))
            else:
                self.bnd[e.out.id] = (
                    np.maximum(np.maximum(lo, -hi), _ZERO),
                    np.maximum(-lo, hi),
                )
            return
        s = self._smooth(i, e)
        ends = []
        for r in range(x.size):
            try:
                ends.append(_smooth.enclose(s, _frac(lo[r]), _frac(hi[r]), prec=PREC))
            except (ValueError, ArithmeticError, NotImplementedError) as err:
                raise _Reject(f"{self.where(i, e)} index {r}: no enclosure ({err})") from None
        self.bnd[e.out.id] = (_arr(_A(v[0]) for v in ends), _arr(_A(v[1]) for v in ends))

    def _smooth(self, i, e):
        s = _smooth_of(e)
        if s is None:
            raise _Reject(f"{self.where(i, e)}: no exact description of {e.fn!r}")
        return s

    def leave(self, i, e, t):
        if e.out.id not in self.bnd:
            self.z[e.out.id] = t
            return
        ilo, ihi = self.bnd[e.out.id]
        zlo, zhi = self.range(t)
        lo, hi = np.maximum(ilo, zlo), np.minimum(ihi, zhi)
        if any(h < v for v, h in zip(lo, hi, strict=True)):
            raise _Reject(f"{self.where(i, e)}: derived enclosures do not meet")
        self.bnd[e.out.id] = (lo, hi)
        better = self.choice(i, e, "interval", e.out.size)
        c = self._const(ilo, ihi)
        self.z[e.out.id] = _TM(np.where(better[None], c.P, t.P), np.where(better, c.R, t.R))

    def affine(self, i, e):
        if i not in self.aff:
            a = _Affine(e)
            conv = np.frompyfunc(_A, 1, 1)

            def arbmat(J):
                if J is None:
                    return None
                m = np.array(J.entries(), dtype=object).reshape(J.nrows(), J.ncols())
                return conv(m)

            Js = [arbmat(J) for J in a.J]
            self.aff[i] = (conv(a.f0), Js, [None if J is None else np.abs(J) for J in Js])
        f0, Js, Jabs = self.aff[i]
        P = self._zeros(e.out.size)
        P[0] = P[0] + f0
        R = _arr([_ZERO] * e.out.size)
        for n, J, Ja in zip(e.node_inputs, Js, Jabs, strict=True):
            t = self.z[n.id]
            if J is None:
                P, R = P + t.P, R + t.R
            else:
                P, R = P + t.P @ J, R + t.R @ Ja
        return _TM(P, _up(R))

    def unary(self, i, e):
        x = e.inputs[0]
        t = self.z[x.id]
        lo, hi = self.bnd[x.id]
        if e.prim in _PIECEWISE:
            pos, neg = lo >= 0, hi <= 0
            sign = np.where(pos, 1, -1 if e.prim is lax.abs_p else 0)
            lin = self._linear(t, _arr(arb(int(v)) for v in sign), _ZERO, _ZERO)
            c = self._const(*self.bnd[e.out.id])
            exact = (pos | neg).astype(bool)
            return _TM(np.where(exact[None], lin.P, c.P), np.where(exact, lin.R, c.R))
        if e.prim in _LAGRANGE:
            return self._taylor(e.prim, t, lo, hi, self.choice(i, e, "order2", e.out.size))
        return self._chord(i, e, t, lo, hi)

    def _chord(self, i, e, t: _TM, lo, hi) -> _TM:
        """The producer's chord relaxation where `_smooth.check_line` proves it, else the output
        interval."""
        s = self._smooth(i, e)
        l64 = np.array([float(_frac(v)) for v in lo])
        u64 = np.array([float(_frac(v)) for v in hi])
        lam, b_l, _, b_u = (
            np.asarray(v, np.float64)
            for v in e.rule.relax(l64, u64, Options(float_sound=True, program=fm.REAL))
        )
        c = self._const(*self.bnd[e.out.id])
        P, R = c.P.copy(), c.R.copy()
        for r in range(len(lo)):
            if not (np.isfinite(lam[r]) and np.isfinite(b_l[r]) and np.isfinite(b_u[r])):
                continue
            a, bl, bu = Fraction(lam[r]), Fraction(b_l[r]), Fraction(b_u[r])
            l, u = _frac(lo[r]), _frac(hi[r])
            ok = _smooth.check_line(s, a, bl, l, u, "lower") and _smooth.check_line(
                s, a, bu, l, u, "upper"
            )
            if ok:
                P[:, r] = _A(a) * t.P[:, r]
                P[0, r] = P[0, r] + _A((bl + bu) / 2)
                R[r] = (abs(_A(a)) * t.R[r] + _A((bu - bl) / 2)).upper()
        return _TM(P, R)

    def _taylor(self, prim, t: _TM, lo, hi, use) -> _TM:
        """f(c0 + δ), δ = Q(ε) + ρ: f(c0) + f'(c0) δ + f''(c0)/2 δ² + f'''(ξ)/6 δ³ where `use`,
        else the first-order form with f''(ξ)/2 δ² (the producer's choice)."""
        d = self.d
        c0 = _mid(t.P[0])  # exact: the expansion point
        rho = _up(t.R + np.abs(t.P[0] - c0))
        Q = t.P.copy()
        Q[0] = _ZERO
        lin, quad = Q[1 : 1 + d], Q[1 + d :]
        SQ = np.sum(np.abs(Q), axis=0)
        D = _up(SQ + rho)
        # sup sech² over the hull of [lo, hi] and c0 (the Lagrange point lies in it)
        near = [
            _ZERO if (min(a, c) <= 0 <= max(b, c)) else min(abs(min(a, c)), abs(max(b, c)))
            for a, b, c in zip(lo, hi, c0, strict=True)
        ]
        s_hi = _arr((1 / v.cosh() ** 2).upper() for v in near)
        (top2, per2), (top3, per3) = _LAGRANGE[prim]
        K2 = np.minimum(_A(top2), _up(_A(per2) * s_hi))
        K3 = np.minimum(_A(top3), _up(_A(per3) * s_hi))
        tt = np.frompyfunc(lambda v: v.tanh(), 1, 1)(c0)
        s = 1 - tt * tt
        if prim is lax.tanh_p:
            f0, f1, f2 = tt, s, -tt * s
        else:
            f0, f1, f2 = s, -2 * tt * s, s * (3 * tt * tt - 1)
        L1 = np.sum(np.abs(lin), axis=0)
        L2 = np.sum(np.abs(quad), axis=0)
        P1 = f1[None] * Q
        P1[0] = f0
        P2 = P1 + f2[None] * np.concatenate([self._zeros(len(c0))[: 1 + d], self._cross(lin, lin)])
        af1, af2 = np.abs(f1), np.abs(f2)
        R1 = _up(af1 * rho + K2 * D * D / 2)
        R2 = _up(
            af1 * rho + af2 * (2 * L1 * L2 + L2 * L2 + 2 * SQ * rho + rho * rho) + K3 * D**3 / 6
        )
        return _TM(np.where(use[None], P2, P1), np.where(use, R2, R1))

    def mul(self, i, e):
        x, y = e.node_inputs
        shape = e.out.shape
        d = self.d

        def bc(n):
            idx = _bcast_index(n, shape)
            t = self.z[n.id]
            return t.P[:, idx], t.R[idx]

        (Px, Rx), (Py, Ry) = bc(x), bc(y)
        x0, xl, xq = Px[0], Px[1 : 1 + d], Px[1 + d :]
        y0, yl, yq = Py[0], Py[1 : 1 + d], Py[1 + d :]
        quad = x0[None] * yq + y0[None] * xq + self._cross(xl, yl)
        P = np.concatenate([(x0 * y0)[None], x0[None] * yl + y0[None] * xl, quad])
        Lx, Qx = np.sum(np.abs(xl), 0), np.sum(np.abs(xq), 0)
        Ly, Qy = np.sum(np.abs(yl), 0), np.sum(np.abs(yq), 0)
        Sx, Sy = np.sum(np.abs(Px), 0), np.sum(np.abs(Py), 0)
        R = Sx * Ry + Sy * Rx + Rx * Ry + (Lx * Qy + Ly * Qx + Qx * Qy)
        return _TM(P, _up(R))

    def _ends(self, v, shape) -> tuple:
        """Exact ends of an operand (node or constant) broadcast to `shape`, flat."""
        if isinstance(v, Node):
            idx = _bcast_index(v, shape)
            return tuple(a[idx] for a in self.bnd[v.id])
        c = np.broadcast_to(np.asarray(v, np.float64), shape).reshape(-1)
        c = _arr(_A(x) for x in c.tolist())
        return c, c

    def _concretize(self, i, e) -> tuple:
        """The exact image of the operands' intervals for selecting / rounding primitives."""
        q = np.frompyfunc(_q1, 1, 1)
        bnd = {n.id: (q(self.bnd[n.id][0]), q(self.bnd[n.id][1])) for n in e.node_inputs}
        img = _monotone_image(e.prim, e.params, e.inputs, bnd, e.out)
        if img is None:
            raise _Reject(
                f"{self.where(i, e)}: cannot evaluate {_name(e)} exactly; certify this program "
                "with method 'crown'"
            )
        return tuple(_arr(_A(v) for v in a) for a in img)

    def select(self, i, e):
        return self._const(*self.bnd[e.out.id])

    def concretize(self, i, e):
        return self._const(*self.bnd[e.out.id])


def derive(cert: Certificate, tape: Tape) -> list:
    """Rigorous (lower, upper) per tape output (fmpq object vectors) of the real-valued program over
    the certificate's box, by Taylor models in arb."""
    if cert.spec is not None:
        raise _Reject("a taylor certificate has no spec (the producer bounds outputs only)")
    if len(cert.passes) != 1 or set(cert.passes[0]) != {"taylor_choices"}:
        raise _Reject("a taylor certificate has one pass: the producer's choices")
    old = ctx.prec
    ctx.prec = PREC
    try:
        p = _BallTaylor(tape, cert.box, cert.passes[0]["taylor_choices"])
        forward(tape, p)
        res = []
        for o in tape.outputs:
            if isinstance(o, Node):
                lo, hi = p.range_of(o)
                lo, hi = [_q1(v) for v in lo], [_q1(v) for v in hi]
            else:
                v = np.asarray(o, np.float64).reshape(-1).tolist()
                lo = hi = [_q1(_A(x)) for x in v]
            res.append((np.array(lo, dtype=object), np.array(hi, dtype=object)))
        return res
    finally:
        ctx.prec = old


def _q1(v: arb) -> fmpq:
    f = _frac(v)
    return fmpq(f.numerator, f.denominator)


register_checker(
    "taylor",
    derive,
    "order-2 Taylor models of the real-valued program re-derived in arb ball arithmetic "
    f"({PREC} bits; nothing float trusted)",
)
