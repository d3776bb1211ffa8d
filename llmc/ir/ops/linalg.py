"""Matrix products: ``matmul`` (numpy semantics, batched) and ``linear`` (x @ W^T + b)."""

from __future__ import annotations

import numpy as np

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Cost, op, same_dtype
from llmc.ir.types import TensorType

_LOW = (DType.f16.np, DType.bf16.np)


def _mm(a, b):
    if a.dtype in _LOW:
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
    return np.matmul(a, b)


def _bytes(types):
    return S.dim(sum(t.numel * t.dtype.itemsize for t in types))


@op("matmul", inputs=("a", "b"), kind="matmul")
class MatMul:
    """Batched matrix product with numpy broadcasting of the batch dims; 1-D operands as in numpy."""

    @staticmethod
    def infer(types, attrs):
        a, b = types
        dtype = same_dtype(types, "matmul")
        if a.rank == 0 or b.rank == 0:
            raise ShapeError("matmul needs operands of rank >= 1")
        ash = a.shape if a.rank > 1 else (1, *a.shape)
        bsh = b.shape if b.rank > 1 else (*b.shape, 1)
        if not S.same(ash[-1], bsh[-2]):
            raise ShapeError(f"matmul inner dims differ: {a} @ {b}")
        batch = S.broadcast(ash[:-2], bsh[:-2])
        shape = (*batch, ash[-2], bsh[-1])
        if a.rank == 1:
            shape = (*shape[:-2], shape[-1])
        if b.rank == 1:
            shape = shape[:-1]
        return [TensorType(dtype, shape)]

    @staticmethod
    def reference(xs, attrs):
        return _mm(*xs)

    @staticmethod
    def cost(types, outs, attrs):
        k = types[0].shape[-1]
        return Cost(flops=S.dim(2 * outs[0].numel * k), bytes=_bytes([*types, *outs]))


@op("linear", inputs=("x", "weight", "bias"), optional=1, kind="matmul")
class Linear:
    """y = x @ weight^T + bias, weight of shape [out_features, in_features] (torch layout)."""

    @staticmethod
    def infer(types, attrs):
        x, w = types[0], types[1]
        same_dtype(types, "linear")
        if w.rank != 2:
            raise ShapeError(f"linear weight must be 2-D [out, in], got {w}")
        if x.rank < 1 or not S.same(x.shape[-1], w.shape[1]):
            raise ShapeError(f"linear input {x} does not match weight {w} (in_features {w.shape[1]})")
        if len(types) == 3 and (types[2].rank != 1 or not S.same(types[2].shape[0], w.shape[0])):
            raise ShapeError(f"linear bias {types[2]} does not match weight {w}")
        return [TensorType(x.dtype, (*x.shape[:-1], w.shape[0]))]

    @staticmethod
    def reference(xs, attrs):
        y = _mm(xs[0], xs[1].T)
        if len(xs) == 3:
            y = (y + xs[2]).astype(y.dtype)
        return y

    @staticmethod
    def cost(types, outs, attrs):
        k = types[1].shape[1]
        return Cost(flops=S.dim(2 * outs[0].numel * k), bytes=_bytes([*types, *outs]))
