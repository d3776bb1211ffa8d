"""The builder that op converters write llmc nodes through.

One ``Emitter`` serves a whole import. Before each source op, the importer sets ``meta`` (where
the op came from) and ``expected`` (the types torch computed for its outputs); every node a
converter emits carries that origin. The helpers here hold the torch semantics that many
converters share: type promotion, Python scalars and symbolic sizes used as tensors, casts.
"""

from __future__ import annotations

import numpy as np
import sympy
import torch

from llmc.frontend.torch_dtypes import dtype_from_torch, dtype_to_torch
from llmc.ir import Graph, NodeMeta, TensorType, Value
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType

Operand = Value | int | float | bool | sympy.Expr


class NotConvertible(Exception):
    """Raised by a converter for a source op it cannot express (``reason`` says which case)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Emitter:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.meta = NodeMeta()
        self.expected: list[TensorType | None] = []
        self._scalars: dict[tuple, Value] = {}

    # -- the current source op ------------------------------------------------------------------

    @property
    def out_dtype(self) -> DType:
        """The dtype torch computed for the current op's (first) output."""
        return self.expected[0].dtype

    @property
    def out_shape(self) -> S.Shape:
        return self.expected[0].shape

    # -- emitting -------------------------------------------------------------------------------

    def call(self, op: str, *inputs: Value, **attrs):
        """Emit ``op`` with the current origin; returns its output (a tuple if several)."""
        return self.graph.call(op, *inputs, meta=self.meta.copy(), **attrs)

    def constant(self, value, dtype: DType) -> Value:
        """A Python scalar as a rank-0 constant of ``dtype`` (one constant per distinct value)."""
        key = (repr(value), dtype)
        if key not in self._scalars:
            self._scalars[key] = self.graph.add_const("scalar", np.array(value, dtype=dtype.np))
        return self._scalars[key]

    def cast(self, x: Value, dtype: DType) -> Value:
        return x if x.type.dtype == dtype else self.call("cast", x, dtype=dtype)

    def tensor(self, x: Operand, dtype: DType) -> Value:
        """``x`` as a tensor of ``dtype``: values are cast, scalars and symbolic sizes materialized."""
        if isinstance(x, Value):
            return self.cast(x, dtype)
        if isinstance(x, sympy.Expr):
            return self.cast(self.size(x), dtype)
        return self.constant(x, dtype)

    def size(self, d: S.Dim) -> Value:
        """A (possibly symbolic) size as a rank-0 i64 tensor: ``arange(d, d + 1)`` reshaped to ``[]``."""
        if isinstance(d, int):
            return self.constant(d, DType.i64)
        return self.call("reshape", self.call("arange", start=d, end=d + 1, dtype=DType.i64), shape=())

    def promote(self, a: Operand, b: Operand) -> DType:
        """torch's result dtype for an elementwise op on ``a`` and ``b`` (tensors, Python scalars, sizes)."""
        return dtype_from_torch(torch.result_type(_torch_stand_in(a), _torch_stand_in(b)))

    # -- common shapes of ops -------------------------------------------------------------------

    def reshape(self, x: Value, shape) -> Value:
        shape = tuple(shape)
        return x if len(shape) == x.type.rank and all(S.same(a, b) for a, b in zip(shape, x.type.shape)) else (
            self.call("reshape", x, shape=shape))

    def transpose(self, x: Value, perm) -> Value:
        perm = tuple(p % x.type.rank for p in perm) if x.type.rank else ()
        return x if perm == tuple(range(x.type.rank)) else self.call("transpose", x, perm=perm)


def _torch_stand_in(x: Operand):
    """Something ``torch.result_type`` sees exactly as torch saw ``x``: a 0-dim or 1-element tensor, or a scalar."""
    if isinstance(x, Value):
        shape = () if x.type.rank == 0 else (1,)
        return torch.empty(shape, dtype=dtype_to_torch(x.type.dtype))
    if isinstance(x, sympy.Expr):
        return 1
    return x

