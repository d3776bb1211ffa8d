"""Layered scheduling: splitting the step graph, the plan and its memory model, the pre-flight check,
and the schedule pass's layout of weights (one contiguous region per layer group)."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

import llmc
from llmc import examples
from llmc.codegen import devices
from llmc.errors import InputError, PassError, TargetError
from llmc.frontend.causal import load_causal_lm
from llmc.ir.interpreter import run_graph
from llmc.passes.schedule.plan import (
    Group,
    choose,
    minimum_budget,
    parse_bytes,
    resident_plan,
    step_facts,
    step_time,
    window,
)
from llmc.passes.schedule.preflight import causal_lm_shapes, preflight
from llmc.passes.schedule.split import run_parts, split, unit_list, units
from llmc.passes.schedule.storage import Storage

DISK = Storage("disk", 1e9, 4e9, 1e-4, "fixed for tests")
SEQ = 32


@pytest.fixture(scope="module")
def model():
    return examples.tiny_llama()[0]


@pytest.fixture(scope="module")
def lm(model):
    return load_causal_lm(model, max_seq_len=SEQ)


def step_inputs(graph, n=3):
    ids = np.array([[5, 9, 200][:n]])
    caches = [np.zeros(v.type.shape[:0] + (1, 2, SEQ, 16), np.float32) for v in graph.inputs[3:]]
    return [ids, np.arange(n)[None], np.ones((1, n), bool), *caches]


# -- split ------------------------------------------------------------------------------------


def test_units_follow_layers(lm):
    g = lm.graph
    assert [u.label for u in unit_list(g)] == ["embed", "layer.0", "layer.1", "head"]
    owner = units(g)
    for node in g.nodes:
        if node.meta.layer is not None:
            assert owner[id(node)] == node.meta.layer + 1
    assert owner[id(g.outputs[0].producer)] == 3  # lm_head
    assert owner[id(g.nodes[0])] == 0  # rotary tables


@pytest.mark.parametrize("ranges", [[(0, 0), (1, 1), (2, 2), (3, 3)], [(0, 1), (2, 3)], [(0, 3)]])
def test_split_parts_compute_the_step_exactly(lm, ranges):
    g = lm.graph
    whole = step_inputs(g)
    parts_in = [a.copy() for a in whole]
    expected = run_graph(g, whole)
    parts = split(g, ranges)
    assert [(p.first, p.last) for p in parts] == ranges
    if len(parts) == 2:  # the interface: the residual stream and the shared rotary/mask values cross
        assert parts[1].inputs[:1] == parts[0].outputs[-1:] and "cache_k.1" in parts[1].inputs
        assert "cache_k.0" not in parts[1].inputs
    out = run_parts(parts, dict(zip([v.name for v in g.inputs], parts_in)), lambda p, a: run_graph(p.graph, a))
    assert np.array_equal(out["logits"], expected[0])
    for v, e in zip(g.outputs[1:], expected[1:]):
        assert np.array_equal(out[v.name], e)


@pytest.mark.parametrize("ranges", [[(0, 1)], [(1, 3)], [(0, 1), (3, 3)], [(0, 2), (2, 3)]])
def test_split_refuses_ranges_that_do_not_cover_the_units(lm, ranges):
    with pytest.raises(PassError, match="unit ranges"):
        split(lm.graph, ranges)


def test_units_refuse_a_graph_without_layers():
    from llmc.ir.dtypes import DType
    from llmc.ir.graph import Graph
    from llmc.ir.types import TensorType

    g = Graph("flat")
    x = g.add_input("x", TensorType(DType.f32, (2,)))
    g.outputs = [g.call("relu", x)]
    with pytest.raises(PassError, match="numbers its layers"):
        units(g)


# -- plan -------------------------------------------------------------------------------------


def test_step_time_overlaps_reads_with_compute():
    groups = [Group(0, 0, 0, 1.0), Group(1, 1, 10**9, 1.0, False), Group(2, 2, 10**9, 1.0, False)]
    serial = step_time(groups, 0, DISK)        # each 1 s read waits for the previous group to finish
    ahead = step_time(groups, 1, DISK)
    assert ahead < serial
    assert ahead == pytest.approx(3.0, rel=0.05)  # reads (2 s) hide behind compute (3 s)
    assert step_time([Group(0, 0, 5, 0.5)], 2, DISK) == pytest.approx(0.5)
    assert window(groups, 0) == 10**9 and window(groups, 1) == 2 * 10**9 and window(groups, 5) == 2 * 10**9


def test_plan_memory_and_choice(lm):
    facts = step_facts(lm.graph, devices.get("h100"), max_seq_len=SEQ, prefill_chunk=4)
    assert facts.kv_cache == 2 * 2 * 2 * SEQ * 16 * 4  # 2 layers x (k, v) x 2 heads x 32 x 16 floats
    assert "rope.cos" in facts.mapped and facts.bytes[0] == 0  # gathered from, not loaded
    everything = resident_plan(facts)
    assert everything.memory["total"] == facts.weights + facts.fixed
    assert choose(facts, everything.memory["total"], DISK).streamed == []
    low = minimum_budget(facts)
    plan = choose(facts, low, DISK)
    assert plan is not None and plan.streamed and plan.memory["total"] <= low
    assert choose(facts, low - 1, DISK) is None
    assert plan.tokens_per_s < everything.tokens_per_s


@pytest.mark.parametrize("text,expected", [("160MiB", 160 * 2**20), ("4GiB", 4 * 2**30), ("1.5GB", 1.5e9),
                                           ("1000", 1000)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "4 parsecs", "0MiB", ""])
def test_parse_bytes_refuses(text):
    with pytest.raises(InputError, match="memory budget"):
        parse_bytes(text)


# -- pre-flight -------------------------------------------------------------------------------


def test_preflight_7b_config_only_folder(tmp_path):
    start = time.perf_counter()
    examples.llama2_7b_config().save_pretrained(tmp_path)
    lm = causal_lm_shapes(tmp_path)
    answers = [preflight(lm.graph, budget=4 * 2**30, device=devices.get(d), max_seq_len=lm.max_seq_len,
                         prefill_chunk=256, storage=DISK if d == "cpu" else None) for d in ("cpu", "h100")]
    assert time.perf_counter() - start < 60
    for a in answers:
        assert a.fits and a.facts.weights > 24 * 2**30 and a.facts.kv_cache == 2 * 2**30
        assert a.facts.kv_cache < a.minimum < 4 * 2**30 and a.plan.tokens_per_s > 0
    assert answers[1].plan.tokens_per_s > 10 * answers[0].plan.tokens_per_s  # PCIe from host vs this disk
    with pytest.raises(InputError, match=r"smallest budget that works is 2\.\d+ GiB .* tokens/s") as e:
        preflight(lm.graph, budget=2 * 2**30, device=devices.get("h100"), max_seq_len=lm.max_seq_len,
                  prefill_chunk=256).check()
    assert "--memory-budget 2.9GiB" in str(e.value)


def test_compile_refuses_a_small_budget_before_any_build(model, tmp_path):
    steps = []
    out = tmp_path / "art"
    with pytest.raises(InputError, match=r"smallest budget that works is \d+\.\d KiB") as e:
        llmc.compile(model, "reference", output=out, generation=True, max_seq_len=SEQ, memory_budget="64KiB",
                     progress=steps.append)
    assert "--memory-budget" in e.value.hint
    assert not any(s.startswith("optimizing") for s in steps) and not out.exists()


def test_compile_refuses_schedules_it_cannot_run(model, lm, tmp_path):
    from llmc.passes.schedule.request import ScheduleRequest

    with pytest.raises(TargetError, match="does not run scheduled artifacts"):
        ScheduleRequest.make(lm, "cpu", {}, memory_budget="1GiB")
    with pytest.raises(InputError, match="--stages 0"):
        ScheduleRequest.make(lm, "reference", {}, stages=0)
    with pytest.raises(InputError, match="generation step"):
        llmc.compile(model, "reference", output=tmp_path / "b", generation=False, memory_budget="1GiB")


# -- the pass and the layout ------------------------------------------------------------------


def test_schedule_lays_each_group_out_contiguously(model, tmp_path):
    art = llmc.compile(model, "reference", output=tmp_path / "art", generation=True, max_seq_len=SEQ,
                       prefill_chunk=4, memory_budget="300KiB")
    doc = json.loads((art.path / "schedule.json").read_text())
    assert art.manifest["schedule"]["groups"] == len(doc["groups"]) and doc["memory"]["total"] <= 300 * 2**10
    streamed = [g for g in doc["groups"] if not g["resident"]]
    assert streamed and doc["units"] == ["embed", "layer.0", "layer.1", "head"]
    from llmc.ir.tensor import read_safetensors

    stored = read_safetensors(art.path / "weights.safetensors")
    loaded = [g for g in doc["groups"] if g.get("tensors")]
    for g in loaded:
        spans = sorted((stored[n].offset, stored[n].offset + stored[n].nbytes) for n in g["tensors"])
        assert spans[0][0] == g["offset"] and spans[-1][1] == g["offset"] + g["bytes"]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gaps: one read
    stages = {n.meta.stage for n in art.graph.nodes}
    assert stages == set(range(len(doc["groups"])))
    assert any(r["name"] == "schedule" for r in art.manifest["passes"])
