"""Views, layout changes, copies, joins and splits, and tensor factories.

Sizes may be symbolic: torch's ``SymInt`` arguments arrive here already as llmc dims (``seq``,
``seq + 1``), so ``view(x, [1, seq, -1, 16])`` becomes ``reshape(shape=(1, seq, -1, 16))``.
"""

from __future__ import annotations

from llmc.frontend.torch.emitter import Emitter, NotConvertible
from llmc.frontend.torch.ops import aten
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType

_BIG = 2**62  # torch writes "to the end" as a huge slice end (sys.maxsize)


def _axis(dim: int, rank: int) -> int:
    return dim % rank if rank else 0


# -- identities and casts ---------------------------------------------------------------------


@aten("clone.default", "contiguous.default", "detach.default", "alias.default", "lift_fresh_copy.default",
      "_to_copy.default", "to.dtype", "to.dtype_layout", "to.device", "to.other", "type_as.default")
def copy(cx: Emitter, self, **_):
    """Copies and dtype/device moves: the same values, cast to the result dtype."""
    return cx.cast(self, cx.out_dtype)


@aten("dropout.default")
def dropout(cx: Emitter, input, p, train):
    if train and p > 0:
        raise NotConvertible("dropout in training mode (call model.eval())")
    return input


# -- views ------------------------------------------------------------------------------------


@aten("view.default", "_unsafe_view.default", "reshape.default", "view_copy.default")
def view(cx: Emitter, self, size):
    return cx.reshape(self, size)


@aten("flatten.using_ints")
def flatten(cx: Emitter, self, start_dim=0, end_dim=-1):
    shape = self.type.shape
    if not shape:
        return cx.reshape(self, (1,))
    s, e = _axis(start_dim, len(shape)), _axis(end_dim, len(shape))
    return cx.reshape(self, (*shape[:s], S.numel(shape[s:e + 1]), *shape[e + 1:]))


@aten("unflatten.int")
def unflatten(cx: Emitter, self, dim, sizes):
    shape = self.type.shape
    d = _axis(dim, len(shape))
    return cx.reshape(self, (*shape[:d], *sizes, *shape[d + 1:]))


@aten("unsqueeze.default")
def unsqueeze(cx: Emitter, self, dim):
    shape = list(self.type.shape)
    shape.insert(_axis(dim, len(shape) + 1), 1)
    return cx.reshape(self, shape)


@aten("squeeze.default", "squeeze.dim", "squeeze.dims")
def squeeze(cx: Emitter, self, dim=None):
    shape = self.type.shape
    dims = range(len(shape)) if dim is None else [dim] if isinstance(dim, int) else dim
    drop = {_axis(d, len(shape)) for d in dims if shape[_axis(d, len(shape))] == 1}
    return cx.reshape(self, [d for i, d in enumerate(shape) if i not in drop])


@aten("permute.default")
def permute(cx: Emitter, self, dims):
    return cx.transpose(self, dims)


@aten("transpose.int")
def transpose(cx: Emitter, self, dim0, dim1):
    perm = list(range(self.type.rank))
    a, b = _axis(dim0, self.type.rank), _axis(dim1, self.type.rank)
    perm[a], perm[b] = perm[b], perm[a]
    return cx.transpose(self, perm)


@aten("t.default", "numpy_T.default")
def t(cx: Emitter, self):
    return cx.transpose(self, list(reversed(range(self.type.rank))))


@aten("expand.default", "expand_copy.default")
def expand(cx: Emitter, self, size, implicit=False):
    if len(size) == self.type.rank and all(s == -1 or S.same(s, d) for s, d in zip(size, self.type.shape)):
        return self
    return cx.call("expand", self, shape=size)


@aten("repeat.default")
def repeat(cx: Emitter, self, repeats):
    """Tile: ``[d0, d1]`` repeated ``(r0, r1)`` is ``[1, d0, 1, d1]`` expanded to ``[r0, d0, r1, d1]``."""
    shape = (1,) * (len(repeats) - self.type.rank) + tuple(self.type.shape)
    spread = [v for d in shape for v in (1, d)]
    tiled = [v for r, d in zip(repeats, shape) for v in (r, d)]
    x = cx.call("expand", cx.reshape(self, spread), shape=tiled)
    return cx.reshape(x, [S.dim(r * d) for r, d in zip(repeats, shape)])


# -- slicing, joining, splitting --------------------------------------------------------------


