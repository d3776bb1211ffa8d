"""One ONNX lowering per llmc op, for the chunk emitter (``emit.ChunkEmitter``).

A lowering ``fn(e, node, ins, out)`` writes ONNX nodes computing ``node`` from the ONNX names
``ins`` into the name ``out``, with the emitter's helpers (``e.op``, ``e.const``, ``e.shape``,
``e.requant`` for an internal tensor of an NPU chunk). It computes exactly the op's reference
(``llmc.ir.ops``) on static shapes. Generation-step ops that depend on the context length
(``kv_update``, ``attention`` with ``kv_len``, the last-token ``slice``) read the step's
``slots`` / ``last`` inputs (see ``emit``).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from llmc.ir import shapes as S

_END = 2**62
_UNARY = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
          "abs": "Abs", "neg": "Neg", "erf": "Erf", "not": "Not", "floor": "Floor", "ceil": "Ceil",
          "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos"}
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max",
           "minimum": "Min", "equal": "Equal", "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
           "greater_equal": "GreaterOrEqual", "and": "And", "or": "Or"}
_CAST = {"f32": TensorProto.FLOAT, "i64": TensorProto.INT64, "i32": TensorProto.INT32, "bool": TensorProto.BOOL,
         "f16": TensorProto.FLOAT16, "i8": TensorProto.INT8, "u8": TensorProto.UINT8}


def _unary(onnx_op):
    return lambda e, node, ins, out: e.op(onnx_op, ins, out)


def _binary(onnx_op):
    return lambda e, node, ins, out: e.op(onnx_op, ins, out)


def _linear(e, node, ins, out):
    """Gemm(x, W, b, transB) on the rows of x (reshaped to 2-D and back, exact moves)."""
    x, w = node.inputs[0], node.inputs[1]
    shape, k = e.shape(x), e.shape(w)[1]
    p_in, p_out = e.params(x), e.params(node.output)
    rows = ins[0]
    if len(shape) != 2:
        rows = e.requant(e.op("Reshape", [ins[0], e.ints([-1, k])]), p_in)
    if len(shape) == 2:
        return e.op("Gemm", ins, out, transB=1)
    y = e.requant(e.op("Gemm", [rows, *ins[1:]], transB=1), p_out)
    return e.op("Reshape", [y, e.ints(e.shape(node.output))], out)


def _matmul(e, node, ins, out):
    return e.op("MatMul", ins, out)


def _conv2d(e, node, ins, out):
    a = node.attrs
    return e.op("Conv", ins, out, strides=list(a["stride"]), pads=list(a["padding"]),
                dilations=list(a["dilation"]), group=a["groups"])


def _pool(onnx_op):
    def lower(e, node, ins, out):
        a = node.attrs
        extra = {"count_include_pad": int(a["count_include_pad"])} if onnx_op == "AveragePool" else {}
        if onnx_op == "MaxPool":
            extra["dilations"] = list(a["dilation"])
        return e.op(onnx_op, ins, out, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                    pads=list(a["padding"]), ceil_mode=int(a["ceil_mode"]), **extra)
    return lower


def _reduce_mean(e, node, ins, out):
    axes = node.attrs["axes"] or tuple(range(len(e.shape(node.inputs[0]))))
    return e.op("ReduceMean", [ins[0], e.ints(axes)], out, keepdims=int(node.attrs["keepdims"]))


def _batch_norm(e, node, ins, out):
    return e.op("BatchNormalization", ins, out, epsilon=node.attrs["eps"])


def _layer_norm(e, node, ins, out):
    return e.op("LayerNormalization", ins, out, axis=node.attrs["axis"], epsilon=node.attrs["eps"])


def _rms_norm(e, node, ins, out):
    if len(ins) == 1:
        width = e.shape(node.inputs[0])[-1]
        ins = [ins[0], e.const(np.ones(width, np.float32), "ones")]
    return e.op("RMSNormalization", ins, out, axis=node.attrs["axis"], epsilon=node.attrs["eps"])


def _gelu(e, node, ins, out):
    return e.op("Gelu", ins, out, approximate=node.attrs["approximate"])


def _silu(e, node, ins, out):
    return e.op("Mul", [ins[0], e.op("Sigmoid", ins)], out)


def _softmax(e, node, ins, out):
    return e.op("Softmax", ins, out, axis=node.attrs["axis"])


def _reshape(e, node, ins, out):
    return e.op("Reshape", [ins[0], e.ints(e.shape(node.output))], out)


def _transpose(e, node, ins, out):
    return e.op("Transpose", ins, out, perm=list(node.attrs["perm"]))


def _slice(e, node, ins, out):
    a = node.attrs
    if e.static.step and any(not isinstance(s, int) and "seq" in str(s) for s in a["starts"]):
        return e.op("Gather", [ins[0], e.extra("last")], out, axis=a["axes"][0])  # the last real token
    env = e.static.env
    starts = [S.evaluate(s, env) for s in a["starts"]]
    ends = [min(S.evaluate(x, env), _END) for x in a["ends"]]
    steps = list(a["steps"] or [1] * len(starts))
    return e.op("Slice", [ins[0], e.ints(starts), e.ints(ends), e.ints(a["axes"]), e.ints(steps)], out)


def _concat(e, node, ins, out):
    return e.op("Concat", ins, out, axis=node.attrs["axis"])


def _gather(e, node, ins, out):
    return e.op("Gather", ins, out, axis=node.attrs["axis"])


def _embedding(e, node, ins, out):
    return e.op("Gather", ins, out, axis=0)


def _cast(e, node, ins, out):
    return e.op("Cast", ins, out, to=_CAST[str(node.attrs["dtype"])])


def _rope(e, node, ins, out):
    x = node.inputs[0]
    shape = e.shape(x)
    d = shape[-1]
    if node.attrs["interleaved"]:
        pairs = e.op("Reshape", [ins[0], e.ints([*shape[:-1], d // 2, 2])])
        even = e.op("Slice", [pairs, e.ints([0]), e.ints([1]), e.ints([-1])])
        odd = e.op("Slice", [pairs, e.ints([1]), e.ints([2]), e.ints([-1])])
        rotated = e.op("Reshape", [e.op("Concat", [e.op("Neg", [odd]), even], axis=-1), e.ints(shape)])
    else:
        first = e.op("Slice", [ins[0], e.ints([0]), e.ints([d // 2]), e.ints([-1])])
        second = e.op("Slice", [ins[0], e.ints([d // 2]), e.ints([d]), e.ints([-1])])
        rotated = e.op("Concat", [e.op("Neg", [second]), first], axis=-1)
    return e.op("Add", [e.op("Mul", [ins[0], ins[1]]), e.op("Mul", [rotated, ins[2]])], out)


def _kv_update(e, node, ins, out):
    """Write ``new`` [B, H, S, D] at the cache rows ``slots`` (a static step's form of ``end = ctx``)."""
    b, h, s, d = e.shape(node.inputs[1])
    rows = e.op("Expand", [e.op("Reshape", [e.extra("slots"), e.ints([1, 1, s, 1])]), e.ints([b, h, s, d])])
    return e.op("ScatterElements", [ins[0], rows, ins[1]], out, axis=2)


def _attention(e, node, ins, out):
    """softmax(q k^T * scale, masked) v with grouped-query heads expanded; float32 (a CPU op by choice)."""
    q, k = node.inputs[0], node.inputs[1]
    b, hq, s, d = e.shape(q)
    _, hkv, t, _ = e.shape(k)
    keys, values = ins[1], ins[2]
    if hq != hkv:
        keys, values = (_repeat_heads(e, name, e.shape(v), hq // hkv) for name, v in ((keys, k), (values, node.inputs[2])))
    scale = node.attrs["scale"] or 1.0 / np.sqrt(d)
    scores = e.op("Mul", [e.op("MatMul", [ins[0], e.op("Transpose", [keys], perm=[0, 1, 3, 2])]),
                          e.const(np.asarray(scale, np.float32), "scale")])
    lowest = e.const(np.asarray(np.finfo(np.float32).min, np.float32), "lowest")
    if len(ins) == 4:
        mask = node.inputs[3]
        scores = (e.op("Where", [ins[3], scores, lowest]) if mask.type.dtype.np == np.bool_
                  else e.op("Add", [scores, ins[3]]))
    if node.attrs["causal"]:
        scores = e.op("Where", [_causal(e, node, s, t), scores, lowest])
    probs = e.op("Softmax", [scores], axis=-1)
    return e.op("MatMul", [probs, values], out)


def _causal(e, node, s: int, t: int) -> str:
    """Which keys each query sees: key row <= the query's cache row (``slots``), or by index without a cache."""
    keys = e.const(np.arange(t, dtype=np.int64).reshape(1, t), "key_rows")
    if e.static.step and not S.same(node.attrs["kv_len"], 0):
        return e.op("LessOrEqual", [keys, e.op("Reshape", [e.extra("slots"), e.ints([s, 1])])])
    return e.const(np.arange(t)[None, :] <= np.arange(s)[:, None] + (t - s), "causal")


def _repeat_heads(e, name: str, shape, group: int) -> str:
    b, h, t, d = shape
    wide = e.op("Expand", [e.op("Reshape", [name, e.ints([b, h, 1, t, d])]), e.ints([b, h, group, t, d])])
    return e.op("Reshape", [wide, e.ints([b, h * group, t, d])])


LOWERINGS = {
    **{op: _unary(onnx_op) for op, onnx_op in _UNARY.items()},
    **{op: _binary(onnx_op) for op, onnx_op in _BINARY.items()},
    "linear": _linear, "matmul": _matmul, "conv2d": _conv2d, "max_pool2d": _pool("MaxPool"),
    "avg_pool2d": _pool("AveragePool"), "reduce_mean": _reduce_mean, "batch_norm": _batch_norm,
    "layer_norm": _layer_norm, "rms_norm": _rms_norm, "gelu": _gelu, "silu": _silu, "softmax": _softmax,
    "reshape": _reshape, "transpose": _transpose, "slice": _slice, "concat": _concat, "gather": _gather,
    "embedding": _embedding, "cast": _cast, "rope": _rope, "kv_update": _kv_update, "attention": _attention,
}
