"""Canonicalization, attention rules: matmul / softmax / matmul raised to ``attention``."""

import numpy as np
import pytest
from decomposed_graphs import causal_additive_mask, const, eager_attention, repeat_kv
from pass_checks import transformed

from llmc.ir import DType, Graph, TensorType
from llmc.passes import get_pass
from llmc.passes.canonicalize import RULE_SETS
from llmc.passes.rewrite import apply_rules

rng = np.random.default_rng(0)
B, H, S, D = 2, 4, 6, 8


def canonicalize(g):
    return get_pass("canonicalize")().run(g)


def qkv(kv_heads=H, dtype=DType.f32):
    g = Graph()
    shapes = {"q": (B, H, S, D), "k": (B, kv_heads, S, D), "v": (B, kv_heads, S, D)}
    vals = [g.add_input(n, TensorType(dtype, s)) for n, s in shapes.items()]
    inputs = {n: rng.standard_normal(s).astype(dtype.np) for n, s in shapes.items()}
    return g, *vals, inputs


def test_eager_attention_with_a_mask_becomes_attention():
    g, q, k, v, inputs = qkv()
    mask = g.add_input("mask", TensorType(DType.f32, (B, 1, S, S)))
    inputs["mask"] = np.where(rng.random((B, 1, S, S)) > 0.3, 0, -1e9).astype(np.float32)
    g.outputs = [eager_attention(g, q, k, v, mask=mask)]
    before, after, result = transformed(g, inputs, canonicalize)
    assert "softmax(" in before
    (node,) = g.nodes
    assert node.op == "attention" and [x.name for x in node.inputs] == ["q", "k", "v", "mask"]
    assert node.attrs == {"causal": False, "scale": pytest.approx(D**-0.5), "kv_len": 0}
    assert result.stats["rewrites"] == {"attention": 1}


def test_grouped_query_attention_reads_the_unrepeated_kv_heads():
    g, q, k, v, inputs = qkv(kv_heads=2)
    g.outputs = [eager_attention(g, q, k, v, groups=2)]
    before, after, _ = transformed(g, inputs, canonicalize)
    assert before.count("expand(") == 2
    assert [n.op for n in g.nodes] == ["attention"] and [x.name for x in g.nodes[0].inputs] == ["q", "k", "v"]


def test_attention_fed_repeated_kv_heads_reads_them_unrepeated():
    """torch's SDPA after HF repeat_kv: attention(q, repeat_kv(k), repeat_kv(v))."""
    g, q, k, v, inputs = qkv(kv_heads=2)
    g.outputs = [g.call("attention", q, repeat_kv(g, k, 2), repeat_kv(g, v, 2), causal=True)]
    _, after, result = transformed(g, inputs, canonicalize)
    assert [n.op for n in g.nodes] == ["attention"] and "attention(%q, %k, %v) {causal=True, scale=0.0, kv_len=0}" in after
    assert result.stats["rewrites"] == {"attention_gqa": 1}


def test_the_exporters_flattened_repeat_and_transpose_of_k():
    """torch.onnx (dynamo) Llama: reshape(expand(...) [B,Hkv,g,T,D], [-1,T,D]), transpose, reshape [B,H,D,T]."""
    g, q, k, v, inputs = qkv(kv_heads=2)
    expanded = g.call("expand", g.call("reshape", k, shape=(B, 2, 1, S, D)), shape=(B, 2, 2, S, D))
    flat_t = g.call("transpose", g.call("reshape", expanded, shape=(-1, S, D)), perm=(0, 2, 1))
    kt = g.call("reshape", flat_t, shape=(B, H, D, S))
    p = g.call("softmax", g.call("matmul", q, kt), axis=-1)
    g.outputs = [g.call("matmul", p, repeat_kv(g, v, 2))]
    _, _, result = transformed(g, inputs, canonicalize)
    assert [n.op for n in g.nodes] == ["attention"] and [x.name for x in g.nodes[0].inputs] == ["q", "k", "v"]
    assert result.stats["rewrites"] == {"batched_transpose": 1, "attention": 1}


def test_a_constant_causal_mask_becomes_causal():
    g, q, k, v, inputs = qkv()
    g.outputs = [eager_attention(g, q, k, v, mask=g.add_const("mask", causal_additive_mask(S)))]
    _, after, result = transformed(g, inputs, canonicalize)
    (node,) = g.nodes
    assert len(node.inputs) == 3 and node.attrs["causal"] is True and not g.constants["mask"].uses
    assert result.stats["rewrites"] == {"attention": 1, "causal_mask": 1}


def test_a_constant_mask_that_is_not_causal_stays_a_mask():
    g, q, k, v, inputs = qkv()
    band = causal_additive_mask(S)
    band[..., 0] = -1e9
    g.outputs = [eager_attention(g, q, k, v, mask=g.add_const("mask", band))]
    _, _, _ = transformed(g, inputs, canonicalize)
    report = apply_rules(g, RULE_SETS["attention"])
    assert report.reasons("causal_mask") == [
        "the mask is not a causal triangle (0 on and below the diagonal, <= -6e4 above)"
    ]


