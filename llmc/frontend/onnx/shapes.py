"""Import-time evaluation of shape computations: "known" values and the ops that fold them.

A known value is a small numpy array fixed when the model is imported: a small initializer, a
``Constant``, the output of ``Shape`` on a typed tensor, or anything the ``FOLDERS`` below
compute from known values. ``Shape -> Gather -> Concat -> Reshape`` chains therefore never
reach the IR: the ``Reshape`` gets its target as an attribute.

With symbolic dimensions a known value is an object array whose elements are ints or sympy
expressions (``Shape(x)`` of ``f32[1,seq,64]`` is ``[1, seq, 64]``). Such arrays always hold
int64 shape values. A folder raises ``NotFoldable`` when the result depends on the symbols'
values (``seq == 5``, a slice ending at ``seq``), and the importer emits the op into the IR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sympy

from llmc.ir import shapes as S
from llmc.ir.dtypes import DType

KNOWN_LIMIT = 4096  # larger constants stay (lazy) weights rather than known values

Folder = Callable[[list, dict], np.ndarray]
FOLDERS: dict[str, Folder] = {}


class NotFoldable(Exception):
    """The result depends on the symbols' values (``seq == 5``, a slice ending at ``seq``)."""


def folder(*op_types: str):
    def register(fn: Folder) -> Folder:
        for op_type in op_types:
            FOLDERS[op_type] = fn
        return fn

    return register


def fold(op_type: str, args: list, attrs: dict) -> np.ndarray | None:
    """The op evaluated on known ``args`` (None for absent optional inputs), or None if it cannot be."""
    try:
        return normalize(np.asarray(FOLDERS[op_type](args, attrs)))
    except NotFoldable:
        return None


# -- symbolic arrays ------------------------------------------------------------------------


def is_symbolic(a: np.ndarray) -> bool:
    return a.dtype == object


def normalize(a: np.ndarray) -> np.ndarray:
    """Object arrays whose elements all became integers turn back into int64 arrays."""
    if not is_symbolic(a):
        return a
    dims = [S.dim(x) for x in a.reshape(-1)]
    if all(isinstance(d, int) for d in dims):
        return np.array(dims, dtype=np.int64).reshape(a.shape)
    out = np.empty(len(dims), dtype=object)
    out[:] = dims
    return out.reshape(a.shape)


def dims_array(dims: Sequence[S.Dim]) -> np.ndarray:
    """A 1-D shape value: int64 if static, else an object array of dims."""
    out = np.empty(len(dims), dtype=object)
    out[:] = list(dims)
    return normalize(out)


def to_dims(a: np.ndarray) -> tuple[S.Dim, ...]:
    return tuple(S.dim(x) if is_symbolic(a) else int(x) for x in a.reshape(-1))


def to_ints(a: np.ndarray) -> list[int] | None:
    """Python ints of a static integer array; None if it holds symbols."""
    if is_symbolic(a):
        return None
    return [int(x) for x in a.reshape(-1)]


def _static(a: np.ndarray) -> list[int]:
    """The ints of an op parameter (axes, bounds); symbolic ones make the op not foldable."""
    ints = to_ints(a)
    if ints is None:
        raise NotFoldable(f"{a} is symbolic")
    return ints


def _per_element(fn, *arrays) -> np.ndarray:
    """``fn`` on every element of object arrays (ints and sympy dims), broadcasting."""
    out = np.frompyfunc(fn, len(arrays), 1)(*[np.asarray(a).astype(object) for a in arrays])
    return np.asarray(out, dtype=object)


def _elementwise(fn, *arrays) -> np.ndarray:
    if not any(is_symbolic(a) for a in arrays):
        return fn(*arrays)
    return _per_element(lambda *xs: fn(*(S.dim(x) if isinstance(x, sympy.Basic) else x for x in xs)), *arrays)


def _decide(relation) -> bool:
    relation = sympy.sympify(relation)
    if relation in (sympy.true, sympy.false):
        return bool(relation)
    raise NotFoldable(str(relation))


# -- folders --------------------------------------------------------------------------------


@folder("Identity")
def _identity(a, attrs):
    return a[0]


def _cast_to(x: np.ndarray, dtype: DType) -> np.ndarray:
    if not is_symbolic(x):
        return x.astype(dtype.np)
    if not dtype.is_int:
        raise NotFoldable("symbolic dims cast to a non-integer type")
    return x


@folder("Cast")
def _cast(a, attrs):
    from llmc.frontend.onnx.reader import dtype_of

    return _cast_to(a[0], dtype_of(attrs["to"], "Cast target"))


@folder("CastLike")
def _cast_like(a, attrs):
    return _cast_to(a[0], DType.i64 if is_symbolic(a[1]) else DType.from_numpy(a[1].dtype))


@folder("Gather")
def _gather(a, attrs):
    return np.take(a[0], a[1], axis=attrs.get("axis", 0))


@folder("Concat")
def _concat(a, attrs):
    if any(is_symbolic(x) for x in a):
        a = [x.astype(object) for x in a]
    return np.concatenate(a, axis=attrs["axis"])


@folder("Unsqueeze")
def _unsqueeze(a, attrs):
    axes = _static(a[1])
    rank = a[0].ndim + len(axes)
    return np.expand_dims(a[0], tuple(sorted(ax % rank for ax in axes)))


