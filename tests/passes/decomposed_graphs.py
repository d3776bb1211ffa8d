"""Builders of the decomposed patterns exporters emit, written with the IR builder.

Each function adds nodes to ``g`` and returns the output value, in the form a named exporter
uses (ONNX exporters' layer norm, Llama's RMSNorm, HF's eager attention and rotate_half...).
"""

from __future__ import annotations

import math

import numpy as np

from llmc.ir import DType, Graph, TensorType
from llmc.ir.tensor import MetaWeight


def const(g: Graph, name: str, value, dtype=np.float32):
    return g.add_const(name, np.asarray(value, dtype=dtype))


def f32(*shape):
    return TensorType(DType.f32, shape)


def erf_gelu(g: Graph, x, *, form: str = "div"):
    """x * 0.5 * (1 + erf(x / 1.4142)) (form "div"), with x * 0.7071 ("mul"), or 0.5 * (x * (...)) ("outer")."""
    if form == "mul":
        scaled = g.call("mul", x, const(g, "rsqrt2", 0.7071))
    else:
        scaled = g.call("div", x, const(g, "sqrt2", 1.4142))
    term = g.call("add", const(g, "one", 1.0), g.call("erf", scaled))
    if form == "outer":
        return g.call("mul", const(g, "half", 0.5), g.call("mul", x, term))
    return g.call("mul", g.call("mul", x, const(g, "half", 0.5)), term)


def tanh_gelu(g: Graph, x):
    """GPT-2's gelu_new: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))."""
    cube = g.call("pow", x, const(g, "three", 3.0))
    inner = g.call("add", x, g.call("mul", cube, const(g, "k", 0.044715)))
    t = g.call("tanh", g.call("mul", inner, const(g, "c", math.sqrt(2 / math.pi))))
    return g.call("mul", g.call("mul", x, const(g, "half", 0.5)), g.call("add", t, const(g, "one", 1.0)))


def layer_norm_onnx(g: Graph, x, w=None, b=None, *, eps=1e-5, axes=(-1,)):
    """ReduceMean / Sub / Pow / ReduceMean / Add / Sqrt / Div / Mul / Add, as ONNX exporters write it."""
    mean = g.call("reduce_mean", x, axes=axes, keepdims=True)
    d = g.call("sub", x, mean)
    var = g.call("reduce_mean", g.call("pow", d, const(g, "two", 2.0)), axes=axes, keepdims=True)
    y = g.call("div", d, g.call("sqrt", g.call("add", var, const(g, "eps", eps))))
    if w is not None:
        y = g.call("mul", y, w)
    if b is not None:
        y = g.call("add", y, b)
    return y


def rms_norm_llama(g: Graph, x, w, *, eps=1e-6, compute_f32=False):
    """Llama: w * (h * rsqrt(mean(h^2, -1) + eps)).to(x.dtype), h = x.to(f32) when ``compute_f32``."""
    h = g.call("cast", x, dtype=DType.f32) if compute_f32 else x
    var = g.call("reduce_mean", g.call("pow", h, const(g, "two", 2.0)), axes=(-1,), keepdims=True)
    n = g.call("mul", h, g.call("rsqrt", g.call("add", var, const(g, "eps", eps))))
    if compute_f32:
        n = g.call("cast", n, dtype=x.type.dtype)
    return g.call("mul", w, n)


def repeat_kv(g: Graph, x, groups: int):
    """HF repeat_kv: [B, H, T, D] -> [B, H * groups, T, D] by unsqueeze / expand / reshape."""
    b, h, t, d = x.type.shape
    five = g.call("reshape", x, shape=(b, h, 1, t, d))
    return g.call("reshape", g.call("expand", five, shape=(b, h, groups, t, d)), shape=(b, h * groups, t, d))


