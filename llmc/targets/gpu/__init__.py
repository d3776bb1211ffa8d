"""The TVM targets: ``cpu`` (LLVM, runs here) and ``cuda`` (nvcc, ahead of time for sm_80..sm_90a)."""

from llmc.codegen.target import register_target
from llmc.targets.gpu.cpu import CpuTarget
from llmc.targets.gpu.cuda import CudaTarget

register_target(CpuTarget())
register_target(CudaTarget())
