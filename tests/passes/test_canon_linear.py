"""Canonicalization, linear rules: products with a constant weight matrix become ``linear``."""

import numpy as np
from pass_checks import transformed

from llmc.ir import DType, Graph, TensorType
from llmc.ir.tensor import TransposedWeight
from llmc.passes.canonicalize import RULE_SETS
from llmc.passes.rewrite import apply_rules

rng = np.random.default_rng(0)


def linear_rules(g):
    return apply_rules(g, RULE_SETS["linear"])


def graph(*shape):
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, shape))
    return g, x, {"x": rng.standard_normal(shape).astype(np.float32)}


def weight(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def ops(g):
    return [n.op for n in g.nodes]


def test_matmul_and_bias_add_of_an_onnx_export_become_one_linear():
    g, x, inputs = graph(2, 5, 8)
    w, b = g.add_const("W", weight(8, 6)), g.add_const("b", weight(6))
    g.outputs = [g.call("add", b, g.call("matmul", x, w))]  # the legacy exporter adds the bias first
    before, after, report = transformed(g, inputs, linear_rules)
    assert before == (
        "graph main(%x: f32[2,5,8]) {\n"
        "  // 2 constants, 54 elements\n"
        "  %matmul = matmul(%x, %W) : f32[2,5,6]\n"
        "  %add = add(%b, %matmul) : f32[2,5,6]\n"
        "  return %add\n"
        "}"
    )
    assert after == (
        "graph main(%x: f32[2,5,8]) {\n"
        "  // 3 constants, 102 elements\n"
        "  %add = linear(%x, %W.t, %b) : f32[2,5,6]\n"
        "  return %add\n"
        "}"
    )
    assert report.counts == {"matmul_weight": 1, "linear_bias": 1}
    w_t = g.constants["W.t"].const
    assert isinstance(w_t, TransposedWeight) and w_t.type.shape == (6, 8)
    np.testing.assert_array_equal(w_t.numpy(), g.constants["W"].const.numpy().T)


def test_a_weight_read_by_several_products_is_transposed_once():
    g, x, inputs = graph(3, 8)
    w = g.add_const("W", weight(8, 4))
    g.outputs = [g.call("matmul", x, w), g.call("matmul", g.call("exp", x), w)]
    transformed(g, inputs, linear_rules)
    assert ops(g) == ["linear", "exp", "linear"]
    assert g.nodes[0].inputs[1] is g.nodes[2].inputs[1]


def test_transposed_constant_weight_is_read_as_it_is():
    g, x, inputs = graph(3, 8)
    w = g.add_const("w", weight(4, 8))
    g.outputs = [g.call("matmul", x, g.call("transpose", w, perm=(1, 0)))]
    _, after, report = transformed(g, inputs, linear_rules)
    assert report.counts == {"matmul_transposed_weight": 1}
    assert "linear(%x, %w)" in after and "transpose" not in after


def test_bias_of_shape_one_by_n_is_reshaped():
    g, x, inputs = graph(3, 8)
    w, b = g.add_const("W", weight(8, 4)), g.add_const("b", weight(1, 4))
    g.outputs = [g.call("add", g.call("matmul", x, w), b)]
    transformed(g, inputs, linear_rules)
    assert ops(g) == ["reshape", "linear"]


def test_refusals_say_why():
    g, x, _ = graph(3, 8)
    w = g.add_const("W", weight(8, 4))
    g.outputs = [g.call("matmul", x, w), g.call("exp", w)]
    report = linear_rules(g)
    assert ops(g) == ["matmul", "exp"]
    assert report.reasons("matmul_weight") == [
        "the weight %W is also read by ['exp']: a transposed copy would double it"
    ]

    g, x, _ = graph(3, 8)
    rows = g.add_const("rows", weight(3, 4))
    y = g.call("linear", x, g.add_const("wt", weight(4, 8)))
    g.outputs = [g.call("add", y, rows), g.call("exp", y)]
    report = linear_rules(g)
    assert ops(g) == ["linear", "add", "exp"]
    assert report.reasons("linear_bias") == [
        "%rows: f32[3,4] is not one value per output feature ([4])"
    ]


def test_a_product_also_read_without_the_bias_keeps_its_add():
    g, x, _ = graph(3, 8)
    y = g.call("linear", x, g.add_const("w", weight(4, 8)))
    g.outputs = [g.call("add", y, g.add_const("b", weight(4))), g.call("exp", y)]
    report = linear_rules(g)
    assert ops(g) == ["linear", "add", "exp"]
    assert report.reasons("linear_bias") == ["the product %linear is also read without the bias"]
