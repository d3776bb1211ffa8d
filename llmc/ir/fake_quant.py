"""The numerics of a ``QuantSpec``: what a quantized weight reads as at run time."""

from __future__ import annotations

import numpy as np

from llmc.ir import packing
from llmc.ir.meta import QuantSpec

# Which input of each op is its weight.
WEIGHT_INPUT = {"linear": 1, "matmul": 1, "conv2d": 1, "embedding": 0}


def quantize_dequantize(w: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Round ``w`` to ``spec`` and back, on the grid the packed weights use (``llmc.ir.packing``)."""
    if spec.bits >= 16:
        return w.astype(np.float16).astype(w.dtype)
    moved = np.moveaxis(w.astype(np.float32), spec.axis % w.ndim, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    deq = packing.quantize(rows, packing.Grid(spec.bits, spec.group, spec.sym)).dequantize()
    return np.moveaxis(deq.reshape(moved.shape), -1, spec.axis % w.ndim).astype(w.dtype)


def apply_weight_quant(node, args: list[np.ndarray]) -> list[np.ndarray]:
    index = WEIGHT_INPUT.get(node.op)
    if index is None or not node.inputs[index].is_const:
        return args
    args = list(args)
    args[index] = quantize_dequantize(args[index], node.meta.quant)
    return args
