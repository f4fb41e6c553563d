"""Exact optima and LP relaxations of one-hidden-layer ReLU networks (scipy's HiGHS).

The network is `y = M relu(W x + b) + m` over a box `lo <= x <= hi` (`W` dense or scipy
sparse; `M` the spec rows composed with everything linear after the ReLU layer: pooling,
flattening, the last linear layer). Per row of `M` it gives:

- `optimum(net, row, "milp")`: the exact minimum (HiGHS branch and cut, big-M formulation with a
  binary only on the unstable neurons whose weight in the row is negative: the minimum wants
  those ReLUs large, the others are exact as `y >= 0, y >= z`), its minimiser, and the network
  re-evaluated in float64 at that point (`value`: an upper bound of the true minimum, reached);
- `optimum(net, row, "triangle")`: the LP of the triangle relaxation of every unstable neuron,
  what CROWN and alpha-CROWN bound from below (they are feasible points of its dual), so a
  correct CROWN bound is never above it;
- `optimum(net, row, "ideal")`: the LP of the convex hull of each unstable neuron over the input
  box in input space (Anderson et al. 2020, "Strong mixed-integer programming formulations for
  trained neural networks": one inequality per subset of the neuron's inputs, so only for a
  small fan-in, as in a convolution's first layer).

These are reference computations independent of tljax (numpy and HiGHS): the tests check that
tljax's bounds lie below the true minimum and below the triangle LP. HiGHS works in float64 with
tolerances, so only `value` (a real point's real output) is a safe bound from above.

Command line (`python bench/relu_milp.py [--props 7,12,14] [--milp-limit S]`): the verivital
average-pooling CNN's eps=0.04 properties that ReLU splitting could not verify in 300 s (conv
1->32 2x2, ReLU, 4x4 average pool, linear 1152->10): per spec row CROWN leaves open, tljax's
CROWN and alpha-CROWN (with the input-space hull planes) lower bounds of the margin beside the
triangle LP, the input-space hull LP and the MILP optimum, with times.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import pathlib
import sys
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

REPO = pathlib.Path(__file__).resolve().parents[1]
VERIVITAL = REPO / ".." / "shared" / "benchmarks" / "verivital"
# at most this many inputs per neuron for the input-space hull (2^k inequalities each)
IDEAL_MAX_FAN_IN = 10


@dataclasses.dataclass
class Net:
    """`y = M relu(W x + b) + m` over `lo <= x <= hi` (float64)."""

    W: sp.csr_matrix
    b: np.ndarray
    M: np.ndarray
    m: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self):
        self.W = sp.csr_matrix(self.W, dtype=np.float64)
        self.b, self.M, self.m = (np.asarray(a, np.float64) for a in (self.b, self.M, self.m))
        self.lo, self.hi = (np.asarray(a, np.float64) for a in (self.lo, self.hi))
        if np.any(self.lo > self.hi):
            raise ValueError("the box has lo > hi")
        # exact interval bounds of the ReLU inputs (the hidden layer reads the box directly)
        Wp, Wn = self.W.maximum(0), self.W.minimum(0)
        self.l = Wp @ self.lo + Wn @ self.hi + self.b
        self.u = Wp @ self.hi + Wn @ self.lo + self.b

    def __call__(self, x):
        """Outputs (float64) at points `x` (n,) or (P, n)."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        h = np.maximum(self.W @ x.T + self.b[:, None], 0.0)
        out = self.M @ h + self.m[:, None]
        return out.T if out.shape[1] > 1 else out[:, 0]


@dataclasses.dataclass
class Optimum:
    bound: float  # the solver's optimal objective (min of row r of y, or of its relaxation)
    x: np.ndarray  # its minimiser, clipped into the box
    value: float  # the network's row r at x, float64: a reached value, >= the true minimum
    seconds: float
    status: str


