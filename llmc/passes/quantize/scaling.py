"""Migrating activation outliers into weights: per-input-channel scales folded into the graph.

Linears that read the same value ``x`` form a group. When ``x`` is made by a node that can absorb
a per-channel divisor (a norm with a constant weight, or a ``mul`` one of whose operands is a
linear with a constant weight), a scale ``s`` [K] is folded in: that producer's output channels
are divided by ``s`` (norm weight and bias, or the feeding linear's weight rows and bias) and
every group linear's weight columns are multiplied by ``s``. Invariant: the graph computes the
same function in float (``x / s`` meets ``W * s``); only what quantization does to ``W * s``
changes. Folds make new constants, so arrays other nodes share are never changed.

The scale is SmoothQuant's when a group's formats quantize activations (W8A8), AWQ's search
when the method is AWQ, none otherwise. Statistics come from one float run of the calibration
data; a fold changes no other group's input (up to float rounding) except by the ``1 / s`` that
group's own scale puts on it, so one run serves every group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.ir.graph import Graph, Node, Value, same_type
from llmc.ir.packing import Grid
from llmc.passes.quantize.awq import search_scales, smooth_scales
from llmc.passes.quantize.calibration import Calibration, stream
from llmc.passes.quantize.formats import Format

NORMS = ("rms_norm", "layer_norm")


@dataclass
class Group:
    """Candidate linears reading ``x``, their formats, and the node a scale folds into (None: ``reason``)."""

    x: Value
    linears: list[Node]
    formats: list[Format]
    site: Node | None = None
    reason: str = ""

    @property
    def act8(self) -> bool:
        return any(f.act8 for f in self.formats)

    @property
    def grid(self) -> Grid | None:
        """The coarsest weight grid of the group (the one AWQ searches for); None if all are float16."""
        grids = [f.grid for f in self.formats if f.grid is not None]
        return min(grids, key=lambda g: g.bits) if grids else None


def migrate(graph: Graph, calibration: Calibration | None, formats: dict[str, Format], *,
            awq: bool) -> dict[str, float]:
    """Fold SmoothQuant (act8 formats) or, with ``awq``, AWQ scales into ``graph`` in place.

    ``formats`` maps weight constant names to their formats. Returns, for each linear whose format
    quantizes activations, the name of the weight it reads afterwards -> the absolute maximum of its
    input after smoothing (unsmoothed where its group was skipped). Without calibration data, or
    with nothing to scale, nothing changes.
    """
    groups = [g for g in plan(graph, formats) if g.act8 or (awq and g.site is not None and g.grid is not None)]
    if not groups or calibration is None:
        return {}
    first = {id(g.linears[0]): g for g in groups}
    scales: dict[int, np.ndarray] = {}
    absmax: dict[Node, float] = {}

    def hook(node: Node, args: list[np.ndarray]) -> None:
        group = first[id(node)]
        x = np.asarray(args[0], np.float32).reshape(-1, args[0].shape[-1])
        s = _scale(group, x)
        if s is not None:
            scales[id(group)] = s
        if group.act8:
            peak = float(np.max(np.abs(x).max(axis=0) / (1.0 if s is None else s)))
            absmax.update({n: peak for n, f in zip(group.linears, group.formats) if f.act8})

    stream(graph, calibration, [g.linears[0] for g in groups], hook)
    _fold(graph, [(g, scales[id(g)]) for g in groups if id(g) in scales])
    graph.remove_unused_constants()
    graph.verify()
    return {node.inputs[1].name: peak for node, peak in absmax.items()}


def unscaled(graph: Graph, formats: dict[str, Format]) -> dict[str, str]:
    """The weight-only linears AWQ cannot scale (no op to fold ``1 / s`` into) -> why not: they are
    rounded without scales, and their records say so (``rtn``, or ``gptq`` for ``awq+gptq``)."""
    return {node.inputs[1].name: group.reason for group in plan(graph, formats)
            if group.site is None and group.grid is not None and not group.act8 for node in group.linears}


def plan(graph: Graph, formats: dict[str, Format]) -> list[Group]:
    """The groups of candidate linears (weight named in ``formats``) in graph order, each with its fold site."""
    groups: dict[int, Group] = {}
    for node in graph.nodes:
        if node.op == "linear" and node.inputs[1].is_const and node.inputs[1].name in formats:
            x = node.inputs[0]
            group = groups.setdefault(id(x), Group(x, [], []))
            group.linears.append(node)
            group.formats.append(formats[node.inputs[1].name])
    for group in groups.values():
        group.site, group.reason = _site(graph, group)
    return list(groups.values())


def _site(graph: Graph, group: Group) -> tuple[Node | None, str]:
    """The node whose output channels can take ``1 / s`` for ``group``, or None and why not."""
    shared = [n.inputs[1].name for n in group.linears if len(n.inputs[1].uses) > 1]
    if shared:
        return None, f"weight {shared[0]} is also read elsewhere"
    x = group.x
    if x in graph.outputs or any(slot != 0 or node not in group.linears for node, slot in x.uses):
        return None, f"%{x.name} is also read by other nodes"
    producer = x.producer
    if producer is None:
        return None, f"%{x.name} is a graph input"
    if producer.op in NORMS:
        return _norm_site(producer, x)
    if producer.op == "mul":
        return _mul_site(graph, producer)
    return None, f"%{x.name} comes from {producer.op}"


def _norm_site(norm: Node, x: Value) -> tuple[Node | None, str]:
    """A norm whose weight (and bias) are constant vectors over the last axis."""
    params = norm.inputs[1:]
    k = x.type.shape[-1]
    if params and all(p.is_const and p.type.rank == 1 and p.type.shape[0] == k for p in params):
        return norm, ""
    return None, f"{norm.op} {norm.name} has no constant per-channel weight"


def _mul_site(graph: Graph, mul: Node) -> tuple[Node | None, str]:
    """A linear with constant weight (and bias) feeding ``mul`` alone, its output as wide as the product."""
    for v in mul.inputs:
        p = v.producer
        if p is not None and p.op == "linear" and all(i.is_const for i in p.inputs[1:]) \
                and len(v.uses) == 1 and v not in graph.outputs and same_type(v.type, mul.output.type) \
                and len(p.inputs[1].uses) == 1:
            return p, ""
    return None, f"mul {mul.name} has no operand from a linear read only by it"


def _scale(group: Group, x: np.ndarray) -> np.ndarray | None:
    """SmoothQuant's scale for act8 groups, AWQ's otherwise; None where the group cannot take one."""
    if group.site is None:
        return None
    if group.act8:
        return smooth_scales(np.abs(x).max(axis=0), [_array(n.inputs[1]) for n in group.linears])
    weights = [_array(n.inputs[1]) for n, f in zip(group.linears, group.formats) if f.grid is not None]
    return search_scales(weights, x, group.grid)[0]


def _fold(graph: Graph, scaled: list[tuple[Group, np.ndarray]]) -> None:
    """Multiply each group linear's columns by its ``s``, divide its site's output channels by it.

    A linear can be both (an up projection whose rows feed ``down``): it gets one new weight."""
    columns = {n: s for group, s in scaled for n in group.linears}
    rows = {group.site: s for group, s in scaled}
    for node in graph.nodes:
        if node in columns or node in rows:
            _rescale(graph, node, columns.get(node), rows.get(node))


def _rescale(graph: Graph, node: Node, columns: np.ndarray | None, rows: np.ndarray | None) -> None:
    """Point ``node`` at new constants: a linear's weight ``W * columns / rows[:, None]`` and bias
    ``b / rows``, or a norm's weight (and bias) divided by ``rows``."""
    if node.op != "linear":
        for slot in range(1, len(node.inputs)):
            replace_const(graph, node, slot, _array(node.inputs[slot]) / rows)
        return
    w = _array(node.inputs[1])
    if columns is not None:
        w = w * columns
    if rows is not None:
        w = w / rows[:, None]
        if len(node.inputs) > 2:
            replace_const(graph, node, 2, _array(node.inputs[2]) / rows)
    replace_const(graph, node, 1, w)


def replace_const(graph: Graph, node: Node, slot: int, array: np.ndarray, suffix: str = "scaled") -> None:
    """Give ``node`` a new constant at ``slot``, in the dtype of the one it replaces."""
    old = node.inputs[slot]
    node.set_input(slot, graph.add_const(f"{old.name}.{suffix}", array.astype(old.type.dtype.np)))


def _array(value: Value) -> np.ndarray:
    return np.asarray(value.const.numpy(), np.float32)
