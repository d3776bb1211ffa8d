"""The pass manager: pipelines as data, the log, verification naming the culprit."""

import json

import numpy as np
import pytest

from llmc.errors import PassError
from llmc.ir import DType, Graph, TensorType, run
from llmc.passes import PIPELINES, Pass, PassResult, base, get_pass, pass_names, register_pass, resolve, run_pipeline
from llmc.passes.pipelines import Fixpoint, PassStep


def small_graph():
    """exp(x) twice (a CSE candidate), a dead node, and sqrt of a constant (a fold candidate)."""
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, (4,)))
    s = g.call("sqrt", g.add_const("four", np.array(4.0, np.float32)))
    a, b = g.call("exp", x), g.call("exp", x)
    g.call("neg", x)
    g.outputs = [g.call("mul", g.call("add", a, b), s)]
    return g


@pytest.fixture
def extra_passes(monkeypatch):
    """Register test-only passes for one test (the registry is restored after it)."""

    def add(cls):
        monkeypatch.setitem(base._PASSES, cls.name, cls)
        return cls

    return add


class BreakTypes(Pass):
    """Gives the first node's output a wrong type (a broken pass, for the manager's tests).

    before: %y = exp(%x) : f32[4]      after: %y = exp(%x) : f32[5]
    """

    name = "test_break_types"
    invariant = "none: it breaks the graph on purpose"

    def run(self, graph):
        graph.nodes[0].outputs[0].type = TensorType(DType.f32, (5,))
        return PassResult(graph, True)


class Crash(Pass):
    """Raises a ZeroDivisionError (a buggy pass).

    before: any graph      after: no graph
    """

    name = "test_crash"
    invariant = "none"

    def run(self, graph):
        return 1 / 0


class AlwaysChanges(Pass):
    """Claims a change every time (a pass that never converges).

    before: any graph      after: the same graph
    """

    name = "test_always_changes"
    invariant = "the graph is unchanged"

    def run(self, graph):
        return PassResult(graph, True, {"calls": 1})


def test_pipelines_are_printable_lists_of_pass_names():
    assert PIPELINES["O0"] == ["dce"]
    assert PIPELINES["O1"] == ["fixpoint(canonicalize, constant_fold, cse, dce)"]
    assert json.loads(json.dumps(PIPELINES)) == PIPELINES
    assert [str(s) for s in resolve("O1")] == PIPELINES["O1"]
    assert resolve("-O1") == resolve("O1")
    assert resolve("cse, fixpoint[3](dce, cse)") == [PassStep("cse"), Fixpoint((PassStep("dce"), PassStep("cse")), 3)]
    assert str(resolve("fixpoint[3](dce)")[0]) == "fixpoint[3](dce)"
    assert {"dce", "constant_fold", "cse", "canonicalize"} <= set(pass_names())


@pytest.mark.parametrize("text", ["fixpoint(dce", "dce,, cse", "fixpoint[0](dce)", "dce)", "dce $"])
def test_malformed_pipelines_are_refused(text):
    with pytest.raises(PassError, match="bad pipeline"):
        resolve(text)


def test_unknown_pass_is_reported_before_anything_runs():
    g = small_graph()
    before = str(g)
    with pytest.raises(PassError, match="unknown pass 'no_such_pass'") as e:
        run_pipeline(g, ["dce", "no_such_pass"])
    assert "known passes: " in str(e.value)
    assert str(g) == before


