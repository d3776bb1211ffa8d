"""Element types of the IR and their numpy storage.

Sub-byte integers (i4, u4) are stored unpacked, one element per byte, in i8/u8 arrays; their
``bits`` says how much of each byte they use. bf16 uses ``ml_dtypes.bfloat16``.
"""

from __future__ import annotations

import enum

import ml_dtypes
import numpy as np

from llmc.errors import LLMCError


class DType(enum.Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    f64 = "f64"
    i64 = "i64"
    i32 = "i32"
    i8 = "i8"
    u8 = "u8"
    i4 = "i4"
    u4 = "u4"
    bool = "bool"
    f8e4m3 = "f8e4m3"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"DType.{self.value}"

    @property
    def np(self) -> np.dtype:
        """The numpy dtype that stores this element type."""
        return _TO_NUMPY[self]

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def itemsize(self) -> float:
        """Bytes per element as stored on a device (0.5 for 4-bit types)."""
        return self.bits / 8

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f16, DType.bf16, DType.f64, DType.f8e4m3)

    @property
    def is_int(self) -> bool:
        return self in (DType.i64, DType.i32, DType.i8, DType.u8, DType.i4, DType.u4)

    @classmethod
    def parse(cls, text: str) -> DType:
        key = _ALIASES.get(text.lower(), text.lower())
        try:
            return cls(key)
        except ValueError:
            raise LLMCError(f"unknown dtype {text!r}", hint=f"use one of {', '.join(d.value for d in cls)}") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> DType:
        dtype = np.dtype(dtype)
        for d, n in _TO_NUMPY.items():
            if n == dtype and d not in (DType.i4, DType.u4):
                return d
        raise LLMCError(f"numpy dtype {dtype} has no llmc equivalent", hint="cast to float32, float16 or an integer type")


_TO_NUMPY = {
    DType.f32: np.dtype(np.float32),
    DType.f16: np.dtype(np.float16),
    DType.bf16: np.dtype(ml_dtypes.bfloat16),
    DType.f64: np.dtype(np.float64),
    DType.i64: np.dtype(np.int64),
    DType.i32: np.dtype(np.int32),
    DType.i8: np.dtype(np.int8),
    DType.u8: np.dtype(np.uint8),
    DType.i4: np.dtype(np.int8),
    DType.u4: np.dtype(np.uint8),
    DType.bool: np.dtype(np.bool_),
    DType.f8e4m3: np.dtype(ml_dtypes.float8_e4m3fn),
}

_BITS = {
    DType.f32: 32, DType.f16: 16, DType.bf16: 16, DType.f64: 64, DType.i64: 64, DType.i32: 32,
    DType.i8: 8, DType.u8: 8, DType.i4: 4, DType.u4: 4, DType.bool: 8, DType.f8e4m3: 8,
}

_ALIASES = {
    "float32": "f32", "float": "f32", "float16": "f16", "half": "f16", "bfloat16": "bf16",
    "float64": "f64", "double": "f64", "int64": "i64", "long": "i64", "int32": "i32", "int": "i32",
    "int8": "i8", "uint8": "u8", "int4": "i4", "uint4": "u4", "bool_": "bool",
}
