"""``verify(graph)``: the invariants every stage of llmc relies on."""

from __future__ import annotations

from llmc.errors import LLMCError, VerifyError
from llmc.ir.graph import Graph, Node, same_type


def _fail(graph: Graph, node: Node | None, what: str, hint: str) -> None:
    where = None
    if node is not None:
        from llmc.ir.printer import format_neighbourhood

        where = node.where + "\n" + format_neighbourhood(graph, node)
    raise VerifyError(what, where=where, hint=hint)


def verify(graph: Graph) -> None:
    defined: set[int] = set()
    names: set[str] = set()
    for v in list(graph.inputs) + list(graph.constants.values()):
        if v.name in names:
            _fail(graph, None, f"value name %{v.name} is defined twice", "give every value a unique name")
        names.add(v.name)
        defined.add(id(v))
        if v.producer is not None:
            _fail(graph, v.producer, f"input/constant %{v.name} claims a producer", "inputs and constants have none")
    for v in graph.constants.values():
        if not same_type(v.type, v.const.type):
            _fail(graph, None, f"constant %{v.name} has type {v.type} but its data is {v.const.type}", "rebuild the constant")
    node_names: set[str] = set()
    for node in graph.nodes:
        if node.name in node_names:
            _fail(graph, node, f"node name {node.name} is used twice", "give every node a unique name")
        node_names.add(node.name)
        for i, v in enumerate(node.inputs):
            if id(v) not in defined:
                _fail(graph, node, f"input {i} (%{v.name}) is used before it is defined", "call graph.sort() or fix the rewrite")
            if (node, i) not in v.uses:
                _fail(graph, node, f"%{v.name} does not list {node.name} as a user", "edit inputs through Node.inputs / set_input")
        try:
            opdef = node.opdef
            opdef.check_attrs(node.attrs, where=node.where)
            inferred = opdef.infer_node(node)
        except VerifyError:
            raise
        except LLMCError as e:
            _fail(graph, node, f"type inference failed: {e}", "the node's inputs or attributes are inconsistent")
        if len(inferred) != len(node.outputs):
            _fail(graph, node, f"{node.op} should have {len(inferred)} outputs, has {len(node.outputs)}", "rebuild the node")
        for out, t in zip(node.outputs, inferred):
            if out.producer is not node:
                _fail(graph, node, f"output %{out.name} names another producer", "outputs belong to one node")
            if not same_type(out.type, t):
                _fail(graph, node, f"output %{out.name} is typed {out.type} but infers to {t}", "re-create the node after changing its inputs")
            if out.name in names:
                _fail(graph, node, f"value name %{out.name} is defined twice", "give every value a unique name")
            names.add(out.name)
            defined.add(id(out))
            for user, j in out.uses:
                if user.inputs[j] is not out:
                    _fail(graph, user, f"use list of %{out.name} is stale", "edit inputs through Node.inputs / set_input")
    for v in graph.outputs:
        if id(v) not in defined:
            _fail(graph, None, f"graph output %{v.name} is not defined by the graph", "set graph.outputs to defined values")
