"""Small GGUF files for tests, written with ``gguf.GGUFWriter`` (llama.cpp's own Python writer),
and helpers that damage them on purpose.

    write_gguf(tmp_path / "m.gguf", metadata={"llama.block_count": (2, GGUFValueType.UINT32)},
               tensors={"output_norm.weight": (np.ones(8, np.float32), "F32"),
                        "token_embd.weight": (np.random.rand(16, 64).astype(np.float32), "Q8_0")})
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType


def write_gguf(path: Path, *, arch: str = "llama", metadata: dict[str, object] | None = None,
               tensors: dict[str, tuple[np.ndarray, str]] | None = None) -> Path:
    """Write a GGUF file with ``general.architecture = arch``; returns ``path``.

    ``metadata`` values are typed by Python type (int -> INT32, float -> FLOAT32, lists -> arrays)
    unless given as ``(value, GGUFValueType)``. ``tensors`` maps names to ``(array, type name)``:
    a float array in numpy order is quantized to the type with ``gguf.quants.quantize``; a uint8
    array is taken as the already stored bytes (rows of blocks), for types gguf cannot quantize.
    """
    writer = gguf.GGUFWriter(path, arch)
    for key, value in (metadata or {}).items():
        value, value_type = value if isinstance(value, tuple) else (value, GGUFValueType.get_type(value))
        writer.add_key_value(key, value, value_type)
    for name, (array, type_name) in (tensors or {}).items():
        ggml_type = GGMLQuantizationType[type_name]
        stored = array if array.dtype == np.uint8 else gguf.quants.quantize(array, ggml_type)
        writer.add_tensor(name, stored, raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tensor_info_fields(path: Path, name: str) -> dict[str, int]:
    """Byte positions in ``path`` of tensor ``name``'s info: ``dim0``, ``dim1``, ..., ``type``, ``offset``."""
    blob = path.read_bytes()
    start = blob.index(struct.pack("<Q", len(name)) + name.encode()) + 8 + len(name)
    (n_dims,) = struct.unpack_from("<I", blob, start)
    fields = {f"dim{i}": start + 4 + 8 * i for i in range(n_dims)}
    fields["type"] = start + 4 + 8 * n_dims
    fields["offset"] = fields["type"] + 4
    return fields


def patch(path: Path, position: int, fmt: str, value) -> None:
    """Overwrite the bytes at ``position`` with ``struct.pack(fmt, value)``."""
    blob = bytearray(path.read_bytes())
    struct.pack_into(fmt, blob, position, value)
    path.write_bytes(bytes(blob))


def replace_once(path: Path, old: bytes, new: bytes) -> None:
    """Replace the one occurrence of ``old`` in ``path`` by ``new`` of the same length."""
    blob = path.read_bytes()
    assert len(old) == len(new) and blob.count(old) == 1, (old, blob.count(old))
    path.write_bytes(blob.replace(old, new))
