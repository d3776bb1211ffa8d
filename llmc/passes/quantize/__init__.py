"""Weight quantization: a recipe's formats applied to a graph's weights, with the error they cost.

``quantize(graph, recipe, calibration)`` chooses each weight's format (``formats``), optionally
migrates activation outliers into the weights first (AWQ scale search, SmoothQuant for W8A8:
``scaling``), rounds each weight (round-to-nearest or GPTQ with the Hessian of its calibration
inputs) and rewrites the graph. Invariant: every quantized weight becomes a
``dequantize_packed`` node over its packed codes (``llmc.ir.packing``) and the interpreter, which
runs that node exactly, is the oracle of the quantized model; a ``float`` weight is untouched.
The layer table (format, method, error, bytes) goes into the manifest. A format with outliers
(``w3g128+o0.005``) stores its weight as codes plus a float16 CSR matrix (``outliers``); the
``mixed`` allocation (``allocate``, run by ``apply.quantize_for``) fills in each layer's
sensitivity and predicted time.

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
from llmc.ir.tensor import Spill, Weight
from llmc.passes.quantize.calibration import BUILTIN, Calibration, ancestors, load_calibration, stream
from llmc.passes.quantize.formats import NAMED, WEIGHT_SLOT, Format, Recipe, check_recipe
from llmc.passes.quantize.outliers import Split, add_outliers, split, takes_outliers

KEPT = "stored"  # the method of a weight whose file storage already was its format (GGUF Q4_1 as w4g32)

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
    outliers: float = 0.0  # fraction of the weights kept in float16 (CSR)
    sensitivity: float | None = None  # the mixed allocation's measure of this format (``sensitivity``)
    time_s: float | None = None  # predicted decode-step time of the layer's product(s) (roofline)
    sparsity: str | None = None  # left for the sparsity pass: pattern and density

    def to_json(self) -> dict:
        return asdict(self)


def quantize(graph: Graph, recipe: Recipe, calibration: Calibration | None = None, *,
             target_formats: set[str] | None = None, target: str = "",
             progress: Callable[[str], None] | None = None) -> tuple[Graph, list[LayerRecord]]:
    """Quantize ``graph`` in place by ``recipe``; returns it and one record per quantized weight."""
    chosen = check_recipe(graph, recipe, target_formats, target)
    weights = _weights(graph, chosen)
    static = any(f.static for f, _ in weights.values())
    needs = recipe.method if recipe.method != "rtn" else "w8a8s" if static else None
    if needs and calibration is None:
        raise LLMCError(f"{needs} needs calibration data", hint="add --calibration builtin (or a .txt/.npz file)")
    step = progress or (lambda line: None)
    if recipe.reorder:
        from llmc.passes.quantize.outliers import reorder

        moved = reorder(graph, {name: fmt for name, (fmt, _) in weights.items()})
        step(f"grouped outlier channels of {sum(r['reordered'] for r in moved)} of {len(moved)} linear groups")
        weights = _weights(graph, check_recipe(graph, recipe, target_formats, target))
    no_scale: dict[str, str] = {}  # AWQ asked for, no op to fold its scales into -> why
    if calibration is not None and (recipe.awq or any(f.act8 for f, _ in weights.values())):
        from llmc.passes.quantize.scaling import migrate, unscaled

        formats = {name: fmt for name, (fmt, _) in weights.items()}
        no_scale = unscaled(graph, formats) if recipe.awq else {}
        if no_scale:
            step(f"AWQ: {len(no_scale)} linear weights have no op to fold scales into (e.g. "
                 f"{next(iter(no_scale.values()))}); they are rounded without scales")
        step("searching activation scales")
        migrate(graph, calibration, formats, awq=recipe.awq)
        weights = _weights(graph, check_recipe(graph, recipe, target_formats, target))
    act_absmax: dict[str, float] = {}  # W8A8 linears: max |input| on the calibration data (static scales)
    records: dict[str, LayerRecord] = {}
    packed: dict[str, Packed | Spilled | Split | np.ndarray] = {}
    with_stats = calibration is not None
    spill = Spill() if with_stats else None  # the packed weights wait on disk, not in memory, until the rewrite
    hooked = [node for _, node in weights.values()] if with_stats else []
    runs = ancestors(graph, {id(node) for node in hooked})  # the nodes calibration executes (others are only hooked)

    shared: dict[str, np.ndarray] = {}  # the Hessian of the input the last linear read (q, k, v read one input)

    def hessian(node: Node, x: np.ndarray) -> np.ndarray:
        name = node.inputs[0].name
        if name not in shared:
            from llmc.passes.quantize.gptq import HessianAccumulator

            shared.clear()  # before the next one is built: a 5632-wide input's is 254 MB
            acc = HessianAccumulator()
            acc.add(x)
            shared[name] = acc.value
        return shared[name]

    def hook(node: Node, args: list[np.ndarray]):
        slot = WEIGHT_SLOT[node.op]
        value = node.inputs[slot]
        fmt = weights[value.name][0]
        x = args[0] if node.op == "linear" else None
        if x is not None and fmt.act8:
            act_absmax[value.name] = float(np.abs(x).max())
        h = None if x is None else hessian(node, x)
        method = recipe.method
        if value.name in no_scale:  # AWQ had nothing to fold into: rounded as without it
            method = "gptq" if method.endswith("gptq") else "rtn"
        result, record = _round(value, fmt, method, x, node, args[slot], h)
        step(f"quantized {record.origin} ({record.format}, {record.method}): error {record.error:.2e}")
        records[value.name] = record
        if id(node) in runs:  # later layers see this layer's quantized output
            args = list(args)
            args[slot] = result.astype(np.float32) if isinstance(result, np.ndarray) else result.dequantize()
        packed[value.name] = _spilled(result, spill) if isinstance(result, Packed) else result
        return args

    start = time.perf_counter()
    if with_stats:
        stream(graph, calibration, hooked, hook)
        shared.clear()
    for name, (fmt, node) in weights.items():
        if name not in packed:  # no calibration, or a weight the calibration never reached
            result, record = _round(graph.constants[name], fmt, "rtn" if fmt.grid is not None else "cast", None, node)
            packed[name], records[name] = result, record
    for name, (fmt, node) in weights.items():
        _rewrite(graph, graph.constants[name], fmt, packed[name], records[name].method, act_absmax.get(name, 0.0))
    graph.remove_unused_constants()
    graph.verify()
    step(f"quantized {len(records)} weights in {time.perf_counter() - start:.1f} s")
    return graph, list(records.values())


@dataclass(frozen=True)
class Spilled:
    """A packed weight kept in a ``Spill`` file: its tensors, read back when the artifact is written."""

    words: Weight
    scale: Weight
    minimum: Weight | None
    k: int


def _spilled(result: Packed, spill: Spill) -> Spilled:
    return Spilled(spill.put(result.words), spill.put(result.scale),
                   None if result.minimum is None else spill.put(result.minimum), result.k)


def _weights(graph: Graph, chosen: dict[str, Format]) -> dict[str, tuple[Format, Node]]:
    """Weight constant -> (its format, the node that decides it): a ``linear`` reader over an embedding.
    Outliers are dropped where a reader is not a linear (``outliers.takes_outliers``)."""
    out: dict[str, tuple[Format, Node]] = {}
    for node in graph.nodes:
        if node.name not in chosen:
            continue
        value = node.inputs[WEIGHT_SLOT[node.op]]
        if value.name not in out or (node.op == "linear" and out[value.name][1].op != "linear"):
            out[value.name] = (chosen[node.name], node)
    for name, (fmt, node) in out.items():
        if fmt.outliers and not takes_outliers(graph.constants[name]):
            out[name] = (fmt.with_outliers(0.0), node)
    return out


def _round(value: Value, fmt: Format, method: str, x: np.ndarray | None, node: Node,
           w: np.ndarray | None = None, hessian: np.ndarray | None = None):
    """Round one weight (``w``: its array as calibration already read it, so not read twice; ``hessian``:
    mean ``x x^T`` of its calibration inputs ``x``); returns the packed result (or float16 array) and its record."""
    w = np.asarray(value.const.numpy() if w is None else w, np.float32)
    float_bytes = w.size * 4
    origin = node.meta.origin or node.name
    if fmt.grid is None:
        half = w.astype(np.float16)
        err = float(np.linalg.norm(half.astype(np.float32) - w) / max(np.linalg.norm(w), 1e-30))
        return half, LayerRecord(value.name, origin, node.meta.layer, fmt.name, "cast", err, "weight", half.nbytes,
                                 float_bytes)
    if fmt.outliers:
        return _round_split(w, fmt, method, hessian, LayerRecord(value.name, origin, node.meta.layer, fmt.name, method,
                                                           0.0, "weight", 0, float_bytes, fmt.outliers))
    kept = _stored(value, fmt, method)
    if x is None:
        result = kept or rtn(w, fmt.grid)
        err = result.error(w)
        method = KEPT if kept else "rtn"
        return result, LayerRecord(value.name, origin, node.meta.layer, fmt.name, method, err, "weight", result.nbytes,
                                   float_bytes)
    from llmc.passes.quantize.gptq import gptq, output_error

    result = gptq(w, hessian, fmt.grid) if method.endswith("gptq") else kept or rtn(w, fmt.grid)
    if fmt.act8:  # the integer linear's own error: activations rounded too
        from llmc.ir.ops.quant import LinearW8A8

        rows = x.reshape(-1, x.shape[-1])[:: max(1, x.size // x.shape[-1] // 4096)]
        exact = rows @ w.T
        static = float(np.abs(x).max()) / 127.0 if fmt.static else 0.0
        got = LinearW8A8.reference([rows, result.words, result.scale], {"k": result.k, "act_scale": static})
        err = float(np.linalg.norm(got - exact) / max(np.linalg.norm(exact), 1e-30))
        return result, LayerRecord(value.name, origin, node.meta.layer, fmt.name, "smoothquant", err, "output",
                                   result.nbytes, float_bytes)
    err = float(np.sqrt(max(output_error(w, result, hessian), 0.0)))
    name = KEPT if kept is not None and result is kept else method
    return result, LayerRecord(value.name, origin, node.meta.layer, fmt.name, name, err, "output", result.nbytes,
                               float_bytes)


def _round_split(w: np.ndarray, fmt: Format, method: str, hessian: np.ndarray | None, record: LayerRecord):
    """Codes plus float16 outliers (``outliers.split``), rounded by RTN or, with calibration, GPTQ."""
    from llmc.passes.quantize.gptq import gptq, output_error

    use_gptq = hessian is not None and method.endswith("gptq")

    def rounding(dense):
        return gptq(dense, hessian, fmt.grid) if use_gptq else rtn(dense, fmt.grid)

    result = split(w, fmt.grid, fmt.outliers, None if hessian is None else np.diag(hessian), rounding)
    approx = result.dequantize()
    if hessian is None:
        record.error = float(np.linalg.norm(approx - w) / max(np.linalg.norm(w), 1e-30))
    else:
        record.error, record.metric = float(np.sqrt(max(output_error(w, approx, hessian), 0.0))), "output"
    record.method, record.bytes = ("gptq" if use_gptq else "rtn"), result.nbytes
    return result, record


def _stored(value: Value, fmt: Format, method: str) -> Packed | None:
    """The weight's own packed storage when it already is ``fmt``'s grid (a GGUF Q4_1 tensor for
    ``w4g32``): kept as stored, not requantized from its dequantized values. Only RTN keeps it."""
    keep = getattr(value.const, "packed", None)
    return keep(fmt.grid) if keep is not None and method == "rtn" and not fmt.act8 else None


def _rewrite(graph: Graph, value: Value, fmt: Format, result, method: str, act_absmax: float) -> None:
    """Point every reader of ``value`` at its quantized form: a ``linear_w8a8`` replaces a W8A8 linear;
    other readers read a ``dequantize_packed`` node (or a float16 ``cast``)."""
    first = min((user for user, _ in value.uses), key=graph.nodes.index)
    outliers = result if isinstance(result, Split) else None
    result = outliers.packed if outliers is not None else result
    if not isinstance(result, (Packed, Spilled)):
        half = graph.add_const(f"{value.name}.f16", result)
        new = graph.call("cast", half, dtype=value.type.dtype, before=first,
                         meta=first.meta.copy(quant=QuantSpec(bits=16, scheme="rtn")))
        for user, slot in list(value.uses):
            user.set_input(slot, new)
        return
    inputs = [graph.add_const(f"{value.name}.qweight", result.words),
              graph.add_const(f"{value.name}.scales", result.scale)]
    if result.minimum is not None:
        inputs.append(graph.add_const(f"{value.name}.mins", result.minimum))
    spec = QuantSpec(bits=fmt.grid.bits, group=fmt.grid.group, axis=-1, sym=fmt.grid.sym,
                     scheme="rtn" if method == KEPT else method.split("+")[-1])
    for user, slot in list(value.uses):
        if fmt.act8 and user.op == "linear" and slot == 1:
            _integer_linear(graph, user, inputs, result.k, fmt, act_absmax, spec)
    if value.uses:
        new = graph.call("dequantize_packed", *inputs, bits=fmt.grid.bits, group=fmt.grid.group, k=result.k,
                         before=first, meta=first.meta.copy(quant=spec))
        for user, slot in list(value.uses):
            user.set_input(slot, new)
        if outliers is not None:
            add_outliers(graph, value, outliers, new)


def _integer_linear(graph: Graph, node: Node, inputs: list[Value], k: int, fmt: Format, act_absmax: float,
                    spec: QuantSpec) -> None:
    """Replace ``linear(x, W, b?)`` by ``linear_w8a8(x, words, scales) (+ b)``: per-token activation
    scales, or one static scale from calibration (``w8a8s``)."""
    static = act_absmax / 127.0 if fmt.static else 0.0
    y = graph.call("linear_w8a8", node.inputs[0], *inputs[:2], k=k, act_scale=static, before=node,
                   meta=node.meta.copy(quant=spec))
    if len(node.inputs) == 3:
        y = graph.call("add", y, node.inputs[2], before=node, meta=node.meta.copy())
    graph.replace_uses(node.output, y)
    graph.remove_nodes([node])
