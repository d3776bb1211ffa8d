"""What ``llmc.compile(..., memory_budget=..., stages=...)`` asks of the schedule, checked before any build.

    request = ScheduleRequest.make(lm, target, options, memory_budget="160MiB", folder=out.parent)
    request.check(lm.graph)                 # pre-flight: InputError naming the smallest budget
    graph, record, section = request.apply(optimized_graph)   # after the other passes

``apply`` runs the ``schedule`` pass (layer groups) or, with ``stages``, the stage split
(``llmc.passes.schedule.stages``); ``section(folder)`` writes schedule.json into the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmc.codegen.devices import Device
from llmc.errors import InputError, TargetError
from llmc.ir.graph import Graph
from llmc.passes.schedule.plan import parse_bytes
from llmc.passes.schedule.storage import Storage, for_device


@dataclass
class ScheduleRequest:
    budget: int | None
    stages: int | None
    device: Device
    storage: Storage
    max_seq_len: int
    prefill_chunk: int

    @classmethod
    def make(cls, lm, target: str, options: dict, *, memory_budget=None, stages: int | None = None,
             prefill_chunk: int | None = None, folder: Path | None = None) -> ScheduleRequest:
        from llmc.codegen.devices import for_target, host
        from llmc.frontend.causal import DEFAULT_PREFILL_CHUNK

        if target != "reference":
            raise TargetError(f"target {target} does not run scheduled artifacts yet: its runtime loads every weight",
                              hint="compile with --target reference to stream weights or run stages")
        if stages is not None and stages < 1:
            raise InputError(f"--stages {stages} is not a number of stages", hint="give --stages 2 or more")
        budget = None if memory_budget is None else (
            memory_budget if isinstance(memory_budget, int) else parse_bytes(memory_budget))
        device = for_target(target, dict(options)) or host()
        chunk = prefill_chunk or min(DEFAULT_PREFILL_CHUNK, lm.max_seq_len)
        return cls(budget, stages, device, for_device(device, folder), lm.max_seq_len, chunk)

    def check(self, graph: Graph) -> None:
        """Refuse, before any build, a budget no plan fits (and stages that do not fit it)."""
        if self.budget is None:
            return
        if self.stages:
            from llmc.passes.schedule.stages import stage_plan

            stage_plan(graph, self.stages, self.device, max_seq_len=self.max_seq_len,
                       prefill_chunk=self.prefill_chunk, budget=self.budget)
            return
        from llmc.passes.schedule.preflight import preflight

        preflight(graph, budget=self.budget, device=self.device, max_seq_len=self.max_seq_len,
                  prefill_chunk=self.prefill_chunk, storage=self.storage).check()

    def apply(self, graph: Graph):
        """``(graph, pass record, section writer)``; the pre-flight check runs again on the optimized
        (perhaps quantized) graph first."""
        self.check(graph)
        if self.stages:
            from llmc.passes.schedule.stages import schedule_stages

            return schedule_stages(graph, self.stages, self.device, max_seq_len=self.max_seq_len,
                                   prefill_chunk=self.prefill_chunk, budget=self.budget)
        from llmc.passes.schedule.layer_groups import ScheduleOptions, schedule_graph

        options = ScheduleOptions(self.budget, self.device, self.storage, self.max_seq_len, self.prefill_chunk)
        graph, _, record, section = schedule_graph(graph, options)
        return graph, record, section
