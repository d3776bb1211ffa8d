"""Helpers the NPU tests import (a module of its own: every test folder's ``conftest`` shares one module name)."""

import platform
from pathlib import Path

TOL_LSB_CPU = 1.01  # ONNX Runtime's CPU provider vs the interpreter, per op (float summation order, ties)


def ort_u8s8_conv_exact() -> bool:
    """False on x86 CPUs without VNNI: there ONNX Runtime's u8 x s8 convolution kernels add pairs of
    products in saturating int16 (AVX2 ``vpmaddubsw``), so a conv's output can differ from the exact
    integer sum by many LSB (measured 54 on an AVX2 EPYC; its Gemm, and every other op, agree)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    return "avx512_vnni" in flags or "avx_vnni" in flags


def make_plan_of(art):
    from llmc.codegen.target import get_target
    from llmc.targets.npu.build import make_plan

    return make_plan(art.graph, get_target("npu").make_options(**art.manifest["target"]["options"]))
