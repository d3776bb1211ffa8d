"""Reductions over axes, softmax, argmax and cumulative sums."""

from __future__ import annotations

import numpy as np

from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, Cost, OpDef, norm_axis, register
from llmc.ir.types import TensorType

_LOW = (DType.f16.np, DType.bf16.np)


def _axes(attrs, rank, name):
    axes = attrs["axes"] or tuple(range(rank))
    return tuple(sorted(norm_axis(a, rank, name) for a in axes))


def _reduce_infer(name):
    def infer(types, attrs):
        t = types[0]
        axes = _axes(attrs, t.rank, name)
        if attrs["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
        else:
            shape = tuple(d for i, d in enumerate(t.shape) if i not in axes)
        return [t.with_shape(shape)]

    return infer


def _reduce_ref(fn, name):
    def ref(xs, attrs):
        x = xs[0]
        axes = _axes(attrs, x.ndim, name)
        wide = x.astype(np.float32) if x.dtype in _LOW else x
        return np.asarray(fn(wide, axis=axes, keepdims=attrs["keepdims"])).astype(x.dtype)

    return ref


def _reduce_cost(types, outs, attrs):
    t = types[0]
    return Cost(flops=t.numel, bytes=S.dim(t.numel * t.dtype.itemsize + outs[0].numel * outs[0].dtype.itemsize))


for _name, _fn in {"reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min,
                   "reduce_prod": np.prod}.items():
    register(
        OpDef(
            name=_name, doc=f"{_fn.__name__} over `axes` (empty: all axes)", inputs=("x",),
            attrs={"axes": Attr("ints", ()), "keepdims": Attr("bool", False)},
            infer=_reduce_infer(_name), reference=_reduce_ref(_fn, _name), kind="reduction", cost_fn=_reduce_cost,
        )
    )


def _softmax_ref(log):
    def ref(xs, attrs):
        x = xs[0]
        w = x.astype(np.float32) if x.dtype in _LOW else x
        axis = attrs["axis"]
        m = np.max(w, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        e = np.exp(w - m)
        s = np.sum(e, axis=axis, keepdims=True)
        out = (w - m - np.log(s)) if log else e / s
        return out.astype(x.dtype)

    return ref


for _name, _log in (("softmax", False), ("log_softmax", True)):
    register(
        OpDef(
            name=_name, doc=f"{'log ' if _log else ''}softmax along `axis`, computed stably (max subtracted)",
            inputs=("x",), attrs={"axis": Attr("int", -1)}, infer=lambda t, a: [t[0]],
            reference=_softmax_ref(_log), kind="reduction", flops_per_element=5,
        )
    )


def _argmax_infer(types, attrs):
    t = types[0]
    axis = norm_axis(attrs["axis"], t.rank, "argmax")
    shape = tuple(1 if i == axis else d for i, d in enumerate(t.shape)) if attrs["keepdims"] else (
        tuple(d for i, d in enumerate(t.shape) if i != axis))
    return [TensorType(DType.i64, shape)]


register(
    OpDef(
        name="argmax", doc="index of the largest element along `axis` (first on ties)", inputs=("x",),
        attrs={"axis": Attr("int", -1), "keepdims": Attr("bool", False)}, infer=_argmax_infer,
        reference=lambda xs, a: np.argmax(xs[0], axis=a["axis"], keepdims=a["keepdims"]).astype(np.int64),
        kind="reduction",
    )
)
register(
    OpDef(
        name="cumsum", doc="inclusive cumulative sum along `axis`", inputs=("x",), attrs={"axis": Attr("int")},
        infer=lambda t, a: [t[0]], reference=lambda xs, a: np.cumsum(xs[0], axis=a["axis"]).astype(xs[0].dtype),
        kind="reduction",
    )
)
