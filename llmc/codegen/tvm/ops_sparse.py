"""``linear_csr`` as one TE kernel: a product with a CSR matrix, the dense product added in place.

Products accumulate in float32 and the result takes the compute dtype (float16 on cuda by default).
Row ``n`` of the sparse matrix is a reduction over ``r < row_max`` (the longest row, read from
the constant ``indptr`` the artifact stores; ``K`` when ``indptr`` is not a constant): entry
``j = indptr[n] + r`` counts while ``j < indptr[n + 1]``. Decode reads each row's few values
and gathers their inputs; the cost is ``N * row_max`` multiply-adds, not ``N * K``.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from llmc.codegen.tvm.context import as_f32
from llmc.codegen.tvm.registry import lowers
from llmc.ir.dtypes import DType


def row_max(node) -> int:
    """The most nonzeros of one row of the node's sparse matrix (``k`` if ``indptr`` is not constant)."""
    indptr = node.inputs[3]
    if not indptr.is_const:
        return node.attrs["k"]
    counts = np.diff(np.asarray(indptr.const.numpy(), np.int64))
    return int(counts.max()) if counts.size else 0


@lowers("linear_csr")
def linear_csr(ctx, node, args):
    nnz = int(node.inputs[1].type.shape[0])
    longest = row_max(node) if nnz else 0
    out_dtype = ctx.dtype(DType.f32)

    def compute(x, values, columns, indptr, *acc):
        lead = x.shape[:-1]
        out_shape = (*lead, indptr.shape[0] - 1)
        if longest == 0:
            return te.compute(out_shape, lambda *i: acc[0][i] if acc else tirx.const(0.0, out_dtype), name="csr")
        r = te.reduce_axis((0, longest), name="r")

        def body(*i):
            *b, n = i
            j = indptr[n] + r
            at = tirx.min(j, nnz - 1)
            term = as_f32(values[at]) * as_f32(x[(*b, columns[at])])
            return te.sum(tirx.Select(j < indptr[n + 1], term, tirx.const(0.0, "float32")), axis=r)

        y = te.compute(out_shape, body, name="csr")
        if not acc:
            return y if out_dtype == "float32" else te.compute(out_shape, lambda *i: tirx.Cast(out_dtype, y[i]),
                                                                name="csr_cast")
        return te.compute(out_shape, lambda *i: tirx.Cast(out_dtype, as_f32(acc[0][i]) + y[i]), name="csr_accumulate")

    return ctx.emit_te(compute, *args, name="linear_csr")
