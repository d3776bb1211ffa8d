"""Kernel table entries of the transformer ops: attention over a KV buffer, kv_update, rope,
embedding, gather and the casts of mask logic.

Numerics (``->``: an assignment that rounds half up and saturates):

    attention   score = (q . k) * scale -> score_t (fixed<24,10>), hidden keys skipped, softmax as
                ``ops_nonlinear.SoftmaxTypes`` over score_t -> prob_t (ufixed<18,1>),
                out = sum p * v -> out (a query with no visible key gives 0)
    kv_update   out = cache, with positions [end - S, end) = new -> cache type
    rope        y = x * cos + rotate(x) * sin -> out, rotate's negation -> x's type
    embedding   y = W[ids] (the table's codes: the output has the table's type)

``kv_len`` / ``end`` may be the runtime symbol ``ctx`` (a decode step's position count): the
emulation reads it from ``Precision.sizes`` and the C++ from the top function's ``ctx`` argument.
"""

from __future__ import annotations

import numpy as np

from llmc.ir import shapes as S
from llmc.ir.graph import Node
from llmc.targets.fpga.fixed import Fixed, PrecisionError, bits_for
from llmc.targets.fpga.kernels import Arg, Call, act, broadcast_strides, code_type, kernel, numel, shape
from llmc.targets.fpga.ops_core import _BINARY, Binary
from llmc.targets.fpga.ops_nonlinear import SoftmaxTypes
from llmc.targets.fpga.precision import Precision

SCORE_TYPE = Fixed(24, 10)
PROB_TYPE = Fixed(18, 1, signed=False)


def runtime(value, P: Precision) -> int:
    """An attribute that may be a symbol of the running step (``ctx``), as an integer."""
    return int(value) if isinstance(value, int) else S.evaluate(value, P.sizes)


def runtime_arg(value) -> str:
    """The C++ expression of such an attribute inside the top function."""
    return str(int(value)) if isinstance(value, int) else str(value)


def _scale(node: Node) -> tuple[float, Fixed]:
    d = shape(node.inputs[0])[-1]
    scale = node.attrs["scale"] or 1.0 / np.sqrt(d)
    return scale, Fixed(24, max(bits_for(scale) - 1, 1), signed=False)


def _attention_check(node: Node) -> str | None:
    if len(node.inputs) == 4 and node.inputs[3].type.dtype.is_float:
        return "only boolean masks are supported (an additive float mask is not)"
    return None


