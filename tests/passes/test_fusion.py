"""llmc's fusion pass (``fuse``, -O2): each rule keeps the interpreter's outputs, refuses with a
reason, respects the target's kernel limits and the cost gate; targets refuse fused nodes they
cannot make one kernel, naming the rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pass_checks import transformed

import llmc
from llmc.codegen.devices import get as get_device
from llmc.codegen.target import get_target
from llmc.errors import TargetError
from llmc.examples import small_cnn, tiny_llama
from llmc.frontend.causal import load_causal_lm
from llmc.frontend.load import load_model
from llmc.ir import DType, Graph, TensorType
from llmc.passes import PIPELINES, run_pipeline
from llmc.passes.fusion import CostGate, Fuse
from llmc.passes.fusion.legality import KernelLimits
from llmc.passes.pipelines import resolve, split_for_quantization
from llmc.testing import assert_close

RNG = np.random.default_rng(0)


def step_graph():
    lm = load_causal_lm(tiny_llama()[0], max_seq_len=32)
    return run_pipeline(lm.graph, "O1")[0]


def step_inputs(seq: int = 3):
    caches = {f"cache_{kv}.{i}": np.zeros((1, 2, 32, 16), np.float32) for kv in "kv" for i in range(2)}
    return {"input_ids": np.array([[5, 9, 2][:seq]]), "position_ids": np.arange(seq)[None],
            "attention_mask": np.ones((1, seq), bool), **caches}


def fuse(**options):
    the_pass = Fuse(**options)
    return lambda g: (the_pass.run(g), the_pass.report)[1]


def fused_bodies(g: Graph) -> list[str]:
    return sorted(n.attrs["body"].name for n in g.nodes if n.op == "fused")


def test_llama_step_fuses_projections_epilogues_and_layouts():
    _, after, report = transformed(step_graph(), step_inputs(), fuse())
    # per layer: q/k/v and gate/up concatenated; o_proj and down_proj take the residual add;
    # gate/up takes SwiGLU; the q, k, v slices take their head layout (and rope)
    assert report.counts["horizontal"] == 4
    assert report.counts["glu"] == 2 and report.counts["epilogue"] == 4 and report.counts["layout"] == 6
    assert "self_attn.q_proj_k_proj_v_proj.weight" in after and "mlp.gate_proj_up_proj.weight" in after


def test_quantized_compile_fuses_after_quantizing_bit_identically(tmp_path):
    model = tiny_llama()[0]
    arts = {level: llmc.compile(model, output=tmp_path / level, generation=True, max_seq_len=32, quant="w4g32",
                                opt_level=level) for level in ("O1", "O2")}
    assert [r["name"] for r in arts["O2"].manifest["passes"]][-3:] == ["quantize", "fuse", "dce"]
    ops = arts["O2"].graph.op_histogram()
    assert ops["fused"] >= 10 and "dequantize_packed" in ops  # the tied embedding's table stays outside
    runs = [art.generate([3, 1, 4, 1, 5], max_new_tokens=6).ids for art in arts.values()]
    assert runs[0] == runs[1]


def test_conv_batch_norm_folds_and_fuses_with_its_activation():
    model, inputs = small_cnn()
    g = run_pipeline(load_model(model, example_inputs=inputs), "O1")[0]
    _, after, report = transformed(g, {g.inputs[0].name: inputs[0].numpy()}, fuse(), rtol=1e-4)
    assert report.counts["fold_batch_norm"] >= 1 and "batch_norm" not in after
    assert report.counts["conv_epilogue"] >= 1


def test_rules_refuse_with_reasons():
    report = fuse()(step_graph())
    assert "its output is not read by exactly two slices of the last axis" in report.reasons("glu")
    assert "its input is not the sum of two tensors of its shape" in report.reasons("residual_norm")


def test_residual_norm_fuses_a_sum_and_its_norm():
    g = Graph("block")
    x = g.add_input("x", TensorType(DType.f32, (2, 8)))
    r = g.add_input("r", TensorType(DType.f32, (2, 8)))
    s = g.call("add", x, r)
    n = g.call("rms_norm", s, g.add_const("w", RNG.standard_normal(8).astype(np.float32)), eps=1e-6)
    g.outputs = [s, n]
    feeds = {"x": RNG.standard_normal((2, 8), np.float32), "r": RNG.standard_normal((2, 8), np.float32)}
    _, _, report = transformed(g, feeds, fuse())
    assert report.counts["residual_norm"] == 1 and fused_bodies(g) == ["residual_norm"]
    assert len(g.nodes) == 1 and len(g.nodes[0].outputs) == 2


def test_kernel_limits_refuse_with_the_limit_named():
    report = fuse(limits=KernelLimits(epilogue_ops=frozenset({"mul"})))(step_graph())
    assert report.counts["epilogue"] == 0
    assert any("epilogue holds add, which this target's matmul schedule does not accept" in r
               for r in report.reasons("epilogue"))
    report = fuse(limits=KernelLimits(kinds=frozenset({"matmul", "quant", "elementwise"})))(step_graph())
    assert any("(shape), which this target does not put in a fused kernel" in r for r in report.reasons("glu"))


def test_cost_gate_refuses_when_the_model_predicts_no_saving():
    free = dataclasses.replace(get_device("h100"), name="no-memory-cost", bandwidth=float("inf"), launch=0.0)
    g = step_graph()
    gate = CostGate(free, {})
    linear = next(n for n in g.nodes if n.op == "linear" and n.outputs[0].uses[0][0].op == "silu")
    group = [linear, *(u for u, _ in linear.outputs[0].uses)]
    assert "predicts no saving on no-memory-cost" in gate.check(g, group)
    assert CostGate("h100", {}).check(g, group) is None


def test_a_fused_node_the_target_cannot_lower_is_refused_naming_its_rule():
    g = step_graph()
    Fuse(rules=("glu",), horizontal=True).run(g)
    node = next(n for n in g.nodes if n.op == "fused")
    body = node.attrs["body"]
    normed = body.call("rms_norm", body.call("rms_norm", body.outputs[0], eps=1e-6), eps=1e-6)
    body.outputs = [normed]  # three reductions in one kernel
    with pytest.raises(TargetError, match=r"fused node .* \(rule glu\) cannot be one cpu kernel: it holds 3 reductions"):
        get_target("cpu").check_fused(g)


def test_o2_pipeline_is_o1_then_fusion_and_splits_around_quantization():
    assert PIPELINES["O2"] == [*PIPELINES["O1"], "fuse", "dce"]
    early, late = split_for_quantization(resolve("O2"))
    assert [str(s) for s in early] == PIPELINES["O1"] and [str(s) for s in late] == ["fuse", "dce"]
    assert get_target("cpu").default_level == "O2" and "O2" in get_target("cuda").pipelines


def test_cpu_layout_kernels_write_the_caches_and_decode_scores_are_one_kernel(tmp_path):
    """A fused k or v layout read only by its ``kv_update`` writes the cache in its own kernel (the
    update launches none), a decode step's scores are one kernel, and panels of the tiny model's
    widths need no un-padding slice: 13 kernels per decode block, 15 per prefill block (the
    manifest counts the lm_head's launch in the blocks too: TVM shares its kernel with gate/up).
    Prefill and decode logits match the interpreter's."""
    pytest.importorskip("tvm")
    art = llmc.compile(tiny_llama()[0], target="cpu", output=tmp_path / "a", generation=True, max_seq_len=32)
    payload = art.manifest["payload"]
    assert not {"kv_update", "cache_scores_partial", "strided_slice"} & set(payload["kernels"])
    assert {e: row["per_layer"] for e, row in payload["kernels_per_layer"].items()} == {"decode": 13.5, "decode1": 13.5,
                                                                                       "prefill": 15.5}
    logits = []
    for gen in (art.generator(), art.generator(reference=True)):
        caches, ids = gen.runner.new_caches(gen.spec, 1), np.array([[5, 9, 2, 7, 1]])
        steps = [gen.prefill(ids, np.ones(ids.shape, bool), caches)]
        for n in range(5, 8):
            steps.append(gen.runner(np.array([[n]]), np.array([[n]]), np.ones((1, n + 1), bool), caches))
        logits.append(steps)
    for got, expected in zip(*logits):
        assert_close(got, expected, 1e-4)


def test_cuda_build_of_the_cache_writing_layouts(tmp_path):
    from llmc.targets.gpu import device_code

    if device_code.find_nvcc() is None:
        pytest.skip("needs nvcc (the CUDA toolkit)")
    art = llmc.compile(tiny_llama()[0], target="cuda", output=tmp_path / "a", generation=True, max_seq_len=32,
                       arch="sm_90")
    payload = art.manifest["payload"]
    assert payload["device_code"]["images"] == ["elf sm_90", "ptx sm_90"] and payload["unscheduled_kernels"] == []
    assert "kv_update" not in payload["kernels"] and "cache_scores_partial" not in payload["kernels"]


def test_a_layout_read_besides_its_cache_write_keeps_the_write_a_kernel():
    from llmc.codegen.tvm.lower import cache_writes

    g = step_graph()
    Fuse(rules=("layout",)).run(g)
    writes = cache_writes(g)
    assert sorted(w.outputs[0].name for w in writes.values()) == [f"present_{kv}.{i}" for kv in "kv" for i in range(2)]
    rows = writes[next(iter(writes))].inputs[1]
    g.outputs = [*g.outputs, rows]  # the rows are read by something else too: the write stays a kv_update kernel
    assert len(cache_writes(g)) == 3


def test_float_panels_narrow_to_divide_the_output_features():
    from tvm import relax

    from llmc.codegen.tvm.context import LowerContext, LowerOptions

    ctx = LowerContext(relax.BlockBuilder(), LowerOptions(pack_weights=24, pack_step=8), {})
    assert [ctx.panel_width(n) for n in (576, 128, 64, 40, 100)] == [24, 16, 16, 8, 24]
    assert LowerContext(relax.BlockBuilder(), LowerOptions(pack_weights=24), {}).panel_width(128) == 24
