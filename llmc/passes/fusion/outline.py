"""Outlining: a set of nodes becomes one ``fused`` node whose body is a copy of them.

The body's inputs are the values the group reads from outside it (graph inputs, other nodes'
outputs, and constants larger than a scalar, so a weight shared with other nodes stays one
tensor of the artifact); scalar constants move into the body. Its outputs are the group's
values that something outside reads (a later node or a graph output), in node order. The body
graph is named after the rule that made it, which is how ``llmc inspect``, the manifest and a
target's refusal name the rule; the node takes the metadata (origin, layer) of the group's last
node that has an origin. A group is outlined only if it is *convex*: no path leaves it
and comes back (that would make the fused node depend on itself).
"""

from __future__ import annotations

from collections.abc import Sequence

from llmc.ir.graph import Graph, Node, Value
from llmc.passes.edit import is_output, replace_value


def escapes(graph: Graph, group: Sequence[Node]) -> list[Value]:
    """The group's values read outside it (by a node or as a graph output), in node order."""
    members = set(group)
    return [v for n in group for v in n.outputs
            if is_output(graph, v) or any(u not in members for u, _ in v.uses)]


def is_convex(group: Sequence[Node]) -> bool:
    """No path from a member through a non-member back to a member."""
    members = set(group)
    frontier = [u for n in group for v in n.outputs for u, _ in v.uses if u not in members]
    seen: set[Node] = set()
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        for v in node.outputs:
            for user, _ in v.uses:
                if user in members:
                    return False
                frontier.append(user)
    return True


def body_of(group: Sequence[Node], rule: str) -> tuple[Graph, list[Value], dict[int, Value]]:
    """A copy of ``group`` as a graph named ``rule``: (body, the outer values its inputs stand for,
    id of each group value -> its copy in the body)."""
    members = set(group)
    body = Graph(rule)
    mapped: dict[int, Value] = {}
    outer_inputs: list[Value] = []
    for node in group:
        for v in node.inputs:
            if id(v) in mapped or v.producer in members:
                continue
            if v.is_const and v.type.numel == 1:
                mapped[id(v)] = body.add_const(v.name, v.const)
            else:
                mapped[id(v)] = body.add_input(v.name, v.type)
                outer_inputs.append(v)
        copy = body.add_node(node.op, [mapped[id(v)] for v in node.inputs], dict(node.attrs),
                             meta=node.meta.copy(), name=node.name, out_names=[v.name for v in node.outputs])
        mapped.update({id(v): c for v, c in zip(node.outputs, copy.outputs)})
    return body, outer_inputs, mapped


def outline(graph: Graph, group: Sequence[Node], rule: str) -> Node:
    """Replace ``group`` (convex) by one ``fused`` node; returns it."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    group = sorted(group, key=order.__getitem__)
    outs = escapes(graph, group)
    body, inputs, mapped = body_of(group, rule)
    body.outputs = [mapped[id(v)] for v in outs]
    meta = next((n.meta for n in reversed(group) if n.meta.origin), group[-1].meta)  # a layout's last op may have none
    fused = graph.add_node("fused", inputs, {"body": body}, meta=meta.copy(), name=rule, before=group[-1])
    for old, new in zip(outs, fused.outputs):
        replace_value(graph, old, new)
    graph.remove_nodes(group)
    graph.sort()
    return fused
