"""ONNX emission of one chunk: static shapes, QDQ around every NPU op, weights in one shared file.

    model = ChunkEmitter(chunk, static, store, plan).build()      # an onnx.ModelProto, opset 23

An NPU chunk is a QDQ graph as ONNX Runtime's QNN execution provider consumes it: each float
tensor is ``DequantizeLinear(QuantizeLinear(x))`` with the plan's parameters (``qdq.QdqPlan``),
weights are int8 initializers read through ``DequantizeLinear`` and biases int32. A CPU chunk is
plain float32 ONNX. Every op has one lowering in ``LOWERINGS`` (small functions over the
emitter's helpers); ONNX value names are llmc's value names, so a chunk's inputs and outputs
are found by name in ``schedule.json``.

Static shapes come from ``Static``: the sizes of the graph's symbols, and for a generation
step the cache length the runner allocates. A generation step's context-dependent ops take two
extra int64 inputs the runner provides: ``slots`` [seq] (the cache row of each token: the KV
write position and the causal limit of each query) and ``last`` [1] (the last real token of a
padded chunk, whose logits the step returns).

Constants go to ``Store``: one external-data file (``chunks/weights.bin``) that every chunk
graph of the artifact points into; a constant read by several graphs (the prefill and decode
variants of a chunk) is written once. Constants under ``INLINE_BYTES`` stay in the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from llmc.ir import shapes as S
from llmc.ir.graph import Node, Value
from llmc.targets.npu.chunker import Chunk
from llmc.targets.npu.lowerings import LOWERINGS
from llmc.targets.npu.partition import NPU
from llmc.targets.npu.qdq import BIAS_SLOT, QdqPlan, QParams

OPSET = 23
INLINE_BYTES = 1024
SLOTS, LAST = "slots", "last"
_ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
              np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.uint16): TensorProto.UINT16,
              np.dtype(np.bool_): TensorProto.BOOL, np.dtype(np.float16): TensorProto.FLOAT16}


@dataclass(frozen=True)
class Static:
    """Sizes that make a chunk static: symbol values, and (generation steps) the cache length."""

    env: dict[str, int] = field(default_factory=dict)
    cache_len: int | None = None

    @property
    def step(self) -> bool:
        return self.cache_len is not None


class Store:
    """The external-data file shared by every chunk graph; each constant is written once (by key)."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.placed: dict[str, tuple[int, int]] = {}

    def tensor(self, key: str, array: np.ndarray, name: str) -> TensorProto:
        array = np.ascontiguousarray(array)
        if key not in self.placed:
            offset = -(-self.file.tell() // 64) * 64
            self.file.seek(offset)
            self.file.write(array.tobytes())
            self.placed[key] = (offset, array.nbytes)
        offset, length = self.placed[key]
        t = TensorProto(name=name, data_type=_ONNX_TYPE[array.dtype], dims=list(array.shape))
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.path.name), ("offset", str(offset)), ("length", str(length))):
            t.external_data.add(key=k, value=v)
        return t

    def close(self) -> int:
        size = self.file.tell()
        self.file.close()
        return size


class ChunkEmitter:
    """Writes one chunk as an ONNX model (see the module docstring)."""

    def __init__(self, chunk: Chunk, static: Static, store: Store, plan: QdqPlan | None, name: str):
        self.chunk, self.static, self.store, self.name = chunk, static, store, name
        self.plan = plan if chunk.device == NPU else None
        self.nodes: list = []
        self.inits: list[TensorProto] = []
        self.names: dict[int, str] = {}
        self.extra_inputs: list[str] = []
        self._count = 0

    # -- helpers the lowerings use -----------------------------------------------------------

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}__{self._count}"

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def const(self, array: np.ndarray, hint: str = "c", key: str | None = None) -> str:
        name = self.fresh(hint)
        array = np.asarray(array)
        if array.nbytes < INLINE_BYTES or key is None:
            self.inits.append(numpy_helper.from_array(array, name))
        else:
            self.inits.append(self.store.tensor(key, array, name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), np.int64), "shape")

    def shape(self, v: Value) -> tuple[int, ...]:
        shape = S.evaluate_shape(v.type.shape, self.static.env)
        if self.static.step and _is_cache(v):
            shape = (*shape[:2], self.static.cache_len, *shape[3:])
        return shape

    def requant(self, name: str, params: QParams | None) -> str:
        """Q then DQ of ``name`` with ``params`` in an NPU chunk (an internal tensor of a lowering); as is elsewhere."""
        if self.plan is None or params is None:
            return name
        return self._qdq(name, params, self.fresh("rq"))

    def params(self, v: Value) -> QParams | None:
        return self.plan.act.get(v.name) if self.plan is not None else None

    def extra(self, name: str) -> str:
        if name not in self.extra_inputs:
            self.extra_inputs.append(name)
        return name

    # -- the chunk --------------------------------------------------------------------------

    def build(self) -> onnx.ModelProto:
        inputs = []
        for v in self.chunk.inputs:
            inputs.append(helper.make_tensor_value_info(v.name, _onnx_dtype(v), self.shape(v)))
            p = self.params(v)
            self.names[id(v)] = self._qdq(v.name, p, f"{v.name}__in") if p is not None else v.name
        for node in self.chunk.nodes:
            ins = [self._input(node, slot, v) for slot, v in enumerate(node.inputs)]
            out = node.outputs[0]
            p = self.params(out)
            raw = f"{out.name}__f" if p is not None else out.name
            LOWERINGS[node.op](self, node, ins, raw)
            if p is not None:
                self._qdq(raw, p, out.name)
            self.names[id(out)] = out.name
        extras = [helper.make_tensor_value_info(n, TensorProto.INT64, self._extra_shape(n)) for n in self.extra_inputs]
        outputs = [helper.make_tensor_value_info(v.name, _onnx_dtype(v), self.shape(v)) for v in self.chunk.outputs]
        graph = helper.make_graph(self.nodes, self.name, inputs + extras, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="llmc")
        model.ir_version = 10
        return model

    def _extra_shape(self, name: str) -> list[int]:
        return [self.static.env["seq"]] if name == SLOTS else [1]

    def _input(self, node: Node, slot: int, v: Value) -> str:
        if not v.is_const:
            return self.names[id(v)]
        array = np.asarray(v.const.numpy())
        if self.plan is None or v.type.dtype.np.kind != "f":
            return self.const(array, "w", key=f"{v.name}:float")
        p = self.plan.constant(node, slot)
        key = f"{v.name}:{p.dtype}" if slot != BIAS_SLOT.get(node.op) else f"{v.name}:{node.name}:bias"
        q = self.const(p.quantize(array.astype(np.float32)), "wq", key=key)
        return self._dq(q, p, self.fresh("w"))

    def _qdq(self, name: str, p: QParams, out: str) -> str:
        scale, zero = self.const(p.scale, "s"), self.const(p.zero_point, "z")
        q = self.op("QuantizeLinear", [name, scale, zero])
        return self.op("DequantizeLinear", [q, scale, zero], out)

    def _dq(self, q: str, p: QParams, out: str) -> str:
        attrs = {"axis": p.axis} if p.axis is not None else {}
        return self.op("DequantizeLinear", [q, self.const(p.scale, "s"), self.const(p.zero_point, "z")], out, **attrs)


def _is_cache(v: Value) -> bool:
    return v.name.startswith(("cache_k.", "cache_v.")) or (v.producer is not None and v.producer.op == "kv_update")


def _onnx_dtype(v: Value) -> int:
    return _ONNX_TYPE[np.dtype(v.type.dtype.np)]

