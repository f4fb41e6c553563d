"""A small residual network and reference computations for it, independent of tljax.

The network (`resnet(seed)`) is a ResNet in miniature: a 3x3 convolution stem, one identity
residual block (conv, ReLU, conv, + input, ReLU) and one downsampling block (stride-2 conv, ReLU,
conv, + a stride-2 1x1 projection of its input, ReLU), then a linear layer: 1x5x5 inputs, 297
ReLUs, 4 outputs. It is held as a DAG of dense layers (`DagNet`: every ReLU layer's input is an
affine map of the network input and of earlier ReLU outputs), from which this module computes,
in float64 numpy and scipy's HiGHS only:

- `DagNet.crown()`: CROWN (Zhang et al. 2018) by back-substitution through the DAG, every ReLU
  input bounded by its own pass and intersected with its interval, the adaptive lower slope
  (1 where u > -l); the bounds tljax's `method="crown"` computes for the same network;
- `DagNet.minimum(w)`: the exact minimum of `w . y` over the box (MILP, big-M from the CROWN
  bounds), its minimiser, and the network's float64 value there;
- `onnx_model(net)`: the same network as an ONNX graph (Conv with pads and strides, Relu, Add,
  Flatten, Gemm), for `tljax verify`; `jax_fn(net)`: as a JAX function of an NCHW image.

Command line (`python bench/resnet_ref.py [--seeds 0,1] [--eps 0.02,0.05,0.1,0.2]`): local
robustness properties of the network around a fixed input per eps, the MILP verdict beside
`tljax.verify`'s verdict, time and domains.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

SIDE, C_STEM, C_DOWN, N_OUT = 5, 3, 4, 4


def conv_matrix(kernel, height, width, stride=1, pad=0):
    """The sparse matrix of a 2-D convolution (NCHW, cross-correlation as ONNX's Conv) on one
    `(C_in, height, width)` image flattened row-major, and the output's (C_out, Ho, Wo)."""
    kernel = np.asarray(kernel, np.float64)
    c_out, c_in, kh, kw = kernel.shape
    ho = (height + 2 * pad - kh) // stride + 1
    wo = (width + 2 * pad - kw) // stride + 1
    o, i, j, c, a, e = np.meshgrid(*(np.arange(k) for k in (c_out, ho, wo, c_in, kh, kw)),
                                   indexing="ij")  # fmt: skip
    y, x = i * stride + a - pad, j * stride + e - pad  # the input pixel each tap reads
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    rows = ((o * ho + i) * wo + j)[inside]
    cols = ((c * height + y) * width + x)[inside]
    shape = (c_out * ho * wo, c_in * height * width)
    return sp.csr_matrix((kernel[o, c, a, e][inside], (rows, cols)), shape=shape), (c_out, ho, wo)


@dataclasses.dataclass
class Layer:
    """`z = b + sum_j A[j] h_j` (h_0 the input, h_j = relu(z_j) for j >= 1)."""

    b: np.ndarray
    A: dict


@dataclasses.dataclass
class DagNet:
    layers: list  # Layer per ReLU layer 1..L
    out: Layer  # the outputs, affine in the h_j (no ReLU)
    lo: np.ndarray
    hi: np.ndarray
    params: dict  # the convolution kernels and biases the layers were built from

    def __call__(self, x):
        """Outputs (float64) at points `x` (n,) or (P, n), and the ReLU inputs."""
        x = np.atleast_2d(np.asarray(x, np.float64)).T
        h = [x]
        zs = []
        for layer in self.layers:
            z = layer.b[:, None] + sum(A @ h[j] for j, A in layer.A.items())
            zs.append(z)
            h.append(np.maximum(z, 0.0))
        y = self.out.b[:, None] + sum(A @ h[j] for j, A in self.out.A.items())
        return y.T, [z.T for z in zs]

    def with_box(self, lo, hi):
        return dataclasses.replace(
            self, lo=np.asarray(lo, np.float64).ravel(), hi=np.asarray(hi, np.float64).ravel()
        )

    # -- bounds ------------------------------------------------------------------------------

    def _interval(self, layer, bounds):
        lo = layer.b.copy()
        hi = layer.b.copy()
        for j, A in layer.A.items():
            if j == 0:
                l, u = self.lo, self.hi
            else:
                l, u = np.maximum(bounds[j][0], 0.0), np.maximum(bounds[j][1], 0.0)
            Ap, An = A.maximum(0), A.minimum(0)
            lo += Ap @ l + An @ u
            hi += Ap @ u + An @ l
        return lo, hi

    def _backsub(self, layer, lam, bounds, k):
        """Lower bound of `lam @ z` (`z` = `layer`'s output) over the box, with the ReLUs of
        layers 1..k-1 relaxed over `bounds`."""
        coef = {}

        def add(j, m):
            coef[j] = coef[j] + m if j in coef else m

        const = lam @ layer.b
        for j, A in layer.A.items():
            add(j, np.asarray((A.T @ lam.T).T))
        for j in range(k - 1, 0, -1):
            C = coef.pop(j, None)
            if C is None:
                continue
            l, u = bounds[j]
            a_l, a_u, b_u = _relax(l, u)
            Cp, Cn = np.maximum(C, 0.0), np.minimum(C, 0.0)
            const = const + Cn @ b_u
            D = Cp * a_l + Cn * a_u
            const = const + D @ self.layers[j - 1].b
            for i, A in self.layers[j - 1].A.items():
                add(i, np.asarray((A.T @ D.T).T))
        C0 = coef.get(0, np.zeros((lam.shape[0], self.lo.size)))
        return const + np.maximum(C0, 0.0) @ self.lo + np.minimum(C0, 0.0) @ self.hi

    def _bound(self, layer, bounds, k):
        n = layer.b.size
        eye = np.eye(n)
        clo = self._backsub(layer, eye, bounds, k)
        chi = -self._backsub(layer, -eye, bounds, k)
        ilo, ihi = self._interval(layer, bounds)
        return np.maximum(clo, ilo), np.minimum(chi, ihi)

    def crown(self):
        """CROWN bounds: (list of (l, u) per ReLU layer's input, (l, u) of the outputs)."""
        bounds = {}
        for k, layer in enumerate(self.layers, start=1):
            bounds[k] = self._bound(layer, bounds, k)
        return [bounds[k] for k in range(1, len(self.layers) + 1)], self._bound(
            self.out, bounds, len(self.layers) + 1
        )

    # -- exact minimum -----------------------------------------------------------------------

    def minimum(self, w, time_limit=120.0):
        """Exact minimum of `w . y` over the box: (bound, minimiser, float64 value there, s)."""
        pre, _ = self.crown()
        n = self.lo.size
        # variables: x, then h_k per layer, then a binary per unstable neuron
        offs, size = [n], n
        for layer in self.layers:
            size += layer.b.size
            offs.append(size)
        unstable = [np.flatnonzero((lo < 0) & (hi > 0)) for lo, hi in pre]
        d_off = size
        n_bin = sum(u.size for u in unstable)
        nv = size + n_bin
        lb = np.concatenate([self.lo, *[np.zeros(lay.b.size) for lay in self.layers]])
        ub = np.concatenate([self.hi, *[np.maximum(hi, 0.0) for _, hi in pre]])
        lb = np.concatenate([lb, np.zeros(n_bin)])
        ub = np.concatenate([ub, np.ones(n_bin)])
        blocks, rl, ru = [], [], []

        def zrow(layer):
            # z as a row block over all variables: [A_j at h_j's columns]
            m = sp.lil_matrix((layer.b.size, nv))
            for j, A in layer.A.items():
                start = 0 if j == 0 else offs[j - 1]
                m[:, start : start + A.shape[1]] = A
            return m.tocsr()

        d = d_off
        for k, layer in enumerate(self.layers):
            lo, hi = pre[k]
            Z = zrow(layer)
            H = sp.csr_matrix(
                (
                    np.ones(layer.b.size),
                    (np.arange(layer.b.size), offs[k] + np.arange(layer.b.size)),
                ),
                shape=(layer.b.size, nv),
            )
            act = np.flatnonzero(lo >= 0)
            if act.size:  # h = z
                blocks.append(H[act] - Z[act])
                rl.append(layer.b[act])
                ru.append(layer.b[act])
            un = unstable[k]
            if un.size:
                D = sp.csr_matrix(
                    (np.ones(un.size), (np.arange(un.size), d + np.arange(un.size))),
                    shape=(un.size, nv),
                )
                # h >= z;  h <= z - l (1 - d);  h <= u d
                blocks.append(H[un] - Z[un])
                rl.append(layer.b[un])
                ru.append(np.full(un.size, np.inf))
                blocks.append(H[un] - Z[un] - D.multiply(lo[un][:, None]))
                rl.append(np.full(un.size, -np.inf))
                ru.append(layer.b[un] - lo[un])
                blocks.append(H[un] - D.multiply(hi[un][:, None]))
                rl.append(np.full(un.size, -np.inf))
                ru.append(np.zeros(un.size))
                d += un.size
        A = sp.vstack(blocks).tocsr()
        cost = np.asarray(zrow(self.out).T @ np.asarray(w, np.float64)).ravel()
        const = float(np.asarray(w, np.float64) @ self.out.b)
        integ = np.zeros(nv)
        integ[d_off:] = 1
        t0 = time.perf_counter()
        res = milp(
            cost,
            integrality=integ,
            bounds=Bounds(lb, ub),
            constraints=LinearConstraint(A, np.concatenate(rl), np.concatenate(ru)),
            options={"time_limit": time_limit},
        )
        secs = time.perf_counter() - t0
        if res.x is None:
            raise RuntimeError(f"HiGHS found no solution: {res.message}")
        if not res.message.startswith("Optimization terminated successfully"):
            raise RuntimeError(f"HiGHS did not finish: {res.message}")
        x = np.clip(res.x[:n], self.lo, self.hi)
        value = float(np.asarray(w, np.float64) @ self(x)[0][0])
        return float(res.fun) + const, x, value, secs


def _relax(l, u):
    """CROWN's ReLU lines: lower slope a_l (bias 0), upper slope a_u and bias b_u."""
    pos, neg = l >= 0, u <= 0
    unst = ~(pos | neg)
    den = np.where(unst, u - l, 1.0)
    a_u = np.where(pos, 1.0, np.where(neg, 0.0, u / den))
    b_u = np.where(unst, -a_u * l, 0.0)
    a_l = np.where(pos, 1.0, np.where(neg, 0.0, (u > -l).astype(np.float64)))
    return a_l, a_u, b_u


def resnet(seed: int = 0, scale: float = 1.0) -> DagNet:
    """The network with He-scaled normal weights (times `scale`) and small biases."""
    rng = np.random.default_rng(seed)

    def kernel(co, ci, k):
        return scale * rng.normal(0.0, np.sqrt(2.0 / (ci * k * k)), (co, ci, k, k))

    def bias(c):
        return rng.normal(0.0, 0.1, c)

    p = {
        "stem": kernel(C_STEM, 1, 3), "stem_b": bias(C_STEM),
        "b1a": kernel(C_STEM, C_STEM, 3), "b1a_b": bias(C_STEM),
        "b1b": kernel(C_STEM, C_STEM, 3), "b1b_b": bias(C_STEM),
        "b2a": kernel(C_DOWN, C_STEM, 3), "b2a_b": bias(C_DOWN),
        "b2b": kernel(C_DOWN, C_DOWN, 3), "b2b_b": bias(C_DOWN),
        "proj": kernel(C_DOWN, C_STEM, 1), "proj_b": bias(C_DOWN),
    }  # fmt: skip
    side = SIDE
    half = (side + 2 - 3) // 2 + 1
    p["fc"] = scale * rng.normal(
        0.0, np.sqrt(1.0 / (C_DOWN * half * half)), (N_OUT, C_DOWN * half * half)
    )
    p["fc_b"] = bias(N_OUT)
    return build(p)


def build(p: dict) -> DagNet:
    """The `DagNet` of kernels and biases `p` (as `resnet` makes them), rounded to float32 (the
    networks run in float32: the reference uses the same weights)."""
    p = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in p.items()}
    s = SIDE
    stem, (_, h1, w1) = conv_matrix(p["stem"], s, s, 1, 1)
    b1a, _ = conv_matrix(p["b1a"], h1, w1, 1, 1)
    b1b, _ = conv_matrix(p["b1b"], h1, w1, 1, 1)
    b2a, (_, h2, w2) = conv_matrix(p["b2a"], h1, w1, 2, 1)
    b2b, _ = conv_matrix(p["b2b"], h2, w2, 1, 1)
    proj, _ = conv_matrix(p["proj"], h1, w1, 2, 0)
    eye = sp.identity(C_STEM * h1 * w1, format="csr")
    hw1, hw2 = h1 * w1, h2 * w2
    layers = [
        Layer(np.repeat(p["stem_b"], hw1), {0: stem}),
        Layer(np.repeat(p["b1a_b"], hw1), {1: b1a}),
        Layer(np.repeat(p["b1b_b"], hw1), {2: b1b, 1: eye}),
        Layer(np.repeat(p["b2a_b"], hw2), {3: b2a}),
        Layer(np.repeat(p["b2b_b"] + p["proj_b"], hw2), {4: b2b, 3: proj}),
    ]
    out = Layer(np.asarray(p["fc_b"], np.float64), {5: sp.csr_matrix(p["fc"])})
    n = s * s
    return DagNet(layers, out, np.zeros(n), np.ones(n), p)