def eager_attention(g: Graph, q, k, v, *, mask=None, groups: int = 1, safe_softmax: bool = False):
    """HF eager attention: softmax(q @ k^T * d^-0.5 + mask) @ v, k/v repeated for grouped-query heads."""
    if groups > 1:
        k, v = repeat_kv(g, k, groups), repeat_kv(g, v, groups)
    scores = g.call("matmul", q, g.call("transpose", k, perm=(0, 1, 3, 2)))
    scores = g.call("mul", scores, const(g, "scaling", q.type.shape[-1] ** -0.5))
    if mask is not None:
        scores = g.call("add", scores, mask)
    p = g.call("softmax", scores, axis=-1)
    if safe_softmax:
        nan = g.call("not", g.call("equal", p, p))
        p = g.call("where", nan, const(g, "zero", 0.0), p)
    return g.call("matmul", p, v)


def rotate_half_rope(g: Graph, x, cos, sin):
    """HF apply_rotary_pos_emb: x * cos + cat(-x2, x1) * sin."""
    d = x.type.shape[-1]
    x1 = g.call("slice", x, axes=(-1,), starts=(0,), ends=(d // 2,))
    x2 = g.call("slice", x, axes=(-1,), starts=(d // 2,), ends=(2**63 - 1,))
    rot = g.call("concat", g.call("neg", x2), x1, axis=-1)
    return g.call("add", g.call("mul", x, cos), g.call("mul", rot, sin))


def causal_additive_mask(s: int, dtype=np.float32) -> np.ndarray:
    keep = np.tril(np.ones((s, s), dtype=bool))
    return np.where(keep, 0, np.finfo(dtype).min).astype(dtype)[None, None]


def rope_tables(s: int, d: int):
    inv = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    freqs = np.outer(np.arange(s), inv)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32)[None, None], np.sin(emb).astype(np.float32)[None, None]


def llama_like(layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, vocab: int, seq: int,
               *, meta_weights: bool = False, seed: int = 0) -> Graph:
    """A Llama-shaped decoder written out the way torch.export + the frontend leave it: decomposed
    RMSNorm, rotate_half RoPE, eager attention with repeat_kv, x * sigmoid(x) SwiGLU."""
    rng = np.random.default_rng(seed)
    g = Graph("llama_like")
    head = hidden // heads

    def weight(name, *shape):
        if meta_weights:
            return g.add_const(name, MetaWeight(f32(*shape)))
        return g.add_const(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    ids = g.add_input("input_ids", TensorType(DType.i64, (1, seq)))
    h = g.call("embedding", weight("embed", vocab, hidden), ids)
    cos_np, sin_np = rope_tables(seq, head)
    cos, sin = g.add_const("cos", cos_np), g.add_const("sin", sin_np)
    mask = g.add_const("mask", causal_additive_mask(seq))
    for i in range(layers):
        n = rms_norm_llama(g, h, weight(f"l{i}.ln1", hidden))

        def proj(name, x, out, width):
            y = g.call("linear", x, weight(f"l{i}.{name}", out, x.type.shape[-1]))
            return g.call("transpose", g.call("reshape", y, shape=(1, seq, out // width, width)), perm=(0, 2, 1, 3))

        q = rotate_half_rope(g, proj("q", n, hidden, head), cos, sin)
        k = rotate_half_rope(g, proj("k", n, kv_heads * head, head), cos, sin)
        v = proj("v", n, kv_heads * head, head)
        a = eager_attention(g, q, k, v, mask=mask, groups=heads // kv_heads)
        a = g.call("reshape", g.call("transpose", a, perm=(0, 2, 1, 3)), shape=(1, seq, hidden))
        h = g.call("add", h, g.call("linear", a, weight(f"l{i}.o", hidden, hidden)))
        n = rms_norm_llama(g, h, weight(f"l{i}.ln2", hidden))
        gate = g.call("linear", n, weight(f"l{i}.gate", ffn, hidden))
        act = g.call("mul", gate, g.call("sigmoid", gate))
        up = g.call("linear", n, weight(f"l{i}.up", ffn, hidden))
        h = g.call("add", h, g.call("linear", g.call("mul", act, up), weight(f"l{i}.down", hidden, ffn)))
    g.outputs = [g.call("linear", rms_norm_llama(g, h, weight("norm", hidden)), weight("lm_head", vocab, hidden))]
    return g
