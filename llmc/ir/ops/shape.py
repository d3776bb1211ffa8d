"""Shape and data-movement ops: reshape, transpose, concat, slice, split, gather, expand,
trilu, and the generators arange and full. Sizes may be symbolic."""

from __future__ import annotations

import numpy as np
import sympy

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, Cost, OpDef, norm_axis, op, register, same_dtype
from llmc.ir.types import TensorType

_END = 2**62  # a slice end at or past this means "to the end of the axis"


def _moves_only(types, outs, attrs):
    return Cost(flops=0, bytes=S.dim(sum(t.numel * t.dtype.itemsize for t in [*types, *outs])))


@op("reshape", inputs=("x",), kind="shape", attrs={"shape": Attr("dims", doc="one entry may be -1")},
    cost_fn=lambda t, o, a: Cost())
class Reshape:
    """Same elements, new shape (row-major). One target dim may be -1 and is solved for."""

    @staticmethod
    def infer(types, attrs):
        x = types[0]
        target = list(attrs["shape"])
        holes = [i for i, d in enumerate(target) if d == -1]
        if len(holes) > 1:
            raise ShapeError(f"reshape target {target} has more than one -1")
        known = S.numel(tuple(d for d in target if d != -1))
        if holes:
            solved = S.dim(sympy.Integer(1) * x.numel / known)
            if isinstance(solved, sympy.Expr) and not solved.is_integer and not solved.free_symbols:
                raise ShapeError(f"cannot reshape {x} to {target}")
            target[holes[0]] = solved
        elif not S.same(S.numel(tuple(target)), x.numel):
            raise ShapeError(f"cannot reshape {x} ({S.dim_str(x.numel)} elements) to {S.shape_str(tuple(target))}")
        return [x.with_shape(tuple(target))]

    @staticmethod
    def reference(xs, attrs):
        return np.reshape(xs[0], attrs["shape"])


@op("transpose", inputs=("x",), kind="shape", attrs={"perm": Attr("ints")}, cost_fn=_moves_only)
class Transpose:
    """Permute axes: out.shape[i] = x.shape[perm[i]]."""

    @staticmethod
    def infer(types, attrs):
        x, perm = types[0], attrs["perm"]
        if sorted(perm) != list(range(x.rank)):
            raise ShapeError(f"transpose perm {perm} is not a permutation of {x.rank} axes")
        return [x.with_shape(tuple(x.shape[p] for p in perm))]

    @staticmethod
    def reference(xs, attrs):
        return np.transpose(xs[0], attrs["perm"])


def _concat_infer(types, attrs):
    dtype = same_dtype(types, "concat")
    rank = types[0].rank
    axis = norm_axis(attrs["axis"], rank, "concat")
    for t in types[1:]:
        if t.rank != rank or not all(S.same(a, b) for i, (a, b) in enumerate(zip(t.shape, types[0].shape)) if i != axis):
            raise ShapeError(f"concat along axis {axis} needs equal other dims, got {', '.join(map(str, types))}")
    total = S.dim(sum((t.shape[axis] for t in types), sympy.Integer(0)))
    shape = list(types[0].shape)
    shape[axis] = total
    return [TensorType(dtype, tuple(shape))]


register(
    OpDef(
        name="concat", doc="Join tensors along `axis`.", inputs=("xs",), variadic=True, kind="shape",
        attrs={"axis": Attr("int")}, infer=_concat_infer,
        reference=lambda xs, a: np.concatenate(xs, axis=a["axis"]), cost_fn=_moves_only,
    )
)


def _slice_len(size, start, end, step):
    if step > 0:
        if isinstance(size, int) and all(isinstance(v, int) for v in (start, end)):
            return len(range(*slice(start, end, step).indices(size)))
        start = size + start if isinstance(start, int) and start < 0 else start
        end = size if isinstance(end, int) and end >= _END else (size + end if isinstance(end, int) and end < 0 else end)
        return S.dim(sympy.ceiling((sympy.Integer(0) + end - start) / step))
    if not isinstance(size, int) or not all(isinstance(v, int) for v in (start, end)):
        raise ShapeError("a slice with a negative step needs static sizes")
    return len(range(*slice(start, None if end <= -_END else end, step).indices(size)))


