"""Bad input, as a new user would give it: every case must raise a tljax error class whose message
names WHAT is wrong, WHERE (argument, leaf, primitive, file:line, node) and WHAT TO DO.

Each table row is `(id, call, error class, what, where, fix)`: `call(tmp_path)` must raise the
class, and the message must contain the three substrings.
"""

# ruff: noqa: E501  (the tables keep one case per row, readable as a table)

import gzip
import re
import subprocess
import sys

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tljax
import tljax.transforms as T
from tljax import Box
from tljax.core import (
    InputError,
    InvalidBoxError,
    ParseError,
    ShapeMismatchError,
    UnsupportedPrimitiveError,
)

W = jnp.asarray([[1.0, -2.0, 0.5, 1.0], [0.3, 1.0, -1.0, 2.0]], jnp.float32)
B = jnp.asarray([0.1, -0.2], jnp.float32)
BOX4 = Box(-jnp.ones(4), jnp.ones(4))


def net(x):
    return jax.nn.relu(W @ x + B)


def two_outputs(x):
    return x * 2.0, x + 1.0


def assert_clear(excinfo, *, what: str, where: str, fix: str) -> None:
    """The message names what is wrong, where, and the fix (substrings, case-sensitive)."""
    msg = str(excinfo.value)
    for label, part in (("what", what), ("where", where), ("fix", fix)):
        assert part in msg, f"{label} {part!r} missing from the message:\n{msg}"


# ----------------------------------------------------------------------------------------------
# Files


def vnnlib(tmp, body: str, name="p.vnnlib") -> str:
    head = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
    path = tmp / name
    path.write_text(head + body)
    return str(path)


X1_OK = "(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
BOX_OK = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"


def load(tmp, body, n_in=2, n_out=1, **kw):
    return tljax.io.load_vnnlib(vnnlib(tmp, body), n_in, n_out, **kw)


def onnx_model(tmp, *, op="Relu", name="m.onnx"):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc"),
        helper.make_node(op, ["h"], ["y"], name="act"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 3))],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = tmp / name
    path.write_bytes(model.SerializeToString())
    return str(path)


def onnx_fn(tmp):
    return tljax.io.load_onnx(onnx_model(tmp))


# ----------------------------------------------------------------------------------------------
# bounds: tljax.bound and tljax.Box


def _jit_exact(tmp):
    @jax.jit
    def outer(s):
        return tljax.evaluate(lambda y: y * s, np.ones(2, np.float32), semantics="exact")

    return outer(jnp.ones(2))


def _branchy(x):
    return x if x[0] > 0 else -x


