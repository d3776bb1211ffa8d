"""Sparse weights: a product with a matrix stored in compressed sparse rows (CSR).

``linear_csr(x, values, columns, indptr, accumulate?)`` computes ``y = x @ S^T (+ accumulate)``
for a sparse ``S [N, K]`` (``N`` output features, ``K`` the reduction axis) stored as

    values   f16 [nnz]      the nonzeros, row by row, ascending column within a row
    columns  i32 [nnz]      the column (input feature) of each value
    indptr   i32 [N + 1]    row n holds values[indptr[n] : indptr[n + 1]]; indptr[0] = 0, indptr[N] = nnz

    y[..., n] = accumulate[..., n] + sum_j float32(values[j]) * x[..., columns[j]],  j in row n

Arithmetic is float32 (the float16 values widened). Its first use is the dense-and-sparse
split of quantization's outliers (``llmc.passes.quantize.outliers``): a low-bit dense weight
``Q`` and the float16 residual ``S`` of the few weights kept exact, ``y = linear(x, Q) + x @ S^T``,
the dense product passed as ``accumulate`` so the sum is one kernel on a target. Unstructured
sparse weights use it alone (no ``accumulate``).

``csr_arrays`` builds the three arrays from a dense matrix and a mask of the entries to keep.
"""

from __future__ import annotations

import numpy as np

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, Cost, op
from llmc.ir.types import TensorType


@op("linear_csr", inputs=("x", "values", "columns", "indptr", "accumulate"), optional=1, kind="sparse",
    attrs={"k": Attr("int", doc="input features K of the sparse matrix")})
class LinearCSR:
    """y = x @ S^T (+ accumulate), S [N, K] in CSR form (see the module docstring)."""

    @staticmethod
    def infer(types, attrs):
        x, values, columns, indptr = types[:4]
        k = attrs["k"]
        if values.rank != 1 or values.dtype != DType.f16:
            raise ShapeError(f"linear_csr values must be f16 [nnz], got {values}")
        if columns.rank != 1 or columns.dtype != DType.i32 or not S.same(columns.shape[0], values.shape[0]):
            raise ShapeError(f"linear_csr columns must be i32 [{values.shape[0]}], got {columns}")
        if indptr.rank != 1 or indptr.dtype != DType.i32 or not isinstance(indptr.shape[0], int) \
                or indptr.shape[0] < 1:
            raise ShapeError(f"linear_csr indptr must be i32 [out + 1], got {indptr}")
        if x.dtype != DType.f32 or x.rank < 1 or not S.same(x.shape[-1], k):
            raise ShapeError(f"linear_csr input {x} must be f32 with {k} features")
        out = TensorType(DType.f32, (*x.shape[:-1], indptr.shape[0] - 1))
        if len(types) == 5 and (types[4].dtype != DType.f32 or len(types[4].shape) != len(out.shape)
                                or not all(S.same(a, b) for a, b in zip(types[4].shape, out.shape))):
            raise ShapeError(f"linear_csr accumulate {types[4]} must be {out}")
        return [out]

    @staticmethod
    def reference(xs, attrs):
        import scipy.sparse

        x, values, columns, indptr = xs[:4]
        n = indptr.shape[0] - 1
        matrix = scipy.sparse.csr_matrix((values.astype(np.float32), columns.astype(np.int64), indptr.astype(np.int64)),
                                         shape=(n, attrs["k"]))
        rows = x.reshape(-1, x.shape[-1]).astype(np.float32)
        y = np.asarray((matrix @ rows.T).T, np.float32).reshape(*x.shape[:-1], n)
        return y + xs[4] if len(xs) == 5 else y

    @staticmethod
    def cost(types, outs, attrs):
        rows = outs[0].numel / outs[0].shape[-1] if outs[0].shape[-1] else 0
        return Cost(flops=S.dim(2 * types[1].numel * rows), bytes=S.dim(sum(t.nbytes() for t in [*types, *outs])))


def csr_arrays(dense: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values f16, columns i32, indptr i32) of ``dense`` [N, K] at the entries ``keep`` marks."""
    if dense.ndim != 2 or keep.shape != dense.shape:
        raise ShapeError(f"csr_arrays needs a matrix and a mask of its shape, got {dense.shape} and {keep.shape}")
    rows, cols = np.nonzero(keep)  # row-major: ascending column within a row
    indptr = np.zeros(dense.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return dense[rows, cols].astype(np.float16), cols.astype(np.int32), indptr
