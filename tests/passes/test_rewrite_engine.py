"""The pattern language and the rewrite engine: matching, checks and their reasons, the books."""

import numpy as np
import pytest
from pass_checks import transformed

from llmc.errors import PassError
from llmc.ir import DType, Graph, NodeMeta, TensorType
from llmc.passes.patterns import MatchState, P
from llmc.passes.rewrite import Rewriter, Rule, RuleSet, apply_rules

F4 = TensorType(DType.f32, (4,))
X = {"x": np.linspace(-1, 1, 4, dtype=np.float32)}


def new_graph():
    g = Graph()
    return g, g.add_input("x", F4)


def c(g, name, value):
    return g.add_const(name, np.asarray(value, np.float32))


def matches(pattern, value):
    state = MatchState()
    return [dict(state.captures) for _ in pattern.match(value, state)]


def test_commutative_ops_match_in_both_orders_and_others_do_not():
    g, x = new_graph()
    half = c(g, "half", 0.5)
    pat = P.op("mul", P.any("x"), P.const("k", value=0.5))
    assert matches(pat, g.call("mul", half, x)) == [{"x": x, "k": half}]
    assert matches(P.op("sub", P.any("x"), P.const(value=0.5)), g.call("sub", half, x)) == []


def test_a_name_met_twice_must_be_the_same_value():
    g, x = new_graph()
    y = g.call("exp", x)
    pat = P.op("sub", P.any("x"), P.op("reduce_mean", P.any("x"), keepdims=True))
    assert len(matches(pat, g.call("sub", x, g.call("reduce_mean", x, axes=(0,), keepdims=True)))) == 1
    assert matches(pat, g.call("sub", y, g.call("reduce_mean", x, axes=(0,), keepdims=True))) == []


def test_product_matches_every_association():
    g, x = new_graph()
    y = g.call("exp", x)
    half = c(g, "half", 0.5)
    pat = P.product(P.any("x"), P.const(value=0.5), P.op("exp", P.any("x")))
    for value in (g.call("mul", g.call("mul", x, half), y), g.call("mul", half, g.call("mul", y, x)),
                  g.call("mul", g.call("mul", y, half), x)):
        assert matches(pat, value)[0]["x"] is x


def test_constants_match_by_value_within_tolerance_and_attrs_by_value_or_predicate():
    g, x = new_graph()
    assert matches(P.const(value=1.4142), c(g, "a", np.sqrt(2)))
    assert not matches(P.const(value=1.4142, tol=0.0), c(g, "b", np.sqrt(2)))
    assert not matches(P.const(value=0.5), g.call("exp", x))
    t = g.call("reduce_mean", x, axes=(0,), keepdims=True)
    assert matches(P.op("reduce_mean", P.any(), keepdims=True), t)
    assert not matches(P.op("reduce_mean", P.any(), axes=lambda a: a == (1,)), t)
    assert not matches(P.op("reduce_mean", P.any(), where=lambda n: n.inputs[0].is_const), t)


def double_to_add(check=None):
    """x * 2 -> x + x: a small rule for the engine's tests."""
    return Rule("double", P.op("mul", P.any("x"), P.const("two", value=2.0)),
                lambda m: m.call("add", m["x"], m["x"]), check=check)


def test_replacements_inherit_the_roots_meta_and_outputs_keep_their_names():
    g, x = new_graph()
    y = g.call("mul", x, c(g, "two", 2.0), meta=NodeMeta(origin="model.layers.3.mlp", layer=3))
    y.name = "logits"
    g.outputs = [y]
    before, after, report = transformed(g, X, lambda g: apply_rules(g, double_to_add()))
    assert report.counts == {"double": 1} and report.sweeps == 2
    (node,) = g.nodes
    assert node.op == "add" and node.meta.origin == "model.layers.3.mlp" and node.meta.layer == 3
    assert "  %logits = add(%x, %x) : f32[4]" in after


def test_a_check_that_refuses_says_why_and_changes_nothing():
    g, x = new_graph()
    g.outputs = [g.call("mul", x, c(g, "two", 2.0))]
    before = str(g)
    report = apply_rules(g, double_to_add(check=lambda m: f"%{m['x'].name} is a graph input"))
    assert not report.changed and report.reasons("double") == ["%x is a graph input"]
    assert str(g) == before


def test_matched_nodes_read_elsewhere_are_kept():
    g, x = new_graph()
    e = g.call("exp", x)
    rule = Rule("exp_times_two", P.op("mul", P.op("exp", P.any("x"), name="e"), P.const(value=2.0)),
                lambda m: m.call("add", m["e"], m["e"]))
    g.outputs = [g.call("mul", e, c(g, "two", 2.0)), g.call("neg", e)]
    _, after, report = transformed(g, X, lambda g: apply_rules(g, rule))
    assert report.changed and [n.op for n in g.nodes] == ["exp", "add", "neg"]


def test_a_replacement_that_would_rename_a_graph_output_is_refused():
    g, x = new_graph()
    g.outputs = [g.call("mul", x, c(g, "one", 1.0))]
    identity = Rule("identity", P.op("mul", P.any("x"), P.const(value=1.0)), lambda m: m["x"])
    report = apply_rules(g, identity)
    assert not report.changed
    assert report.reasons("identity") == ["graph output %mul would become graph input %x"]


def test_a_rule_that_changes_the_type_is_a_loud_bug():
    g, x = new_graph()
    g.outputs = [g.call("exp", x)]
    bad = Rule("bad", P.op("exp", P.any("x")), lambda m: m.call("reduce_sum", m["x"]))
    with pytest.raises(PassError, match=r"rule bad replaced %exp: f32\[4\] with a value of type f32\[\]"):
        apply_rules(g, bad)
    assert [n.op for n in g.nodes] == ["exp"], "the half-built replacement was removed"


def test_a_rewrite_that_fails_to_build_names_the_rule():
    g, x = new_graph()
    g.outputs = [g.call("exp", x)]
    bad = Rule("bad", P.op("exp", P.any("x")), lambda m: m.call("reshape", m["x"], shape=(3,)))
    with pytest.raises(PassError, match="rule bad failed to build its replacement"):
        apply_rules(g, bad)


def test_rules_are_indexed_by_root_op_and_uniquely_named():
    rw = Rewriter([RuleSet("s", (double_to_add(),)), Rule("e", P.either(P.op("exp", P.any()), P.op("neg", P.any())),
                                                         lambda m: m.root.inputs[0])])
    assert sorted(rw.by_op) == ["exp", "mul", "neg"]
    with pytest.raises(PassError, match="unique"):
        Rewriter([double_to_add(), double_to_add()])
    with pytest.raises(PassError, match="rooted at an op"):
        Rule("floating", P.any("x"), lambda m: m["x"])
