"""``Device``: what the roofline cost model needs to know about one device."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llmc.ir.dtypes import DType

# llmc dtypes -> the key of ``Device.peak`` their products run at.
_PEAK_KEYS = {DType.f32: "f32", DType.f16: "f16", DType.bf16: "bf16", DType.i8: "int8", DType.u8: "int8",
              DType.i4: "int8", DType.u4: "int8"}


@dataclass(frozen=True)
class Device:
    """Peak rates and sizes of one device (all in base units: flop/s, byte/s, bytes, seconds).

    peak: matrix-unit throughput per compute dtype (``f32``, ``f16``, ``bf16``, ``int8``, ``fp8``).
    vector: throughput of what is not a matrix product (elementwise, reductions, softmax).
    bandwidth: off-chip memory bandwidth; onchip: L2 / SRAM / VTCM bytes; memory: device memory.
    launch: the fixed cost of one kernel (a CUDA launch, a TVM parallel region, an XRT start).
    source: where the figures come from (a data sheet, or ``measured <date>`` for the host).
    """

    name: str
    description: str
    kind: str
    peak: Mapping[str, float]
    vector: float
    bandwidth: float
    onchip: int
    memory: int
    launch: float
    source: str
    facts: Mapping[str, object] = field(default_factory=dict)

    def rate(self, dtype: DType, matrix: bool) -> float:
        """Flop/s of a kernel computing in ``dtype``: the matrix peak for products (float32's
        when the device has no peak for that dtype), ``vector`` otherwise."""
        if not matrix:
            return self.vector
        return self.peak.get(_PEAK_KEYS.get(dtype, "f32")) or self.peak.get("f32") or self.vector

    def to_json(self) -> dict:
        """The facts a manifest records about the device a cost estimate assumed."""
        return {"name": self.name, "description": self.description, "kind": self.kind, "peak": dict(self.peak),
                "vector": self.vector, "bandwidth": self.bandwidth, "onchip": self.onchip, "memory": self.memory,
                "launch": self.launch, "source": self.source, **({"measured": dict(self.facts)} if self.facts else {})}
