"""The ONNX graph walk: inputs, initializers, each node folded or converted, outputs.

Every node whose inputs are all known and whose op has a folder (``shapes.FOLDERS``) is
evaluated at import time; every other node goes to its converter (``context.CONVERTERS``),
which emits IR. Unsupported ops are collected over the whole graph before anything is
converted and reported together.
"""

from __future__ import annotations

import ast
import re

import numpy as np
import onnx

from llmc.errors import ModelLoadError, UnsupportedOpError
from llmc.frontend.onnx import shapes
from llmc.frontend.onnx.context import CONVERTERS, NodeCx, TensorSequence
from llmc.frontend.onnx.reader import OnnxSource, tensor_weight
from llmc.frontend.onnx.signature import input_types
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph, Value
from llmc.ir.meta import NodeMeta, layer_of
from llmc.ir.tensor import ArrayWeight, Weight
from llmc.ir.types import TensorType

_DEFAULT_DOMAINS = ("", "ai.onnx")


class Importer:
    """Builds one llmc ``Graph`` from a checked ONNX model (see ``from_onnx``)."""

    def __init__(self, source: OnnxSource, *, name: str | None, input_shapes, dynamic):
        self.source = source
        self.onnx_graph = source.model.graph
        self.graph = Graph(name or self.onnx_graph.name or "onnx_model")
        self.values: dict[str, Value] = {}  # ONNX name -> IR value
        self.known: dict[str, np.ndarray] = {}  # ONNX name -> value fixed at import time
        self.weights: dict[str, Weight] = {}  # ONNX name -> constant data not yet in the graph
        self.sequences: dict[str, TensorSequence] = {}  # ONNX name -> values of a sequence
        self.names: dict[str, str] = {}  # ONNX tensor name -> IR value name reserved for it
        self.input_shapes = dict(input_shapes or {})
        self.dynamic = dict(dynamic or {})

    def run(self) -> Graph:
        self._refuse_unsupported()
        for tensor in self.onnx_graph.initializer:
            self._add_weight(tensor.name, tensor_weight(tensor, self.source))
        self._add_inputs()
        self._reserve_names()
        for index, node in enumerate(self.onnx_graph.node):
            self._import_node(index, node)
        self.graph.outputs = [self._output(o.name) for o in self.onnx_graph.output]
        self.graph.verify()
        return self.graph

    # -- values -----------------------------------------------------------------------------

    def value(self, name: str) -> Value:
        """The IR value of an ONNX tensor; known values and weights become constants on first use."""
        if name in self.values:
            return self.values[name]
        if name in self.weights:
            v = self.graph.add_const(name, self.weights[name])
        elif name in self.known:
            v = self._materialize(name, self.known[name])
        else:
            raise ModelLoadError(f"{self.source.label}: tensor {name!r} is read before it is defined",
                                 hint="The graph is not in topological order or names a missing input")
        self.values[name] = v
        return v

    def type_of(self, name: str) -> TensorType:
        if name in self.values:
            return self.values[name].type
        if name in self.weights:
            return self.weights[name].type
        a = self.known[name]
        return TensorType(DType.i64 if shapes.is_symbolic(a) else DType.from_numpy(a.dtype), a.shape)

    def _add_weight(self, name: str, weight: Weight) -> None:
        self.weights[name] = weight
        if weight.type.numel <= shapes.KNOWN_LIMIT:
            self.known[name] = np.asarray(weight.numpy())

    def _bind(self, name: str, result: Value | Weight | TensorSequence | np.ndarray) -> None:
        if isinstance(result, Value):
            self.values[name] = result
        elif isinstance(result, TensorSequence):
            self.sequences[name] = result
        elif isinstance(result, Weight):
            self._add_weight(name, result)
        elif shapes.is_symbolic(result) or result.size <= shapes.KNOWN_LIMIT:
            self.known[name] = result
        else:
            self.weights[name] = ArrayWeight(result)

    def _materialize(self, name: str, array: np.ndarray) -> Value:
        """A known value as IR: a constant, or for symbolic dims an ``arange`` per symbolic element."""
        if not shapes.is_symbolic(array):
            return self.graph.add_const(name, array)

        def emit(op, inputs, **attrs):
            return self.graph.add_node(op, inputs, attrs, meta=NodeMeta(origin=name), name=name).output

        parts = []
        for d in shapes.to_dims(array):
            if isinstance(d, int):
                parts.append(self.graph.add_const(name, np.array([d], dtype=np.int64)))
            else:
                parts.append(emit("arange", [], start=d, end=d + 1))
        flat = parts[0] if len(parts) == 1 else emit("concat", parts, axis=0)
        return emit("reshape", [flat], shape=array.shape)

    # -- inputs and outputs -----------------------------------------------------------------

    def _add_inputs(self) -> None:
        declared = [i for i in self.onnx_graph.input if i.name not in self.weights]
        types = input_types(declared, self.input_shapes, self.dynamic, self.source.label)
        for info in declared:
            self.values[info.name] = self.graph.add_input(info.name, types[info.name])

    def _reserve_names(self) -> None:
        """Reserve the ONNX names of node outputs and graph outputs, so the IR values computing
        them can take those names even after helper values were named (``Gemm`` -> matmul, add)."""
        taken = {v.name for v in self.graph.inputs}
        wanted = [o for node in self.onnx_graph.node for o in node.output] + [o.name for o in self.onnx_graph.output]
        for name in dict.fromkeys(n for n in wanted if n and n not in taken):
            self.names[name] = self.graph.fresh(name)

    def _output(self, name: str) -> Value:
        """The value of an ONNX graph output, under the output's name.

        An output that is an input, a constant or another output (``y = Identity(x)``) gets a
        named copy: a reshape to its own shape.
        """
        v = self.value(name)
        wanted = self.names.get(name, name)
        if v.name == wanted:
            return v
        if v.producer is None or v in self.graph.outputs:
            copy = self.graph.add_node("reshape", [v], {"shape": v.type.shape}, meta=NodeMeta(origin=name), name=name)
            v = copy.output
        v.name = wanted
        return v

    # -- nodes ------------------------------------------------------------------------------

    def _refuse_unsupported(self) -> None:
        unsupported: dict[str, list[str]] = {}
        for index, node in enumerate(self.onnx_graph.node):
            key = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
            if node.domain not in _DEFAULT_DOMAINS or (
                node.op_type not in CONVERTERS and node.op_type not in shapes.FOLDERS
            ):
                unsupported.setdefault(key, []).append(origin_of(node, index))
        if unsupported:
            raise UnsupportedOpError(unsupported, source="ONNX")

    def _import_node(self, index: int, node: onnx.NodeProto) -> None:
        cx = NodeCx(self, node, meta_of(node, index))
        results = self._fold(cx)
        if results is None:
            if node.op_type not in CONVERTERS:
                raise cx.fail("its inputs are not all known at import time")
            before = len(self.graph.nodes)
            out = CONVERTERS[node.op_type](cx)
            results = out if isinstance(out, list) else [out]
            self._name_outputs(node, results, self.graph.nodes[before:])
        for name, result in zip(node.output, results):
            if name and result is not None:
                self._bind(name, result)

    def _fold(self, cx: NodeCx) -> list | None:
        if cx.op_type not in shapes.FOLDERS or len(cx.node.output) != 1:
            return None
        args = [cx.known(i) if cx.has(i) else None for i in range(len(cx.inputs))]
        if any(a is None for i, a in enumerate(args) if cx.has(i)):
            return None
        out = shapes.fold(cx.op_type, args, cx.attrs)
        return None if out is None else [out]

    def _name_outputs(self, node: onnx.NodeProto, results: list, created) -> None:
        """Give each new IR value its ONNX tensor name (values passed through keep theirs)."""
        fresh = {id(v) for n in created for v in n.outputs}
        for name, result in zip(node.output, results):
            if name and isinstance(result, Value) and id(result) in fresh:
                result.name = self.names[name]


# -- node metadata --------------------------------------------------------------------------


def origin_of(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def meta_of(node: onnx.NodeProto, index: int) -> NodeMeta:
    """Origin is the ONNX node name; layer comes from it (``/model/layers.3/mlp/...``) or, for
    torch's dynamo exporter, from the module path it records in the node's metadata."""
    origin = origin_of(node, index)
    layer = layer_of(origin.replace("/", "."))
    if layer is None:
        layer = layer_of(_module_path(node))
    return NodeMeta(origin=origin, layer=layer)


_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def _module_path(node: onnx.NodeProto) -> str:
    scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES_KEY), "")
    if not scopes or len(scopes) > 10_000 or not re.fullmatch(r"\[[\w\s.,'\"-]*\]", scopes):
        return ""
    names = ast.literal_eval(scopes)
    return names[-2] if len(names) >= 2 else ""

