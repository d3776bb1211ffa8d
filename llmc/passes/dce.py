"""Dead-code elimination."""

from __future__ import annotations

from llmc.ir.graph import Graph, Node
from llmc.passes.base import Pass, PassResult, register_pass


@register_pass
class DeadCodeElimination(Pass):
    """Remove nodes whose outputs no graph output depends on, then constants nothing reads.

    Every IR op is pure, so a node is live exactly when one of its outputs is a graph output
    or is read by a live node. Graph inputs stay (they are the model's signature)::

        before:
          graph main(%x: f32[4]) {
            // 1 constants, 4 elements
            %y = relu(%x) : f32[4]
            %unused = add(%x, %w) : f32[4]
            return %y
          }
        after:
          graph main(%x: f32[4]) {
            %y = relu(%x) : f32[4]
            return %y
          }
    """

    name = "dce"
    invariant = "graph outputs keep their values; only nodes and constants that no output depends on are removed"

    def run(self, graph: Graph) -> PassResult:
        dead = dead_nodes(graph)
        if dead:
            graph.remove_nodes(dead)
        consts = graph.remove_unused_constants()
        return PassResult(graph, bool(dead or consts), {"nodes_removed": len(dead), "constants_removed": consts})


def dead_nodes(graph: Graph) -> list[Node]:
    """Nodes no graph output depends on, found in one backward sweep."""
    live_values = {id(v) for v in graph.outputs}
    dead: list[Node] = []
    for node in reversed(graph.nodes):
        if any(id(v) in live_values for v in node.outputs):
            live_values.update(id(v) for v in node.inputs)
        else:
            dead.append(node)
    return dead
