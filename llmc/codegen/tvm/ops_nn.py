"""Neural-network layers: convolution, pooling, normalizations, LRN, padding.

Convolution, pooling and layer norm are Relax ops; batch norm is inference arithmetic on Relax
values (its parameter algebra is lifted into the load-time transform); ``rms_norm``, ``lrn``
and ``pad`` are llmc's own TE kernels (rms_norm accumulates in float32 as the reference does;
pad covers constant/edge/reflect modes and negative pads in one kernel).
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.relax import op as R

from llmc.codegen.tvm.context import as_f32
from llmc.codegen.tvm.registry import lowers
from llmc.errors import TargetError
from llmc.ir.dtypes import DType

_LOW = (DType.f16, DType.bf16)


@lowers("conv2d")
def conv2d(ctx, node, args):
    a = node.attrs
    y = R.nn.conv2d(args[0], args[1], strides=a["stride"], padding=a["padding"], dilation=a["dilation"],
                    groups=a["groups"])
    if len(args) == 2:
        return y
    channels = node.inputs[1].type.shape[0]
    return R.add(ctx.emit(y), R.reshape(args[2], [1, channels, 1, 1]))


@lowers("max_pool2d")
def max_pool2d(ctx, node, args):
    a = node.attrs
    return R.nn.max_pool2d(args[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])


@lowers("avg_pool2d")
def avg_pool2d(ctx, node, args):
    a = node.attrs
    return R.nn.avg_pool2d(args[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"],
                           a["count_include_pad"])


@lowers("batch_norm")
def batch_norm(ctx, node, args):
    x, scale, bias, mean, var = args
    rank = node.inputs[0].type.rank
    view = [1, node.inputs[0].type.shape[1]] + [1] * (rank - 2)
    factor = ctx.emit(R.multiply(scale, R.rsqrt(R.add(var, ctx.const(node.attrs["eps"], node.inputs[1].type.dtype)))))
    shift = ctx.emit(R.subtract(bias, R.multiply(mean, factor)))
    scaled = ctx.emit(R.multiply(x, R.reshape(factor, view)))
    return R.add(scaled, R.reshape(shift, view))


@lowers("layer_norm")
def layer_norm(ctx, node, args):
    """Relax layer_norm over axes [axis, rank); missing weight/bias are ones/zeros; half types run in f32."""
    x_type = node.inputs[0].type
    axes = list(range(node.attrs["axis"] % x_type.rank, x_type.rank))
    norm_shape = [x_type.shape[i] for i in axes]
    if not all(isinstance(d, int) for d in norm_shape):
        raise TargetError(f"layer_norm over symbolic axes {norm_shape} is not supported", where=node.where,
                          hint="normalize over static trailing axes")
    dtype = ctx.options.dtype(x_type.dtype)
    wide = dtype in _LOW
    params = list(args[1:]) + [ctx.const(np.full(norm_shape, v), x_type.dtype) for v in (1.0, 0.0)][len(args) - 1:]
    if wide:
        args, params = [ctx.emit(R.astype(args[0], "float32"))], [ctx.emit(R.astype(p, "float32")) for p in params]
    y = R.nn.layer_norm(args[0], params[0], params[1], axes, node.attrs["eps"])
    return R.astype(ctx.emit(y), ctx.dtype(dtype)) if wide else y


@lowers("rms_norm")
def rms_norm(ctx, node, args):
    x_type = node.inputs[0].type
    first = node.attrs["axis"] % x_type.rank
    eps, out_dtype = node.attrs["eps"], ctx.dtype(x_type.dtype)

    def compute(x, *weight):
        red = [te.reduce_axis((0, x.shape[i]), name=f"r{i}") for i in range(first, len(x.shape))]
        count = 1
        for r in red:
            count = count * r.dom.extent
        ssq = te.compute(x.shape[:first], lambda *i: te.sum(
            as_f32(x[(*i, *red)]) * as_f32(x[(*i, *red)]), axis=red), name="sum_sq")

        def norm(*i):
            y = (as_f32(x[i]) * tirx.rsqrt(ssq[i[:first]] / tirx.Cast("float32", count) + tirx.const(eps, "float32")))
            y = tirx.Cast(out_dtype, y)
            return tirx.Cast(out_dtype, as_f32(weight[0][i[first:]]) * as_f32(y)) if weight else y

        return te.compute(x.shape, norm, name="rms_norm")

    return ctx.emit_te(compute, *args, name="rms_norm")


@lowers("lrn")
def lrn(ctx, node, args):
    a = node.attrs
    size, alpha, beta, bias = a["size"], a["alpha"], a["beta"], a["bias"]
    lo = (size - 1) // 2

    def compute(x):
        channels = x.shape[1]
        r = te.reduce_axis((0, size), name="w")

        def window_sum(n, c, *rest):
            src = c - lo + r
            inside = tirx.all(src >= 0, src < channels)
            v = as_f32(x[(n, tirx.max(tirx.min(src, channels - 1), 0), *rest)])
            return te.sum(tirx.if_then_else(inside, v * v, tirx.const(0, "float32")), axis=r)

        acc = te.compute(x.shape, window_sum, name="lrn_sum")
        return te.compute(x.shape, lambda *i: tirx.Cast(x.dtype, as_f32(x[i]) / tirx.power(
            tirx.const(bias, "float32") + tirx.const(alpha / size, "float32") * acc[i], tirx.const(beta, "float32"))),
            name="lrn")

    return ctx.emit_te(compute, args[0], name="lrn")


@lowers("pad")
def pad(ctx, node, args):
    x_type = node.inputs[0].type
    pads, mode = node.attrs["pads"], node.attrs["mode"]
    if mode not in ("constant", "edge", "reflect"):
        raise TargetError(f"pad mode {mode!r} has no TVM lowering", where=node.where, hint="use constant, edge or reflect")
    rank, out_shape = x_type.rank, ctx.shape(node.outputs[0].type.shape)
    fill = tirx.const(node.attrs["value"], ctx.dtype(x_type.dtype))

    def compute(x):
        def body(*i):
            src = [i[a] - pads[a] for a in range(rank)]
            if mode == "constant":
                inside = tirx.all(*[tirx.all(s >= 0, s < x.shape[a]) for a, s in enumerate(src)])
                safe = [tirx.max(tirx.min(s, x.shape[a] - 1), 0) for a, s in enumerate(src)]
                return tirx.if_then_else(inside, x[tuple(safe)], fill)
            return x[tuple(_source_index(s, x.shape[a], mode) for a, s in enumerate(src))]

        return te.compute(out_shape, body, name="pad")

    return ctx.emit_te(compute, args[0], name="pad")


def _source_index(s, n, mode):
    if mode == "edge":
        return tirx.max(tirx.min(s, n - 1), 0)
    return tirx.if_then_else(s < 0, -s, tirx.if_then_else(s >= n, 2 * (n - 1) - s, s))
