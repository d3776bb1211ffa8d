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
from llmc.ir.packing import F16_TINY, Grid


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
    code = _code(_at(words, lead, tirx.floordiv(k, grid.per_word)), k, grid)
    group = tirx.floordiv(k, grid.group_size(k_len))
    s = as_f32(_at(scale, lead, group))
    if minimum is None:
        return (code - float(grid.levels // 2)) * s
    return code * s + as_f32(_at(minimum, lead, group))


def _x_in_group(x, lead, k, k_len: int) -> tirx.PrimExpr:
    """x[lead, k] as float32, and 0 past the end of the row (the shorter last group reads no further)."""
    return tirx.Select(k < k_len, as_f32(x[(*lead, tirx.min(k, k_len - 1))]), tirx.const(0.0, "float32"))


def _code(word, k, grid: Grid) -> tirx.PrimExpr:
    """The code of reduction index ``k`` in its int32 ``word``, as float32 (all integer math in 32 bits)."""
    word = word.asobject() if hasattr(word, "asobject") else word
    bits = tirx.reinterpret("uint32", word)  # unsigned: TVM widens int32 arithmetic to its int64 index type
    shift = tirx.Cast("uint32", tirx.floormod(k, grid.per_word) * grid.bits)
    return tirx.Cast("float32", tirx.bitwise_and(tirx.shift_right(bits, shift), tirx.const(grid.levels - 1, "uint32")))


def _at(tensor, lead, last):
    """Element of an [N, X] tensor, or of its panels [N/P, X, P] when ``lead`` is (jo, ji)."""
    return tensor[lead[0], last] if len(lead) == 1 else tensor[lead[0], last, lead[1]]


@lowers("linear_w8a8")
def linear_w8a8(ctx, node, args):
    """Two kernels: the activations quantized per token (a row max and a rounding), then the int8 x
    int8 products accumulated in int32 with the scales as epilogue. On the cpu the weight words are
    re-laid out as panels ``[N/P, words, P]`` like every packed weight."""
    x_type = node.inputs[0].type
    k_len, static = node.attrs["k"], node.attrs["act_scale"]
    n = node.inputs[1].type.shape[0]
    p = ctx.options.pack_weights if x_type.rank >= 2 else 0
    out_dtype = ctx.dtype(DType.f32)

    def row_scales(x):
        rows = x.shape[:-1]
        if static > 0:
            return te.compute(rows, lambda *i: tirx.const(static, "float32"), name="act_scale")
        k = te.reduce_axis((0, k_len), name="k")
        amax = te.compute(rows, lambda *i: te.max(tirx.abs(as_f32(x[(*i, k)])), axis=k), name="act_absmax")
        return te.compute(rows, lambda *i: tirx.max(amax[i] / 127.0, F16_TINY), name="act_scale")

    def quantize_rows(x, sx):
        return te.compute(x.shape, lambda *i: tirx.Cast("int8", tirx.max(tirx.min(
            tirx.nearbyint(as_f32(x[i]) / sx[i[:-1]]), 127.0), -127.0)), name="act_quantize")

    sx = ctx.emit_te(row_scales, args[0], name="act_scales")
    xq = ctx.emit_te(quantize_rows, args[0], sx, name="act_quantize")
    words, scale = args[1], args[2]
    if p:
        words, scale = ctx.panels(words), ctx.panels(scale)

    def product(xq, sx, words, scale):
        k = te.reduce_axis((0, k_len), name="k")
        out = [*xq.shape[:-1], -(-n // p), p] if p else [*xq.shape[:-1], n]

        def code(*i):
            lead = (i[-2], i[-1]) if p else (i[-1],)
            word = words[lead[0], tirx.floordiv(k, 4), lead[1]] if p else words[lead[0], tirx.floordiv(k, 4)]
            shift = (tirx.floormod(k, 4) * 8).astype("int32")
            return tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(255, "int32")) - 128

        rows = len(xq.shape) - 1
        acc = te.compute(out, lambda *i: te.sum(tirx.Cast("int32", xq[(*i[:rows], k)]) * code(*i), axis=k),
                         name="dense")

        def rescale(*i):
            s = scale[i[-2], 0, i[-1]] if p else scale[i[-1], 0]
            return tirx.Cast(out_dtype, as_f32(acc[i]) * sx[i[:rows]] * as_f32(s))

        return te.compute(out, rescale, name="rescale")

    y = ctx.emit_te(product, xq, sx, words, scale, name="dense_w8a8")
    if not p:
        return y
    y = ctx.emit(relax.op.reshape(y, [*ctx.shape(x_type.shape[:-1]), -(-n // p) * p]))
    return y if -(-n // p) * p == n else relax.op.strided_slice(y, axes=[x_type.rank - 1], begin=[0], end=[n])



GEMV_XSUM, GEMV_PARTIAL, GEMV = "qgemv_xsum", "qgemv_partial", "qgemv"  # blocks the cpu rule ``QuantGemv`` schedules


def one_row_per_batch(ctx, x_type) -> bool:
    """Every dim of ``x`` between the first and the last is 1 here (a decode step: [batch, 1, K])."""
    dims = [ctx.dim(d) for d in x_type.shape[1:-1]]
    return all(isinstance(d, tirx.IntImm) and d.value == 1 for d in dims)


def quantized_gemv(ctx, x, x_type, q: PackedOperands, n: int, panels: list, p: int, bias):
    """Decode's product with packed weight panels, the scales applied once per group:

        xsum[b, g]            = sum of x over group g                        (once per panel and group)
        part[b, jo, g, ji]    = sum_{k in g} x[b, k] * code(jo, k, ji)       (integer codes, float math)
        y[b, jo, ji]          = sum_g part * scale[jo, g, ji] + xsum[b, g] * offset[jo, g, ji]

    with offset = minimum (asymmetric) or -2**(bits-1) * scale (symmetric). Each step of the inner
    loop is a shift, a mask, a conversion and one multiply-add per vector of P output features.
    """
    k_len, grid = q.k, q.grid
    size, groups = grid.group_size(k_len), grid.groups(k_len)
    per, half = grid.per_word, float(grid.levels // 2)

    def product(x, *tensors):
        words, scale = tensors[0], tensors[1]
        ks = te.reduce_axis((0, size), name="ks")
        xsum = te.compute((*x.shape[:-1], groups), lambda *i: te.sum(_x_in_group(x, i[:-1], i[-1] * size + ks, k_len),
                                                                     axis=ks), name=GEMV_XSUM)
        minimum = tensors[2] if q.minimum is not None else None
        bp = tensors[-1] if bias is not None else None
        lead, panel_count = x.shape[:-1], words.shape[0]
        kk = te.reduce_axis((0, size), name="kk")

        tail = k_len % size != 0  # a shorter last group

        def code(jo, k, ji):
            word = tirx.floordiv(k, per)
            if tail:  # past the row's last word any code will do (x is 0 there); clamping the word, not k,
                word = tirx.min(word, words.shape[1] - 1)  # keeps one index and one load for a word's codes
            return _code(words[jo, word, ji], k, grid)

        def part_body(*i):
            *b, jo, g, ji = i
            k = g * size + kk
            xk = _x_in_group(x, b, k, k_len) if tail else as_f32(x[(*b, k)])
            return te.sum(xk * code(jo, k, ji), axis=kk)

        part = te.compute((*lead, panel_count, groups, p), part_body, name=GEMV_PARTIAL)
        g = te.reduce_axis((0, groups), name="g")

        def body(*i):
            *b, jo, ji = i
            s = as_f32(scale[jo, g, ji])
            offset = as_f32(minimum[jo, g, ji]) if minimum is not None else -half * s
            return te.sum(part[(*b, jo, g, ji)] * s + xsum[(*b, g)] * offset, axis=g)

        y = te.compute((*lead, panel_count, p), body, name=GEMV)
        if bp is None:
            return y
        return te.compute(y.shape, lambda *i: y[i] + bp[i[-2], i[-1]], name="bias_add")

    extra = [] if bias is None else [ctx.panels(bias)]
    y3 = ctx.emit_te(product, x, *panels, *extra, name="dense_packed")
    count = -(-n // p)
    y = ctx.emit(relax.op.reshape(y3, [*ctx.shape(x_type.shape[:-1]), count * p]))
    return y if count * p == n else relax.op.strided_slice(y, axes=[x_type.rank - 1], begin=[0], end=[n])
