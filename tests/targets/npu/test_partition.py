"""Profiles, the tags-only partitioner and the chunker, on graphs small enough to read."""

import json

import pytest

from llmc.errors import TargetError
from llmc.frontend.causal import load_causal_lm
from llmc.frontend.load import load_model
from llmc.targets.npu.chunker import cut
from llmc.targets.npu.partition import CPU, NPU, NpuFallbackWarning, partition
from llmc.targets.npu.profiles import PROFILES, get_profile


@pytest.fixture(scope="module")
def step_graph():
    from llmc.examples import tiny_llama

    return load_causal_lm(tiny_llama()[0], max_seq_len=32).graph


def test_builtin_profiles_are_data():
    htp, generic = get_profile("qnn-htp"), get_profile("generic-int8")
    assert htp.activation == {"llm": "uint16", "cnn": "uint8"} and htp.per_channel == {"conv2d", "linear"}
    assert generic.activation_dtype("llm") == "uint8" and not generic.per_channel
    assert set(PROFILES) >= {"qnn-htp", "generic-int8"}


def test_profile_from_json_and_bad_profiles(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "ops": ["linear", "add"], "activation": {"llm": "uint8"}}))
    assert get_profile(str(path)).ops == {"linear", "add"}
    path.write_text(json.dumps({"name": "bad", "ops": ["linear", "warp_drive"]}))
    with pytest.raises(TargetError, match="warp_drive"):
        get_profile(str(path))
    with pytest.raises(TargetError, match="unknown NPU device profile"):
        get_profile("hexagon-9000")


def test_partition_tags_only_and_says_why(step_graph):
    before = [(n.name, n.op, n.meta.device) for n in step_graph.nodes]
    placement = partition(step_graph, get_profile("qnn-htp"))
    assert [(n.name, n.op, n.meta.device) for n in step_graph.nodes] == before  # nothing changed
    assert set(placement) == {n.name for n in step_graph.nodes}
    by_op = {}
    for n in step_graph.nodes:
        by_op.setdefault(n.op, set()).add(placement[n.name].device)
    assert by_op["linear"] == {NPU} and by_op["rms_norm"] == {NPU} and by_op["silu"] == {NPU}
    assert by_op["attention"] == {CPU} and by_op["kv_update"] == {CPU} and by_op["embedding"] == {CPU}
    attention = next(n for n in step_graph.nodes if n.op == "attention")
    assert "beside the float32 KV cache" in placement[attention.name].reason


@pytest.mark.filterwarnings("ignore:op batch_norm is not supported")
def test_unsupported_op_falls_back_with_a_warning_naming_it():
    graph = load_model("small-cnn")  # batch_norm and reduce_mean are not ops of generic-int8
    with pytest.warns(NpuFallbackWarning, match="op reduce_mean is not supported by NPU profile generic-int8"):
        placement = partition(graph, get_profile("generic-int8"))
    mean = next(n for n in graph.nodes if n.op == "reduce_mean")
    assert placement[mean.name].device == CPU and placement[mean.name].reason.startswith("unsupported")


def test_a_profile_that_forbids_every_op_is_an_error(tmp_path):
    path = tmp_path / "none.json"
    path.write_text(json.dumps({"name": "none", "ops": []}))
    with pytest.warns(NpuFallbackWarning), pytest.raises(TargetError, match="runs none of the ops of"):
        partition(load_model("small-cnn"), get_profile(str(path)))


def test_chunks_cover_the_graph_in_topological_order(step_graph):
    placement = partition(step_graph, get_profile("qnn-htp"))
    chunks = cut(step_graph, placement)
    nodes = [n for c in chunks for n in c.nodes]
    assert sorted(n.name for n in nodes) == sorted(n.name for n in step_graph.nodes)
    done = {id(v) for v in step_graph.inputs}
    for c in chunks:
        assert {placement[n.name].device for n in c.nodes} == {c.device}
        assert all(id(v) in done for v in c.inputs)  # a chunk reads only graph inputs and earlier chunks
        for n in c.nodes:
            assert all(v.is_const or id(v) in done or v.producer in c.nodes for v in n.inputs)
            done.update(id(v) for v in n.outputs)
    assert [c.device for c in chunks][:2] == [CPU, NPU] and len(chunks) == 6  # per layer: NPU linears, CPU attention
    assert {v.name for v in chunks[-1].outputs} >= {"logits"}
