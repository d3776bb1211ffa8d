"""The ONNX frontend against onnxruntime: the onnx package's zoo CNNs, torch.onnx exports of the
built-in transformers at two sequence lengths, external data, shape folding, single ops."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
import sympy
from onnx import TensorProto, helper, numpy_helper
from zoo import LIGHT, ZOO_CNNS, ort_outputs, randomized_zoo_model, token_feeds

from llmc.frontend.onnx import from_onnx
from llmc.frontend.onnx.shapes import dims_array, fold
from llmc.ir import FileWeight, run, sym
from llmc.testing import assert_close

F32 = TensorProto.FLOAT


def assert_matches_onnxruntime(graph, model, feeds, rtol=1e-4) -> None:
    ours = run(graph, feeds)
    ref = ort_outputs(model, feeds)
    assert list(ours) == list(ref)
    for name in ref:
        assert ours[name].dtype == ref[name].dtype, name
        assert_close(ours[name], ref[name], rtol)


def make_model(nodes, inputs, outputs, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)  # onnxruntime's
    onnx.checker.check_model(model)
    return model


# -- the onnx package's CNN zoo -------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO_CNNS)
def test_zoo_cnn_imports_and_matches_onnxruntime(name, tmp_path):
    original = from_onnx(LIGHT / f"light_{name}.onnx")  # opset 9, upgraded; weights are ConstantOfShape
    assert [v.type.shape for v in original.inputs] == [(1, 3, 224, 224)]
    assert not {"full", "arange"} & set(original.op_histogram()), "ConstantOfShape weights must fold into constants"

    path = randomized_zoo_model(name, tmp_path)
    try:
        graph = from_onnx(path)
        model = onnx.load(path, load_external_data=False)
        assert [v.name for v in graph.inputs] == [i.name for i in model.graph.input]  # e.g. gpu_0/data_0
        assert [v.name for v in graph.outputs] == [o.name for o in model.graph.output]
        assert any(isinstance(v.const, FileWeight) for v in graph.constants.values())
        x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
        assert_matches_onnxruntime(graph, path, {graph.inputs[0].name: x})
    finally:
        (tmp_path / "weights.bin").unlink()  # up to 550 MB (vgg19); pytest keeps old tmp folders


def test_import_does_not_read_external_weights(tmp_path):
    w = np.random.default_rng(0).standard_normal((2048, 4096), dtype=np.float32)  # 32 MiB
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [helper.make_tensor_value_info("x", F32, ["batch", 2048])],
                       [helper.make_tensor_value_info("y", F32, ["batch", 4096])], [numpy_helper.from_array(w, "w")])
    onnx.save(model, tmp_path / "big.onnx", save_as_external_data=True, location="big.data", size_threshold=0)
    tracemalloc.start()
    graph = from_onnx(tmp_path / "big.onnx")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2**20, f"importing allocated {peak / 2**20:.1f} MiB"
    weight = graph.value("w").const
    assert isinstance(weight, FileWeight) and weight.path == (tmp_path / "big.data").resolve()
    assert isinstance(weight.numpy(), np.memmap)
    x = np.random.default_rng(1).standard_normal((3, 2048), dtype=np.float32)
    assert_matches_onnxruntime(graph, tmp_path / "big.onnx", {"x": x})


def test_external_data_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 16), dtype=np.float32), rng.standard_normal(16, dtype=np.float32)
    w2, b2 = rng.standard_normal((4, 16), dtype=np.float32), rng.standard_normal(4, dtype=np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
         helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)],
        [helper.make_tensor_value_info("x", F32, [2, 8])], [helper.make_tensor_value_info("y", F32, [2, 4])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    (tmp_path / "sub").mkdir()
    onnx.save(model, tmp_path / "sub" / "mlp.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="mlp.weights", size_threshold=0)
    graph = from_onnx(tmp_path / "sub" / "mlp.onnx")
    assert all(isinstance(v.const, FileWeight) for v in graph.constants.values())
    assert graph.op_histogram() == {"add": 1, "linear": 1, "matmul": 1, "relu": 1}
    x = rng.standard_normal((2, 8), dtype=np.float32)
    assert_matches_onnxruntime(graph, tmp_path / "sub" / "mlp.onnx", {"x": x})


# -- transformer exports (torch.onnx, dynamic sequence length) ------------------------------


LAYERS = {"tiny-llama": 2, "tiny-gpt2": 2, "minilm": 6}


@pytest.mark.parametrize("name, exporter", [("tiny-llama", "dynamo"), ("tiny-gpt2", "dynamo"),
                                            ("tiny-gpt2", "dynamo-unoptimized"), ("minilm", "dynamo"),
                                            ("minilm", "torchscript")])
def test_transformer_export_matches_onnxruntime_at_two_lengths(onnx_export, name, exporter):
    path = onnx_export(name, exporter)
    graph = from_onnx(path)
    assert graph.symbols() == ["seq"]
    assert graph.outputs[0].type.shape[1] == sym("seq")
    # layers come from node names (/m/encoder/layer.3/...) or the dynamo exporter's module scopes
    assert {n.meta.layer for n in graph.nodes} == {None, *range(LAYERS[name])}
    assert all(n.meta.origin for n in graph.nodes)
    for seq in (16, 9):
        assert_matches_onnxruntime(graph, path, token_feeds(name, seq))


# -- import-time shape folding --------------------------------------------------------------


def _info(name, shape, dtype=F32):
    return helper.make_tensor_value_info(name, dtype, shape)


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def test_folding_shape_arithmetic_with_symbols():
    seq = sym("seq")
    shape = dims_array([2, seq, 64])
    assert list(fold("Mul", [shape, np.array(2)], {})) == [4, 2 * seq, 128]
    assert list(fold("Div", [shape, np.array(4, np.int64)], {})) == [0, sympy.floor(seq / 4), 16]
    assert fold("Gather", [shape, np.array(1)], {"axis": 0}) == seq
    assert list(fold("Concat", [shape, np.array([4], np.int64)], {"axis": 0})) == [2, seq, 64, 4]
    assert list(fold("Max", [shape, np.array([1, 1, 1], np.int64)], {})) == [2, seq, 64]
    assert list(fold("Equal", [shape, np.array([2, -1, 0], np.int64)], {})) == [True, False, False]
    assert fold("Equal", [shape, np.array([2, 5, 64], np.int64)], {}) is None  # depends on seq
    assert fold("Slice", [np.arange(8), np.array([0]), shape[1:2]], {}) is None  # ends at seq
    static = fold("Sub", [dims_array([3, 4]), np.array([1, 1], np.int64)], {})
    assert static.dtype == np.int64 and list(static) == [2, 3]


def test_shape_gather_concat_reshape_folds_into_a_symbolic_reshape():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["b"]),
        helper.make_node("Shape", ["x"], ["t"], start=1, end=2),
        helper.make_node("Unsqueeze", ["b", "zero1"], ["b1"]),
        helper.make_node("Concat", ["b1", "t", "heads"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3]),
    ]
    model = make_model(nodes, [_info("x", ["batch", "seq", 64])], [_info("y", ["batch", 4, "seq", 16])],
                       [_i64("zero", 0), _i64("zero1", [0]), _i64("heads", [4, 16])])
    graph = from_onnx(model)
    assert graph.op_histogram() == {"reshape": 1, "transpose": 1}
    assert graph.nodes[0].attrs["shape"] == (sym("batch"), sym("seq"), 4, 16)
    for shape in ((2, 3, 64), (1, 7, 64)):
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        assert_matches_onnxruntime(graph, model, {"x": x})


def test_symbolic_constant_of_shape_range_and_expand_become_ir_generators():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["twos"], value=numpy_helper.from_array(np.float32([2.0]))),
        helper.make_node("Gather", ["s", "one"], ["n"]),
        helper.make_node("Range", ["zero", "n", "one"], ["idx"]),
        helper.make_node("Cast", ["idx"], ["pos"], to=F32),
        helper.make_node("Equal", ["s", "minus1"], ["unset"]),  # the exporters' "-1 means keep" idiom
        helper.make_node("Where", ["unset", "ones", "s"], ["target"]),
        helper.make_node("Expand", ["row", "target"], ["rows"]),
        helper.make_node("Add", ["twos", "pos"], ["a"]),
        helper.make_node("Mul", ["a", "rows"], ["y"]),
    ]
    inits = [_i64("zero", 0), _i64("one", 1), _i64("minus1", [-1, -1]), _i64("ones", [1, 1]),
             numpy_helper.from_array(np.arange(5, dtype=np.float32).reshape(1, 5) + 1, "row")]
    model = make_model(nodes, [_info("x", ["n", 5])], [_info("y", ["n", 5])], inits)
    graph = from_onnx(model)
    ops = {n.op: n.attrs for n in graph.nodes}
    assert ops["full"]["shape"] == (sym("n"), 5)
    assert ops["expand"]["shape"] == (sym("n"), 5)
    assert not {"arange", "equal", "where"} & set(ops)  # Range(0, 5) is a constant; the Where folded away
    for rows in (3, 6):
        assert_matches_onnxruntime(graph, model, {"x": np.zeros((rows, 5), np.float32)})


def test_range_over_a_symbolic_dim_is_an_arange():
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=1), helper.make_node("Squeeze", ["s"], ["n"]),
             helper.make_node("Range", ["zero", "n", "one"], ["y"])]
    model = make_model(nodes, [_info("x", [1, "seq"])], [_info("y", ["seq"], TensorProto.INT64)],
                       [_i64("zero", 0), _i64("one", 1)])
    graph = from_onnx(model)
    (node,) = graph.nodes
    assert (node.op, node.attrs["end"]) == ("arange", sym("seq"))
    assert_matches_onnxruntime(graph, model, {"x": np.zeros((1, 6), np.float32)})


def test_shape_comparison_that_depends_on_a_symbol_runs_in_the_graph():
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=1), helper.make_node("Equal", ["s", "five"], ["is5"]),
             helper.make_node("Where", ["is5", "x", "negx"], ["y"]), helper.make_node("Neg", ["x"], ["negx"])]
    nodes = [nodes[0], nodes[1], nodes[3], nodes[2]]
    model = make_model(nodes, [_info("x", [1, "seq"])], [_info("y", [1, "seq"])], [_i64("five", [5])])
    graph = from_onnx(model)
    assert {"arange", "equal", "where"} <= set(graph.op_histogram())  # [seq] materialized, compared at run time
    for seq in (5, 7):
        assert_matches_onnxruntime(graph, model, {"x": np.ones((1, seq), np.float32)})


def test_an_output_computed_entirely_at_import_is_a_constant():
    model = make_model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Mul", ["s", "two"], ["y"])],
                       [_info("x", [2, 3])], [_info("y", [2], TensorProto.INT64)], [_i64("two", 2)])
    graph = from_onnx(model)
    assert graph.op_histogram() == {"reshape": 1}  # only the named copy of the constant [4, 6]
    assert graph.outputs[0].name == "y" and graph.outputs[0].producer.inputs[0].is_const
    np.testing.assert_array_equal(run(graph, {"x": np.zeros((2, 3), np.float32)})["y"], [4, 6])


# -- signature: dims, input_shapes, dynamic ---------------------------------------------------


def _two_input_model():
    return make_model([helper.make_node("Add", ["a", "b"], ["y"])],
                      [_info("a", ["batch", "seq"]), _info("b", ["batch", "seq"])], [_info("y", ["batch", "seq"])])


def test_dim_params_become_symbols_shared_by_inputs():
    graph = from_onnx(_two_input_model())
    assert graph.symbols() == ["batch", "seq"]
    assert graph.inputs[1].type.shape == (sym("batch"), sym("seq"))


def test_dynamic_renames_a_symbol_in_every_input():
    graph = from_onnx(_two_input_model(), dynamic={"a": {1: "tokens"}})
    assert [v.type.shape[1] for v in [*graph.inputs, *graph.outputs]] == [sym("tokens")] * 3


def test_input_shapes_fix_a_shared_symbol_everywhere():
    graph = from_onnx(_two_input_model(), input_shapes={"a": [2, 5]})
    assert [v.type.shape for v in graph.inputs] == [(2, 5), (2, 5)]


def test_dynamic_can_free_a_fixed_dim_and_unnamed_dims_get_names():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [_info("x", [1, None])], [_info("y", [1, None])])
    graph = from_onnx(model, dynamic={"x": {0: "batch"}})
    assert graph.inputs[0].type.shape == (sym("batch"), sym("x_1"))
    x = np.random.default_rng(0).standard_normal((3, 4), dtype=np.float32)
    np.testing.assert_array_equal(run(graph, {"x": x})["y"], np.maximum(x, 0))


def test_node_meta_origin_and_layer():
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="/model/layers.3/mlp/act/Relu"),
             helper.make_node("Neg", ["h"], ["y"])]
    graph = from_onnx(make_model(nodes, [_info("x", [2])], [_info("y", [2])]))
    expected = [("/model/layers.3/mlp/act/Relu", 3), ("Neg#1", None)]
    assert [(n.meta.origin, n.meta.layer) for n in graph.nodes] == expected
