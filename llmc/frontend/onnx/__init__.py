"""The ONNX frontend: ``from_onnx(path_or_proto) -> Graph``.

    graph = from_onnx("model.onnx", dynamic={"input_ids": {1: "seq"}})

Opsets 13 and later are read natively; older models are upgraded with the ONNX version
converter first. Initializers become lazy constants (external data is memory-mapped, never
loaded whole), shape computations are folded at import time (``shapes``), and every other
node maps onto the canonical op set (``ops_nn``, ``ops_math``, ``ops_tensor``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import onnx

from llmc.frontend.onnx import ops_math, ops_nn, ops_tensor  # noqa: F401  (register the converters)
from llmc.frontend.onnx.importer import Importer
from llmc.frontend.onnx.reader import read_model
from llmc.ir.graph import Graph


def from_onnx(model: str | os.PathLike | onnx.ModelProto, *,
              input_shapes: Mapping[str, Sequence[int | str]] | None = None,
              dynamic: Mapping[str, Mapping[int, str]] | None = None, name: str | None = None) -> Graph:
    """Import an ONNX model (a ``.onnx`` path or a ``ModelProto``) as a verified llmc ``Graph``.

    Graph inputs are the ONNX inputs that are not initializers, outputs the ONNX outputs, both
    under their ONNX names. ``input_shapes`` fixes or names input dims ({"x": [1, 3, 224, 224]});
    ``dynamic`` renames dims to symbols ({"input_ids": {1: "seq"}}). Raises ``ModelLoadError``
    (``UnsafeModelError`` for external data outside the model's folder) for unreadable files,
    ``UnsupportedOpError`` listing every unsupported op, ``ShapeError`` for contradicting shapes.
    """
    source = read_model(model)
    return Importer(source, name=name, input_shapes=input_shapes, dynamic=dynamic).run()


__all__ = ["from_onnx"]