def test_log_records_every_pass_with_timings_and_stats():
    g = small_graph()
    inputs = {"x": np.arange(4, dtype=np.float32)}
    expected = run(g, inputs)
    g, log = run_pipeline(g, "O1", verify=True)
    assert [r.name for r in log[:4]] == ["canonicalize", "constant_fold", "cse", "dce"]
    assert [r.round for r in log[:4]] == [1, 1, 1, 1]
    assert all(r.seconds >= 0 for r in log)
    assert all({"nodes_before", "nodes_after"} <= set(r.stats) for r in log)
    first_round = {r.name: r for r in log if r.round == 1}
    assert first_round["constant_fold"].stats["folded"] == 1
    assert first_round["cse"].stats["nodes_merged"] == 1
    assert first_round["dce"].stats["nodes_removed"] == 1
    assert not any(r.changed for r in log if r.round == log[-1].round), "the last round is the quiet one"
    entry = log[1].to_json()
    assert entry["name"] == "constant_fold" and entry["round"] == 1 and "seconds" in entry
    assert "seconds" not in log[1].to_json(timings=False)
    json.dumps([r.to_json() for r in log])
    np.testing.assert_allclose(run(g, inputs)["mul"], expected["mul"], rtol=1e-6)
    assert [n.op for n in g.nodes] == ["exp", "add", "mul"]


def test_verification_failure_names_the_pass_and_what_ran_before(extra_passes):
    extra_passes(BreakTypes)
    with pytest.raises(PassError) as e:
        run_pipeline(small_graph(), ["dce", "cse", "test_break_types", "constant_fold"], verify=True)
    err = e.value
    assert "pass test_break_types left the graph invalid" in str(err)
    assert "passes run before it: dce, cse" in str(err)
    assert err.pass_name == "test_break_types" and err.previous == ["dce", "cse"]


def test_without_verify_a_broken_pass_goes_unnoticed(extra_passes):
    extra_passes(BreakTypes)
    _, log = run_pipeline(small_graph(), ["test_break_types"])
    assert [r.name for r in log] == ["test_break_types"]


def test_a_crashing_pass_is_named(extra_passes):
    extra_passes(Crash)
    with pytest.raises(PassError, match=r"pass test_crash crashed: ZeroDivisionError.*passes run before it: dce"):
        run_pipeline(small_graph(), ["dce", "test_crash"])


def test_an_invalid_input_graph_is_blamed_on_no_pass():
    g = small_graph()
    g.nodes[1].outputs[0].type = TensorType(DType.f32, (3,))
    with pytest.raises(PassError, match="the input graph is invalid before any pass ran"):
        run_pipeline(g, "O0", verify=True)


def test_fixpoint_stops_at_its_bound(extra_passes):
    extra_passes(AlwaysChanges)
    _, log = run_pipeline(small_graph(), ["fixpoint[3](test_always_changes)"])
    assert [r.round for r in log] == [1, 2, 3]


def test_fixpoint_stops_when_a_round_changes_nothing():
    _, log = run_pipeline(small_graph(), ["fixpoint(cse, dce)"])
    rounds = sorted({r.round for r in log})
    assert rounds == [1, 2]
    assert any(r.changed for r in log if r.round == 1) and not any(r.changed for r in log if r.round == 2)


def test_pass_options_are_a_dataclass_given_by_keyword():
    fold = get_pass("constant_fold")(max_elements=0)
    assert fold.options.max_elements == 0
    result = fold.run(small_graph())
    assert not result.changed and result.stats["skipped"] == {"too large": 1}
    with pytest.raises(PassError, match="has no option"):
        get_pass("constant_fold")(max_elems=3)


def test_register_pass_enforces_the_contract():
    class NoDoc(Pass):
        name = "test_no_doc"
        invariant = "x"

    with pytest.raises(PassError, match="docstring"):
        register_pass(NoDoc)

    class NoInvariant(Pass):
        """doc"""

        name = "test_no_invariant"

    with pytest.raises(PassError, match="invariant"):
        register_pass(NoInvariant)

    class BadOptions(Pass):
        """doc"""

        name = "test_bad_options"
        invariant = "x"
        Options = dict

    with pytest.raises(PassError, match="dataclass"):
        register_pass(BadOptions)
    assert "test_no_doc" not in pass_names()


def test_every_registered_pass_shows_the_ir_before_and_after():
    for name in ("dce", "constant_fold", "cse", "canonicalize"):
        cls = get_pass(name)
        assert cls.invariant and "graph main(" in cls.__doc__, name
