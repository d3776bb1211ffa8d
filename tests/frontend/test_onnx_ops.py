"""Each ONNX converter on a one-node model, against onnxruntime (attribute forms, opset forms)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from llmc.frontend.onnx import from_onnx
from llmc.ir import run
from llmc.testing import assert_close

_rng = np.random.default_rng(0)


def r(*shape):
    return _rng.standard_normal(shape, dtype=np.float32)


def i64(values):
    return np.array(values, dtype=np.int64)


def f32(value):
    return np.array(value, dtype=np.float32)


class In:
    """A graph input of the one-node model (``Const`` is an initializer; None an absent input)."""

    def __init__(self, array):
        self.array = np.asarray(array)


class Const(In):
    pass


def one_node_model(op_type, inputs, attrs, n_out, opset):
    names = [f"in{i}" if spec is not None else "" for i, spec in enumerate(inputs)]
    outputs = [f"out{i}" for i in range(n_out)]
    graph_inputs, inits = [], []
    for name, spec in zip(names, inputs):
        if isinstance(spec, Const):
            inits.append(numpy_helper.from_array(spec.array, name))
        elif spec is not None:
            dtype = helper.np_dtype_to_tensor_dtype(spec.array.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, dtype, spec.array.shape))
    node = helper.make_node(op_type, names, outputs, **attrs)
    graph = helper.make_graph([node], op_type, graph_inputs,
                              [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # types the outputs
    onnx.checker.check_model(model)
    feeds = {n: s.array for n, s in zip(names, inputs) if s is not None and not isinstance(s, Const)}
    return model, feeds


CASES = {
    "Conv-groups-dilation-stride": ("Conv", [In(r(1, 4, 9, 9)), Const(r(6, 2, 3, 3)), Const(r(6))],
                                    {"group": 2, "dilations": [2, 1], "pads": [1, 2, 0, 1], "strides": [2, 1]}),
    "Conv-same-upper": ("Conv", [In(r(1, 3, 10, 11)), Const(r(4, 3, 3, 3))],
                        {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "Conv-same-lower": ("Conv", [In(r(2, 3, 7, 8)), Const(r(4, 3, 2, 2))], {"auto_pad": "SAME_LOWER"}),
    "Conv-depthwise": ("Conv", [In(r(1, 6, 8, 8)), Const(r(6, 1, 3, 3))], {"group": 6, "pads": [1, 1, 1, 1]}),
    "MaxPool-ceil": ("MaxPool", [In(r(1, 2, 10, 10))], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
                                                           "pads": [0, 0, 1, 1]}),
    "MaxPool-dilated": ("MaxPool", [In(r(1, 2, 9, 9))], {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    "AveragePool-include-pad": ("AveragePool", [In(r(1, 2, 7, 7))], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                                                       "count_include_pad": 1}),
    "AveragePool-ceil": ("AveragePool", [In(r(1, 2, 8, 8))], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                                "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "GlobalMaxPool": ("GlobalMaxPool", [In(r(2, 3, 5, 4))], {}),
    "GlobalAveragePool": ("GlobalAveragePool", [In(r(2, 3, 5, 4))], {}),
    "BatchNormalization": ("BatchNormalization", [In(r(2, 3, 4, 4)), Const(r(3)), Const(r(3)), Const(r(3)),
                                                  Const(np.abs(r(3)) + 0.5)], {"epsilon": 1e-3}),
    "LayerNormalization": ("LayerNormalization", [In(r(2, 3, 4)), Const(r(3, 4)), Const(r(3, 4))], {"axis": -2}),
    "LRN": ("LRN", [In(r(1, 5, 4, 4))], {"size": 3, "alpha": 1e-3, "beta": 0.6, "bias": 2.0}),
    "Gemm-transA-alpha-beta": ("Gemm", [In(r(5, 3)), Const(r(5, 4)), Const(r(1, 4))],
                               {"transA": 1, "alpha": 0.5, "beta": 2.0}),
    "Gemm-as-linear": ("Gemm", [In(r(2, 5)), Const(r(4, 5)), Const(r(4))], {"transB": 1}),
    "Gemm-no-bias": ("Gemm", [In(r(2, 5)), Const(r(5, 4))], {}),
    "MatMul-batched": ("MatMul", [In(r(2, 1, 3, 4)), In(r(3, 4, 5))], {}),
    "Softmax-axis": ("Softmax", [In(r(2, 3, 4))], {"axis": 1}),
    "LogSoftmax": ("LogSoftmax", [In(r(2, 3, 4))], {}),
    "Clip-constant-bounds": ("Clip", [In(r(10)), Const(f32(-0.5)), Const(f32(0.5))], {}),
    "Clip-max-only": ("Clip", [In(r(10)), None, Const(f32(0.3))], {}),
    "Clip-runtime-min": ("Clip", [In(r(10)), In(f32(0.1))], {}),
    "Pad-reflect-axes": ("Pad", [In(r(2, 3, 4)), Const(i64([1, 2, 0, 1])), None, Const(i64([1, 2]))],
                         {"mode": "reflect"}),
    "Pad-constant-value": ("Pad", [In(r(2, 3)), Const(i64([0, 1, 2, 0])), Const(f32(1.5))], {}),
    "Pad-edge": ("Pad", [In(r(2, 3)), Const(i64([1, 1, 1, 1]))], {"mode": "edge"}),
    "Slice-negative-step": ("Slice", [In(r(5, 6)), Const(i64([4])), Const(i64([0])), Const(i64([1])),
                                      Const(i64([-2]))], {}),
    "Slice-to-end": ("Slice", [In(r(3, 8)), Const(i64([1, -3])), Const(i64([2**63 - 1, -1])), Const(i64([0, 1]))], {}),
    "Split-num-outputs": ("Split", [In(r(7, 2))], {"axis": 0, "num_outputs": 3}),
    "Split-sizes": ("Split", [In(r(2, 7)), Const(i64([3, 4]))], {"axis": 1}),
    "Trilu-lower": ("Trilu", [In(r(4, 5)), Const(i64(1))], {"upper": 0}),
    "CumSum": ("CumSum", [In(r(3, 4)), Const(i64(1))], {}),
    "ReduceSum-axes-input": ("ReduceSum", [In(r(2, 3, 4)), Const(i64([1, -1]))], {"keepdims": 0}),
    "ReduceMax-axes-input": ("ReduceMax", [In(r(2, 3, 4)), Const(i64([0]))], {}),
    "ReduceMin-all-axes": ("ReduceMin", [In(r(2, 3))], {"keepdims": 0}),
    "ArgMax": ("ArgMax", [In(r(3, 5))], {"axis": 1, "keepdims": 0}),
    "GatherElements": ("GatherElements", [In(r(3, 4)), Const(_rng.integers(-3, 3, (2, 4)))], {"axis": 0}),
    "GatherND-batch-dims": ("GatherND", [In(r(2, 3, 4)), Const(_rng.integers(0, 3, (2, 5, 1)))], {"batch_dims": 1}),
    "Gather-scalar-axis1": ("Gather", [In(r(3, 4, 5)), Const(i64(-1))], {"axis": 1}),
    "Gather-embedding": ("Gather", [Const(r(10, 4)), In(_rng.integers(0, 10, (2, 3)))], {}),
    "Expand": ("Expand", [In(r(3, 1)), Const(i64([2, 1, 4]))], {}),
    "Where": ("Where", [In(r(3, 4) > 0), In(r(3, 4)), In(r(1, 4))], {}),
    "Pow-int-exponent": ("Pow", [In(r(4)), Const(i64(3))], {}),
    "Div-int-truncates": ("Div", [In(i64([7, -7, 6, -9])), Const(i64([2, 2, -4, 4]))], {}),
    "Gelu-tanh": ("Gelu", [In(r(5))], {"approximate": "tanh"}),
    "LeakyRelu": ("LeakyRelu", [In(r(6))], {"alpha": 0.2}),
    "IsNaN": ("IsNaN", [In(f32([1.0, np.nan, -np.inf, 0.0]))], {}),
    "Sum-three": ("Sum", [In(r(2, 3)), In(r(3)), In(r(2, 1))], {}),
    "Mean": ("Mean", [In(r(2, 3)), In(r(2, 3))], {}),
    "Max-three": ("Max", [In(r(4)), In(r(4)), In(r(4))], {}),
    "Min": ("Min", [In(r(4)), In(r(4))], {}),
    "Flatten-axis2": ("Flatten", [In(r(2, 3, 4, 5))], {"axis": 2}),
    "Flatten-axis-negative": ("Flatten", [In(r(2, 3, 4, 5))], {"axis": -1}),
    "Flatten-axis-rank": ("Flatten", [In(r(2, 3, 4))], {"axis": 3}),
    "Squeeze-no-axes": ("Squeeze", [In(r(1, 3, 1, 2))], {}),
    "Squeeze-axes": ("Squeeze", [In(r(1, 3, 1, 2)), Const(i64([-2]))], {}),
    "Unsqueeze": ("Unsqueeze", [In(r(3, 2)), Const(i64([0, -1]))], {}),
    "Transpose-default": ("Transpose", [In(r(2, 3, 4))], {}),
    "Cast-to-int32": ("Cast", [In(r(6) * 10)], {"to": TensorProto.INT32}),
    "CastLike": ("CastLike", [In(r(6) * 10), Const(i64([0]))], {}),
    "And": ("And", [In(r(5) > 0), In(r(5) > 0)], {}),
    "Or": ("Or", [In(r(5) > 0), In(r(5) > 0)], {}),
    "Not": ("Not", [In(r(5) > 0)], {}),
    "LessOrEqual": ("LessOrEqual", [In(r(5)), In(r(5))], {}),
    "Greater": ("Greater", [In(r(5)), In(r(1))], {}),
    "Dropout-mask": ("Dropout", [In(r(2, 3))], {}),
    "Identity": ("Identity", [In(r(2, 3))], {}),
    "QuantizeLinear-per-tensor": ("QuantizeLinear", [In(r(3, 4) * 5), Const(f32(0.05)), Const(np.int8(3))], {}),
    "QuantizeLinear-per-axis": ("QuantizeLinear", [In(r(2, 3, 4)), Const(f32([0.1, 0.2, 0.3])),
                                                   Const(np.uint8([128, 120, 130]))], {"axis": 1}),
    "QuantizeLinear-default-uint8": ("QuantizeLinear", [In(np.abs(r(5))), Const(f32(0.02))], {}),
    "DequantizeLinear-per-axis": ("DequantizeLinear", [In(_rng.integers(-128, 128, (2, 3)).astype(np.int8)),
                                                       Const(f32([0.1, 0.2, 0.3])), Const(np.int8([1, -2, 0]))],
                                  {"axis": 1}),
}
N_OUTPUTS = {"Split-num-outputs": 3, "Split-sizes": 2, "Dropout-mask": 2}
OPSETS = {"Gelu-tanh": 20}


@pytest.mark.parametrize("case", CASES)
def test_op_matches_onnxruntime(case):
    op_type, inputs, attrs = CASES[case]
    model, feeds = one_node_model(op_type, inputs, attrs, N_OUTPUTS.get(case, 1), OPSETS.get(case, 18))
    graph = from_onnx(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ours = run(graph, feeds)
    for out, ref in zip(session.get_outputs(), session.run(None, feeds)):
        assert ours[out.name].dtype == ref.dtype and ours[out.name].shape == ref.shape
        assert_close(ours[out.name], ref)


@pytest.mark.parametrize("op_type, inputs, attrs, expected", [
    ("Gemm", [In(r(2, 5)), Const(r(4, 5)), Const(r(4))], {"transB": 1}, {"linear": 1}),
    ("Gemm", [In(r(5, 3)), Const(r(5, 4)), Const(r(1, 4))], {"transA": 1, "alpha": 0.5, "beta": 2.0},
     {"transpose": 1, "matmul": 1, "mul": 2, "add": 1}),
    ("Gather", [Const(r(10, 4)), In(_rng.integers(0, 10, (2, 3)))], {}, {"embedding": 1}),
    ("IsNaN", [In(r(3))], {}, {"equal": 1, "not": 1}),
    ("Unsqueeze", [In(r(3, 2)), Const(i64([0, -1]))], {}, {"reshape": 1}),
])
def test_op_maps_onto_canonical_ops(op_type, inputs, attrs, expected):
    model, _ = one_node_model(op_type, inputs, attrs, 1, 18)
    assert from_onnx(model).op_histogram() == expected


def test_opset_12_attribute_forms_are_upgraded():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]), helper.make_node("Squeeze", ["u"], ["s"], axes=[0]),
             helper.make_node("ReduceSum", ["s"], ["y"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "old", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)
    ours = from_onnx(model)
    feeds = {"x": r(2, 3, 4)}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ref = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_close(run(ours, feeds)["y"], ref[0])


@pytest.mark.parametrize("split, keepdims", [([2, 4], 1), (None, 0)])
def test_split_to_sequence_and_sequence_at(split, keepdims):
    x = r(2, 6)
    expected = x[:, 2:6] if split else x[:, 1]
    inits = [numpy_helper.from_array(i64(1), "pos")] + ([numpy_helper.from_array(i64(split), "split")] if split else [])
    nodes = [helper.make_node("SplitToSequence", ["x", "split" if split else ""], ["parts"], axis=1, keepdims=keepdims),
             helper.make_node("SequenceAt", ["parts", "pos"], ["y"])]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, expected.shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    np.testing.assert_array_equal(run(from_onnx(model), {"x": x})["y"], expected)


def test_dropout_and_identity_vanish_and_outputs_keep_their_names():
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Dropout", ["h"], ["d"], name="drop"),
             helper.make_node("Identity", ["d"], ["i"]), helper.make_node("Neg", ["i"], ["y"]),
             helper.make_node("Identity", ["x"], ["x_again"])]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in ("x", "y", "x_again")]
    model = helper.make_model(helper.make_graph(nodes, "g", info[:1], info[1:]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    graph = from_onnx(model)
    assert [v.name for v in graph.outputs] == ["y", "x_again"]
    assert graph.op_histogram() == {"neg": 1, "relu": 1, "reshape": 1}  # the reshape is x_again's named copy
    x = r(3)
    out = run(graph, {"x": x})
    np.testing.assert_array_equal(out["y"], -np.maximum(x, 0))
    np.testing.assert_array_equal(out["x_again"], x)


def test_output_names_survive_multi_node_conversions():
    """A node named like its output (common in hand-written models) converting to several IR nodes."""
    w = numpy_helper.from_array(r(3, 4), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["fc"], name="fc", alpha=2.0)]
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [2, 3]), ("fc", [2, 4]))]
    model = helper.make_model(helper.make_graph(nodes, "g", info[:1], info[1:], [w]),
                              opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    graph = from_onnx(model)
    assert graph.op_histogram() == {"matmul": 1, "mul": 1} and [v.name for v in graph.outputs] == ["fc"]
