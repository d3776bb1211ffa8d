"""Running an fpga artifact: its C-simulation (``csim``), with inputs and outputs as arrays.

The artifact's ``hls/fpga.json`` holds every tensor's fixed-point type, so inputs are encoded
and outputs decoded exactly as the emulation does; ``simulate_codes`` returns the raw output
codes for bit-exact comparisons.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from llmc.targets.fpga import csim, emulate
from llmc.targets.fpga.bind import RUNTIME, capacity
from llmc.targets.fpga.fixed import Fixed
from llmc.targets.fpga.kernels import dtype_of, use_capacity
from llmc.targets.fpga.precision import Precision


def artifact_precision(artifact: Path) -> tuple[Precision, dict]:
    info = json.loads((artifact / "hls" / "fpga.json").read_text())
    types = {k: Fixed.parse(v) for k, v in info["precision"]["types"].items()}
    return Precision(types, {k: Fixed.parse(v) for k, v in info["precision"]["accum"].items()}), info


def simulate_codes(artifact: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output codes of the artifact's C-simulation on ``inputs`` (float/integer arrays by name)."""
    from rich.console import Console

    from llmc.ir import serialize

    graph = serialize.load(artifact)
    P, info = artifact_precision(artifact)
    use_capacity(capacity(graph))
    codes = emulate.input_codes(graph, P, inputs)
    hls = artifact / "hls"
    with Console(stderr=True).status("building the C-simulation (g++)"):
        library = csim.build(hls)
    offchip = [np.fromfile(hls / "firmware" / "weights" / f"{_ident(graph, w)}.bin", dtype_of(P.types[w])) for w in info["offchip"]]
    outs = csim.run(library, [codes[v.name] for v in graph.inputs], [int(np.prod([int(d) for d in v.type.shape])) for v in graph.outputs],
                    offchip, P.sizes.get(RUNTIME, 0))
    return {v.name: o.reshape([int(d) for d in v.type.shape]) for v, o in zip(graph.outputs, outs)}


def _ident(graph, name: str) -> str:
    from llmc.targets.fpga.emit import Names

    return Names(graph)[name]


def simulate(artifact: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the C-simulation as the graph's dtypes (float outputs: their fixed-point values)."""
    from llmc.ir import serialize

    graph = serialize.load(artifact)
    P, _ = artifact_precision(artifact)
    use_capacity(capacity(graph))
    return emulate.decode(graph, P, simulate_codes(artifact, inputs))
