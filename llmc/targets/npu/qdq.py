"""Quantization for the NPU: static per-tensor activation ranges from calibration, int8 weights,
and the QDQ numerics both the emitted ONNX graphs and llmc's interpreter run.

Every float tensor an NPU node reads or writes is stored as ``q = clip(round(x / s) + z)`` in
the profile's activation format (uint16 for transformer layers, uint8 for CNNs) and read back
as ``(q - z) * s`` (ONNX QuantizeLinear / DequantizeLinear). ``s`` and ``z`` come from the
tensor's range over the calibration data (``llmc.passes.quantize.calibration.stream``), widened
to include 0 so that zero is exact. Weights of ``linear`` / ``conv2d`` are symmetric int8 with
one scale per tensor, or per output channel where the profile allows it (convolutions); their
biases are int32 with scale ``s_x * s_w``; other constants (norm weights) use the activation
format with their own range. Data movement (reshape, transpose, slice) keeps its input's
parameters, so it is exact.

``reference_chunk`` runs an NPU chunk on llmc's reference ops with exactly these roundings:
the oracle the ONNX chunks are checked against, in LSB of each output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from llmc.ir.graph import Graph, Node, Value
from llmc.ir.ops.registry import substitute
from llmc.targets.npu.partition import FLOATS

QMAX = {"uint8": 255, "uint16": 65535}
NP = {"uint8": np.uint8, "uint16": np.uint16, "int8": np.int8, "int32": np.int32}
MOVES = ("reshape", "transpose", "slice")
WEIGHT_SLOT = {"linear": 1, "matmul": 1, "conv2d": 1}
BIAS_SLOT = {"linear": 2, "conv2d": 2}


@dataclass(frozen=True)
class QParams:
    """Scale(s), zero point and storage dtype of one quantized tensor (``axis`` for per-channel)."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None = None

    def quantize(self, x: np.ndarray) -> np.ndarray:
        s, z = self._view(self.scale, x.ndim), self._view(self.zero_point, x.ndim).astype(np.float32)
        info = np.iinfo(NP[self.dtype])
        return np.clip(np.round(x.astype(np.float32) / s) + z, info.min, info.max).astype(NP[self.dtype])

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        s, z = self._view(self.scale, q.ndim), self._view(self.zero_point, q.ndim)
        return ((q.astype(np.float32) - z.astype(np.float32)) * s).astype(np.float32)

    def round_trip(self, x: np.ndarray) -> np.ndarray:
        return self.dequantize(self.quantize(x))

    def _view(self, a: np.ndarray, rank: int) -> np.ndarray:
        if self.axis is None or a.ndim == 0:
            return a
        shape = [1] * rank
        shape[self.axis] = a.shape[0]
        return a.reshape(shape)


