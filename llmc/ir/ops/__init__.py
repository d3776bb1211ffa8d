"""The canonical op set. Importing this package registers every op once."""

from llmc.ir.ops import elementwise, fused, linalg, nn, quant, reduce, shape, sparse, sparsity, transformer  # noqa: F401
from llmc.ir.ops.registry import Attr, Cost, OpDef, get, names, register

__all__ = ["Attr", "Cost", "OpDef", "get", "names", "register"]
