"""Reductions, softmax, argmax and cumulative sums (Relax ops).

Sums, means and products of half-precision tensors accumulate in float32, as the reference does.
"""

from __future__ import annotations

from tvm import topi
from tvm.relax import op as R

from llmc.codegen.tvm.registry import lowers
from llmc.ir.dtypes import DType

REDUCE = {"reduce_sum": R.sum, "reduce_mean": R.mean, "reduce_max": R.max, "reduce_min": R.min, "reduce_prod": R.prod}
_WIDENED = ("reduce_sum", "reduce_mean", "reduce_prod")


@lowers(*REDUCE)
def reduce(ctx, node, args):
    axes = list(node.attrs["axes"]) or None
    keepdims = node.attrs["keepdims"]
    dtype = ctx.options.dtype(node.inputs[0].type.dtype)
    if node.op in _WIDENED and dtype in (DType.f16, DType.bf16):
        wide = ctx.emit(R.astype(args[0], "float32"))
        return R.astype(ctx.emit(REDUCE[node.op](wide, axes, keepdims)), ctx.dtype(dtype))
    return REDUCE[node.op](args[0], axes, keepdims)


@lowers("softmax")
def softmax(ctx, node, args):
    return softmax_of(ctx, args[0], node.attrs["axis"], node.inputs[0].type.dtype)


def softmax_of(ctx, x, axis: int, dtype: DType):
    """Relax softmax, or under ``fast_math`` (float32) TVM's softmax built on its vectorizable exp."""
    if ctx.options.fast_math and ctx.options.dtype(dtype) == DType.f32:
        return ctx.emit_te(topi.nn.fast_softmax, x, axis, name="fast_softmax")
    return R.nn.softmax(x, axis)


@lowers("log_softmax")
def log_softmax(ctx, node, args):
    return R.nn.log_softmax(args[0], node.attrs["axis"])


@lowers("argmax")
def argmax(ctx, node, args):
    index = ctx.emit(R.argmax(args[0], node.attrs["axis"], node.attrs["keepdims"]))
    return R.astype(index, "int64")


@lowers("cumsum")
def cumsum(ctx, node, args):
    return R.cumsum(args[0], node.attrs["axis"])
