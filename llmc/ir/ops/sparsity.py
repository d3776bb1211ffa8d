"""Pruned weights stored compactly, and the linears that read them.

A pruned ``W[n, k]`` (``n`` output features, ``k`` the reduction axis) is stored as one of:

    N:M      values  f32 [N, K / m * n]   the kept weights of each group of m along k, in order
             index   u8  [N, K / m * n]   each value's position inside its group (0 .. m-1)
             W[o, (j // n) * m + index[o, j]] = values[o, j]
    bitmap   values  f32 [nnz]            the kept weights, row after row, k ascending
             mask    i32 [N, ceil(K/32)]  bit (k % 32) of word k // 32 is set where W[o, k] is kept
             offsets i32 [N + 1]          where row o's values start (offsets[N] = nnz)

(Unstructured weights at low density use the CSR ``sparse_matmul`` op the outlier decomposition
stores, ``llmc.ir.ops.sparse``, when that is smaller; ``llmc.passes.sparsity.storage`` chooses.)

N:M with the kept values quantized (sparse + low-bit, as GQSA does) packs the ``[N, J]`` values
matrix (``J = K / m * n``) exactly as ``llmc.ir.packing`` packs a dense weight, so scale groups
count ``group`` consecutive *kept* weights, and packs the indices in ``index_grid(m).bits`` bits
each (2 for m = 4, 3 for m = 8) with the same packer:

    N:M q    words   i32 [N, ceil(J / per)]    codes of the kept values (``Grid(bits, group, sym=False)``)
             scale   f16 [N, ceil(J / group)]
             minimum f16 [N, ceil(J / group)]  values[o, j] = code * scale[o, j // group] + minimum[o, j // group]
             index   i32 [N, ceil(J / per_i)]  index[o, j] = packed field j, as in N:M above

``linear_nm`` and ``linear_bitmap`` compute ``x @ W^T (+ bias)`` from those tensors. Their
``kernel`` attribute says how a target runs them: ``sparse`` reads the compressed tensors in the
product (only the kept weights are multiplied), ``dense`` expands W once at load time and runs
the dense product (what ``--sparsity-for size`` stores where the sparse kernel does not pay).
Both give the same numbers; the reference expands W and multiplies.
"""

from __future__ import annotations

import numpy as np

from llmc.errors import LLMCError, ShapeError
from llmc.ir import packing
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, Cost, op
from llmc.ir.packing import Grid
from llmc.ir.types import TensorType

KERNELS = ("sparse", "dense")
WORD = 32  # mask bits per int32 word


# -- storage: compress and expand -------------------------------------------------------------


