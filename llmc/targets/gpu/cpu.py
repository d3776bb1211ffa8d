"""``--target=cpu``: TVM -> LLVM for the host CPU, with llmc's CPU schedules; runs here.

This TVM's LLVM does not accept ``mcpu=native`` (it silently builds for ``generic``, without
AVX2/AVX-512), so the CPU is named explicitly: ``--cpu`` or, by default, LLVM's name for the
host CPU (e.g. ``cascadelake``, ``znver3``), detected at compile time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from llmc.errors import TargetError
from llmc.targets.gpu.tvm_target import TvmTarget


@dataclass
class CpuOptions:
    """dtype: float32 or float16 (compute and weight dtype); cpu: an LLVM CPU name ('' = this host)."""

    dtype: str = "float32"
    cpu: str = ""


class CpuTarget(TvmTarget):
    name = "cpu"
    description = "TVM -> LLVM for this machine's CPU (tiled, vectorized, parallel kernels); runs here"
    Options = CpuOptions
    device = "cpu"
    one_sequence_decode = True

    def check_options(self, options: CpuOptions) -> None:
        if options.dtype not in ("float32", "float16"):
            raise TargetError(f"the cpu target computes in float32 or float16, not {options.dtype}",
                              hint="use --dtype float32 or --dtype float16")
        if options.cpu and not _valid_cpu(options.cpu):
            raise TargetError(f"LLVM does not know the CPU {options.cpu!r}",
                              hint=f"use an LLVM CPU name such as {host_cpu()!r} (this machine), or leave --cpu out")

    def lower_options(self, options: CpuOptions):
        from llmc.codegen.tvm.context import LowerOptions
        from llmc.targets.gpu.cpu_rules import lanes, panel_width

        target = self.tvm_target(options)
        return LowerOptions(float_dtype=super().lower_options(options).float_dtype,
                            pack_weights=panel_width(target), pack_step=lanes(target), fast_math=True)

    def tvm_target(self, options: CpuOptions):
        import tvm

        return tvm.target.Target({"kind": "llvm", "mcpu": options.cpu or host_cpu(), "num-cores": os.cpu_count() or 1})

    def schedule(self, options: CpuOptions):
        from llmc.targets.gpu.cpu_rules import cpu_schedule

        return cpu_schedule()

    def device_code(self, library: Path, options: CpuOptions, built) -> dict:
        return {"kind": "llvm", "cpu": options.cpu or host_cpu()}


def host_cpu() -> str:
    """LLVM's name for this machine's CPU."""
    import tvm

    return tvm.get_global_func("target.llvm_get_system_cpu")()


def _valid_cpu(name: str) -> bool:
    import tvm

    triple = tvm.get_global_func("target.llvm_get_system_triple")()
    return bool(tvm.get_global_func("target.llvm_is_valid_cpu")(name, triple))
