"""The ops LLMs are written in: embedding, rotary position embedding, attention, KV-cache writes."""

from __future__ import annotations

import numpy as np

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, Cost, op
from llmc.ir.types import TensorType

_LOW = (DType.f16.np, DType.bf16.np)


def _wide(x):
    return x.astype(np.float32) if x.dtype in _LOW else x


@op("embedding", inputs=("weight", "ids"), kind="gather")
class Embedding:
    """Rows of `weight` [vocab, dim] picked by integer `ids` of any shape: out [*ids.shape, dim]."""

    @staticmethod
    def infer(types, attrs):
        w, ids = types
        if w.rank != 2 or not ids.dtype.is_int:
            raise ShapeError(f"embedding needs a 2-D weight and integer ids, got {w} and {ids}")
        return [TensorType(w.dtype, (*ids.shape, w.shape[1]))]

    @staticmethod
    def reference(xs, attrs):
        w, ids = xs
        if ids.size and (ids.min() < -w.shape[0] or ids.max() >= w.shape[0]):
            raise ShapeError(f"embedding id out of range [0, {w.shape[0]}): min {ids.min()}, max {ids.max()}")
        return np.take(w, ids, axis=0)

    @staticmethod
    def cost(types, outs, attrs):
        return Cost(flops=0, bytes=S.dim(2 * outs[0].numel * outs[0].dtype.itemsize + types[1].numel * 8))


def _rotate(x, interleaved):
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return np.stack([-x2, x1], axis=-1).reshape(x.shape)
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


@op("rope", inputs=("x", "cos", "sin"), kind="elementwise", attrs={"interleaved": Attr("bool", False)},
    flops_per_element=3)
class Rope:
    """Rotary position embedding: x * cos + rotate(x) * sin, cos/sin broadcast to x [..., head_dim].

    rotate(x) = cat(-x[half:], x[:half]) (GPT-NeoX/Llama), or pairwise (-x1, x0) when interleaved (GPT-J).
    """

    @staticmethod
    def infer(types, attrs):
        x, cos, sin = types
        for t in (cos, sin):
            S.broadcast(x.shape, t.shape)
        if isinstance(x.shape[-1], int) and x.shape[-1] % 2:
            raise ShapeError(f"rope needs an even head dim, got {x}")
        return [TensorType(x.dtype, S.broadcast(x.shape, cos.shape))]

    @staticmethod
    def reference(xs, attrs):
        x, cos, sin = (_wide(a) for a in xs)
        return (x * cos + _rotate(x, attrs["interleaved"]) * sin).astype(xs[0].dtype)


@op("attention", inputs=("q", "k", "v", "mask"), optional=1, kind="attention",
    attrs={"causal": Attr("bool", False), "scale": Attr("float", 0.0, "0 means 1/sqrt(head_dim)"),
           "kv_len": Attr("dim", 0, "attend to the first kv_len keys only (a preallocated cache); 0 = all")})
