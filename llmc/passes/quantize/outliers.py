"""Outliers: a few weights kept exact beside the low-bit codes, and outlier channels grouped together.

**Dense and sparse** (SqueezeLLM, SpQR). A format with outliers (``w3g128+o0.005``) splits
``W [N, K]`` into low-bit codes ``Q`` and a float16 CSR matrix ``S`` of the ``fraction * N * K``
most important weights: those are set to 0 before ``Q``'s grid is fitted (so they no longer
stretch their group's range) and ``S`` holds ``W - Q`` there, so ``Q + S`` is ``W`` at every kept
position (to float16). Importance is ``|w| * sqrt(H[k, k])`` with the calibration Hessian's
diagonal (the weight times its input's RMS: what it contributes to the output), ``|w|``
without calibration. In the graph the linear reads ``Q`` and a ``linear_csr`` adds ``x @ S^T``::

    %y = linear(%x, %W)
        ->
    %q = dequantize_packed(%W.qweight, %W.scales, %W.mins, bits=3, group=128, k=K)
    %d = linear(%x, %q)
    %y = linear_csr(%x, %W.outlier_values, %W.outlier_columns, %W.outlier_indptr, %d, k=K)

Only weights every reader of which is a ``linear`` take outliers (a tied embedding table would
look its rows up without them).

**Channel grouping** (``reorder``). Linears reading one value ``x`` whose producer can take a
permutation of its output channels for free get their input channels sorted by importance
(column absolute maximum), so the outlier channels share groups instead of widening every group.
A ``mul`` of two linears' outputs (through elementwise ops: SwiGLU's ``silu(gate(x)) * up(x)``
feeding ``down``) qualifies: the rows of ``gate`` and ``up`` are permuted, the columns of ``down``.
Invariant: the float graph computes the same function. A norm's output (the residual stream)
would need a gather at run time, so those groups keep their order, with the reason recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.errors import TargetError
from llmc.ir.graph import Graph, Node, Value, same_type
from llmc.ir.ops.sparse import csr_arrays
from llmc.ir.packing import Grid, Packed
from llmc.passes.quantize.formats import Format
from llmc.passes.quantize.scaling import plan, replace_const

CSR_VALUE_BYTES = 2 + 4  # a float16 value and its int32 column
CSR_ROW_BYTES = 4  # one int32 row pointer per output row (and one more)


@dataclass
class Split:
    """A weight as low-bit codes plus its float16 outliers in CSR form."""

    packed: Packed
    values: np.ndarray
    columns: np.ndarray
    indptr: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.values.nbytes + self.columns.nbytes + self.indptr.nbytes

    def dequantize(self) -> np.ndarray:
        """The float32 matrix a kernel computes with: ``Q + S``."""
        w = self.packed.dequantize()
        rows = np.repeat(np.arange(self.indptr.size - 1), np.diff(self.indptr))
        w[rows, self.columns] += self.values.astype(np.float32)
        return w


def count(n: int, k: int, fraction: float) -> int:
    """Outliers kept of an [n, k] matrix: ``round(fraction * n * k)``, at least one when ``fraction > 0``."""
    return max(1, round(fraction * n * k)) if fraction > 0 else 0


def csr_bytes(n: int, k: int, fraction: float) -> int:
    """Bytes of the outliers of an [n, k] matrix: values, columns and row pointers (none without outliers)."""
    kept = count(n, k, fraction)
    return kept * CSR_VALUE_BYTES + (n + 1) * CSR_ROW_BYTES if kept else 0


def importance(w: np.ndarray, h_diag: np.ndarray | None) -> np.ndarray:
    """``|w| * sqrt(H[k, k])`` per weight (``|w|`` without calibration statistics)."""
    score = np.abs(w)
    return score if h_diag is None else score * np.sqrt(np.maximum(h_diag, 0.0))[None, :]


def split(w: np.ndarray, grid: Grid, fraction: float, h_diag: np.ndarray | None, rounding) -> Split:
    """``w`` as codes on ``grid`` (``rounding(dense) -> Packed``: RTN or GPTQ) plus its outliers."""
    kept = count(*w.shape, fraction)
    score = importance(w, h_diag).ravel()
    keep = np.zeros(w.size, bool)
    keep[np.argpartition(score, score.size - kept)[score.size - kept:]] = True
    keep = keep.reshape(w.shape)
    packed = rounding(np.where(keep, 0.0, w).astype(np.float32))
    values, columns, indptr = csr_arrays(w - packed.dequantize(), keep)
    return Split(packed, values, columns, indptr)


def takes_outliers(value: Value) -> bool:
    """Whether every reader of weight ``value`` is a ``linear`` reading it as its weight."""
    return bool(value.uses) and all(user.op == "linear" and slot == 1 for user, slot in value.uses)


def check_target(labels: list[str], target) -> None:
    """Refuse formats with outliers (``labels``) for a target with no ``linear_csr`` kernel, before any work."""
    supported = target.supported_ops()
    if labels and supported is not None and "linear_csr" not in supported:
        raise TargetError(f"target {target.name} cannot run outliers ({', '.join(sorted(set(labels)))}): "
                          "it has no linear_csr kernel", hint="use formats without +o, or compile for cpu or cuda")


def add_outliers(graph: Graph, value: Value, result: Split, dense: Value) -> None:
    """After each linear reading ``dense`` (the codes of ``value``), add ``x @ S^T`` of the outliers."""
    arrays = {"outlier_values": result.values, "outlier_columns": result.columns, "outlier_indptr": result.indptr}
    csr = [graph.add_const(f"{value.name}.{name}", array) for name, array in arrays.items()]
    for user, _ in list(dense.uses):
        readers = list(user.output.uses)
        at = graph.nodes.index(user) + 1
        y = graph.call("linear_csr", user.inputs[0], *csr, user.output, k=result.packed.k,
                       before=graph.nodes[at] if at < len(graph.nodes) else None, meta=user.meta.copy())
        for reader, slot in readers:
            reader.set_input(slot, y)
        graph.outputs = [y if v is user.output else v for v in graph.outputs]


# -- channel grouping ------------------------------------------------------------------------


def reorder(graph: Graph, formats: dict[str, Format]) -> list[dict]:
    """Permute the input channels of each group of linears (weights named in ``formats``) whose
    producer takes the permutation (see the module docstring). One record per group: its linears,
    whether it was permuted, and why not."""
    records = []
    for group in plan(graph, formats):
        names = [n.meta.origin or n.name for n in group.linears]
        feeders, reason = _permutable(graph, group.x, group.linears)
        if not feeders:
            records.append({"linears": names, "reordered": False, "reason": reason})
            continue
        readers = [np.asarray(n.inputs[1].const.numpy(), np.float32) for n in group.linears]
        perm = np.argsort(-np.max([np.abs(w).max(axis=0) for w in readers], axis=0), kind="stable")
        for node, w in zip(group.linears, readers):
            replace_const(graph, node, 1, w[:, perm], "perm")
        for node in feeders:
            replace_const(graph, node, 1, np.asarray(node.inputs[1].const.numpy())[perm], "perm")
            if len(node.inputs) > 2:
                replace_const(graph, node, 2, np.asarray(node.inputs[2].const.numpy())[perm], "perm")
        records.append({"linears": names, "reordered": True, "reason": ""})
    graph.remove_unused_constants()
    graph.verify()
    return records


def _permutable(graph: Graph, x: Value, linears: list[Node]) -> tuple[list[Node], str]:
    """The linears whose output rows take the permutation of ``x``'s channels, or [] and why not."""
    if any(len(n.inputs[1].uses) > 1 for n in linears):
        return [], "a weight of the group is also read elsewhere"
    if x in graph.outputs or any(slot != 0 or node not in linears for node, slot in x.uses):
        return [], f"%{x.name} is also read by other nodes"
    mul = x.producer
    if mul is None or mul.op != "mul":
        what = "a graph input" if mul is None else f"{mul.op} (a permutation would need a gather there)"
        return [], f"%{x.name} comes from {what}"
    feeders = {}
    for v in mul.inputs:
        linear = _linear_through_elementwise(graph, v) if same_type(v.type, mul.output.type) else None
        if linear is None:
            return [], f"operand %{v.name} of mul {mul.name} is not a linear's output read only there"
        feeders[id(linear)] = linear
    return list(feeders.values()), ""


def _linear_through_elementwise(graph: Graph, v: Value) -> Node | None:
    """The linear (constant weight read only by it) that ``v`` comes from through one-input
    elementwise ops, each value read once; None if there is none."""
    while True:
        node = v.producer
        if node is None or len(v.uses) != 1 or v in graph.outputs:
            return None
        if node.op == "linear":
            params = node.inputs[1:]
            return node if all(p.is_const for p in params) and len(params[0].uses) == 1 else None
        if node.opdef.kind != "elementwise" or len(node.inputs) != 1:
            return None
        v = node.inputs[0]
