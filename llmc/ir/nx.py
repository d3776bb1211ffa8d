"""networkx views of a graph, for the graph algorithms passes and schedulers need."""

from __future__ import annotations

import networkx as nx

from llmc.ir.graph import Graph


def node_digraph(graph: Graph) -> nx.DiGraph:
    """Nodes of the IR as networkx nodes (keyed by name, ``node`` attribute = the IR node);
    an edge u -> v for each value u produces that v reads, with ``value`` = the value."""
    g = nx.DiGraph()
    for n in graph.nodes:
        g.add_node(n.name, node=n)
    for n in graph.nodes:
        for v in n.inputs:
            if v.producer is not None:
                g.add_edge(v.producer.name, n.name, value=v)
    return g
