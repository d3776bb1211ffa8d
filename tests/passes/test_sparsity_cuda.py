"""The cuda artifact of a sparse LLM builds for sm_90: every pruned weight stored compressed and
expanded at load time (no sparse kernel on cuda), every kernel scheduled. (Bitmap storage and the
sparse kernels themselves build for sm_90 in the all-ops graph: tests/targets/gpu/test_tvm_cuda.py.)"""

import pytest

import llmc
from llmc.examples import tiny_llama
from llmc.targets.gpu import device_code

pytestmark = pytest.mark.skipif(device_code.find_nvcc() is None, reason="needs nvcc (the CUDA toolkit)")


def test_cuda_build_of_sparse_weights(tmp_path):
    art = llmc.compile(tiny_llama()[0], target="cuda", output=tmp_path / "cuda", generation=True, max_seq_len=64,
                       sparsity_pattern="2:4", sparsity_method="magnitude", sparsity_for="size", arch="sm_90")
    layers = art.manifest["sparsity"]["layers"]
    assert layers and all(not r["applied"] and r["kernel"] == "dense" for r in layers)
    assert art.manifest["payload"]["device_code"]["images"] == ["elf sm_90", "ptx sm_90"]
    assert art.manifest["payload"]["unscheduled_kernels"] == []


def test_cuda_build_of_sparse_4bit_weights(tmp_path):
    """2:4 + w4g128 on cuda: the composed storage dequantized and expanded at load time (dense fallback)."""
    art = llmc.compile(tiny_llama()[0], target="cuda", output=tmp_path / "cuda", generation=True, max_seq_len=64,
                       sparsity_pattern="2:4", sparsity_method="magnitude", sparsity_for="size", quant="w4g128",
                       arch="sm_90")
    layers = art.manifest["sparsity"]["layers"]
    assert layers and all(r["storage"] == "2:4+w4g128" and r["kernel"] == "dense" for r in layers)
    assert sum(n.op == "linear_nm_q" for n in art.graph.nodes) == len(layers)
    assert art.manifest["payload"]["device_code"]["images"] == ["elf sm_90", "ptx sm_90"]
    assert art.manifest["payload"]["unscheduled_kernels"] == []
