"""What a converter sees of one ONNX node, and the table of converters.

A converter is a small function ``(cx: NodeCx) -> result`` registered with ``@converter("Conv")``.
A result is a list with one item per ONNX output, or a single item: an IR ``Value`` built with
``cx.call``, an input ``Value`` passed through, a numpy array that is a known value (``Shape``),
a ``Weight`` (``Constant``), or a ``TensorSequence`` of values (``SplitToSequence``).
Converters read known inputs (shapes, axes, pads) through ``cx.known`` / ``cx.ints`` /
``cx.dims``; one that must be known but is computed at run time becomes an
``UnsupportedOpError`` naming the node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from onnx import helper

from llmc.errors import UnsupportedOpError
from llmc.frontend.onnx import shapes
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Value
from llmc.ir.meta import NodeMeta
from llmc.ir.types import TensorType

if TYPE_CHECKING:
    from onnx import NodeProto

    from llmc.frontend.onnx.importer import Importer

Converter = Callable[["NodeCx"], object]
CONVERTERS: dict[str, Converter] = {}
_REQUIRED = object()


def converter(*op_types: str):
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return register


class TensorSequence(tuple):
    """An ONNX sequence (``SplitToSequence``) held at import time: a tuple of IR values."""


def attributes(node: NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


class NodeCx:
    """One ONNX node being converted: its inputs, attributes and a builder for IR nodes."""

    def __init__(self, importer: Importer, node: NodeProto, meta: NodeMeta):
        self.importer = importer
        self.node = node
        self.meta = meta
        self.attrs = attributes(node)
        self.inputs = list(node.input)
        while self.inputs and not self.inputs[-1]:
            self.inputs.pop()

    @property
    def op_type(self) -> str:
        return self.node.op_type

    def fail(self, why: str) -> UnsupportedOpError:
        """An error for a form of this op that llmc does not handle (raise it)."""
        return UnsupportedOpError({f"{self.op_type} ({why})": [self.meta.origin]}, source="ONNX")

    # -- inputs -----------------------------------------------------------------------------

    def has(self, i: int) -> bool:
        return i < len(self.inputs) and bool(self.inputs[i])

    def value(self, i: int) -> Value:
        """Input ``i`` as an IR value (known values become constants)."""
        return self.importer.value(self.inputs[i])

    def values(self) -> list[Value]:
        return [self.value(i) for i in range(len(self.inputs)) if self.has(i)]

    def known(self, i: int) -> np.ndarray | None:
        return self.importer.known.get(self.inputs[i]) if self.has(i) else None

    def sequence(self, i: int) -> TensorSequence:
        try:
            return self.importer.sequences[self.inputs[i]]
        except KeyError:
            raise self.fail("a sequence input not made by SplitToSequence") from None

    def type(self, i: int) -> TensorType:
        return self.importer.type_of(self.inputs[i])

    def dims(self, i: int, what: str) -> tuple[S.Dim, ...]:
        """A known input as dims (ints or symbols); refuses one computed from tensor data."""
        a = self.known(i)
        if a is None:
            raise self.fail(f"its {what} is computed from tensor data at run time")
        return shapes.to_dims(a)

    def ints(self, i: int, what: str) -> list[int]:
        """A known input as static ints."""
        dims = self.dims(i, what)
        if not all(isinstance(d, int) for d in dims):
            raise self.fail(f"its {what} {list(dims)} depends on symbolic dims")
        return list(dims)

    def attr(self, name: str, default=_REQUIRED):
        if name in self.attrs:
            return self.attrs[name]
        if default is _REQUIRED:
            raise self.fail(f"attribute {name} is missing")
        return default

    # -- building ---------------------------------------------------------------------------

    def call(self, op: str, *inputs: Value, **attrs):
        """Emit one IR node carrying this ONNX node's origin and layer; returns its output(s)."""
        node = self.importer.graph.add_node(op, inputs, attrs, meta=self.meta.copy(), name=self.meta.origin)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def const(self, array, dtype: DType) -> Value:
        """A small constant of ``dtype`` (a Gemm's alpha, the count of a Mean)."""
        return self.importer.graph.add_const(f"{self.meta.origin}.const", np.asarray(array, dtype=dtype.np))
