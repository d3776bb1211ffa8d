"""Neural-network layers: convolution, pooling, normalizations, padding, LRN."""

from __future__ import annotations


import numpy as np
import sympy

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, Cost, op, same_dtype
from llmc.ir.types import TensorType

_LOW = (DType.f16.np, DType.bf16.np)


def _wide(x):
    return x.astype(np.float32) if x.dtype in _LOW else x


def _pool_len(size, k, s, pb, pe, d, ceil_mode):
    """Output length of a sliding window (torch/ONNX rule, incl. ceil mode)."""
    eff = (k - 1) * d + 1
    if not isinstance(size, int):
        if ceil_mode:
            raise ShapeError("ceil_mode pooling needs a static spatial size")
        return S.dim(sympy.floor((size + pb + pe - eff) / s) + 1)
    span = size + pb + pe - eff
    if span < 0:
        raise ShapeError(f"window of {eff} does not fit a padded size of {size + pb + pe}")
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + pb:
        n -= 1
    return n


def _window_attrs(rank=2, pads=True):
    attrs = {
        "kernel": Attr("ints", (1,) * rank if not pads else ()),
        "stride": Attr("ints", (1,) * rank),
        "padding": Attr("ints", (0,) * (2 * rank), "begin pads then end pads: (top, left, bottom, right)"),
        "dilation": Attr("ints", (1,) * rank),
    }
    return attrs


def _out_spatial(x: TensorType, kernel, attrs, ceil_mode=False):
    st, pad, dil = attrs["stride"], attrs["padding"], attrs["dilation"]
    return tuple(
        _pool_len(x.shape[2 + i], kernel[i], st[i], pad[i], pad[2 + i], dil[i], ceil_mode) for i in range(2)
    )


