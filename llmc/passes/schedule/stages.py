"""Pipeline stages: ``--stages N`` cuts the step into N consecutive unit ranges, one per process.

The cut balances the roofline's decode time (``plan.step_facts``): the ranges minimize the
slowest stage's time (a small dynamic program over the units). With a ``--memory-budget``
each stage must fit it alone (its weights, the KV cache of its layers, the activations);
otherwise the request is refused with the smallest per-stage budget these stages need.

Each stage becomes its own payload in the artifact, ``stages/<i>/graph.json`` +
``weights.safetensors`` (the part of ``split``), so a machine of a multi-machine run needs only
its folder; schedule.json lists each stage's units and its interface: ``receive`` (values the
previous stage sends), ``send`` (values it sends the next), and its caches.
"""

from __future__ import annotations

import time
from pathlib import Path

from llmc.codegen.devices import Device
from llmc.errors import InputError
from llmc.ir.graph import Graph
from llmc.passes.schedule.layer_groups import SCHEDULE, VERSION, rename_weights
from llmc.passes.schedule.plan import StepFacts, show_bytes, step_facts, unit_label
from llmc.passes.schedule.split import Part, split, units

STAGES = "stages"


def balanced_ranges(times: list[float], count: int) -> list[tuple[int, int]]:
    """``count`` consecutive ranges of ``times`` (each non-empty) whose largest sum is smallest."""
    n = len(times)
    if not 1 <= count <= n:
        raise InputError(f"--stages {count}: the model has {n - 2} layers (plus embedding and head)",
                         hint=f"give --stages between 1 and {n}")
    prefix = [0.0]
    for t in times:
        prefix.append(prefix[-1] + t)
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(count + 1)]  # best[k][i]: first i units in k ranges
    cut = [[0] * (n + 1) for _ in range(count + 1)]
    best[0][0] = 0.0
    for k in range(1, count + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    ranges, i = [], n
    for k in range(count, 0, -1):
        ranges.append((cut[k][i], i - 1))
        i = cut[k][i]
    return ranges[::-1]


def stage_plan(graph: Graph, count: int, device: Device, *, max_seq_len: int, prefill_chunk: int,
               budget: int | None = None) -> tuple[StepFacts, list[tuple[int, int]]]:
    """The facts and the unit ranges of ``count`` balanced stages; ``InputError`` when a stage does
    not fit ``budget``."""
    facts = step_facts(graph, device, max_seq_len=max_seq_len, prefill_chunk=prefill_chunk)
    ranges = balanced_ranges(facts.compute_s, count)
    if budget is not None:
        layers = len(facts.labels) - 2
        need = [sum(facts.bytes[a:b + 1]) + facts.kv_cache * _layers_in(a, b, layers) // layers + facts.activations
                for a, b in ranges]
        if max(need) > budget:
            raise InputError(f"stage {need.index(max(need))} of {count} needs {show_bytes(max(need))}, more than "
                             f"--memory-budget {show_bytes(budget)} (a stage's weights, its layers' KV cache at "
                             f"--max-seq-len {max_seq_len} and the activations)",
                             hint=f"give --memory-budget {show_bytes(max(need))} or more, or more --stages")
    return facts, ranges


def _layers_in(first: int, last: int, layers: int) -> int:
    return max(0, min(last, layers) - max(first, 1) + 1)


def schedule_stages(graph: Graph, count: int, device: Device, *, max_seq_len: int, prefill_chunk: int,
                    budget: int | None = None):
    """Mark each node with its stage and name weights by unit: ``(graph, record, section writer)``."""
    from llmc.passes.manager import PassRecord

    start = time.perf_counter()
    facts, ranges = stage_plan(graph, count, device, max_seq_len=max_seq_len, prefill_chunk=prefill_chunk,
                               budget=budget)
    owner = units(graph)
    stage_of = {u: s for s, (a, b) in enumerate(ranges) for u in range(a, b + 1)}
    for node in graph.nodes:
        node.meta = node.meta.copy(stage=stage_of[owner[id(node)]])
    rename_weights(graph, facts)
    times = [sum(facts.compute_s[a:b + 1]) for a, b in ranges]
    record = PassRecord("stages", True, time.perf_counter() - start,
                        {"nodes_before": len(graph.nodes), "nodes_after": len(graph.nodes), "stages": count,
                         "slowest_stage_s": max(times)})
    return graph, record, lambda folder: write_stages(Path(folder), graph, facts, ranges, device, budget)


def write_stages(folder: Path, graph: Graph, facts: StepFacts, ranges: list[tuple[int, int]], device: Device,
                 budget: int | None) -> dict:
    """Each stage's payload under ``stages/<i>/`` and schedule.json; the manifest's ``schedule`` section."""
    import json

    from llmc.ir import serialize

    parts = split(graph, ranges)
    entries = []
    dtypes = {v.name: v.type.dtype.np.name for v in graph.values()}
    for i, part in enumerate(parts):
        serialize.save(part.graph, folder / STAGES / str(i))
        entries.append(_entry(i, part, parts, facts, dtypes))
    doc = {"version": VERSION, "device": device.name, "budget": budget, "units": facts.labels, "stages": entries}
    (folder / SCHEDULE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return {"file": SCHEDULE, "stages": len(parts), "device": device.name,
            "stage_compute_s": [e["compute_s"] for e in entries]}


def _entry(i: int, part: Part, parts: list[Part], facts: StepFacts, dtypes: dict[str, str]) -> dict:
    """A stage's units, payload and interface (see the module docstring)."""
    later = {n for p in parts[i + 1:] for n in p.inputs}
    available = {n for p in parts[:i + 1] for n in p.outputs} | {n for p in parts[:i + 1] for n in p.inputs}
    send = sorted(n for n in later & available if not n.startswith("cache_"))
    receive = sorted(n for n in part.inputs if i > 0 and not n.startswith("cache_"))
    before = {n for p in parts[:i] for n in p.outputs} | {n for p in parts[:i] for n in p.inputs}
    receive = sorted(set(receive) | (set(send) & before))  # values passed through this stage
    return {"units": [part.first, part.last], "label": unit_label(facts.labels, part.first, part.last),
            "folder": f"{STAGES}/{i}", "bytes": sum(facts.bytes[part.first:part.last + 1]),
            "compute_s": sum(facts.compute_s[part.first:part.last + 1]),
            "inputs": part.inputs, "outputs": part.outputs, "receive": receive, "send": send,
            "caches": [n for n in part.inputs if n.startswith("cache_")],
            "dtypes": {n: dtypes[n] for n in sorted(set(receive) | set(send))}}
