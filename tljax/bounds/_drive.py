"""The one forward and the one backward driver over a tape.

Every abstract domain of the bounds is a `Forward` (intervals, CROWN's intermediate bounds,
zonotopes, the exact checker's derived intervals) and, where it back-substitutes, a `Backward`
(CROWN in float with its rounding slack, the exact checker in rationals). A domain says, per
equation `Kind`, what an equation does to its values; the drivers own the walk: the order, which
equations a backward pass reaches, the coefficients each operand accumulates, and the inputs at
the end. A new kind is one method per domain, dispatched here by the `Kind` enum (never by a
name).
"""

from __future__ import annotations

from ._rules import Kind
from ._tape import Node, Tape, TapeEqn


class Forward:
    """A domain's transfer functions for the forward driver.

    `enter(i, e)` runs before equation `i` (tighten or check its operands), the `Kind` method
    computes the output's abstract value, `leave(i, e, value)` stores it.
    """

    def enter(self, i: int, e: TapeEqn) -> None:
        del i, e

    def leave(self, i: int, e: TapeEqn, value) -> None:
        raise NotImplementedError

    def affine(self, i: int, e: TapeEqn):
        raise NotImplementedError

    def unary(self, i: int, e: TapeEqn):
        raise NotImplementedError

    def mul(self, i: int, e: TapeEqn):
        raise NotImplementedError

    def select(self, i: int, e: TapeEqn):
        raise NotImplementedError

    def concretize(self, i: int, e: TapeEqn):
        raise NotImplementedError


def forward_step(dom: Forward, i: int, e: TapeEqn):
    """The abstract value of equation `i` in `dom` (the `Kind` method, without enter/leave)."""
    k = e.kind
    if k is Kind.AFFINE:
        return dom.affine(i, e)
    if k is Kind.UNARY:
        return dom.unary(i, e)
    if k is Kind.MUL:
        return dom.mul(i, e)
    if k is Kind.SELECT:
        return dom.select(i, e)
    if k is Kind.CONCRETIZE:
        return dom.concretize(i, e)
    raise TypeError(f"tape equation {i} ({e.where()}) has no bound kind: {k!r}")


def forward(tape: Tape, dom: Forward) -> Forward:
    """Runs `dom` over every equation of `tape`, in order."""
    for i, e in enumerate(tape.eqns):
        dom.enter(i, e)
        dom.leave(i, e, forward_step(dom, i, e))
    return dom


class Backward:
    """A domain's transposed transfer functions for the backward driver.

    Each `Kind` method receives the coefficients `L` (rows first) on the output of equation `i`,
    keeps whatever constant terms the equation contributes, and returns the pairs
    `(operand node, coefficients)` it passes on. `input(n, L)` concretizes the coefficients that
    reach an input node. `enter(e, acc)` runs before each equation the pass reaches (`e` is None
    before the inputs) and may rewrite the pending coefficients `acc` (node id -> coefficients).
    """

    def enter(self, e: TapeEqn | None, acc: dict) -> None:
        del e, acc

    def affine(self, i: int, e: TapeEqn, L) -> list:
        raise NotImplementedError

    def unary(self, i: int, e: TapeEqn, L) -> list:
        raise NotImplementedError

    def mul(self, i: int, e: TapeEqn, L) -> list:
        raise NotImplementedError

    def select(self, i: int, e: TapeEqn, L) -> list:
        raise NotImplementedError

    def concretize(self, i: int, e: TapeEqn, L) -> list:
        raise NotImplementedError

    def input(self, n: Node, L) -> None:
        raise NotImplementedError


def _backward_step(adj: Backward, i: int, e: TapeEqn, L) -> list:
    k = e.kind
    if k is Kind.AFFINE:
        return adj.affine(i, e, L)
    if k is Kind.UNARY:
        return adj.unary(i, e, L)
    if k is Kind.MUL:
        return adj.mul(i, e, L)
    if k is Kind.SELECT:
        return adj.select(i, e, L)
    if k is Kind.CONCRETIZE:
        return adj.concretize(i, e, L)
    raise TypeError(f"tape equation {i} ({e.where()}) has no bound kind: {k!r}")


def backward(tape: Tape, starts: list, adj: Backward) -> Backward:
    """Back-substitutes the coefficients `starts` (pairs `(node, coefficients)`) through `tape`
    down to its inputs: each equation is visited once, after every equation that reads its output
    has passed its coefficients on (the tape is in topological order)."""
    acc: dict = {}

    def add(n: Node, g):
        acc[n.id] = acc[n.id] + g if n.id in acc else g

    for n, lam in starts:
        add(n, lam)
    end = max((n.eqn_index if n.eqn_index is not None else -1) for n, _ in starts)
    for i in range(end, -1, -1):
        e = tape.eqns[i]
        if e.out.id not in acc:
            continue
        adj.enter(e, acc)
        L = acc.pop(e.out.id)
        for n, g in _backward_step(adj, i, e, L):
            add(n, g)
    for n in tape.inputs:
        if n.id in acc:
            adj.enter(None, acc)
            adj.input(n, acc.pop(n.id))
    return adj
