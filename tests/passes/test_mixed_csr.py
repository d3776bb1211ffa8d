"""``linear_csr``: the CSR product of quantization's outliers, against a dense product on the
interpreter and the cpu target (decode- and prefill-shaped inputs, with and without ``accumulate``)."""

from __future__ import annotations

import numpy as np
import pytest

from llmc.errors import ShapeError
from llmc.ir import DType, Graph, TensorType, sym
from llmc.ir.interpreter import run
from llmc.ir.ops.sparse import csr_arrays

RNG = np.random.default_rng(3)


def _sparse(n=24, k=40, density=0.1):
    dense = RNG.standard_normal((n, k)).astype(np.float32)
    keep = RNG.random((n, k)) < density
    keep[3] = False  # an empty row
    keep[5, :] = True  # a full one
    return np.where(keep, dense, 0).astype(np.float16).astype(np.float32), keep


def _graph(dense, keep, accumulate: bool):
    g = Graph("csr")
    x = g.add_input("x", TensorType(DType.f32, (1, sym("seq"), dense.shape[1])))
    values, columns, indptr = (g.add_const(n, a) for n, a in zip(("v", "c", "p"), csr_arrays(dense, keep)))
    extra = [g.call("linear", x, g.add_const("w", RNG.standard_normal(dense.shape).astype(np.float32)))] \
        if accumulate else []
    g.outputs = [g.call("linear_csr", x, values, columns, indptr, *extra, k=dense.shape[1])]
    g.verify()
    return g


def test_csr_arrays_round_trip():
    dense, keep = _sparse()
    values, columns, indptr = csr_arrays(dense, keep)
    assert values.dtype == np.float16 and columns.dtype == np.int32 and indptr.dtype == np.int32
    assert indptr[0] == 0 and indptr[-1] == keep.sum() == values.size
    back = np.zeros_like(dense)
    for n in range(dense.shape[0]):
        back[n, columns[indptr[n]:indptr[n + 1]]] = values[indptr[n]:indptr[n + 1]]
    np.testing.assert_array_equal(back, dense)


def test_reference_is_the_dense_product(close):
    dense, keep = _sparse()
    x = RNG.standard_normal((1, 5, dense.shape[1])).astype(np.float32)
    (got,) = run(_graph(dense, keep, accumulate=False), {"x": x}).values()
    close(got, x @ dense.T, rtol=1e-5)


def test_type_errors_name_the_bad_tensor():
    g = Graph("bad")
    x = g.add_input("x", TensorType(DType.f32, (2, 8)))
    v = g.add_const("v", np.ones(3, np.float32))  # float32, not float16
    c, p = g.add_const("c", np.zeros(3, np.int32)), g.add_const("p", np.array([0, 3], np.int32))
    with pytest.raises(ShapeError, match="values must be f16"):
        g.call("linear_csr", x, v, c, p, k=8)
    with pytest.raises(ShapeError, match="features"):
        g.call("linear_csr", x, g.add_const("v16", np.ones(3, np.float16)), c, p, k=9)


@pytest.mark.parametrize("accumulate", [False, True])
def test_cpu_kernel_matches_the_interpreter(tmp_path, close, accumulate):
    pytest.importorskip("tvm")
    import llmc

    dense, keep = _sparse()
    graph = _graph(dense, keep, accumulate)
    art = llmc.compile(graph, target="cpu", output=tmp_path / "cpu", opt_level="O0")
    for seq in (1, 7):
        x = RNG.standard_normal((1, seq, dense.shape[1])).astype(np.float32)
        (want,) = run(graph, {"x": x}).values()
        (got,) = art.run({"x": x}).values()
        close(got, want, rtol=1e-5)
