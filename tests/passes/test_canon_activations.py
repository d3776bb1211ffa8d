"""Canonicalization, activation rules: erf/tanh GELU and SiLU raised to first-class ops."""

import numpy as np
import pytest
from decomposed_graphs import const, erf_gelu, f32, tanh_gelu
from pass_checks import transformed

from llmc.ir import DType, Graph, NodeMeta, TensorType
from llmc.passes import get_pass
from llmc.passes.canonicalize import RULE_SETS
from llmc.passes.rewrite import apply_rules

X = {"x": np.linspace(-4, 4, 24, dtype=np.float32).reshape(2, 12)}


def canonicalize(g):
    return get_pass("canonicalize")().run(g)


def graph():
    g = Graph()
    return g, g.add_input("x", f32(2, 12))


@pytest.mark.parametrize("form", ["div", "mul", "outer"])
def test_erf_gelu_in_its_orderings_becomes_gelu(form):
    g, x = graph()
    g.outputs = [erf_gelu(g, x, form=form)]
    before, after, result = transformed(g, X, canonicalize)
    assert "erf(" in before
    assert [n.op for n in g.nodes] == ["gelu"] and g.nodes[0].attrs["approximate"] == "none"
    assert result.stats["rewrites"] == {"gelu_erf": 1}


def test_gpt2_tanh_gelu_becomes_gelu_tanh():
    g, x = graph()
    g.outputs = [tanh_gelu(g, x)]
    _, after, _ = transformed(g, X, canonicalize)
    assert [n.op for n in g.nodes] == ["gelu"] and "= gelu(%x) {approximate=tanh} : f32[2,12]" in after


def test_gelu_keeps_the_origin_of_the_matched_root():
    g, x = graph()
    y = erf_gelu(g, x)
    y.producer.meta = NodeMeta(origin="encoder.layer.2.intermediate", layer=2)
    g.outputs = [y]
    canonicalize(g)
    assert g.nodes[0].meta == NodeMeta(origin="encoder.layer.2.intermediate", layer=2)


def test_silu_from_x_times_sigmoid_x():
    g, x = graph()
    g.outputs = [g.call("mul", g.call("sigmoid", x), x)]
    transformed(g, X, canonicalize)
    assert [n.op for n in g.nodes] == ["silu"]


def test_gelu_with_a_wrong_constant_is_left_alone():
    g, x = graph()
    scaled = g.call("div", x, const(g, "not_sqrt2", 1.5))
    term = g.call("add", g.call("erf", scaled), const(g, "one", 1.0))
    g.outputs = [g.call("mul", g.call("mul", x, const(g, "half", 0.5)), term)]
    assert not apply_rules(g, RULE_SETS["activations"]).changed


def test_gelu_that_broadcasts_x_is_refused_with_the_reason():
    g, x = graph()
    wide = g.call("mul", x, const(g, "half", np.full((3, 2, 12), 0.5)))
    term = g.call("add", g.call("erf", g.call("div", x, const(g, "sqrt2", 1.4142))), const(g, "one", 1.0))
    g.outputs = [g.call("mul", wide, term)]
    report = apply_rules(g, RULE_SETS["activations"])
    assert not report.changed
    assert report.reasons("gelu_erf") == [
        "the result f32[3,2,12] is not of the type of %x (f32[2,12]): broadcasting changes it"
    ]


def test_integer_silu_lookalike_is_refused():
    g = Graph()
    x = g.add_input("x", TensorType(DType.i32, (4,)))
    g.outputs = [g.call("mul", x, g.call("sigmoid", x))]
    report = apply_rules(g, RULE_SETS["activations"])
    assert report.reasons("silu") == ["%x is i32, not a float"]
