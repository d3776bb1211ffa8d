"""The roofline cost model: each kernel's time on a device from the op registry's flops and bytes.

A kernel takes ``max(flops / rate, bytes / bandwidth) + launch`` (``rate``: the device's matrix
peak in the kernel's dtype for products, convolutions and attention, its vector rate otherwise).
Which IR nodes are kernels follows what the TVM lowering builds:

- a ``reshape`` (a ``shape`` op that moves no bytes) is a view, not a kernel
  (``RewriteDataflowReshape``);
- a node computed from constants only is weight preparation: the weight transform runs it
  once at load time (``LiftTransformParams``), so a call does not pay for it;
- a ``dequantize_packed`` is lowered into the products that read it: the product reads the
  packed words, scales and mins instead of a float matrix, and the dequantize is no kernel;
- a ``fused`` node is one kernel whose bytes are its inputs and outputs only.

Symbolic dims are bound by ``sizes``. A generation step graph (symbols ``seq`` and ``ctx``) is
estimated twice: one decode step at context ``ctx`` (tokens per second) and a prefill of ``seq``
prompt tokens (latency). ``cost_section`` is the JSON a manifest stores; ``cost_tables`` lays it
out for ``llmc inspect`` and report.md; ``report_plot`` draws it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llmc.codegen.devices import Device
from llmc.codegen.report import Concrete, Table, count
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph, Node, Value
from llmc.ir.ops.registry import substitute
from llmc.ir.types import TensorType

MATRIX_KINDS = ("matmul", "conv", "attention")
DECODE_CONTEXT = 512  # context of the decode step estimated when ``ctx`` is not given
PREFILL_TOKENS = 128  # prompt length of the prefill estimated when ``seq`` is not given
PLOT = "cost.png"  # the picture beside an artifact's report.md


@dataclass(frozen=True)
class KernelTime:
    """One kernel's predicted time (seconds) and the work it was predicted from."""

    name: str
    op: str
    layer: int | None
    flops: float
    bytes: float
    compute: float
    memory: float
    launch: float

    @property
    def time(self) -> float:
        return max(self.compute, self.memory) + self.launch

    @property
    def bound(self) -> str:
        return "compute" if self.compute >= self.memory else "memory"


def roofline(device: Device, flops: float, moved: float, dtype: DType, *, matrix: bool) -> tuple[float, float]:
    """(compute seconds, memory seconds) of ``flops`` operations over ``moved`` bytes."""
    return flops / device.rate(dtype, matrix), moved / device.bandwidth


# -- which nodes are kernels, and what each costs ---------------------------------------------


def is_view(node: Node) -> bool:
    """A shape op that moves no bytes (``reshape``): TVM makes it a view of its input."""
    if node.opdef.kind != "shape":
        return False
    zero = TensorType(DType.f32, ())
    return S.same(node.opdef.cost([zero] * len(node.inputs), [zero] * len(node.outputs), node.attrs).bytes, 0)


def load_time(graph: Graph) -> set[int]:
    """ids of the nodes computed from constants only (weight preparation, run once at load)."""
    out: set[int] = set()
    for node in graph.nodes:
        if all(v.is_const or (v.producer is not None and id(v.producer) in out) for v in node.inputs):
            out.add(id(node))
    return out


def kernels(graph: Graph) -> list[Node]:
    """The nodes that are kernels of one call, in graph order (see the module docstring)."""
    prepared = load_time(graph)
    return [n for n in graph.nodes if id(n) not in prepared and not is_view(n)]


class Sizes(Concrete):
    """Tensor types and costs with every symbol bound (symbols ``env`` does not name count as 1)."""

    def nbytes(self, v: Value) -> float:
        return float(self(v.type).nbytes())

    def cost(self, node: Node) -> tuple[float, float]:
        """(flops, bytes) of ``node`` from its registry cost; a product reading a
        ``dequantize_packed`` weight reads the packed tensors instead of the float matrix."""
        cost = node.opdef.cost([self(v.type) for v in node.inputs], [self(v.type) for v in node.outputs],
                               substitute(node.attrs, self.env))
        moved = self.number(cost.bytes)
        if node.opdef.kind in MATRIX_KINDS:
            for v in node.inputs:
                source = v.producer
                if source is not None and source.op == "dequantize_packed":
                    moved += sum(self.nbytes(p) for p in source.inputs) - self.nbytes(v)
        return self.number(cost.flops), moved


def _dtype(node: Node) -> DType:
    return DType.i8 if node.op == "linear_w8a8" else node.outputs[0].type.dtype


def _is_matrix(node: Node) -> bool:
    if node.op == "fused":
        return any(_is_matrix(n) for n in node.attrs["body"].nodes)
    return node.opdef.kind in MATRIX_KINDS