BOUNDS = [
    ("box-wrong-shape", lambda t: tljax.bound(net, Box(jnp.zeros(3), jnp.ones(3))),
     ShapeMismatchError, "dot_general", "the box: float32[3]", "tljax.Box.linf(x, eps)"),
    ("args-wrong-shape", lambda t: tljax.bound(lambda x, w: w @ x, BOX4, jnp.ones((2, 3))),
     ShapeMismatchError, "tracing", "further arguments: (float32[2, 3],)", "pass the other arguments"),
    ("int-box-arithmetic",
     lambda t: tljax.bound(lambda x: x * 2, Box(jnp.zeros(3, jnp.int32), jnp.full(3, 3, jnp.int32))),
     UnsupportedPrimitiveError, "integer leaves", "leaf 0: int32[3]", "Box(lower.astype(jnp.float32)"),
    ("bf16-box", lambda t: tljax.bound(jnp.tanh, Box(jnp.zeros(3, jnp.bfloat16), jnp.ones(3, jnp.bfloat16))),
     InvalidBoxError, "narrow float format", "leaf 0 is bfloat16[3]", "float_format='bf16'"),
    ("fp16-box", lambda t: tljax.bound(jnp.tanh, Box(jnp.zeros(3, jnp.float16), jnp.ones(3, jnp.float16))),
     InvalidBoxError, "narrow float format", "leaf 0 is float16[3]", "float32 box"),
    ("bf16-cast-inside", lambda t: tljax.bound(
        lambda x: (x.astype(jnp.bfloat16) * 2).astype(jnp.float32), BOX4),
     UnsupportedPrimitiveError, "narrower bfloat16", "test_bad_inputs.py", "float_format="),
    ("relu-splits-shape", lambda t: tljax.bound(net, BOX4, relu_splits=[np.ones(3, np.int32)]),
     ShapeMismatchError, "relu_splits[0] has shape (3,)", "ReLU 0 has input shape (2,)", "relu_shapes"),
    ("relu-splits-too-many", lambda t: tljax.bound(net, BOX4, relu_splits=[np.ones(2, np.int32)] * 2),
     InputError, "2 entries", "1 ReLU(s)", "at most one entry per ReLU"),
    ("relu-splits-7", lambda t: tljax.bound(net, BOX4, relu_splits=[np.array([7, 0])]),
     InputError, "holds 7", "relu_splits[0]", "+1 (neuron forced active)"),
    ("relu-splits-minus-3", lambda t: tljax.bound(net, BOX4, relu_splits=[np.array([1, -3])]),
     InputError, "holds -3", "index (1,)", "-1 (inactive)"),
    ("relu-splits-float", lambda t: tljax.bound(net, BOX4, relu_splits=[np.array([1.0, 0.0])]),
     InputError, "dtype float64", "relu_splits[0]", "integer array"),
    ("relu-splits-not-list", lambda t: tljax.bound(net, BOX4, relu_splits=np.ones(2, np.int32)),
     InputError, "must be a list", "relu_splits", "relu_shapes"),
    ("relu-splits-affine", lambda t: tljax.bound(net, BOX4, method="affine", relu_splits=[None]),
     InputError, "relu_splits needs method", "got 'affine'", "'crown' or 'alpha-crown'"),
    ("alpha-iters-negative", lambda t: tljax.bound(net, BOX4, method="alpha-crown", alpha_iters=-1),
     InputError, "alpha_iters=-1 is negative", "tljax.bound", ">= 0"),
    ("alpha-iters-float", lambda t: tljax.bound(net, BOX4, alpha_iters=2.5),
     InputError, "got 2.5", "alpha_iters", "an int >= 0"),
    ("alpha-lr-zero", lambda t: tljax.bound(net, BOX4, alpha_lr=0.0),
     InputError, "alpha_lr=0.0", "tljax.bound", "finite positive number"),
    ("alpha-lr-nan", lambda t: tljax.bound(net, BOX4, alpha_lr=float("nan")),
     InputError, "alpha_lr=nan", "tljax.bound", "finite positive number"),
    ("dict-box-missing-key",
     lambda t: tljax.bound(lambda d: d["a"] + d["b"], Box({"a": jnp.zeros(2)}, {"a": jnp.ones(2)})),
     InvalidBoxError, "reads key 'b'", "the box has keys ['a']", "add 'b' to both"),
    ("box-lower-above-upper", lambda t: Box(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0])),
     InvalidBoxError, "lower 1.0 > upper 0.0", "leaf 0 index (1,)", "lower <= upper"),
    ("box-nan", lambda t: Box(jnp.array([0.0, jnp.nan]), jnp.ones(2)),
     InvalidBoxError, "NaN", "leaf 0 index (1,)", "no NaN"),
    ("box-linf-negative-eps", lambda t: Box.linf(jnp.zeros(2), -0.1),
     InvalidBoxError, "> upper", "leaf 0 index (0,)", "lower <= upper"),
    ("box-shapes-differ", lambda t: Box(jnp.zeros(3), jnp.ones(2)),
     InvalidBoxError, "upper has shape (2,)", "leaf 0", "give both ends one shape"),
    ("box-structures-differ", lambda t: Box({"a": jnp.zeros(2)}, {"b": jnp.ones(2)}),
     InvalidBoxError, "different structures", "Box", "same pytree"),
    ("box-strings", lambda t: Box(np.array(["a"]), np.array(["b"])),
     InvalidBoxError, "has dtype <U1", "leaf 0: lower", "give float arrays"),
    ("box-none", lambda t: Box(None, None),
     InvalidBoxError, "no array leaves", "lower is None", "give arrays"),
    ("box-complex", lambda t: Box(jnp.zeros(2, jnp.complex64), jnp.ones(2, jnp.complex64)),
     InvalidBoxError, "dtype complex64", "leaf 0", "box the real and imaginary parts"),
    ("box-not-a-box", lambda t: tljax.bound(net, (jnp.zeros(4), jnp.ones(4))),
     InvalidBoxError, "got tuple", "box must be a tljax.Box", "tljax.Box.linf(x, eps)"),
    ("unknown-method", lambda t: tljax.bound(net, BOX4, method="crwn"),
     InputError, "unknown method='crwn'", "tljax.bound", "choose one of"),
    ("float-format", lambda t: tljax.bound(net, BOX4, float_format="fp8"),
     InputError, "float_format='fp8' is not supported", "tljax.bound", "use one of"),
    ("spec-1d", lambda t: tljax.bound(net, BOX4, spec=np.ones(2)),
     InputError, "spec has shape (2,)", "tljax.bound", "spec[None, :]"),
    ("spec-columns", lambda t: tljax.bound(net, BOX4, spec=np.ones((1, 3))),
     InputError, "spec has 3 columns", "output of 'net' has 2", "(m, output size)"),
    ("spec-nan", lambda t: tljax.bound(net, BOX4, spec=np.array([[1.0, np.nan]])),
     InputError, "non-finite entry", "at (0, 1)", "must be a finite number"),
    ("spec-two-outputs", lambda t: tljax.bound(two_outputs, BOX4, spec=np.ones((1, 4))),
     InputError, "one array output", "'two_outputs' has 2", "spec=None"),
    ("python-branch", lambda t: tljax.bound(_branchy, BOX4),
     InputError, "Python control flow", "_branchy", "jnp.where"),
    ("fn-not-callable", lambda t: tljax.bound(BOX4, BOX4),
     InputError, "fn must be a function or a module, got Box", "tljax.bound", "with the model first"),
    ("certificate-affine", lambda t: tljax.bound(net, BOX4, method="affine", certificate=True),
     InputError, "certificate=True supports", "tljax.bound", "use method='crown'"),
    ("unsupported-primitive", lambda t: tljax.bound(jnp.cumprod, Box(jnp.zeros(3), jnp.ones(3))),
     UnsupportedPrimitiveError, "no rule for primitive", "'cumprod'", "tljax.bounds.register"),
    ("relu-shapes-wrong-box", lambda t: tljax.bounds.relu_shapes(net, Box(jnp.zeros(5), jnp.ones(5))),
     ShapeMismatchError, "dot_general", "tljax.bounds.relu_shapes", "tljax.Box.linf(x, eps)"),
]  # fmt: skip