@op("slice", inputs=("x",), kind="shape", cost_fn=_moves_only,
    attrs={"axes": Attr("ints"), "starts": Attr("dims"), "ends": Attr("dims", doc=f">= {_END} means to the end"),
           "steps": Attr("ints", ())})
class Slice:
    """x[start:end:step] along each of `axes` (Python semantics: negatives count from the end)."""

    @staticmethod
    def infer(types, attrs):
        x = types[0]
        shape = list(x.shape)
        steps = attrs["steps"] or (1,) * len(attrs["axes"])
        for axis, start, end, step in zip(attrs["axes"], attrs["starts"], attrs["ends"], steps):
            axis = norm_axis(axis, x.rank, "slice")
            if step == 0:
                raise ShapeError("slice step cannot be 0")
            shape[axis] = _slice_len(x.shape[axis], start, end, step)
        return [x.with_shape(tuple(shape))]

    @staticmethod
    def reference(xs, attrs):
        x = xs[0]
        index = [slice(None)] * x.ndim
        steps = attrs["steps"] or (1,) * len(attrs["axes"])
        for axis, start, end, step in zip(attrs["axes"], attrs["starts"], attrs["ends"], steps):
            end = None if (step > 0 and end >= _END) or (step < 0 and end <= -_END) else end
            index[axis] = slice(start, end, step)
        return x[tuple(index)]


def _split_infer(types, attrs):
    x = types[0]
    axis = norm_axis(attrs["axis"], x.rank, "split")
    sizes = attrs["sizes"]
    if not S.same(S.dim(sum(sizes, sympy.Integer(0))), x.shape[axis]):
        raise ShapeError(f"split sizes {list(sizes)} do not add up to axis {axis} of {x}")
    return [x.with_shape(tuple(s if i == axis else d for i, d in enumerate(x.shape))) for s in sizes]


def _split_ref(xs, attrs):
    bounds = np.cumsum(attrs["sizes"])[:-1]
    return np.split(xs[0], bounds, axis=attrs["axis"])


register(
    OpDef(
        name="split", doc="Cut `x` along `axis` into pieces of the given `sizes` (one output each).",
        inputs=("x",), attrs={"axis": Attr("int"), "sizes": Attr("dims")}, infer=_split_infer,
        reference=_split_ref, kind="shape", cost_fn=_moves_only,
    )
)


@op("gather", inputs=("x", "indices"), kind="gather", attrs={"axis": Attr("int", 0)}, cost_fn=_moves_only)
class Gather:
    """Pick slices of `x` along `axis` by integer `indices` (numpy.take; negatives wrap)."""

    @staticmethod
    def infer(types, attrs):
        x, idx = types
        if not idx.dtype.is_int:
            raise ShapeError(f"gather indices must be integers, got {idx}")
        axis = norm_axis(attrs["axis"], x.rank, "gather")
        return [x.with_shape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))]

    @staticmethod
    def reference(xs, attrs):
        x, idx = xs
        return np.take(x, idx, axis=attrs["axis"], mode="wrap" if (idx < 0).any() else "raise")


@op("gather_elements", inputs=("x", "indices"), kind="gather", attrs={"axis": Attr("int")}, cost_fn=_moves_only)
class GatherElements:
    """out[..., i, ...] = x[..., indices[..., i, ...], ...] along `axis` (torch.gather, ONNX GatherElements).

    `indices` has the rank of `x`; the output has the shape of `indices`. Negatives wrap.
    """

    @staticmethod
    def infer(types, attrs):
        x, idx = types
        if not idx.dtype.is_int or idx.rank != x.rank:
            raise ShapeError(f"gather_elements needs integer indices of the rank of {x}, got {idx}")
        norm_axis(attrs["axis"], x.rank, "gather_elements")
        return [x.with_shape(idx.shape)]

    @staticmethod
    def reference(xs, attrs):
        x, idx = xs
        axis = attrs["axis"] % x.ndim
        return np.take_along_axis(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)


