"""Canonicalization, simplify rules: identities vanish and shape-op chains collapse."""

import numpy as np
from pass_checks import transformed

from llmc.ir import DType, Graph, TensorType
from llmc.passes.canonicalize import RULE_SETS
from llmc.passes.rewrite import apply_rules

rng = np.random.default_rng(0)


def simplify(g):
    return apply_rules(g, RULE_SETS["simplify"])


def graph(*shape, dtype=DType.f32):
    g = Graph()
    x = g.add_input("x", TensorType(dtype, shape))
    data = rng.standard_normal(shape).astype(dtype.np)
    return g, x, {"x": data}


def ops(g):
    return [n.op for n in g.nodes]


def test_reshape_chains_and_identities_collapse():
    g, x, inputs = graph(2, 8)
    r = g.call("reshape", g.call("reshape", x, shape=(4, 4)), shape=(16,))
    same = g.call("reshape", r, shape=(-1,))
    g.outputs = [g.call("exp", g.call("cast", g.call("expand", same, shape=(16,)), dtype=DType.f32))]
    before, after, report = transformed(g, inputs, simplify)
    assert ops(g) == ["reshape", "exp"]
    assert after == (
        "graph main(%x: f32[2,8]) {\n"
        "  %reshape_2 = reshape(%x) {shape=[16]} : f32[16]\n"
        "  %exp = exp(%reshape_2) : f32[16]\n"
        "  return %exp\n"
        "}"
    )
    assert report.counts == {"reshape_of_reshape": 1, "identity_reshape": 1, "identity_expand": 1, "identity_cast": 1}


def test_transposes_compose_and_cancel():
    g, x, inputs = graph(2, 3, 4)
    t = g.call("transpose", g.call("transpose", x, perm=(1, 0, 2)), perm=(0, 2, 1))
    back = g.call("transpose", g.call("transpose", x, perm=(2, 0, 1)), perm=(1, 2, 0))
    g.outputs = [t, g.call("exp", back)]
    _, after, report = transformed(g, inputs, simplify)
    assert ops(g) == ["transpose", "exp"]
    assert "transpose(%x) {perm=[1,2,0]}" in after and "exp(%x)" in after


def test_lossless_cast_round_trips_vanish_lossy_ones_stay():
    g, x, inputs = graph(4, dtype=DType.f16)
    wide = g.call("cast", g.call("cast", x, dtype=DType.f32), dtype=DType.f16)
    g2, y, inputs2 = graph(4)
    narrow = g2.call("cast", g2.call("cast", y, dtype=DType.f16), dtype=DType.f32)
    g.outputs, g2.outputs = [g.call("neg", wide)], [g2.call("neg", narrow)]
    transformed(g, inputs, simplify)
    transformed(g2, inputs2, simplify)
    assert ops(g) == ["neg"] and ops(g2) == ["cast", "cast", "neg"]


def test_neutral_constants_vanish_unless_they_broadcast():
    g, x, inputs = graph(2, 4)
    one, zero = g.add_const("one", np.float32(1.0)), g.add_const("zero", np.zeros(4, np.float32))
    y = g.call("sub", g.call("add", zero, g.call("mul", one, x)), zero)
    g.outputs = [g.call("exp", g.call("div", y, one))]
    _, _, report = transformed(g, inputs, simplify)
    assert ops(g) == ["exp"] and sum(report.counts.values()) == 4

    g, x, inputs = graph(4)
    g.outputs = [g.call("exp", g.call("mul", x, g.add_const("ones", np.ones((3, 4), np.float32))))]
    report = simplify(g)
    assert not report.changed
    assert report.reasons("mul_one") == [
        "the result f32[3,4] is not of the type of %x (f32[4]): broadcasting changes it"
    ]


def test_mul_by_a_near_one_is_not_an_identity():
    g, x, _ = graph(4)
    g.outputs = [g.call("exp", g.call("mul", x, g.add_const("k", np.float32(1.0001))))]
    assert not simplify(g).changed


def test_batched_transpose_through_flattening_becomes_one_transpose():
    """ONNX exporters' k^T: Reshape [-1, T, D] -> Transpose [0, 2, 1] -> Reshape [B, H, D, T]."""
    g, k, inputs = graph(1, 4, 16, 8)
    flat = g.call("reshape", k, shape=(-1, 16, 8))
    g.outputs = [g.call("exp", g.call("reshape", g.call("transpose", flat, perm=(0, 2, 1)), shape=(1, 4, 8, 16)))]
    _, after, report = transformed(g, inputs, simplify)
    assert report.counts == {"batched_transpose": 1}
    assert "transpose(%x) {perm=[0,1,3,2]} : f32[1,4,8,16]" in after and ops(g) == ["transpose", "exp"]


def test_batched_matmul_through_flattening_becomes_one_matmul():
    """torch's decomposed SDPA: view to [B*H, S, D], bmm, view back to [B, H, S, T]."""
    g, q, inputs = graph(2, 4, 8, 16)
    k = g.add_input("k", TensorType(DType.f32, (2, 4, 16, 8)))
    inputs["k"] = rng.standard_normal((2, 4, 16, 8)).astype(np.float32)
    mm = g.call("matmul", g.call("reshape", q, shape=(8, 8, 16)), g.call("reshape", k, shape=(8, 16, 8)))
    g.outputs = [g.call("reshape", mm, shape=(2, 4, 8, 8))]
    _, after, report = transformed(g, inputs, simplify)
    assert report.counts == {"batched_matmul": 1} and ops(g) == ["matmul"]

    g, q, _ = graph(2, 4, 8, 16)
    k = g.add_input("k", TensorType(DType.f32, (2, 4, 16, 8)))
    mixed = g.call("matmul", g.call("reshape", q, shape=(8, 8, 16)), g.call("reshape", k, shape=(8, 16, 8)))
    g.outputs = [g.call("exp", g.call("reshape", mixed, shape=(4, 2, 8, 8)))]
    report = simplify(g)
    assert report.reasons("batched_matmul") == ["the result is not reshaped back to the batch dims"]


def test_row_flattened_projections_work_on_the_unflattened_input():
    """torch.export's linear: view [B*S, K] -> linear / mm -> view [B, S, N]."""
    g, x, inputs = graph(2, 3, 8)
    w = g.add_const("w", rng.standard_normal((4, 8)).astype(np.float32))
    wt = g.add_const("wt", rng.standard_normal((8, 4)).astype(np.float32))
    flat = g.call("reshape", x, shape=(6, 8))
    a = g.call("reshape", g.call("linear", flat, w), shape=(2, 3, 4))
    b = g.call("reshape", g.call("matmul", flat, wt), shape=(2, 3, 4))
    g.outputs = [g.call("add", a, b)]
    _, after, report = transformed(g, inputs, simplify)
    assert report.counts == {"row_flatten": 2} and ops(g) == ["linear", "matmul", "add"]
    assert "linear(%x, %w) : f32[2,3,4]" in after