# ----------------------------------------------------------------------------------------------
# interpret: tljax.evaluate, semantics by name


INTERPRET = [
    ("exact-under-jit-closure", _jit_exact,
     InputError, "got traced values", "a closed-over constant (float32[2])",
     "outside the transformed function"),
    ("exact-traced-input", lambda t: jax.jit(
        lambda v: tljax.evaluate(lambda y: y * 2, v, semantics="exact"))(jnp.ones(2)),
     InputError, "got traced values", "input leaf 0", "on concrete arrays"),
    ("unknown-semantics", lambda t: tljax.evaluate(jnp.tanh, jnp.ones(2), semantics="exactly"),
     InputError, "unknown semantics 'exactly'", "known:", "patterns"),
    ("unknown-float-format", lambda t: tljax.evaluate(jnp.tanh, jnp.ones(2), semantics="float[fp7]"),
     InputError, "unknown float format 'fp7'", "known:", "tljax.interpret.Format("),
    ("semantics-not-a-name", lambda t: tljax.evaluate(jnp.tanh, jnp.ones(2), semantics=3),
     InputError, "semantics must be a name or a Semantics", "got int", "a Semantics"),
    ("exact-nan-input", lambda t: tljax.evaluate(jnp.tanh, jnp.array([1.0, jnp.nan]), semantics="exact"),
     InputError, "non-finite entry", "input leaf 0", "jnp.nan_to_num"),
    ("graph-wrong-shape", lambda t: tljax.evaluate(tljax.trace(jnp.tanh, jnp.ones(3)), jnp.ones(4)),
     ShapeMismatchError, "expected shape (3,), got (4,)", "leaf 0", "shaped like the example"),
    ("string-input", lambda t: tljax.evaluate(lambda x: x, "abc", semantics="exact"),
     InputError, "failed with TypeError", "str[]", "Pass arrays"),
    ("compare-unknown-semantics", lambda t: tljax.compare(jnp.tanh, jnp.ones(2), semantics=["nope"]),
     InputError, "unknown semantics 'nope'", "known:", "patterns"),
    ("round-to-format", lambda t: tljax.round_to_format(jnp.ones(2), "fp7"),
     InputError, "unknown float format 'fp7'", "known:", "'eXmY'"),
    ("exact-precision", lambda t: tljax.interpret.exact_semantics(1),
     InputError, "precision=1 bits is too small", "exact_semantics", "an int >= 2"),
]  # fmt: skip

# ----------------------------------------------------------------------------------------------
# io: VNN-LIB, ONNX, StableHLO export


