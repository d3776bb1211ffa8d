"""One hand-built graph that uses every op of the registry (several ways each), for the TVM targets.

Each case is an output of the graph named after what it tests, so a mismatch names the op.
Symbolic ``seq`` (and ``kv`` for attention over a KV cache) stay symbolic in the graph.
"""

from __future__ import annotations

import numpy as np

from llmc.ir import DType, Graph, NodeMeta, TensorType, sym
from llmc.ir.ops.shape import _END

RNG = np.random.default_rng(0)


def _w(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def inputs(seq: int = 5, kv: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "a": rng.standard_normal((2, 3, 8, 8)).astype(np.float32),
        "s": rng.standard_normal((1, seq, 16)).astype(np.float32),
        "ia": rng.integers(-20, 20, (4, 5)).astype(np.int64),
        "ids": rng.integers(0, 32, (1, seq)).astype(np.int64),
        "q": rng.standard_normal((1, 4, seq, 8)).astype(np.float32),
        "k": rng.standard_normal((1, 2, kv, 8)).astype(np.float32),
        "v": rng.standard_normal((1, 2, kv, 8)).astype(np.float32),
        "cs": rng.standard_normal((1, 1, seq, 8)).astype(np.float32),
        "cache": rng.standard_normal((1, 2, 24, 8)).astype(np.float32),
    }


def all_ops_graph() -> tuple[Graph, list[str]]:
    """The graph, and the case name of each of its outputs (in order)."""
    g = Graph("all_ops")
    seq, kv = sym("seq"), sym("kv")
    a = g.add_input("a", TensorType(DType.f32, (2, 3, 8, 8)))
    s = g.add_input("s", TensorType(DType.f32, (1, seq, 16)))
    ia = g.add_input("ia", TensorType(DType.i64, (4, 5)))
    ids = g.add_input("ids", TensorType(DType.i64, (1, seq)))
    q = g.add_input("q", TensorType(DType.f32, (1, 4, seq, 8)))
    k = g.add_input("k", TensorType(DType.f32, (1, 2, kv, 8)))
    v = g.add_input("v", TensorType(DType.f32, (1, 2, kv, 8)))
    cs = g.add_input("cs", TensorType(DType.f32, (1, 1, seq, 8)))
    cache = g.add_input("cache", TensorType(DType.f32, (1, 2, 24, 8)))
    out: dict[str, object] = {}
    _elementwise(g, a, ia, out)
    _linalg_reduce(g, a, s, out)
    _nn(g, a, s, out)
    _transformer(g, s, ids, q, k, v, cs, out)
    _kv_cache(g, q, k, cache, kv, out)
    _quant(g, a, out)
    _packed(g, s, out)
    _sparsity(g, s, out)
    _shape(g, a, s, ia, out)
    _fused(g, s, out)
    g.outputs = list(out.values())
    g.verify()
    return g, list(out)


def _elementwise(g, a, ia, out):
    half = g.add_const("half", np.float32(0.5))
    pos = g.call("add", g.call("abs", a), half)
    for op in ("neg", "abs", "exp", "tanh", "sigmoid", "relu", "silu", "erf", "sin", "cos", "floor", "ceil"):
        out[op] = g.call(op, a)
    for op in ("log", "sqrt", "rsqrt", "reciprocal"):
        out[op] = g.call(op, pos)
    out["gelu"] = g.call("gelu", a)
    out["gelu_tanh"] = g.call("gelu", a, approximate="tanh")
    out["leaky_relu"] = g.call("leaky_relu", a, alpha=0.2)
    out["clip"] = g.call("clip", a, min=-0.5, max=0.5)
    out["clip_max"] = g.call("clip", a, max=0.25)
    b = g.add_const("row", _w(8))
    for op in ("add", "sub", "mul", "div", "maximum", "minimum", "mod"):
        out[op] = g.call(op, a, b)
    out["pow"] = g.call("pow", pos, g.add_const("exponent", np.float32(1.5)))
    ib = g.add_const("int_row", np.array([3, -4, 5, 7, -2], dtype=np.int64))
    out["div_int"] = g.call("div", ia, ib)
    out["mod_int"] = g.call("mod", ia, ib)
    for op in ("equal", "less", "less_equal", "greater", "greater_equal"):
        out[op] = g.call(op, g.call("floor", a), g.call("floor", g.call("mul", a, half)))
    gt, lt = g.call("greater", a, half), g.call("less", a, g.call("neg", half))
    out["and"] = g.call("and", gt, g.call("not", lt))
    out["or"] = g.call("or", gt, lt)
    out["not"] = g.call("not", gt)
    out["where"] = g.call("where", gt, a, g.call("neg", a))
    out["cast_int"] = g.call("cast", g.call("mul", a, g.add_const("ten", np.float32(10))), dtype=DType.i32)
    out["cast_bool"] = g.call("cast", g.call("floor", a), dtype=DType.bool)
    out["cast_float"] = g.call("cast", ia, dtype=DType.f32)


def _linalg_reduce(g, a, s, out):
    out["matmul_const"] = g.call("matmul", a, g.add_const("mm_w", _w(8, 24)))
    out["matmul_act"] = g.call("matmul", a, g.call("transpose", a, perm=(0, 1, 3, 2)))
    out["matmul_vec"] = g.call("matmul", a, g.add_const("mm_v", _w(8)))
    out["linear_bias"] = g.call("linear", s, g.add_const("lin_w", _w(24, 16)), g.add_const("lin_b", _w(24)))
    out["linear_wide"] = g.call("linear", s, g.add_const("lin_w2", _w(80, 16)))
    for op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod"):
        out[op] = g.call(op, a, axes=(1,))
    out["reduce_sum_all"] = g.call("reduce_sum", a)
    out["reduce_mean_keep"] = g.call("reduce_mean", a, axes=(-2, -1), keepdims=True)
    out["softmax"] = g.call("softmax", a, axis=1)
    out["log_softmax"] = g.call("log_softmax", s, axis=-1)
    out["argmax"] = g.call("argmax", a, axis=-1)
    out["cumsum"] = g.call("cumsum", a, axis=2)


def _nn(g, a, s, out):
    out["conv2d"] = g.call("conv2d", a, g.add_const("cw", _w(4, 3, 3, 3)), g.add_const("cb", _w(4)),
                           stride=(2, 2), padding=(1, 1, 1, 1))
    out["conv2d_groups"] = g.call("conv2d", a, g.add_const("cwg", _w(6, 1, 3, 3)), groups=3, dilation=(2, 2))
    out["max_pool2d"] = g.call("max_pool2d", a, kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), ceil_mode=True)
    out["avg_pool2d"] = g.call("avg_pool2d", a, kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), ceil_mode=True)
    out["avg_pool2d_pad"] = g.call("avg_pool2d", a, kernel=(2, 2), stride=(2, 2), padding=(1, 1, 1, 1),
                                   count_include_pad=True)
    var = g.add_const("bn_var", np.abs(_w(3)) + 0.5)
    out["batch_norm"] = g.call("batch_norm", a, g.add_const("bn_s", _w(3)), g.add_const("bn_b", _w(3)),
                               g.add_const("bn_m", _w(3)), var, eps=1e-5)
    out["layer_norm"] = g.call("layer_norm", s, g.add_const("ln_w", _w(16)), g.add_const("ln_b", _w(16)))
    out["layer_norm_plain"] = g.call("layer_norm", a, axis=-2)
    out["rms_norm"] = g.call("rms_norm", s, g.add_const("rms_w", _w(16)))
    out["rms_norm_plain"] = g.call("rms_norm", a, axis=-2, eps=1e-5)
    out["lrn"] = g.call("lrn", a, size=3, alpha=1e-2, beta=0.75, bias=1.0)
    out["pad_constant"] = g.call("pad", a, pads=(0, 1, -1, 2, 0, 0, 2, -1), value=0.5)
    out["pad_edge"] = g.call("pad", a, pads=(0, 0, 2, 1, 0, 0, 1, 2), mode="edge")
    out["pad_reflect"] = g.call("pad", s, pads=(0, 0, 3, 0, 0, 2), mode="reflect")


