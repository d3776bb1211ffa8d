"""``quantize`` / ``dequantize`` as TE kernels, with per-tensor, per-axis or blocked scales.

Arithmetic is float32 like the reference; rounding is half-to-even (``nearbyint``), and
4-bit types use their own ranges inside the 8-bit storage the IR gives them.
"""

from __future__ import annotations

from tvm import te, tirx

from llmc.codegen.tvm.context import as_f32
from llmc.codegen.tvm.registry import lowers
from llmc.ir.ops.quant import _RANGES


@lowers("quantize")
def quantize(ctx, node, args):
    x_type, scale_type = node.inputs[0].type, node.inputs[1].type
    axis = node.attrs["axis"] % max(x_type.rank, 1)
    lo, hi = _RANGES[node.attrs["dtype"]]
    out_dtype = ctx.dtype(node.attrs["dtype"])

    def compute(x, scale, *zero):
        def body(*i):
            q = tirx.nearbyint(as_f32(x[i]) / as_f32(_scale_at(scale, scale_type, x_type, axis, i)))
            if zero:
                q = q + as_f32(_scale_at(zero[0], scale_type, x_type, axis, i))
            return tirx.Cast(out_dtype, tirx.max(tirx.min(q, float(hi)), float(lo)))

        return te.compute(x.shape, body, name="quantize")

    return ctx.emit_te(compute, *args, name="quantize")


@lowers("dequantize")
def dequantize(ctx, node, args):
    q_type, scale_type = node.inputs[0].type, node.inputs[1].type
    axis = node.attrs["axis"] % max(q_type.rank, 1)
    out_dtype = ctx.dtype(scale_type.dtype)

    def compute(q, scale, *zero):
        def body(*i):
            v = as_f32(q[i])
            if zero:
                v = v - as_f32(_scale_at(zero[0], scale_type, q_type, axis, i))
            return tirx.Cast(out_dtype, v * as_f32(_scale_at(scale, scale_type, q_type, axis, i)))

        return te.compute(q.shape, body, name="dequantize")

    return ctx.emit_te(compute, *args, name="dequantize")


def _scale_at(scale, scale_type, x_type, axis, i):
    """The scale (or zero point) of element ``i``: scalar, along ``axis``, or one per block."""
    if scale_type.rank == 0:
        return scale[()]
    if scale_type.rank == 1:
        return scale[i[axis]]
    return scale[tuple(i[a] // (x_type.shape[a] // s) for a, s in enumerate(scale_type.shape))]