def forward(x, q):
    """The network as a JAX function of a `(1, SIDE, SIDE)` image and weights `q` (`weights`)."""
    import jax

    def conv(x, w, b, stride, pad):
        y = jax.lax.conv_general_dilated(
            x[None], w, (stride, stride), [(pad, pad), (pad, pad)],
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )[0]  # fmt: skip
        return y + b[:, None, None]

    relu = jax.nn.relu
    h1 = relu(conv(x, q["stem"], q["stem_b"], 1, 1))
    h2 = relu(conv(h1, q["b1a"], q["b1a_b"], 1, 1))
    h3 = relu(conv(h2, q["b1b"], q["b1b_b"], 1, 1) + h1)
    h4 = relu(conv(h3, q["b2a"], q["b2a_b"], 2, 1))
    h5 = relu(conv(h4, q["b2b"], q["b2b_b"], 1, 1) + conv(h3, q["proj"], q["proj_b"], 2, 0))
    return q["fc"] @ h5.reshape(-1) + q["fc_b"]


def weights(net: DagNet) -> dict:
    """The network's weights as float32 JAX arrays, for `forward`."""
    import jax.numpy as jnp

    return {k: jnp.asarray(v, jnp.float32) for k, v in net.params.items()}


def jax_fn(net: DagNet):
    """`forward` with the network's weights closed over: a function of the image only."""
    q = weights(net)
    return lambda x: forward(x, q)


