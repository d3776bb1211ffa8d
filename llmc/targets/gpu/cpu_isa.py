"""What the cpu schedules size their tiles from: the target CPU's vector ISA.

The facts come from LLVM's feature set for the target's ``mcpu`` (and ``mattr``), so a build for
another CPU (``--cpu cascadelake`` on an AVX2 machine) gets that CPU's tiles. This TVM's
``llvm_get_vector_width`` answers 512 for every x86 CPU, AVX2-only ones included, so the width
is read from the features too.

A dense product keeps an ``MR x NR`` tile of accumulators in vector registers over its whole
reduction (see the cpu rule ``Dense``). Each reduction step loads ``NR / lanes`` weight vectors
and broadcasts one input value at a time, so the tile fits when

    MR * panel_vectors  +  panel_vectors  +  1   <=   vector registers

    AVX2 + FMA (16 ymm, 8 floats):     panel 3 vectors (NR 24),  MR 4  -> 12 + 3 + 1 = 16
    AVX-512    (32 zmm, 16 floats):    panel 4 vectors (NR 64),  MR 6  -> 24 + 4 + 1 = 29

The panel width is also the weights' packed layout, so it is one number per target; the rows
of the tile are chosen per kernel (``tile_rows``), preferring a count that divides the rows so
that no padded copy of the input is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

MAX_PANEL_VECTORS = 4  # wider panels waste more zero padding on narrow outputs for little gain
MIN_TILE_ROWS = 4      # a tile of fewer rows loads a weight vector for too few multiply-adds


@dataclass(frozen=True)
class CpuIsa:
    """cpu: LLVM's CPU name; simd: the vector extension (AVX-512, AVX2, AVX, SSE, NEON);
    vector_bits: the widest vectors the schedules use; registers: how many of them there are;
    fma: fused multiply-add; vnni: AVX-512 VNNI int8 dot products."""

    cpu: str
    simd: str
    vector_bits: int
    registers: int
    fma: bool
    vnni: bool

    def lanes(self, dtype_bits: int = 32) -> int:
        return max(self.vector_bits // dtype_bits, 1)

    @property
    def panel_vectors(self) -> int:
        """Vectors per weight panel: the most that leave room for a tile of ``MIN_TILE_ROWS`` rows."""
        fits = [v for v in range(1, MAX_PANEL_VECTORS + 1) if self._fits(MIN_TILE_ROWS, v)]
        return max(fits) if fits else 1

    def panel_width(self, dtype_bits: int = 32) -> int:
        return self.panel_vectors * self.lanes(dtype_bits)

    def tile_rows(self, rows: int | None, vectors: int | None = None) -> int:
        """Rows of a register tile ``vectors`` wide (default: a whole panel) for a product of ``rows``
        output rows (None: symbolic): the largest that fits the registers, or failing a divisor of
        ``rows`` among the sizes down to ``MIN_TILE_ROWS``, the largest that does (no padding)."""
        v = vectors or self.panel_vectors
        most = max((self.registers - 1 - v) // v, 1)
        if rows is None or rows % most == 0:
            return min(most, rows) if rows else most
        if rows < most:
            return rows
        divisors = [r for r in range(most, min(MIN_TILE_ROWS, most) - 1, -1) if rows % r == 0]
        return divisors[0] if divisors else most

    def describe(self) -> str:
        """e.g. ``AVX2, FMA (256-bit vectors, 16 registers)``."""
        extras = "".join(f", {flag}" for flag, on in (("FMA", self.fma), ("VNNI", self.vnni)) if on)
        return f"{self.simd}{extras} ({self.vector_bits}-bit vectors, {self.registers} registers)"

    def _fits(self, rows: int, vectors: int) -> bool:
        return rows * vectors + vectors + 1 <= self.registers


def cpu_isa(target) -> CpuIsa:
    """The vector ISA of an llvm ``target`` (its ``mcpu`` and ``mattr``)."""
    mcpu = str(target.attrs.get("mcpu", "")) if target.attrs else ""
    mattr = tuple(str(a) for a in target.attrs.get("mattr", [])) if target.attrs else ()
    triple = str(target.attrs.get("mtriple", "")) if target.attrs else ""
    return _isa(mcpu, mattr, triple)


@cache
def _isa(mcpu: str, mattr: tuple[str, ...], triple: str) -> CpuIsa:
    import tvm
    from tvm.target.codegen import llvm_get_cpu_features

    config = {"kind": "llvm", **({"mcpu": mcpu} if mcpu else {}), **({"mattr": list(mattr)} if mattr else {}),
              **({"mtriple": triple} if triple else {})}
    features = llvm_get_cpu_features(tvm.target.Target(config))
    if "avx512f" in features:
        simd, bits, registers = "AVX-512", 512, 32
    elif "avx" in features:
        simd, bits, registers = "AVX2" if "avx2" in features else "AVX", 256, 16
    elif "neon" in features:
        simd, bits, registers = "NEON", 128, 32
    else:
        simd, bits, registers = "SSE", 128, 16
    return CpuIsa(cpu=mcpu or "generic", simd=simd, vector_bits=bits, registers=registers,
                  fma="fma" in features or "neon" in features, vnni="avx512vnni" in features)


def host_isa() -> CpuIsa:
    """The vector ISA of this machine's CPU, as LLVM names it."""
    import tvm

    from llmc.targets.gpu.cpu import host_cpu

    return cpu_isa(tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()}))
