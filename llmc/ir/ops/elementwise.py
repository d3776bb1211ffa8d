"""Elementwise ops: unary math and activations, broadcasting binary ops, where, cast, clip."""

from __future__ import annotations

import numpy as np
from scipy import special

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.ops.registry import Attr, OpDef, register, same_dtype
from llmc.ir.types import TensorType

_LOW_PRECISION = (DType.f16.np, DType.bf16.np)


def _float_math(fn):
    """Run ``fn`` in float32 for half types (numpy's f16 math is slow and inexact), cast back."""

    def run(x, *args):
        if x.dtype in _LOW_PRECISION:
            return fn(x.astype(np.float32), *args).astype(x.dtype)
        return fn(x, *args)

    return run


def _gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi).astype(x.dtype) * (x + 0.044715 * x**3)))
    return (0.5 * x * (1 + special.erf(x / np.sqrt(2).astype(x.dtype)))).astype(x.dtype)


def _sigmoid(x):
    return special.expit(x).astype(x.dtype)


UNARY = {
    "neg": (np.negative, 1, "-x"),
    "abs": (np.abs, 1, "|x|"),
    "exp": (np.exp, 8, "e^x"),
    "log": (np.log, 8, "natural logarithm"),
    "sqrt": (np.sqrt, 4, "square root"),
    "rsqrt": (lambda x: (1 / np.sqrt(x)).astype(x.dtype), 4, "1 / sqrt(x)"),
    "reciprocal": (lambda x: (1 / x).astype(x.dtype), 1, "1 / x"),
    "tanh": (np.tanh, 8, "hyperbolic tangent"),
    "sigmoid": (_sigmoid, 8, "1 / (1 + e^-x)"),
    "relu": (lambda x: np.maximum(x, 0).astype(x.dtype), 1, "max(x, 0)"),
    "silu": (lambda x: (x * _sigmoid(x)).astype(x.dtype), 8, "x * sigmoid(x) (SwiGLU's gate)"),
    "erf": (lambda x: special.erf(x).astype(x.dtype), 8, "the error function"),
    "sin": (np.sin, 8, "sine"),
    "cos": (np.cos, 8, "cosine"),
    "floor": (np.floor, 1, "round down"),
    "ceil": (np.ceil, 1, "round up"),
    "not": (np.logical_not, 1, "logical not (bool)"),
}


def _same_type(types, attrs):
    return [types[0]]


def _register_unary(name, fn, flops, doc):
    wrapped = fn if name == "not" else _float_math(fn)
    register(
        OpDef(
            name=name, doc=doc, inputs=("x",), infer=_same_type,
            reference=lambda xs, attrs, f=wrapped: np.asarray(f(xs[0])),
            kind="elementwise", flops_per_element=flops,
        )
    )


for _name, (_fn, _flops, _doc) in UNARY.items():
    _register_unary(_name, _fn, _flops, _doc)

register(
    OpDef(
        name="gelu", doc="Gaussian error linear unit; approximate='none' (erf) or 'tanh'.",
        inputs=("x",), attrs={"approximate": Attr("str", "none")}, infer=_same_type,
        reference=lambda xs, a: _float_math(_gelu)(xs[0], a["approximate"]),
        kind="elementwise", flops_per_element=10,
    )
)
register(
    OpDef(
        name="leaky_relu", doc="x if x > 0 else alpha * x", inputs=("x",), attrs={"alpha": Attr("float", 0.01)},
        infer=_same_type, reference=lambda xs, a: np.where(xs[0] > 0, xs[0], xs[0] * xs[0].dtype.type(a["alpha"])),
        kind="elementwise",
    )
)
register(
    OpDef(
        name="clip", doc="Clamp to [min, max] (either may be +-inf).", inputs=("x",),
        attrs={"min": Attr("float", float("-inf")), "max": Attr("float", float("inf"))}, infer=_same_type,
        reference=lambda xs, a: np.clip(xs[0], a["min"], a["max"]).astype(xs[0].dtype), kind="elementwise",
    )
)


def _cast_infer(types, attrs):
    return [types[0].with_dtype(attrs["dtype"])]


def _cast_ref(xs, attrs):
    dtype: DType = attrs["dtype"]
    x = xs[0]
    if dtype.is_int and x.dtype.kind == "f":
        x = np.trunc(x)
    return x.astype(dtype.np)


register(
    OpDef(
        name="cast", doc="Convert to another dtype (floats to integers truncate toward zero).",
        inputs=("x",), attrs={"dtype": Attr("dtype")}, infer=_cast_infer, reference=_cast_ref, kind="elementwise",
    )
)

# -- binary ---------------------------------------------------------------------------------

BINARY = {
    "add": (np.add, False, "a + b"),
    "sub": (np.subtract, False, "a - b"),
    "mul": (np.multiply, False, "a * b"),
    "div": (None, False, "a / b (integer division truncates toward zero)"),
    "pow": (np.power, False, "a ** b"),
    "maximum": (np.maximum, False, "elementwise max"),
    "minimum": (np.minimum, False, "elementwise min"),
    "mod": (np.fmod, False, "remainder with the sign of a"),
    "equal": (np.equal, True, "a == b"),
    "less": (np.less, True, "a < b"),
    "less_equal": (np.less_equal, True, "a <= b"),
    "greater": (np.greater, True, "a > b"),
    "greater_equal": (np.greater_equal, True, "a >= b"),
    "and": (np.logical_and, True, "logical and"),
    "or": (np.logical_or, True, "logical or"),
}


def _div(a, b):
    if a.dtype.kind in "iu":
        return (np.trunc(a / b)).astype(a.dtype)
    return np.divide(a, b).astype(a.dtype)


def _binary_infer(name, to_bool):
    def infer(types, attrs):
        dtype = same_dtype(types, name)
        out = DType.bool if to_bool else dtype
        return [TensorType(out, S.broadcast(types[0].shape, types[1].shape))]

    return infer


def _binary_ref(fn, to_bool):
    def ref(xs, attrs):
        a, b = xs
        if not to_bool and a.dtype in _LOW_PRECISION:
            return np.asarray(fn(a.astype(np.float32), b.astype(np.float32))).astype(a.dtype)
        out = np.asarray(fn(a, b))
        return out if to_bool else out.astype(a.dtype, copy=False)

    return ref


for _name, (_fn, _to_bool, _doc) in BINARY.items():
    register(
        OpDef(
            name=_name, doc=_doc + " (numpy broadcasting)", inputs=("a", "b"),
            infer=_binary_infer(_name, _to_bool), reference=_binary_ref(_fn or _div, _to_bool), kind="elementwise",
        )
    )


def _where_infer(types, attrs):
    cond, a, b = types
    if cond.dtype != DType.bool:
        raise ShapeError(f"where needs a bool condition, got {cond.dtype}", hint="compare first or cast to bool")
    dtype = same_dtype([a, b], "where")
    return [TensorType(dtype, S.broadcast(cond.shape, S.broadcast(a.shape, b.shape)))]


register(
    OpDef(
        name="where", doc="cond ? a : b (numpy broadcasting)", inputs=("cond", "a", "b"),
        infer=_where_infer, reference=lambda xs, a: np.where(*xs).astype(xs[1].dtype), kind="elementwise",
    )
)