def _windows(xp, kernel, stride, dilation, out_hw):
    """Yield (i, j, view) for every kernel offset: view[n, c, oh, ow] = xp at that tap."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def _pad_spatial(x, pads, value, extra=(0, 0), extra_value=None):
    """Pad H and W by ``pads`` with ``value``, then by ``extra`` (ceil-mode overhang) at the end."""
    t, l, b, r = pads
    x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)
    if any(extra):
        fill = value if extra_value is None else extra_value
        x = np.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])), constant_values=fill)
    return x


@op("conv2d", inputs=("x", "weight", "bias"), optional=1, kind="conv",
    attrs={**{k: v for k, v in _window_attrs().items() if k != "kernel"}, "groups": Attr("int", 1)})
class Conv2d:
    """2-D convolution, NCHW input, weight [out, in/groups, kh, kw], optional bias [out]."""

    @staticmethod
    def infer(types, attrs):
        x, w = types[0], types[1]
        same_dtype(types, "conv2d")
        if x.rank != 4 or w.rank != 4:
            raise ShapeError(f"conv2d needs a 4-D input and weight, got {x} and {w}")
        g = attrs["groups"]
        if isinstance(x.shape[1], int) and x.shape[1] != w.shape[1] * g:
            raise ShapeError(f"conv2d input has {x.shape[1]} channels but the weight expects {w.shape[1]} x {g} groups")
        hw = _out_spatial(x, w.shape[2:], attrs)
        return [TensorType(x.dtype, (x.shape[0], w.shape[0], *hw))]

    @staticmethod
    def reference(xs, attrs):
        x, w = _wide(xs[0]), _wide(xs[1])
        g = attrs["groups"]
        n, c, _, _ = x.shape
        o, cg, kh, kw = w.shape
        oh, ow = (_pool_len(x.shape[2 + i], w.shape[2 + i], attrs["stride"][i], attrs["padding"][i],
                            attrs["padding"][2 + i], attrs["dilation"][i], False) for i in range(2))
        (sh, sw), (dh, dw) = attrs["stride"], attrs["dilation"]
        xp = _pad_spatial(x, attrs["padding"], 0)
        # im2col as a strided view, one copy into [n, g, cg*kh*kw, oh*ow], then one 2-D GEMM per image
        # and group (numpy's broadcasting matmul does not reach BLAS; plain 2-D products do)
        win = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        win = win[:, :, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw, ::dh, ::dw]
        cols = win.reshape(n, g, cg, oh, ow, kh, kw).transpose(0, 1, 2, 5, 6, 3, 4).reshape(n, g, cg * kh * kw, oh * ow)
        wg = w.reshape(g, o // g, cg * kh * kw)
        out = np.empty((n, g, o // g, oh * ow), dtype=x.dtype)
        for b in range(n):
            for j in range(g):
                np.matmul(wg[j], cols[b, j], out=out[b, j])
        out = out.reshape(n, o, oh, ow)
        if len(xs) == 3:
            out += _wide(xs[2]).reshape(1, o, 1, 1)
        return out.astype(xs[0].dtype)

    @staticmethod
    def cost(types, outs, attrs):
        w = types[1]
        macs = outs[0].numel * w.shape[1] * w.shape[2] * w.shape[3]
        return Cost(flops=S.dim(2 * macs), bytes=S.dim(sum(t.numel * t.dtype.itemsize for t in [*types, *outs])))


def _pool_infer(types, attrs):
    x = types[0]
    if x.rank != 4:
        raise ShapeError(f"2-D pooling needs an NCHW input, got {x}")
    hw = _out_spatial(x, attrs["kernel"], attrs, attrs["ceil_mode"])
    return [x.with_shape((x.shape[0], x.shape[1], *hw))]


def _ceil_extra(x, attrs, out_hw):
    k, s, p, d = attrs["kernel"], attrs["stride"], attrs["padding"], attrs["dilation"]
    extra = []
    for i in range(2):
        need = (out_hw[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1
        extra.append(max(0, need - (x.shape[2 + i] + p[i] + p[2 + i])))
    return tuple(extra)


_POOL_ATTRS = {**_window_attrs(), "ceil_mode": Attr("bool", False)}


@op("max_pool2d", inputs=("x",), kind="pool", attrs=_POOL_ATTRS)
class MaxPool2d:
    """Max over each kernel window (NCHW); padding counts as -inf."""

    infer = staticmethod(_pool_infer)

    @staticmethod
    def reference(xs, attrs):
        x = xs[0]
        out_hw = [d for d in _pool_infer([TensorType(DType.f32, x.shape)], attrs)[0].shape[2:]]
        xp = _pad_spatial(x, attrs["padding"], -np.inf, _ceil_extra(x, attrs, out_hw))
        out = None
        for _, _, view in _windows(xp, attrs["kernel"], attrs["stride"], attrs["dilation"], out_hw):
            out = view.copy() if out is None else np.maximum(out, view)
        return out.astype(x.dtype)


@op("avg_pool2d", inputs=("x",), kind="pool", attrs={**_POOL_ATTRS, "count_include_pad": Attr("bool", False)})
class AvgPool2d:
    """Mean over each kernel window (NCHW); padding is counted only with count_include_pad."""

    infer = staticmethod(_pool_infer)

    @staticmethod
    def reference(xs, attrs):
        x = _wide(xs[0])
        out_hw = [d for d in _pool_infer([TensorType(DType.f32, x.shape)], attrs)[0].shape[2:]]
        extra = _ceil_extra(x, attrs, out_hw)
        xp = _pad_spatial(x, attrs["padding"], 0, extra)
        ones = np.ones((1, 1, *x.shape[2:]), x.dtype)
        cp = _pad_spatial(ones, attrs["padding"], 1 if attrs["count_include_pad"] else 0, extra, extra_value=0)
        total, count = 0, 0
        for (_, _, view), (_, _, cview) in zip(
            _windows(xp, attrs["kernel"], attrs["stride"], attrs["dilation"], out_hw),
            _windows(cp, attrs["kernel"], attrs["stride"], attrs["dilation"], out_hw),
        ):
            total, count = total + view, count + cview
        return (total / count).astype(xs[0].dtype)


@op("batch_norm", inputs=("x", "scale", "bias", "mean", "var"), kind="norm", flops_per_element=2, attrs={"eps": Attr("float", 1e-5)})
class BatchNorm:
    """Inference batch norm over axis 1: (x - mean) / sqrt(var + eps) * scale + bias."""

    @staticmethod
    def infer(types, attrs):
        x = types[0]
        for t in types[1:]:
            if t.rank != 1 or not S.same(t.shape[0], x.shape[1]):
                raise ShapeError(f"batch_norm parameter {t} does not match {x.shape[1]} channels")
        return [x]

    @staticmethod
    def reference(xs, attrs):
        x, scale, bias, mean, var = (_wide(a) for a in xs)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        inv = (scale / np.sqrt(var + attrs["eps"])).reshape(shape)
        return ((x - mean.reshape(shape)) * inv + bias.reshape(shape)).astype(xs[0].dtype)


def _norm_axes(x, axis):
    axis = axis % x.ndim
    return tuple(range(axis, x.ndim))


@op("layer_norm", inputs=("x", "weight", "bias"), optional=2, kind="norm", flops_per_element=8,
    attrs={"axis": Attr("int", -1, "normalize over axes [axis, rank)"), "eps": Attr("float", 1e-5)})
class LayerNorm:
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing axes from `axis`."""

    @staticmethod
    def infer(types, attrs):
        return [types[0]]

    @staticmethod
    def reference(xs, attrs):
        x = _wide(xs[0])
        axes = _norm_axes(x, attrs["axis"])
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + attrs["eps"])
        if len(xs) > 1:
            y = y * _wide(xs[1])
        if len(xs) > 2:
            y = y + _wide(xs[2])
        return y.astype(xs[0].dtype)


