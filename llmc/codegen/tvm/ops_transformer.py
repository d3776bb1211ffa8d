"""The ops LLMs are written in: embedding, rotary position embedding, attention.

``attention`` is built from Relax ops so each piece gets the targets' matmul/softmax schedules
(keys are transposed once per call, so the score product reads both operands contiguously):
grouped-query heads need no copies of K/V, because query heads ``h = kv * G + g`` reshape to
``[B, Hkv, G * S, D]`` and meet their KV head in one batched matmul. The causal mask is a TE
kernel comparing key position ``t`` with the query's absolute position ``s + (T - S)`` (so a KV
cache of ``T - S`` past tokens works); TVM fuses it into the score matmul's epilogue. With
``kv_len`` set, k and v are preallocated caches and their first ``kv_len`` positions are read.

``kv_update`` is a TIR kernel called with ``call_tir_inplace``: it writes the new positions
into the cache buffer it is given and returns that buffer, so a step copies only its own keys.
When the rows come from a fused layout node read by nothing else, that node's kernel does the
write (``lower.cache_writes``) and the ``kv_update`` lowers to no kernel.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import sympy
from tvm import relax, te, tirx, topi
from tvm.relax import op as R
from tvm.script import tirx as T

from llmc.codegen.tvm.context import as_f32
from llmc.codegen.tvm.ops_reduce import softmax_of
from llmc.codegen.tvm.ops_shape import offset_view
from llmc.codegen.tvm.registry import lowers
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.transformer import kv_length

KEY_BLOCK = 16  # cache reads are rounded up to whole blocks of keys (see _read_length)
LANES = 16      # partial sums per decode dot product (see _cache_scores)
SCORE_PARTIALS, SCORES = "cache_scores_partial", "cache_scores"  # its blocks, which the cpu rule LanePartials schedules


@lowers("embedding")
def embedding(ctx, node, args):
    return R.take(args[0], args[1], 0, mode="wrap")


@lowers("rope")
def rope(ctx, node, args):
    """x * cos + rotate(x) * sin, in float32, with cos/sin broadcast to x (numpy rules)."""
    interleaved = node.attrs["interleaved"]
    out_shape = ctx.shape(node.outputs[0].type.shape)
    rank = len(out_shape)
    dtype = ctx.dtype(node.inputs[0].type.dtype)
    input_shapes = [v.type.shape for v in node.inputs]

    def compute(x, cos, sin):
        def at(t, t_shape, i):
            offset = rank - len(t_shape)
            return t[tuple(0 if d == 1 else i[offset + a] for a, d in enumerate(t_shape))]

        def body(*i):
            d, half = i[-1], x.shape[-1] // 2
            if interleaved:
                partner, sign = tirx.if_then_else(d % 2 == 0, d + 1, d - 1), tirx.if_then_else(d % 2 == 0, -1.0, 1.0)
            else:
                partner, sign = tirx.if_then_else(d < half, d + half, d - half), tirx.if_then_else(d < half, -1.0, 1.0)
            xi = at(x, input_shapes[0], i)
            xr = at(x, input_shapes[0], (*i[:-1], partner))
            y = (as_f32(xi) * as_f32(at(cos, input_shapes[1], i))
                 + tirx.Cast("float32", sign) * as_f32(xr) * as_f32(at(sin, input_shapes[2], i)))
            return tirx.Cast(dtype, y)

        return te.compute(out_shape, body, name="rope")

    return ctx.emit_te(compute, *args, name="rope")


@lowers("attention")
def attention(ctx, node, args):
    q_t, k_t, v_t = (v.type for v in node.inputs[:3])
    b, hq, s, d = q_t.shape
    hkv, t, dv = k_t.shape[1], kv_length(k_t, node.attrs), v_t.shape[3]
    group = hq // hkv
    q, k, v = args[:3]
    mask = args[3] if len(args) == 4 else None
    keys = t
    dtype = q_t.dtype
    scale = node.attrs["scale"] or 1.0 / math.sqrt(d)
    cached = not S.same(node.attrs["kv_len"], 0)
    one_query = cached and isinstance(ctx.dim(s), tirx.IntImm) and int(ctx.dim(s)) == 1
    if cached:
        keys = _read_length(node, t)
        if not one_query:
            k = offset_view(ctx, k, (*k_t.shape[:2], keys, k_t.shape[3]), {}, "kv_read")
    if one_query:  # a decode step: dot products straight off the cache, no copy of its prefix
        scores = ctx.emit_te(_cache_scores, q, k, ctx.dim(keys), group, scale, name="cache_scores")
        scores = ctx.emit(R.reshape(scores, ctx.shape([b, hq, s, keys])))
    else:
        q_grouped = ctx.emit(R.reshape(q, ctx.shape([b, hkv, group * s, d])))
        scores = ctx.emit(R.matmul(q_grouped, ctx.emit(R.permute_dims(k, [0, 1, 3, 2]))))
        scores = ctx.emit(R.reshape(ctx.emit(R.multiply(scores, ctx.const(scale, dtype))), ctx.shape([b, hq, s, keys])))
    if cached:  # mask, causal mask, softmax and the all-hidden rule in one row kernel
        probs = _masked_probs(ctx, node, scores, mask, ctx.dim(t))
    else:
        probs = _probs(ctx, node, scores, mask, t)
    probs = ctx.emit(R.reshape(probs, ctx.shape([b, hkv, group * s, keys])))
    # over a cache the products read its first ``keys`` rows in place (no copy of the value prefix)
    out = ctx.emit_te(_cache_values, probs, v, name="cache_values") if cached else ctx.emit(R.matmul(probs, v))
    return R.reshape(out, ctx.shape([b, hq, s, dv]))


def _probs(ctx, node, scores, mask, t):
    """Softmax of the scores with the mask and causal mask applied, as separate Relax/TE steps."""
    dtype = node.inputs[0].type.dtype
    if mask is not None:
        scores = ctx.emit(_apply_mask(ctx, scores, mask, node.inputs[3].type.dtype, dtype))
    if node.attrs["causal"]:
        scores = _scalar_te(ctx, _causal, scores, ctx.dim(t), name="causal_mask")
    probs = ctx.emit(softmax_of(ctx, scores, -1, dtype))
    if mask is not None:  # a query whose every key is masked gets zeros, not NaN (as the op's reference)
        best = ctx.emit(R.max(scores, axis=-1, keepdims=True))
        seen = ctx.emit(R.greater(best, ctx.const(_hidden(ctx.dtype(dtype)) / 2, dtype)))
        probs = ctx.emit(R.where(seen, probs, ctx.const(0.0, dtype)))
    return probs


def _masked_probs(ctx, node, scores, mask, keys):
    """The attention probabilities over a cache read of ``scores.shape[-1]`` keys (``keys`` of them
    real, the rest the rounded-up read), as one TE kernel: the ``cpu`` target's row rule keeps it
    one pass per row, where separate mask, causal-mask, max and softmax kernels each stream the
    whole score tensor through memory (a 512-token prefill spent a quarter of its time there)."""
    dtype = ctx.dtype(node.inputs[0].type.dtype)
    kind = None if mask is None else node.inputs[3].type
    fast = ctx.options.fast_math and dtype == "float32"
    fn = functools.partial(_masked_softmax, causal=node.attrs["causal"], mask_type=kind, fast=fast)
    tensors = [scores] + ([mask] if mask is not None else [])
    if isinstance(keys, tirx.IntImm):
        return ctx.emit_te(lambda *a: fn(*a, keys=keys), *tensors, name="masked_softmax")
    return ctx.emit_te(lambda *a: fn(*a[:-1], keys=a[-1]), *tensors, keys, name="masked_softmax")


def _masked_softmax(scores, mask=None, *, keys, causal: bool, mask_type, fast: bool):
    """softmax over the last axis of ``scores`` [B, H, S, K] where key ``j`` is visible to query
    ``i`` iff ``j < keys``, ``j <= i + keys - S`` (causal) and the mask allows it (a boolean mask
    [.., keys] broadcast to the scores, or an additive one); a row with no visible key is zeros."""
    s_len, width = scores.shape[2], scores.shape[3]
    lowest = tirx.const(_hidden(scores.dtype), scores.dtype)
    rank = len(mask_type.shape) if mask_type is not None else 0

    def visible_score(b, h, i, j):
        ok = j < keys
        if causal:
            ok = tirx.all(ok, j <= i + (keys - s_len))
        x = scores[b, h, i, j]
        if mask is not None:
            at = (b, h, i, tirx.min(j, keys - 1))[4 - rank:]
            m = mask[tuple(0 if d == 1 else a for a, d in zip(at, mask_type.shape[:-1]))  + (at[-1],)]
            if mask_type.dtype == DType.bool:
                ok = tirx.all(ok, m)
            else:
                x = x + m
        return tirx.if_then_else(ok, x, lowest)

    x = te.compute(scores.shape, visible_score, name="visible_scores")
    k = te.reduce_axis((0, width), name="k")
    row_max = te.compute(scores.shape[:3], lambda b, h, i: te.max(x[b, h, i, k], axis=k), name="row_max")
    shifted = te.compute(scores.shape, lambda b, h, i, j: x[b, h, i, j] - row_max[b, h, i], name="shifted")
    e = topi.fast_exp(shifted) if fast else te.compute(scores.shape, lambda *i: te.exp(shifted(*i)), name="exp")
    k2 = te.reduce_axis((0, width), name="k2")
    row_sum = te.compute(scores.shape[:3], lambda b, h, i: te.sum(e[b, h, i, k2], axis=k2), name="row_sum")
    seen = lowest / tirx.const(2, scores.dtype)
    return te.compute(scores.shape, lambda b, h, i, j: tirx.if_then_else(
        row_max[b, h, i] > seen, e[b, h, i, j] / row_sum[b, h, i], tirx.const(0, scores.dtype)), name="probs")


def _cache_scores(q, cache, keys, group: int, scale: float):
    """``scale`` * q . cache[j] for one query [B, Hq, 1, D] and the first ``keys`` positions of a cache
    [B, Hkv, M, D], as [B, Hq, keys, 1], in one kernel: per key, ``LANES`` partial dot products each
    summed over D / LANES chunks (the cache's row read contiguously, vectorized across the lanes),
    then the lanes summed."""
    lanes = LANES if q.shape[3] % LANES == 0 else 1
    chunk = te.reduce_axis((0, q.shape[3] // lanes), name="chunk")
    partial = te.compute((q.shape[0], q.shape[1], keys, lanes), lambda b, h, j, lane: te.sum(
        q[b, h, 0, chunk * lanes + lane] * cache[b, h // group, j, chunk * lanes + lane], axis=chunk),
        name=SCORE_PARTIALS)
    lane = te.reduce_axis((0, lanes), name="lane")
    return te.compute((*partial.shape[:3], 1), lambda b, h, j, _: te.sum(
        partial[b, h, j, lane] * tirx.const(scale, partial.dtype), axis=lane), name=SCORES)


def _cache_values(probs, cache):
    """``probs`` [B, Hkv, R, keys] times the first ``keys`` rows of a value cache [B, Hkv, M, D]."""
    j = te.reduce_axis((0, probs.shape[3]), name="j")
    return te.compute((*probs.shape[:3], cache.shape[3]), lambda b, h, r, d: te.sum(
        probs[b, h, r, j] * cache[b, h, j, d], axis=j), name="cache_values")


def _read_length(node, t):
    """How many cache positions a causal attention reads: ``t`` rounded up to whole ``KEY_BLOCK``s when
    the cache allows (the extra keys lie after every query, so the causal mask hides them), which
    keeps the score rows' vector loops free of tail predicates."""
    cache = node.inputs[1].type.shape[2]
    if not node.attrs["causal"] or not isinstance(cache, int) or cache % KEY_BLOCK or isinstance(t, int):
        return t
    return S.dim(KEY_BLOCK * sympy.ceiling(t / KEY_BLOCK))


def _scalar_te(ctx, fn, tensor, scalar, *, name):
    """``emit_te(fn, tensor, scalar)`` with a symbolic ``scalar`` passed to the kernel as an argument."""
    if isinstance(scalar, tirx.IntImm):
        return ctx.emit_te(lambda x: fn(x, scalar), tensor, name=name)
    return ctx.emit_te(fn, tensor, scalar, name=name)


def _apply_mask(ctx, scores, mask, mask_dtype: DType, dtype: DType):
    if mask_dtype == DType.bool:
        return R.where(mask, scores, ctx.const(_hidden(ctx.dtype(dtype)), dtype))
    return R.add(scores, mask)


def _hidden(dtype: str) -> float:
    """The score of a hidden key: the dtype's lowest finite value, not -inf, because the cpu target
    compiles with fast math (no infinities), and exp(lowest - max) is 0 all the same."""
    dtype = str(dtype)
    return float(np.finfo(np.dtype("float16" if dtype == "bfloat16" else dtype)).min)


def _causal(scores, keys):
    """Scores with key t hidden from query s when t > s + (keys - S)."""
    s_len = scores.shape[2]
    neg_inf = tirx.const(_hidden(scores.dtype), scores.dtype)
    return te.compute(scores.shape, lambda b, h, i, j: tirx.if_then_else(
        j <= i + (keys - s_len), scores[b, h, i, j], neg_inf), name="causal_mask")


@lowers("kv_update")
def kv_update(ctx, node, args):
    if id(node) in ctx.written:  # the kernel computing the rows wrote them (``lower.cache_writes``)
        return args[1]  # ... and returned the updated cache as its value
    return write_rows(ctx, node, args[0], args[1])


def write_rows(ctx, node, cache, rows):
    """The ``kv_update`` ``node``: ``rows`` written into ``cache`` in place; returns the updated cache."""
    cache_t = ctx.out_type(node)
    batch, heads, length, dim = ctx.shape(cache_t.shape)
    count = ctx.dim(node.inputs[1].type.shape[2])
    func = _kv_write_kernel(_static(batch), int(heads), int(length), int(dim), _static(count), ctx.dtype(cache_t.dtype))
    gvar = ctx.bb.add_func(func, "kv_update")
    end = relax.prim_value(ctx.dim(node.attrs["end"]))
    return relax.call_tir_inplace(gvar, [cache, rows, end], 0, ctx.struct(cache_t))


def _static(d: tirx.PrimExpr) -> int | None:
    return int(d) if isinstance(d, tirx.IntImm) else None


@functools.cache
def _kv_write_kernel(batch: int | None, heads: int, length: int, dim: int, rows: int | None, dtype: str):
    """cache[:, :, end - s + i] = new[:, :, i], in place; opaque, so TVM fuses nothing into it.

    ``batch`` and ``rows`` (``s``) are the sizes when known (a decode step writes one row), so the
    kernel's buffers have the shapes of its arguments where FuseTIR merges it into a fused node's
    kernel. One parse per shape: TVMScript parsing took 0.3 s a call, 40 s for SmolLM2's 60 caches."""
    heads, length, dim = T.int64(heads), T.int64(length), T.int64(dim)
    b = T.int64(batch) if batch is not None else tirx.Var("b", "int64")
    s = T.int64(rows) if rows is not None else tirx.Var("s", "int64")

    @T.prim_func(private=True, s_tir=True)
    def kv_update(var_cache: T.handle, var_new: T.handle, end: T.int64):
        T.func_attr({"tirx.noalias": True, "op_pattern": 8})
        cache = T.match_buffer(var_cache, (b, heads, length, dim), dtype)
        new = T.match_buffer(var_new, (b, heads, s, dim), dtype)
        assert s <= end and end <= length, "kv_update: the write would fall outside the cache"  # noqa: PLR1716 (TVMScript)
        for i0, i1, i2, i3 in T.grid(b, heads, s, dim):
            with T.sblock("kv_write"):
                v0, v1, v2, v3 = T.axis.remap("SSSS", [i0, i1, i2, i3])
                cache[v0, v1, end - s + v2, v3] = new[v0, v1, v2, v3]

    return kv_update