@folder("Squeeze")
def _squeeze(a, attrs):
    axes = None if len(a) < 2 or a[1] is None else tuple(_static(a[1]))
    return np.squeeze(a[0], axis=axes)


def reshape_target(target: Sequence[S.Dim], shape: Sequence[S.Dim], attrs: dict) -> list[S.Dim]:
    """ONNX Reshape's target with each 0 meaning "keep this input dim" (unless ``allowzero``)."""
    if attrs.get("allowzero", 0):
        return list(target)
    return [shape[i] if d == 0 else d for i, d in enumerate(target)]


@folder("Reshape")
def _reshape(a, attrs):
    return np.reshape(a[0], reshape_target(_static(a[1]), a[0].shape, attrs))


@folder("Flatten")
def _flatten(a, attrs):
    axis = attrs.get("axis", 1)
    axis = axis + a[0].ndim if axis < 0 else axis
    return a[0].reshape(int(np.prod(a[0].shape[:axis])), -1)


@folder("Transpose")
def _transpose(a, attrs):
    return np.transpose(a[0], attrs.get("perm"))


@folder("Slice")
def _slice(a, attrs):
    x = a[0]
    starts, ends = _static(a[1]), _static(a[2])
    axes = _static(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _static(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


@folder("Expand")
def _expand(a, attrs):
    shape = _static(a[1])
    return np.broadcast_to(a[0], np.broadcast_shapes(a[0].shape, tuple(shape)))


def fill_value(attrs: dict) -> np.ndarray:
    """ConstantOfShape's fill value: a 0-d array of its dtype (default float32 zero)."""
    from onnx import numpy_helper

    return numpy_helper.to_array(attrs["value"]).reshape(()) if "value" in attrs else np.array(0, np.float32)


@folder("ConstantOfShape")
def _constant_of_shape(a, attrs):
    return np.broadcast_to(fill_value(attrs), tuple(_static(a[0])))  # a view: no memory even when weight-sized


@folder("Range")
def _range(a, attrs):
    if any(is_symbolic(x) for x in a):
        raise NotFoldable("symbolic range bounds")
    start, limit, delta = (x.reshape(()) for x in a)
    return np.arange(start, limit, delta).astype(start.dtype)


def _int_div(x, y):
    if isinstance(x, int) and isinstance(y, int):
        q = abs(x) // abs(y)
        return q if (x >= 0) == (y >= 0) else -q
    return S.dim(sympy.floor(sympy.Integer(1) * x / y))  # dims are positive: floor == trunc


def _div(a, attrs):
    x, y = a
    if x.dtype.kind == "f":
        return np.divide(x, y).astype(x.dtype)
    out = _per_element(_int_div, x, y)
    return out if is_symbolic(x) or is_symbolic(y) else out.astype(x.dtype)


def _binary(fn):
    def run(a, attrs):
        x, y = a
        out = _elementwise(fn, x, y)
        return out if is_symbolic(out) else np.asarray(out).astype(x.dtype)

    return run


FOLDERS["Add"] = _binary(lambda x, y: x + y)
FOLDERS["Sub"] = _binary(lambda x, y: x - y)
FOLDERS["Mul"] = _binary(lambda x, y: x * y)
FOLDERS["Div"] = _div
FOLDERS["Neg"] = lambda a, attrs: _elementwise(lambda x: -x, a[0])


def _numeric(fn):
    """Float math on static values (exporters compute ``1 / sqrt(head_dim)`` in the graph)."""

    def run(a, attrs):
        if any(is_symbolic(x) for x in a):
            raise NotFoldable("float math on symbolic dims")
        return np.asarray(fn(*a)).astype(a[0].dtype)

    return run


FOLDERS["Sqrt"] = _numeric(np.sqrt)
FOLDERS["Reciprocal"] = _numeric(np.reciprocal)
FOLDERS["Pow"] = _numeric(np.power)


def _extremum(numeric, symbolic):
    def run(a, attrs):
        if not any(is_symbolic(x) for x in a):
            out = a[0]
            for x in a[1:]:
                out = numeric(out, x)
            return out
        out = a[0]
        for x in a[1:]:
            out = _per_element(lambda p, q: S.dim(symbolic(p, q)), out, x)
        return out

    return run


FOLDERS["Max"] = _extremum(np.maximum, sympy.Max)
FOLDERS["Min"] = _extremum(np.minimum, sympy.Min)

_COMPARE = {
    "Equal": (np.equal, sympy.Eq),
    "Less": (np.less, sympy.Lt),
    "LessOrEqual": (np.less_equal, sympy.Le),
    "Greater": (np.greater, sympy.Gt),
    "GreaterOrEqual": (np.greater_equal, sympy.Ge),
}


def _comparison(numeric, symbolic):
    def run(a, attrs):
        x, y = a
        if not (is_symbolic(x) or is_symbolic(y)):
            return numeric(x, y)
        return _per_element(lambda p, q: _decide(symbolic(p, q)), x, y).astype(bool)

    return run


for _op_type, (_np_fn, _sympy_fn) in _COMPARE.items():
    FOLDERS[_op_type] = _comparison(_np_fn, _sympy_fn)

FOLDERS["Not"] = lambda a, attrs: np.logical_not(a[0])
FOLDERS["And"] = lambda a, attrs: np.logical_and(*a)
FOLDERS["Or"] = lambda a, attrs: np.logical_or(*a)
FOLDERS["Where"] = lambda a, attrs: np.where(a[0], a[1], a[2])