def onnx_model(net: DagNet):
    """The network as an ONNX model (input "input" of shape (1, 1, SIDE, SIDE), float32)."""
    from onnx import TensorProto, helper, numpy_helper

    p = net.params
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), name=k) for k, v in p.items()]
    nodes = []

    def conv(x, w, out, stride, pad):
        nodes.append(
            helper.make_node(
                "Conv", [x, w, w + "_b"], [out], name=out,
                strides=[stride, stride], pads=[pad] * 4,
                kernel_shape=list(np.shape(p[w])[2:]),
            )
        )  # fmt: skip

    def relu(x, out):
        nodes.append(helper.make_node("Relu", [x], [out], name=out))

    def add(a, b, out):
        nodes.append(helper.make_node("Add", [a, b], [out], name=out))

    conv("input", "stem", "z1", 1, 1)
    relu("z1", "h1")
    conv("h1", "b1a", "z2", 1, 1)
    relu("z2", "h2")
    conv("h2", "b1b", "c3", 1, 1)
    add("c3", "h1", "z3")
    relu("z3", "h3")
    conv("h3", "b2a", "z4", 2, 1)
    relu("z4", "h4")
    conv("h4", "b2b", "c5", 1, 1)
    conv("h3", "proj", "s5", 2, 0)
    add("c5", "s5", "z5")
    relu("z5", "h5")
    nodes.append(helper.make_node("Flatten", ["h5"], ["f"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["f", "fc", "fc_b"], ["output"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "resnet_ref",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, N_OUT])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def robustness_vnnlib(x0, eps, label, n_out=N_OUT) -> str:
    """VNN-LIB text: every output other than `label` reaches `label`'s within the eps-box
    (clipped to [0, 1]) — the unsafe set whose emptiness is robustness."""
    x0 = np.asarray(x0, np.float64).ravel()
    lines = [f"(declare-const X_{i} Real)" for i in range(x0.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, v in enumerate(x0):
        lines.append(f"(assert (>= X_{i} {float(max(v - eps, 0.0))!r}))")
        lines.append(f"(assert (<= X_{i} {float(min(v + eps, 1.0))!r}))")
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


def reference_point(net: DagNet, seed: int):
    """A fixed input image in [0, 1] and the class the network gives it."""
    x0 = np.random.default_rng(1000 + seed).uniform(0.2, 0.8, SIDE * SIDE)
    return x0, int(np.argmax(net(x0)[0][0]))


def milp_margin(net: DagNet, label: int):
    """Exact min over the box of y_label - y_j for every j != label: (min, j, x, seconds)."""
    best = (np.inf, -1, None, 0.0)
    total = 0.0
    for j in range(N_OUT):
        if j == label:
            continue
        w = np.zeros(N_OUT)
        w[label], w[j] = 1.0, -1.0
        val, x, _, secs = net.minimum(w)
        total += secs
        if val < best[0]:
            best = (val, j, x, 0.0)
    return best[0], best[1], best[2], total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--eps", default="0.02,0.03,0.04,0.05")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--split", default="auto", choices=("auto", "input", "relu"))
    a = ap.parse_args(argv)
    import onnx

    from tljax.io import load_vnnlib
    from tljax.verify import load_network, verify

    print(f"tljax.verify split={a.split}, timeout {a.timeout:.0f} s; MILP: HiGHS, exact margin")
    print(f"{'seed':>4} {'eps':>5} {'MILP margin':>12} {'MILP':>6} {'MILP s':>7} "
          f"{'tljax':>8} {'tljax s':>8} {'domains':>8} {'dom/s':>7} {'agree':>6}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in a.seeds.split(",")):
            net = resnet(seed)
            path = pathlib.Path(tmp) / f"resnet_{seed}.onnx"
            onnx.save(onnx_model(net), str(path))
            fn, params, shape = load_network(str(path))
            x0, label = reference_point(net, seed)
            for eps in (float(e) for e in a.eps.split(",")):
                sub = net.with_box(np.maximum(x0 - eps, 0.0), np.minimum(x0 + eps, 1.0))
                m, _, _, msecs = milp_margin(sub, label)
                spec = pathlib.Path(tmp) / f"p_{seed}_{eps}.vnnlib"
                spec.write_text(robustness_vnnlib(x0, eps, label))
                prop = load_vnnlib(str(spec), SIDE * SIDE, N_OUT)
                t0 = time.perf_counter()
                res = verify(fn, prop, params, input_shape=shape, timeout=a.timeout, split=a.split)
                secs = time.perf_counter() - t0
                want = "unsat" if m > 0 else "sat"
                doms = int(res.stats.get("domains", 0))
                done = res.verdict in ("sat", "unsat")
                agree = ("yes" if res.verdict == want else "NO") if done else "-"
                rows.append((secs, agree))
                rate = doms / secs
                print(f"{seed:>4} {eps:>5} {m:>12.5f} {want:>6} {msecs:>7.2f} {res.verdict:>8} "
                      f"{secs:>8.2f} {doms:>8} {rate:>7.1f} {agree:>6}", flush=True)  # fmt: skip
    solved = sum(ag == "yes" for _, ag in rows)
    wrong = sum(ag == "NO" for _, ag in rows)
    median = np.median([s for s, _ in rows])
    print(f"solved {solved}/{len(rows)}, wrong {wrong}, median {median:.2f} s")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