IO = [
    ("vnnlib-1e999", lambda t: load(t, "(assert (<= X_0 1e999))\n(assert (>= X_0 0))\n" + X1_OK),
     ParseError, "outside the float64 range", "p.vnnlib:4:9", "finite bound"),
    ("vnnlib-nan", lambda t: load(t, "(assert (<= X_0 nan))\n" + BOX_OK),
     ParseError, "'nan' is not a number", "p.vnnlib:4:", "finite decimal numbers"),
    ("vnnlib-inf", lambda t: load(t, "(assert (>= X_1 -inf))\n" + BOX_OK),
     ParseError, "'-inf' is not a number", "p.vnnlib:4:", "omitting its assertion"),
    ("vnnlib-undeclared", lambda t: load(t, BOX_OK + "(assert (<= Y_3 0))\n"),
     ParseError, "undeclared variable 'Y_3'", "p.vnnlib:8:", "(declare-const Y_3 Real)"),
    ("vnnlib-unmatched-close", lambda t: load(t, BOX_OK + "(assert (<= Y_0 0)))\n"),
     ParseError, "unmatched ')'", "p.vnnlib:8:", "remove it"),
    ("vnnlib-unclosed", lambda t: load(t, BOX_OK + "(assert (<= Y_0 0)\n"),
     ParseError, "is never closed", "p.vnnlib:8:1", "add the missing ')'"),
    ("vnnlib-lo-above-hi", lambda t: load(t, BOX_OK + "(assert (>= X_0 2))\n(assert (<= Y_0 0))\n"),
     ParseError, "empty input box", "X_0: lower 2.0 (at", "Fix the bounds"),
    ("vnnlib-missing-bound", lambda t: load(t, "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= Y_0 0))\n"),
     ParseError, "no upper bound", "X_1", "add the missing bounds"),
    ("vnnlib-wrong-n-inputs", lambda t: load(t, BOX_OK + "(assert (<= Y_0 0))\n", n_in=3),
     ParseError, "declares 2 X variables", "n_inputs=3", "Pass the network's flattened input size"),
    ("vnnlib-not", lambda t: load(t, BOX_OK + "(assert (not (<= Y_0 0)))\n"),
     UnsupportedPrimitiveError, "'not' is not supported", "p.vnnlib:8:9", "write the negated comparison"),
    ("vnnlib-nonlinear", lambda t: load(t, BOX_OK + "(assert (<= (* Y_0 Y_0) 0))\n"),
     UnsupportedPrimitiveError, "product of variables", "p.vnnlib:8:", "products with constants"),
    ("vnnlib-bad-name", lambda t: tljax.io.load_vnnlib(
        _write(t, "(declare-const Z_0 Real)\n"), 1, 1),
     ParseError, "variable 'Z_0' is not named X_i", "p.vnnlib:1:16", "X_i (input) or Y_j (output)"),
    ("vnnlib-unknown-op", lambda t: load(t, BOX_OK + "(assert (<= (max Y_0 1) 0))\n"),
     ParseError, "unknown operator 'max'", "p.vnnlib:8:", "expected +, -, *, /"),
    ("vnnlib-rounding", lambda t: load(t, BOX_OK + "(assert (<= Y_0 0))\n", rounding="up"),
     InputError, "rounding='up'", "load_vnnlib", "use 'nearest'"),
    ("vnnlib-n-inputs-zero", lambda t: load(t, BOX_OK, n_in=0),
     InputError, "n_inputs=0", "load_vnnlib", "positive int"),
    ("vnnlib-missing-file", lambda t: tljax.io.load_vnnlib(t / "nope.vnnlib", 2, 1),
     InputError, "no such file", "nope.vnnlib", "check the path"),
    ("vnnlib-bad-gzip", lambda t: tljax.io.load_vnnlib(_write_bytes(t, b"\x1f\x8b\x08garbage"), 2, 1),
     ParseError, "corrupt gzip data", "p.vnnlib", "re-compress"),
    ("counterexample-sizes", lambda t: load(t, BOX_OK + "(assert (<= Y_0 0))\n").is_counterexample(
        np.zeros(3), np.zeros(1)),
     ShapeMismatchError, "x has 3 and y 1 elements", "n_inputs=2", "pass the network's input"),
    ("onnx-unsupported-op", lambda t: tljax.io.load_onnx(onnx_model(t, op="NonMaxSuppression")),
     UnsupportedPrimitiveError, "no tljax translation", "node 'act' (op NonMaxSuppression)", "Re-export"),
    ("onnx-garbage", lambda t: tljax.io.load_onnx(_write_bytes(t, bytes(range(256)) * 4, "g.onnx")),
     ParseError, "not a readable ONNX model", "g.onnx", "re-export or re-download"),
    ("onnx-truncated", lambda t: tljax.io.load_onnx(
        _write_bytes(t, open(onnx_model(t), "rb").read()[:40], "cut.onnx")),
     ParseError, "cut.onnx", "cut.onnx", "re-export"),
    ("onnx-missing-file", lambda t: tljax.io.load_onnx(t / "none.onnx"),
     InputError, "no such file", "none.onnx", "check the path"),
    ("onnx-wrong-input-shape", lambda t: (lambda fp: fp[0](fp[1], np.ones(4, np.float32)))(onnx_fn(t)),
     ShapeMismatchError, "input 'x' expects shape (1, 4)", "m.onnx", "x.reshape(1, 4)"),
    ("onnx-too-many-inputs", lambda t: (lambda fp: fp[0](fp[1], np.ones((1, 4), np.float32),
                                                         np.ones((1, 4), np.float32)))(onnx_fn(t)),
     InputError, "has 1 input(s) ['x']", "m.onnx", "call fn(params, x0)"),
    ("onnx-params-not-dict", lambda t: (lambda fp: fp[0]([1, 2], np.ones((1, 4), np.float32)))(onnx_fn(t)),
     InputError, "params must be the dict", "m.onnx", "returned by load_onnx"),
    ("onnx-missing-initializer", lambda t: (lambda fp: fp[0]({"w": fp[1]["w"]}, np.ones((1, 4), np.float32)))(onnx_fn(t)),
     InputError, "lack initializers ['b']", "m.onnx", "pass the dict returned by load_onnx"),
    ("export-not-callable", lambda t: tljax.io.export(3, jnp.ones(2), path=t / "e.hlo"),
     InputError, "fn must be callable, got int", "tljax.io.export", "tljax.io.export(fn, *example_args"),
    ("export-missing-folder", lambda t: tljax.io.export(jnp.tanh, jnp.ones(2), path=t / "no" / "e.hlo"),
     InputError, "does not exist", "path=", "create"),
    ("export-string-arg", lambda t: tljax.io.export(lambda x, s: x, jnp.ones(2), "abc", path=t / "e.hlo"),
     InputError, "non-array leaves", "example argument 1 (str)", "close over static configuration"),
    ("load-exported-missing", lambda t: tljax.io.load_exported(t / "none.hlo"),
     InputError, "no such file", "none.hlo", "tljax.io.export"),
    ("load-exported-garbage", lambda t: tljax.io.load_exported(_write_bytes(t, b"garbage", "g.hlo")),
     ParseError, "not a readable jax.export serialization", "g.hlo", "Re-create it"),
    ("exported-wrong-shape", lambda t: _exported(t)(jnp.ones(3)),
     ShapeMismatchError, "got (float32[3])", "takes (float32[2])", "shapes and dtypes given"),
]  # fmt: skip


