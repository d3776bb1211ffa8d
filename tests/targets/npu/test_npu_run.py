"""NPU artifacts on ONNX Runtime's CPU provider: files, QDQ agreement with the interpreter, generation."""

import json

import numpy as np
import onnx
import pytest

from npu_checks import TOL_LSB_CPU, make_plan_of, ort_u8s8_conv_exact
from llmc.errors import TargetError
from llmc.targets.npu.agreement import agreement


def test_cnn_artifact_files_and_schedule(cnn):
    art, _ = cnn
    schedule = json.loads((art.path / "schedule.json").read_text())
    chunks = schedule["variants"]["forward"]["chunks"]
    assert [c["file"] for c in chunks] == ["chunks/00_npu.onnx"]  # every op of small-cnn runs on the HTP
    model = onnx.load(str(art.path / chunks[0]["file"]), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "MaxPool", "Gemm"} <= ops
    assert all(d.dim_value > 0 for v in model.graph.input for d in v.type.tensor_type.shape.dim)  # static
    conv_weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert conv_weights and all(t.data_type == onnx.TensorProto.INT8 for t in conv_weights)
    assert any(a.name == "axis" for n in model.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute)
    assert art.manifest["payload"]["quantization"]["activations"] == "uint8"
    assert art.manifest["payload"]["placement"]["npu_node_fraction"] == 1.0
    assert art.manifest["payload"]["plot"] == "placement.png" and (art.path / "placement.png").is_file()


def test_cnn_agrees_with_the_interpreter_in_lsb(cnn):
    art, feeds = cnn
    worst, by_op = agreement(make_plan_of(art), art.path, "forward", feeds)
    if ort_u8s8_conv_exact():
        assert worst["uint8"] <= TOL_LSB_CPU
    else:  # the CPU provider's own conv saturates here (see ort_u8s8_conv_exact): every other op is checked
        assert all(lsb <= TOL_LSB_CPU for op, lsb in by_op.items() if op != "conv2d") and "linear" in by_op
    got, float_ref = art.run(feeds)["output"], art.run(feeds, reference=True)["output"]
    assert np.abs(got - float_ref).max() < 0.05 * np.abs(float_ref).max()  # 8-bit vs float32


def test_minilm_uint16_agrees_with_the_interpreter(minilm):
    art, feeds = minilm
    worst, by_op = agreement(make_plan_of(art), art.path, "forward", feeds)
    assert worst["uint16"] <= TOL_LSB_CPU, by_op
    placement = art.manifest["payload"]["placement"]
    assert placement["npu_flop_fraction"] > 0.95 and "attention" in placement["cpu_ops"]
    got, ref = art.run(feeds)["pooler_output"], art.run(feeds, reference=True)["pooler_output"]
    cosine = (got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref)
    assert cosine > 0.999  # uint16 activations, int8 weights per output channel


def test_forward_model_without_calibration_is_refused(tmp_path):
    import llmc

    with pytest.raises(TargetError, match="needs calibration inputs"):
        llmc.compile("small-cnn", target="npu", output=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_llm_prompt_longer_than_a_chunk_matches_float32(tiny_llm):
    art = tiny_llm
    payload = art.manifest["payload"]
    assert payload["variants"]["prefill"]["seq"] == 8 and payload["variants"]["decode"]["seq"] == 1
    assert payload["graphs"] == 12  # 6 chunks, prefill and decode
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, 256, 21)]  # chunks of 8, 8 and 5 (+3 padding)
    got = art.generate(prompt, max_new_tokens=10)
    ref = art.generate(prompt, max_new_tokens=10, reference=True)
    assert got.ids == ref.ids


def test_llm_chunk_graphs_share_weights(tiny_llm):
    art = tiny_llm
    weights = (art.path / "chunks" / "weights.bin").stat().st_size
    graph_bytes = art.graph.weight_bytes()
    assert weights < 1.2 * graph_bytes  # float tables and int8 weights once, not once per variant
    prefill = onnx.load(str(art.path / "chunks/prefill_01_npu.onnx"), load_external_data=False)
    decode = onnx.load(str(art.path / "chunks/decode_01_npu.onnx"), load_external_data=False)

    def places(model):
        return sorted(tuple((e.key, e.value) for e in t.external_data) for t in model.graph.initializer
                      if t.data_location == onnx.TensorProto.EXTERNAL)

    assert places(prefill) == places(decode) and places(prefill)


def test_llm_decode_uses_kv_cache_outside_the_graphs(tiny_llm):
    schedule = json.loads((tiny_llm.path / "schedule.json").read_text())
    chunks = schedule["variants"]["decode"]["chunks"]
    npu_io = {n for c in chunks if c["device"] == "npu" for n in c["inputs"] + c["outputs"]}
    cpu_io = {n for c in chunks if c["device"] == "cpu" for n in c["inputs"] + c["outputs"]}
    assert not any(n.startswith(("cache_", "present_")) for n in npu_io)
    assert {"cache_k.0", "present_k.0", "cache_v.1", "present_v.1"} <= cpu_io
    assert schedule["loop"] == {"chunk": 8, "cache_len": 72, "max_seq_len": 64, "layers": 2, "batch": 1,
                                "all_logits": False}


def test_all_logits_artifact_scores_every_real_token(tmp_path):
    import llmc
    from llmc.examples import tiny_llama

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ids.npz", input_ids=rng.integers(0, 256, (2, 8)).astype(np.int64))
    art = llmc.compile(tiny_llama()[0], target="npu", output=tmp_path / "art", generation=True, max_seq_len=32,
                       prefill_chunk=32, all_logits=True, chunk=4, calib=str(tmp_path / "ids.npz"))
    gen, ref = art.generator(), art.generator(reference=True)
    ids = rng.integers(0, 256, (1, 9))  # chunks of 4, 4 and 1 (the decode graph)
    got = gen.prefill(ids, np.ones(ids.shape, bool), gen.runner.new_caches(gen.spec, 1), every_chunk=True)
    want = ref.prefill(ids, np.ones(ids.shape, bool), ref.runner.new_caches(ref.spec, 1), every_chunk=True)
    assert got.shape == want.shape == (1, 9, 256)
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.8
