"""The ``schedule`` pass: layer groups under a memory budget, laid out for one read per group.

``schedule_graph`` runs it the way ``llmc.compile(..., memory_budget=...)`` does and returns the
manifest section writer that puts ``schedule.json`` beside ``weights.safetensors``.

schedule.json (``SCHEDULE``)::

    {"version": 1, "budget": 167772160, "device": {...}, "storage": {...}, "prefetch": 1,
     "units": ["embed", "layer.0", ..., "head"], "mapped": ["rope.cos", ...],
     "groups": [{"units": [1, 2], "label": "layer.0..layer.1", "resident": false, "bytes": 28311552,
                 "offset": 123456, "tensors": ["u0001.blk.0.attn_k.weight", ...]}, ...],
     "memory": {"resident", "window", "kv_cache", "activations", "total"},
     "predicted": {"decode_tokens_per_s", "step_s"}}

``offset`` and ``bytes`` give each group's weights as one region of weights.safetensors: the pass
names every loaded weight ``u<unit>.<name>`` and every mapped one ``z.<name>``, and the writer
stores weights in name order, so a group of consecutive units is one contiguous read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from llmc.codegen.devices import Device
from llmc.errors import PassError
from llmc.ir.graph import Graph
from llmc.passes.base import Pass, PassResult, register_pass
from llmc.passes.schedule.plan import Plan, StepFacts, choose, step_facts
from llmc.passes.schedule.split import units
from llmc.passes.schedule.storage import Storage

SCHEDULE = "schedule.json"
WEIGHTS = "weights.safetensors"
VERSION = 1


@dataclass
class ScheduleOptions:
    """``budget`` bytes on ``device`` streaming from ``storage``; the cache and prefill sizes of the step."""

    budget: int
    device: Device
    storage: Storage
    max_seq_len: int
    prefill_chunk: int


@register_pass
class LayerGroups(Pass):
    """Choose layer groups (``llmc.passes.schedule.plan``), mark each node with its group, and name
    the weights so each group's are contiguous. Before and after (a 2-layer step, one group per layer)::

        %q = linear(%x, %model.layers.0.self_attn.q_proj.weight)          # meta: layer 0
        %q = linear(%x, %u0001.model.layers.0.self_attn.q_proj.weight)    # meta: layer 0, stage 1

    The values computed do not change; only names and ``meta.stage``.
    """

    name = "schedule"
    invariant = "outputs keep their values; each node's meta.stage is its layer group, each weight is named by its group"
    Options = ScheduleOptions

    plan: Plan | None = None
    facts: StepFacts | None = None

    def run(self, graph: Graph) -> PassResult:
        o = self.options
        self.facts = step_facts(graph, o.device, max_seq_len=o.max_seq_len, prefill_chunk=o.prefill_chunk)
        self.plan = choose(self.facts, o.budget, o.storage)
        if self.plan is None:
            raise PassError(f"no layer groups of {graph.name} fit the memory budget {o.budget} bytes",
                            hint="run the pre-flight check first (it names the smallest budget)")
        owner = units(graph)
        group_of = {u: i for i, g in enumerate(self.plan.groups) for u in range(g.first, g.last + 1)}
        for node in graph.nodes:
            node.meta = node.meta.copy(stage=group_of[owner[id(node)]])
        rename_weights(graph, self.facts)
        return PassResult(graph, True, {"groups": len(self.plan.groups), "streamed": len(self.plan.streamed),
                                        "prefetch": self.plan.prefetch,
                                        "decode_tokens_per_s": round(self.plan.tokens_per_s, 3)})


def rename_weights(graph: Graph, facts: StepFacts) -> None:
    """``u<unit>.<name>`` for loaded weights, ``z.<name>`` for mapped ones (the file's name order is
    then unit order)."""
    renamed = {}
    for name, value in graph.constants.items():
        if name not in facts.homes:
            raise PassError(f"weight {name} is read by no node", hint="run dead-code elimination before scheduling")
        value.name = f"z.{name}" if name in facts.mapped else f"u{facts.homes[name]:04d}.{name}"
        renamed[value.name] = value
    graph.constants = renamed
    facts.homes = {f"z.{n}" if n in facts.mapped else f"u{u:04d}.{n}": u for n, u in facts.homes.items()}
    facts.mapped = {f"z.{n}" for n in facts.mapped}


def schedule_graph(graph: Graph, options: ScheduleOptions):
    """Run the pass: ``(graph, plan, record, section)`` where ``section(folder)`` writes schedule.json
    into an artifact folder whose weights.safetensors is written and returns the manifest section."""
    from llmc.passes.manager import PassRecord

    start = time.perf_counter()
    p = LayerGroups(options)
    nodes = len(graph.nodes)
    result = p.run(graph)
    record = PassRecord(p.name, True, time.perf_counter() - start,
                        {"nodes_before": nodes, "nodes_after": len(graph.nodes), **result.stats})
    return result.graph, p.plan, record, lambda folder: write_schedule(folder, p.plan, p.facts, options)


def write_schedule(folder: Path, plan: Plan, facts: StepFacts, options: ScheduleOptions) -> dict:
    """Write ``schedule.json`` (see the module docstring) and return the manifest's ``schedule`` section."""
    import json

    from llmc.ir.tensor import read_safetensors

    stored = read_safetensors(Path(folder) / WEIGHTS)
    groups = []
    for g in plan.groups:
        names = sorted(n for n, u in facts.homes.items() if g.first <= u <= g.last and n not in facts.mapped)
        entry = g.to_json(facts.labels)
        if names:
            begin = stored[names[0]].offset
            end = stored[names[-1]].offset + stored[names[-1]].nbytes
            if end - begin != g.bytes:
                raise PassError(f"the weights of group {entry['label']} are not contiguous in {WEIGHTS}",
                                hint="a weight was renamed after the schedule pass; schedule last")
            entry.update(offset=begin, tensors=names)
        groups.append(entry)
    doc = {"version": VERSION, "budget": options.budget, "device": options.device.name,
           "storage": options.storage.to_json(), "prefetch": plan.prefetch, "layers_per_group": plan.layers_per_group,
           "units": facts.labels, "mapped": sorted(facts.mapped), "groups": groups, "memory": plan.memory,
           "predicted": {"decode_tokens_per_s": plan.tokens_per_s, "step_s": plan.step_s}}
    (Path(folder) / SCHEDULE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return {"file": SCHEDULE, "budget": options.budget, "device": options.device.name, "groups": len(groups),
            "streamed": len(plan.streamed), "prefetch": plan.prefetch, "memory": plan.memory,
            "decode_tokens_per_s": plan.tokens_per_s}
