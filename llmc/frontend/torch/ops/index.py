"""Indexing: embedding lookups, ``index_select``, advanced indexing (``x[i, j]``) and ``gather``.

llmc's ``gather`` picks slices along one axis. Indexing several axes at once is lowered onto
it: the indexed axes are merged into one and the index tensors combined into one flat index
(``i * size_j + j``), which broadcasts exactly as torch broadcasts the index tensors.
"""

from __future__ import annotations

from llmc.frontend.torch.emitter import Emitter, NotConvertible
from llmc.frontend.torch.ops import aten
from llmc.ir import Value
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType


@aten("embedding.default")
def embedding(cx: Emitter, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return cx.call("embedding", weight, indices)


@aten("index_select.default")
def index_select(cx: Emitter, self, dim, index):
    return cx.call("gather", self, index, axis=dim % self.type.rank)


@aten("index.Tensor")
def index(cx: Emitter, self, indices):
    picked = {axis: idx for axis, idx in enumerate(indices) if idx is not None}
    if any(idx.type.dtype == DType.bool for idx in picked.values()):
        raise NotConvertible("indexing with a boolean mask (the result's shape depends on the data)")
    if len(picked) == 1:
        (axis, idx), = picked.items()
        return cx.call("gather", self, idx, axis=axis)
    return advanced_index(cx, self, picked)


@aten("gather.default")
def gather(cx: Emitter, self, dim, index, sparse_grad=False):
    """``out[i, j] = self[i, index[i, j]]`` (dim 1): every other axis is indexed by its position."""
    rank = index.type.rank
    dim = dim % rank
    picked = {}
    for axis in range(rank):
        if axis == dim:
            picked[axis] = index
        else:
            where = [1] * rank
            where[axis] = index.type.shape[axis]
            picked[axis] = cx.reshape(cx.call("arange", end=index.type.shape[axis], dtype=DType.i64), where)
    return advanced_index(cx, self, picked)


def advanced_index(cx: Emitter, x: Value, picked: dict[int, Value]) -> Value:
    """``x[..., picked[a], ...]`` with integer index tensors on several axes (torch/numpy rules).

    As in torch, the broadcast index shape replaces the indexed axes where they are adjacent,
    and goes first when they are not.
    """
    axes = sorted(picked)
    if axes != list(range(axes[0], axes[-1] + 1)):
        rest = [a for a in range(x.type.rank) if a not in picked]
        x = cx.transpose(x, axes + rest)
        picked = {i: picked[a] for i, a in enumerate(axes)}
        axes = list(range(len(axes)))
    first, last = axes[0], axes[-1]
    shape = x.type.shape
    merged = cx.reshape(x, (*shape[:first], S.numel(shape[first:last + 1]), *shape[last + 1:]))
    flat = None
    for axis in axes:
        size = cx.size(shape[axis])
        i = cx.cast(picked[axis], DType.i64)
        i = cx.call("mod", cx.call("add", i, size), size)  # negative indices count from the end
        flat = i if flat is None else cx.call("add", cx.call("mul", flat, size), i)
    return cx.call("gather", merged, flat, axis=first)
