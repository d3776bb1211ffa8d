"""The IR's text form, used by ``str(graph)``, ``llmc inspect --ir``, errors and docstrings.

    graph main(%x: f32[batch,seq,64]) {
      %h = linear(%x, %w1, %b1) : f32[batch,seq,256]          # mlp.up @L0
      %a = gelu(%h) {approximate=none} : f32[batch,seq,256]
      return %a
    }
"""

from __future__ import annotations

from llmc.ir import shapes as S


def _attr(v) -> str:
    if hasattr(v, "nodes") and hasattr(v, "inputs"):
        return f"<graph {len(v.nodes)} nodes>"
    if isinstance(v, tuple):
        return "[" + ",".join(_attr(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int) or isinstance(v, str):
        return str(v)
    return S.dim_str(v) if not hasattr(v, "value") else str(v)


def format_node(node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    args = ", ".join(f"%{v.name}" for v in node.inputs)
    attrs = {k: v for k, v in node.attrs.items() if k != "body"}
    text = f"{outs} = {node.op}({args})"
    if attrs:
        text += " {" + ", ".join(f"{k}={_attr(v)}" for k, v in attrs.items()) + "}"
    text += " : " + ", ".join(str(v.type) for v in node.outputs)
    notes = []
    m = node.meta
    if m.origin:
        notes.append(m.origin)
    if m.layer is not None:
        notes.append(f"@L{m.layer}")
    if m.quant:
        notes.append(f"q{m.quant.bits}" + (f"g{m.quant.group}" if m.quant.group else ""))
    if m.sparsity:
        notes.append(f"sparse {m.sparsity.pattern}")
    if m.stage is not None:
        notes.append(f"stage {m.stage}")
    if m.device:
        notes.append(f"on {m.device}")
    if notes:
        text = f"{text:<72} # " + " ".join(notes)
    return text


def format_graph(graph, *, indent: str = "", max_nodes: int | None = None) -> str:
    sig = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"{indent}graph {graph.name}({sig}) {{"]
    if graph.constants:
        lines.append(f"{indent}  // {len(graph.constants)} constants, {graph.parameter_count():,} elements")
    nodes = graph.nodes if max_nodes is None else graph.nodes[:max_nodes]
    for node in nodes:
        lines.append(f"{indent}  {format_node(node)}")
        if node.op == "fused":
            lines.append(format_graph(node.attrs["body"], indent=indent + "    "))
    if max_nodes is not None and len(graph.nodes) > max_nodes:
        lines.append(f"{indent}  ... {len(graph.nodes) - max_nodes} more nodes")
    lines.append(f"{indent}  return " + ", ".join(f"%{v.name}" for v in graph.outputs))
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def format_neighbourhood(graph, node, radius: int = 2) -> str:
    """The node with its neighbours in program order, the node itself marked."""
    if node not in graph.nodes:
        return "    " + format_node(node)
    i = graph.nodes.index(node)
    rows = []
    for j in range(max(0, i - radius), min(len(graph.nodes), i + radius + 1)):
        mark = ">>" if j == i else "  "
        rows.append(f"  {mark} {format_node(graph.nodes[j])}")
    return "\n".join(rows)
