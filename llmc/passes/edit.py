"""Graph edits every pass needs, on top of the IR's own books (``replace_uses``, ``remove_nodes``).

Graph outputs carry the model's names (``logits``, ``last_hidden_state``); replacing an output
value must not rename it. ``replace_value`` hands the old name to the new value, and
``replacement_problem`` says when that cannot be done (the new value is a graph input, a
shared constant, or another output), so the caller can leave the graph alone instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmc.errors import PassError
from llmc.ir.graph import Graph, Node, Value, same_type


def is_output(graph: Graph, v: Value) -> bool:
    return any(o is v for o in graph.outputs)


def replacement_problem(graph: Graph, old: Value, new: Value) -> str | None:
    """Why ``new`` cannot take the place of ``old`` everywhere; None when it can."""
    if not same_type(old.type, new.type):
        return f"%{new.name}: {new.type} cannot replace %{old.name}: {old.type}"
    if old is new or not is_output(graph, old):
        return None
    if is_output(graph, new):
        return f"graph outputs %{old.name} and %{new.name} would become one value"
    if any(i is new for i in graph.inputs):
        return f"graph output %{old.name} would become graph input %{new.name}"
    if new.is_const and new.uses:
        return f"graph output %{old.name} would become the shared constant %{new.name}"
    return None


def replace_value(graph: Graph, old: Value, new: Value) -> None:
    """Every reader of ``old`` reads ``new``; a graph output keeps its name (``new`` takes it)."""
    problem = replacement_problem(graph, old, new)
    if problem:
        raise PassError(f"cannot replace %{old.name}: {problem}", hint="check replacement_problem() first")
    was_output = is_output(graph, old)
    graph.replace_uses(old, new)
    if was_output and old is not new:
        _swap_names(graph, old, new)


def _swap_names(graph: Graph, a: Value, b: Value) -> None:
    keyed = [v for v in (a, b) if v.is_const and graph.constants.get(v.name) is v]
    for v in keyed:
        del graph.constants[v.name]
    a.name, b.name = b.name, a.name
    for v in keyed:
        graph.constants[v.name] = v


def remove_unread(graph: Graph, nodes: Iterable[Node]) -> set[Node]:
    """Remove those of ``nodes`` that nothing outside them reads (no graph output either); return them."""
    doomed = set(nodes)
    outputs = {id(v) for v in graph.outputs}
    shrinking = True
    while shrinking:
        shrinking = False
        for n in list(doomed):
            if any(id(v) in outputs or any(u not in doomed for u, _ in v.uses) for v in n.outputs):
                doomed.discard(n)
                shrinking = True
    if doomed:
        graph.remove_nodes(doomed)
    return doomed
