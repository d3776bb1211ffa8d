"""Reading ONNX models safely: the proto, its checks and opset, and its tensors as lazy weights.

The proto is parsed without its external data. Each externally stored tensor becomes a
``FileWeight`` (memory-mapped on first use) after its ``location`` is checked to name a file
inside the model's folder: absolute paths, ``..`` escapes and symlinks out are refused with
``UnsafeModelError``, before the ONNX checker or anything else reads the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from llmc.errors import ModelLoadError, UnsafeModelError
from llmc.ir.dtypes import DType
from llmc.ir.tensor import ArrayWeight, FileWeight, Weight
from llmc.ir.types import TensorType

MIN_OPSET = 13

_DTYPES = {
    TensorProto.FLOAT: DType.f32, TensorProto.FLOAT16: DType.f16, TensorProto.BFLOAT16: DType.bf16,
    TensorProto.DOUBLE: DType.f64, TensorProto.INT64: DType.i64, TensorProto.INT32: DType.i32,
    TensorProto.INT8: DType.i8, TensorProto.UINT8: DType.u8, TensorProto.BOOL: DType.bool,
    TensorProto.FLOAT8E4M3FN: DType.f8e4m3,
}


@dataclass
class OnnxSource:
    """A parsed, checked model at opset >= 13, and the file it came from (None for a proto)."""

    model: onnx.ModelProto
    path: Path | None
    label: str

    @property
    def folder(self) -> Path | None:
        """Where its external data must live."""
        return self.path.parent if self.path else None


def dtype_of(elem_type: int, what: str) -> DType:
    """The llmc dtype of an ONNX element type; ``what`` names the tensor for the error."""
    try:
        return _DTYPES[elem_type]
    except KeyError:
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else str(elem_type)
        raise ModelLoadError(
            f"{what} has element type {name}, which llmc does not support",
            hint="Use float32/float16/bfloat16, int64/int32/int8/uint8 or bool tensors",
        ) from None


def read_model(model: str | os.PathLike | onnx.ModelProto) -> OnnxSource:
    """Parse (without external data), refuse unsafe external locations, check, upgrade to opset 13+."""
    if isinstance(model, onnx.ModelProto):
        source = OnnxSource(model, None, f"ONNX model {model.graph.name or '(unnamed)'}")
    else:
        path = Path(model)
        source = OnnxSource(_parse(path), path.resolve(), str(path))
    for tensor in _external_tensors(source.model.graph):
        _external_file(tensor, source)
    _check(source)
    source.model = _upgraded(source)
    if source.model.functions:
        source.model = onnx.inliner.inline_local_functions(source.model)
    return source


def _parse(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelLoadError(f"ONNX file {path} does not exist or is not a file", hint="Check the path")
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelLoadError(
            f"{path} is not a readable ONNX model: the file is truncated or not an ONNX protobuf ({e})",
            hint="Re-export or re-download the model",
        ) from None


def _check(source: OnnxSource) -> None:
    # From a file, the checker must read the file: handed a proto, it resolves external data
    # against the current directory.
    target = source.model if source.path is None else os.fspath(source.path)
    try:
        onnx.checker.check_model(target)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"{source.label} fails the ONNX checker: {first}",
            hint="The file is damaged or was written by a broken exporter; re-export it",
        ) from None


def _upgraded(source: OnnxSource) -> onnx.ModelProto:
    model = source.model
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if version >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except (onnx.version_converter.ConvertError, RuntimeError, ValueError) as e:
        raise ModelLoadError(
            f"{source.label} uses opset {version}; converting it to opset {MIN_OPSET} failed ({type(e).__name__}: {e})",
            hint=f"Re-export the model with opset {MIN_OPSET} or later",
        ) from None


# -- tensors --------------------------------------------------------------------------------


def _external_tensors(graph: onnx.GraphProto):
    """Every externally stored tensor: initializers and tensor attributes, subgraphs included."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            tensors += [attr.t, *attr.tensors]
            for sub in [attr.g, *attr.graphs]:
                yield from _external_tensors(sub)
    yield from (t for t in tensors if t.data_location == TensorProto.EXTERNAL)


def tensor_weight(tensor: TensorProto, source: OnnxSource) -> Weight:
    """The tensor as a lazy weight: a memory-mapped ``FileWeight`` when stored externally."""
    dtype = dtype_of(tensor.data_type, f"tensor {tensor.name} of {source.label}")
    if tensor.data_location == TensorProto.EXTERNAL:
        return _external_weight(tensor, dtype, source)
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as e:
        raise ModelLoadError(f"tensor {tensor.name} of {source.label} cannot be decoded ({e})",
                             hint="The file is damaged; re-export it") from None
    return ArrayWeight(np.asarray(array).astype(dtype.np, copy=False), dtype)


def _external_weight(tensor: TensorProto, dtype: DType, source: OnnxSource) -> FileWeight:
    info = {e.key: e.value for e in tensor.external_data}
    path = _external_file(tensor, source)
    type = TensorType(dtype, tuple(tensor.dims))
    need = int(np.prod(tensor.dims, dtype=np.int64)) * dtype.np.itemsize
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", need))
    except ValueError:
        raise ModelLoadError(f"tensor {tensor.name} of {source.label} has a malformed external-data "
                             f"offset/length {info}",
                             hint="Re-save the model with onnx.save_model(..., save_as_external_data=True)") from None
    if length != need:
        raise ModelLoadError(f"tensor {tensor.name} of {source.label} declares {length} bytes of external data, "
                             f"but {type} needs {need}",
                             hint="The model and its data file do not match; re-export both")
    if path.stat().st_size < offset + need:
        raise ModelLoadError(f"external data file {path} is truncated: tensor {tensor.name} needs bytes "
                             f"{offset}..{offset + need} but the file has {path.stat().st_size}",
                             hint="Re-copy or re-export the data file")
    return FileWeight(path, offset, type)


def _external_file(tensor: TensorProto, source: OnnxSource) -> Path:
    """The data file of an external tensor: refused unless it lies inside the model's folder, and must exist."""
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    where = f"tensor {tensor.name} of {source.label}"
    if not location:
        raise ModelLoadError(f"{where} is stored externally but names no data file", hint="Re-export the model")
    absolute = os.path.isabs(location) or location.startswith(("/", "\\")) or PureWindowsPath(location).drive
    if absolute or "\0" in location:
        raise UnsafeModelError(f"{where} points its external data at the absolute path {location!r}; refused",
                               hint="External data must be a file inside the model's folder, named by a relative path")
    if source.folder is None:
        raise ModelLoadError(f"{where} keeps its data in the external file {location!r}, but the model was given "
                             "as an in-memory ModelProto, so there is no folder to find it in",
                             hint="Pass the path of the .onnx file instead")
    root = source.folder.resolve()
    target = (root / location).resolve()
    if not target.is_relative_to(root):
        raise UnsafeModelError(f"{where} points its external data outside the model's folder: {location!r} "
                               f"resolves to {target}; refused",
                               hint="External data must be a file inside the model's folder")
    if not target.is_file():
        raise ModelLoadError(f"external data file {location!r} of {where} is missing (looked for {target})",
                             hint="Copy the data file next to the .onnx file, as it was saved")
    return target
