"""Attention written out as matmul / softmax / matmul, raised back to ``attention``.

    %s = matmul(mul(%q, %c1), mul(transpose(%k) {perm=[0,1,3,2]}, %c2))    scales optional, on
    %p = softmax(add(mul(%s, %c3), %mask)) {axis=-1}                        q, k^T or the scores
    %o = matmul(%p, %v)                      -> attention(%q, %k, %v, %mask) {scale=c1*c2*c3}

Also matched: scores divided by a constant, no mask, softmax computed in f32 between casts,
the "safe softmax" of ONNX exports (``where(isnan(p), 0, p)``, imported as
``where(not(equal(p, p)), 0, p)``), and grouped-query attention where k and v are repeated
by Hugging Face's ``repeat_kv`` (``reshape -> expand -> reshape``): the attention reads the
unrepeated k and v (also when the repeats feed an ``attention`` node, as torch's SDPA leaves
them). k^T may come from any transpose that keeps the batch axis first (the legacy ONNX
exporter's ``transpose(reshape(k), [0, 2, 3, 1])``). An additive mask that is a constant
causal triangle becomes ``causal=True``.

A row whose scores are all masked gives zeros in ``attention`` (as torch's SDPA and the safe
softmax do); a plain softmax gave NaN there.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import numpy as np

from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Value
from llmc.passes.canonicalize.common import broadcasts_to, same_shape
from llmc.passes.patterns import P, Pattern
from llmc.passes.rewrite import Match, Rule, RuleSet

q, k, v = P.any("q"), P.any("k"), P.any("v")


def _repeat(base: Pattern, tag: str) -> Pattern:
    """HF repeat_kv of ``base`` [B, H, T, D]: reshape to [B, H, 1, T, D], expand the new axis, merge."""
    return P.op("reshape", P.op("expand", P.op("reshape", base, name=f"{tag}_5d"), name=f"{tag}_x"), name=f"{tag}_rep")


def _repeated(base: Pattern, tag: str) -> Pattern:
    return P.either(_repeat(base, tag), base)


_K = _repeated(k, "k")
_kt = P.op("transpose", _K, name="kt")
_kt_scaled = P.either(
    P.op("mul", _kt, P.const("scale_k")), P.op("transpose", P.op("mul", _K, P.const("scale_k")), name="kt"), _kt
)
_qk = P.op("matmul", P.either(P.op("mul", q, P.const("scale_q")), q), _kt_scaled, name="qk")
_scores = P.either(P.op("mul", _qk, P.const("scale_s")), P.op("div", _qk, P.const("div_s")), _qk)
_masked = P.either(P.op("add", _scores, P.any("mask")), _scores)
_softmax = P.op("softmax", P.either(P.op("cast", _masked, name="to_f32"), _masked), name="softmax")
_probs = P.either(P.op("cast", _softmax, name="from_f32"), _softmax, name="probs")
_safe = P.either(P.op("where", P.op("not", P.op("equal", _probs, _probs)), P.const(value=0.0, tol=0.0), _probs), _probs)
_pattern = P.op("matmul", _safe, _repeated(v, "v"))


def _scale(m: Match) -> tuple[float, str | None]:
    scale = 1.0
    for name, power in (("scale_q", 1), ("scale_k", 1), ("scale_s", 1), ("div_s", -1)):
        if name in m:
            value = m.scalar(name)
            if value is None or value == 0.0:
                return 0.0, f"the scale %{m[name].name} is not a nonzero one-element constant"
            scale *= value**power
    return scale, None


def _check_repeat(m: Match, tag: str, base: Value) -> str | None:
    """``{tag}_rep`` = reshape(expand(reshape(base, [B,H,1,T,D]), [B,H,g,T,D]), [B,H*g,T,D])."""
    if f"{tag}_rep" not in m:
        return None
    b, h, t, d = base.type.shape
    five, expanded = m[f"{tag}_5d"].type.shape, m[f"{tag}_x"].type.shape
    if len(expanded) != 5 or not same_shape(five, (b, h, 1, t, d)):
        return f"%{m[f'{tag}_rep'].name} is not a repeat of the heads of %{base.name}"
    g = expanded[2]
    if not same_shape(expanded, (b, h, g, t, d)) or not same_shape(m[f"{tag}_rep"].type.shape, (b, S.dim(h * g), t, d)):
        return f"%{m[f'{tag}_rep'].name} is not a repeat of the heads of %{base.name}"
    return None


def _key_perm(m: Match) -> list[int]:
    """How the captured k is permuted into [B, H, T, D]: k^T = transpose(k, perm), so undo the
    last swap (the identity for the usual transpose(k, [0, 1, 3, 2]))."""
    perm = list(m.node("kt").attrs["perm"])
    return [perm[i] for i in _SWAP] if len(perm) == 4 else perm


_SWAP = (0, 1, 3, 2)


def _check_types(m: Match) -> str | None:
    qv, kv, vv = m["q"], m["k"], m["v"]
    if any(t.type.rank != 4 for t in (qv, kv, vv)):
        return "q, k and v are not all 4-D [batch, heads, seq, dim]"
    if not (qv.type.dtype == kv.type.dtype == vv.type.dtype) or not qv.type.dtype.is_float:
        return "q, k and v do not share one float dtype"
    if _key_perm(m) != list(range(4)) and "k_rep" in m:
        return "k is both repeated and permuted"
    k_shape = [kv.type.shape[i] for i in _key_perm(m)]
    (b, hq, _, d), (bk, hk, t, dk), (bv, hv, tv, _) = qv.type.shape, k_shape, vv.type.shape
    if not all(S.same(x, y) for x, y in ((b, bk), (b, bv), (hk, hv), (t, tv), (d, dk))):
        return "q, k and v disagree on batch, kv heads, key length or head dim"
    if isinstance(hq, int) and isinstance(hk, int) and hq % hk:
        return f"{hq} query heads are not a multiple of {hk} kv heads"
    return None


def _check_softmax(m: Match) -> str | None:
    if m.node("softmax").attrs["axis"] not in (-1, 3):
        return "the softmax is not over the keys (last axis)"
    if "to_f32" in m and m.node("to_f32").attrs["dtype"] != DType.f32:
        return "the softmax input is cast to a type other than f32"
    if m["probs"].type.dtype != m["v"].type.dtype:
        return "the probabilities are not in the dtype of v"
    return None


def _check_mask(m: Match) -> str | None:
    if "mask" not in m:
        return None
    scores = m["qk"].type.shape
    if not broadcasts_to(m["mask"].type.shape, scores):
        return f"the mask {m['mask'].type} does not broadcast to the scores {S.shape_str(scores)}"
    return None


def _check_attention(m: Match) -> str | None:
    if _key_perm(m)[:1] != [0]:
        return f"k is transposed by {list(m.node('kt').attrs['perm'])}, which moves its batch axis"
    return (_check_types(m) or _check_repeat(m, "k", m["k"]) or _check_repeat(m, "v", m["v"])
            or _check_softmax(m) or _check_mask(m) or _scale(m)[1])


def _attention(m: Match):
    mask = [m["mask"]] if "mask" in m else []
    perm = _key_perm(m)
    k = m["k"] if perm == list(range(4)) else m.call("transpose", m["k"], perm=perm)
    return m.call("attention", m["q"], k, m["v"], *mask, causal=False, scale=_scale(m)[0])


attention = Rule("attention", _pattern, _attention, check=_check_attention)

# -- grouped-query attention reads the kv heads unrepeated ------------------------------------

_mask = P.any("mask")


def _check_gqa(m: Match) -> str | None:
    if m["k"].type.rank != 4 or m["v"].type.rank != 4:
        return "k and v are not 4-D"
    return _check_repeat(m, "k", m["k"]) or _check_repeat(m, "v", m["v"])


def _gqa(m: Match):
    mask = [m["mask"]] if "mask" in m else []
    return m.call("attention", m["q"], m["k"], m["v"], *mask, **m.root.attrs)


attention_gqa = Rule(
    "attention_gqa",
    P.either(P.op("attention", q, _repeat(k, "k"), _repeat(v, "v")),
             P.op("attention", q, _repeat(k, "k"), _repeat(v, "v"), _mask)),
    _gqa, check=_check_gqa,
)

# -- a constant causal mask becomes causal=True ---------------------------------------------

_MAX_MASK = 1 << 22
_causal_cache: WeakKeyDictionary = WeakKeyDictionary()


def _causal_reason(mask: Value, s, t) -> str | None:
    """Why the constant ``mask`` is not a causal mask for s queries over t keys (bottom-right aligned)."""
    if not mask.const.materialized or not isinstance(mask.type.numel, int):
        return "the mask constant has no data"
    if not (isinstance(s, int) and isinstance(t, int)) or mask.type.numel > _MAX_MASK:
        return "the mask is too large or the sequence lengths are symbolic"
    if any(d != 1 for d in mask.type.shape[:-2]) or tuple(mask.type.shape[-2:]) != (s, t):
        return f"the mask {mask.type} is not one [{s},{t}] matrix"
    key = mask.const
    if key not in _causal_cache:
        data = np.asarray(mask.const.numpy()).reshape(s, t)
        keep = np.tril(np.ones((s, t), dtype=bool), k=t - s)
        if data.dtype == np.bool_:
            _causal_cache[key] = bool(np.array_equal(data, keep))
        else:
            wide = data.astype(np.float64)
            _causal_cache[key] = bool(np.all(wide[keep] == 0) and np.all(wide[~keep] <= -6e4))
    if _causal_cache[key]:
        return None
    return "the mask is not a causal triangle (0 on and below the diagonal, <= -6e4 above)"


def _check_causal(m: Match) -> str | None:
    qs, ks = m["q"].type.shape, m["k"].type.shape
    return _causal_reason(m["mask"], qs[2], ks[2])


causal_mask = Rule(
    "causal_mask", P.op("attention", q, k, v, P.const("mask"), causal=False),
    lambda m: m.call("attention", m["q"], m["k"], m["v"], causal=True, scale=m.root.attrs["scale"]),
    check=_check_causal,
)

RULES = RuleSet("attention", (attention, attention_gqa, causal_mask))