@kernel("attention", check=_attention_check)
class Attention:
    @staticmethod
    def emulate(node, args, P):
        q, k, v = args[:3]
        capacity = k.shape[2]
        t = runtime(node.attrs["kv_len"], P) if node.attrs["kv_len"] else capacity
        tq, tk, tv = (P.of(x) for x in node.inputs[:3])
        b, hq, s, d = q.shape
        group = hq // k.shape[1]
        kk = np.repeat(k[:, :, :t], group, axis=1)
        vv = np.repeat(v[:, :, :t], group, axis=1)
        scale, st = _scale(node)
        code = int(st.quantize(scale))
        dot = np.einsum("bhsd,bhtd->bhst", q, kk, dtype=np.int64)
        scores = SCORE_TYPE.cast(dot * code, tq.frac + tk.frac + st.frac)
        keep = np.ones(scores.shape, bool)
        if len(args) == 4:
            keep &= np.broadcast_to(args[3][..., :t] != 0, scores.shape)
        if node.attrs["causal"]:
            keep &= np.arange(t)[None, :] <= np.arange(s)[:, None] + (t - s)
        probs = SoftmaxTypes(SCORE_TYPE, capacity).rows(scores, SCORE_TYPE.frac, keep, PROB_TYPE)
        out = np.einsum("bhst,bhtd->bhsd", probs, vv, dtype=np.int64)
        return [P.of(node.output).cast(out, PROB_TYPE.frac + tv.frac)]

    @staticmethod
    def calls(node, P):
        q, k, v = node.inputs[:3]
        y = node.output
        b, hq, s, d = shape(q)
        _, hkv, m, _ = shape(k)
        scale, st = _scale(node)
        tq, tk, tv = P.of(q), P.of(k), P.of(v)
        dot = Fixed(tq.width + tk.width + int(np.ceil(np.log2(d))) + 1, tq.integer + tk.integer + int(np.ceil(np.log2(d))) + 1,
                    True, "TRN", "WRAP")
        if dot.width + st.width > 63:
            raise PrecisionError(f"attention {node.name}: q and k of {tq} and {tk} make scores wider than 63 bits",
                                 where=node.where, hint="use narrower q/k types (--fpga-bits 16 or less)")
        soft = SoftmaxTypes(SCORE_TYPE, m)
        acc = Fixed(PROB_TYPE.width + tv.width + int(np.ceil(np.log2(m))) + 1, PROB_TYPE.integer + tv.integer +
                    int(np.ceil(np.log2(m))) + 1, True, "TRN", "WRAP")
        has_mask = len(node.inputs) == 4
        types = {"q_t": tq, "k_t": tk, "v_t": tv, "out_t": P.of(y), "mask_t": P.of(node.inputs[3]) if has_mask else Fixed(8, 8),
                 "dot_t": dot, "scale_t": st, "score_t": SCORE_TYPE, "prob_t": PROB_TYPE, "acc_t": acc, **soft.types()}
        ints = {"batch": b, "hq": hq, "hkv": hkv, "s": s, "d": d, "dv": shape(v)[-1], "m": m, "has_mask": has_mask,
                "mask_stride": _mask_strides(node) if has_mask else [0, 0, 0, 0], "causal": node.attrs["causal"],
                "scale_code": int(st.quantize(scale)), **soft.ints()}
        kv_len = runtime_arg(node.attrs["kv_len"]) if node.attrs["kv_len"] else str(m)
        args = [act(q), act(k), act(v), act(node.inputs[3]) if has_mask else Arg("none"), Arg("act", y.name), Arg("expr", kv_len)]
        macs = 2 * b * hq * s * m * d
        return [Call("attention", "llmc_attention.h", types, ints, args, macs=macs, reduce=d, outputs=numel(y),
                     table_bits=(ints["n_table"] + len(ints["recip"])) * 18)]


def _mask_strides(node: Node) -> list[int]:
    """Element strides of the mask over [B, Hq, S, T]; a row whose length is the runtime ctx is laid
    out at the KV buffer's capacity."""
    b, hq, s, _ = shape(node.inputs[0])
    dims = [int(d) if isinstance(d, int) else int(node.inputs[1].type.shape[2]) for d in node.inputs[3].type.shape]
    own = [int(np.prod(dims[i + 1:])) for i in range(4)]
    return [0 if dims[i] == 1 and target != 1 else own[i] for i, target in enumerate([b, hq, s])] + [1]


@kernel("kv_update")
class KvUpdate:
    @staticmethod
    def emulate(node, args, P):
        cache, new = args
        end = runtime(node.attrs["end"], P)
        out = cache.copy()
        s = new.shape[2]
        out[:, :, end - s:end] = P.of(node.output).cast(new, P.of(node.inputs[1]).frac)
        return [out]

    @staticmethod
    def calls(node, P):
        cache, new = node.inputs
        b, h, m, d = shape(cache)
        types = {"cache_t": P.of(node.output), "new_t": P.of(new)}
        ints = {"planes": b * h, "m": m, "d": d, "s": shape(new)[2]}
        return [Call("kv_update", "llmc_attention.h", types, ints,
                     [act(cache), act(new), Arg("act", node.output.name), Arg("expr", runtime_arg(node.attrs["end"]))],
                     outputs=numel(node.output))]