@op("gather_nd", inputs=("x", "indices"), kind="gather", attrs={"batch_dims": Attr("int", 0)}, cost_fn=_moves_only)
class GatherNd:
    """Index the leading axes of `x` by tuples (ONNX GatherND): the last axis of `indices` (static
    length k) holds coordinates into axes [b, b + k) of `x`, after `batch_dims` b shared leading axes.

    out.shape = x.shape[:b] + indices.shape[b:-1] + x.shape[b + k:]. Negatives wrap.
    """

    @staticmethod
    def infer(types, attrs):
        x, idx = types
        b, k = attrs["batch_dims"], idx.shape[-1] if idx.rank else None
        if not idx.dtype.is_int or not isinstance(k, int) or b + k > x.rank or b >= idx.rank:
            raise ShapeError(f"gather_nd needs integer indices whose static last axis indexes {x} after {b} batch axes, got {idx}")
        return [x.with_shape((*x.shape[:b], *idx.shape[b:-1], *x.shape[b + k:]))]

    @staticmethod
    def reference(xs, attrs):
        x, idx = xs
        b, k = attrs["batch_dims"], idx.shape[-1]
        batch = x.shape[:b]
        flat_x = x.reshape((-1, *x.shape[b:]))
        flat_i = idx.reshape((flat_x.shape[0], -1, k))
        flat_i = np.where(flat_i < 0, flat_i + np.array(x.shape[b:b + k]), flat_i)
        rows = [xb[tuple(np.moveaxis(ib, -1, 0))] for xb, ib in zip(flat_x, flat_i)]
        return np.stack(rows).reshape((*batch, *idx.shape[b:-1], *x.shape[b + k:]))


@op("expand", inputs=("x",), kind="shape", attrs={"shape": Attr("dims", doc="-1 keeps the input's size")},
    cost_fn=_moves_only)
class Expand:
    """Broadcast `x` to `shape` (numpy rules; new leading axes allowed)."""

    @staticmethod
    def infer(types, attrs):
        x = types[0]
        target = list(attrs["shape"])
        offset = len(target) - x.rank
        if offset < 0:
            raise ShapeError(f"cannot expand {x} to fewer dims {target}")
        for i, d in enumerate(target):
            if d == -1:
                target[i] = x.shape[i - offset]
        return [x.with_shape(S.broadcast(x.shape, tuple(target)))]

    @staticmethod
    def reference(xs, attrs):
        x = xs[0]
        target = list(attrs["shape"])
        offset = len(target) - x.ndim
        target = [x.shape[i - offset] if d == -1 else d for i, d in enumerate(target)]
        return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(target))).copy()


@op("trilu", inputs=("x",), kind="elementwise", attrs={"upper": Attr("bool"), "k": Attr("int", 0)})
class Trilu:
    """Keep the upper (triu) or lower (tril) triangle of the last two axes, offset by diagonal `k`."""

    @staticmethod
    def infer(types, attrs):
        if types[0].rank < 2:
            raise ShapeError(f"trilu needs rank >= 2, got {types[0]}")
        return [types[0]]

    @staticmethod
    def reference(xs, attrs):
        return (np.triu if attrs["upper"] else np.tril)(xs[0], attrs["k"])


@op("arange", inputs=(), kind="shape",
    attrs={"start": Attr("dim", 0), "end": Attr("dim"), "step": Attr("int", 1), "dtype": Attr("dtype", DType.i64)})
class Arange:
    """[start, start + step, ...) below `end`; bounds may be symbolic (e.g. `past + seq`)."""

    @staticmethod
    def infer(types, attrs):
        n = S.dim(sympy.ceiling((sympy.Integer(0) + attrs["end"] - attrs["start"]) / attrs["step"]))
        return [TensorType(attrs["dtype"], (n,))]

    @staticmethod
    def reference(xs, attrs):
        return np.arange(attrs["start"], attrs["end"], attrs["step"]).astype(attrs["dtype"].np)


@op("full", inputs=(), kind="shape", attrs={"shape": Attr("dims"), "value": Attr("float"), "dtype": Attr("dtype")})
class Full:
    """A tensor of `shape` filled with `value` (shape may be symbolic)."""

    @staticmethod
    def infer(types, attrs):
        return [TensorType(attrs["dtype"], attrs["shape"])]

    @staticmethod
    def reference(xs, attrs):
        return np.full(attrs["shape"], attrs["value"], dtype=attrs["dtype"].np)
