"""Target ``reference``: the optimized IR itself, run by llmc's numpy interpreter.

Its artifact holds nothing beyond what every artifact has (graph.json + weights.safetensors), so
it runs wherever llmc is installed and is the oracle other targets' artifacts are checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from llmc.codegen.target import Payload, Target, register_target
from llmc.ir.graph import Graph


class ReferenceTarget(Target):
    name = "reference"
    description = "the optimized IR and its weights, run by llmc's numpy reference interpreter"

    @property
    def pipelines(self) -> dict[str, list[str]]:
        from llmc.passes import PIPELINES

        return {level: PIPELINES[level] for level in ("O0", "O1", "O2")}

    def lower(self, graph: Graph, options, out: Path) -> Payload:
        return Payload(files=[], manifest={"runtime": "llmc reference interpreter (numpy)"})

    def can_run(self) -> bool:
        return True

    def run(self, artifact: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from llmc.ir import interpreter, serialize

        return interpreter.run(serialize.load(artifact), inputs)

    def step_runner(self, artifact: Path):
        from llmc.ir import serialize
        from llmc.runtime.generate import ReferenceRunner
        from llmc.runtime.streaming import StreamingRunner, read_schedule

        schedule = read_schedule(artifact)
        if schedule is not None and "groups" in schedule:  # compiled with --memory-budget: stream its weights
            return StreamingRunner(artifact)
        return ReferenceRunner(serialize.load(artifact))


register_target(ReferenceTarget())