@aten("slice.Tensor", "slice_copy.Tensor")
def slice_(cx: Emitter, self, dim=0, start=None, end=None, step=1):
    axis = _axis(dim, self.type.rank)
    size = self.type.shape[axis]
    start = 0 if start is None else start
    if end is None or (isinstance(end, int) and (end >= _BIG or (isinstance(size, int) and end > size))):
        end = size
    if start == 0 and step == 1 and S.same(end, size):
        return self
    return cx.call("slice", self, axes=(axis,), starts=(start,), ends=(end,), steps=(step,))


@aten("select.int")
def select(cx: Emitter, self, dim, index):
    return cx.call("gather", self, cx.tensor(index, DType.i64), axis=_axis(dim, self.type.rank))


@aten("cat.default")
def cat(cx: Emitter, tensors, dim=0):
    parts = [cx.cast(x, cx.out_dtype) for x in tensors]
    return parts[0] if len(parts) == 1 else cx.call("concat", *parts, axis=_axis(dim, parts[0].type.rank))


def _split_as_torch(cx: Emitter, x, dim):
    """Split ``x`` along ``dim`` into the pieces torch computed (their sizes from ``cx.expected``)."""
    axis = _axis(dim, x.type.rank)
    sizes = [t.shape[axis] for t in cx.expected]
    if len(sizes) == 1:
        return (x,)
    return cx.call("split", x, axis=axis, sizes=sizes)


@aten("split.Tensor", "split_with_sizes.default", "chunk.default", "split_with_sizes_copy.default")
def split(cx: Emitter, self, dim=0, split_size=None, split_sizes=None, chunks=None):
    return _split_as_torch(cx, self, dim)


@aten("unbind.int")
def unbind(cx: Emitter, self, dim=0):
    axis = _axis(dim, self.type.rank)
    return tuple(cx.reshape(p, t.shape) for p, t in zip(_split_as_torch(cx, self, axis), cx.expected))


@aten("constant_pad_nd.default")
def constant_pad_nd(cx: Emitter, self, pad, value=0):
    rank = self.type.rank
    if not all(isinstance(p, int) for p in pad):
        raise NotConvertible("symbolic padding")
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return cx.call("pad", self, pads=(*begins, *ends), value=value)


# -- factories --------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return not isinstance(v, (float, bool))


@aten("arange.default", "arange.start", "arange.start_step")
def arange(cx: Emitter, end, start=0, step=1, **_):
    if _is_int(start) and _is_int(end) and isinstance(step, int):
        return cx.call("arange", start=start, end=end, step=step, dtype=cx.out_dtype)
    # fractional bounds: start + step * [0, 1, ..., n)
    index = cx.call("arange", start=0, end=cx.out_shape[0], dtype=DType.i64)
    ramp = cx.call("mul", cx.cast(index, cx.out_dtype), cx.tensor(step, cx.out_dtype))
    return cx.call("add", ramp, cx.tensor(start, cx.out_dtype))


def _full(cx: Emitter, shape, value):
    if isinstance(value, (bool, int, float)):
        if not cx.out_dtype.is_float and abs(value) >= 2**53 and float(value) != value:
            raise NotConvertible(f"integer fill value {value} beyond float precision")
        return cx.call("full", shape=shape, value=float(value), dtype=cx.out_dtype)
    return cx.call("expand", cx.tensor(value, cx.out_dtype), shape=shape)


@aten("full.default", "new_full.default")
def full(cx: Emitter, size, fill_value, **_):
    return _full(cx, size, fill_value)


@aten("zeros.default", "new_zeros.default", "empty.memory_format", "new_empty.default")
def zeros(cx: Emitter, size, **_):
    """Zeros; ``empty`` tensors are zeros too (their contents are unspecified)."""
    return _full(cx, size, 0)


@aten("ones.default", "new_ones.default")
def ones(cx: Emitter, size, **_):
    return _full(cx, size, 1)


@aten("full_like.default")
def full_like(cx: Emitter, self, fill_value, **_):
    return _full(cx, self.type.shape, fill_value)


@aten("zeros_like.default", "empty_like.default")
def zeros_like(cx: Emitter, self, **_):
    return _full(cx, self.type.shape, 0)


@aten("ones_like.default")
def ones_like(cx: Emitter, self, **_):
    return _full(cx, self.type.shape, 1)


@aten("scalar_tensor.default")
def scalar_tensor(cx: Emitter, s, **_):
    return _full(cx, (), s)


@aten("triu.default")
def triu(cx: Emitter, self, diagonal=0):
    return cx.call("trilu", self, upper=True, k=diagonal)


@aten("tril.default")
def tril(cx: Emitter, self, diagonal=0):
    return cx.call("trilu", self, upper=False, k=diagonal)
