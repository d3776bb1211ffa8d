"""Tensor types: an element type and a (possibly symbolic) shape."""

from __future__ import annotations

from dataclasses import dataclass

from llmc.ir import shapes as S
from llmc.ir.dtypes import DType


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: S.Shape

    def __post_init__(self):
        object.__setattr__(self, "shape", S.shape(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> S.Dim:
        return S.numel(self.shape)

    @property
    def is_static(self) -> bool:
        return S.is_static(self.shape)

    def nbytes(self, env: dict[str, int] | None = None) -> float:
        """Bytes as stored on a device; symbols take their value in ``env`` (default 1)."""
        n = self.numel
        if not isinstance(n, int):
            n = S.evaluate(n, {s: (env or {}).get(s, 1) for s in S.symbols(self.shape)})
        return n * self.dtype.itemsize

    def with_shape(self, shape) -> TensorType:
        return TensorType(self.dtype, shape)

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}{S.shape_str(self.shape)}"

    def to_json(self) -> dict:
        return {"dtype": self.dtype.value, "shape": [S.to_json(d) for d in self.shape]}

    @classmethod
    def from_json(cls, obj: dict) -> TensorType:
        return cls(DType(obj["dtype"]), S.shape(obj["shape"]))
