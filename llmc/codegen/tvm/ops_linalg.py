"""``matmul`` and ``linear``.

By default ``matmul`` is Relax ``matmul`` and ``linear`` a TE "NT" product
``y[..., n] = sum_k x[..., k] * W[n, k]`` (the form dlight's Matmul/GEMV rules take, with no
transposed copy of W). When the lowering packs weights
(``LowerOptions.pack_weights = P``, the cpu target), a constant 2-D weight is re-laid out as
panels ``Wp[n // P, k, n % P]`` (zero-padded) by a Relax ``layout_transform`` that TVM lifts
into the load-time parameter transform, and the product is a TE kernel reading the panels, so
the schedule's innermost loop runs over P contiguous output features (a narrower P, whole
vectors, where that divides the output features and P does not: ``LowerContext.panel_width``).
"""

from __future__ import annotations

from tvm import te
from tvm.relax import op as R

from llmc.codegen.tvm.ops_quant import dequant_at, one_row_per_batch, packed_operands, quantized_gemv
from llmc.codegen.tvm.registry import lowers

WEIGHT_STAGE = "dequantize_panel"  # the stage a schedule computes once per reduction step


@lowers("matmul")
def matmul(ctx, node, args):
    a, b = node.inputs
    if _packable(ctx, a.type, b):
        p = ctx.panel_width(b.type.shape[1])
        packed = ctx.panels(args[1], transposed=True, width=p)
        return _packed_dense(ctx, args[0], a.type, [packed], _float_panel, b.type.shape[1], width=p)
    return R.matmul(args[0], args[1])


@lowers("linear")
def linear(ctx, node, args):
    x, w = node.inputs[0], node.inputs[1]
    bias = args[2] if len(args) == 3 else None
    q = packed_operands(ctx, w)
    if q is not None:
        return _quantized_linear(ctx, args[0], x.type, q, w.type.shape[0], bias)
    if _packable(ctx, x.type, w):
        p = ctx.panel_width(w.type.shape[0])
        packed = ctx.panels(args[1], width=p)
        return _packed_dense(ctx, args[0], x.type, [packed], _float_panel, w.type.shape[0], bias, width=p)
    y = nt_matmul(ctx, args[0], args[1])
    return y if bias is None else R.add(y, bias)


def _quantized_linear(ctx, x, x_type, q, n: int, bias):
    """x @ W^T with W read from its packed codes inside the reduction loop (never a float matrix).

    With weight panels (cpu) the words, scales and minimums are re-laid out as panels
    ``[N/P, words or groups, P]`` at load time, so each step of the reduction loads P
    consecutive words and P scales, and one shift serves the whole vector of output features.
    """
    if ctx.options.pack_weights and x_type.rank >= 2:
        p = ctx.options.pack_weights
        panels = [ctx.panels(t) for t in q.tensors]
        if one_row_per_batch(ctx, x_type) and q.grid.groups(q.k) > 1:
            return quantized_gemv(ctx, x, x_type, q, n, panels, p, bias)

        def weight_at(tensors, jo, k, ji, dtype):
            minimum = tensors[2] if len(tensors) == 3 else None
            return dequant_at(q.grid, q.k, tensors[0], tensors[1], minimum, (jo, ji), k).astype(dtype)

        return _packed_dense(ctx, x, x_type, panels, weight_at, n, bias, stage=True)

    def compute(x, words, scale, *minimum):
        low = minimum[0] if minimum else None
        w = te.compute((n, q.k), lambda i, k: dequant_at(q.grid, q.k, words, scale, low, i, k).astype(x.dtype),
                       name="dequantize")
        k = te.reduce_axis((0, q.k), name="k")
        return te.compute([*x.shape[:-1], n], lambda *i: te.sum(x[(*i[:-1], k)] * w[i[-1], k], axis=k),
                          name="NT_matmul")

    y = ctx.emit_te(compute, x, *q.tensors, name="quantized_matmul")
    return y if bias is None else R.add(y, bias)


def nt_matmul(ctx, a, b):
    """out[..., i, n] = sum_k a[..., i, k] * b[..., n, k]; b's batch dims (if any) match a's."""

    def compute(a, b):
        k = te.reduce_axis((0, a.shape[-1]), name="k")
        b_batch = len(b.shape) - 2

        def body(*i):
            rows = len(i) - 2  # a's batch dims; b's are its trailing b_batch ones
            return te.sum(a[(*i[:-1], k)] * b[(*i[rows - b_batch:rows], i[-1], k)], axis=k)

        return te.compute([*a.shape[:-1], b.shape[-2]], body, name="NT_matmul")

    return ctx.emit_te(compute, a, b, name="NT_matmul")


def _packable(ctx, x_type, weight) -> bool:
    return bool(ctx.options.pack_weights) and weight.is_const and weight.type.rank == 2 and x_type.rank >= 2




def _float_panel(tensors, jo, k, ji, _dtype):
    return tensors[0][jo, k, ji]


def _packed_dense(ctx, x, x_type, weights, weight_at, n: int, bias=None, stage: bool = False, width: int = 0):
    """y = x @ W (+ b) from panels of ``width`` (default ``pack_weights``) output features:
    y3[..., i, jo, ji] = sum_k x[..., i, k] * Wp[jo, k, ji] (+ bp[jo, ji]).

    Written as an einsum (every index a plain loop variable) so schedules can pad and tile it,
    with the bias (re-laid out as panels too) as its epilogue; the reshape back to [..., n] is a
    free view, and a slice drops the zero padding of the last panel (a kernel of its own).
    """
    p = width or ctx.options.pack_weights
    panels = -(-n // p)

    def compute(x, *tensors):
        wt, bp = tensors[:len(weights)], tensors[len(weights):]
        k = te.reduce_axis((0, x.shape[-1]), name="k")
        shape = [*x.shape[:-1], panels, p]
        if stage:  # a weight worth computing once per reduction step, for all rows (see the cpu rule Dense)
            w = te.compute((panels, x.shape[-1], p), lambda jo, kk, ji: weight_at(wt, jo, kk, ji, x.dtype),
                           name=WEIGHT_STAGE)
            at = lambda jo, kk, ji: w[jo, kk, ji]
        else:
            at = lambda jo, kk, ji: weight_at(wt, jo, kk, ji, x.dtype)
        y = te.compute(shape, lambda *i: te.sum(x[(*i[:-2], k)] * at(i[-2], k, i[-1]), axis=k), name="dense")
        if not bp:
            return y
        return te.compute(shape, lambda *i: y[i] + bp[0][i[-2], i[-1]], name="bias_add")

    extra = [] if bias is None else [ctx.panels(bias, width=p)]
    y3 = ctx.emit_te(compute, x, *weights, *extra, name="dense_packed")
    y = R.reshape(y3, [*ctx.shape(x_type.shape[:-1]), panels * p])
    if panels * p == n:
        return y
    return R.strided_slice(ctx.emit(y), axes=[x_type.rank - 1], begin=[0], end=[n])