def _write(t, text, name="p.vnnlib"):
    path = t / name
    path.write_text(text)
    return str(path)


def _write_bytes(t, data, name="p.vnnlib"):
    path = t / name
    path.write_bytes(data)
    return str(path)


def _exported(t):
    tljax.io.export(jnp.tanh, jnp.ones(2), path=t / "ok.hlo")
    return tljax.io.load_exported(t / "ok.hlo")


# ----------------------------------------------------------------------------------------------
# transforms: validate, passes


def _graph():
    return tljax.trace(net, jnp.ones(4))


TRANSFORMS = [
    ("validate-array-as-box", lambda t: tljax.validate(net, net, jnp.ones(4)),
     InputError, "box must be a tljax.Box, got ArrayImpl", "tljax.validate", "inputs=[...]"),
    ("validate-functions-no-box", lambda t: tljax.validate(net, net),
     InputError, "is a function, not a Graph", "original", "pass a Graph (tljax.trace)"),
    ("validate-box-wrong-shape", lambda t: tljax.validate(net, net, Box(jnp.zeros(3), jnp.ones(3))),
     ShapeMismatchError, "dot_general", "tljax.validate", "tljax.Box.linf(x, eps)"),
    ("validate-signatures", lambda t: T.validate(_graph(), tljax.trace(jnp.tanh, jnp.ones(4)), certify=False),
     ShapeMismatchError, "do not have the same signature", "output 0", "compare graphs of the same function"),
    ("validate-method", lambda t: tljax.validate(_graph(), _graph(), method="crwn"),
     InputError, "unknown method='crwn'", "tljax.validate", "choose one of"),
    ("validate-n-random", lambda t: tljax.validate(_graph(), _graph(), n_random=-1),
     InputError, "n_random=-1", "tljax.validate", "int >= 0"),
    ("validate-claim-type", lambda t: tljax.validate(_graph(), _graph(), claim="exact"),
     InputError, "got str", "claim", "tljax.transforms.Promise"),
    ("validate-empty-inputs", lambda t: tljax.validate(_graph(), _graph(), inputs=[]),
     InputError, "non-empty list", "inputs", "argument tuples"),
    ("apply-unknown-pass", lambda t: T.apply(_graph(), "fold"),
     InputError, "unknown pass 'fold'", "known:", "a function Graph -> Graph"),
    ("lower-precision-format", lambda t: T.lower_precision(_graph(), "fp7"),
     InputError, "unknown float format 'fp7'", "fp7", "use 'bf16'"),
    ("claim-half-tolerance", lambda t: T.Promise(atol=1.0), InputError, "give both atol and rtol",
     "Promise", "or neither"),
]  # fmt: skip

