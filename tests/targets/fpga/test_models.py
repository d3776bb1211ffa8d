"""MiniLM (reduced sequence), the tiny Llama decode step and squeezenet: C-simulation bit-exact
with the emulation, the emulation close to float32 at the 16-bit defaults."""

from __future__ import annotations

import numpy as np
import pytest

from llmc.ir import interpreter
from llmc.targets.fpga import emulate
from llmc.targets.fpga.bind import capacity
from llmc.targets.fpga.kernels import use_capacity
from llmc.targets.fpga.simulate import artifact_precision, simulate_codes

from fpga_checks import needs_csim


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check(art, x, rtol, outputs=None):
    """C-simulation == emulation (every output code); emulation within ``rtol`` of float32."""
    P, _ = artifact_precision(art.path)
    use_capacity(capacity(art.graph))
    want = emulate.run_codes(art.graph, P, emulate.input_codes(art.graph, P, x))
    got = simulate_codes(art.path, x)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    values, ref = emulate.decode(art.graph, P, want), interpreter.run(art.graph, x)
    errors = {k: rel(values[k], ref[k]) for k in (outputs or ref)}
    assert all(e < rtol for e in errors.values()), errors
    return errors


@pytest.fixture(scope="module")
def minilm(fpga_artifact, tmp_path_factory):
    from llmc.examples import MINILM_SENTENCES, minilm, minilm_inputs

    model, _ = minilm()
    ids, mask = minilm_inputs(MINILM_SENTENCES[:1], seq=8)
    calib = [minilm_inputs([s], seq=8) for s in [*MINILM_SENTENCES, "The quick brown fox jumps over the lazy dog."]]
    path = tmp_path_factory.mktemp("calib") / "minilm.npz"
    np.savez(path, input_ids=np.stack([c[0].numpy() for c in calib]), attention_mask=np.stack([c[1].numpy() for c in calib]))
    art = fpga_artifact("minilm-s8", model, example_inputs=(ids, mask), device="zcu102", calibration_inputs=str(path))
    return art, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def test_minilm_plan_keeps_big_weights_off_chip(minilm):
    art, _ = minilm
    section = art.manifest["payload"]["fpga"]
    assert "embeddings.word_embeddings.weight" in section["offchip"]
    ops = {r["op"] for r in section["estimates"]["layers"]}
    assert {"attention", "layer_norm", "gelu", "embedding", "linear"} <= ops


@needs_csim
def test_minilm_bit_exact_and_within_1e2(minilm):
    art, x = minilm
    errors = check(art, x, 1e-2, outputs=["last_hidden_state", "pooler_output"])
    assert errors["last_hidden_state"] < 1e-2


@pytest.fixture(scope="module")
def llama_step(fpga_artifact):
    from llmc.examples import tiny_llama

    model = tiny_llama()
    model = model[0] if isinstance(model, tuple) else model
    return fpga_artifact("tiny-llama-decode", model, generation=True, max_seq_len=32, device="zcu102")


def _decode_inputs(graph, ctx: int):
    """Inputs of decode step ``ctx``: caches filled by the previous steps on the interpreter."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 256, ctx)
    caches = {v.name: np.zeros([int(d) for d in v.type.shape], np.float32) for v in graph.inputs[3:]}
    for t in range(1, ctx + 1):
        x = {"input_ids": ids[t - 1:t][None], "position_ids": np.array([[t - 1]]), "attention_mask": np.ones((1, t), bool),
             **caches}
        if t < ctx:
            out = interpreter.run(graph, x)
            caches = {k: out["present" + k[len("cache"):]] for k in caches}
    return x


def test_llama_step_signature(llama_step):
    g = llama_step.graph
    assert [int(d) for d in g.inputs[0].type.shape] == [1, 1]
    top = (llama_step.path / "hls/firmware/llmc_top.cpp").read_text()
    assert "int ctx)" in top and "llmc::attention<" in top and "llmc::kv_update<" in top and "llmc::rope<" in top
    assert "llmc::rms_norm<" in top and "llmc::lookup<" in top  # silu by table


@needs_csim
@pytest.mark.parametrize("ctx", [1, 7])
def test_llama_decode_step_bit_exact(llama_step, ctx):
    check(llama_step, _decode_inputs(llama_step.graph, ctx), 1e-2)


def _squeezenet(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2]))
    from zoo import randomized_zoo_model

    return randomized_zoo_model("squeezenet", tmp_path_factory.mktemp("squeezenet"))


def test_squeezenet_refused_on_zcu102_fits_u250(tmp_path_factory):
    import llmc
    from llmc.targets.fpga.estimate import FitError

    path = _squeezenet(tmp_path_factory)
    with pytest.raises(FitError, match="ZCU102"):
        llmc.compile(str(path), "fpga", device="zcu102", calibration_samples=1)


@pytest.mark.slow
@needs_csim
def test_squeezenet_bit_exact_on_u250(fpga_artifact, tmp_path_factory):
    art = fpga_artifact("squeezenet-u250", str(_squeezenet(tmp_path_factory)), device="u250", calibration_samples=1)
    shape = [int(d) for d in art.graph.inputs[0].type.shape]
    check(art, {art.graph.inputs[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}, 1e-2)


@pytest.mark.slow
def test_smollm2_decode_step_planned_for_u280(fpga_artifact):
    """SmolLM2-135M's decode step on the U280: weights streamed from HBM, within the usable budget."""
    art = fpga_artifact("smollm2-u280", "smollm2-135m", device="u280", max_seq_len=256, calibration_samples=1)
    est = art.manifest["payload"]["fpga"]["estimates"]
    assert all(est["total"][k] <= est["budget"][k] for k in ("dsp", "bram36", "uram", "lut", "ff"))
    assert est["offchip_weight_bytes"] > 200e6 and est["latency_s"] > 0
    assert (art.path / "hls/firmware/weights").is_dir() and "int ctx)" in (art.path / "hls/firmware/llmc_top.cpp").read_text()