def optimum(net: Net, row: int, kind: str = "milp", time_limit: float = 600.0) -> Optimum:
    """Minimum of output `row` over the box: "milp" exact, "triangle" or "ideal" LP relaxations."""
    if kind not in ("milp", "triangle", "ideal"):
        raise ValueError(f"kind must be 'milp', 'triangle' or 'ideal', got {kind!r}")
    w = net.M[row]
    n = net.lo.size
    W = net.W
    live = np.flatnonzero((w != 0) & (net.u > 0))
    active = live[net.l[live] >= 0]
    unstable = live[net.l[live] < 0]
    neg = unstable[w[unstable] < 0]
    # variables: x (n), y per unstable neuron, d per negative-weight unstable neuron
    ny, nd = unstable.size, (neg.size if kind != "triangle" else 0)
    yi = {j: n + k for k, j in enumerate(unstable)}
    di = {j: n + ny + k for k, j in enumerate(neg)} if nd else {}
    nv = n + ny + nd
    cost = np.zeros(nv)
    const = float(net.m[row])
    # active neurons are affine: w_j (W_j x + b_j)
    if active.size:
        cost[:n] += np.asarray(W[active].T @ w[active]).ravel()
        const += float(w[active] @ net.b[active])
    lb = np.concatenate([net.lo, np.zeros(ny), np.zeros(nd)])
    ub = np.concatenate([net.hi, net.u[unstable], np.ones(nd)])
    rows_i, rows_j, rows_v, rl, ru = [], [], [], [], []

    def add(entries, low, high):
        r = len(rl)
        for j, v in entries:
            rows_i.append(r)
            rows_j.append(j)
            rows_v.append(v)
        rl.append(low)
        ru.append(high)

    for j in unstable:
        cost[yi[j]] = w[j]
        start, end = W.indptr[j], W.indptr[j + 1]
        idx, coef = W.indices[start:end], W.data[start:end]
        z = list(zip(idx.tolist(), (-coef).tolist(), strict=True))
        b, lj, uj = float(net.b[j]), float(net.l[j]), float(net.u[j])
        add([(yi[j], 1.0), *z], b, np.inf)  # y >= z (y >= 0 is its lower bound)
        if w[j] > 0:
            continue
        if kind == "triangle":  # y <= u (z - l) / (u - l)
            s = uj / (uj - lj)
            add([(yi[j], 1.0), *[(i, s * c) for i, c in z]], -np.inf, s * (b - lj))
            continue
        d = di[j]
        # big-M: y <= z - l (1 - d), y <= u d (the subsets "all inputs" and "none" below)
        subsets = [range(idx.size)] if kind == "milp" else None
        if kind == "ideal":
            if idx.size > IDEAL_MAX_FAN_IN:
                raise ValueError(
                    f"neuron {j} reads {idx.size} inputs: the input-space hull has 2^{idx.size} "
                    f"inequalities (at most {IDEAL_MAX_FAN_IN} inputs supported)"
                )
            subsets = [
                s
                for r in range(1, idx.size + 1)
                for s in itertools.combinations(range(idx.size), r)
            ]
        lo_w = np.where(coef >= 0, net.lo[idx], net.hi[idx])  # where w_i x_i is smallest
        hi_w = np.where(coef >= 0, net.hi[idx], net.lo[idx])
        add([(yi[j], 1.0), (d, -uj)], -np.inf, 0.0)
        for subset in subsets:
            # y <= sum_I w_i (x_i - lo_w_i (1 - d)) + (b + sum_{not I} w_i hi_w_i) d
            inside = np.zeros(idx.size, bool)
            inside[list(subset)] = True
            rhs = -float(np.sum(coef[inside] * lo_w[inside]))
            dcoef = b + float(
                np.sum(coef[inside] * lo_w[inside]) + np.sum(coef[~inside] * hi_w[~inside])
            )
            ent = [(yi[j], 1.0), (d, -dcoef)]
            ent += [(int(i), -float(c)) for i, c in zip(idx[inside], coef[inside], strict=True)]
            add(ent, -np.inf, rhs)
    A = sp.csr_matrix((rows_v, (rows_i, rows_j)), shape=(len(rl), nv))
    rl, ru = np.asarray(rl), np.asarray(ru)
    t0 = time.perf_counter()
    if kind == "milp":
        integ = np.zeros(nv)
        integ[n + ny :] = 1
        res = milp(
            cost,
            integrality=integ,
            bounds=Bounds(lb, ub),
            constraints=LinearConstraint(A, rl, ru),
            options={"time_limit": time_limit},
        )
        x, fun, status = res.x, res.fun, res.message
    else:
        # linprog wants A_ub v <= b_ub: the two-sided rows split
        fin_u, fin_l = np.isfinite(ru), np.isfinite(rl)
        A_ub = sp.vstack([A[fin_u], -A[fin_l]]).tocsr()
        b_ub = np.concatenate([ru[fin_u], -rl[fin_l]])
        res = linprog(
            cost, A_ub=A_ub, b_ub=b_ub, bounds=np.stack([lb, ub], 1), method="highs",
            options={"time_limit": time_limit},
        )  # fmt: skip
        x, fun, status = res.x, res.fun, res.message
    secs = time.perf_counter() - t0
    if x is None:
        return Optimum(np.nan, np.full(n, np.nan), np.nan, secs, status)
    xs = np.clip(x[:n], net.lo, net.hi)
    return Optimum(float(fun) + const, xs, float(np.atleast_1d(net(xs))[row]), secs, status)