# ----------------------------------------------------------------------------------------------
# objectives: certify, margin_lower_bounds

X2 = jnp.full((2, 4), 0.5)
Y2 = np.array([0, 1])


def _logits(x, p):
    return p["w"] @ x


P = {"w": W}

OBJECTIVES = [
    ("certify-method", lambda t: tljax.objectives.certify(_logits, P, X2, Y2, 0.01, method="affine"),
     InputError, "unknown method='affine'", "tljax.objectives.certify", "use 'crown'"),
    ("certify-y-shape", lambda t: tljax.objectives.certify(_logits, P, X2, np.array([0, 1, 1]), 0.01),
     ShapeMismatchError, "y has shape (3,)", "x holds 2 example(s)", "one integer label per example"),
    ("certify-label-range", lambda t: tljax.objectives.certify(_logits, P, X2, np.array([0, 5]), 0.01),
     InputError, "labels y must be integers in [0, 2)", "certify", "the model has 2 outputs"),
    ("certify-model-signature", lambda t: tljax.objectives.certify(lambda x: W @ x, P, X2, Y2, 0.01),
     InputError, "calling model_fn(x[0], params)", "shape (4,)", "apply_model"),
    ("certify-eps-negative", lambda t: tljax.objectives.certify(_logits, P, X2, Y2, -0.1),
     InputError, "eps=-0.1", "certify", "must be >= 0"),
    ("certify-chunk", lambda t: tljax.objectives.certify(_logits, P, X2, Y2, 0.1, chunk=0),
     InputError, "chunk=0", "certify", "positive int"),
    ("certify-unbatched-x", lambda t: tljax.objectives.certify(_logits, P, jnp.float32(0.5), Y2, 0.1),
     ShapeMismatchError, "x has shape ()", "certify", "x[None]"),
    ("margins-method", lambda t: tljax.objectives.margin_lower_bounds(_logits, P, X2, Y2, 0.1, method="x"),
     InputError, "unknown bound method='x'", "margin_lower_bounds", "use one of"),
]  # fmt: skip

# ----------------------------------------------------------------------------------------------
# verify: the public API


def _prop(t, n_in=2):
    decl = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + "(declare-const Y_0 Real)\n"
    body = "".join(f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))\n" for i in range(n_in))
    path = t / f"v{n_in}.vnnlib"
    path.write_text(decl + body + "(assert (<= Y_0 -100))\n")
    return tljax.io.load_vnnlib(path, n_in, 1)


def _lin(x):
    return jnp.sum(x, keepdims=True)


VERIFY = [
    ("verify-prop-type", lambda t: tljax.verify.verify(_lin, "p.vnnlib"),
     InputError, "got str", "prop", "tljax.io.load_vnnlib(path, n_inputs, n_outputs)"),
    ("verify-timeout-negative", lambda t: tljax.verify.verify(_lin, _prop(t), timeout=-1),
     InputError, "got -1", "timeout", "positive number of seconds or None"),
    ("verify-timeout-nan", lambda t: tljax.verify.verify(_lin, _prop(t), timeout=float("nan")),
     InputError, "got nan", "timeout", "positive number of seconds"),
    ("verify-method", lambda t: tljax.verify.verify(_lin, _prop(t), method="affine"),
     InputError, "unknown method 'affine'", "tljax.verify", "choose one of"),
    ("verify-batch-size", lambda t: tljax.verify.verify(_lin, _prop(t), batch_size=1),
     InputError, "got 1", "batch_size", "int >= 2"),
    ("verify-input-shape", lambda t: tljax.verify.verify(_lin, _prop(t), input_shape=(3,)),
     ShapeMismatchError, "3", "input", "input_shape"),
    ("verify-output-count", lambda t: tljax.verify.verify(lambda x: x * 2, _prop(t)),
     ShapeMismatchError, "has 1 outputs (Y_j) but the network returns 2 elements", "v2.vnnlib",
     "check that the VNN-LIB file belongs to this network"),
    ("verify-fn-not-callable", lambda t: tljax.verify.verify(3, _prop(t)),
     InputError, "fn must be callable", "tljax.verify", "callable"),
]  # fmt: skip


def _param(row):
    return row if isinstance(row, type(pytest.param(None))) else pytest.param(*row, id=row[0])


TABLE = [_param(r) for r in BOUNDS + INTERPRET + IO + TRANSFORMS + OBJECTIVES + VERIFY]


