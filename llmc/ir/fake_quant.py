"""The numerics of a ``QuantSpec``: what a quantized weight reads as at run time."""

from __future__ import annotations

import numpy as np

from llmc.ir.meta import QuantSpec

# Which input of each op is its weight.
WEIGHT_INPUT = {"linear": 1, "matmul": 1, "conv2d": 1, "embedding": 0}


def quantize_dequantize(w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Round ``w`` to ``spec`` and back: symmetric or asymmetric, per-channel or grouped."""
    if spec.bits >= 16:
        return w.astype(np.float16).astype(w.dtype)
    x = w.astype(np.float32)
    axis = spec.axis % x.ndim
    moved = np.moveaxis(x, axis, -1)
    n = moved.shape[-1]
    group = spec.group or n
    if n % group:
        raise ValueError(f"axis of size {n} is not a multiple of group {group}")
    blocks = moved.reshape(*moved.shape[:-1], n // group, group)
    if spec.sym:
        qmax = 2 ** (spec.bits - 1) - 1
        scale = np.abs(blocks).max(axis=-1, keepdims=True) / qmax
        scale = np.where(scale == 0, 1, scale)
        deq = np.clip(np.round(blocks / scale), -qmax - 1, qmax) * scale
    else:
        qmax = 2**spec.bits - 1
        lo, hi = blocks.min(axis=-1, keepdims=True), blocks.max(axis=-1, keepdims=True)
        scale = np.where(hi > lo, (hi - lo) / qmax, 1)
        zero = np.round(-lo / scale)
        deq = (np.clip(np.round(blocks / scale) + zero, 0, qmax) - zero) * scale
    return np.moveaxis(deq.reshape(moved.shape), -1, axis).astype(w.dtype)


def apply_weight_quant(node, args: list[np.ndarray]) -> list[np.ndarray]:
    index = WEIGHT_INPUT.get(node.op)
    if index is None or not node.inputs[index].is_const:
        return args
    args = list(args)
    args[index] = quantize_dequantize(args[index], node.meta.quant)
    return args
