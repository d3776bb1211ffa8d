"""``--target=cuda``: TVM -> CUDA for one architecture, device code compiled ahead of time.

Kernels are scheduled with dlight's GPU rules (``schedules``), the device code is compiled here
with nvcc for ``--arch`` and embedded in ``model.so`` as a fatbin (``device_code``), so a GPU
machine needs only TVM's runtime. Weights are cast to ``--dtype`` at compile time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmc.errors import TargetError
from llmc.targets.gpu import device_code
from llmc.targets.gpu.tvm_target import TvmTarget

ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_90a")
# Oldest compute capability with arithmetic in each dtype.
DTYPE_MIN_SM = {"float32": 30, "float16": 53, "bfloat16": 80}


@dataclass
class CudaOptions:
    """arch: sm_80, sm_86, sm_89, sm_90 or sm_90a; dtype: float16, bfloat16 or float32;
    nvcc: path of the nvcc to use ('' = the one on PATH, else $CUDA_HOME/bin/nvcc)."""

    arch: str = "sm_90"
    dtype: str = "float16"
    nvcc: str = ""


class CudaTarget(TvmTarget):
    name = "cuda"
    description = "TVM -> CUDA (dlight schedules), device code compiled ahead of time with nvcc for one arch"
    Options = CudaOptions
    device = "cuda"

    def check_options(self, options: CudaOptions) -> None:
        if options.dtype not in DTYPE_MIN_SM:
            raise TargetError(f"the cuda target has no dtype {options.dtype!r}", hint="use float16, bfloat16 or float32")
        sm = _sm(options.arch)
        if sm is not None and sm < DTYPE_MIN_SM[options.dtype]:
            raise TargetError(f"{options.dtype} needs sm_{DTYPE_MIN_SM[options.dtype]} or newer, and {options.arch} "
                              "has no arithmetic in it", hint="use --dtype float16 on this arch, or a newer --arch")
        if options.arch not in ARCHS:
            raise TargetError(f"the cuda target does not build for {options.arch!r}", hint=f"use one of {', '.join(ARCHS)}")
        if self.nvcc(options) is None:
            raise TargetError("nvcc was not found: the cuda target compiles device code ahead of time with it",
                              hint="install the CUDA toolkit (nvcc on PATH or $CUDA_HOME/bin), or pass --nvcc PATH")

    def nvcc(self, options: CudaOptions) -> Path | None:
        return device_code.find_nvcc(options.nvcc or None)

    def tvm_target(self, options: CudaOptions):
        import tvm

        # The host code runs on the GPU machine's CPU, which need not be this one's: build it generic.
        return tvm.target.Target({"kind": "cuda", "arch": options.arch, "max_threads_per_block": 1024,
                                  "max_shared_memory_per_block": 49152, "thread_warp_size": 32},
                                 host={"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu"})

    def schedule(self, options: CudaOptions):
        from llmc.targets.gpu.schedules import gpu_schedule

        return gpu_schedule()

    def export(self, executable, path: Path, options: CudaOptions) -> None:
        executable.export_library(str(path), fpack_imports=device_code.fpack_with_device_code(options.arch, self.nvcc(options)))

    def device_code(self, library: Path, options: CudaOptions, built) -> dict:
        modules = device_code.library_cuda_modules(library)
        images = [img for m in modules for img in device_code.fatbin_images(m.code)]
        device_kernels = sorted(k for m in modules for k in m.kernels)
        return {
            "kind": "fatbin", "arch": options.arch,
            "images": sorted(f"{img.kind} sm_{img.sm}" for img in images),
            "device_kernels": device_kernels,
            "launches_per_call": {entry: sum(len(device_code.kernels_of(k, device_kernels)) for k in calls)
                                  for entry, calls in built.calls.items()},
            "serial_kernels": built.serial,
        }


def _sm(arch: str) -> int | None:
    digits = arch.removeprefix("sm_").rstrip("a")
    return int(digits) if arch.startswith("sm_") and digits.isdigit() else None