def _transformer(g, s, ids, q, k, v, cs, out):
    out["embedding"] = g.call("embedding", g.add_const("emb", _w(32, 16)), ids)
    sin = g.call("sin", cs)
    out["rope"] = g.call("rope", q, g.call("cos", cs), sin)
    out["rope_interleaved"] = g.call("rope", q, g.call("cos", cs), sin, interleaved=True)
    out["attention_causal_kv"] = g.call("attention", q, k, v, causal=True)
    q0 = g.call("slice", q, axes=(1,), starts=(0,), ends=(1,))
    k0 = g.call("slice", k, axes=(1,), starts=(0,), ends=(1,))
    mask = g.call("mul", g.call("cos", g.call("matmul", q0, g.call("transpose", k0, perm=(0, 1, 3, 2)))),
                  g.add_const("mask_scale", np.float32(2.0)))
    out["attention_mask"] = g.call("attention", q, k, v, mask, scale=0.3)
    keep = g.call("greater", mask, g.add_const("mask_cut", np.float32(-1.5)))
    out["attention_bool_mask"] = g.call("attention", q, k, v, keep)


def _kv_cache(g, q, k, cache, kv, out):
    """The seq newest keys written into a 24-position cache at [kv - seq, kv), then attended over."""
    new = g.call("slice", k, axes=(2,), starts=(kv - q.type.shape[2],), ends=(kv,))
    written = g.call("kv_update", cache, new, end=kv)
    out["attention_cache_prefix"] = g.call("attention", q, written, written, causal=True, kv_len=kv)


