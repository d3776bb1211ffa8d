"""The chunker: cuts a tagged graph into NPU and CPU subgraphs at the placement boundaries.

    chunks = cut(graph, placement)      # [Chunk(index, device, nodes, inputs, outputs), ...]

Nodes are list-scheduled to make few chunks: from the nodes whose inputs are ready, those on
the current device are taken first (in graph order), and a new chunk starts only when none is
left. Invariants: every node is in exactly one chunk; running the chunks in index order is a
topological order of the graph; a chunk's ``inputs`` are the non-constant values it reads
that it does not compute (graph inputs or earlier chunks' outputs), its ``outputs`` the values
it computes that a later chunk or the graph's outputs read. Constants stay inside the chunks
that read them (the emitter shares their storage between graphs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmc.ir.graph import Graph, Node, Value
from llmc.targets.npu.partition import Placement


@dataclass
class Chunk:
    index: int
    device: str
    nodes: list[Node] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.index:02d}_{self.device}"


def cut(graph: Graph, placement: dict[str, Placement]) -> list[Chunk]:
    """The chunks of ``graph`` (see the module docstring)."""
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    waiting = {id(n): sum(1 for v in _producers(n)) for n in graph.nodes}
    ready = [n for n in graph.nodes if waiting[id(n)] == 0]
    chunks: list[Chunk] = []
    while ready:
        device = placement[min(ready, key=lambda n: order[id(n)]).name].device
        chunk = Chunk(len(chunks), device)
        while True:
            mine = [n for n in ready if placement[n.name].device == device]
            if not mine:
                break
            node = min(mine, key=lambda n: order[id(n)])
            ready.remove(node)
            chunk.nodes.append(node)
            for user in _users(node):
                waiting[id(user)] -= 1
                if waiting[id(user)] == 0:
                    ready.append(user)
        chunks.append(chunk)
    _wire(graph, chunks)
    return chunks


def _producers(node: Node) -> set[int]:
    return {id(v.producer) for v in node.inputs if v.producer is not None}


def _users(node: Node) -> list[Node]:
    seen, out = set(), []
    for v in node.outputs:
        for user in v.users:
            if id(user) not in seen and id(node) in _producers(user):
                seen.add(id(user))
                out.append(user)
    return out


def _wire(graph: Graph, chunks: list[Chunk]) -> None:
    """Fill each chunk's inputs and outputs from where its values are made and read."""
    home = {id(n): c.index for c in chunks for n in c.nodes}
    graph_outputs = {id(v) for v in graph.outputs}
    for c in chunks:
        made = {id(v) for n in c.nodes for v in n.outputs}
        seen: set[int] = set()
        for n in c.nodes:
            for v in n.inputs:
                if id(v) not in made and not v.is_const and id(v) not in seen:
                    seen.add(id(v))
                    c.inputs.append(v)
        for n in c.nodes:
            for v in n.outputs:
                later = any(home[id(u)] != c.index for u in v.users)
                if later or id(v) in graph_outputs:
                    c.outputs.append(v)
