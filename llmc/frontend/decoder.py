"""Generation graphs of decoder-only LLMs (Llama, Qwen2, Mistral, SmolLM): one step with a KV cache.

A frontend that knows a causal LM's architecture (``gguf``, and ``hf`` for Llama-family
folders and transformers objects) describes it as a ``DecoderConfig`` and a map from roles
(``layers.3.q``) to weights; ``decoder_graph`` builds the step graph every target compiles:

    inputs   input_ids    i64  [batch, seq]         the chunk's tokens (seq = 1 when decoding)
             position_ids i64  [batch, seq]         their absolute positions (rotary tables are read at them)
             attention_mask bool [batch, ctx]       which of the ctx = past + seq positions are real tokens
             cache_k.L, cache_v.L  [batch, kv_heads, max_seq_len, head_dim]   preallocated, per layer
    outputs  logits       f32  [batch, 1, vocab]    the last position only (or [batch, seq, vocab])
             present_k.L, present_v.L               the caches, written in place at [ctx - seq, ctx)

The same graph serves prefill (a chunk of prompt tokens) and decode (one token): a target may
compile it once with ``seq`` symbolic or specialize ``seq = 1`` for decode. Each layer is

    x = rms_norm(h); q, k, v = linear(x); q, k = rope(q, k at position_ids)
    cache_k' = kv_update(cache_k, k, end=ctx); same for v
    h = h + linear(attention(q, cache_k', cache_v', mask, causal, kv_len=ctx))
    h = h + down(silu(gate(x')) * up(x'))   with x' = rms_norm(h)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from llmc.errors import ModelLoadError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph, Value
from llmc.ir.meta import NodeMeta
from llmc.ir.tensor import ArrayWeight, Weight
from llmc.ir.types import TensorType

BATCH, SEQ, CTX = S.sym("batch"), S.sym("seq"), S.sym("ctx")
IDS, POSITIONS, MASK = "input_ids", "position_ids", "attention_mask"
LOGITS = "logits"


@dataclass(frozen=True)
class DecoderConfig:
    """The architecture facts a decoder step graph needs (read from GGUF metadata or an HF config)."""

    arch: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    norm_eps: float
    rope_theta: float
    rope_interleaved: bool      # llama.cpp's Llama layout rotates adjacent pairs; HF rotates halves
    max_positions: int          # the model's trained context length
    qkv_bias: bool = False      # Qwen2
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def cache_shape(self, batch: int, max_seq_len: int) -> tuple[int, int, int, int]:
        return (batch, self.kv_heads, max_seq_len, self.head_dim)


def is_step_graph(graph: Graph) -> bool:
    """True for a graph with the generation step's signature (as ``decoder_graph`` builds it)."""
    names = [v.name for v in graph.inputs[:3]]
    return names == [IDS, POSITIONS, MASK] and any(n.op == "kv_update" for n in graph.nodes)


@dataclass(frozen=True)
class Source:
    """One weight of a decoder and where it came from (GGUF tensor name or module path)."""

    weight: Weight
    origin: str


def decoder_graph(config: DecoderConfig, weights: Callable[[str], Source | None], *, name: str,
                  max_seq_len: int, all_logits: bool = False) -> Graph:
    """The step graph (see the module docstring); ``weights(role)`` gives each role's weight.

    Roles: ``embed``, ``norm``, ``lm_head`` (None: tied to ``embed``), and per layer ``L``:
    ``layers.L.{attn_norm,q,k,v,o,ffn_norm,gate,up,down}`` (+ ``q_bias``/``k_bias``/``v_bias``
    when ``config.qkv_bias``). Linear weights are ``[out, in]``.
    """
    return _Builder(config, weights, name, max_seq_len).build(all_logits)


