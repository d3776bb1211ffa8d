"""Common-subexpression elimination."""

from __future__ import annotations

from dataclasses import dataclass

from llmc.ir.graph import Graph, Node, Value
from llmc.passes.base import Pass, PassResult, register_pass
from llmc.passes.edit import replace_value, replacement_problem
from llmc.passes.patterns import COMMUTATIVE


@dataclass
class CSEOptions:
    """max_const_elements: constants up to this size are merged when their contents are equal.

    Merged constants are shared by every reader, as any value is: a later pass that changes a
    constant for one node (scales folded into a norm weight) must give that node a new one.
    """

    max_const_elements: int = 1024


@register_pass
class CommonSubexpressionElimination(Pass):
    """Merge equal constants, then nodes that compute the same thing, keeping the first.

    Constants are equal when their type and bytes are (small, materialized ones only). Nodes
    are equal when they have the same op, the same inputs (in either order for commutative
    ops), equal attributes and equal annotations (quant, sparsity, stage, device)::

        before:
          graph main(%x: f32[4]) {
            %a = exp(%x) : f32[4]
            %b = exp(%x) : f32[4]
            %c = add(%a, %b) : f32[4]
            return %c
          }
        after:
          graph main(%x: f32[4]) {
            %a = exp(%x) : f32[4]
            %c = add(%a, %a) : f32[4]
            return %c
          }
    """

    name = "cse"
    invariant = "every value keeps its value; a duplicate node or constant is replaced by its first copy"
    Options = CSEOptions

    def run(self, graph: Graph) -> PassResult:
        consts = self._merge_constants(graph)
        nodes = _merge_nodes(graph)
        return PassResult(graph, bool(consts or nodes), {"constants_merged": consts, "nodes_merged": nodes})

    def _merge_constants(self, graph: Graph) -> int:
        first: dict[str, Value] = {}
        merged = 0
        for v in list(graph.constants.values()):
            n = v.type.numel
            if not v.const.materialized or not isinstance(n, int) or n > self.options.max_const_elements:
                continue
            kept = first.setdefault(v.const.digest(), v)
            if kept is not v and not replacement_problem(graph, v, kept):
                replace_value(graph, v, kept)
                del graph.constants[v.name]
                merged += 1
        return merged


def _merge_nodes(graph: Graph) -> int:
    first: dict[tuple, Node] = {}
    dupes: list[Node] = []
    for node in graph.nodes:
        key = node_key(node)
        kept = first.setdefault(key, node)
        if kept is node:
            continue
        pairs = list(zip(node.outputs, kept.outputs))
        if any(replacement_problem(graph, old, new) for old, new in pairs):
            continue
        for old, new in pairs:
            replace_value(graph, old, new)
        dupes.append(node)
    if dupes:
        graph.remove_nodes(dupes)
    return len(dupes)


def node_key(node: Node) -> tuple:
    """What makes two nodes compute the same values."""
    inputs = [id(v) for v in node.inputs]
    if node.op in COMMUTATIVE and len(inputs) == 2:
        inputs.sort()
    m = node.meta
    return (node.op, tuple(inputs), _freeze(node.attrs), (m.quant, m.sparsity, m.stage, m.device))


def _freeze(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (tuple, list)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Graph):
        return ("graph", id(value))
    return (type(value).__name__, value)