def node_times(graph: Graph, device: Device, sizes: Mapping[str, int]) -> list[KernelTime]:
    """Every kernel of one call of ``graph`` at ``sizes``, with its predicted time on ``device``."""
    bound = Sizes(sizes)
    out = []
    for node in kernels(graph):
        flops, moved = bound.cost(node)
        compute, memory = roofline(device, flops, moved, _dtype(node), matrix=_is_matrix(node))
        out.append(KernelTime(node.name, node.op, node.meta.layer, flops, moved, compute, memory, device.launch))
    return out


def group_time(graph: Graph, nodes: Iterable[Node], device: Device, sizes: Mapping[str, int],
               *, launches: int = 1) -> KernelTime:
    """``nodes`` computed as one kernel (as a ``fused`` node of them would be): their flops, and
    their bytes less what stays inside (a value written and read within the group moves nothing;
    views are followed to the values they alias). ``launches``: how many calls the kernel takes."""
    members = [n for n in nodes if not is_view(n)]
    inside = {id(n) for n in nodes}
    bound = Sizes(sizes)
    flops = moved = 0.0
    for node in members:
        f, b = bound.cost(node)
        flops, moved = flops + f, moved + b
    outputs = {id(v) for v in graph.outputs}
    for node in members:
        for v in node.outputs:
            readers, escapes = _readers(v, inside, outputs)
            moved -= bound.nbytes(v) * (readers + (0 if escapes else 1))
    matrix = any(_is_matrix(n) for n in members)
    first = members[0] if members else next(iter(nodes))
    compute, memory = roofline(device, flops, max(moved, 0.0), _dtype(first), matrix=matrix)
    return KernelTime(first.name, "+".join(sorted({n.op for n in members})), first.meta.layer, flops,
                      max(moved, 0.0), compute, memory, launches * device.launch)


def _readers(v: Value, inside: set[int], outputs: set[int]) -> tuple[int, bool]:
    """(reads of ``v`` by non-view nodes of the group, through views; whether ``v`` is needed outside it)."""
    reads, escapes = 0, id(v) in outputs
    for user in v.users:
        if id(user) not in inside:
            escapes = True
        elif is_view(user):
            more, out = _readers(user.outputs[0], inside, outputs)
            reads, escapes = reads + more, escapes or out
        else:
            reads += sum(1 for x in user.inputs if x is v)
    return reads, escapes


# -- phases: what one call, one decode step and one prefill cost ------------------------------


def is_generation(graph: Graph) -> bool:
    """A generation step graph (``llmc.frontend.decoder``): symbols ``seq`` and ``ctx``."""
    return {"seq", "ctx"} <= set(graph.symbols())


def phases(graph: Graph, sizes: Mapping[str, int] | None = None) -> dict[str, dict[str, int]]:
    """The sizes each estimate binds. A generation graph: ``decode`` (``seq=1`` at ``ctx``, default
    512) and ``prefill`` (``seq`` prompt tokens, default 128, from an empty cache); any other
    graph: one ``call`` with the given sizes (1 for symbols not given)."""
    sizes = dict(sizes or {})
    symbols = graph.symbols()
    base = {s: int(sizes.get(s, 1)) for s in symbols}
    if not is_generation(graph):
        return {"call": base}
    tokens = int(sizes.get("seq", PREFILL_TOKENS))
    context = int(sizes.get("ctx", DECODE_CONTEXT))
    return {"decode": {**base, "seq": 1, "ctx": context}, "prefill": {**base, "seq": tokens, "ctx": tokens}}


def graph_time(graph: Graph, device: Device, sizes: Mapping[str, int]) -> float:
    """Predicted seconds of one call of ``graph`` at ``sizes``."""
    return sum(k.time for k in node_times(graph, device, sizes))


def cost_section(graph: Graph, device: Device, sizes: Mapping[str, int] | None = None, *,
                 nodes: bool = False, plot: str | None = None) -> dict:
    """The cost model's facts, JSON-ready: the device, then per phase (``call``, or ``decode`` and
    ``prefill``) its sizes, time, kernels, per-layer and per-op rows (and every kernel with
    ``nodes``); generation graphs add ``decode_tokens_per_s`` and ``prefill_latency_s``.
    ``plot``: the file name of the picture drawn beside it (``report_plot``), recorded for report.md."""
    section: dict = {"device": device.to_json(), "phases": {}}
    for phase, env in phases(graph, sizes).items():
        times = node_times(graph, device, env)
        facts = {"sizes": env, "time_s": sum(k.time for k in times), "kernels": len(times),
                 "flops": sum(k.flops for k in times), "bytes": sum(k.bytes for k in times),
                 "layers": sorted(_rows(times, lambda k: k.layer), key=lambda r: (r["key"] is None, r["key"] or 0)),
                 "ops": sorted(_rows(times, lambda k: k.op), key=lambda r: -r["time_s"])}
        if nodes:
            facts["nodes"] = [{"name": k.name, "op": k.op, "layer": k.layer, "flops": k.flops, "bytes": k.bytes,
                               "time_s": k.time, "bound": k.bound} for k in times]
        section["phases"][phase] = facts
    if "decode" in section["phases"]:
        decode, prefill = section["phases"]["decode"], section["phases"]["prefill"]
        section["decode_tokens_per_s"] = decode["sizes"].get("batch", 1) / decode["time_s"]
        section["prefill_latency_s"] = prefill["time_s"]
    if plot:
        section["plot"] = plot
    return section


