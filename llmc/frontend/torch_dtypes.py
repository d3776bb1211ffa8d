"""torch dtype <-> llmc dtype. Imported lazily: the core install does not need torch."""

from __future__ import annotations

import torch

from llmc.errors import LLMCError
from llmc.ir.dtypes import DType

_FROM_TORCH = {
    torch.float32: DType.f32, torch.float16: DType.f16, torch.bfloat16: DType.bf16, torch.float64: DType.f64,
    torch.int64: DType.i64, torch.int32: DType.i32, torch.int8: DType.i8, torch.uint8: DType.u8,
    torch.bool: DType.bool,
}
_TO_TORCH = {v: k for k, v in _FROM_TORCH.items()}


def dtype_from_torch(dtype: torch.dtype) -> DType:
    try:
        return _FROM_TORCH[dtype]
    except KeyError:
        raise LLMCError(f"torch dtype {dtype} is not supported",
                        hint="cast the model to float32, float16 or bfloat16") from None


def dtype_to_torch(dtype: DType) -> torch.dtype:
    return _TO_TORCH[dtype]
