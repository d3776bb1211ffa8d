"""Split a generation step graph into layer-range subgraphs with explicit interface values.

The step graph (``llmc.frontend.decoder``) runs as a sequence of *units*: the prologue (token
embedding, rotary tables, the mask reshape), then each decoder layer, then the head (final
norm, ``lm_head``). ``units(graph)`` assigns every node to one unit; ``split(graph, ranges)``
cuts the graph into one subgraph per range of consecutive units. Each part names, by the full
graph's value names, what crosses its boundary:

    part 0  units [0, 2]   inputs  input_ids, position_ids, attention_mask, cache_k.0, cache_v.0
                           outputs h (layers.0's residual), rope cos/sin, the 4-D mask,
                                   present_k.0, present_v.0
    part 1  units [3, 31]  inputs  h, cos, sin, mask, cache_k.1 ... cache_v.29
                           outputs logits, present_k.1 ... present_v.29

so a runner keeps one dictionary of values by name, runs the parts in order, and each part
reads only the interface values and the caches of its own layers (``run_parts``). The weight
streaming runtime runs one part per layer group; pipeline stages run one part per process.

How nodes are assigned: a node with ``meta.layer`` belongs to that layer; a node after the
last layered node (in graph order) belongs to the head; any other node to the latest unit of
the values it reads (graph inputs and constants count as the prologue), so the views and
transposes between a layer's ops follow the layer. Every edge must go from an earlier unit to
the same or a later one (``PassError`` otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmc.errors import PassError
from llmc.ir.graph import Graph, Node, Value


@dataclass(frozen=True)
class Unit:
    """A span of the step: ``embed`` (the prologue), ``layer`` (``index``), or ``head``."""

    kind: str
    index: int | None = None

    @property
    def label(self) -> str:
        return f"layer.{self.index}" if self.kind == "layer" else self.kind


@dataclass
class Part:
    """One subgraph of a split: its units ``[first, last]``, and the full graph's names of the
    values it reads (in the order of ``graph.inputs``) and writes (in the order of ``graph.outputs``)."""

    first: int
    last: int
    graph: Graph
    inputs: list[str]
    outputs: list[str]


def unit_list(graph: Graph) -> list[Unit]:
    """The units of ``graph`` in order: ``embed``, ``layer.0`` ... ``layer.L-1``, ``head``."""
    layers = sorted({n.meta.layer for n in graph.nodes if n.meta.layer is not None})
    if layers != list(range(len(layers))) or not layers:
        raise PassError(f"graph {graph.name} has layers {layers[:5]}...; a step graph numbers its layers 0..L-1",
                        hint="schedule a generation step graph (llmc.frontend.decoder)")
    return [Unit("embed"), *(Unit("layer", i) for i in layers), Unit("head")]


def units(graph: Graph) -> dict[int, int]:
    """``id(node) -> unit index`` (0: embed, 1 + i: layer i, L + 1: head); see the module docstring."""
    count = len(unit_list(graph))
    last_layered = max(i for i, n in enumerate(graph.nodes) if n.meta.layer is not None)
    out: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        if node.meta.layer is not None:
            out[id(node)] = node.meta.layer + 1
        elif i > last_layered:
            out[id(node)] = count - 1
        else:
            out[id(node)] = max((out[id(v.producer)] for v in node.inputs if v.producer is not None), default=0)
    for node in graph.nodes:
        for v in node.inputs:
            if v.producer is not None and out[id(v.producer)] > out[id(node)]:
                raise PassError(f"{node.where} (unit {out[id(node)]}) reads %{v.name} of a later unit "
                                f"{out[id(v.producer)]}", where=node.where,
                                hint="the graph's layers are not in order; schedule the step graph as built")
    return out


def split(graph: Graph, ranges: Sequence[tuple[int, int]]) -> list[Part]:
    """One ``Part`` per ``(first, last)`` range of units; the ranges must cover every unit in order."""
    count = len(unit_list(graph))
    expected = 0
    for first, last in ranges:
        if first != expected or last < first:
            raise PassError(f"unit ranges {list(ranges)} do not cover units 0..{count - 1} in order",
                            hint="give consecutive ranges starting at 0")
        expected = last + 1
    if expected != count:
        raise PassError(f"unit ranges {list(ranges)} end at {expected - 1}, the graph has {count} units")
    owner = units(graph)
    part_of = {key: next(p for p, (a, b) in enumerate(ranges) if a <= unit <= b) for key, unit in owner.items()}
    readers = _reading_parts(graph, part_of)
    outputs = {id(v) for v in graph.outputs}
    parts = []
    for p, (first, last) in enumerate(ranges):
        nodes = [n for n in graph.nodes if part_of[id(n)] == p]
        later = [v for n in nodes for v in n.outputs
                 if id(v) in outputs or any(r > p for r in readers.get(id(v), ()))]
        parts.append(_subgraph(graph, p, first, last, nodes, later))
    return parts


def _reading_parts(graph: Graph, part_of: dict[int, int]) -> dict[int, set[int]]:
    """``id(value) -> the parts whose nodes read it``."""
    out: dict[int, set[int]] = {}
    for node in graph.nodes:
        for v in node.inputs:
            out.setdefault(id(v), set()).add(part_of[id(node)])
    return out


def _subgraph(graph: Graph, p: int, first: int, last: int, nodes: list[Node], outputs: list[Value]) -> Part:
    sub = Graph(f"{graph.name}.part{p}")
    env: dict[int, Value] = {}
    inputs: list[str] = []
    for node in nodes:
        for v in node.inputs:
            if id(v) in env:
                continue
            if v.is_const:
                env[id(v)] = sub.add_const(v.name, v.const)
            else:
                env[id(v)] = sub.add_input(v.name, v.type)
                inputs.append(v.name)
        copy = sub.add_node(node.op, [env[id(v)] for v in node.inputs], dict(node.attrs), meta=node.meta.copy(),
                            name=node.name, out_names=[v.name for v in node.outputs])
        env.update({id(v): c for v, c in zip(node.outputs, copy.outputs)})
    sub.outputs = [env[id(v)] for v in outputs]
    sub.verify()
    return Part(first, last, sub, inputs, [v.name for v in outputs])


def run_parts(parts: Sequence[Part], graph_inputs: dict[str, np.ndarray], run) -> dict[str, np.ndarray]:
    """Run ``parts`` in order over values keyed by name; ``run(part, arrays) -> arrays`` runs one.

    Values are dropped once no later part reads them; returns what remains (the step's outputs).
    """
    values = dict(graph_inputs)
    needed_after = _needed_after(parts)
    for i, part in enumerate(parts):
        outs = run(part, [values[name] for name in part.inputs])
        values.update(zip(part.outputs, outs))
        values = {k: v for k, v in values.items() if k in needed_after[i]}
    return values


def _needed_after(parts: Sequence[Part]) -> list[set[str]]:
    """Per part, the names read by the parts after it or written by some part and read by none
    (the step's outputs: logits and presents)."""
    read = {name for part in parts for name in part.inputs}
    final = {name for part in parts for name in part.outputs if name not in read}
    out, later = [], set(final)
    for part in reversed(parts):
        out.append(set(later))
        later |= set(part.inputs)
    return list(reversed(out))
