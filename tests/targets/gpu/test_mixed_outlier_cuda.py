"""The cuda build of a mixed recipe with outliers (``linear_csr`` beside packed products, and permuted
SwiGLU channels) compiles to sm_90 device code, every kernel scheduled."""

import pytest
from tvm_checks import check_device_code

import llmc
from llmc.examples import tiny_llama
from llmc.targets.gpu import device_code

pytestmark = pytest.mark.skipif(device_code.find_nvcc() is None, reason="needs nvcc (the CUDA toolkit)")

RECIPE = {"default": "w3g128+o0.02", "reorder": True, "override": {
    "model.embed_tokens": "w4g128", "model.layers.0.self_attn.q_proj": "w2g64+o0.01",
    "model.layers.1.mlp.*": "w4g32", "model.layers.1.self_attn.v_proj": "w8", "lm_head": "fp16"}}


def test_cuda_build_of_a_mixed_recipe_with_outliers(tmp_path):
    art = llmc.compile(tiny_llama()[0], target="cuda", output=tmp_path / "cuda", generation=True, max_seq_len=64,
                       recipe=RECIPE, arch="sm_90")
    layers = art.manifest["quantization"]["layers"]
    assert {r["format"] for r in layers} == {"w3g128", "w4g128", "w2g64", "w4g32", "w8", "fp16"}
    assert any(r["outliers"] for r in layers)
    check_device_code(art)
    assert art.manifest["payload"]["unscheduled_kernels"] == []
