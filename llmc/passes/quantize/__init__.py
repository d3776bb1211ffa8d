"""Weight quantization: a recipe's formats applied to a graph's weights, with the error they cost.

``quantize(graph, recipe, calibration)`` chooses each weight's format (``formats``), optionally
migrates activation outliers into the weights first (AWQ scale search, SmoothQuant for W8A8:
``scaling``), rounds each weight (round-to-nearest or GPTQ with the Hessian of its calibration
inputs) and rewrites the graph. Invariant: every quantized weight becomes a
``dequantize_packed`` node over its packed codes (``llmc.ir.packing``) and the interpreter, which
runs that node exactly, is the oracle of the quantized model; a ``float`` weight is untouched.
The layer table (format, method, error, bytes) goes into the manifest.

With calibration data the error of a linear layer is measured on its calibration inputs
(relative output error ``||(W - Q) X|| / ||W X||`` through the Hessian); without, it is the
relative weight error ``||W - Q|| / ||W||``. Layers are quantized in graph order while the
calibration data streams through the model, so each layer's statistics already include the
error of the layers before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from llmc.errors import LLMCError
from llmc.ir.graph import Graph, Node, Value
from llmc.ir.meta import QuantSpec
from llmc.ir.packing import Packed
from llmc.ir.packing import quantize as rtn
from llmc.passes.quantize.calibration import BUILTIN, Calibration, load_calibration, stream
from llmc.passes.quantize.formats import NAMED, WEIGHT_SLOT, Format, Recipe, check_recipe

__all__ = ["BUILTIN", "NAMED", "Calibration", "LayerRecord", "Recipe", "load_calibration", "quantize"]


@dataclass
class LayerRecord:
    """One quantized weight: where it is read, its format and method, the error, its bytes before and after."""

    weight: str
    origin: str
    layer: int | None
    format: str
    method: str
    error: float
    metric: str
    bytes: int
    float_bytes: int

    def to_json(self) -> dict:
        return asdict(self)


def quantize(graph: Graph, recipe: Recipe, calibration: Calibration | None = None, *,
             target_formats: set[str] | None = None, target: str = "",
             progress: Callable[[str], None] | None = None) -> tuple[Graph, list[LayerRecord]]:
    """Quantize ``graph`` in place by ``recipe``; returns it and one record per quantized weight."""
    chosen = check_recipe(graph, recipe, target_formats, target)
    if recipe.method in ("gptq", "awq") and calibration is None:
        raise LLMCError(f"{recipe.method} needs calibration data", hint="add --calibration builtin (or a .txt/.npz file)")
    weights = _weights(graph, chosen)
    step = progress or (lambda line: None)
    if recipe.method == "awq" or any(f.act8 for f, _ in weights.values()):
        from llmc.passes.quantize.scaling import migrate

        step("searching activation scales")
        migrate(graph, calibration, {name: fmt for name, (fmt, _) in weights.items()}, awq=recipe.method == "awq")
        weights = _weights(graph, check_recipe(graph, recipe, target_formats, target))
    records: dict[str, LayerRecord] = {}
    packed: dict[str, Packed | np.ndarray] = {}
    with_stats = calibration is not None
    hooked = [node for _, node in weights.values()] if with_stats else []

    def hook(node: Node, args: list[np.ndarray]):
        slot = WEIGHT_SLOT[node.op]
        value = node.inputs[slot]
        fmt = weights[value.name][0]
        x = args[0] if node.op == "linear" else None
        result, record = _round(value, fmt, recipe.method, x, node)
        packed[value.name], records[value.name] = result, record
        args = list(args)
        args[slot] = result.dequantize() if isinstance(result, Packed) else result.astype(np.float32)
        step(f"quantized {record.origin} ({record.format}, {record.method}): error {record.error:.2e}")
        return args

    start = time.perf_counter()
    if with_stats:
        stream(graph, calibration, hooked, hook)
    for name, (fmt, node) in weights.items():
        if name not in packed:  # no calibration, or a weight the calibration never reached
            result, record = _round(graph.constants[name], fmt, "rtn" if fmt.grid is not None else "cast", None, node)
            packed[name], records[name] = result, record
    for name, (fmt, node) in weights.items():
        _rewrite(graph, graph.constants[name], fmt, packed[name], recipe.method if name in packed else "rtn")
    graph.remove_unused_constants()
    graph.verify()
    step(f"quantized {len(records)} weights in {time.perf_counter() - start:.1f} s")
    return graph, list(records.values())


def _weights(graph: Graph, chosen: dict[str, Format]) -> dict[str, tuple[Format, Node]]:
    """Weight constant -> (its format, the node that decides it): a ``linear`` reader over an embedding."""
    out: dict[str, tuple[Format, Node]] = {}
    for node in graph.nodes:
        if node.name not in chosen:
            continue
        value = node.inputs[WEIGHT_SLOT[node.op]]
        if value.name not in out or (node.op == "linear" and out[value.name][1].op != "linear"):
            out[value.name] = (chosen[node.name], node)
    return out


def _round(value: Value, fmt: Format, method: str, x: np.ndarray | None, node: Node):
    """Round one weight; returns the packed result (or float16 array) and its record."""
    w = np.asarray(value.const.numpy(), np.float32)
    float_bytes = w.size * 4
    origin = node.meta.origin or node.name
    if fmt.grid is None:
        half = w.astype(np.float16)
        err = float(np.linalg.norm(half.astype(np.float32) - w) / max(np.linalg.norm(w), 1e-30))
        return half, LayerRecord(value.name, origin, node.meta.layer, fmt.name, "cast", err, "weight", half.nbytes, float_bytes)
    if x is None:
        result = rtn(w, fmt.grid)
        err = float(np.linalg.norm(result.dequantize() - w) / max(np.linalg.norm(w), 1e-30))
        return result, LayerRecord(value.name, origin, node.meta.layer, fmt.name, "rtn", err, "weight", result.nbytes,
                                   float_bytes)
    from llmc.passes.quantize.gptq import HessianAccumulator, gptq, output_error

    acc = HessianAccumulator()
    acc.add(x)
    if method == "gptq":
        result = gptq(w, acc.value, fmt.grid)
    else:
        result = rtn(w, fmt.grid)
    err = output_error(w, result, acc.value)
    return result, LayerRecord(value.name, origin, node.meta.layer, fmt.name, method, float(np.sqrt(max(err, 0.0))),
                               "output", result.nbytes, float_bytes)


def _rewrite(graph: Graph, value: Value, fmt: Format, result, method: str) -> None:
    """Point every reader of ``value`` at its quantized form (a ``dequantize_packed`` or float16 ``cast`` node)."""
    first = min((user for user, _ in value.uses), key=graph.nodes.index)
    if isinstance(result, Packed):
        inputs = [graph.add_const(f"{value.name}.qweight", result.words),
                  graph.add_const(f"{value.name}.scales", result.scale)]
        if result.minimum is not None:
            inputs.append(graph.add_const(f"{value.name}.mins", result.minimum))
        spec = QuantSpec(bits=fmt.grid.bits, group=fmt.grid.group, axis=-1, sym=fmt.grid.sym,
                         scheme="smoothquant" if fmt.act8 else method)
        new = graph.call("dequantize_packed", *inputs, bits=fmt.grid.bits, group=fmt.grid.group, k=result.k,
                         before=first, meta=first.meta.copy(quant=spec))
    else:
        half = graph.add_const(f"{value.name}.f16", result)
        new = graph.call("cast", half, dtype=value.type.dtype, before=first,
                         meta=first.meta.copy(quant=QuantSpec(bits=16, scheme="rtn")))
    for user, slot in list(value.uses):
        user.set_input(slot, new)
