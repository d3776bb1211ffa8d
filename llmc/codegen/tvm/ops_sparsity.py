"""``linear_nm``, ``linear_nm_q`` and ``linear_bitmap`` (``llmc.ir.ops.sparsity``) as TE kernels.

``kernel="sparse"``:

- N:M: ``y[.., o] = sum_j values[o, j] * x[.., (j // n) * m + index[o, j]]``, a reduction over
  the kept weights only. With weight panels (cpu) values and index are re-laid out at load time
  as ``[N/P, J, P]`` like every dense weight, so in a decode step a step of the reduction loads P
  values and P indices, gathers P inputs and does one vector multiply-add (cpu rule ``SparseNM``).
  A prefill chunk instead expands each reduction step's panel once (n selects per weight) and
  shares it between the rows of the register tile (the ``Dense`` rule's weight stage, like a
  packed low-bit weight), since per-row gathers cost far more than the dense product there.
- N:M with quantized values (``linear_nm_q``): the same kernels, reading each kept value as its
  4-bit code dequantized with its group's scale and minimum (``ops_quant.dequant_at``) and each
  index as a field of its packed word; pruned weights are never decoded.
- bitmap: a reduction over every k of ``bit(o, k) ? values[pos(o, k)] * x[.., k] : 0`` where
  ``pos`` is the row offset plus the set bits before k: the set bits of the earlier words of the
  row (``word_base``, computed at load time from the mask) and a ``popcount`` inside the word.
  On the cpu mask and word bases are panels like a dense weight, and each reduction step's panel
  of P weights is expanded once (bit test, popcount, gather of P values) for all rows of the
  register tile (the ``Dense`` rule's weight stage). It reads about half the bytes of the dense
  weight at 50% density but does several operations per weight.

``kernel="dense"``: W is expanded from its compressed tensors by a kernel over the weights alone,
which TVM lifts into the load-time weight transform, then the dense product runs (on the cpu the
same panel kernel as a float ``linear``). This is the cuda path for every storage: TVM 0.27 has
``mma.sp`` only as a raw PTX intrinsic, with no schedule or tensorize rule that emits it.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax import op as R

from llmc.codegen.tvm.ops_linalg import _float_panel, _packed_dense, nt_matmul
from llmc.codegen.tvm.ops_quant import _at, dequant_at, one_row_per_batch
from llmc.codegen.tvm.registry import lowers
from llmc.ir.dtypes import DType
from llmc.ir.ops.sparsity import WORD, index_grid, values_grid

NM_BLOCK = "sparse_nm"  # the decode product block the cpu rule ``SparseNM`` schedules


@lowers("linear_nm")
def linear_nm(ctx, node, args):
    def value_at(tensors, lead, slot):
        return _at(tensors[0], lead, slot)

    def index_at(tensors, lead, slot):
        return tirx.Cast("int64", _at(tensors[1], lead, slot))

    return _lower_nm(ctx, node, args[0], args[1:3], args[3] if len(args) == 4 else None, value_at, index_at)


@lowers("linear_nm_q")
def linear_nm_q(ctx, node, args):
    """``linear_nm`` with each kept value dequantized where it is read (``dequant_at``) and each
    index taken from its packed word: only kept codes are decoded."""
    attrs = node.attrs
    grid, igrid = values_grid(attrs), index_grid(attrs["m"])
    width = attrs["k"] // attrs["m"] * attrs["n"]

    def value_at(tensors, lead, slot):
        return dequant_at(grid, width, tensors[0], tensors[1], tensors[2], lead, slot)

    def index_at(tensors, lead, slot):
        word = _unsigned(_at(tensors[3], lead, slot // igrid.per_word))
        shift = tirx.Cast("uint32", (slot % igrid.per_word) * igrid.bits)
        return tirx.Cast("int64", tirx.bitwise_and(tirx.shift_right(word, shift), _u32(igrid.levels - 1)))

    return _lower_nm(ctx, node, args[0], args[1:5], args[5] if len(args) == 6 else None, value_at, index_at)


def _lower_nm(ctx, node, x, tensors, bias, value_at, index_at):
    """An N:M product of ``x`` and its weight ``tensors``: ``value_at(tensors, lead, slot)`` and
    ``index_at(...)`` read kept weight ``slot`` of row ``lead`` ((o,), or (jo, ji) in panels)."""
    n, m, k = node.attrs["n"], node.attrs["m"], node.attrs["k"]
    x_type, out = node.inputs[0].type, node.inputs[1].type.shape[0]

    def weight(ts, lead, kk, dtype):
        return _nm_at(ts, lead, kk, n, m, value_at, index_at, dtype)

    if node.attrs["kernel"] == "dense":
        dtype = ctx.dtype(DType.f32)  # the compute dtype (float16 with cuda --dtype float16)

        def expand(*ts):
            return te.compute((out, k), lambda o, kk: weight(ts, (o,), kk, dtype), name="expand_nm")

        w = ctx.emit_te(expand, *tensors, name="expand_nm")
        return _dense(ctx, x, x_type, w, out, bias)
    p = ctx.options.pack_weights if x_type.rank >= 2 else 0
    tensors = [ctx.panels(t) for t in tensors] if p else list(tensors)
    if p and not one_row_per_batch(ctx, x_type):  # prefill: each step's panel expanded once for every row

        def weight_at(ts, jo, kk, ji, dtype):
            return weight(ts, (jo, ji), kk, dtype)

        return _packed_dense(ctx, x, x_type, tensors, weight_at, out, bias, stage=True)
    width = k // m * n

    def product(x, *ts):
        j = te.reduce_axis((0, width), name="j")
        rows = len(x.shape) - 1

        def body(*i):
            lead = (i[-2], i[-1]) if p else (i[-1],)
            column = (j // n) * m + index_at(ts, lead, j)
            return te.sum(tirx.Cast(x.dtype, value_at(ts, lead, j)) * x[(*i[:rows], column)], axis=j)

        shape = [*x.shape[:-1], -(-out // p), p] if p else [*x.shape[:-1], out]
        return te.compute(shape, body, name=NM_BLOCK)

    y = ctx.emit_te(product, x, *tensors, name=node.op)
    if p:
        y = ctx.emit(R.reshape(y, [*ctx.shape(x_type.shape[:-1]), -(-out // p) * p]))
        if -(-out // p) * p != out:
            y = ctx.emit(R.strided_slice(y, axes=[x_type.rank - 1], begin=[0], end=[out]))
    return y if bias is None else R.add(y, bias)


def _nm_at(tensors, lead, kk, n: int, m: int, value_at, index_at, dtype: str) -> tirx.PrimExpr:
    """W[lead, kk] from N:M tensors ([N, J], or panels [N/P, J, P] with ``lead`` = (jo, ji)): the n
    slots of kk's group summed as one expression (elementwise: no reduction loop to schedule), in ``dtype``."""
    total = None
    for j in range(n):
        slot = (kk // m) * n + j
        value = tirx.Cast(dtype, value_at(tensors, lead, slot))
        kept = tirx.Select(index_at(tensors, lead, slot) == kk % m, value, tirx.const(0.0, dtype))
        total = kept if total is None else total + kept
    return total


@lowers("linear_bitmap")
def linear_bitmap(ctx, node, args):
    k = node.attrs["k"]
    x_type = node.inputs[0].type
    out, words = node.inputs[2].type.shape
    nnz = max(int(node.inputs[1].type.shape[0]), 1)
    bias = args[4] if len(args) == 5 else None

    def word_base(mask, offsets):
        v = te.reduce_axis((0, words), name="v")
        before = te.compute((out, words), lambda o, w: te.sum(
            tirx.Select(v < w, _popcount(_unsigned(mask[o, v])), tirx.const(0, "int32")), axis=v), name="bits_before")
        return te.compute((out, words), lambda o, w: before[o, w] + offsets[o], name="word_base")

    base = ctx.emit_te(word_base, args[2], args[3], name="bitmap_word_base")

    if node.attrs["kernel"] == "dense":
        w = ctx.emit_te(lambda values, mask, base: te.compute(
            (out, k), lambda o, kk: _bitmap_at(values, mask, base, (o,), kk, nnz), name="expand_bitmap"),
            args[1], args[2], base, name="expand_bitmap")
        return _dense(ctx, args[0], x_type, w, out, bias)
    if ctx.options.pack_weights and x_type.rank >= 2:  # the cpu: panels of P rows, expanded per reduction step

        def weight_at(tensors, jo, kk, ji, dtype):
            return _bitmap_at(*tensors, (jo, ji), kk, nnz).astype(dtype)

        panels = [args[1], ctx.panels(args[2]), ctx.panels(base)]
        return _packed_dense(ctx, args[0], x_type, panels, weight_at, out, bias, stage=True)

    def product(x, values, mask, base):
        kk = te.reduce_axis((0, k), name="k")
        rows = len(x.shape) - 1
        return te.compute([*x.shape[:-1], out], lambda *i: te.sum(
            _bitmap_at(values, mask, base, (i[-1],), kk, nnz) * x[(*i[:rows], kk)], axis=kk), name="sparse_bitmap")

    y = ctx.emit_te(product, args[0], args[1], args[2], base, name="linear_bitmap")
    return y if bias is None else R.add(y, bias)


def _bitmap_at(values, mask, base, lead, kk, nnz: int) -> tirx.PrimExpr:
    """W[lead, kk] from the bitmap tensors (mask and word bases [N, words], or panels [N/P, words, P]
    with ``lead`` = (jo, ji)): the bit of kk, and the value at the row's offset plus the set bits before it."""
    at = (lead[0], kk // WORD) if len(lead) == 1 else (lead[0], kk // WORD, lead[1])
    word = _unsigned(mask[at])  # all bit math in uint32: int32 would be widened to int64
    shift = tirx.Cast("uint32", kk % WORD)
    bit = tirx.bitwise_and(tirx.shift_right(word, shift), _u32(1))
    below = tirx.bitwise_and(word, tirx.shift_left(_u32(1), shift) - _u32(1))
    pos = tirx.min(base[at] + _popcount(below), nnz - 1)
    return tirx.Select(bit == _u32(1), values[pos], tirx.const(0.0, values.dtype))


def _unsigned(word) -> tirx.PrimExpr:
    word = word.asobject() if hasattr(word, "asobject") else word
    return tirx.reinterpret("uint32", word)


def _u32(v: int) -> tirx.PrimExpr:
    return tirx.const(v, "uint32")


def _popcount(u) -> tirx.PrimExpr:
    """Set bits of a uint32, as int32, by the SWAR bit count (plain integer ops, so it vectorizes;
    LLVM codegen of TVM's ``popcount`` fails on vectors)."""
    u = u - tirx.bitwise_and(tirx.shift_right(u, _u32(1)), _u32(0x55555555))
    u = tirx.bitwise_and(u, _u32(0x33333333)) + tirx.bitwise_and(tirx.shift_right(u, _u32(2)), _u32(0x33333333))
    u = tirx.bitwise_and(u + tirx.shift_right(u, _u32(4)), _u32(0x0F0F0F0F))
    return tirx.Cast("int32", tirx.shift_right(u * _u32(0x01010101), _u32(24)))


def _dense(ctx, x, x_type, w, out: int, bias):
    """The dense product with ``w`` (expanded from the weights only, so computed at load time)."""
    if ctx.options.pack_weights and x_type.rank >= 2:
        return _packed_dense(ctx, x, x_type, [ctx.panels(w)], _float_panel, out, bias)
    y = nt_matmul(ctx, x, w)
    return y if bias is None else R.add(y, bias)