def activation_params(lo: float, hi: float, dtype: str) -> QParams:
    """Asymmetric parameters covering [lo, hi] widened to include 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max((hi - lo) / QMAX[dtype], 1e-12)
    zero = int(np.clip(np.round(-lo / scale), 0, QMAX[dtype]))
    return QParams(np.array(scale, np.float32), np.array(zero, NP[dtype]), dtype)


def weight_params(w: np.ndarray, per_channel: bool) -> QParams:
    """Symmetric int8: one scale, or one per output channel (axis 0)."""
    w = w.astype(np.float32)
    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) if per_channel else np.abs(w).max()
    scale = np.maximum(absmax / 127.0, 1e-12).astype(np.float32)
    zero = np.zeros(scale.shape, np.int8)
    return QParams(scale, zero, "int8", 0 if per_channel else None)


def bias_params(x: QParams, w: QParams) -> QParams:
    scale = (x.scale * w.scale).astype(np.float32)
    return QParams(scale, np.zeros(scale.shape, np.int32), "int32", 0 if scale.ndim else None)


class QdqPlan:
    """The quantization parameters of every tensor of the NPU chunks of one graph."""

    def __init__(self, npu_nodes: Iterable[Node], ranges: dict[str, tuple[float, float]], act_dtype: str,
                 per_channel: frozenset[str]):
        self.act_dtype = act_dtype
        self.per_channel = per_channel
        self.act: dict[str, QParams] = {}
        self._consts: dict[tuple[str, str], QParams] = {}
        for node in npu_nodes:  # graph order: a move's input has its parameters before the move
            for v in node.inputs:
                if not v.is_const and v.name not in self.act and v.type.dtype in FLOATS:
                    self.act[v.name] = activation_params(*ranges[v.name], act_dtype)
            for v in node.outputs:
                if node.op in MOVES:
                    self.act[v.name] = self.act[node.inputs[0].name]
                else:
                    self.act[v.name] = activation_params(*ranges[v.name], act_dtype)

    def constant(self, node: Node, slot: int) -> QParams:
        """Parameters of the constant input ``slot`` of NPU ``node``."""
        v = node.inputs[slot]
        key = (v.name, node.name if BIAS_SLOT.get(node.op) == slot else "")
        if key not in self._consts:
            w = np.asarray(v.const.numpy(), np.float32)
            if WEIGHT_SLOT.get(node.op) == slot:
                self._consts[key] = weight_params(w, node.op in self.per_channel)
            elif BIAS_SLOT.get(node.op) == slot:
                self._consts[key] = bias_params(self.act[node.inputs[0].name], self.constant(node, WEIGHT_SLOT[node.op]))
            else:
                self._consts[key] = activation_params(w.min(), w.max(), self.act_dtype)
        return self._consts[key]

    def to_json(self) -> dict:
        return {"activations": self.act_dtype, "weights": "int8 symmetric",
                "per_channel": sorted(self.per_channel), "tensors": len(self.act)}


def calibrate_ranges(graph: Graph, calibration, names: set[str]) -> dict[str, tuple[float, float]]:
    """Min and max of each value in ``names`` over the calibration data, through ``stream``."""
    from llmc.passes.quantize.calibration import stream

    ranges: dict[str, tuple[float, float]] = {}

    def note(v: Value, a: np.ndarray) -> None:
        if v.name in names and a.size:
            lo, hi = float(a.min()), float(a.max())
            old = ranges.get(v.name, (lo, hi))
            ranges[v.name] = (min(lo, old[0]), max(hi, old[1]))

    outputs = {id(v) for v in graph.outputs}

    def hook(node: Node, args: list[np.ndarray]):
        for v, a in zip(node.inputs, args):
            note(v, a)
        if any(id(v) in outputs and v.name in names for v in node.outputs):  # nothing reads it: compute it here
            for v, out in zip(node.outputs, node.opdef.run(args, node.attrs)):
                note(v, np.asarray(out))

    stream(graph, calibration, list(graph.nodes), hook)
    missing = sorted(names - set(ranges))
    if missing:
        from llmc.errors import TargetError

        raise TargetError(f"calibration never reached {len(missing)} NPU tensor(s), e.g. {missing[:3]}")
    return ranges


def reference_chunk(nodes: list[Node], inputs: dict[str, np.ndarray], plan: QdqPlan,
                    env: dict[str, int]) -> dict[str, np.ndarray]:
    """Run an NPU chunk's nodes on llmc's reference ops with the plan's QDQ roundings; every value by name."""
    values = {name: plan.act[name].round_trip(a) if name in plan.act else a for name, a in inputs.items()}
    for node in nodes:
        args = []
        for slot, v in enumerate(node.inputs):
            if v.is_const:
                p = plan.constant(node, slot)
                args.append(p.round_trip(np.asarray(v.const.numpy(), np.float32)))
            else:
                args.append(values[v.name])
        for v, out in zip(node.outputs, node.opdef.run(args, substitute(node.attrs, env))):
            values[v.name] = plan.act[v.name].round_trip(np.asarray(out, np.float32))
    return values