@pytest.mark.parametrize(("name", "call", "error", "what", "where", "fix"), TABLE)
def test_bad_input_is_a_clear_error(tmp_path, name, call, error, what, where, fix):
    del name
    with pytest.raises(error) as excinfo:
        call(tmp_path)
    assert_clear(excinfo, what=what, where=where, fix=fix)


# ----------------------------------------------------------------------------------------------
# The `tljax verify` command line: exit status 2 and a message on stderr


def _cli(args, capsys):
    from tljax._cli import main

    rc = main(args)
    return rc, capsys.readouterr().err


CLI = [
    pytest.param(
        lambda t: ["verify", str(t / "none.onnx"), vnnlib(t, BOX_OK + "(assert (<= Y_0 0))\n")],
        "network file", "none.onnx", "check the path",
        id="cli-missing-onnx"),
    pytest.param(
        lambda t: ["verify", onnx_model(t), str(t / "none.vnnlib")],
        "property file", "none.vnnlib", "check the path",
        id="cli-missing-vnnlib"),
    pytest.param(
        lambda t: ["verify", onnx_model(t), vnnlib(t, BOX_OK + "(assert (<= Y_0 0))\n"),
                   "--timeout", "-5"],
        "--timeout must be positive", "-5", "positive", id="cli-timeout-negative"),
    pytest.param(
        lambda t: ["verify", onnx_model(t), vnnlib(t, BOX_OK + "(assert (<= Y_0 0))\n")],
        "declares 2 X variables", "p.vnnlib", "Pass the network's flattened input size",
        id="cli-spec-shape"),
    pytest.param(
        lambda t: ["verify", onnx_model(t, op="NonMaxSuppression"),
                   vnnlib(t, BOX_OK + "(assert (<= Y_0 0))\n")],
        "no tljax translation", "node 'act'", "Re-export", id="cli-unsupported-onnx-op"),
    pytest.param(lambda t: ["verfy"], "unknown command 'verfy'", "tljax", "commands:",
                 id="cli-unknown-command"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "what", "where", "fix"), CLI)
def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, argv, what, where, fix):
    rc, err = _cli(argv(tmp_path), capsys)
    assert rc == 2
    for label, part in (("what", what), ("where", where), ("fix", fix)):
        assert part in err, f"{label} {part!r} missing from stderr:\n{err}"