@kernel("rope", check=lambda n: None if len(n.inputs[0].type.shape) == 4 else "only 4-D [B, H, S, D] inputs are supported")
class Rope:
    @staticmethod
    def emulate(node, args, P):
        x, cos, sin = args
        tx, tc, ts = (P.of(v) for v in node.inputs)
        if node.attrs["interleaved"]:
            rot = np.stack([tx.cast(-x[..., 1::2], tx.frac), x[..., 0::2]], axis=-1).reshape(x.shape)
        else:
            half = x.shape[-1] // 2
            rot = np.concatenate([tx.cast(-x[..., half:], tx.frac), x[..., :half]], axis=-1)
        fa, fb = tx.frac + tc.frac, tx.frac + ts.frac
        f = max(fa, fb)
        total = ((x * cos) << np.int64(f - fa)) + ((rot * sin) << np.int64(f - fb))
        return [P.of(node.output).cast(total, f)]

    @staticmethod
    def calls(node, P):
        x, cos, sin = node.inputs
        b, h, s, d = shape(x)
        types = {"in_t": P.of(x), "cos_t": P.of(cos), "sin_t": P.of(sin), "out_t": P.of(node.output)}
        ints = {"batch": b, "heads": h, "s": s, "d": d, "interleaved": node.attrs["interleaved"],
                "cs_stride": broadcast_strides(shape(cos), [b, h, s, d])}
        return [Call("rope", "llmc_attention.h", types, ints, [act(x), act(cos), act(sin), Arg("act", node.output.name)],
                     macs=2 * numel(x), outputs=numel(x))]


@kernel("embedding", check=lambda n: None if n.inputs[0].const is not None else "its table is not a constant")
class Embedding:
    @staticmethod
    def emulate(node, args, P):
        table, ids = args
        return [P.of(node.output).cast(table[np.where(ids < 0, ids + table.shape[0], ids)], P.of(node.inputs[0]).frac)]

    @staticmethod
    def calls(node, P):
        table, ids = node.inputs
        rows, dim = shape(table)
        w = P.of(table)
        types = {"out_t": P.of(node.output), "weight_t": w, "wcode_t": code_type(w), "ids_t": P.of(ids)}
        ints = {"n_ids": numel(ids), "dim": dim, "rows": rows}
        return [Call("embedding", "llmc_gather.h", types, ints, [act(ids), Arg("act", node.output.name), Arg("code", table.name)],
                     outputs=numel(node.output), weights=[table.name])]


@kernel("gather")
class Gather:
    @staticmethod
    def emulate(node, args, P):
        x, idx = args
        axis = node.attrs["axis"] % x.ndim
        idx = np.where(idx < 0, idx + x.shape[axis], idx)
        return [P.of(node.output).cast(np.take(x, idx, axis=axis), P.of(node.inputs[0]).frac)]

    @staticmethod
    def calls(node, P):
        x, idx = node.inputs
        dims = shape(x)
        axis = node.attrs["axis"] % len(dims)
        types = {"in_t": P.of(x), "out_t": P.of(node.output), "idx_t": P.of(idx)}
        ints = {"outer": int(np.prod(dims[:axis])), "axis_len": dims[axis], "inner": int(np.prod(dims[axis + 1:])),
                "n_idx": numel(idx)}
        return [Call("gather", "llmc_gather.h", types, ints, [act(x), act(idx), Arg("act", node.output.name)],
                     outputs=numel(node.output))]


@kernel("cast")
class Cast:
    @staticmethod
    def emulate(node, args, P):
        if node.output.type.dtype.name == "bool":
            return [(args[0] != 0).astype(np.int64)]
        return [P.of(node.output).cast(args[0], P.of(node.inputs[0]).frac)]

    @staticmethod
    def calls(node, P):
        x, y = node.inputs[0], node.output
        name = "nonzero" if y.type.dtype.name == "bool" else "cast"
        header = "llmc_gather.h" if name == "nonzero" else "llmc_eltwise.h"
        return [Call(name, header, {"in_t": P.of(x), "out_t": P.of(y)}, {"size": numel(y), "parallel": 1},
                     [act(x), Arg("act", y.name)], outputs=numel(y))]


_BINARY.update({"and": 5, "or": 6})
kernel("and", "or")(Binary)