def test_onnx_export_form_with_split_scales_and_safe_softmax():
    """torch.onnx (dynamo) GPT-2: q * 0.5, Reshape/Transpose/Reshape of k * 0.5, where(isnan(p), 0, p)."""
    g, q, k, v, inputs = qkv()
    flat = g.call("reshape", k, shape=(-1, S, D))
    kt = g.call("reshape", g.call("transpose", flat, perm=(0, 2, 1)), shape=(B, H, D, S))
    half = const(g, "half", 0.5)
    scores = g.call("matmul", g.call("mul", q, half), g.call("mul", kt, half))
    p = g.call("softmax", g.call("add", scores, g.add_const("mask", causal_additive_mask(S))), axis=-1)
    safe = g.call("where", g.call("not", g.call("equal", p, p)), const(g, "zero", 0.0), p)
    g.outputs = [g.call("matmul", safe, v)]
    _, after, result = transformed(g, inputs, canonicalize)
    assert [n.op for n in g.nodes] == ["attention"]
    assert g.nodes[0].attrs == {"causal": True, "scale": 0.25, "kv_len": 0}
    assert result.stats["rewrites"] == {"batched_transpose": 1, "attention": 1, "causal_mask": 1}


def test_half_precision_softmax_computed_in_f32():
    g, q, k, v, inputs = qkv(dtype=DType.f16)
    qk = g.call("matmul", q, g.call("transpose", k, perm=(0, 1, 3, 2)))
    scores = g.call("div", qk, const(g, "s", 8**0.5, np.float16))
    p = g.call("cast", g.call("softmax", g.call("cast", scores, dtype=DType.f32), axis=-1), dtype=DType.f16)
    g.outputs = [g.call("matmul", p, v)]
    transformed(g, inputs, canonicalize, rtol=2e-3)
    assert [n.op for n in g.nodes] == ["attention"] and g.nodes[0].attrs["scale"] == pytest.approx(8**-0.5, rel=1e-3)


def attention_rules(g):
    return apply_rules(g, RULE_SETS["attention"])


def test_softmax_over_the_queries_is_refused():
    g, q, k, v, _ = qkv()
    p = g.call("softmax", g.call("matmul", q, g.call("transpose", k, perm=(0, 1, 3, 2))), axis=2)
    g.outputs = [g.call("matmul", p, v)]
    assert attention_rules(g).reasons("attention") == ["the softmax is not over the keys (last axis)"]


def test_a_per_head_scale_is_refused():
    g, q, k, v, _ = qkv()
    scores = g.call("matmul", q, g.call("transpose", k, perm=(0, 1, 3, 2)))
    scaled = g.call("mul", scores, const(g, "per_head", np.full((1, H, 1, 1), 0.3)))
    g.outputs = [g.call("matmul", g.call("softmax", scaled, axis=-1), v)]
    assert attention_rules(g).reasons("attention") == ["the scale %per_head is not a nonzero one-element constant"]


def test_k_transposed_from_heads_last_is_read_through_one_transpose():
    """The legacy ONNX exporter: k^T = transpose(k [B, T, H, D], perm=[0, 2, 3, 1])."""
    g = Graph()
    shapes = {"q": (B, H, S, D), "k_bthd": (B, S, H, D), "v": (B, H, S, D)}
    q, k, v = (g.add_input(n, TensorType(DType.f32, s)) for n, s in shapes.items())
    inputs = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    p = g.call("softmax", g.call("matmul", q, g.call("transpose", k, perm=(0, 2, 3, 1))), axis=-1)
    g.outputs = [g.call("matmul", p, v)]
    _, after, _ = transformed(g, inputs, canonicalize)
    assert [n.op for n in g.nodes] == ["transpose", "attention"]
    assert "transpose(%k_bthd) {perm=[0,2,1,3]}" in after


def test_k_transposed_across_the_batch_axis_is_refused():
    g = Graph()
    q = g.add_input("q", TensorType(DType.f32, (S, H, S, D)))
    k = g.add_input("k", TensorType(DType.f32, (S, H, D, S)))
    v = g.add_input("v", TensorType(DType.f32, (S, H, S, D)))
    p = g.call("softmax", g.call("matmul", q, g.call("transpose", k, perm=(3, 1, 2, 0))), axis=-1)
    g.outputs = [g.call("matmul", p, v)]
    assert attention_rules(g).reasons("attention") == ["k is transposed by [3, 1, 2, 0], which moves its batch axis"]


def test_a_mask_that_broadcasts_the_scores_is_refused():
    g = Graph()
    q, k, v = (g.add_input(n, TensorType(DType.f32, (1, H, S, D))) for n in "qkv")
    mask = g.add_input("mask", TensorType(DType.f32, (B, 1, S, S)))
    scores = g.call("add", g.call("matmul", q, g.call("transpose", k, perm=(0, 1, 3, 2))), mask)
    g.outputs = [g.call("matmul", g.call("softmax", scores, axis=-1), v)]
    assert attention_rules(g).reasons("attention") == [
        "the mask f32[2,1,6,6] does not broadcast to the scores [1,4,6,6]"
    ]
