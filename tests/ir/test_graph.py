"""The IR keeps its own books: use lists, replace_uses, all-or-nothing removal, verify."""

import numpy as np
import pytest

from llmc.errors import LLMCError, ShapeError, VerifyError
from llmc.ir import DType, Graph, NodeMeta, TensorType, run
from llmc.ir import shapes as S


def mlp() -> Graph:
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, ("batch", 8)))
    w = g.add_const("w", np.arange(32, dtype=np.float32).reshape(4, 8) / 10)
    h = g.call("linear", x, w, meta=NodeMeta(origin="model.layers.2.mlp", layer=2))
    y = g.call("relu", h)
    g.outputs = [y]
    return g


def test_builder_infers_symbolic_types_and_verifies():
    g = mlp()
    g.verify()
    assert str(g.outputs[0].type) == "f32[batch,4]"
    assert "linear(%x, %w)" in str(g) and "@L2" in str(g)


def test_use_lists_follow_input_edits():
    g = mlp()
    lin, relu = g.nodes
    assert lin.output.users == [relu]
    other = g.call("neg", lin.output)
    relu.set_input(0, other)
    assert relu in other.users and lin.output.users == [other.producer]
    g.sort()
    g.verify()


def test_replace_uses_redirects_graph_outputs_too():
    g = mlp()
    lin, relu = g.nodes
    g.replace_uses(relu.output, lin.output)
    assert g.outputs == [lin.output] and not relu.output.uses
    g.remove_nodes([relu])
    g.verify()
    assert [n.op for n in g.nodes] == ["linear"]


def test_remove_nodes_refuses_while_used_and_changes_nothing():
    g = mlp()
    lin, relu = g.nodes
    with pytest.raises(VerifyError, match="still read by"):
        g.remove_nodes([lin])
    assert g.nodes == [lin, relu] and lin.output.users == [relu]
    g.verify()


def test_verify_names_the_node_and_its_neighbourhood():
    g = mlp()
    lin, relu = g.nodes
    relu.output.type = TensorType(DType.f32, ("batch", 5))
    with pytest.raises(VerifyError) as e:
        g.verify()
    text = str(e.value)
    assert "relu" in text and "infers to f32[batch,4]" in text and ">>" in text


def test_verify_catches_use_before_definition():
    g = mlp()
    g.nodes.reverse()
    with pytest.raises(VerifyError, match="before it is defined"):
        g.verify()
    g.sort()
    g.verify()


def test_bad_shapes_are_refused_when_building():
    g = Graph()
    a = g.add_input("a", TensorType(DType.f32, (2, 3)))
    b = g.add_input("b", TensorType(DType.f32, (4, 5)))
    with pytest.raises(ShapeError, match="inner dims"):
        g.call("matmul", a, b)
    with pytest.raises(LLMCError, match="no attribute"):
        g.call("relu", a, alpha=1)


def test_reshape_solves_symbolic_minus_one():
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, ("seq", 384)))
    y = g.call("reshape", x, shape=(1, -1, 12, 32))
    assert y.type.shape == (1, S.sym("seq"), 12, 32)
    g.outputs = [y]
    assert run(g, {"x": np.zeros((5, 384), np.float32)})[y.name].shape == (1, 5, 12, 32)


def test_interpreter_checks_inputs_against_symbols():
    g = Graph()
    a = g.add_input("a", TensorType(DType.f32, ("n", 3)))
    b = g.add_input("b", TensorType(DType.f32, ("n", 3)))
    g.outputs = [g.call("add", a, b)]
    from llmc.errors import InputError

    with pytest.raises(InputError, match="symbol n"):
        run(g, {"a": np.zeros((2, 3), np.float32), "b": np.zeros((4, 3), np.float32)})
    with pytest.raises(InputError, match="axis 1 is 4"):
        run(g, {"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 4), np.float32)})
    with pytest.raises(InputError, match="dtype"):
        run(g, {"a": np.zeros((2, 3), np.float64), "b": np.zeros((2, 3), np.float32)})


def test_networkx_view_matches_edges():
    from llmc.ir.nx import node_digraph

    g = mlp()
    d = node_digraph(g)
    assert list(d.edges) == [(g.nodes[0].name, g.nodes[1].name)]
