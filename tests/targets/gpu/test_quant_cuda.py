"""The cuda build of a quantized LLM: every format of one recipe (see tests/passes/test_quantize.py)
compiles to sm_90 device code, every kernel scheduled."""

import numpy as np
import pytest
from tvm_checks import check_device_code

import llmc
from llmc.examples import tiny_llama
from llmc.targets.gpu import device_code

pytestmark = pytest.mark.skipif(device_code.find_nvcc() is None, reason="needs nvcc (the CUDA toolkit)")

RECIPE = {"default": "w4g128", "override": {
    "embedding": "w8", "model.layers.0.self_attn.q_proj": "w4g32", "model.layers.0.self_attn.k_proj": "w3g128",
    "model.layers.0.self_attn.v_proj": "w2g64", "model.layers.0.mlp.*": "w8a8", "model.layers.1.mlp.*": "w8a8s",
    "model.layers.1.self_attn.[qk]_proj": "fp16", "lm_head": "w8"}}


def test_cuda_build_of_every_format(tmp_path):
    calibration = tmp_path / "ids.npz"
    np.savez(calibration, input_ids=np.random.default_rng(0).integers(0, 256, (2, 16)))
    art = llmc.compile(tiny_llama()[0], target="cuda", output=tmp_path / "cuda", generation=True, max_seq_len=64,
                       recipe=RECIPE, quant_method="gptq", calibration=calibration, arch="sm_90")
    assert {r["format"] for r in art.manifest["quantization"]["layers"]} == set(llmc.passes.quantize.NAMED)
    check_device_code(art)
    assert art.manifest["payload"]["unscheduled_kernels"] == []
