"""Constant tensors (weights) with lazy storage.

A ``Weight`` knows its type without holding its data; ``weight.numpy()`` produces the array
when something needs it. Storage kinds:

- ``ArrayWeight``: a numpy array already in memory (folded constants, small tensors).
- ``FileWeight``: a region of a file, memory-mapped on access (safetensors, ONNX external data).
- ``TorchWeight``: a torch tensor owned by the source model, converted on access.
- ``MetaWeight``: shape and dtype only (models built on the ``meta`` device, weightless folders).
- ``CastWeight``: another weight read as another dtype, converted on each access.
- ``TransposedWeight``: another 2-D weight read transposed, copied on each access.
- ``Spill``: arrays a pass produced, written to a temporary file and read back as ``FileWeight``s,
  so a pass over a large model does not hold every result until the artifact is written.

So a 7B model's graph can be captured, inspected and written without holding every weight.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import weakref
from pathlib import Path

import numpy as np

from llmc.errors import ModelLoadError, WeightsNotMaterialized
from llmc.ir.dtypes import DType
from llmc.ir.types import TensorType


class Weight:
    """A constant tensor whose data is produced on demand."""

    type: TensorType

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def nbytes(self) -> int:
        return int(self.type.nbytes())

    @property
    def materialized(self) -> bool:
        return True

    def numpy(self) -> np.ndarray:
        raise NotImplementedError

    def digest(self) -> str:
        """A content hash, used by CSE to find equal constants."""
        arr = np.ascontiguousarray(self.numpy())
        return hashlib.sha256(str(self.type).encode() + arr.tobytes()).hexdigest()


class ArrayWeight(Weight):
    def __init__(self, array: np.ndarray, dtype: DType | None = None):
        array = np.asarray(array)
        self.array = array
        self.type = TensorType(dtype or DType.from_numpy(array.dtype), array.shape)

    def numpy(self) -> np.ndarray:
        return self.array


class FileWeight(Weight):
    """``length`` bytes at ``offset`` of ``path``, memory-mapped when read."""

    def __init__(self, path: Path, offset: int, type: TensorType):
        self.path = Path(path)
        self.offset = offset
        self.type = type

    def numpy(self) -> np.ndarray:
        np_dtype = self.type.dtype.np
        count = int(np.prod(self.type.shape, dtype=np.int64))
        if count == 0:
            return np.zeros(self.type.shape, np_dtype)
        try:
            return np.memmap(self.path, dtype=np_dtype, mode="r", offset=self.offset, shape=self.type.shape)
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"cannot read weight data from {self.path} at byte {self.offset}: {e}",
                hint="the weights file is missing or truncated; re-export or re-download the model",
            ) from None


class Spill:
    """A temporary file of arrays, each read back lazily as a ``FileWeight`` (``put``).

    The file is deleted once neither the store nor any weight read from it is left, or at exit."""

    def __init__(self):
        fd, name = tempfile.mkstemp(prefix="llmc-spill-", suffix=".bin")
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        weakref.finalize(self, _discard, self._file, self.path)

    def put(self, array: np.ndarray) -> FileWeight:
        array = np.ascontiguousarray(array)
        self._file.write(b"\0" * (-self._file.tell() % 64))  # aligned, as the kernels' vector loads want
        offset = self._file.tell()
        self._file.write(memoryview(array.reshape(-1).view(np.uint8)))
        self._file.flush()
        return _SpilledWeight(self, offset, TensorType(DType.from_numpy(array.dtype), array.shape))


class _SpilledWeight(FileWeight):
    def __init__(self, spill: Spill, offset: int, type: TensorType):
        super().__init__(spill.path, offset, type)
        self.spill = spill  # the file lives while a weight reads it


def _discard(file, path: Path) -> None:
    file.close()
    path.unlink(missing_ok=True)


class TorchWeight(Weight):
    def __init__(self, tensor):
        from llmc.frontend.torch_dtypes import dtype_from_torch

        self.tensor = tensor
        self.type = TensorType(dtype_from_torch(tensor.dtype), tuple(tensor.shape))

    @property
    def materialized(self) -> bool:
        return not self.tensor.is_meta

    def numpy(self) -> np.ndarray:
        if self.tensor.is_meta:
            raise WeightsNotMaterialized("this weight lives on the meta device and has no data")
        import torch

        t = self.tensor.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(DType.bf16.np)
        return t.numpy()


class MetaWeight(Weight):
    def __init__(self, type: TensorType):
        self.type = type

    @property
    def materialized(self) -> bool:
        return False

    def numpy(self) -> np.ndarray:
        raise WeightsNotMaterialized(
            f"weight of type {self.type} has no data (the model was captured without weights)",
            hint="load the model with its weights (safetensors files in the folder) to compile or run it",
        )


class CastWeight(Weight):
    """Another weight read as ``dtype``: converted one tensor at a time on each access, nothing kept."""

    def __init__(self, weight: Weight, dtype: DType):
        self.weight = weight
        self.type = TensorType(dtype, weight.type.shape)

    @property
    def materialized(self) -> bool:
        return self.weight.materialized

    def numpy(self) -> np.ndarray:
        return np.asarray(self.weight.numpy()).astype(self.type.dtype.np)


class TransposedWeight(Weight):
    """Another 2-D weight read transposed (a ``[K, N]`` matmul operand as a ``[N, K]`` linear
    weight): a contiguous copy made on each access, nothing kept."""

    def __init__(self, weight: Weight):
        self.weight = weight
        self.type = TensorType(weight.type.dtype, tuple(reversed(weight.type.shape)))

    @property
    def materialized(self) -> bool:
        return self.weight.materialized

    def numpy(self) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self.weight.numpy()).T)


# -- safetensors: streamed writing and memory-mapped reading ---------------------------------

_ST_DTYPES = {
    DType.f32: "F32", DType.f16: "F16", DType.bf16: "BF16", DType.f64: "F64", DType.i64: "I64",
    DType.i32: "I32", DType.i8: "I8", DType.u8: "U8", DType.bool: "BOOL", DType.f8e4m3: "F8_E4M3",
    DType.i4: "I8", DType.u4: "U8",
}
_ST_PARSE = {v: k for k, v in _ST_DTYPES.items() if k not in (DType.i4, DType.u4)}


def write_safetensors(path: Path, weights: dict[str, Weight]) -> None:
    """Write ``weights`` one tensor at a time, so peak memory is one tensor, not the model.

    The file is standard safetensors (readable by ``safetensors.safe_open``); 4-bit types are
    stored one element per byte and their llmc dtype is kept in the header metadata.
    """
    header: dict = {}
    offset = 0
    logical = {}
    for name in sorted(weights):
        w = weights[name]
        size = int(np.prod(w.shape, dtype=np.int64)) * w.dtype.np.itemsize
        header[name] = {"dtype": _ST_DTYPES[w.dtype], "shape": list(w.shape), "data_offsets": [offset, offset + size]}
        if w.dtype in (DType.i4, DType.u4):
            logical[name] = w.dtype.value
        offset += size
    header["__metadata__"] = {"format": "llmc", "llmc_dtypes": json.dumps(logical, sort_keys=True)}
    blob = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in sorted(weights):
            arr = np.ascontiguousarray(weights[name].numpy(), dtype=weights[name].dtype.np)
            f.write(memoryview(arr.reshape(-1).view(np.uint8)))


def read_safetensors(path: Path) -> dict[str, FileWeight]:
    """Memory-mapped weights of a safetensors file; nothing is read until used."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError) as e:
        raise ModelLoadError(f"{path} is not a readable safetensors file ({e})", hint="re-export the weights") from None
    meta = header.pop("__metadata__", {}) or {}
    logical = json.loads(meta.get("llmc_dtypes", "{}"))
    size = path.stat().st_size
    out = {}
    for name, entry in header.items():
        if entry["dtype"] not in _ST_PARSE:
            raise ModelLoadError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
        dtype = DType(logical[name]) if name in logical else _ST_PARSE[entry["dtype"]]
        begin, end = entry["data_offsets"]
        if 8 + n + end > size:
            raise ModelLoadError(f"{path} is truncated: tensor {name} ends past the end of the file", hint="re-download or re-export it")
        out[name] = FileWeight(path, 8 + n + begin, TensorType(dtype, tuple(entry["shape"])))
    return out
