"""The cuda artifact of a sparse LLM builds for sm_90: every pruned weight stored compressed and
expanded at load time (no sparse kernel on cuda), every kernel scheduled."""

import pytest

import llmc
from llmc.examples import tiny_llama
from llmc.targets.gpu import device_code

pytestmark = pytest.mark.skipif(device_code.find_nvcc() is None, reason="needs nvcc (the CUDA toolkit)")


@pytest.mark.parametrize("kw", [{"sparsity_pattern": "2:4"}, {"sparsity": 0.5}], ids=["2:4", "bitmap"])
def test_cuda_build_of_sparse_weights(tmp_path, kw):
    art = llmc.compile(tiny_llama()[0], target="cuda", output=tmp_path / "cuda", generation=True, max_seq_len=64,
                       sparsity_method="magnitude", sparsity_for="size", arch="sm_90", **kw)
    layers = art.manifest["sparsity"]["layers"]
    assert layers and all(not r["applied"] and r["kernel"] == "dense" for r in layers)
    assert art.manifest["payload"]["device_code"]["images"] == ["elf sm_90", "ptx sm_90"]
    assert art.manifest["payload"]["unscheduled_kernels"] == []