def _quant(g, a, out):
    scale = g.add_const("q_scale", np.array([0.02, 0.05, 0.1], dtype=np.float32))
    qa = g.call("quantize", a, scale, axis=1)
    out["quantize"] = qa
    out["dequantize"] = g.call("dequantize", qa, scale, axis=1)
    block = g.add_const("q_block", (np.abs(_w(2, 3, 2, 4)) + 0.05).astype(np.float32))
    zero = g.add_const("q_zero", np.full((2, 3, 2, 4), 3, dtype=np.float32))
    q4 = g.call("quantize", a, block, zero, dtype=DType.i4)
    out["quantize_i4"] = q4
    out["dequantize_i4"] = g.call("dequantize", q4, block, zero)
    out["quantize_scalar"] = g.call("quantize", a, g.add_const("q_s", np.float32(0.03)), dtype=DType.u8)


def _packed(g, s, out):
    """Packed low-bit weights: dequantized alone, read by a linear (decode- or prefill-shaped), int8 products."""
    from llmc.ir import packing

    w4 = packing.quantize(_w(24, 16), packing.Grid(4, 8, sym=False))
    tensors = [g.add_const("p4_q", w4.words), g.add_const("p4_s", w4.scale), g.add_const("p4_m", w4.minimum)]
    dq = g.call("dequantize_packed", *tensors, bits=4, group=8, k=16)
    out["dequantize_packed"] = g.call("add", dq, g.add_const("p4_zero", np.zeros((24, 16), np.float32)))
    tensors3 = [g.add_const("p3_q", (w3 := packing.quantize(_w(24, 16), packing.Grid(3, 12, sym=True))).words),
                g.add_const("p3_s", w3.scale)]
    out["linear_packed_w3"] = g.call("linear", s, g.call("dequantize_packed", *tensors3, bits=3, group=12, k=16))
    w8 = packing.quantize(_w(24, 16), packing.Grid(8, 0, sym=True))
    out["linear_w8a8"] = g.call("linear_w8a8", s, g.add_const("p8_q", w8.words), g.add_const("p8_s", w8.scale), k=16)
    from llmc.ir.ops.sparse import csr_arrays

    dense = _w(24, 16)
    csr = [g.add_const(f"csr_{n}", a) for n, a in zip("vcp", csr_arrays(dense, np.abs(dense) > 0.6))]
    out["linear_csr"] = g.call("linear_csr", s, *csr, out["linear_packed_w3"], k=16)


