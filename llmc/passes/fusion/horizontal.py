"""Horizontal fusion: linears that read the same input become one linear over concatenated weights.

    %q = linear(%h, %wq)  %k = linear(%h, %wk)  %v = linear(%h, %wv)
      ->  %qkv = linear(%h, %wqkv)   %q = slice(%qkv)[0:Nq]  %k = slice(%qkv)[Nq:Nq+Nk]  ...

The weights are concatenated along the output features at compile time (a float weight, or the
words, scales and minimums of a packed one: a packed weight keeps its grid and codes, so the
result is bit-identical). One product reads the input once and launches once instead of once
per projection (q/k/v, gate/up). The slices are views their consumers absorb.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.ir.graph import Graph, Node, Value
from llmc.ir.tensor import ArrayWeight


@dataclass(frozen=True)
class Projection:
    """A linear whose weight is a constant (``tensors`` = [W]) or a packed constant read only by it
    (``tensors`` = words, scales[, minimums] of its ``dequantize_packed``)."""

    node: Node
    tensors: tuple[Value, ...]
    dequantize: Node | None

    @property
    def signature(self) -> tuple:
        """What projections must share to be concatenated: weight form and dtype, grid, bias."""
        w = self.node.inputs[1]
        grid = None if self.dequantize is None else tuple(sorted(self.dequantize.attrs.items()))
        return (w.type.dtype, w.type.shape[1], grid, len(self.tensors), len(self.node.inputs) == 3)


def projection(node: Node) -> tuple[Projection | None, str | None]:
    """``node`` as a concatenable projection, or why it is not one."""
    if node.op != "linear":
        return None, "not a linear"
    w = node.inputs[1]
    bias = node.inputs[2:]
    if any(not b.is_const for b in bias):
        return None, "its bias is computed, not a constant"
    if w.is_const and w.type.rank == 2:
        return Projection(node, (w,), None), None
    producer = w.producer
    if producer is not None and producer.op == "dequantize_packed" and all(v.is_const for v in producer.inputs):
        if len(w.uses) != 1:
            return None, "its packed weight is also read by another node"
        return Projection(node, tuple(producer.inputs), producer), None
    return None, "its weight is not a constant"


def groups(graph: Graph) -> tuple[list[list[Projection]], list[tuple[str, str]]]:
    """Projections of one input that can share a product (two or more), and (node, why) for others."""
    by_input: dict[int, list[Projection]] = {}
    reasons: list[tuple[str, str]] = []
    for node in graph.nodes:
        if node.op != "linear":
            continue
        proj, reason = projection(node)
        if proj is None:
            reasons.append((node.name, reason))
            continue
        by_input.setdefault(id(node.inputs[0]), []).append(proj)
    out = []
    for projs in by_input.values():
        kinds: dict[tuple, list[Projection]] = {}
        for p in projs:
            kinds.setdefault(p.signature, []).append(p)
        if len(kinds) > 1:
            reasons.append((", ".join(p.node.name for p in projs),
                            "weights of different formats, dtypes or bias presence read the same input"))
        out.extend(group for group in kinds.values() if len(group) > 1)
    return out, reasons


def concatenate(graph: Graph, group: list[Projection]) -> Node:
    """Replace ``group`` by one linear over the concatenated weights and a slice per projection."""
    first = group[0].node
    x = first.inputs[0]
    cat = [graph.add_const(_joined([p.tensors[i].name for p in group]),
                           ArrayWeight(np.concatenate([p.tensors[i].const.numpy() for p in group], axis=0)))
           for i in range(len(group[0].tensors))]
    before = min((p.node for p in group), key=graph.nodes.index)
    meta = first.meta.copy()
    if group[0].dequantize is not None:
        weight = graph.add_node("dequantize_packed", cat, dict(group[0].dequantize.attrs), meta=meta,
                                before=before).outputs[0]
    else:
        weight = cat[0]
    bias = []
    if len(first.inputs) == 3:
        bias = [graph.add_const(_joined([p.node.inputs[2].name for p in group]),
                                ArrayWeight(np.concatenate([p.node.inputs[2].const.numpy() for p in group])))]
    fused = graph.add_node("linear", [x, weight, *bias], {}, meta=meta, name="+".join(p.node.name for p in group),
                           before=before)
    axis = x.type.rank - 1
    start = 0
    for p in group:
        n = p.node.outputs[0].type.shape[-1]
        piece = graph.add_node("slice", [fused.outputs[0]], {"axes": [axis], "starts": [start], "ends": [start + n]},
                               meta=p.node.meta.copy(), before=before)
        graph.replace_uses(p.node.outputs[0], piece.outputs[0])
        start += n
    graph.remove_nodes([p.node for p in group] + [p.dequantize for p in group if p.dequantize is not None])
    graph.remove_unused_constants()
    return fused


def _joined(names: list[str]) -> str:
    """``a.q_proj.weight``, ``a.k_proj.weight`` -> ``a.q_proj+k_proj.weight``."""
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[: prefix.rstrip(".").rfind(".") + 1] if "." in prefix.rstrip(".") else ""
    suffix = names[0][len(prefix):]
    for n in names[1:]:
        while not n.endswith(suffix):
            suffix = suffix[suffix.find(".", 1):] if "." in suffix[1:] else ""
    middles = [n[len(prefix): len(n) - len(suffix)] for n in names]
    return prefix + "+".join(middles) + suffix
