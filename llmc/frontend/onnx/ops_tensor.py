"""Converters for shapes, constants and data movement.

``Shape``, ``Size`` and ``Constant`` produce known values (see ``shapes``); the others emit IR
with their shape arguments as attributes, symbolic where the model's dims are.
"""

from __future__ import annotations

import numpy as np
import sympy

from llmc.frontend.onnx import shapes
from llmc.frontend.onnx.context import NodeCx, TensorSequence, converter
from llmc.frontend.onnx.reader import tensor_weight
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.tensor import ArrayWeight


@converter("Shape")
def _shape(cx: NodeCx):
    dims = cx.type(0).shape
    return shapes.dims_array(dims[cx.attr("start", 0): cx.attr("end", len(dims))])


@converter("Size")
def _size(cx: NodeCx):
    return shapes.normalize(np.array(cx.type(0).numel, dtype=object))


_CONSTANT_FORMS = {
    "value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64,
}


@converter("Constant")
def _constant(cx: NodeCx):
    if "value" in cx.attrs:
        return tensor_weight(cx.attrs["value"], cx.importer.source)
    for key, dtype in _CONSTANT_FORMS.items():
        if key in cx.attrs:
            return ArrayWeight(np.array(cx.attrs[key], dtype=dtype))
    raise cx.fail(f"a constant given as {', '.join(cx.attrs) or 'nothing'}")


@converter("ConstantOfShape")
def _constant_of_shape(cx: NodeCx):
    """Reached only for symbolic shapes (static ones fold): a ``full`` node."""
    value = shapes.fill_value(cx.attrs)
    return cx.call("full", shape=cx.dims(0, "shape"), value=float(value), dtype=DType.from_numpy(value.dtype))


@converter("Range")
def _range(cx: NodeCx):
    """Reached only for symbolic bounds (static ones fold): an ``arange`` node."""
    (start,), (end,) = cx.dims(0, "start"), cx.dims(1, "limit")
    (step,) = cx.ints(2, "delta")
    return cx.call("arange", start=start, end=end, step=step, dtype=cx.type(0).dtype)


@converter("Reshape")
def _reshape(cx: NodeCx):
    x = cx.value(0)
    return cx.call("reshape", x, shape=shapes.reshape_target(cx.dims(1, "target shape"), x.type.shape, cx.attrs))


@converter("Flatten")
def _flatten(cx: NodeCx):
    x = cx.value(0)
    axis = cx.attr("axis", 1)
    axis = axis + x.type.rank if axis < 0 else axis  # in [0, rank]: rank flattens to [numel, 1]
    return cx.call("reshape", x, shape=(S.numel(x.type.shape[:axis]), S.numel(x.type.shape[axis:])))


@converter("Squeeze")
def _squeeze(cx: NodeCx):
    x = cx.value(0)
    if cx.has(1):
        axes = {a % x.type.rank for a in cx.ints(1, "axes")}
    else:
        axes = {i for i, d in enumerate(x.type.shape) if d == 1}
    return cx.call("reshape", x, shape=[d for i, d in enumerate(x.type.shape) if i not in axes])


@converter("Unsqueeze")
def _unsqueeze(cx: NodeCx):
    x = cx.value(0)
    axes = cx.ints(1, "axes")
    rank = x.type.rank + len(axes)
    axes = {a % rank for a in axes}
    rest = iter(x.type.shape)
    return cx.call("reshape", x, shape=[1 if i in axes else next(rest) for i in range(rank)])


@converter("Transpose")
def _transpose(cx: NodeCx):
    x = cx.value(0)
    return cx.call("transpose", x, perm=cx.attr("perm", tuple(reversed(range(x.type.rank)))))


@converter("Concat")
def _concat(cx: NodeCx):
    return cx.call("concat", *cx.values(), axis=cx.attr("axis"))


