"""Dead-code elimination, constant folding and CSE: before/after IR, numerics, and refusals."""

import numpy as np
import pytest
from pass_checks import transformed

from llmc.ir import DType, Graph, NodeMeta, QuantSpec, TensorType, sym
from llmc.ir.tensor import MetaWeight
from llmc.passes import get_pass

X = {"x": np.linspace(-2, 2, 4, dtype=np.float32)}


def graph_with_x(shape=(4,)):
    g = Graph()
    return g, g.add_input("x", TensorType(DType.f32, shape))


def c(g, name, value, dtype=np.float32):
    return g.add_const(name, np.asarray(value, dtype=dtype))


def run_pass(name, **options):
    return lambda g: get_pass(name)(**options).run(g)


# -- dce ------------------------------------------------------------------------------------


def test_dce_removes_dead_chains_and_their_constants():
    g, x = graph_with_x()
    dead = g.call("exp", g.call("add", x, c(g, "w", [1, 2, 3, 4])))
    g.call("neg", dead)
    g.outputs = [g.call("relu", x)]
    before, after, result = transformed(g, X, run_pass("dce"))
    assert "exp" in before and "%w" not in after
    assert after == "graph main(%x: f32[4]) {\n  %relu = relu(%x) : f32[4]\n  return %relu\n}"
    assert result.changed and result.stats == {"nodes_removed": 3, "constants_removed": 1}


def test_dce_keeps_multi_output_nodes_with_one_live_output_and_unused_inputs():
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, (4,)))
    g.add_input("unused", TensorType(DType.f32, (2,)))
    a, _ = g.call("split", x, axis=0, sizes=(2, 2))
    g.outputs = [a]
    result = get_pass("dce")().run(g)
    assert not result.changed and [n.op for n in g.nodes] == ["split"] and len(g.inputs) == 2


# -- constant folding -----------------------------------------------------------------------


def test_constant_fold_folds_chains_into_one_constant():
    g, x = graph_with_x()
    s = g.call("sqrt", c(g, "two", 2.0))
    r = g.call("reciprocal", s)
    g.outputs = [g.call("mul", x, r)]
    before, after, result = transformed(g, X, run_pass("constant_fold"))
    assert "= sqrt(" in before and "= sqrt(" not in after and "= reciprocal(" not in after
    assert result.stats["folded"] == 2
    folded = g.nodes[0].inputs[1]
    assert folded.is_const and np.isclose(folded.const.numpy(), 1 / np.sqrt(2))


def test_constant_fold_folds_generators_and_keeps_integer_dtypes():
    g, x = graph_with_x()
    idx = g.call("arange", end=4)
    g.outputs = [g.call("gather", x, g.call("sub", c(g, "three", [3], np.int64), idx))]
    _, after, result = transformed(g, X, run_pass("constant_fold"))
    assert result.stats["folded"] == 2 and "arange" not in after
    assert g.nodes[0].inputs[1].type.dtype == DType.i64


def test_constant_fold_never_reads_weights_without_data():
    g, x = graph_with_x((4, 8))
    w = g.add_const("w", MetaWeight(TensorType(DType.f32, (8, 8))))
    g.outputs = [g.call("matmul", x, g.call("transpose", w, perm=(1, 0)))]
    result = get_pass("constant_fold")().run(g)
    assert not result.changed and result.stats["skipped"] == {"weights not materialized": 1}


def test_constant_fold_leaves_symbolic_shapes_large_outputs_and_dead_nodes():
    g = Graph()
    n = g.add_input("n", TensorType(DType.f32, (sym("seq"),)))
    g.call("neg", c(g, "dead", 1.0))
    ramp = g.call("arange", end=sym("seq"), dtype=DType.f32)
    big = g.call("full", shape=(1 << 11, 1 << 10), value=1.0, dtype=DType.f32)
    g.outputs = [g.call("add", n, ramp), g.call("reduce_sum", big)]
    result = get_pass("constant_fold")(max_elements=1 << 20).run(g)
    assert not result.changed
    assert result.stats["skipped"] == {"dead": 1, "symbolic shape": 1, "too large": 1}


def test_constant_fold_skips_annotated_nodes():
    g, x = graph_with_x((2, 4))
    w = c(g, "w", np.ones((4, 4)))
    g.outputs = [g.call("linear", x, g.call("neg", w))]
    g.nodes[0].meta = NodeMeta(quant=QuantSpec(bits=8))
    result = get_pass("constant_fold")().run(g)
    assert result.stats["skipped"] == {"annotated (quant/sparsity)": 1}


def test_a_folded_graph_output_keeps_its_name():
    g, x = graph_with_x()
    g.outputs = [x, g.call("exp", c(g, "zero", [0.0, 1.0]))]
    g.outputs[1].name = "logits"
    _, after, result = transformed(g, X, run_pass("constant_fold"))
    assert result.changed and g.outputs[1].is_const and g.outputs[1].name == "logits"
    assert "logits" in g.constants and "return %x, %logits" in after


# -- cse ------------------------------------------------------------------------------------


def test_cse_merges_duplicates_including_commuted_inputs():
    g, x = graph_with_x()
    y = g.call("exp", x)
    a, b = g.call("mul", x, y), g.call("mul", y, x)
    g.outputs = [g.call("sub", a, b), g.call("sub", b, a)]
    before, after, result = transformed(g, X, run_pass("cse"))
    assert before.count("mul(") == 2 and after.count("mul(") == 1
    assert result.stats["nodes_merged"] == 1


def test_cse_keeps_nodes_with_different_attributes_or_annotations():
    g, x = graph_with_x((2, 4))
    s0, s1 = g.call("softmax", x, axis=0), g.call("softmax", x, axis=1)
    w = c(g, "w", np.ones((4, 4)))
    l0, l1 = g.call("linear", x, w), g.call("linear", x, w)
    l1.producer.meta = NodeMeta(quant=QuantSpec(bits=4, group=2))
    g.outputs = [g.call("add", s0, s1), g.call("add", l0, l1)]
    result = get_pass("cse")().run(g)
    assert not result.changed


def test_cse_merges_small_equal_constants_by_content_but_not_large_ones():
    g, x = graph_with_x((4, 4))
    a, b = c(g, "half_a", 0.5), c(g, "half_b", 0.5)
    big = np.ones((4, 4), np.float32)
    p, q = c(g, "big_a", big), c(g, "big_b", big)
    halves = g.call("add", g.call("mul", x, a), g.call("mul", x, b))
    g.outputs = [halves, g.call("add", g.call("add", x, p), g.call("add", x, q))]
    _, after, result = transformed(g, {"x": np.ones((4, 4), np.float32)}, run_pass("cse", max_const_elements=8))
    assert result.stats == {"constants_merged": 1, "nodes_merged": 1}
    assert "half_b" not in g.constants and {"big_a", "big_b"} <= set(g.constants)


def test_cse_does_not_merge_two_named_outputs():
    g, x = graph_with_x()
    g.outputs = [g.call("exp", x), g.call("exp", x)]
    result = get_pass("cse")().run(g)
    assert not result.changed and len(g.nodes) == 2


@pytest.mark.parametrize("name", ["dce", "constant_fold", "cse"])
def test_cleanup_passes_leave_a_clean_graph_alone(name):
    g, x = graph_with_x()
    g.outputs = [g.call("relu", x)]
    assert not get_pass(name)().run(g).changed