class _Builder:
    def __init__(self, config: DecoderConfig, weights, name: str, max_seq_len: int):
        self.c = config
        self.lookup = weights
        self.g = Graph(name)
        self.max_seq_len = max_seq_len
        self.consts: dict[str, Value] = {}

    def weight(self, role: str, shape: tuple[int, ...]) -> Value:
        if role not in self.consts:
            src = self.lookup(role)
            if src is None:
                raise ModelLoadError(f"the {self.c.arch} model {self.g.name} has no weight for {role}",
                                     hint="the file is incomplete or not a decoder-only LLM of this architecture")
            if tuple(src.weight.shape) != shape:
                raise ModelLoadError(f"weight {src.origin} has shape {list(src.weight.shape)}, but the config "
                                     f"says {list(shape)} for {role}", hint="the file's metadata and tensors disagree")
            self.consts[role] = self.g.add_const(src.origin, src.weight)
        return self.consts[role]

    def origin(self, role: str) -> str:
        src = self.lookup(role)
        return src.origin.removesuffix(".weight") if src is not None else role

    def call(self, op: str, *inputs: Value, role: str, layer: int | None = None, **attrs) -> Value:
        return self.g.call(op, *inputs, meta=NodeMeta(origin=self.origin(role), layer=layer), **attrs)

    def build(self, all_logits: bool) -> Graph:
        c, g = self.c, self.g
        ids = g.add_input(IDS, TensorType(DType.i64, (BATCH, SEQ)))
        positions = g.add_input(POSITIONS, TensorType(DType.i64, (BATCH, SEQ)))
        mask = g.add_input(MASK, TensorType(DType.bool, (BATCH, CTX)))
        cache_type = TensorType(DType.f32, (BATCH, c.kv_heads, self.max_seq_len, c.head_dim))
        caches = [(g.add_input(f"cache_k.{i}", cache_type), g.add_input(f"cache_v.{i}", cache_type))
                  for i in range(c.layers)]
        cos, sin = self.rotary(positions)
        mask4 = g.call("reshape", mask, shape=(BATCH, 1, 1, CTX))
        h = self.call("embedding", self.weight("embed", (c.vocab, c.hidden)), ids, role="embed")
        presents = []
        for i, (cache_k, cache_v) in enumerate(caches):
            h, kv = self.layer(i, h, cos, sin, mask4, cache_k, cache_v)
            presents += kv
        h = self.call("rms_norm", h, self.weight("norm", (c.hidden,)), role="norm", eps=c.norm_eps)
        if not all_logits:
            h = g.call("slice", h, axes=(1,), starts=(SEQ - 1,), ends=(SEQ,))
        head = self.weight("lm_head" if self.lookup("lm_head") is not None else "embed", (c.vocab, c.hidden))
        logits = self.call("linear", h, head, role="lm_head" if self.lookup("lm_head") is not None else "embed")
        g.outputs = [logits, *presents]
        logits.name = LOGITS
        for i, (k, v) in enumerate(zip(presents[0::2], presents[1::2])):
            k.name, v.name = f"present_k.{i}", f"present_v.{i}"
        g.verify()
        return g

    def rotary(self, positions: Value) -> tuple[Value, Value]:
        """cos/sin [batch, 1, seq, head_dim] at ``positions``, from tables over the model's positions."""
        c, g = self.c, self.g
        cos_table, sin_table = rotary_tables(c, self.max_seq_len)
        out = []
        for table, name in ((cos_table, "rope.cos"), (sin_table, "rope.sin")):
            rows = g.call("embedding", g.add_const(name, ArrayWeight(table)), positions)
            out.append(g.call("reshape", rows, shape=(BATCH, 1, SEQ, c.head_dim)))
        return out[0], out[1]

    def layer(self, i: int, h: Value, cos: Value, sin: Value, mask: Value, cache_k: Value, cache_v: Value):
        c, g, p = self.c, self.g, f"layers.{i}"
        x = self.call("rms_norm", h, self.weight(f"{p}.attn_norm", (c.hidden,)), role=f"{p}.attn_norm", layer=i,
                      eps=c.norm_eps)
        q = self.heads(x, i, "q", c.heads)
        k = self.heads(x, i, "k", c.kv_heads)
        v = self.heads(x, i, "v", c.kv_heads)
        q = self.call("rope", q, cos, sin, role=f"{p}.q", layer=i, interleaved=c.rope_interleaved)
        k = self.call("rope", k, cos, sin, role=f"{p}.k", layer=i, interleaved=c.rope_interleaved)
        present_k = self.call("kv_update", cache_k, k, role=f"{p}.k", layer=i, end=CTX)
        present_v = self.call("kv_update", cache_v, v, role=f"{p}.v", layer=i, end=CTX)
        a = self.call("attention", q, present_k, present_v, mask, role=f"{p}.o", layer=i, causal=True, kv_len=CTX)
        a = self.call("transpose", a, role=f"{p}.o", layer=i, perm=(0, 2, 1, 3))  # a kernel of the layer (prefill)
        a = g.call("reshape", a, shape=(BATCH, SEQ, c.heads * c.head_dim))
        a = self.call("linear", a, self.weight(f"{p}.o", (c.hidden, c.heads * c.head_dim)), role=f"{p}.o", layer=i)
        h = self.call("add", h, a, role=f"{p}.o", layer=i)
        x = self.call("rms_norm", h, self.weight(f"{p}.ffn_norm", (c.hidden,)), role=f"{p}.ffn_norm", layer=i,
                      eps=c.norm_eps)
        gate = self.call("linear", x, self.weight(f"{p}.gate", (c.ffn, c.hidden)), role=f"{p}.gate", layer=i)
        up = self.call("linear", x, self.weight(f"{p}.up", (c.ffn, c.hidden)), role=f"{p}.up", layer=i)
        y = self.call("mul", self.call("silu", gate, role=f"{p}.gate", layer=i), up, role=f"{p}.up", layer=i)
        y = self.call("linear", y, self.weight(f"{p}.down", (c.hidden, c.ffn)), role=f"{p}.down", layer=i)
        return self.call("add", h, y, role=f"{p}.down", layer=i), [present_k, present_v]

    def heads(self, x: Value, i: int, which: str, heads: int) -> Value:
        """linear(x) for q/k/v (+ bias), as [batch, heads, seq, head_dim]."""
        c, g, role = self.c, self.g, f"layers.{i}.{which}"
        w = self.weight(role, (heads * c.head_dim, c.hidden))
        bias = [self.weight(f"{role}_bias", (heads * c.head_dim,))] if c.qkv_bias else []
        y = self.call("linear", x, w, *bias, role=role, layer=i)
        y = g.call("reshape", y, shape=(BATCH, SEQ, heads, c.head_dim))
        return g.call("transpose", y, perm=(0, 2, 1, 3))


def rotary_tables(c: DecoderConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [length, head_dim] for positions 0..length-1, computed in float32 as transformers does.

    Halves layout (GPT-NeoX, Hugging Face): frequency j at columns j and j + D/2; interleaved
    (llama.cpp's Llama): frequency j at columns 2j and 2j + 1.
    """
    inv_freq = (1.0 / (c.rope_theta ** (np.arange(0, c.head_dim, 2, dtype=np.int64).astype(np.float32) / c.head_dim)))
    angles = np.arange(length, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    cols = np.repeat(angles, 2, axis=1) if c.rope_interleaved else np.concatenate([angles, angles], axis=1)
    return np.cos(cols).astype(np.float32), np.sin(cols).astype(np.float32)
