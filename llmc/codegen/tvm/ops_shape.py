"""Shape and data-movement ops; output shapes come from the IR's own type inference.

reshape/transpose/concat/expand/trilu/full and ``gather`` (Relax ``take``, whose ``wrap``
mode gives numpy's negative indices) are Relax ops. ``slice``, ``split``,
``gather_elements``, ``gather_nd`` and ``arange`` are small TE kernels: they follow llmc's
Python-slice and negative-index semantics exactly, with symbolic starts and sizes.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax import op as R

from llmc.codegen.tvm.registry import lowers
from llmc.ir.ops.shape import _END


@lowers("reshape")
def reshape(ctx, node, args):
    return R.reshape(args[0], ctx.shape(node.outputs[0].type.shape))


@lowers("transpose")
def transpose(ctx, node, args):
    return R.permute_dims(args[0], list(node.attrs["perm"]))


@lowers("concat")
def concat(ctx, node, args):
    """A TE kernel whose output shape is the IR's (Relax's concat can write a symbolic size as
    ``1 + seq`` where its consumers read ``seq + 1``, and FuseTIR then refuses to fuse them)."""
    axis = node.attrs["axis"] % node.inputs[0].type.rank
    starts, sizes, total = [], [], 0
    for v in node.inputs:
        starts.append(ctx.dim(total))
        sizes.append(ctx.dim(v.type.shape[axis]))
        total = total + v.type.shape[axis]
    shape = ctx.shape(node.outputs[0].type.shape)

    def compute(*xs):
        def piece(p, i):
            at = tirx.max(tirx.min(i[axis] - starts[p], sizes[p] - 1), 0)  # clamped: both branches stay in bounds
            return xs[p][(*i[:axis], at, *i[axis + 1:])]

        def body(*i):
            value = piece(len(xs) - 1, i)
            for p in reversed(range(len(xs) - 1)):
                value = tirx.if_then_else(i[axis] < starts[p + 1], piece(p, i), value)
            return value

        return te.compute(shape, body, name="concat")

    return ctx.emit_te(compute, *args, name="concat")


@lowers("expand")
def expand(ctx, node, args):
    return R.broadcast_to(args[0], ctx.shape(node.outputs[0].type.shape))


@lowers("trilu")
def trilu(ctx, node, args):
    return (R.triu if node.attrs["upper"] else R.tril)(args[0], node.attrs["k"])


@lowers("full")
def full(ctx, node, args):
    dtype = node.attrs["dtype"]
    return R.full(ctx.shape(node.attrs["shape"]), ctx.const(node.attrs["value"], dtype), ctx.dtype(dtype))


@lowers("gather")
def gather(ctx, node, args):
    return R.take(args[0], args[1], node.attrs["axis"] % node.inputs[0].type.rank, mode="wrap")


@lowers("slice")
def slice_(ctx, node, args):
    x_type = node.inputs[0].type
    a = node.attrs
    steps = a["steps"] or (1,) * len(a["axes"])
    starts = {}
    for axis, start, end, step in zip(a["axes"], a["starts"], a["ends"], steps):
        axis %= x_type.rank
        starts[axis] = (ctx.dim(_first_index(x_type.shape[axis], start, end, step)), step)
    return offset_view(ctx, args[0], node.outputs[0].type.shape, starts, "slice")


@lowers("split")
def split(ctx, node, args):
    axis = node.attrs["axis"] % node.inputs[0].type.rank
    outs, offset = [], 0
    for value in node.outputs:
        outs.append(offset_view(ctx, args[0], value.type.shape, {axis: (ctx.dim(offset), 1)}, "split"))
        offset = offset + value.type.shape[axis]
    return outs


@lowers("gather_elements")
def gather_elements(ctx, node, args):
    axis = node.attrs["axis"] % node.inputs[0].type.rank

    def compute(x, idx):
        def body(*i):
            src = list(i)
            src[axis] = _wrap(idx[i], x.shape[axis])
            return x[tuple(src)]

        return te.compute(idx.shape, body, name="gather_elements")

    return ctx.emit_te(compute, *args, name="gather_elements")


@lowers("gather_nd")
def gather_nd(ctx, node, args):
    b = node.attrs["batch_dims"]
    k = node.inputs[1].type.shape[-1]
    out_shape = ctx.shape(node.outputs[0].type.shape)
    idx_rank = node.inputs[1].type.rank

    def compute(x, idx):
        def body(*o):
            lead = o[: idx_rank - 1]  # batch axes, then the indices' own axes
            coords = [_wrap(idx[(*lead, tirx.IntImm("int64", j))], x.shape[b + j]) for j in range(k)]
            return x[(*o[:b], *coords, *o[idx_rank - 1:])]

        return te.compute(out_shape, body, name="gather_nd")

    return ctx.emit_te(compute, *args, name="gather_nd")


@lowers("arange")
def arange(ctx, node, args):
    """start + i * step; a symbolic start is passed to the kernel as a scalar argument (a size
    the output shape does not carry, e.g. ``arange(past, past + 1)``)."""
    a = node.attrs
    step, dtype = a["step"], ctx.dtype(a["dtype"])
    n = ctx.shape(node.outputs[0].type.shape)

    def compute(start):
        return te.compute(n, lambda i: tirx.Cast(dtype, start + i * step), name="arange")

    start = ctx.dim(a["start"])
    if isinstance(start, tirx.IntImm):
        return ctx.emit_te(lambda: compute(start), name="arange")
    return ctx.emit_te(compute, start, name="arange")


def _first_index(size, start, end, step):
    """The index of a slice's first element (Python semantics; symbolic sizes take starts as given)."""
    if isinstance(size, int) and isinstance(start, int) and isinstance(end, int):
        stop = None if abs(end) >= _END else end
        return slice(start, stop, step).indices(size)[0]
    if isinstance(start, int) and start < 0:
        return size + start
    return start


def offset_view(ctx, x, out_shape, starts: dict, name: str):
    """out[i] = x[i] except x[start + i * step] along the axes in ``starts``."""
    shape = ctx.shape(out_shape)
    axes = sorted(starts)
    steps = [starts[a][1] for a in axes]
    offsets = [starts[a][0] for a in axes]
    scalars = [i for i, o in enumerate(offsets) if not isinstance(o, tirx.IntImm)]

    def compute(x, *symbolic):  # symbolic starts (``seq - 1``) are passed to the kernel as scalars
        first = list(offsets)
        for i, value in zip(scalars, symbolic):
            first[i] = value
        at = {a: (f, s) for a, f, s in zip(axes, first, steps)}

        def body(*i):
            return x[tuple(at[a][0] + i[a] * at[a][1] if a in at else i[a] for a in range(len(i)))]

        return te.compute(shape, body, name=name)

    return ctx.emit_te(compute, x, *(offsets[i] for i in scalars), name=name)


def _wrap(index, size):
    """A possibly negative index as a position (numpy wrap for indices in [-size, size))."""
    index = tirx.Cast("int64", index)
    return tirx.if_then_else(index < 0, index + size, index)
