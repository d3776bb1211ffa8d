"""Target ``fpga``: a Vitis HLS project in arbitrary-precision fixed point, C-simulated bit-exactly.

``lower`` calibrates the graph, gives every tensor an ``ap_fixed`` type (``precision``), plans
reuse factors and on/off-chip weights against the device's usable resources (``estimate``,
refusing a model that cannot fit), and writes ``hls/`` (``emit``) with the llmc HLS library
(``hls/*.h``). ``run`` builds the project with g++ against hls4ml's ``ap_types`` headers
(``csim``) and calls it through ctypes; its output codes equal ``emulate``'s exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.codegen.target import Payload, Target, register_target
from llmc.errors import TargetError, UnsupportedOpError
from llmc.ir import shapes as S
from llmc.ir.graph import Graph
from llmc.targets.fpga import devices, ops_attention, ops_core, ops_nonlinear  # noqa: F401  (they register kernels)
from llmc.targets.fpga.bind import capacity  # registers the bind_sizes pass
from llmc.targets.fpga.kernels import KERNELS

IO_STYLES = ("io_parallel",)


@dataclass
class FpgaOptions:
    """device: a profile of ``llmc.targets.fpga.devices``; fpga_bits: the default fixed-point
    width; io: the architecture (``io_parallel``: arrays, calls in sequence); precision: JSON
    overrides (file or text, see ``precision``); calibration_inputs: an .npz of model inputs to
    take ranges from (default: seeded synthetic samples); calibration_samples: how many synthetic;
    seq: tokens per generation step (symbols ``batch``/``seq`` are bound to 1/seq; ``ctx`` stays a
    runtime argument)."""

    device: str = "zcu102"
    fpga_bits: int = 16
    io: str = "io_parallel"
    precision: str = ""
    calibration_inputs: str = ""
    calibration_samples: int = 4
    seq: int = 1

    def __post_init__(self):
        try:
            self.fpga_bits = int(self.fpga_bits)
            self.calibration_samples = int(self.calibration_samples)
            self.seq = int(self.seq)
        except ValueError:
            raise TargetError(f"fpga_bits and calibration_samples must be integers, got {self.fpga_bits!r}, "
                              f"{self.calibration_samples!r}") from None
        if not 4 <= self.fpga_bits <= 32:
            raise TargetError(f"--fpga-bits {self.fpga_bits} is outside 4..32", hint="16 is the default")
        if self.io not in IO_STYLES:
            raise TargetError(f"unknown io style {self.io!r}", hint=f"use one of {', '.join(IO_STYLES)}")
        self.device = devices.get(self.device).name


class FpgaTarget(Target):
    name = "fpga"
    description = "Vitis HLS C++ in ap_fixed precision from calibration, estimates per device, g++ C-simulation"
    Options = FpgaOptions
    pipelines = {"O0": ["dce", "bind_sizes"], "O1": ["fixpoint(canonicalize, constant_fold, cse, dce)", "fuse", "dce", "bind_sizes"]}
    default_level = "O1"

    def pass_options(self, options) -> dict:
        # fusion only folds batch norms into convolutions: each other op is one kernel call;
        # a generation step is one sequence and ``seq`` tokens (1: a decode step)
        return {"fuse": {"rules": (), "horizontal": False, "fold": True},
                "bind_sizes": {"sizes": {"batch": 1, "seq": options.seq}}}

    def quant_formats(self) -> tuple[str, ...]:
        return ()

    def supported_ops(self) -> set[str]:
        return set(KERNELS)

    def check(self, graph: Graph, options) -> None:
        super().check(graph, options)
        problems: dict[str, list[str]] = {}
        for node in graph.nodes:
            check = KERNELS[node.op].check
            reason = check(node) if check else None
            if reason:
                problems.setdefault(f"{node.op} ({reason})", []).append(node.meta.origin or node.name)
        runtime = set(capacity(graph))
        for v in [*graph.inputs, *(o for n in graph.nodes for o in n.outputs)]:
            if S.symbols(v.type.shape) - runtime:
                raise TargetError(f"the fpga target needs static shapes; {v.name} has shape {list(v.type.shape)}",
                                  hint="give fixed input shapes (--input-shape) or example inputs")
        if problems:
            raise UnsupportedOpError(problems, source="fpga kernel")

    def device_name(self, options) -> str | None:
        return None

    def lower(self, graph: Graph, options: FpgaOptions, out: Path) -> Payload:
        from llmc.targets.fpga import lower

        device = devices.get(options.device)
        P, calls, plan, samples, source = lower.prepare(graph, options, device)
        files, offchip = lower.write(graph, options, device, out, P, calls, plan, samples)
        section = plan.section()
        fpga = {"device": device.to_json(), "io": options.io, "bits": options.fpga_bits, "calibration": source,
                "precision": P.to_json(), "offchip": offchip, "top": "llmc_top", "estimates": section}
        (out / "hls" / "fpga.json").write_text(json.dumps(fpga, indent=1, sort_keys=True) + "\n")
        files.append(out / "hls" / "fpga.json")
        summary = {"device": device.name, "part": device.part, "io": options.io, "bits": options.fpga_bits,
                   "calibration": source, "offchip": offchip, "estimates": section}
        return Payload(files=[str(Path(f).relative_to(out)) for f in files], manifest={"fpga": summary})

    report_keys = ("fpga",)

    def report_tables(self, manifest: dict) -> list:
        from llmc.targets.fpga.report import tables

        return tables(manifest["payload"]["fpga"])

    def can_run(self) -> bool:
        from llmc.targets.fpga import csim

        return csim.available()

    def run(self, artifact: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from llmc.targets.fpga.simulate import simulate

        return simulate(Path(artifact), inputs)


register_target(FpgaTarget())