class Attention:
    """softmax(q k^T * scale + mask) v over q [B, Hq, S, D], k [B, Hkv, T, D], v [B, Hkv, T, Dv].

    With `kv_len` set, k and v are preallocated caches [B, Hkv, M, D] and only their first
    T = kv_len positions take part (the mask then covers T keys, not M).
    Grouped-query: Hq is a multiple of Hkv and query head h reads kv head h // (Hq / Hkv).
    `mask` is bool (True keeps) or additive float, broadcast to [B, Hq, S, T]. `causal` lets
    query i (absolute position T - S + i, so a KV cache of T - S past tokens works) see keys <= it.
    A query whose every key is masked gets zeros (as torch's SDPA), not NaN.
    """

    @staticmethod
    def infer(types, attrs):
        q, k, v = types[:3]
        if q.rank != 4 or k.rank != 4 or v.rank != 4:
            raise ShapeError(f"attention needs 4-D q, k, v [batch, heads, seq, dim], got {q}, {k}, {v}")
        if not (q.dtype == k.dtype == v.dtype):
            raise ShapeError(f"attention q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
        if not S.same(q.shape[3], k.shape[3]) or not S.same(k.shape[2], v.shape[2]):
            raise ShapeError(f"attention shapes do not agree: q {q}, k {k}, v {v}")
        hq, hkv = q.shape[1], k.shape[1]
        if isinstance(hq, int) and isinstance(hkv, int) and hq % hkv:
            raise ShapeError(f"attention has {hq} query heads, not a multiple of {hkv} kv heads")
        if len(types) == 4:
            mask = types[3]
            S.broadcast(mask.shape, (q.shape[0], hq, q.shape[2], kv_length(k, attrs)))
        return [TensorType(q.dtype, (q.shape[0], hq, q.shape[2], v.shape[3]))]

    @staticmethod
    def reference(xs, attrs):
        q, k, v = (_wide(a) for a in xs[:3])
        if attrs["kv_len"]:
            k, v = k[:, :, : attrs["kv_len"]], v[:, :, : attrs["kv_len"]]
        b, hq, s, d = q.shape
        hkv, t = k.shape[1], k.shape[2]
        group = hq // hkv
        qg = q.reshape(b, hkv, group, s, d)
        scale = attrs["scale"] or 1.0 / np.sqrt(d)
        scores = np.einsum("bhgsd,bhtd->bhgst", qg, k, optimize=True) * q.dtype.type(scale)
        scores = scores.reshape(b, hq, s, t)
        if len(xs) == 4:
            mask = xs[3]
            scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + _wide(mask)
        if attrs["causal"]:
            keep = np.arange(t)[None, :] <= (np.arange(s)[:, None] + (t - s))
            scores = np.where(keep, scores, -np.inf)
        m = scores.max(axis=-1, keepdims=True)
        e = np.exp(scores - np.where(np.isfinite(m), m, 0))
        total = e.sum(axis=-1, keepdims=True)
        p = e / np.where(total > 0, total, 1)  # a row with every key masked gives zeros, as torch's SDPA
        out = np.einsum("bhgst,bhtd->bhgsd", p.reshape(b, hkv, group, s, t), v, optimize=True)
        return out.reshape(b, hq, s, v.shape[-1]).astype(xs[0].dtype)

    @staticmethod
    def cost(types, outs, attrs):
        q, k, v = types[:3]
        t = kv_length(k, attrs)
        flops = 2 * q.numel * t + 2 * outs[0].numel * t + 5 * q.shape[0] * q.shape[1] * q.shape[2] * t
        read = [q, *(kv.with_shape((*kv.shape[:2], t, kv.shape[3])) for kv in (k, v)), *types[3:]]
        return Cost(flops=S.dim(flops), bytes=S.dim(sum(x.numel * x.dtype.itemsize for x in [*read, *outs])))


def kv_length(k: TensorType, attrs: dict) -> S.Dim:
    """How many keys an attention node reads: ``kv_len``, or all of ``k`` when it is 0."""
    return k.shape[2] if S.same(attrs["kv_len"], 0) else attrs["kv_len"]


@op("kv_update", inputs=("cache", "new"), kind="scatter",
    attrs={"end": Attr("dim", doc="the write ends here: positions [end - S, end) receive `new`")})
class KvUpdate:
    """Write `new` [B, H, S, D] into a preallocated `cache` [B, H, M, D] at positions [end - S, end).

    The result is the cache itself, updated in place: nothing else may read the `cache` input
    (a generation graph takes each cache as an input and returns the update as an output, so
    the runtime keeps one buffer per cache and a decode step copies one position, not the cache).
    """

    @staticmethod
    def infer(types, attrs):
        cache, new = types
        if cache.rank != 4 or new.rank != 4 or cache.dtype != new.dtype:
            raise ShapeError(f"kv_update needs a 4-D cache and update of one dtype, got {cache} and {new}")
        for axis in (0, 1, 3):
            if not S.same(cache.shape[axis], new.shape[axis]):
                raise ShapeError(f"kv_update: the update {new} does not fit the cache {cache} on axis {axis}")
        return [cache]

    @staticmethod
    def reference(xs, attrs):
        cache, new = xs
        end, size = attrs["end"], new.shape[2]
        if not size <= end <= cache.shape[2]:
            raise ShapeError(f"kv_update writes positions [{end - size}, {end}) of a cache of {cache.shape[2]}",
                             hint="the context is longer than the cache: compile with a larger --max-seq-len")
        cache[:, :, end - size: end] = new
        return cache

    @staticmethod
    def cost(types, outs, attrs):
        return Cost(flops=0, bytes=S.dim(2 * types[1].numel * types[1].dtype.itemsize))
