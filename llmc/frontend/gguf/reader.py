"""Reading llama.cpp GGUF files safely and lazily: metadata as Python values, tensors as weights.

A GGUF file is untrusted input: its header is checked with ``struct`` before anything else is
read, every later read is bounds-checked, and every count the file claims is checked against
the bytes left before anything is built from it. A malformed file raises ``ModelLoadError``
naming the file (and tensor). Layout (llama.cpp ``gguf.h``, versions 2 and 3, little-endian):

    "GGUF" u32 version, u64 n_tensors, u64 n_kv
    n_kv x       (string key, u32 value type, value)
    n_tensors x  (string name, u32 n_dims, i64 ne[n_dims] innermost first, u32 ggml type, u64 offset)
    padding to general.alignment (default 32), then the tensor data

Tensors are ``GGUFWeight`` views of the memory-mapped file, dequantized to float32 by
``gguf.quants.dequantize`` when ``.numpy()`` is called. The parser is ours: ``gguf.GGUFReader``
builds a numpy view per vocabulary entry (2.5 s for 49k tokens; 0.1 s here) and does not
bounds-check its reads.
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import dequantize

from llmc.errors import ModelLoadError
from llmc.ir.dtypes import DType
from llmc.ir.meta import QuantSpec
from llmc.ir.packing import Grid, Packed, from_codes
from llmc.ir.tensor import Weight
from llmc.ir.types import TensorType

SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
_HEADER = struct.Struct("<4sIQQ")
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value (empty key)
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset (empty name, no dims)
_REDOWNLOAD = "The file is damaged or not a GGUF model; download or convert it again"

_SCALARS = {  # GGUF value type -> struct / numpy format (little-endian)
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT32: "f", GGUFValueType.FLOAT64: "d", GGUFValueType.BOOL: "?",
}
_STRUCTS = {code: struct.Struct("<" + code) for code in _SCALARS.values()}
_SPECS = {
    GGMLQuantizationType.Q4_0: QuantSpec(bits=4, group=32, axis=-1, sym=True),
    GGMLQuantizationType.Q4_1: QuantSpec(bits=4, group=32, axis=-1, sym=False),
    GGMLQuantizationType.Q8_0: QuantSpec(bits=8, group=32, axis=-1, sym=True),
}
_FLOAT_STORAGE = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
_KNOWN_TYPES = {int(t): t for t in GGMLQuantizationType}
_MISSING = object()


class GGUFWeight(Weight):
    """One GGUF tensor: float32 of numpy-order ``shape`` to llmc, its stored bytes kept as they are.

    ``raw()`` is the stored data, a read-only view of the memory-mapped file (float32 or float16
    for F32/F16, uint8 blocks for every other type); ``numpy()`` dequantizes it on each call.
    """

    def __init__(self, name: str, ggml_type: GGMLQuantizationType, data: np.ndarray, shape: tuple[int, ...]):
        self.name = name
        self._ggml_type = ggml_type
        self._data = data
        self.type = TensorType(DType.f32, shape)

    @property
    def ggml_type(self) -> str:
        """The storage type's llama.cpp name: "F32", "Q4_1", "Q6_K", ..."""
        return self._ggml_type.name

    @property
    def spec(self) -> QuantSpec | None:
        """The llmc ``QuantSpec`` this storage type is exactly (Q4_0, Q4_1, Q8_0), else None."""
        return _SPECS.get(self._ggml_type)

    def raw(self) -> np.ndarray:
        return self._data

    def packed(self, grid: Grid) -> Packed | None:
        """The stored Q4_0 / Q4_1 / Q8_0 blocks repacked as llmc's ``grid`` (no rounding: the same
        codes and float16 scales), or None when the storage is not exactly that grid."""
        spec = self.spec
        same = spec is not None and (spec.bits, spec.group, spec.sym) == (grid.bits, grid.group, grid.sym)
        if not same or len(self.shape) != 2:
            return None
        rows, k = self.shape
        blocks = self._data.reshape(rows, k // 32, -1)
        halves = 2 if self._ggml_type == GGMLQuantizationType.Q4_1 else 1
        scales = blocks[..., :2 * halves].copy().view(np.float16)  # d (and m) per block
        body = blocks[..., 2 * halves:]
        if grid.bits == 8:
            codes = (body.view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        else:  # byte j holds element j (low nibble) and element j + 16 (high nibble)
            codes = np.concatenate([body & 0x0F, body >> 4], axis=-1)
        minimum = scales[..., 1] if halves == 2 else None
        return from_codes(codes.reshape(rows, k), scales[..., 0], minimum, grid)

    def numpy(self) -> np.ndarray:
        return dequantize(self._data, self._ggml_type).reshape(self.shape)

    def __repr__(self) -> str:
        return f"GGUFWeight({self.name!r}, {self.ggml_type}, shape={self.shape})"


@dataclass
class GGUFFile:
    """A parsed GGUF file: ``general.architecture``, every metadata key, and lazy tensors in file order."""

    path: Path
    architecture: str
    metadata: dict[str, object]
    tensors: dict[str, GGUFWeight]

    def get(self, key: str, default=_MISSING):
        """The value of metadata ``key``; without ``default``, a missing key raises ``ModelLoadError``."""
        if key in self.metadata:
            return self.metadata[key]
        if default is not _MISSING:
            return default
        raise ModelLoadError(f"GGUF file {self.path} has no metadata key {key!r}",
                             hint=f"llmc needs it for {self.architecture} models; convert again with a current llama.cpp")


def read_gguf(path: str | Path) -> GGUFFile:
    """Check and parse ``path``; tensors stay in the file until a weight's ``numpy()`` is called."""
    path = Path(path)
    n_tensors, n_kv = _check_header(path)
    data = np.memmap(path, mode="r")
    with memoryview(data) as buf:
        cursor = _Cursor(buf, path, _HEADER.size)
        metadata = _read_metadata(cursor, n_kv)
        infos = [_read_tensor_info(cursor) for _ in range(n_tensors)]
        data_start = _data_start(path, metadata, cursor.pos)
    tensors = _weights(path, data, infos, data_start)
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise ModelLoadError(f"GGUF file {path} has no string 'general.architecture' metadata",
                             hint="Convert the model again with llama.cpp's convert_hf_to_gguf.py")
    return GGUFFile(path, architecture, metadata, tensors)


# -- header and metadata ---------------------------------------------------------------------


def _check_header(path: Path) -> tuple[int, int]:
    """The tensor and key counts; refuses a missing file, a wrong magic or version, or counts the
    file is too small to hold."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ModelLoadError(f"GGUF file {path} {what}", hint="Check the path")
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
    if head[:4] != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')", hint=_REDOWNLOAD)
    if len(head) < _HEADER.size:
        raise _damaged(path, f"truncated: {len(head)} bytes, shorter than the header")
    _, version, n_tensors, n_kv = _HEADER.unpack(head)
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(f"GGUF file {path} has version {version}; llmc reads versions 2 and 3",
                             hint="Convert the model again with a current llama.cpp (little-endian)")
    size = path.stat().st_size
    if _HEADER.size + n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > size:
        raise _damaged(path, f"the header claims {n_tensors} tensors and {n_kv} metadata keys, "
                             f"more than a file of {size} bytes can hold")
    return n_tensors, n_kv


def _damaged(path: Path, what: str) -> ModelLoadError:
    """The error for a malformed file: ``what`` is wrong with the file at ``path``."""
    return ModelLoadError(f"GGUF file {path}: {what}", hint=_REDOWNLOAD)


class _Cursor:
    """Reads little-endian GGUF values from ``buf`` at ``pos``, never past its end."""

    def __init__(self, buf: memoryview, path: Path, pos: int):
        self.buf = buf
        self.path = path
        self.pos = pos

    def take(self, n: int, what: str) -> int:
        """Advance over ``n`` bytes of ``what``; return where they start."""
        if self.pos + n > len(self.buf):
            raise _damaged(self.path, f"truncated: {what} at byte {self.pos} needs {n} bytes, "
                                      f"but the file ends at byte {len(self.buf)}")
        self.pos += n
        return self.pos - n

    def scalar(self, code: str, what: str):
        reader = _STRUCTS[code]
        return reader.unpack_from(self.buf, self.take(reader.size, what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("Q", what)
        start = self.take(n, what)
        try:
            return str(self.buf[start:start + n], "utf-8")
        except UnicodeDecodeError:
            raise _damaged(self.path, f"{what} at byte {start} is not valid UTF-8") from None

    def array(self, code: str, count: int, what: str) -> list:
        start = self.take(count * _STRUCTS[code].size, what)
        return np.frombuffer(self.buf, np.dtype("<" + code), count, start).tolist()


def _read_metadata(cursor: _Cursor, n_kv: int) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for _ in range(n_kv):
        key = cursor.string("a metadata key")
        if key in metadata:
            raise _damaged(cursor.path, f"metadata key {key!r} appears twice")
        what = f"metadata {key!r}"
        metadata[key] = _read_value(cursor, cursor.scalar("I", what), what)
    return metadata


def _read_value(cursor: _Cursor, value_type: int, what: str) -> object:
    if value_type == GGUFValueType.STRING:
        return cursor.string(what)
    if value_type in _SCALARS:
        return cursor.scalar(_SCALARS[value_type], what)
    if value_type != GGUFValueType.ARRAY:
        raise _damaged(cursor.path, f"{what} has unknown value type {value_type}")
    item_type = cursor.scalar("I", what)
    count = cursor.scalar("Q", what)
    if item_type in _SCALARS:
        return cursor.array(_SCALARS[item_type], count, what)
    if item_type != GGUFValueType.STRING:
        raise _damaged(cursor.path, f"{what} is an array of value type {item_type}; "
                                    "llmc reads arrays of numbers, bools or strings")
    if count * 8 > len(cursor.buf) - cursor.pos:  # each string is 8 bytes of length or more
        raise _damaged(cursor.path, f"truncated: {what} claims {count} strings, more than the rest of the file holds")
    return [cursor.string(what) for _ in range(count)]


def _data_start(path: Path, metadata: dict[str, object], infos_end: int) -> int:
    """Where the tensor data begins: after the tensor infos, rounded up to ``general.alignment``."""
    alignment = metadata.get("general.alignment", 32)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise _damaged(path, f"general.alignment {alignment!r} is not a power of two")
    return (infos_end + alignment - 1) // alignment * alignment


# -- tensors ---------------------------------------------------------------------------------


class _TensorInfo(NamedTuple):
    name: str
    dims: tuple[int, ...]  # GGUF order: innermost (ne[0]) first
    raw_type: int
    offset: int  # from the start of the data section


def _read_tensor_info(cursor: _Cursor) -> _TensorInfo:
    name = cursor.string("a tensor name")
    what = f"tensor {name!r}"
    n_dims = cursor.scalar("I", what)
    if n_dims > MAX_DIMS:
        raise _damaged(cursor.path, f"{what} has {n_dims} dimensions; GGML allows {MAX_DIMS}")
    dims = tuple(cursor.scalar("q", what) for _ in range(n_dims))
    return _TensorInfo(name, dims, cursor.scalar("I", what), cursor.scalar("Q", what))


def _weights(path: Path, data: np.memmap, infos: list[_TensorInfo], data_start: int) -> dict[str, GGUFWeight]:
    """The tensors as weights, refusing duplicate names, types llmc cannot read, sizes that
    disagree with the type, and data past the end of the file or overlapping another tensor's."""
    weights, regions = {}, []
    for info in infos:
        what = f"tensor {info.name!r}"
        if info.name in weights:
            raise _damaged(path, f"{what} appears twice")
        ggml_type = _ggml_type(path, what, info.raw_type)
        block, type_size = GGML_QUANT_SIZES[ggml_type]
        if any(d <= 0 for d in info.dims):
            raise _damaged(path, f"{what} has a dimension <= 0 (ne = {list(info.dims)})")
        inner = info.dims[0] if info.dims else 1
        if inner % block:
            raise _damaged(path, f"{what} has rows of {inner} elements, not a multiple of the "
                                 f"{ggml_type.name} block size {block}")
        start = data_start + info.offset
        end = start + math.prod(info.dims) // block * type_size
        if end > len(data):
            raise _damaged(path, f"{what} has data at bytes {start}..{end}, past the end of the file "
                                 f"({len(data)} bytes); the file is truncated or corrupt")
        regions.append((start, end, info.name))
        weights[info.name] = GGUFWeight(info.name, ggml_type, _view(data[start:end], ggml_type, info.dims),
                                        tuple(reversed(info.dims)))
    for (_, end, name), (start, _, other) in itertools.pairwise(sorted(regions)):
        if start < end:
            raise _damaged(path, f"the data of tensors {name!r} (ending at byte {end}) and {other!r} "
                                 f"(starting at byte {start}) overlap")
    return weights


def _ggml_type(path: Path, what: str, raw_type: int) -> GGMLQuantizationType:
    ggml_type = _KNOWN_TYPES.get(raw_type)
    if ggml_type is None or not _dequantizable(ggml_type):
        shown = ggml_type.name if ggml_type is not None else f"number {raw_type} (unknown)"
        supported = ", ".join(t.name for t in GGMLQuantizationType if _dequantizable(t))
        raise ModelLoadError(f"GGUF file {path}: {what} is stored as ggml type {shown}, which llmc cannot "
                             "dequantize", hint=f"Requantize the model to one of: {supported}")
    return ggml_type


@functools.cache
def _dequantizable(ggml_type: GGMLQuantizationType) -> bool:
    """Whether ``gguf.quants.dequantize`` implements ``ggml_type`` (tried on one zero block)."""
    try:
        dequantize(np.zeros(GGML_QUANT_SIZES[ggml_type][1], np.uint8), ggml_type)
    except NotImplementedError:
        return False
    return True


def _view(region: np.memmap, ggml_type: GGMLQuantizationType, dims: tuple[int, ...]) -> np.memmap:
    """A tensor's bytes as ``dequantize`` takes them: F32/F16 as floats, other types as rows of uint8 blocks."""
    if ggml_type in _FLOAT_STORAGE:
        return region.view(_FLOAT_STORAGE[ggml_type]).reshape(tuple(reversed(dims)))
    block, type_size = GGML_QUANT_SIZES[ggml_type]
    inner = dims[0] if dims else 1
    return region.reshape(*reversed(dims[1:]), inner // block * type_size)