@converter("Split")
def _split(cx: NodeCx):
    x = cx.value(0)
    axis = cx.attr("axis", 0) % x.type.rank
    if cx.has(1):
        sizes = cx.dims(1, "split sizes")
    else:
        n = cx.attr("num_outputs", len(cx.node.output))
        chunk = S.dim(sympy.ceiling(sympy.Integer(1) * x.type.shape[axis] / n))
        sizes = [chunk] * (n - 1) + [S.dim(x.type.shape[axis] - chunk * (n - 1))]
    return list(_pieces(cx, x, axis, sizes))


def _pieces(cx: NodeCx, x, axis: int, sizes) -> tuple:
    out = cx.call("split", x, axis=axis, sizes=sizes)
    return out if isinstance(out, tuple) else (out,)


@converter("SplitToSequence")
def _split_to_sequence(cx: NodeCx):
    x = cx.value(0)
    axis = cx.attr("axis", 0) % x.type.rank
    size = x.type.shape[axis]
    if cx.has(1):
        split = cx.dims(1, "split")
        if cx.known(1).ndim == 0:  # one chunk length: equal chunks, the last one shorter
            (chunk,) = split
            if not isinstance(size, int):
                raise cx.fail("a chunk length over a symbolic axis")
            split = [chunk] * (size // chunk) + ([size % chunk] if size % chunk else [])
    elif isinstance(size, int):
        split = [1] * size
    else:
        raise cx.fail("splitting a symbolic axis into single elements")
    parts = _pieces(cx, x, axis, split)
    if not cx.has(1) and not cx.attr("keepdims", 1):
        parts = tuple(cx.call("reshape", p, shape=p.type.shape[:axis] + p.type.shape[axis + 1:]) for p in parts)
    return TensorSequence(parts)


@converter("SequenceAt")
def _sequence_at(cx: NodeCx):
    (position,) = cx.ints(1, "position")
    return cx.sequence(0)[position]


@converter("Slice")
def _slice(cx: NodeCx):
    x = cx.value(0)
    starts, ends = cx.dims(1, "starts"), cx.dims(2, "ends")
    axes = cx.ints(3, "axes") if cx.has(3) else list(range(len(starts)))
    steps = cx.ints(4, "steps") if cx.has(4) else [1] * len(starts)
    return cx.call("slice", x, axes=[a % x.type.rank for a in axes], starts=starts, ends=ends, steps=steps)


@converter("Gather")
def _gather(cx: NodeCx):
    """Rows of a constant matrix picked by ids are an ``embedding``; anything else a ``gather``."""
    x, ids = cx.value(0), cx.value(1)
    axis = cx.attr("axis", 0)
    if x.is_const and x.type.rank == 2 and axis == 0:
        return cx.call("embedding", x, ids)
    return cx.call("gather", x, ids, axis=axis)


@converter("GatherElements")
def _gather_elements(cx: NodeCx):
    return cx.call("gather_elements", cx.value(0), cx.value(1), axis=cx.attr("axis", 0))


@converter("GatherND")
def _gather_nd(cx: NodeCx):
    return cx.call("gather_nd", cx.value(0), cx.value(1), batch_dims=cx.attr("batch_dims", 0))


@converter("Expand")
def _expand(cx: NodeCx):
    return cx.call("expand", cx.value(0), shape=cx.dims(1, "target shape"))


@converter("Pad")
def _pad(cx: NodeCx):
    x = cx.value(0)
    mode = cx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise cx.fail(f"mode {mode}")
    given = cx.ints(1, "pads")
    rank = x.type.rank
    axes = [a % rank for a in cx.ints(3, "axes")] if cx.has(3) else list(range(rank))
    pads = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        pads[axis], pads[rank + axis] = given[i], given[len(axes) + i]
    value = cx.known(2)
    if cx.has(2) and value is None:
        raise cx.fail("a pad value computed at run time")
    return cx.call("pad", x, pads=pads, mode=mode, value=0.0 if value is None else float(value.reshape(())))


@converter("Trilu")
def _trilu(cx: NodeCx):
    (k,) = cx.ints(1, "k") if cx.has(1) else (0,)
    return cx.call("trilu", cx.value(0), upper=bool(cx.attr("upper", 1)), k=k)

