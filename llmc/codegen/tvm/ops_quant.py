"""``quantize`` / ``dequantize`` as TE kernels, with per-tensor, per-axis or blocked scales.

Arithmetic is float32 like the reference; rounding is half-to-even (``nearbyint``), and
4-bit types use their own ranges inside the 8-bit storage the IR gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax, te, tirx

from llmc.codegen.tvm.context import as_f32
from llmc.codegen.tvm.registry import lowers
from llmc.ir.dtypes import DType
from llmc.ir.ops.quant import _RANGES
from llmc.ir.packing import Grid


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


@dataclass(frozen=True)
class PackedOperands:
    """The stored tensors of a ``dequantize_packed`` weight, as Relax values, and its grid."""

    words: relax.Expr
    scale: relax.Expr
    minimum: relax.Expr | None
    grid: Grid
    k: int

    @property
    def tensors(self) -> list[relax.Expr]:
        return [self.words, self.scale] + ([] if self.minimum is None else [self.minimum])


def packed_operands(ctx, value) -> PackedOperands | None:
    """The packed tensors behind ``value`` when a ``dequantize_packed`` node produces it, else None."""
    node = value.producer
    if node is None or node.op != "dequantize_packed":
        return None
    args = [ctx.lookup(v) for v in node.inputs]
    grid = Grid(node.attrs["bits"], node.attrs["group"], sym=len(args) == 2)
    return PackedOperands(args[0], args[1], args[2] if len(args) == 3 else None, grid, node.attrs["k"])


@lowers("dequantize_packed")
def dequantize_packed(ctx, node, args):
    """The float matrix, as a kernel of its own. Skipped (its words stand in for it) when only
    ``linear`` weights read it: those kernels dequantize inside their reduction loop instead."""
    if all(user.op == "linear" and slot == 1 for user, slot in node.output.uses):
        return args[0]
    grid = Grid(node.attrs["bits"], node.attrs["group"], sym=len(args) == 2)
    k_len = node.attrs["k"]
    out_dtype = ctx.dtype(DType.f32)

    def compute(words, scale, *minimum):
        def body(n, k):
            return tirx.Cast(out_dtype, dequant_at(grid, k_len, words, scale, minimum[0] if minimum else None, n, k))

        return te.compute((words.shape[0], k_len), body, name="dequantize")

    return ctx.emit_te(compute, *args, name="dequantize_packed")


def dequant_at(grid: Grid, k_len: int, words, scale, minimum, n, k) -> tirx.PrimExpr:
    """Float32 W[n, k] from [N, words] / [N, groups] tensors (``n`` may be a tuple of panel indices)."""
    lead = n if isinstance(n, tuple) else (n,)
    per, bits = grid.per_word, grid.bits
    shift = (tirx.floormod(k, per) * bits).astype("int32")
    word = _at(words, lead, tirx.floordiv(k, per))
    code = as_f32(tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const((1 << bits) - 1, "int32")))
    group = tirx.floordiv(k, grid.group_size(k_len))
    s = as_f32(_at(scale, lead, group))
    if minimum is None:
        return (code - float(grid.levels // 2)) * s
    return code * s + as_f32(_at(minimum, lead, group))


def _at(tensor, lead, last):
    """Element of an [N, X] tensor, or of its panels [N/P, X, P] when ``lead`` is (jo, ji)."""
    return tensor[lead[0], last] if len(lead) == 1 else tensor[lead[0], last, lead[1]]
