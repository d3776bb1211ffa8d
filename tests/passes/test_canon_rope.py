"""Canonicalization, rope rule: HF's rotate_half raised to ``rope``."""

import numpy as np
from decomposed_graphs import const, rope_tables, rotate_half_rope
from pass_checks import transformed

from llmc.ir import DType, Graph, NodeMeta, TensorType
from llmc.passes.canonicalize import RULE_SETS
from llmc.passes.rewrite import apply_rules

rng = np.random.default_rng(0)
S, D = 5, 8


def rope_rules(g):
    return apply_rules(g, RULE_SETS["rope"])


def graph():
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, (1, 2, S, D)))
    cos, sin = rope_tables(S, D)
    inputs = {"x": rng.standard_normal((1, 2, S, D)).astype(np.float32)}
    return g, x, g.add_const("cos", cos), g.add_const("sin", sin), inputs


def test_rotate_half_becomes_rope():
    g, x, cos, sin, inputs = graph()
    y = rotate_half_rope(g, x, cos, sin)
    y.producer.meta = NodeMeta(origin="model.layers.1.self_attn", layer=1)
    g.outputs = [y]
    before, after, report = transformed(g, inputs, rope_rules)
    assert "concat(" in before and "neg(" in before
    (node,) = g.nodes
    assert node.op == "rope" and [v.name for v in node.inputs] == ["x", "cos", "sin"] and not node.attrs["interleaved"]
    assert node.meta.layer == 1 and report.counts == {"rope": 1}


def test_rotate_half_with_split_and_times_minus_one():
    g, x, cos, sin, inputs = graph()
    x1, x2 = g.call("split", x, axis=-1, sizes=(D // 2, D // 2))
    rot = g.call("concat", g.call("mul", x2, const(g, "minus", -1.0)), x1, axis=3)
    g.outputs = [g.call("add", g.call("mul", rot, sin), g.call("mul", cos, x))]
    transformed(g, inputs, rope_rules)
    assert [n.op for n in g.nodes] == ["rope"]


def test_halves_cut_in_the_wrong_place_are_refused():
    g, x, cos, sin, _ = graph()
    x1 = g.call("slice", x, axes=(-1,), starts=(0,), ends=(3,))
    x2 = g.call("slice", x, axes=(-1,), starts=(3,), ends=(D,))
    rot = g.call("concat", g.call("neg", x2), x1, axis=-1)
    g.outputs = [g.call("add", g.call("mul", x, cos), g.call("mul", rot, sin))]
    assert rope_rules(g).reasons("rope") == ["the two halves are not x[..., :4] and x[..., 4:]"]


def test_tables_that_broadcast_x_are_refused():
    g, x, _, _, _ = graph()
    wide = g.add_const("wide", np.ones((3, 2, S, D), np.float32))
    g.outputs = [rotate_half_rope(g, x, wide, wide)]
    report = rope_rules(g)
    assert not report.changed
    assert report.reasons("rope") == ["%wide: f32[3,2,5,8] does not broadcast to %x: f32[1,2,5,8]"]


def test_rotation_the_other_way_is_not_rope():
    g, x, cos, sin, _ = graph()
    x1 = g.call("slice", x, axes=(-1,), starts=(0,), ends=(D // 2,))
    x2 = g.call("slice", x, axes=(-1,), starts=(D // 2,), ends=(D,))
    rot = g.call("concat", x2, g.call("neg", x1), axis=-1)
    g.outputs = [g.call("add", g.call("mul", x, cos), g.call("mul", rot, sin))]
    assert not rope_rules(g).changed
