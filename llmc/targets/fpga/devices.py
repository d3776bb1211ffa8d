"""FPGA device profiles: the resources the planner budgets, each from its vendor data sheet.

BRAM counts are 36 Kb blocks (two 18 Kb halves), URAM blocks are 288 Kb. ``usable`` is the
fraction of every resource the planner lets a design take (the rest is left for the shell,
interconnect and routing slack, as vendor guidance suggests for 70-85% utilisation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llmc.errors import TargetError

G = 1e9


@dataclass(frozen=True)
class FpgaDevice:
    name: str
    description: str
    part: str
    dsp: int
    bram36: int
    uram: int
    lut: int
    ff: int
    memory: str             # off-chip memory kind
    memory_bytes: int
    bandwidth: float        # off-chip bytes/s
    clock_mhz: float        # default clock
    source: str
    usable: float = 0.8

    def budget(self) -> dict[str, float]:
        """The usable amount of each resource."""
        return {k: getattr(self, k) * self.usable for k in ("dsp", "bram36", "uram", "lut", "ff")}

    def to_json(self) -> dict:
        return asdict(self)


DEVICES: dict[str, FpgaDevice] = {d.name: d for d in [
    FpgaDevice("u250", "AMD Alveo U250", "xcu250-figd2104-2L-e", dsp=12_288, bram36=2_688, uram=1_280,
               lut=1_728_000, ff=3_456_000, memory="DDR4 (4 x 16 GB)", memory_bytes=64 * 2**30, bandwidth=77 * G,
               clock_mhz=300, source="AMD Alveo U250 data sheet DS962 (resources, DDR4 77 GB/s)"),
    FpgaDevice("u280", "AMD Alveo U280", "xcu280-fsvh2892-2L-e", dsp=9_024, bram36=2_016, uram=960,
               lut=1_304_000, ff=2_607_000, memory="HBM2 (8 GB)", memory_bytes=8 * 2**30, bandwidth=460 * G,
               clock_mhz=300, source="AMD Alveo U280 data sheet DS963 (resources, HBM2 8 GB at 460 GB/s)"),
    FpgaDevice("zcu102", "AMD Zynq UltraScale+ ZCU102 (XCZU9EG)", "xczu9eg-ffvb1156-2-e", dsp=2_520, bram36=912, uram=0,
               lut=274_080, ff=548_160, memory="PS DDR4 (4 GB, 64-bit 2400 MT/s)", memory_bytes=4 * 2**30,
               bandwidth=19.2 * G, clock_mhz=200,
               source="Zynq UltraScale+ MPSoC overview DS891 (ZU9EG resources); ZCU102 user guide UG1182 (DDR4)"),
    FpgaDevice("pynq-z2", "TUL PYNQ-Z2 (XC7Z020)", "xc7z020clg400-1", dsp=220, bram36=140, uram=0,
               lut=53_200, ff=106_400, memory="DDR3 (512 MB, 16-bit 1050 MT/s)", memory_bytes=512 * 2**20,
               bandwidth=4.2 * G, clock_mhz=100,
               source="Zynq-7000 SoC overview DS190 (XC7Z020 resources); TUL PYNQ-Z2 reference manual (DDR3)"),
]}


def get(name: str) -> FpgaDevice:
    try:
        return DEVICES[str(name).lower()]
    except KeyError:
        raise TargetError(f"unknown FPGA device {name!r}", hint=f"use one of {', '.join(DEVICES)}") from None
