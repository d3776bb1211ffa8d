"""Canonicalization, norm rules: ONNX exporters' layer norm and Llama's RMSNorm raised."""

import numpy as np
from decomposed_graphs import const, f32, layer_norm_onnx, rms_norm_llama
from pass_checks import transformed

from llmc.ir import DType, Graph, TensorType
from llmc.passes import get_pass
from llmc.passes.canonicalize import RULE_SETS
from llmc.passes.rewrite import apply_rules

rng = np.random.default_rng(0)


def canonicalize(g):
    return get_pass("canonicalize")().run(g)


def norms(g):
    return apply_rules(g, RULE_SETS["norms"])


def graph(*shape, dtype=DType.f32):
    g = Graph()
    x = g.add_input("x", TensorType(dtype, shape))
    return g, x, {"x": (rng.standard_normal(shape) * 3 + 1).astype(dtype.np)}


def param(g, name, *shape):
    return g.add_const(name, rng.standard_normal(shape).astype(np.float32))


def test_onnx_layer_norm_with_weight_and_bias_becomes_one_node():
    g, x, inputs = graph(2, 5, 16)
    g.outputs = [layer_norm_onnx(g, x, param(g, "w", 16), param(g, "b", 16), eps=1e-12)]
    before, after, result = transformed(g, inputs, canonicalize)
    assert before.count("reduce_mean(") == 2
    (node,) = g.nodes
    assert node.op == "layer_norm" and [v.name for v in node.inputs] == ["x", "w", "b"]
    assert node.attrs == {"axis": -1, "eps": 1e-12}
    assert result.stats["rewrites"] == {"layer_norm": 1, "layer_norm_weight": 1, "layer_norm_bias": 1}


def test_layer_norm_over_two_trailing_axes_and_without_affine():
    g, x, inputs = graph(2, 4, 8)
    g.outputs = [layer_norm_onnx(g, x, axes=(1, 2))]
    _, after, _ = transformed(g, inputs, norms)
    assert "layer_norm(%x) {axis=-2, eps=1e-05}" in after and len(g.nodes) == 1


def test_layer_norm_over_a_leading_axis_is_refused_with_the_reason():
    g, x, _ = graph(4, 8)
    g.outputs = [layer_norm_onnx(g, x, axes=(0,))]
    report = norms(g)
    assert not report.changed
    assert report.reasons("layer_norm") == ["the means are not keepdims reductions over the same trailing axes"]


def test_layer_norm_with_a_tensor_epsilon_is_refused():
    g, x, _ = graph(4, 8)
    mean = g.call("reduce_mean", x, axes=(-1,), keepdims=True)
    d = g.call("sub", x, mean)
    var = g.call("reduce_mean", g.call("mul", d, d), axes=(-1,), keepdims=True)
    g.outputs = [g.call("div", d, g.call("sqrt", g.call("add", var, const(g, "eps", [[1e-5]] * 4))))]
    assert norms(g).reasons("layer_norm") == ["epsilon %eps is not a one-element constant"]


def test_a_bias_of_the_wrong_shape_is_not_absorbed():
    g, x, inputs = graph(3, 8)
    g.outputs = [layer_norm_onnx(g, x, param(g, "w", 8), param(g, "b", 3, 8))]
    _, _, report = transformed(g, inputs, norms)
    assert [n.op for n in g.nodes] == ["layer_norm", "add"]
    assert report.reasons("layer_norm_bias") == ["bias %b: f32[3,8] does not have the normalized shape [8]"]


def test_llama_rms_norm_becomes_rms_norm_with_weight():
    g, x, inputs = graph(1, 6, 32)
    g.outputs = [rms_norm_llama(g, x, param(g, "w", 32), eps=1e-6)]
    before, after, result = transformed(g, inputs, canonicalize)
    assert "rsqrt(" in before
    (node,) = g.nodes
    assert node.op == "rms_norm" and node.attrs == {"axis": -1, "eps": 1e-6}
    assert [v.name for v in node.inputs] == ["x", "w"]
    assert result.stats["rewrites"] == {"rms_norm": 1, "rms_norm_weight": 1}


def test_half_precision_rms_norm_computed_in_f32_becomes_one_node():
    g, x, inputs = graph(2, 32, dtype=DType.f16)
    w = g.add_const("w", rng.standard_normal(32).astype(np.float16))
    g.outputs = [rms_norm_llama(g, x, w, compute_f32=True)]
    _, after, result = transformed(g, inputs, canonicalize, rtol=1e-3)
    assert [n.op for n in g.nodes] == ["rms_norm"] and g.nodes[0].outputs[0].type.dtype == DType.f16
    assert result.stats["rewrites"] == {"rms_norm": 1, "rms_norm_in_f32": 1, "rms_norm_weight": 1}


def test_rms_norm_cast_to_another_type_is_refused():
    g, x, _ = graph(2, 32, dtype=DType.f16)
    h = g.call("cast", x, dtype=DType.f32)
    var = g.call("reduce_mean", g.call("pow", h, const(g, "two", 2.0)), axes=(-1,), keepdims=True)
    n = g.call("mul", h, g.call("rsqrt", g.call("add", var, const(g, "eps", 1e-6))))
    g.outputs = [g.call("cast", n, dtype=DType.bf16)]
    report = norms(g)
    assert [n.op for n in g.nodes] == ["cast", "rms_norm", "cast"]
    assert report.reasons("rms_norm_in_f32") == ["the result is cast to bf16, not back to f16"]


def test_rms_norm_weight_that_is_not_the_normalized_shape_is_refused():
    g, x, _ = graph(2, 8)
    g.outputs = [rms_norm_llama(g, x, param(g, "w", 1, 8))]
    report = norms(g)
    assert [n.op for n in g.nodes] == ["rms_norm", "mul"]
    assert report.reasons("rms_norm_weight") == ["weight %w: f32[1,8] does not have the normalized shape [8]"]


def test_the_interior_of_a_norm_read_elsewhere_stays():
    g, x, inputs = graph(2, 8)
    y = layer_norm_onnx(g, x)
    mean = next(n for n in g.nodes if n.op == "reduce_mean").outputs[0]
    g.outputs = [y, g.call("neg", mean)]
    _, _, report = transformed(g, inputs, norms)
    assert report.counts == {"layer_norm": 1}
    assert [n.op for n in g.nodes] == ["reduce_mean", "layer_norm", "neg"]


def test_rms_norm_of_a_tiny_value_with_no_epsilon():
    g, x, inputs = graph(2, 8)
    var = g.call("reduce_mean", g.call("mul", x, x), axes=(-1,), keepdims=True)
    g.outputs = [g.call("div", x, g.call("sqrt", g.call("add", var, const(g, "eps", 0.0))))]
    _, after, _ = transformed(g, inputs, norms)
    assert "rms_norm(%x) {axis=-1, eps=0.0}" in after
    assert f32(2, 8) == g.outputs[0].type
