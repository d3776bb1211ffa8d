"""Quantize / dequantize with per-tensor, per-channel or blocked (grouped) scales."""

from __future__ import annotations

import numpy as np

from llmc.errors import ShapeError
from llmc.ir import packing
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, Cost, op
from llmc.ir.packing import Grid
from llmc.ir.types import TensorType

_RANGES = {DType.i8: (-128, 127), DType.u8: (0, 255), DType.i4: (-8, 7), DType.u4: (0, 15), DType.i32: (-(2**31), 2**31 - 1)}


def broadcast_scale(scale: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Expand a scalar, per-axis (1-D) or blocked (same-rank) scale to ``shape``."""
    if scale.ndim == 0:
        return scale
    if scale.ndim == 1:
        view = [1] * len(shape)
        view[axis] = scale.shape[0]
        return scale.reshape(view)
    for ax, (s, n) in enumerate(zip(scale.shape, shape)):
        if s != n:
            scale = np.repeat(scale, n // s, axis=ax)
    return scale


def _check(types, axis):
    x, scale = types[0], types[1]
    if scale.rank not in (0, 1, x.rank):
        raise ShapeError(f"scale {scale} must be a scalar, 1-D along axis {axis}, or blocked with the rank of {x}")


@op("quantize", inputs=("x", "scale", "zero_point"), optional=1, kind="quant",
    attrs={"axis": Attr("int", -1), "dtype": Attr("dtype", DType.i8)})
class Quantize:
    """q = clip(round(x / scale) + zero_point) in `dtype` (round half to even)."""

    @staticmethod
    def infer(types, attrs):
        _check(types, attrs["axis"])
        if attrs["dtype"] not in _RANGES:
            raise ShapeError(f"cannot quantize to {attrs['dtype']}", hint=f"use one of {', '.join(map(str, _RANGES))}")
        return [TensorType(attrs["dtype"], types[0].shape)]

    @staticmethod
    def reference(xs, attrs):
        x = xs[0].astype(np.float32)
        axis = attrs["axis"] % x.ndim if x.ndim else 0
        q = np.round(x / broadcast_scale(xs[1].astype(np.float32), x.shape, axis))
        if len(xs) == 3:
            q = q + broadcast_scale(xs[2].astype(np.float32), x.shape, axis)
        lo, hi = _RANGES[attrs["dtype"]]
        return np.clip(q, lo, hi).astype(attrs["dtype"].np)


@op("dequantize", inputs=("q", "scale", "zero_point"), optional=1, kind="quant", attrs={"axis": Attr("int", -1)})
class Dequantize:
    """x = (q - zero_point) * scale, in the scale's dtype."""

    @staticmethod
    def infer(types, attrs):
        _check(types, attrs["axis"])
        return [TensorType(types[1].dtype, types[0].shape)]

    @staticmethod
    def reference(xs, attrs):
        q = xs[0].astype(np.float32)
        axis = attrs["axis"] % q.ndim if q.ndim else 0
        if len(xs) == 3:
            q = q - broadcast_scale(xs[2].astype(np.float32), q.shape, axis)
        return (q * broadcast_scale(xs[1].astype(np.float32), q.shape, axis)).astype(xs[1].dtype)


@op("dequantize_packed", inputs=("words", "scale", "minimum"), optional=1, kind="quant",
    attrs={"bits": Attr("int"), "group": Attr("int", 0), "k": Attr("int")})
class DequantizePacked:
    """W[n, k] (float32) from codes packed in int32 words and float16 group scales
    (``llmc.ir.packing``): ``(code - 2**(bits-1)) * scale`` without ``minimum`` (symmetric),
    ``code * scale + minimum`` with it. ``group`` consecutive k share a scale (0: the whole row)."""

    @staticmethod
    def infer(types, attrs):
        words = types[0]
        grid = Grid(attrs["bits"], attrs["group"], sym=len(types) == 2)
        k = attrs["k"]
        if words.dtype != DType.i32 or words.rank != 2:
            raise ShapeError(f"packed words must be i32 [out, words], got {words}")
        n = words.shape[0]
        expect = (n, grid.groups(k))
        if words.shape[1] != grid.words(k):
            raise ShapeError(f"{k} codes of {grid.bits} bits take {grid.words(k)} words per row, got {words}")
        for t in types[1:]:
            if t.dtype != DType.f16 or tuple(t.shape) != expect:
                raise ShapeError(f"packed scales must be f16{list(expect)}, got {t}")
        return [TensorType(DType.f32, (n, k))]

    @staticmethod
    def reference(xs, attrs):
        grid = Grid(attrs["bits"], attrs["group"], sym=len(xs) == 2)
        return packing.dequantize(xs[0], xs[1], xs[2] if len(xs) == 3 else None, grid, attrs["k"])

    @staticmethod
    def cost(types, outs, attrs):
        return Cost(flops=S.dim(3 * outs[0].numel), bytes=S.dim(sum(t.nbytes() for t in [*types, *outs])))


@op("linear_w8a8", inputs=("x", "words", "scale"), kind="matmul",
    attrs={"k": Attr("int"), "act_scale": Attr("float", 0.0)})
class LinearW8A8:
    """SmoothQuant's integer linear: y = (xq @ wq^T) * sx * scale[n], accumulated exactly in int32.

    Weights are 8-bit symmetric packed codes (``dequantize_packed`` with bits=8, one scale per
    row): wq = code - 128. Activations are quantized per token, sx = max|x| / 127 over the row
    (``act_scale`` = 0), or with one static scale sx = ``act_scale``: xq = clip(round(x / sx), -127, 127).
    """

    @staticmethod
    def infer(types, attrs):
        x, words, scale = types
        n = words.shape[0]
        if words.dtype != DType.i32 or words.rank != 2 or words.shape[1] != Grid(8).words(attrs["k"]):
            raise ShapeError(f"linear_w8a8 needs i32 words [out, {Grid(8).words(attrs['k'])}], got {words}")
        if scale.dtype != DType.f16 or tuple(scale.shape) != (n, 1):
            raise ShapeError(f"linear_w8a8 needs one f16 scale per output row [{n}, 1], got {scale}")
        if x.dtype != DType.f32 or not S.same(x.shape[-1], attrs["k"]):
            raise ShapeError(f"linear_w8a8 input {x} does not match {attrs['k']} input features")
        return [TensorType(DType.f32, (*x.shape[:-1], n))]

    @staticmethod
    def reference(xs, attrs):
        x, words, scale = xs
        sx = act_scales(x, attrs["act_scale"])
        xq = np.clip(np.round(x / sx), -127, 127).astype(np.int64)
        wq = packing.unpack(words, 8, attrs["k"]).astype(np.int64) - 128
        acc = (xq.reshape(-1, x.shape[-1]) @ wq.T).reshape(*x.shape[:-1], -1)
        return (acc.astype(np.float32) * sx * scale[:, 0].astype(np.float32)).astype(np.float32)

    @staticmethod
    def cost(types, outs, attrs):
        return Cost(flops=S.dim(2 * outs[0].numel * attrs["k"]),
                    bytes=S.dim(sum(t.nbytes() for t in [*types, *outs])))


def act_scales(x: np.ndarray, static: float) -> np.ndarray:
    """Per-token activation scales [..., 1] (max |x| / 127, at least the smallest normal float16), or the static one."""
    if static > 0:
        return np.full((*x.shape[:-1], 1), static, np.float32)
    return np.maximum(np.abs(x).max(axis=-1, keepdims=True) / 127.0, packing.F16_TINY).astype(np.float32)