def _rows(times: list[KernelTime], key) -> list[dict]:
    """Kernels grouped by ``key``: time split into compute-bound, memory-bound and launch seconds."""
    rows: dict = {}
    for k in times:
        row = rows.setdefault(key(k), {"key": key(k), "kernels": 0, "flops": 0.0, "bytes": 0.0,
                                       "compute_bound_s": 0.0, "memory_bound_s": 0.0, "launch_s": 0.0})
        row["kernels"] += 1
        row["flops"] += k.flops
        row["bytes"] += k.bytes
        row[f"{k.bound}_bound_s"] += k.time - k.launch
        row["launch_s"] += k.launch
    for row in rows.values():
        row["time_s"] = row["compute_bound_s"] + row["memory_bound_s"] + row["launch_s"]
    return list(rows.values())


# -- tables and picture ------------------------------------------------------------------------


def cost_tables(section: dict) -> list[Table]:
    """Summary, then per phase the per-layer and per-op tables of a ``cost_section``."""
    device = section["device"]
    summary = [["device", f"{device['name']}: {device['description']}"], ["source", device["source"]],
               ["peak", ", ".join(f"{k} {count(v)}FLOP/s" for k, v in device["peak"].items())],
               ["bandwidth", f"{device['bandwidth'] / 1e9:.1f} GB/s"], ["launch", _seconds(device["launch"])]]
    if "decode_tokens_per_s" in section:
        decode, prefill = section["phases"]["decode"], section["phases"]["prefill"]
        summary += [["decode", f"{section['decode_tokens_per_s']:.1f} tokens/s (ctx={decode['sizes']['ctx']})"],
                    ["prefill", f"{_seconds(section['prefill_latency_s'])} for {prefill['sizes']['seq']} tokens"]]
    for phase, facts in section["phases"].items():
        sizes = ", ".join(f"{k}={v}" for k, v in facts["sizes"].items()) or "static shapes"
        summary.append([phase, f"{_seconds(facts['time_s'])}, {facts['kernels']} kernels ({sizes})"])
    tables = [Table("predicted time (roofline)", ["", ""], summary)]
    columns = ["time", "compute-bound", "memory-bound", "launch", "kernels", "bound"]
    for phase, facts in section["phases"].items():
        for what, title in (("layers", "layer"), ("ops", "op")):
            rows = [["-" if r["key"] is None else str(r["key"]), *_split(r)] for r in facts[what]]
            tables.append(Table(f"{phase}: predicted time per {title}", [title, *columns], rows))
    return tables


def _split(row: dict) -> list[str]:
    bound = "compute" if row["compute_bound_s"] > row["memory_bound_s"] else "memory"
    return [_seconds(row["time_s"]), _seconds(row["compute_bound_s"]), _seconds(row["memory_bound_s"]),
            _seconds(row["launch_s"]), str(row["kernels"]), bound]


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e9:.0f} ns"


def artifact_section(graph: Graph, target: str, options: Mapping, sizes: Mapping[str, int] | None,
                     folder: Path) -> dict | None:
    """The manifest's ``cost`` section of an artifact, on the target's device (``devices.for_target``:
    this machine for cpu, the ``arch``'s GPU for cuda), with ``cost.png`` written into ``folder``
    (when matplotlib is installed). None for targets llmc has no device spec for."""
    from llmc.codegen.devices import for_target
    from llmc.codegen.report import plot_cost

    device = for_target(target, dict(options))
    if device is None:
        return None
    section = cost_section(graph, device, sizes)
    if plot_cost(section, Path(folder) / PLOT):
        section["plot"] = PLOT
    return section


def report_plot(graph: Graph, device: Device, sizes: Mapping[str, int] | None, path: Path) -> bool:
    """Write ``path`` (PNG): predicted time per layer, stacked compute-bound / memory-bound /
    launch, one panel per phase. False (nothing written) without matplotlib."""
    from llmc.codegen.report import plot_cost

    return plot_cost(cost_section(graph, device, sizes), Path(path))