@op("rms_norm", inputs=("x", "weight"), optional=1, kind="norm", flops_per_element=4,
    attrs={"axis": Attr("int", -1), "eps": Attr("float", 1e-6)})
class RmsNorm:
    """x / sqrt(mean(x^2) + eps) * weight over the trailing axes from `axis` (computed in f32)."""

    @staticmethod
    def infer(types, attrs):
        return [types[0]]

    @staticmethod
    def reference(xs, attrs):
        x = xs[0].astype(np.float32) if xs[0].dtype in _LOW else xs[0]
        axes = _norm_axes(x, attrs["axis"])
        y = (x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + x.dtype.type(attrs["eps"]))).astype(xs[0].dtype)
        if len(xs) > 1:
            y = (_wide(xs[1]) * _wide(y)).astype(xs[0].dtype)
        return y


@op("lrn", inputs=("x",), kind="norm", flops_per_element=12,
    attrs={"size": Attr("int"), "alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75), "bias": Attr("float", 1.0)})
class LocalResponseNorm:
    """Across-channel local response normalization (AlexNet/GoogLeNet): x / (bias + alpha/size * sum x^2)^beta."""

    @staticmethod
    def infer(types, attrs):
        return [types[0]]

    @staticmethod
    def reference(xs, attrs):
        x = _wide(xs[0])
        size = attrs["size"]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        sq = np.pad(x * x, ((0, 0), (lo, hi)) + ((0, 0),) * (x.ndim - 2))
        c = x.shape[1]
        acc = sum(sq[:, i: i + c] for i in range(size))
        return (x / (attrs["bias"] + attrs["alpha"] / size * acc) ** attrs["beta"]).astype(xs[0].dtype)


@op("pad", inputs=("x",), kind="shape",
    attrs={"pads": Attr("ints", doc="begin pads of every axis, then end pads"), "mode": Attr("str", "constant"),
           "value": Attr("float", 0.0)})
class Pad:
    """Pad every axis: mode constant (with `value`), reflect or edge. Negative pads crop."""

    @staticmethod
    def infer(types, attrs):
        x, pads = types[0], attrs["pads"]
        if len(pads) != 2 * x.rank:
            raise ShapeError(f"pad needs {2 * x.rank} pads for {x}, got {len(pads)}")
        return [x.with_shape(tuple(S.dim(d + pads[i] + pads[x.rank + i]) for i, d in enumerate(x.shape)))]

    @staticmethod
    def reference(xs, attrs):
        x, pads, r = xs[0], attrs["pads"], xs[0].ndim
        widths = [(max(pads[i], 0), max(pads[r + i], 0)) for i in range(r)]
        kw = {"constant_values": attrs["value"]} if attrs["mode"] == "constant" else {}
        y = np.pad(x, widths, mode=attrs["mode"], **kw)
        crop = tuple(slice(-min(pads[i], 0), y.shape[i] + min(pads[r + i], 0)) for i in range(r))
        return y[crop].astype(x.dtype)