def compress_nm(w: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, index) of ``w`` [N, K] whose groups of ``m`` along K hold at most ``n`` nonzeros.
    A group with fewer nonzeros keeps zeros at its first free positions, so every group has ``n``."""
    rows, k = w.shape
    if k % m or not 0 < n <= m:
        raise ShapeError(f"{n}:{m} storage needs K divisible by {m} and 0 < {n} <= {m}, got K={k}")
    groups = w.reshape(rows, k // m, m)
    nonzero = groups != 0
    if (nonzero.sum(-1) > n).any():
        raise LLMCError(f"the weight has groups of {m} with more than {n} nonzeros", hint="prune it to the pattern first")
    # nonzeros first (in position order), then zero positions in order; keep the first n, re-sorted
    order = np.argsort(~nonzero, axis=-1, kind="stable")[..., :n]
    index = np.sort(order, axis=-1)
    values = np.take_along_axis(groups, index, axis=-1)
    return values.reshape(rows, -1).astype(np.float32), index.reshape(rows, -1).astype(np.uint8)


def expand_nm(values: np.ndarray, index: np.ndarray, n: int, m: int, k: int) -> np.ndarray:
    rows = values.shape[0]
    w = np.zeros((rows, k // m, m), np.float32)
    np.put_along_axis(w, index.reshape(rows, -1, n).astype(np.int64), values.reshape(rows, -1, n), axis=-1)
    return w.reshape(rows, k)


def compress_bitmap(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, mask words, row offsets) of ``w`` [N, K]: the nonzeros and where they are."""
    rows, k = w.shape
    kept = w != 0
    padded = np.zeros((rows, -(-k // WORD) * WORD), bool)
    padded[:, :k] = kept
    bits = padded.reshape(rows, -1, WORD).astype(np.uint32) << np.arange(WORD, dtype=np.uint32)
    mask = np.bitwise_or.reduce(bits, axis=-1).view(np.int32)
    offsets = np.concatenate([[0], np.cumsum(kept.sum(1))]).astype(np.int32)
    return w[kept].astype(np.float32), mask, offsets


def expand_bitmap(values: np.ndarray, mask: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    rows = mask.shape[0]
    bits = (mask.view(np.uint32)[:, :, None] >> np.arange(WORD, dtype=np.uint32)) & 1
    kept = bits.reshape(rows, -1)[:, :k].astype(bool)
    w = np.zeros((rows, k), np.float32)
    w[kept] = values[: int(offsets[-1])]
    return w


def bitmap_words(k: int) -> int:
    return -(-k // WORD)


def index_grid(m: int) -> Grid:
    """How N:M positions (0 .. m-1) are packed: the fewest of ``packing.BITS`` bits that hold them."""
    return Grid(next(b for b in packing.BITS if 1 << b >= m))


def values_grid(attrs) -> Grid:
    """The grid of a ``linear_nm_q``'s kept values (asymmetric, like every 2-4 bit llmc format)."""
    return Grid(attrs["bits"], attrs["group"], sym=False)


def expand_nm_q(words, scale, minimum, index, attrs) -> np.ndarray:
    """The float32 W [N, K] of ``linear_nm_q`` tensors: kept codes dequantized, zeros elsewhere."""
    n, m, k = attrs["n"], attrs["m"], attrs["k"]
    width = k // m * n
    values = packing.dequantize(words, scale, minimum, values_grid(attrs), width)
    return expand_nm(values, packing.unpack(index, index_grid(m).bits, width), n, m, k)


# -- ops --------------------------------------------------------------------------------------


def _check_x(x: TensorType, k: int, name: str) -> None:
    if x.dtype != DType.f32 or x.rank < 1 or not S.same(x.shape[-1], k):
        raise ShapeError(f"{name} input {x} must be f32 with {k} input features")


def _check_bias(types: list[TensorType], first_optional: int, n: int, name: str) -> None:
    if len(types) > first_optional:
        b = types[first_optional]
        if b.dtype != DType.f32 or b.rank != 1 or not S.same(b.shape[0], n):
            raise ShapeError(f"{name} bias {b} must be f32 [{n}]")


def _kernel_attr(attrs, name):
    if attrs["kernel"] not in KERNELS:
        raise ShapeError(f"{name} kernel {attrs['kernel']!r} is not one of {KERNELS}")


def _product(x: np.ndarray, w: np.ndarray, bias) -> np.ndarray:
    y = (x.reshape(-1, x.shape[-1]).astype(np.float32) @ w.T).reshape(*x.shape[:-1], w.shape[0])
    return (y if bias is None else y + bias).astype(np.float32)


@op("linear_nm", inputs=("x", "values", "index", "bias"), optional=1, kind="matmul",
    attrs={"n": Attr("int"), "m": Attr("int"), "k": Attr("int"), "kernel": Attr("str", "sparse")})
class LinearNM:
    """y = x @ W^T (+ bias) with W stored N:M (``n`` kept of every ``m`` along k: values + index)."""

    @staticmethod
    def infer(types, attrs):
        x, values, index = types[:3]
        n, m, k = attrs["n"], attrs["m"], attrs["k"]
        _kernel_attr(attrs, "linear_nm")
        if not 0 < n < m or k % m:
            raise ShapeError(f"linear_nm {n}:{m} needs 0 < n < m and m dividing k={k}")
        out = values.shape[0]
        expect = (out, k // m * n)
        if values.dtype != DType.f32 or tuple(values.shape) != expect:
            raise ShapeError(f"linear_nm values must be f32{list(expect)}, got {values}")
        if index.dtype != DType.u8 or tuple(index.shape) != expect:
            raise ShapeError(f"linear_nm index must be u8{list(expect)}, got {index}")
        _check_x(x, k, "linear_nm")
        _check_bias(types, 3, out, "linear_nm")
        return [TensorType(DType.f32, (*x.shape[:-1], out))]

    @staticmethod
    def reference(xs, attrs):
        w = expand_nm(xs[1], xs[2], attrs["n"], attrs["m"], attrs["k"])
        return _product(xs[0], w, xs[3] if len(xs) == 4 else None)

    @staticmethod
    def cost(types, outs, attrs):
        out = types[1].shape[0]
        return _weight_cost(types, outs, attrs["kernel"], types[1].numel, out, attrs["k"], stored=2)


@op("linear_nm_q", inputs=("x", "words", "scale", "minimum", "index", "bias"), optional=1, kind="matmul",
    attrs={"n": Attr("int"), "m": Attr("int"), "k": Attr("int"), "bits": Attr("int"), "group": Attr("int"),
           "kernel": Attr("str", "sparse")})
class LinearNMQ:
    """y = x @ W^T (+ bias) with W stored N:M and its kept values as packed low-bit codes (module
    docstring). The kernel dequantizes only the kept codes, gathers x by the indices and
    accumulates in float32; the reference expands W (pruned positions exactly 0, so they add
    nothing) and multiplies, the same sum up to float32 summation order."""

    @staticmethod
    def infer(types, attrs):
        x, words, scale, minimum, index = types[:5]
        n, m, k = attrs["n"], attrs["m"], attrs["k"]
        _kernel_attr(attrs, "linear_nm_q")
        if not 0 < n < m or k % m or m > 1 << 8:
            raise ShapeError(f"linear_nm_q {n}:{m} needs 0 < n < m <= 256 and m dividing k={k}")
        grid, width, out = values_grid(attrs), k // m * n, words.shape[0]
        expect = {"words": (DType.i32, (out, grid.words(width))), "scale": (DType.f16, (out, grid.groups(width))),
                  "minimum": (DType.f16, (out, grid.groups(width))),
                  "index": (DType.i32, (out, index_grid(m).words(width)))}
        for name, t in zip(expect, (words, scale, minimum, index)):
            dtype, shape = expect[name]
            if t.dtype != dtype or tuple(t.shape) != shape:
                raise ShapeError(f"linear_nm_q {name} of {n}:{m} w{grid.bits}g{grid.group} over k={k} must be "
                                 f"{dtype}{list(shape)}, got {t}")
        _check_x(x, k, "linear_nm_q")
        _check_bias(types, 5, out, "linear_nm_q")
        return [TensorType(DType.f32, (*x.shape[:-1], out))]

    @staticmethod
    def reference(xs, attrs):
        return _product(xs[0], expand_nm_q(*xs[1:5], attrs), xs[5] if len(xs) == 6 else None)

    @staticmethod
    def cost(types, outs, attrs):
        out = types[1].shape[0]
        kept = out * (attrs["k"] // attrs["m"] * attrs["n"])
        return _weight_cost(types, outs, attrs["kernel"], kept, out, attrs["k"], stored=4)


@op("linear_bitmap", inputs=("x", "values", "mask", "offsets", "bias"), optional=1, kind="matmul",
    attrs={"k": Attr("int"), "kernel": Attr("str", "sparse")})
class LinearBitmap:
    """y = x @ W^T (+ bias) with W stored as its nonzeros, a bit mask per row and row offsets."""

    @staticmethod
    def infer(types, attrs):
        x, values, mask, offsets = types[:4]
        k = attrs["k"]
        _kernel_attr(attrs, "linear_bitmap")
        out = mask.shape[0] if mask.rank == 2 else 0
        if mask.dtype != DType.i32 or mask.rank != 2 or mask.shape[1] != bitmap_words(k):
            raise ShapeError(f"linear_bitmap mask must be i32 [out, {bitmap_words(k)}], got {mask}")
        if values.dtype != DType.f32 or values.rank != 1:
            raise ShapeError(f"linear_bitmap values must be f32 [nnz], got {values}")
        if offsets.dtype != DType.i32 or tuple(offsets.shape) != (out + 1,):
            raise ShapeError(f"linear_bitmap offsets must be i32 [{out + 1}], got {offsets}")
        _check_x(x, k, "linear_bitmap")
        _check_bias(types, 4, out, "linear_bitmap")
        return [TensorType(DType.f32, (*x.shape[:-1], out))]

    @staticmethod
    def reference(xs, attrs):
        w = expand_bitmap(xs[1], xs[2], xs[3], attrs["k"])
        return _product(xs[0], w, xs[4] if len(xs) == 5 else None)

    @staticmethod
    def cost(types, outs, attrs):
        out = types[2].shape[0]
        return _weight_cost(types, outs, attrs["kernel"], types[1].numel, out, attrs["k"], stored=3)


def _weight_cost(types, outs, kernel: str, nnz, out: int, k: int, *, stored: int) -> Cost:
    """A sparse kernel multiplies the kept weights and reads the ``stored`` compressed tensors; a
    dense one (W expanded at load time) multiplies and reads every weight of the float matrix."""
    x, y = types[0], outs[0]
    rows = S.dim(y.numel / out)
    rest = [x, y, *types[1 + stored:]]  # input, output, bias
    if kernel == "dense":
        return Cost(flops=S.dim(2 * rows * out * k), bytes=S.dim(out * k * 4 + sum(t.nbytes() for t in rest)))
    weights = sum(t.nbytes() for t in types[1:1 + stored])
    return Cost(flops=S.dim(2 * rows * nnz), bytes=S.dim(weights + sum(t.nbytes() for t in rest)))
