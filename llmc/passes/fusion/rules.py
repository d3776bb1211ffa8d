"""Vertical fusion rules: a pattern (a group of nodes around a root), a check, and the rewrite
(``outline``: the group becomes one ``fused`` node, one kernel on the TVM targets).

    glu            %y = linear(%x, %w_gate_up)          one kernel: the product and its
                   %a = act(slice(%y)[:F])              SwiGLU / GeGLU epilogue
                   %h = mul(%a, slice(%y)[F:])
    epilogue       %y = linear(%x, %w [, %b])           one kernel: bias, activation, residual add,
                   %z = add(gelu(%y), %r) ...           scaling on the product's output
    residual_norm  %s = add(%x, %r)                     one kernel writing the new residual stream
                   %n = rms_norm(%s, %g)                and its normalization
    conv_epilogue  %c = conv2d(%x, %w, %b)              one kernel: convolution and activation
                   %y = relu(%c)
    layout         %q = slice(%qkv)[0:Nq]               one kernel: a slice of a concatenated
                   %t = transpose(reshape(%q))          product's output, the head layout and
                   %r = rope(%t, %cos, %sin)            the rotary embedding

A product's group includes the ``dequantize_packed`` node of its weight when only it reads that
weight (the kernel reads the packed codes, never a float matrix). A rule returns its group or
a reason it does not apply; the pass then checks the target's kernel limits and the cost gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmc.ir.graph import Graph, Node, Value
from llmc.passes.edit import is_output
from llmc.passes.fusion.legality import is_pointwise

GLU_ACTIVATIONS = frozenset({"silu", "gelu", "sigmoid", "relu"})
NORMS = frozenset({"rms_norm", "layer_norm"})


@dataclass(frozen=True)
class VerticalRule:
    """``find(graph, root)``: the group rooted at ``root`` (a node of one of ``roots``), or a reason."""

    name: str
    roots: frozenset[str]
    find: Callable[[Graph, Node], list[Node] | str]
    doc: str


def _sole_user(graph: Graph, v: Value) -> Node | None:
    """The one node reading ``v`` (once), if nothing else reads it and it is not a graph output."""
    if is_output(graph, v) or len(v.uses) != 1:
        return None
    return v.uses[0][0]


def _with_weight(node: Node) -> list[Node]:
    """A product and, when only it reads its packed weight, the weight's ``dequantize_packed``."""
    producer = node.inputs[1].producer if len(node.inputs) > 1 else None
    if producer is not None and producer.op == "dequantize_packed" and len(producer.outputs[0].uses) == 1:
        return [producer, node]
    return [node]


def _pointwise_chain(graph: Graph, start: Node, shape) -> list[Node]:
    """Pointwise nodes each the sole reader of the previous value, keeping the product's shape."""
    chain, value = [], start.outputs[0]
    while (user := _sole_user(graph, value)) is not None and is_pointwise(user) \
            and user.outputs[0].type.shape == shape:
        chain.append(user)
        value = user.outputs[0]
    return chain


def _epilogue(graph: Graph, root: Node) -> list[Node] | str:
    chain = _pointwise_chain(graph, root, root.outputs[0].type.shape)
    if not chain:
        return "its output is not read by a pointwise op alone"
    return [*_with_weight(root), *chain]


def _glu(graph: Graph, root: Node) -> list[Node] | str:
    y = root.outputs[0]
    users = [u for u, _ in y.uses]
    last = y.type.rank - 1
    if is_output(graph, y) or len(users) != 2 or any(u.op != "slice" or list(u.attrs["axes"]) not in ([last], [-1])
                                                     for u in users):
        return "its output is not read by exactly two slices of the last axis"
    halves = sorted(users, key=lambda u: u.attrs["starts"][0])
    width = y.type.shape[-1]
    if [list(h.attrs["starts"]) + list(h.attrs["ends"]) for h in halves] != [[0, width // 2], [width // 2, width]] \
            or halves[0].attrs["steps"] not in ((), (1,)) or halves[1].attrs["steps"] not in ((), (1,)):
        return "the slices are not the two halves of the output"
    for gate, up in (halves, halves[::-1]):
        act = _sole_user(graph, gate.outputs[0])
        if act is None or act.op not in GLU_ACTIVATIONS:
            continue
        mul = _sole_user(graph, act.outputs[0])
        if mul is not None and mul.op == "mul" and _sole_user(graph, up.outputs[0]) is mul:
            return [*_with_weight(root), *halves, act, mul]
    return "the halves do not meet as act(gate) * up"


def _residual_norm(graph: Graph, root: Node) -> list[Node] | str:
    add = root.inputs[0].producer
    if add is None or add.op != "add" or add.outputs[0].type.shape != add.inputs[0].type.shape \
            or add.inputs[0].type.shape != add.inputs[1].type.shape:
        return "its input is not the sum of two tensors of its shape"
    return [add, root]


def _conv_epilogue(graph: Graph, root: Node) -> list[Node] | str:
    chain = _pointwise_chain(graph, root, root.outputs[0].type.shape)
    return [root, *chain] if chain else "its output is not read by a pointwise op alone"


LAYOUT_OPS = frozenset({"reshape", "transpose", "slice", "rope"})


def _layout(graph: Graph, root: Node) -> list[Node] | str:
    chain, value = [root], root.outputs[0]
    while (user := _sole_user(graph, value)) is not None and (user.op in LAYOUT_OPS or is_pointwise(user)):
        chain.append(user)
        value = user.outputs[0]
    if len(chain) < 2 or all(n.op == "reshape" for n in chain[1:]):
        return "the slice is read by no layout op or pointwise op alone"
    return [*_sibling_slices(graph, chain), *chain]


def _sibling_slices(graph: Graph, chain: list[Node]) -> list[Node]:
    """Slices read only by a node of ``chain`` (SwiGLU's ``up`` half beside the ``gate`` half the
    chain starts from): the kernel reads their input itself instead of a copy of the slice."""
    return [v.producer for node in chain[1:] for v in node.inputs
            if v.producer is not None and v.producer.op == "slice" and v.producer not in chain
            and _sole_user(graph, v) is node]


RULES: tuple[VerticalRule, ...] = (
    VerticalRule("glu", frozenset({"linear"}), _glu, "a gate/up product with its act(gate) * up epilogue"),
    VerticalRule("epilogue", frozenset({"linear", "matmul"}), _epilogue, "a product with its pointwise epilogue"),
    VerticalRule("residual_norm", NORMS, _residual_norm, "a residual add and the norm of its sum"),
    VerticalRule("conv_epilogue", frozenset({"conv2d"}), _conv_epilogue, "a convolution with its pointwise epilogue"),
    VerticalRule("layout", frozenset({"slice"}), _layout, "a slice with the layout and pointwise ops after it"),
)
