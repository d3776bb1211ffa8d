"""The model's input types: ONNX's declared dims, then ``dynamic`` and ``input_shapes`` applied.

ONNX declares each input dim as a size (``224``), a named symbol (``dim_param: "seq"``) or
nothing. Named symbols become IR symbols of that name; unnamed dims become ``<input>_<axis>``.
``dynamic`` ({input: {axis: symbol}}) renames a dim to a symbol; ``input_shapes`` ({input:
[size or symbol, ...]}) fixes or names every dim of an input. A symbol shared by several
inputs (``seq`` in ``input_ids`` and ``attention_mask``) changes everywhere at once, and a
size that contradicts a fixed dim of the model is a ``ShapeError`` naming input and axis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import sympy
from onnx import ValueInfoProto

from llmc.errors import InputError, ModelLoadError, ShapeError
from llmc.frontend.onnx.reader import dtype_of
from llmc.ir import shapes as S
from llmc.ir.types import TensorType


def input_types(inputs: Sequence[ValueInfoProto], input_shapes: Mapping[str, Sequence[int | str]],
                dynamic: Mapping[str, Mapping[int, str]], label: str) -> dict[str, TensorType]:
    names = [i.name for i in inputs]
    for what, given in (("input_shapes", input_shapes), ("dynamic", dynamic)):
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise InputError(f"{what} names {unknown}, which are not inputs of {label}", hint=f"Its inputs are {names}")
    dtypes, dims = {}, {}
    for info in inputs:
        dtypes[info.name], dims[info.name] = _declared(info, input_shapes, label)
    renames: dict[str, S.Dim] = {}
    for name, axes in dynamic.items():
        for axis, symbol in axes.items():
            _assign(dims[name], _axis(name, axis, len(dims[name])), S.sym(str(symbol)), renames, name)
    for name, shape in input_shapes.items():
        if len(shape) != len(dims[name]):
            raise ShapeError(f"input {name} has rank {len(dims[name])} in the model, but input_shapes gives "
                             f"{list(shape)}", hint="Give one size (or symbol name) per axis")
        for axis, size in enumerate(shape):
            _assign(dims[name], axis, S.dim(size), renames, name)
    return {name: TensorType(dtypes[name], tuple(_final(d, renames, name, axis) for axis, d in enumerate(dims[name])))
            for name in names}


def _declared(info: ValueInfoProto, input_shapes, label: str):
    if not info.type.HasField("tensor_type"):
        raise ModelLoadError(f"input {info.name} of {label} is not a tensor",
                             hint="llmc imports tensor inputs only (no sequences or maps)")
    tt = info.type.tensor_type
    dtype = dtype_of(tt.elem_type, f"input {info.name} of {label}")
    if not tt.HasField("shape"):
        if info.name not in input_shapes:
            raise ShapeError(f"input {info.name} of {label} declares no shape, not even its rank",
                             hint=f"Give its shape, e.g. input_shapes={{'{info.name}': [1, 128]}}")
        return dtype, [None] * len(input_shapes[info.name])
    return dtype, [d.dim_value if d.HasField("dim_value") else (_symbolic(d.dim_param) if d.dim_param else None)
                   for d in tt.shape.dim]


def _symbolic(param: str) -> S.Dim:
    """A dim_param as an IR dim: an expression like ``seq + 1`` if it parses, else a symbol."""
    try:
        return S.dim(param)
    except (ShapeError, sympy.SympifyError, SyntaxError, TypeError, ValueError):
        return S.sym(_identifier(param))


def _identifier(text: str) -> str:
    text = re.sub(r"\W", "_", text)
    return text if text[:1].isalpha() else f"d_{text}"


def _axis(name: str, axis: int, rank: int) -> int:
    if not -rank <= int(axis) < rank:
        raise ShapeError(f"dynamic names axis {axis} of input {name}, which has rank {rank}",
                         hint=f"Use an axis in [0, {rank})")
    return int(axis) % rank


def _assign(dims: list, axis: int, new: S.Dim, renames: dict[str, S.Dim], name: str) -> None:
    old = dims[axis]
    if isinstance(old, int):
        if isinstance(new, int) and new != old:
            raise ShapeError(f"input {name} axis {axis} has the fixed size {old} in the model, but {new} was given",
                             hint=f"Give {old} for that axis, or re-export the model with axis {axis} dynamic")
        dims[axis] = new
    elif isinstance(old, sympy.Symbol):
        previous = renames.setdefault(str(old), new)
        if not S.same(previous, new):
            raise ShapeError(f"dimension {old} (input {name} axis {axis}) is given as both {previous} and {new}",
                             hint=f"Inputs sharing {old} must get the same size")
    elif old is None:
        dims[axis] = new
    else:
        symbols = ", ".join(sorted(map(str, old.free_symbols)))
        raise ShapeError(f"input {name} axis {axis} is the expression {old} in the model and cannot be set directly",
                         hint=f"Set the symbols it is made of ({symbols}) instead")


def _final(d, renames: dict[str, S.Dim], name: str, axis: int) -> S.Dim:
    if d is None:
        return S.sym(_identifier(f"{name}_{axis}"))
    if isinstance(d, int):
        return d
    return S.dim(d.subs({S.sym(k): v for k, v in renames.items()}))
