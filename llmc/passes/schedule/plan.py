"""The schedule's decision: layer groups, which stay resident, which are streamed, how far ahead.

Facts first (``step_facts``): per unit of the step (``split.units``: embed, each layer, head)
the bytes of weight it loads and its decode time on the device (the roofline,
``llmc.codegen.cost.node_times``); beside them the KV cache at ``max_seq_len`` and the
activations of a prefill chunk (the interpreter's live set, walked over the graph).

A weight read whole by a unit (a ``linear``'s matrix) is *loaded* with the group of the last
unit that reads it whole. A weight that units only gather rows from (an ``embedding`` table,
the rotary tables) is *mapped*: the runtime memory-maps it and pays for the rows it touches,
so it counts no bytes (a tied ``lm_head`` is loaded with the head and mapped by the embedding).

Memory of a plan (what ``--memory-budget`` bounds; the process's fixed overhead, Python and
libraries, is stated apart by the runtime):

    resident groups + streaming window + KV cache + activations

The window holds ``prefetch + 1`` consecutive streamed groups (the one computing and those read
ahead, cyclically over steps). ``choose`` tries each group size (layers per group) and prefetch
distance 0..2, keeps groups resident greedily (largest first) while the plan fits, predicts
each plan's decode step with ``step_time`` (a simulation of one reader thread and the compute
thread sharing ``prefetch + 1`` buffers) and returns the fastest, a plan that streams without
reading ahead counted 10% slower (``_rank``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmc.codegen.cost import Sizes, node_times, phases
from llmc.codegen.devices import Device
from llmc.errors import InputError
from llmc.ir.graph import Graph
from llmc.passes.schedule.split import unit_list, units
from llmc.passes.schedule.storage import Storage

PREFETCH_DISTANCES = (0, 1, 2)
SIMULATED_STEPS = 3


@dataclass
class StepFacts:
    """What the schedule knows of one step graph: per unit ``labels``, loaded ``bytes`` and
    decode ``compute_s``; the KV cache and activation bytes; which unit loads each weight
    (``homes``) and which weights are mapped."""

    labels: list[str]
    bytes: list[int]
    compute_s: list[float]
    kv_cache: int
    activations: int
    homes: dict[str, int] = field(default_factory=dict)
    mapped: set[str] = field(default_factory=set)

    @property
    def weights(self) -> int:
        return sum(self.bytes)

    @property
    def fixed(self) -> int:
        return self.kv_cache + self.activations


@dataclass
class Group:
    first: int      # units [first, last]
    last: int
    bytes: int
    compute_s: float
    resident: bool = True

    def to_json(self, labels: list[str]) -> dict:
        return {"units": [self.first, self.last], "label": unit_label(labels, self.first, self.last),
                "bytes": self.bytes, "resident": self.resident, "compute_s": self.compute_s}


@dataclass
class Plan:
    groups: list[Group]
    prefetch: int
    layers_per_group: int
    memory: dict[str, int]
    step_s: float

    @property
    def tokens_per_s(self) -> float:
        return 1.0 / self.step_s if self.step_s > 0 else float("inf")

    @property
    def streamed(self) -> list[Group]:
        return [g for g in self.groups if not g.resident]


# -- facts ------------------------------------------------------------------------------------


def step_facts(graph: Graph, device: Device, *, max_seq_len: int, prefill_chunk: int, batch: int = 1,
               context: int = 512) -> StepFacts:
    """The facts of ``graph`` (a generation step) on ``device``; decode estimated at ``context``."""
    labels = [u.label for u in unit_list(graph)]
    owner = units(graph)
    by_name = {n.name: owner[id(n)] for n in graph.nodes}
    homes, mapped = _weight_homes(graph, owner)
    loaded = [0] * len(labels)
    for name, unit in homes.items():
        if name not in mapped:
            loaded[unit] += int(graph.constants[name].type.nbytes())
    decode = phases(graph, {"batch": batch, "ctx": min(context, max_seq_len)})["decode"]
    compute = [0.0] * len(labels)
    for k in node_times(graph, device, decode):
        compute[by_name[k.name]] += k.time
    prefill = {"batch": batch, "seq": prefill_chunk, "ctx": max_seq_len}
    kv = sum(int(Sizes({"batch": batch}).nbytes(v)) for v in graph.inputs if v.name.startswith("cache_"))
    return StepFacts(labels, loaded, compute, kv, activation_bytes(graph, prefill), homes, mapped)


def _weight_homes(graph: Graph, owner: dict[int, int]) -> tuple[dict[str, int], set[str]]:
    """Each weight's home unit (the last that reads it whole, else the first that reads it) and
    the weights only gathered from (mapped)."""
    whole: dict[str, list[int]] = {}
    gathered: dict[str, list[int]] = {}
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if v.is_const:
                kind = gathered if node.op == "embedding" and i == 0 else whole
                kind.setdefault(v.name, []).append(owner[id(node)])
    homes = {name: max(us) for name, us in whole.items()}
    mapped = {name for name in gathered if name not in whole}
    homes.update({name: min(gathered[name]) for name in mapped})
    return homes, mapped


def activation_bytes(graph: Graph, sizes: Mapping[str, int]) -> int:
    """Peak bytes of the values the interpreter holds at once in one call at ``sizes`` (caches and
    weights excluded), plus the score matrix an ``attention`` node makes inside."""
    bound = Sizes(sizes)
    caches = {id(v) for n in graph.nodes if n.op == "kv_update" for v in (n.inputs[0], n.outputs[0])}
    last = {id(v): i for i, n in enumerate(graph.nodes) for v in n.inputs}
    live = {id(v): bound.nbytes(v) for v in graph.inputs if id(v) not in caches}
    peak = 0.0
    for i, node in enumerate(graph.nodes):
        live.update({id(v): bound.nbytes(v) for v in node.outputs if id(v) not in caches})
        scratch = 0.0
        if node.op == "attention":  # scores and probabilities [batch, heads, seq, ctx]
            q = bound(node.inputs[0].type)
            scratch = 2 * bound.nbytes(node.inputs[0]) / q.shape[-1] * bound.env.get("ctx", 1)
        peak = max(peak, sum(live.values()) + scratch)
        for v in node.inputs:
            if last.get(id(v)) == i and id(v) in live:
                del live[id(v)]
    return int(peak)


# -- plans ------------------------------------------------------------------------------------


def resident_plan(facts: StepFacts) -> Plan:
    """Every weight loaded once: one group per unit, nothing streamed."""
    groups = [Group(u, u, b, c) for u, (b, c) in enumerate(zip(facts.bytes, facts.compute_s))]
    return _finish(facts, groups, 0, 1, None)


def choose(facts: StepFacts, budget: int, storage: Storage) -> Plan | None:
    """The fastest plan within ``budget`` bytes (everything resident when it fits), or None."""
    everything = resident_plan(facts)
    if everything.memory["total"] <= budget:
        return everything
    best = None
    layers = len(facts.labels) - 2
    for k in range(1, layers + 1):
        for prefetch in PREFETCH_DISTANCES:
            groups = _grouped(facts, k)
            if not _fill_resident(groups, facts, budget, prefetch):
                continue
            plan = _finish(facts, groups, prefetch, k, storage)
            if best is None or _rank(plan) < _rank(best) * 0.999:
                best = plan
    return best


def _rank(plan: Plan) -> float:
    """What ``choose`` minimizes: the predicted step, 10% worse without read-ahead (a runtime
    slower than the roofline, the reference interpreter, hides reads only behind compute it overlaps)."""
    return plan.step_s * (1.1 if plan.streamed and plan.prefetch == 0 else 1.0)


def minimum_budget(facts: StepFacts) -> int:
    """The smallest budget any plan fits: every group streamed, one layer each, nothing read ahead."""
    groups = _grouped(facts, 1)
    for g in groups:
        g.resident = g.bytes == 0
    return facts.fixed + window(groups, 0)


def _grouped(facts: StepFacts, k: int) -> list[Group]:
    """embed, then layers ``k`` at a time, then head."""
    last = len(facts.labels) - 1
    bounds = [(0, 0), *((a, min(a + k - 1, last - 1)) for a in range(1, last, k)), (last, last)]
    return [Group(a, b, sum(facts.bytes[a:b + 1]), sum(facts.compute_s[a:b + 1]), resident=False) for a, b in bounds]


def window(groups: list[Group], prefetch: int) -> int:
    """Bytes of the ``prefetch + 1`` consecutive streamed groups (cyclically) that weigh the most."""
    sizes = [g.bytes for g in groups if not g.resident]
    if not sizes:
        return 0
    span = min(prefetch + 1, len(sizes))
    return max(sum(sizes[(i + j) % len(sizes)] for j in range(span)) for i in range(len(sizes)))


def _fill_resident(groups: list[Group], facts: StepFacts, budget: int, prefetch: int) -> bool:
    """Stream everything, then keep groups resident, largest first, while the plan fits; False
    if even streaming everything does not fit."""
    for g in groups:
        g.resident = g.bytes == 0
    if facts.fixed + window(groups, prefetch) > budget:
        return False
    resident = 0
    for g in sorted((g for g in groups if not g.resident), key=lambda g: -g.bytes):
        g.resident = True
        if facts.fixed + resident + g.bytes + window(groups, prefetch) <= budget:
            resident += g.bytes
        else:
            g.resident = False
    return True


def _finish(facts: StepFacts, groups: list[Group], prefetch: int, k: int, storage: Storage | None) -> Plan:
    resident = sum(g.bytes for g in groups if g.resident)
    memory = {"resident": resident, "window": window(groups, prefetch), "kv_cache": facts.kv_cache,
              "activations": facts.activations}
    memory["total"] = sum(memory.values())
    step = step_time(groups, prefetch, storage) if storage is not None else sum(g.compute_s for g in groups)
    return Plan(groups, prefetch, k, memory, step)


def step_time(groups: list[Group], prefetch: int, storage: Storage) -> float:
    """Seconds of one decode step in steady state: groups compute in order; one reader thread
    reads the streamed ones in order into ``prefetch + 1`` buffers, a buffer freed when its
    group's compute ends."""
    reads, computes, frees = [], [], []   # per streamed use: read end; per use: compute end
    reader = compute = 0.0
    ends = []
    for _ in range(SIMULATED_STEPS):
        for g in groups:
            start = compute
            if not g.resident:
                slot = frees[len(reads) - prefetch - 1] if len(reads) > prefetch else 0.0
                reader = max(reader, slot) + storage.read_time(g.bytes)
                reads.append(reader)
                start = max(start, reader)
            compute = start + g.compute_s
            computes.append(compute)
            if not g.resident:
                frees.append(compute)
        ends.append(compute)
    return ends[-1] - ends[-2]


def unit_label(labels: list[str], first: int, last: int) -> str:
    return labels[first] if first == last else f"{labels[first]}..{labels[last]}"


# -- budgets ----------------------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_bytes(text: str) -> int:
    """``160MiB``, ``4GiB``, ``1.5GB``, ``1000000`` -> bytes (``InputError`` for anything else)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"memory budget {text!r} is not a size", hint="write e.g. 160MiB, 4GiB or 1.5GB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1:
        raise InputError(f"memory budget {text!r} is not positive", hint="write e.g. 160MiB")
    return int(value)


def show_bytes(n: float) -> str:
    """Binary units, as budgets are written: ``160.0 MiB``, ``3.71 GiB``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
