"""Quantize / dequantize with per-tensor, per-channel or blocked (grouped) scales."""

from __future__ import annotations

import numpy as np

from llmc.errors import ShapeError
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, op
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