def _sparsity(g, s, out):
    """Pruned weights: 2:4 (values + indices, float or 4-bit codes) and bitmap storage, each with its sparse
    kernel and expanded at load time."""
    from llmc.ir.ops.sparsity import compress_bitmap, compress_nm
    from llmc.ir.packing import Grid
    from llmc.passes.sparsity.storage import store

    w = _w(24, 16)
    groups = w.reshape(24, 4, 4)
    np.put_along_axis(groups, np.argsort(np.abs(groups), axis=-1)[..., :2], 0.0, axis=-1)
    nm = [g.add_const(f"nm_{n}", a) for n, a in zip("vi", compress_nm(groups.reshape(24, 16), 2, 4))]
    bitmap = [g.add_const(f"bitmap_{n}", a) for n, a in zip("vmo", compress_bitmap(np.where(np.abs(w) > 0.3, w, 0)))]
    q = store(groups.reshape(24, 16), "2:4", Grid(4, 4, sym=False))  # two scale groups of 4 kept values per row
    nmq = [g.add_const(f"nmq_{key}", t) for key, t in q.tensors.items()]
    bias = g.add_const("sparse_bias", _w(24))
    for kernel in ("sparse", "dense"):
        out[f"linear_nm_{kernel}"] = g.call("linear_nm", s, *nm, n=2, m=4, k=16, kernel=kernel)
        out[f"linear_nm_q_{kernel}"] = g.call("linear_nm_q", s, *nmq, bias, **q.attrs, kernel=kernel)
        out[f"linear_bitmap_{kernel}"] = g.call("linear_bitmap", s, *bitmap, bias, k=16, kernel=kernel)


def _shape(g, a, s, ia, out):
    out["reshape"] = g.call("reshape", s, shape=(1, -1, 4, 4))
    out["transpose"] = g.call("transpose", a, perm=(0, 2, 3, 1))
    out["concat"] = g.call("concat", a, g.call("neg", a), axis=1)
    out["slice_dynamic"] = g.call("slice", s, axes=(1, 2), starts=(1, -6), ends=(_END, _END))
    out["slice_step"] = g.call("slice", a, axes=(2, 3), starts=(1, 7), ends=(8, 0), steps=(2, -3))
    parts = g.call("split", a, axis=1, sizes=(1, 2))
    out["split_0"], out["split_1"] = parts
    out["gather"] = g.call("gather", a, g.add_const("gidx", np.array([[2, -1], [0, 1]], dtype=np.int64)), axis=1)
    gel = g.add_const("geidx", RNG.integers(-8, 8, (2, 3, 4, 8)).astype(np.int64))
    out["gather_elements"] = g.call("gather_elements", a, gel, axis=2)
    gnd = g.add_const("gndidx", np.array([[[1, -2], [0, 7]], [[1, 0], [1, 3]]], dtype=np.int64))
    out["gather_nd"] = g.call("gather_nd", a, gnd, batch_dims=1)
    out["expand"] = g.call("expand", g.add_const("ex", _w(1, 8)), shape=(2, 3, 8, 8))
    out["trilu_upper"] = g.call("trilu", a, upper=True, k=1)
    out["trilu_lower"] = g.call("trilu", a, upper=False, k=-1)
    out["arange"] = g.call("arange", end=sym("seq"), start=1, step=2)
    out["full"] = g.call("full", shape=(2, sym("seq")), value=1.5, dtype=DType.f32)
    out["int_passthrough"] = g.call("add", ia, ia)


def _fused(g, s, out):
    """Two fused nodes: linear + bias + silu, and a body with two reductions (matmul, softmax)."""
    body = Graph("mlp")
    x = body.add_input("x", TensorType(DType.f32, (1, sym("seq"), 16)))
    h = body.call("linear", x, body.add_const("w", _w(32, 16)), body.add_const("b", _w(32)))
    body.outputs = [body.call("silu", h)]
    out["fused_mlp"] = g.call("fused", s, body=body)
    body2 = Graph("scores")
    x2 = body2.add_input("x", TensorType(DType.f32, (1, sym("seq"), 16)))
    sc = body2.call("matmul", x2, body2.call("transpose", x2, perm=(0, 2, 1)))
    body2.outputs = [body2.call("softmax", sc)]
    out["fused_softmax"] = g.call("fused", s, body=body2)


def small_graph() -> Graph:
    """A two-layer MLP with origins, for target option and error tests."""
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, (1, sym("seq"), 16)))
    h = g.call("linear", x, g.add_const("up", _w(64, 16)), meta=NodeMeta(origin="model.mlp.up"))
    h = g.call("silu", h, meta=NodeMeta(origin="model.mlp.act"))
    g.outputs = [g.call("linear", h, g.add_const("down", _w(16, 64)), meta=NodeMeta(origin="model.mlp.down"))]
    g.verify()
    return g
