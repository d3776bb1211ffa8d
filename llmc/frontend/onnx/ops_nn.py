"""Converters for layers: convolution, pooling, normalizations, Gemm/MatMul, Dropout, (de)quantization."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from llmc.frontend.onnx.context import NodeCx, converter
from llmc.frontend.onnx.reader import dtype_of
from llmc.ir import shapes as S


def _window(cx: NodeCx, kernel) -> dict:
    """stride / padding / dilation attributes of a 2-D window op, resolving ``auto_pad``."""
    strides = tuple(cx.attr("strides", (1, 1)))
    dilations = tuple(cx.attr("dilations", (1, 1)))
    auto_pad = cx.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = tuple(cx.attr("pads", (0, 0, 0, 0)))
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    else:
        pads = _same_pads(cx, kernel, strides, dilations, upper=auto_pad == "SAME_UPPER")
    return {"stride": strides, "padding": pads, "dilation": dilations}


def _same_pads(cx: NodeCx, kernel, strides, dilations, *, upper: bool) -> tuple[int, ...]:
    sizes = cx.type(0).shape[2:]
    if not all(isinstance(d, int) for d in sizes):
        raise cx.fail("auto_pad SAME needs static spatial sizes")
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if upper else large)
        end.append(large if upper else small)
    return (*begin, *end)


def _check_2d(cx: NodeCx, kernel) -> None:
    if len(kernel) != 2:
        raise cx.fail(f"{len(kernel)}-D windows; llmc has 2-D convolution and pooling")


@converter("Conv")
def _conv(cx: NodeCx):
    kernel = cx.type(1).shape[2:]
    _check_2d(cx, kernel)
    bias = [cx.value(2)] if cx.has(2) else []
    return cx.call("conv2d", cx.value(0), cx.value(1), *bias, groups=cx.attr("group", 1), **_window(cx, kernel))


def _pool_attrs(cx: NodeCx) -> dict:
    kernel = tuple(cx.attr("kernel_shape"))
    _check_2d(cx, kernel)
    if len(cx.node.output) > 1 and cx.node.output[1]:
        raise cx.fail("the Indices output of MaxPool")
    return {"kernel": kernel, "ceil_mode": bool(cx.attr("ceil_mode", 0)), **_window(cx, kernel)}


@converter("MaxPool")
def _max_pool(cx: NodeCx):
    return cx.call("max_pool2d", cx.value(0), **_pool_attrs(cx))


@converter("AveragePool")
def _avg_pool(cx: NodeCx):
    return cx.call("avg_pool2d", cx.value(0), count_include_pad=bool(cx.attr("count_include_pad", 0)),
                   **_pool_attrs(cx))


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(cx: NodeCx):
    op = "reduce_mean" if cx.op_type == "GlobalAveragePool" else "reduce_max"
    return cx.call(op, cx.value(0), axes=tuple(range(2, cx.type(0).rank)), keepdims=True)


@converter("BatchNormalization")
def _batch_norm(cx: NodeCx):
    if cx.attr("training_mode", 0):
        raise cx.fail("training mode")
    return cx.call("batch_norm", *[cx.value(i) for i in range(5)], eps=cx.attr("epsilon", 1e-5))


@converter("LayerNormalization")
def _layer_norm(cx: NodeCx):
    if any(cx.node.output[1:]):
        raise cx.fail("the Mean / InvStdDev outputs")
    return cx.call("layer_norm", *cx.values(), axis=cx.attr("axis", -1), eps=cx.attr("epsilon", 1e-5))


@converter("LRN")
def _lrn(cx: NodeCx):
    return cx.call("lrn", cx.value(0), size=cx.attr("size"), alpha=cx.attr("alpha", 1e-4),
                   beta=cx.attr("beta", 0.75), bias=cx.attr("bias", 1.0))


@converter("MatMul")
def _matmul(cx: NodeCx):
    return cx.call("matmul", cx.value(0), cx.value(1))


@converter("Gemm")
def _gemm(cx: NodeCx):
    """``alpha * A' B' + beta * C``: ``linear`` when B is [N, K] (transB) and C is absent or a
    plain [N] bias; otherwise matmul, scaling and add, each only where needed."""
    a, b = cx.value(0), cx.value(1)
    alpha, beta = cx.attr("alpha", 1.0), cx.attr("beta", 1.0)
    if cx.attr("transA", 0):
        a = cx.call("transpose", a, perm=(1, 0))
    c = cx.value(2) if cx.has(2) else None
    plain_bias = c is None or (beta == 1.0 and c.type.rank == 1 and S.same(c.type.shape[0], b.type.shape[0]))
    if cx.attr("transB", 0) and alpha == 1.0 and plain_bias:
        return cx.call("linear", a, b, *([c] if c is not None else []))
    if cx.attr("transB", 0):
        b = cx.call("transpose", b, perm=(1, 0))
    y = cx.call("matmul", a, b)
    if alpha != 1.0:
        y = cx.call("mul", y, cx.const(alpha, y.type.dtype))
    if c is None:
        return y
    if beta != 1.0:
        c = cx.call("mul", c, cx.const(beta, c.type.dtype))
    return cx.call("add", y, c)


@converter("Dropout")
def _dropout(cx: NodeCx):
    """Identity at inference; the mask output, if asked for, is all True."""
    x = cx.value(0)
    if len(cx.node.output) < 2 or not cx.node.output[1]:
        return x
    if not x.type.is_static:
        raise cx.fail("the mask output of a dynamically shaped input")
    return [x, np.broadcast_to(np.True_, x.type.shape)]


@converter("Identity")
def _identity(cx: NodeCx):
    return cx.value(0)


@converter("Softmax", "LogSoftmax")
def _softmax(cx: NodeCx):
    return cx.call("softmax" if cx.op_type == "Softmax" else "log_softmax", cx.value(0), axis=cx.attr("axis", -1))



@converter("QuantizeLinear")
def _quantize(cx: NodeCx):
    """Per-tensor, per-axis or blocked; the zero point's dtype (default uint8) is the output's."""
    zero_point = [cx.value(2)] if cx.has(2) else []
    if zero_point:
        dtype = zero_point[0].type.dtype
    else:
        dtype = dtype_of(cx.attr("output_dtype", 0) or TensorProto.UINT8, f"QuantizeLinear output of {cx.meta.origin}")
    return cx.call("quantize", cx.value(0), cx.value(1), *zero_point, axis=cx.attr("axis", 1), dtype=dtype)


@converter("DequantizeLinear")
def _dequantize(cx: NodeCx):
    return cx.call("dequantize", *cx.values(), axis=cx.attr("axis", 1))
