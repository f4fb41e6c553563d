"""tljax.io.load_onnx against onnxruntime: every op on small models built here, the shared
benchmark networks, the jaxpr it produces, and the bad-input corpus."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.core import (
    InputError,
    ParseError,
    ShapeMismatchError,
    UnsupportedPrimitiveError,
)
from tljax.io import load_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
TensorProto, helper, numpy_helper = onnx.TensorProto, onnx.helper, onnx.numpy_helper

F = TensorProto.FLOAT
RTOL = ATOL = 1e-5


def vinfo(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def make_model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def run_both(tmp_path, model, feeds, name="m.onnx"):
    """Saves `model`, runs it with onnxruntime and with load_onnx; returns (expected, got)."""
    path = tmp_path / name
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)
    fn, params = load_onnx(path)
    got = fn(params, *[feeds[n] for n in fn.input_names])
    got = list(got) if isinstance(got, tuple) else [got]
    return expected, got


def check(tmp_path, model, feeds):
    expected, got = run_both(tmp_path, model, feeds)
    assert len(expected) == len(got)
    for e, g in zip(expected, got, strict=True):
        assert tuple(g.shape) == tuple(e.shape)
        np.testing.assert_allclose(
            np.asarray(g, np.float64), np.asarray(e, np.float64), rtol=RTOL, atol=ATOL
        )


def rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def unary_model(op, shape=(2, 3, 4), opset=13, **attrs):
    node = helper.make_node(op, ["x"], ["y"], name=f"my_{op.lower()}", **attrs)
    return make_model([node], [vinfo("x", shape)], [vinfo("y", None)], opset=opset)


# ------------------------------------------------------------------------------------------
# Case catalogue: name -> (model, feeds). Each is compared with onnxruntime to 1e-5.


def _cases():
    cases = {}
    x234 = rand(2, 3, 4)
    pos = rand(2, 3, 4, low=0.1, high=3.0)

    for op in [
        "Relu",
        "Sigmoid",
        "Tanh",
        "Exp",
        "Abs",
        "Neg",
        "Sign",
        "Floor",
        "Ceil",
        "Erf",
        "Softplus",
    ]:
        cases[op] = (unary_model(op), {"x": x234})
    for op in ["Log", "Sqrt", "Reciprocal"]:
        cases[op] = (unary_model(op), {"x": pos})
    cases["LeakyRelu_default"] = (unary_model("LeakyRelu"), {"x": x234})
    cases["LeakyRelu_0.2"] = (unary_model("LeakyRelu", alpha=0.2), {"x": x234})
    cases["LeakyRelu_1.5"] = (unary_model("LeakyRelu", alpha=1.5), {"x": x234})
    cases["Identity"] = (unary_model("Identity"), {"x": x234})
    cases["Dropout"] = (unary_model("Dropout"), {"x": x234})

    # binary ops with multidirectional broadcasting, input-input and input-initializer
    for op in ["Add", "Sub", "Mul", "Div"]:
        for j, bshape in enumerate([(4,), (3, 1), (1,), (2, 3, 4)]):
            b = rand(*bshape, seed=j + 1, low=0.5, high=2.0)
            node = helper.make_node(op, ["x", "b"], ["y"])
            cases[f"{op}_input_{bshape}"] = (
                make_model([node], [vinfo("x", (2, 3, 4)), vinfo("b", bshape)], [vinfo("y", None)]),
                {"x": x234, "b": b},
            )
        node = helper.make_node(op, ["w", "x"], ["y"])
        cases[f"{op}_init_first"] = (
            make_model(
                [node],
                [vinfo("x", (2, 3, 4))],
                [vinfo("y", None)],
                [init("w", rand(3, 1, seed=9, low=0.5))],
            ),
            {"x": pos},
        )
    for exponent in [np.float32(2.0), np.float32(3.0), np.float32(0.5)]:
        node = helper.make_node("Pow", ["x", "e"], ["y"])
        cases[f"Pow_{float(exponent)}"] = (
            make_model([node], [vinfo("x", (2, 3, 4))], [vinfo("y", None)], [init("e", exponent)]),
            {"x": pos},
        )
    for op in ["Max", "Min", "Sum", "Mean"]:
        node = helper.make_node(op, ["x", "b", "c"], ["y"])
        cases[f"{op}_variadic"] = (
            make_model(
                [node],
                [vinfo("x", (2, 3, 4)), vinfo("b", (3, 4))],
                [vinfo("y", None)],
                [init("c", rand(4, seed=3))],
            ),
            {"x": x234, "b": rand(3, 4, seed=4)},
        )

    # Gemm: every attribute, C broadcast from (N,), (1, N), (M, N)
    a, bm = rand(3, 4, seed=5), rand(4, 5, seed=6)
    for trans_a in (0, 1):
        for trans_b in (0, 1):
            for alpha, beta, cshape in [
                (1.0, 1.0, (5,)),
                (0.5, 2.0, (1, 5)),
                (2.0, 0.25, (3, 5)),
                (1.0, 1.0, None),
            ]:
                ins = ["a", "b"] + (["c"] if cshape else [])
                inits = [init("b", bm.T if trans_b else bm)] + (
                    [init("c", rand(*cshape, seed=7))] if cshape else []
                )
                node = helper.make_node(
                    "Gemm", ins, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta
                )
                cases[f"Gemm_tA{trans_a}_tB{trans_b}_{alpha}_{beta}_{cshape}"] = (
                    make_model(
                        [node],
                        [vinfo("a", (4, 3) if trans_a else (3, 4))],
                        [vinfo("y", None)],
                        inits,
                    ),
                    {"a": a.T.copy() if trans_a else a},
                )

    for name, ashape, bshape in [
        ("2x2", (3, 4), (4, 5)),
        ("1x2", (4,), (4, 5)),
        ("2x1", (3, 4), (4,)),
        ("3x2", (2, 3, 4), (4, 5)),
        ("3x3", (2, 3, 4), (2, 4, 5)),
        ("4x3", (2, 2, 3, 4), (2, 4, 5)),
    ]:
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        cases[f"MatMul_{name}"] = (
            make_model(
                [node], [vinfo("a", ashape)], [vinfo("y", None)], [init("w", rand(*bshape, seed=8))]
            ),
            {"a": rand(*ashape, seed=2)},
        )

    # shape manipulation
    for axis in (0, 1, 2, -1):
        cases[f"Flatten_{axis}"] = (unary_model("Flatten", axis=axis), {"x": x234})
    for shape in ([0, -1], [-1, 4], [2, 0, 2, 2], [24], [0, 0, 4]):
        node = helper.make_node("Reshape", ["x", "s"], ["y"])
        cases[f"Reshape_{shape}"] = (
            make_model(
                [node],
                [vinfo("x", (2, 3, 4))],
                [vinfo("y", None)],
                [init("s", np.array(shape, np.int64))],
            ),
            {"x": x234},
        )
    node = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)
    cases["Reshape_allowzero"] = (
        make_model(
            [node],
            [vinfo("x", (0, 4))],
            [vinfo("y", None)],
            [init("s", np.array([2, 0], np.int64))],
            opset=14,
        ),
        {"x": np.zeros((0, 4), np.float32)},
    )
    cases["Transpose_default"] = (unary_model("Transpose"), {"x": x234})
    cases["Transpose_perm"] = (unary_model("Transpose", perm=[1, 0, 2]), {"x": x234})
    node = helper.make_node("Concat", ["x", "w", "x"], ["y"], axis=-1)
    cases["Concat"] = (
        make_model(
            [node], [vinfo("x", (2, 3, 4))], [vinfo("y", None)], [init("w", rand(2, 3, 2, seed=3))]
        ),
        {"x": x234},
    )
    x5 = rand(3, 7, 5, seed=11)
    for j, (starts, ends, axes, steps) in enumerate(
        [
            ([1], [5], [1], None),
            ([-4, 0], [-1, 100], [1, 2], [1, 2]),
            ([0, 2**62], [2, -(2**62)], [0, 1], [1, -2]),
            ([6], [0], [-2], [-1]),
            ([1, 1, 1], [3, 7, 4], None, None),
            ([10], [20], [1], None),
        ]
    ):
        ins = (
            ["x", "starts", "ends"]
            + (["axes"] if axes is not None else [])
            + (["steps"] if steps is not None else [])
        )
        inits = [init("starts", np.array(starts, np.int64)), init("ends", np.array(ends, np.int64))]
        inits += [init("axes", np.array(axes, np.int64))] if axes is not None else []
        inits += [init("steps", np.array(steps, np.int64))] if steps is not None else []
        node = helper.make_node("Slice", ins, ["y"])
        cases[f"Slice_inputs_{j}"] = (
            make_model([node], [vinfo("x", (3, 7, 5))], [vinfo("y", None)], inits),
            {"x": x5},
        )
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[3, 1000], axes=[0, 2])
    cases["Slice_attrs_opset9"] = (
        make_model([node], [vinfo("x", (3, 7, 5))], [vinfo("y", None)], opset=9),
        {"x": x5},
    )

    x1 = rand(2, 1, 3, 1, seed=12)
    cases["Squeeze_all"] = (unary_model("Squeeze", shape=(2, 1, 3, 1)), {"x": x1})
    cases["Squeeze_attr_opset11"] = (
        unary_model("Squeeze", shape=(2, 1, 3, 1), opset=11, axes=[-1]),
        {"x": x1},
    )
    node = helper.make_node("Squeeze", ["x", "axes"], ["y"])
    cases["Squeeze_input"] = (
        make_model(
            [node],
            [vinfo("x", (2, 1, 3, 1))],
            [vinfo("y", None)],
            [init("axes", np.array([1, 3], np.int64))],
        ),
        {"x": x1},
    )
    cases["Unsqueeze_attr_opset11"] = (
        unary_model("Unsqueeze", opset=11, axes=[0, -1]),
        {"x": x234},
    )
    node = helper.make_node("Unsqueeze", ["x", "axes"], ["y"])
    cases["Unsqueeze_input"] = (
        make_model(
            [node],
            [vinfo("x", (2, 3, 4))],
            [vinfo("y", None)],
            [init("axes", np.array([1, 4], np.int64))],
        ),
        {"x": x234},
    )
    node = helper.make_node("Split", ["x", "split"], ["y0", "y1"], axis=1)
    cases["Split"] = (
        make_model(
            [node],
            [vinfo("x", (3, 7, 5))],
            [vinfo("y0", None), vinfo("y1", None)],
            [init("split", np.array([3, 4], np.int64))],
        ),
        {"x": x5},
    )
    node = helper.make_node("Expand", ["x", "s"], ["y"])
    cases["Expand"] = (
        make_model(
            [node],
            [vinfo("x", (3, 1))],
            [vinfo("y", None)],
            [init("s", np.array([2, 1, 4], np.int64))],
        ),
        {"x": rand(3, 1)},
    )
    node = helper.make_node("Tile", ["x", "r"], ["y"])
    cases["Tile"] = (
        make_model(
            [node],
            [vinfo("x", (2, 3))],
            [vinfo("y", None)],
            [init("r", np.array([2, 1], np.int64))],
        ),
        {"x": rand(2, 3)},
    )
    for j, indices in enumerate([np.array(1, np.int64), np.array([2, 0, -1], np.int64)]):
        node = helper.make_node("Gather", ["x", "i"], ["y"], axis=1)
        cases[f"Gather_data_{j}"] = (
            make_model([node], [vinfo("x", (2, 3, 4))], [vinfo("y", None)], [init("i", indices)]),
            {"x": x234},
        )

    # constants, casts and a shape-computing subgraph (folded at load time)
    nodes = [
        helper.make_node("Constant", [], ["c1"], value=numpy_helper.from_array(rand(4, seed=13))),
        helper.make_node("Constant", [], ["c2"], value_float=0.5),
        helper.make_node("Constant", [], ["c3"], value_floats=[1.0, 2.0, 3.0, 4.0]),
        helper.make_node("Add", ["x", "c1"], ["a"]),
        helper.make_node("Mul", ["a", "c2"], ["b"]),
        helper.make_node("Sub", ["b", "c3"], ["y"]),
    ]
    cases["Constant_forms"] = (
        make_model(nodes, [vinfo("x", (2, 3, 4))], [vinfo("y", None)]),
        {"x": x234},
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["i0"], value_int=0),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Constant", [], ["m1"], value_ints=[-1]),
        helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["shape_f"], ["shape_i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "shape_i"], ["y"]),
    ]
    cases["Shape_Gather_Concat_Reshape"] = (
        make_model(
            nodes,
            [vinfo("x", (2, 3, 4))],
            [vinfo("y", None)],
            [init("ax", np.array([0], np.int64))],
        ),
        {"x": x234},
    )
    cases["Cast_float"] = (unary_model("Cast", to=TensorProto.FLOAT), {"x": x234})

    # convolutions (NCHW), every padding form
    img = rand(2, 4, 9, 8, seed=14)
    for name, attrs, wshape, bias in [
        ("plain", {}, (6, 4, 3, 3), True),
        ("pads_strides", {"pads": [1, 2, 0, 1], "strides": [2, 1]}, (6, 4, 3, 2), True),
        ("dilations", {"dilations": [2, 1], "pads": [1, 1, 1, 1]}, (3, 4, 3, 3), False),
        ("group2", {"group": 2, "strides": [1, 2]}, (6, 2, 3, 3), True),
        ("depthwise", {"group": 4, "pads": [1, 1, 1, 1]}, (4, 1, 3, 3), True),
        ("same_upper", {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (5, 4, 4, 3), True),
        ("same_lower", {"auto_pad": "SAME_LOWER", "strides": [2, 3]}, (5, 4, 4, 3), True),
        ("valid", {"auto_pad": "VALID", "kernel_shape": [2, 2]}, (5, 4, 2, 2), False),
    ]:
        ins = ["x", "w"] + (["b"] if bias else [])
        inits = [init("w", rand(*wshape, seed=15))] + (
            [init("b", rand(wshape[0], seed=16))] if bias else []
        )
        node = helper.make_node("Conv", ins, ["y"], **attrs)
        cases[f"Conv_{name}"] = (
            make_model([node], [vinfo("x", img.shape)], [vinfo("y", None)], inits),
            {"x": img},
        )
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[2, 1], strides=[2])
    cases["Conv_1d"] = (
        make_model(
            [node],
            [vinfo("x", (2, 3, 10))],
            [vinfo("y", None)],
            [init("w", rand(4, 3, 3)), init("b", rand(4))],
        ),
        {"x": rand(2, 3, 10, seed=17)},
    )
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 0, 1, 1, 0, 1])
    cases["Conv_3d"] = (
        make_model(
            [node],
            [vinfo("x", (1, 2, 4, 5, 3))],
            [vinfo("y", None)],
            [init("w", rand(3, 2, 2, 3, 2))],
        ),
        {"x": rand(1, 2, 4, 5, 3, seed=18)},
    )

    bn_inits = [
        init("scale", rand(4, seed=19)),
        init("bias", rand(4, seed=20)),
        init("mean", rand(4, seed=21)),
        init("var", rand(4, seed=22, low=0.1, high=2.0)),
    ]
    for opset in (9, 15):
        node = helper.make_node(
            "BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-3
        )
        cases[f"BatchNormalization_opset{opset}"] = (
            make_model([node], [vinfo("x", img.shape)], [vinfo("y", None)], bn_inits, opset=opset),
            {"x": img},
        )

    for name, attrs in [
        ("k2s2", {"kernel_shape": [2, 2], "strides": [2, 2]}),
        ("pads", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        ("asym_pads", {"kernel_shape": [3, 2], "pads": [0, 1, 2, 0], "strides": [2, 1]}),
        ("ceil", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
        (
            "ceil_pads",
            {"kernel_shape": [3, 3], "strides": [2, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1},
        ),
        ("same_upper", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ]:
        cases[f"MaxPool_{name}"] = (unary_model("MaxPool", shape=img.shape, **attrs), {"x": img})
        for include in (0, 1):
            cases[f"AveragePool_{name}_cip{include}"] = (
                unary_model("AveragePool", shape=img.shape, count_include_pad=include, **attrs),
                {"x": img},
            )
    cases["MaxPool_dilations"] = (
        unary_model(
            "MaxPool", shape=img.shape, kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 0, 1, 0]
        ),
        {"x": img},
    )
    cases["MaxPool_1d"] = (
        unary_model("MaxPool", shape=(2, 3, 10), kernel_shape=[3], strides=[2]),
        {"x": rand(2, 3, 10)},
    )
    cases["GlobalAveragePool"] = (unary_model("GlobalAveragePool", shape=img.shape), {"x": img})
    cases["GlobalMaxPool"] = (unary_model("GlobalMaxPool", shape=img.shape), {"x": img})

    for op in ("Softmax", "LogSoftmax"):
        for opset, axis in [(11, None), (11, 1), (11, -1), (13, None), (13, 1), (13, 0)]:
            attrs = {} if axis is None else {"axis": axis}
            cases[f"{op}_opset{opset}_axis{axis}"] = (
                unary_model(op, opset=opset, **attrs),
                {"x": x234},
            )

    for name, pads, value, axes, opset in [
        ("zeros", [0, 1, 2, 1, 0, 3], None, None, 13),
        ("value", [1, 0, 0, 0, 2, 1], np.float32(-1.5), None, 13),
        ("negative", [0, -1, 1, 0, 1, -2], np.float32(0.25), None, 13),
        ("axes", [1, 2], np.float32(3.0), [-1], 18),
    ]:
        ins = (
            ["x", "pads"]
            + (["value"] if value is not None else ([""] if axes else []))
            + (["axes"] if axes else [])
        )
        inits = [init("pads", np.array(pads, np.int64))]
        inits += [init("value", value)] if value is not None else []
        inits += [init("axes", np.array(axes, np.int64))] if axes else []
        node = helper.make_node("Pad", ins, ["y"])
        cases[f"Pad_{name}"] = (
            make_model([node], [vinfo("x", (2, 3, 4))], [vinfo("y", None)], inits, opset=opset),
            {"x": x234},
        )
    cases["Pad_attrs_opset2"] = (
        unary_model("Pad", opset=2, pads=[0, 1, 1, 0, 2, 0], value=0.5),
        {"x": x234},
    )
    for mode in ("reflect", "edge"):
        node = helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode)
        cases[f"Pad_{mode}"] = (
            make_model(
                [node],
                [vinfo("x", (2, 3, 4))],
                [vinfo("y", None)],
                [init("pads", np.array([0, 1, 2, 0, 2, 1], np.int64))],
            ),
            {"x": x234},
        )

    clip_inits = [init("lo", np.float32(-0.5)), init("hi", np.float32(0.75))]
    cases["Clip_inputs"] = (
        make_model(
            [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
            [vinfo("x", (2, 3, 4))],
            [vinfo("y", None)],
            clip_inits,
        ),
        {"x": x234},
    )
    cases["Clip_max_only"] = (
        make_model(
            [helper.make_node("Clip", ["x", "", "hi"], ["y"])],
            [vinfo("x", (2, 3, 4))],
            [vinfo("y", None)],
            clip_inits[1:],
        ),
        {"x": x234},
    )
    cases["Clip_attrs_opset6"] = (unary_model("Clip", opset=6, min=-1.0, max=0.5), {"x": x234})

    for op, opset, axes_attr in [
        ("ReduceSum", 13, False),
        ("ReduceMean", 13, True),
        ("ReduceMax", 18, False),
        ("ReduceMin", 13, True),
    ]:
        for keepdims in (0, 1):
            if axes_attr:
                node = helper.make_node(op, ["x"], ["y"], axes=[0, -1], keepdims=keepdims)
                inits = []
            else:
                node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
                inits = [init("axes", np.array([0, -1], np.int64))]
            cases[f"{op}_keepdims{keepdims}"] = (
                make_model([node], [vinfo("x", (2, 3, 4))], [vinfo("y", None)], inits, opset=opset),
                {"x": x234},
            )
    cases["ReduceSum_all"] = (unary_model("ReduceSum", keepdims=0), {"x": x234})
    node = helper.make_node("ReduceSum", ["x"], ["y"], noop_with_empty_axes=1)
    cases["ReduceSum_noop"] = (
        make_model([node], [vinfo("x", (2, 3, 4))], [vinfo("y", None)]),
        {"x": x234},
    )

    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["mask"]),
        helper.make_node("Where", ["mask", "x", "b"], ["y"]),
    ]
    cases["Greater_Where"] = (
        make_model(
            nodes,
            [vinfo("x", (2, 3, 4)), vinfo("b", (4,))],
            [vinfo("y", None)],
            [init("zero", np.float32(0.0))],
        ),
        {"x": x234, "b": rand(4, seed=23)},
    )
    return cases


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_onnxruntime(tmp_path, name):
    model, feeds = CASES[name]
    check(tmp_path, model, feeds)


def test_ops_catalogue_covers_the_required_set():
    required = [
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "Sigmoid",
        "Tanh",
        "Flatten",
        "Reshape",
        "Transpose",
        "Concat",
        "Slice",
        "Squeeze",
        "Unsqueeze",
        "Constant",
        "Identity",
        "Conv",
        "BatchNormalization",
        "MaxPool",
        "AveragePool",
        "Softmax",
        "Pad",
        "Cast",
        "Shape",
        "Gather",
        "Neg",
        "LeakyRelu",
        "Clip",
        "Exp",
        "Log",
        "Sqrt",
        "Abs",
        "Sign",
        "ReduceSum",
        "ReduceMean",
        "GlobalAveragePool",
        "Dropout",
    ]
    tested = {name.split("_")[0] for name in CASES}
    assert set(required) <= tested, sorted(set(required) - tested)


def test_multiple_inputs_and_outputs(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Sigmoid", ["s"], ["g"]),
    ]
    model = make_model(
        nodes,
        [vinfo("a", (2, 3)), vinfo("b", (2, 4))],
        [vinfo("r", None), vinfo("g", None)],
        [init("w", rand(3, 4))],
    )
    feeds = {"a": rand(2, 3, seed=1), "b": rand(2, 4, seed=2)}
    expected, got = run_both(tmp_path, model, feeds)
    assert len(got) == 2
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def test_symbolic_batch_dim_takes_any_size(tmp_path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    model = make_model(
        [node], [vinfo("x", ("N", 3))], [vinfo("y", ("N", 2))], [init("w", rand(2, 3))]
    )
    path = tmp_path / "batch.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fn, params = load_onnx(path)
    assert fn.input_shapes == ((None, 3),)
    for n in (1, 5):
        x = rand(n, 3, seed=n)
        np.testing.assert_allclose(fn(params, x), sess.run(None, {"x": x})[0], rtol=RTOL, atol=ATOL)


def test_fn_is_pure_and_traceable(tmp_path):
    model, feeds = CASES["Conv_plain"]
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    fn, params = load_onnx(path)
    eager = fn(params, feeds["x"])
    jitted = jax.jit(fn)(params, feeds["x"])
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    # params are real inputs: changing them changes the output, nothing is baked in
    doubled = {k: v * 2 if k == "b" else v for k, v in params.items()}
    delta = fn(doubled, feeds["x"]) - eager
    np.testing.assert_allclose(
        delta,
        np.broadcast_to(np.asarray(params["b"]).reshape(1, -1, 1, 1), delta.shape),
        rtol=1e-5,
        atol=1e-5,
    )
    # vmap over a stack of inputs
    xs = np.stack([feeds["x"], feeds["x"] * 0.5])
    batched = jax.vmap(fn, in_axes=(None, 0))(params, xs)
    np.testing.assert_allclose(batched[0], eager, rtol=1e-5, atol=1e-5)


def _primitives(fn, params, *xs):
    jaxpr = jax.make_jaxpr(fn)(params, *xs)
    return jaxpr, [eqn.primitive.name for eqn in jaxpr.jaxpr.eqns]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Relu", ["max"]),
        ("Sigmoid", ["logistic"]),
        ("Tanh", ["tanh"]),
        ("LeakyRelu_0.2", ["mul", "max"]),
        ("Conv_plain", ["conv_general_dilated", "reshape", "add"]),
        ("MaxPool_k2s2", ["reduce_window_max"]),
        ("AveragePool_k2s2_cip0", ["reduce_window_sum", "div"]),
        ("Gemm_tA0_tB1_1.0_1.0_None", ["dot_general"]),
        ("Shape_Gather_Concat_Reshape", ["reshape"]),
        ("Clip_inputs", ["max", "min"]),
        ("Flatten_1", ["reshape"]),
        ("Pad_value", ["pad"]),
        ("Slice_inputs_0", ["slice"]),
    ],
)
def test_jaxpr_uses_plain_primitives(tmp_path, name, expected):
    model, feeds = CASES[name]
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    fn, params = load_onnx(path)
    _, prims = _primitives(fn, params, *[feeds[n] for n in fn.input_names])
    assert prims == expected


def test_conv_keeps_nchw_layout_and_highest_precision(tmp_path):
    model, feeds = CASES["Conv_group2"]
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    fn, params = load_onnx(path)
    jaxpr, _ = _primitives(fn, params, feeds["x"])
    (conv,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    dn = conv.params["dimension_numbers"]
    assert (dn.lhs_spec, dn.rhs_spec, dn.out_spec) == ((0, 1, 2, 3),) * 3  # NCHW / OIHW / NCHW
    assert conv.params["feature_group_count"] == 2
    assert conv.params["window_strides"] == (1, 2)
    assert str(conv.params["precision"]).count("HIGHEST") == 2


def test_equations_carry_the_onnx_node_in_their_name_stack(tmp_path):
    model = unary_model("Relu")
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    fn, params = load_onnx(path)
    jaxpr, _ = _primitives(fn, params, rand(2, 3, 4))
    assert [str(e.source_info.name_stack) for e in jaxpr.jaxpr.eqns] == ["onnx.Relu.my_relu"]


def test_shape_subgraph_is_folded_for_any_batch_size(tmp_path):
    model, _ = CASES["Shape_Gather_Concat_Reshape"]
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    fn, params = load_onnx(path)
    for n in (1, 3):
        jaxpr, prims = _primitives(fn, params, rand(n, 3, 4))
        assert prims == ["reshape"]
        assert jaxpr.out_avals[0].shape == (n, 12)


# ------------------------------------------------------------------------------------------
# Shared benchmark networks


def _benchmark_models(benchmarks_dir):
    return sorted(benchmarks_dir.glob("*/onnx/*.onnx"))


def test_every_benchmark_network_matches_onnxruntime(benchmarks_dir):
    paths = _benchmark_models(benchmarks_dir)
    assert len(paths) >= 24, [p.name for p in paths]
    rng = np.random.default_rng(0)
    for path in paths:
        fn, params = load_onnx(path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        graph_inputs = [i.name for i in sess.get_inputs()]
        # onnxruntime may list initializers as inputs (old files); we take only real inputs
        assert set(fn.input_names) <= set(graph_inputs)
        for _ in range(3):
            xs = [rng.uniform(-1, 1, size=shape).astype(np.float32) for shape in fn.input_shapes]
            expected = sess.run(None, dict(zip(fn.input_names, xs, strict=True)))[0]
            got = fn(params, *xs)
            assert got.shape == expected.shape, path.name
            np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=path.name)


def test_acasxu_initializers_listed_as_inputs_are_weights(benchmarks_dir):
    path = benchmarks_dir / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx"
    model = onnx.load(str(path))
    assert len(model.graph.input) > 1  # the file does list its weights as inputs
    fn, params = load_onnx(path)
    assert fn.input_names == ("input",)
    assert fn.input_shapes == ((1, 1, 1, 5),)
    assert set(params) == {i.name for i in model.graph.initializer}
    assert all(v.dtype == jnp.float32 for v in params.values())


# ------------------------------------------------------------------------------------------
# Bad-input corpus


@pytest.fixture
def small_model_bytes():
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc"),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    model = make_model(
        nodes,
        [vinfo("x", (1, 4))],
        [vinfo("y", (1, 3))],
        [init("w", rand(3, 4)), init("b", rand(3))],
    )
    return model.SerializeToString()


def test_truncated_files_raise_parse_error_naming_the_file(tmp_path, small_model_bytes):
    path = tmp_path / "cut.onnx"
    n = len(small_model_bytes)
    for cut in sorted({0, 1, 5, n // 4, n // 2, 3 * n // 4, n - 10, n - 3, n - 1}):
        path.write_bytes(small_model_bytes[:cut])
        with pytest.raises(ParseError, match=re.escape(str(path))):
            load_onnx(path)


def test_garbage_bytes_raise_parse_error(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ParseError, match=r"garbage\.onnx.*(truncated|corrupt)"):
        load_onnx(path)


def test_unknown_ops_are_all_listed_with_node_op_and_file(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("NonMaxSuppression", ["a"], ["b"], name="nms_node"),
        helper.make_node("Custom", ["b"], ["y"], name="mine", domain="com.example"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [vinfo("x", (2, 3))], [vinfo("y", None)]),
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)],
        ir_version=8,
    )
    path = tmp_path / "unknown.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedPrimitiveError) as info:
        load_onnx(path)
    message = str(info.value)
    assert str(path) in message
    assert "node 'nms_node' (op NonMaxSuppression)" in message
    assert "node 'mine' (op Custom, domain 'com.example')" in message
    assert "'ok'" not in message
    assert "Supported ops:" in message and "Re-export" in message


def test_subgraph_ops_are_unsupported(tmp_path):
    branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["o"])], "b", [], [vinfo("o", None)]
    )
    node = helper.make_node(
        "If", ["c"], ["y"], name="branchy", then_branch=branch, else_branch=branch
    )
    model = make_model(
        [node], [vinfo("c", (), TensorProto.BOOL), vinfo("x", (2,))], [vinfo("y", None)]
    )
    path = tmp_path / "if.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedPrimitiveError, match=r"node 'branchy' \(op If"):
        load_onnx(path)


def test_wrong_input_shape_is_a_clear_error(tmp_path, small_model_bytes):
    path = tmp_path / "small.onnx"
    path.write_bytes(small_model_bytes)
    fn, params = load_onnx(path)
    assert fn(params, rand(1, 4)).shape == (1, 3)
    with pytest.raises(
        ShapeMismatchError,
        match=re.escape("input 'x' expects shape (1, 4) float32, got (4,) float32"),
    ):
        fn(params, rand(4))
    with pytest.raises(ShapeMismatchError, match=re.escape("e.g. x.reshape(1, 4)")):
        jax.jit(fn)(params, rand(2, 4))
    with pytest.raises(ShapeMismatchError, match="got \\(1, 4\\) int32"):
        fn(params, np.ones((1, 4), np.int32))
    with pytest.raises(InputError, match="has 1 input"):
        fn(params, rand(1, 4), rand(1, 4))
    with pytest.raises(InputError, match=r"lack initializers \['b'\]"):
        fn({"w": params["w"]}, rand(1, 4))


def test_dangling_node_input_names_the_node(tmp_path):
    node = helper.make_node("Add", ["x", "nowhere"], ["y"], name="adder")
    path = tmp_path / "dangling.onnx"
    onnx.save(make_model([node], [vinfo("x", (2,))], [vinfo("y", None)]), str(path))
    with pytest.raises(ParseError, match=r"node 'adder' \(op Add.*reads \['nowhere'\]"):
        load_onnx(path)


def test_inconsistent_shapes_name_the_node_at_load_time(tmp_path):
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="bad_mm")
    path = tmp_path / "mm.onnx"
    onnx.save(
        make_model([node], [vinfo("x", (2, 3))], [vinfo("y", None)], [init("w", rand(5, 2))]),
        str(path),
    )
    with pytest.raises(
        ParseError,
        match=(
            r"ONNX node 'bad_mm' \(op MatMul, opset 13.*mm\.onnx failed on inputs of shapes "
            r"\[\(2, 3\), \(5, 2\)\]"
        ),
    ):
        load_onnx(path)


def test_data_dependent_shape_is_refused(tmp_path):
    # the target shape comes from a float parameter: not known at load time
    nodes = [
        helper.make_node("Cast", ["s"], ["si"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "si"], ["y"], name="rs"),
    ]
    path = tmp_path / "dyn.onnx"
    onnx.save(
        make_model(
            nodes,
            [vinfo("x", (2, 3))],
            [vinfo("y", None)],
            [init("s", np.array([3.0, 2.0], np.float32))],
        ),
        str(path),
    )
    with pytest.raises(
        UnsupportedPrimitiveError,
        match=r"node 'rs' \(op Reshape.*'shape' input must be known at load time",
    ):
        load_onnx(path)


def test_training_only_variants_are_refused(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="mp")
    path = tmp_path / "mp.onnx"
    model = make_model(
        [node],
        [vinfo("x", (1, 1, 4, 4))],
        [vinfo("y", None), vinfo("idx", None, TensorProto.INT64)],
    )
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedPrimitiveError, match="'Indices' output of MaxPool"):
        load_onnx(path)
