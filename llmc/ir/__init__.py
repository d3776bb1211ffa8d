"""llmc's IR: types, graphs, the op registry, the reference interpreter, serialization."""

from llmc.ir import ops  # noqa: F401  (registers every op)
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph, Node, Value
from llmc.ir.interpreter import run, run_graph
from llmc.ir.meta import NodeMeta, QuantSpec, SparsitySpec, layer_of
from llmc.ir.shapes import sym
from llmc.ir.tensor import ArrayWeight, FileWeight, MetaWeight, Weight
from llmc.ir.types import TensorType

__all__ = [
    "ArrayWeight", "DType", "FileWeight", "Graph", "MetaWeight", "Node", "NodeMeta", "QuantSpec", "SparsitySpec",
    "TensorType", "Value", "Weight", "layer_of", "run", "run_graph", "sym",
]