def test_cli_bad_timeout_value_from_a_real_process(tmp_path):
    """argparse's own check, through the installed entry point (`python -m tljax`)."""
    args = [sys.executable, "-m", "tljax", "verify", "a.onnx", "b.vnnlib", "--timeout", "soon"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": _repo()})  # fmt: skip
    assert out.returncode == 2
    assert "--timeout" in out.stderr and "invalid float value: 'soon'" in out.stderr


def _repo():
    import pathlib

    return str(pathlib.Path(__file__).resolve().parents[1])


# ----------------------------------------------------------------------------------------------
# What used to fail and must now work


def test_linen_apply_with_params_is_bounded():
    model = nn.Dense(2)
    params = model.init(jax.random.key(0), jnp.ones(4))
    b = tljax.bound(model.apply, BOX4, params, method="ibp")
    # independent: interval arithmetic by hand for x in [-1, 1]^4
    k, bias = np.asarray(params["params"]["kernel"]), np.asarray(params["params"]["bias"])
    radius = np.abs(k).sum(axis=0)
    assert np.all(np.asarray(b.lower) <= bias - radius + 1e-5)
    assert np.all(np.asarray(b.upper) >= bias + radius - 1e-5)
    assert np.all(np.asarray(b.lower) >= bias - radius - 1e-3)  # not vacuous
    pts = np.asarray(BOX4.sample(jax.random.key(1), 64))
    ys = np.asarray(jax.vmap(lambda p: model.apply(params, p))(pts))
    assert b.contains(ys[0]) and all(b.contains(y) for y in ys)


def test_bounds_keep_kernel_contracts_through_tree_map():
    b = tljax.bound(net, BOX4, method="ibp")
    tagged = tljax.Bounds(b.lower, b.upper, method="ibp", kernel_contracts=[{"name": "k"}])
    mapped = jax.tree_util.tree_map(lambda v: v * 1.0, tagged)
    assert mapped.kernel_contracts == [{"name": "k"}]
    assert mapped.method == "ibp"
    # still usable as a jit argument and output (the aux data is hashable)
    out = jax.jit(lambda bb: bb)(tagged)
    assert out.kernel_contracts == [{"name": "k"}]


def test_validate_accepts_an_equivalent_rewrite_and_flags_a_wrong_one_without_claim():
    f = lambda x: jax.nn.relu(W @ x + B).sum()  # noqa: E731
    same = lambda x: jnp.maximum(jnp.dot(W, x) + B, 0.0).sum()  # noqa: E731
    wrong = lambda x: jnp.maximum(jnp.dot(W, x) + B + 1.0, 0.0).sum()  # noqa: E731
    ok = tljax.validate(f, same, box=BOX4)
    assert ok.ok and ok.verdict == "unclaimed" and ok.certified_deviation == 0.0
    assert any("agree" in n for n in ok.notes), str(ok)
    bad = tljax.validate(f, wrong, box=BOX4)
    assert bad.verdict == "unclaimed" and "CONSISTENT" not in str(bad)
    assert any("DIFFER" in n for n in bad.notes), str(bad)
    assert any("nothing was checked against a promise" in n for n in bad.notes)
    # with a claim, the wrong rewrite is a violation and the right one is consistent
    exact = T.Promise(exact=True)
    assert tljax.validate(f, wrong, box=BOX4, claim=exact, certify=False).verdict == "violated"
    assert tljax.validate(f, same, box=BOX4, claim=exact, certify=False).verdict == "consistent"


def test_export_equinox_module(tmp_path):
    mlp = eqx.nn.MLP(4, 3, 8, 1, key=jax.random.key(0))
    tljax.io.export(mlp, jnp.ones(4), path=tmp_path / "mlp.hlo")
    call = tljax.io.load_exported(tmp_path / "mlp.hlo")
    x = jnp.linspace(-1.0, 1.0, 4)
    np.testing.assert_allclose(np.asarray(call(x)), np.asarray(mlp(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("form", ["apply_model", "module"])
def test_certify_equinox_mlp(form):
    mlp = eqx.nn.MLP(4, 3, 8, 1, key=jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, (3, 4)), jnp.float32)
    y = np.asarray(jnp.argmax(jax.vmap(mlp)(x), axis=1))
    if form == "apply_model":
        res = tljax.objectives.certify(tljax.objectives.apply_model, mlp, x, y, 1e-4, chunk=4)
    else:
        res = tljax.objectives.certify(mlp, None, x, y, 1e-4, chunk=4)
    # at a tiny radius around correctly classified points with a clear margin, certified
    logits = np.sort(np.asarray(jax.vmap(mlp)(x)), axis=1)
    clear = logits[:, -1] - logits[:, -2] > 1e-2
    assert res.shape == (3,) and res.dtype == bool
    assert np.all(res[clear])
    # a huge radius certifies nothing
    assert not np.any(tljax.objectives.certify(mlp, None, x, y, 10.0, clip=None, chunk=4))


def test_narrow_program_formats_are_named_models():
    from tljax.bounds import _float_model as fm

    assert fm.PROGRAM_MODELS["bf16"].u_out == 2.0**-8 == tljax.interpret.get_format("bfloat16").unit_roundoff
    assert fm.PROGRAM_MODELS["fp16"].u_out == 2.0**-11 and fm.PROGRAM_MODELS["fp16"].eta == 2.0**-14
    # the bf16 program model widens the bounds of the float32 box (more rounding covered)
    b32 = tljax.bound(net, BOX4, method="ibp")
    b16 = tljax.bound(net, BOX4, method="ibp", float_format="bf16")
    assert np.all(np.asarray(b16.lower) <= np.asarray(b32.lower))
    assert np.any(np.asarray(b16.upper) > np.asarray(b32.upper))
    with pytest.raises(InputError, match=re.escape("no float model for dtype bfloat16")):
        fm.unit(jnp.bfloat16)


def test_relu_splits_valid_forms_still_work():
    """Flat arrays, fewer entries than ReLUs, and traced splits under vmap are accepted."""
    free = tljax.bound(net, BOX4)
    flat = tljax.bound(net, BOX4, relu_splits=[np.array([1, 0], np.int8)])
    assert np.all(np.asarray(flat.lower) >= np.asarray(free.lower))
    assert tljax.bound(net, BOX4, relu_splits=[]).lower.shape == (2,)
    many = jax.vmap(lambda s: tljax.bound(net, BOX4, relu_splits=[s]).lower)(
        jnp.asarray([[1, 0], [-1, 0]], jnp.int32)
    )
    assert many.shape == (2, 2) and float(many[1, 0]) == 0.0  # inactive neuron: exactly 0


def test_gzip_vnnlib_with_bad_number_names_the_file(tmp_path):
    path = tmp_path / "p.vnnlib.gz"
    text = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1e400))\n"
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(ParseError) as excinfo:
        tljax.io.load_vnnlib(path, 1, 1)
    assert_clear(excinfo, what="outside the float64 range", where="p.vnnlib.gz:3:9", fix="finite")
