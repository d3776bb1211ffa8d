"""cuda artifacts: built here with nvcc, device code for the arch embedded in model.so, clear errors."""

import numpy as np
import pytest
from tvm_checks import check_device_code, mismatches, needs_gpu
from tvm_op_graph import inputs

import llmc.api
from llmc.codegen.tvm.lower import FUSED_PREFIX
from llmc.errors import TargetError, UnsupportedOpError
from llmc.ir.interpreter import run
from llmc.targets.gpu import device_code
from llmc.targets.gpu.elf import Elf
from llmc.testing import assert_close

pytestmark = pytest.mark.skipif(device_code.find_nvcc() is None, reason="needs nvcc (the CUDA toolkit)")


@pytest.fixture(scope="module")
def cuda_ops(all_ops, compiled):
    graph, names = all_ops
    return graph, names, compiled("all-ops-cuda", graph, "cuda", opt_level="O0", arch="sm_90")


def test_every_op_compiles_for_sm90_with_embedded_device_code(cuda_ops):
    art = cuda_ops[2]
    check_device_code(art)
    assert art.manifest["payload"]["device_code"]["images"] == ["elf sm_90", "ptx sm_90"]
    assert art.manifest["payload"]["unscheduled_kernels"] == []


def test_fused_nodes_are_one_tir_kernel_each(cuda_ops):
    """One TIR kernel per fused node, with device code. A matmul with its epilogue is one grid
    launch; a body with two reductions (matmul then softmax) is launched as dlight's grids in
    order (no single-launch GPU schedule for it), counted in launches_per_call."""
    graph, _, art = cuda_ops
    device_kernels = art.manifest["payload"]["device_code"]["device_kernels"]
    kernels = {k: v for k, v in art.manifest["payload"]["kernels"].items() if k.startswith(FUSED_PREFIX)}
    assert len(kernels) == len([n for n in graph.nodes if n.op == "fused"])
    assert all(device_code.kernels_of(k, device_kernels) for k in kernels)
    mlp = next(n.name for n in graph.nodes if n.op == "fused" and n.attrs["body"].name == "mlp")
    (kernel,) = [k for k, origins in kernels.items() if origins == [mlp]]
    assert len(device_code.kernels_of(kernel, device_kernels)) == 1


def test_weights_are_cast_at_compile_time(cuda_ops):
    art = cuda_ops[2]
    assert art.manifest["payload"]["params"]["file"] == "params.safetensors"
    from llmc.ir.tensor import read_safetensors

    params = read_safetensors(art.path / "params.safetensors")
    assert {w.dtype.value for w in params.values() if w.dtype.is_float} == {"f16"}


def test_the_cubin_is_a_cuda_elf(cuda_ops):
    modules = device_code.library_cuda_modules(cuda_ops[2].path / "model.so")
    start = modules[0].code.index(b"\x7fELF")
    assert Elf(modules[0].code[start:], "cubin").machine == 190


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_other_archs(arch, tmp_path):
    from tvm_op_graph import small_graph

    art = llmc.api.compile(small_graph(), target="cuda", arch=arch, dtype="bfloat16", output=tmp_path / "a")
    check_device_code(art, arch)


def test_no_nvcc_is_a_clear_error_before_compiling(tmp_path, monkeypatch):
    from tvm_op_graph import small_graph

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    with pytest.raises(TargetError, match="nvcc was not found"):
        llmc.api.compile(small_graph(), target="cuda", output=tmp_path / "a")
    with pytest.raises(TargetError, match="nvcc was not found"):
        llmc.api.compile(small_graph(), target="cuda", nvcc="/nonexistent/nvcc", output=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bf16_on_an_arch_without_it(tmp_path):
    from tvm_op_graph import small_graph

    with pytest.raises(TargetError, match="bfloat16 needs sm_80"):
        llmc.api.compile(small_graph(), target="cuda", arch="sm_75", dtype="bfloat16", output=tmp_path / "a")
    with pytest.raises(TargetError, match="does not build for 'sm_75'"):
        llmc.api.compile(small_graph(), target="cuda", arch="sm_75", output=tmp_path / "b")
    assert not (tmp_path / "a").exists()


def test_an_op_without_lowering_names_op_and_origin(tmp_path, monkeypatch):
    from tvm_op_graph import small_graph

    from llmc.codegen.tvm import registry

    registry.lowering("silu")  # the table is filled on first use
    monkeypatch.delitem(registry._LOWERINGS, "silu")
    with pytest.raises(UnsupportedOpError, match="silu at model.mlp.act"):
        llmc.api.compile(small_graph(), target="cuda", output=tmp_path / "a")
    assert not (tmp_path / "a").exists()


@pytest.mark.gpu
@needs_gpu
def test_runs_on_a_gpu(cuda_ops):
    graph, names, art = cuda_ops
    feeds = inputs()
    assert mismatches(art.run(feeds), run(graph, feeds), names, rtol=1e-2) == []


def test_the_library_blob_packer_round_trips(tmp_path):
    """The packer that embeds device code writes a blob TVM's loader reads: checked on a cpu
    executable (loadable here), which goes through the same import-tree rewrite and .incbin."""
    import tvm
    from tvm_op_graph import small_graph

    from llmc.codegen.tvm.build import build
    from llmc.codegen.tvm.lower import lower_graph
    from llmc.targets.gpu.cpu import CpuTarget
    from llmc.targets.gpu.runtime import Session

    art = llmc.api.compile(small_graph(), target="cpu", output=tmp_path / "a")
    target = CpuTarget()
    options = target.make_options()
    built = build(lower_graph(art.graph, target.lower_options(options)), target.tvm_target(options),
                  target.schedule(options))
    built.executable.export_library(str(art.path / "model.so"),
                                    fpack_imports=device_code.fpack_with_device_code("sm_90", device_code.find_nvcc()))
    x = np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)
    assert_close(next(iter(Session(art.path).run({"x": x}).values())), next(iter(run(art.graph, {"x": x}).values())))
    assert tvm.runtime.load_module(str(art.path / "model.so")) is not None
