"""Helpers of the TVM target tests: output comparison, GPU presence, kernels in a cpu library."""

from pathlib import Path

import numpy as np
import pytest

from llmc.targets.gpu import device_code
from llmc.targets.gpu.elf import Elf
from llmc.testing import rel_error


def _has_gpu() -> bool:
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:  # noqa: BLE001  (no TVM CUDA runtime at all means no GPU here)
        return False


HAS_GPU = _has_gpu()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


def mismatches(got: dict, ref: dict, names: list[str], rtol: float) -> list[str]:
    """Cases whose output differs from the reference (exactly for ints/bools, ``rtol`` relative for floats)."""
    bad = []
    for name, (key, expected) in zip(names, ref.items()):
        actual = np.asarray(got[key])
        if actual.shape != expected.shape:
            bad.append(f"{name}: shape {actual.shape} != {expected.shape}")
        elif expected.dtype.kind in "biu":
            if not np.array_equal(actual, expected):
                bad.append(f"{name}: values differ")
        elif (err := rel_error(actual.astype(np.float64), expected.astype(np.float64))) > rtol:
            bad.append(f"{name}: relative error {err:.2g}")
    return bad


def library_kernels(library: Path) -> set[str]:
    """The TIR kernels a cpu ``model.so`` exports (tvm-ffi names them ``__tvm_ffi_<kernel>``)."""
    prefix = "__tvm_ffi_"
    return {s[len(prefix):] for s in Elf(Path(library).read_bytes()).functions() if s.startswith(prefix)}


def check_device_code(art, arch: str = "sm_90") -> None:
    """model.so carries a fatbin with an ELF (SASS) image for ``arch``, whose kernels are the
    module's function table and cover every kernel the manifest says a call launches."""
    payload = art.manifest["payload"]
    modules = device_code.library_cuda_modules(art.path / "model.so")
    assert [m.fmt for m in modules] == ["fatbin"]
    images = device_code.fatbin_images(modules[0].code)
    number = int(arch.removeprefix("sm_").rstrip("a"))
    elf = [img for img in images if img.kind == "elf" and img.sm == number]
    assert len(elf) == 1, f"no {arch} ELF image in {images}"
    assert sorted(elf[0].kernels) == modules[0].kernels == payload["device_code"]["device_kernels"]
    for kernel in payload["kernels"]:
        assert device_code.kernels_of(kernel, modules[0].kernels), f"kernel {kernel} has no device code"
    launches = payload["device_code"]["launches_per_call"]
    assert launches.keys() == payload["kernels_per_call"].keys()
    assert all(payload["kernels_per_call"][entry] <= launches[entry] for entry in launches)
