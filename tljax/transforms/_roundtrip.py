"""Round trips out of and back into a `Graph`: `jax.export` (StableHLO) and ONNX import."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from ..core import Graph, InputError, compat, trace
from ._build import _aval_struct, count_eqns
from ._promises import Promise
from ._provenance import PassRecord, record_pass

compat.register_exclusion(__file__)


def export_roundtrip(graph: Graph, *, platforms=None) -> Graph:
    """Serializes `graph` with `jax.export`, deserializes it and re-traces the result.

    The returned graph's jaxpr calls the deserialized StableHLO module (a `call_exported`
    equation): it runs (eagerly and under `jax.jit`) exactly what was serialized, but it is
    opaque to the other semantics (`exact`, bounds), which report it as unsupported. The pass
    records the byte size and whether the deserialized module's StableHLO text is identical to
    the exported one.

    Promise: exact and bitwise with `float_mode="jit"` (the same StableHLO, compiled by XLA).

    Args:
      graph: the graph.
      platforms: platforms to lower for (default: the current backend).
    """
    if not isinstance(graph, Graph):
        raise TypeError(
            f"tljax.transforms.export_roundtrip expects a tljax.Graph, got {type(graph).__name__}"
        )
    t0 = time.perf_counter()
    avals = [_aval_struct(a) for a in graph.in_avals]

    def flat(*leaves):
        return jax.core.eval_jaxpr(graph.jaxpr, graph.consts, *leaves)

    exported = jax.export.export(jax.jit(flat), platforms=platforms)(*avals)
    data = bytes(exported.serialize())
    back = jax.export.deserialize(bytearray(data))
    same = back.mlir_module() == exported.mlir_module()
    closed, _ = compat.make_jaxpr(lambda *a: list(back.call(*a)), *avals)
    new = Graph(
        closed,
        graph.in_tree,
        graph.in_mask,
        graph.static_leaves,
        graph.out_tree,
        name=f"{graph.name}|export",
    )
    stats = {
        "eqns_before": count_eqns(graph),
        "eqns_after": count_eqns(new),
        "bytes": len(data),
        "stablehlo_identical": same,
    }
    claim = Promise(
        exact=True, bitwise=True, float_mode="jit", note="serialized StableHLO, called back"
    )
    record_pass(
        new,
        graph,
        PassRecord(
            "export_roundtrip", claim, time.perf_counter() - t0, graph.name, id(graph), stats
        ),
    )
    return new


# ----------------------------------------------------------------------------------------------
# ONNX: import -> Graph (-> passes) -> compare against onnxruntime.


@dataclasses.dataclass(frozen=True)
class OnnxCheck:
    """A graph compared against onnxruntime on the same inputs.

    Attributes:
      path: the ONNX file.
      graph: name of the graph compared.
      inputs: number of inputs run.
      max_abs_diff: largest |graph - onnxruntime| over all inputs and outputs.
      atol, rtol: the tolerance (elementwise ``|d| <= atol + rtol*|ort|``).
      worst_input: the input with the largest difference.
      violations: elements outside the tolerance.
      seconds: time.
    """

    path: str
    graph: str
    inputs: int
    max_abs_diff: float
    atol: float
    rtol: float
    worst_input: np.ndarray | None
    violations: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def __str__(self) -> str:
        verdict = "OK" if self.ok else f"{self.violations} VIOLATION(S)"
        s = (
            f"onnxruntime check of {self.graph!r} ({os.path.basename(self.path)}): {verdict}; "
            f"{self.inputs} input(s), max |graph - ort| = {self.max_abs_diff:.3g} "
            f"(tolerance {self.atol:.1g} + {self.rtol:.1g}*|ort|, {self.seconds:.2f} s)"
        )
        if not self.ok and self.worst_input is not None:
            s += (
                f"\n  worst input: {np.array2string(self.worst_input, precision=9, separator=', ')}"
            )
        return s


def onnx_graph(path) -> Graph:
    """The graph of an ONNX model with one input (`tljax.io.load_onnx`, weights as constants)."""
    from ..io import load_onnx

    fn, params = load_onnx(path)
    if len(fn.input_names) != 1:
        raise InputError(
            f"{path}: onnx_graph supports models with one input, this one has {fn.input_names}"
        )
    shape = tuple(1 if d is None else d for d in fn.input_shapes[0])
    g = trace(
        lambda x: fn(params, x), np.zeros(shape, np.float32), name=os.path.basename(os.fspath(path))
    )
    return g


def check_onnx(
    path,
    graph: Graph | None = None,
    *,
    inputs=None,
    n_random: int = 8,
    seed: int = 0,
    scale: float = 1.0,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> OnnxCheck:
    """Runs `graph` (default: the imported model) and onnxruntime on the same inputs.

    Args:
      path: an ONNX file with one input.
      graph: a graph of the model (e.g. after passes); default `onnx_graph(path)`.
      inputs: input arrays; default `n_random` normal samples times `scale` (seeded).
      atol, rtol: elementwise tolerance against onnxruntime.

    Returns:
      An `OnnxCheck`.
    """
    import onnxruntime as ort

    t0 = time.perf_counter()
    path = os.fspath(path)
    graph = onnx_graph(path) if graph is None else graph
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    aval = graph.in_avals[0]
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = [(rng.normal(size=aval.shape) * scale).astype(np.float32) for _ in range(n_random)]
    worst, worst_x, bad = -1.0, None, 0
    for x in inputs:
        x = np.asarray(x, np.float32).reshape(aval.shape)
        ref = sess.run(None, {name: x})
        got = jax.tree_util.tree_leaves(graph(x))
        for r, g in zip(ref, got, strict=True):
            r, g = np.asarray(r, np.float64), np.asarray(g, np.float64).reshape(np.shape(r))
            d = np.abs(g - r)
            bad += int(np.sum(~(d <= atol + rtol * np.abs(r))))  # NaN counts as a violation
            if d.size and float(np.nanmax(d)) > worst:
                worst, worst_x = float(np.nanmax(d)), x
    return OnnxCheck(
        path,
        graph.name,
        len(inputs),
        max(worst, 0.0),
        atol,
        rtol,
        worst_x,
        bad,
        time.perf_counter() - t0,
    )