def conv_matrix(kernel, bias, height, width):
    """The dense-in-structure sparse matrix of a stride-1, unpadded 2-D convolution (NCHW,
    one input image `(C_in, height, width)` flattened), and its bias per output."""
    kernel = np.asarray(kernel, np.float64)
    c_out, c_in, kh, kw = kernel.shape
    ho, wo = height - kh + 1, width - kw + 1
    rows, cols, vals = [], [], []
    for o in range(c_out):
        for i in range(ho):
            for j in range(wo):
                r = (o * ho + i) * wo + j
                for c in range(c_in):
                    for a in range(kh):
                        for e in range(kw):
                            rows.append(r)
                            cols.append((c * height + i + a) * width + j + e)
                            vals.append(kernel[o, c, a, e])
    W = sp.csr_matrix((vals, (rows, cols)), shape=(c_out * ho * wo, c_in * height * width))
    return W, np.repeat(np.asarray(bias, np.float64), ho * wo)


def avgpool_matrix(channels, height, width, k):
    """`k x k` average pooling with stride `k` (rows and columns past the last window dropped)
    of `(channels, height, width)`, as a sparse matrix."""
    ho, wo = height // k, width // k
    rows, cols = [], []
    for c in range(channels):
        for i in range(ho):
            for j in range(wo):
                for a in range(k):
                    for e in range(k):
                        rows.append((c * ho + i) * wo + j)
                        cols.append((c * height + k * i + a) * width + k * j + e)
    shape = (channels * ho * wo, channels * height * width)
    return sp.csr_matrix((np.full(len(rows), 1.0 / (k * k)), (rows, cols)), shape=shape)


def verivital_avgpool(box, spec):
    """The verivital Convnet_avgpool network as a `Net` for spec rows `spec` (R, 10), read
    from its ONNX initializers with onnx (not through tljax)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(VERIVITAL / "onnx" / "Convnet_avgpool.onnx"))
    p = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    W, b = conv_matrix(p["conv1.0.weight"], p["conv1.0.bias"], 28, 28)
    pool = avgpool_matrix(32, 27, 27, 4)
    spec = np.asarray(spec, np.float64)
    M = np.asarray((pool.T @ (spec @ p["out.weight"]).T).T)
    return Net(W, b, M, spec @ p["out.bias"], box[0], box[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--props", default="7,12,14")
    ap.add_argument("--eps", default="0.04")
    ap.add_argument("--milp-limit", type=float, default=300.0)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import jax.numpy as jnp

    import tljax
    from tljax.verify import load_instance

    onnx_path = VERIVITAL / "onnx" / "Convnet_avgpool.onnx"
    print("(* the MILP hit --milp-limit: the best point found, not a proven minimum)")
    print("| prop | row | tljax crown | tljax alpha-crown | triangle LP | input-space hull LP "
          "| MILP optimum (value at its point) | LP / hull / MILP s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for prop_id in args.props.split(","):
        vnn = VERIVITAL / "vnnlib" / "avgpool_specs" / f"prop_{prop_id}_{args.eps}.vnnlib"
        fn, prop, fargs, shape = load_instance(str(onnx_path), str(vnn))
        lo, hi = (np.asarray(a, np.float64) for a in prop.input_boxes[0])
        # each disjunct is one row C y <= d (unsafe): its margin C y - d > 0 rules it out
        spec = np.concatenate([np.asarray(c, np.float64).reshape(-1, 10) for c, _ in prop.unsafe])
        dvec = np.concatenate([np.asarray(d, np.float64).reshape(-1) for _, d in prop.unsafe])
        box = tljax.Box(
            jnp.asarray(lo, jnp.float32).reshape(shape), jnp.asarray(hi, jnp.float32).reshape(shape)
        )

        def g(x, fn=fn, fargs=fargs, spec=spec):
            return jnp.asarray(spec, jnp.float32) @ fn(x, *fargs).reshape(-1)

        crown = np.asarray(tljax.bound(g, box, method="crown").lower, np.float64) - dvec
        alpha = np.asarray(tljax.bound(g, box, method="alpha-crown").lower, np.float64) - dvec
        net = verivital_avgpool((lo, hi), spec)
        for r in np.flatnonzero(crown <= 0):
            tri = optimum(net, int(r), "triangle")
            hull = optimum(net, int(r), "ideal")
            mip = optimum(net, int(r), "milp", time_limit=args.milp_limit)
            t, h, o, v = (a - dvec[r] for a in (tri.bound, hull.bound, mip.bound, mip.value))
            star = "" if mip.status.startswith("Optimization terminated") else " *"
            print(
                f"| {prop_id} | {r} | {crown[r]:.4f} | {alpha[r]:.4f} | {t:.4f} | {h:.4f} | "
                f"{o:.4f} ({v:.4f}){star} | "
                f"{tri.seconds:.1f} / {hull.seconds:.1f} / {mip.seconds:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
