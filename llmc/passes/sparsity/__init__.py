"""Sparsity: prune linear weights (magnitude, Wanda, SparseGPT; unstructured or N:M) and store them
compactly, where the sparse kernel pays on the target.

``sparsify(graph, options, calibration, ...)`` visits every ``linear`` inside the model's blocks
whose weight is a 2-D constant read by it alone (embeddings and a tied output head stay dense),
in graph order while the calibration data streams through the model, so each layer's input
statistics already include the pruning of the layers before it (as Wanda and SparseGPT do).
Each pruned weight is stored (``storage``) and ``decide`` says whether its sparse kernel is
faster than the dense one at the compiled sizes. Before and after, for a weight stored sparse::

    %y = linear(%x, @model.layers.0.mlp.up_proj.weight)
    ->
    %y = linear_nm(%x, @model.layers.0.mlp.up_proj.weight.values, @....index, n=2, m=4, k=576, kernel=sparse)

With a low-bit ``grid`` (``--quant w4g128`` with an N:M pattern) the kept values of each pruned
weight are quantized with the mask held fixed and stored with the indices (``storage``)::

    %y = linear_nm_q(%x, @....words, @....scale, @....minimum, @....index, n=2, m=4, k=576, bits=4, group=128,
                     kernel=sparse)

Those nodes read no plain weight, so the quantization pass that follows leaves them alone and
quantizes the rest (embedding, head, and layers not applied under ``speed``, which keep their
unpruned weights and become plain dense packed weights).

Invariant: the graph computes with exactly the pruned weights the records describe (a layer
not applied under ``--sparsity-for speed`` is left as it was); the interpreter is the oracle.
Each record holds the layer's storage, density, bytes, error (relative output error on its
calibration inputs, or relative weight error without data) and the decision with its times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmc.ir.graph import Graph, Node
from llmc.ir.meta import QuantSpec, SparsitySpec
from llmc.ir.packing import Grid
from llmc.passes.sparsity import prune
from llmc.passes.sparsity.decide import Decision, Measure, decide
from llmc.passes.sparsity.options import SparsityOptions, check_request, check_shapes
from llmc.passes.sparsity.storage import Stored, expanded, format_name, store

__all__ = ["LayerRecord", "SparsityOptions", "candidates", "check_graph", "check_request", "sparsify"]

ERROR_ROWS = 2048  # calibration rows the output error is measured on


@dataclass
class LayerRecord:
    weight: str
    origin: str
    layer: int | None
    shape: list[int]
    storage: str
    density: float
    bytes: int
    float_bytes: int
    error: float
    metric: str
    decision: Decision
    format: str | None = None  # the kept values' low-bit format (sparse + quantized), else float

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "decision"}
        return {**out, **self.decision.to_json()}


def candidates(graph: Graph) -> list[Node]:
    """The linears that may be pruned: inside a block, a 2-D constant weight no other node reads."""
    return [node for node in graph.nodes if node.op == "linear" and node.meta.layer is not None
            and node.inputs[1].is_const and node.inputs[1].type.rank == 2 and len(node.inputs[1].uses) == 1]


def check_graph(graph: Graph, options: SparsityOptions) -> None:
    """Refuse a pattern some pruned weight cannot take (before any calibration)."""
    check_shapes(options, {n.name: (*n.inputs[1].type.shape, n.meta.origin or n.name) for n in candidates(graph)})


def sparsify(graph: Graph, options: SparsityOptions, calibration=None, *, target: str = "reference",
             sizes: dict[str, int] | None = None, device=None, measure: Measure | None = None,
             grid: Grid | None = None,
             progress: Callable[[str], None] | None = None) -> tuple[Graph, list[LayerRecord]]:
    """Prune and store ``graph``'s linears in place, their kept values quantized to ``grid`` if
    given (see the module docstring); one record per weight."""
    step = progress or (lambda line: None)
    nodes = candidates(graph)
    check_graph(graph, options)
    sizes = dict(sizes or {"call": 1})
    norms = _input_norms(graph, nodes, calibration) if options.scope == "global" and calibration is not None else {}
    densities = _densities(nodes, options, norms)
    chosen: dict[str, tuple[Stored, Decision, float, str]] = {}

    def visit(node: Node, x: np.ndarray | None) -> np.ndarray | None:
        w = np.asarray(node.inputs[1].const.numpy(), np.float32)
        pruned = _prune(w, x, densities[node.name], options)
        stored = store(pruned, options.pattern, grid)
        decision = decide(stored, target, sizes, device, options.goal, measure)
        result = expanded(stored)
        error, metric = _error(w, result, x)
        chosen[node.name] = (stored, decision, error, metric)
        step(f"pruned {node.meta.origin or node.name} to density {stored.density:.3f} ({stored.label()}): "
             f"error {error:.2e}; {decision.reason}")
        return result if decision.kernel is not None else None

    if calibration is not None:
        from llmc.passes.quantize.calibration import stream

        def hook(node, args):
            result = visit(node, args[0])
            return None if result is None else [args[0], result, *args[2:]]

        stream(graph, calibration, nodes, hook)
    for node in nodes:
        if node.name not in chosen:  # no calibration (magnitude), or a layer the data never reached
            visit(node, None)
    records = [_rewrite(graph, node, options, *chosen[node.name]) for node in nodes]
    graph.remove_unused_constants()
    graph.verify()
    return graph, records


def _prune(w: np.ndarray, x: np.ndarray | None, density: float, options: SparsityOptions) -> np.ndarray:
    if density >= 1.0:
        return w
    if options.method == "magnitude" or x is None:
        return prune.magnitude(w, density, options.pattern)
    rows = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    if options.method == "wanda":
        return prune.wanda(w, np.sqrt((rows**2).sum(0)), density, options.pattern)
    return prune.sparsegpt(w, rows.T @ rows / len(rows), density, options.pattern)


def _densities(nodes: list[Node], options: SparsityOptions, norms: dict[str, np.ndarray]) -> dict[str, float]:
    if options.scope == "layer":
        return {node.name: options.density for node in nodes}
    scores = {}
    for node in nodes:
        w = np.abs(np.asarray(node.inputs[1].const.numpy(), np.float32))
        scores[node.name] = w * norms[node.name][None, :] if node.name in norms and options.method != "magnitude" else w
    return prune.global_densities(scores, options.density)


def _input_norms(graph: Graph, nodes: list[Node], calibration) -> dict[str, np.ndarray]:
    """Each linear's input-feature L2 norms on the calibration data (the unpruned model's)."""
    from llmc.passes.quantize.calibration import stream

    norms = {}

    def hook(node, args):
        rows = np.asarray(args[0], np.float64).reshape(-1, args[0].shape[-1])
        norms[node.name] = np.sqrt((rows**2).sum(0)).astype(np.float32)

    stream(graph, calibration, nodes, hook)
    return norms


def _error(w: np.ndarray, pruned: np.ndarray, x: np.ndarray | None) -> tuple[float, str]:
    if x is None:
        return float(np.linalg.norm(w - pruned) / max(np.linalg.norm(w), 1e-30)), "weight"
    rows = x.reshape(-1, x.shape[-1])
    rows = rows[:: max(1, len(rows) // ERROR_ROWS)].astype(np.float32)
    exact = rows @ w.T
    return float(np.linalg.norm(rows @ (w - pruned).T) / max(np.linalg.norm(exact), 1e-30)), "output"


def _rewrite(graph: Graph, node: Node, options: SparsityOptions, stored: Stored, decision: Decision, error: float,
             metric: str) -> LayerRecord:
    weight = node.inputs[1]
    n, k = stored.shape
    fmt = None if stored.grid is None else format_name(stored.grid)
    record = LayerRecord(weight.name, node.meta.origin or node.name, node.meta.layer, [n, k], stored.label(),
                         stored.density, stored.nbytes if decision.kernel else stored.dense_nbytes, n * k * 4, error,
                         metric, decision, fmt)
    if decision.kernel is None:
        return record
    meta = node.meta.copy(sparsity=SparsitySpec(options.pattern, max(stored.density, 1e-9)))
    if stored.grid is not None:
        g = stored.grid
        meta = meta.copy(quant=QuantSpec(bits=g.bits, group=g.group, axis=-1, sym=g.sym, scheme="rtn"))
    consts = [graph.add_const(f"{weight.name}.{key}", t) for key, t in stored.tensors.items()]
    bias = node.inputs[2:]
    if stored.op == "linear_csr":
        y = graph.call("linear_csr", node.inputs[0], *consts, before=node, meta=meta, **stored.attrs)
        if bias:
            y = graph.call("add", y, bias[0], before=node, meta=node.meta.copy())
    else:
        y = graph.call(stored.op, node.inputs[0], *consts, *bias, before=node, meta=meta, kernel=decision.kernel,
                       **stored.attrs)
    graph.replace_uses(node.output, y)
    graph.remove_nodes([node])
    return record
