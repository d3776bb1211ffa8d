"""Elementwise math, comparisons and reductions.

Arithmetic runs in the dtype torch computed for the result (``cx.out_dtype``), so type
promotion (int + float, bool sums, true division of integers) follows torch exactly;
comparisons run in the promoted dtype of their operands.
"""

from __future__ import annotations

from llmc.frontend.torch.emitter import Emitter, NotConvertible
from llmc.frontend.torch.ops import aten
from llmc.ir.dtypes import DType

# -- unary ------------------------------------------------------------------------------------

_UNARY = ("abs", "neg", "exp", "log", "sqrt", "rsqrt", "reciprocal", "tanh", "sigmoid", "relu", "silu", "erf",
          "sin", "cos", "floor", "ceil")


def _unary(op: str):
    def convert(cx: Emitter, self):
        return cx.call(op, cx.cast(self, cx.out_dtype))

    return convert


for _name in _UNARY:
    aten(f"{_name}.default")(_unary(_name))


@aten("gelu.default")
def gelu(cx: Emitter, self, approximate="none"):
    return cx.call("gelu", self, approximate=approximate)


@aten("leaky_relu.default")
def leaky_relu(cx: Emitter, self, negative_slope=0.01):
    return cx.call("leaky_relu", self, alpha=negative_slope)


@aten("hardtanh.default")
def hardtanh(cx: Emitter, self, min_val=-1.0, max_val=1.0):
    return cx.call("clip", self, min=min_val, max=max_val)


@aten("clamp.default", "clamp_min.default", "clamp_max.default")
def clamp(cx: Emitter, self, min=None, max=None):
    if not cx.out_dtype.is_float and any(isinstance(b, float) for b in (min, max)):
        raise NotConvertible("integer clamp with float bounds")
    lo = float("-inf") if min is None else min
    hi = float("inf") if max is None else max
    return cx.call("clip", cx.cast(self, cx.out_dtype), min=lo, max=hi)


@aten("logical_not.default", "bitwise_not.default")
def logical_not(cx: Emitter, self):
    if cx.out_dtype != DType.bool:
        raise NotConvertible("bitwise not of integers")
    return cx.call("not", cx.cast(self, DType.bool))


# -- binary arithmetic ------------------------------------------------------------------------


def arith(cx: Emitter, op: str, a, b):
    """``op`` on ``a`` and ``b``, both converted to the result dtype."""
    return cx.call(op, cx.tensor(a, cx.out_dtype), cx.tensor(b, cx.out_dtype))


def _scaled(cx: Emitter, x, alpha):
    return x if alpha == 1 else arith(cx, "mul", x, alpha)


@aten("add.Tensor", "add.Scalar")
def add(cx: Emitter, self, other, alpha=1):
    return arith(cx, "add", self, _scaled(cx, other, alpha))


@aten("sub.Tensor", "sub.Scalar")
def sub(cx: Emitter, self, other, alpha=1):
    return arith(cx, "sub", self, _scaled(cx, other, alpha))


@aten("rsub.Tensor", "rsub.Scalar")
def rsub(cx: Emitter, self, other, alpha=1):
    return arith(cx, "sub", other, _scaled(cx, self, alpha))


def _binary(op: str):
    def convert(cx: Emitter, self, other):
        return arith(cx, op, self, other)

    return convert


aten("mul.Tensor", "mul.Scalar")(_binary("mul"))
aten("maximum.default")(_binary("maximum"))
aten("minimum.default")(_binary("minimum"))
aten("fmod.Tensor", "fmod.Scalar")(_binary("mod"))


@aten("pow.Tensor_Tensor", "pow.Tensor_Scalar", "pow.Scalar")
def power(cx: Emitter, self, exponent):
    return arith(cx, "pow", self, exponent)


@aten("remainder.Tensor", "remainder.Scalar")
def remainder(cx: Emitter, self, other):
    """Python's modulo (sign of the divisor) from ``mod`` (sign of the dividend)."""
    r = arith(cx, "mod", self, other)
    b = cx.tensor(other, cx.out_dtype)
    zero = cx.constant(0, cx.out_dtype)
    signs_differ = cx.call("not", cx.call("equal", cx.call("less", r, zero), cx.call("less", b, zero)))
    fix = cx.call("and", cx.call("not", cx.call("equal", r, zero)), signs_differ)
    return cx.call("where", fix, cx.call("add", r, b), r)


@aten("div.Tensor", "div.Scalar", "div.Tensor_mode", "div.Scalar_mode")
def div(cx: Emitter, self, other, rounding_mode=None):
    if rounding_mode is None:
        return arith(cx, "div", self, other)
    if rounding_mode == "floor":
        return floor_divide(cx, self, other)
    if not cx.out_dtype.is_float:
        return arith(cx, "div", self, other)  # llmc's integer div truncates, as rounding_mode="trunc"
    q = arith(cx, "div", self, other)
    negative = cx.call("less", q, cx.constant(0, cx.out_dtype))
    return cx.call("where", negative, cx.call("ceil", q), cx.call("floor", q))


@aten("floor_divide.default", "floor_divide.Scalar")
def floor_divide(cx: Emitter, self, other):
    if cx.out_dtype.is_float:
        return cx.call("floor", arith(cx, "div", self, other))
    # exact for integers below 2**53 in magnitude
    q = cx.call("div", cx.tensor(self, DType.f64), cx.tensor(other, DType.f64))
    return cx.cast(cx.call("floor", q), cx.out_dtype)


# -- comparisons and logic --------------------------------------------------------------------


def _compare(op: str, negate: bool = False):
    def convert(cx: Emitter, self, other):
        dtype = cx.promote(self, other)
        out = cx.call(op, cx.tensor(self, dtype), cx.tensor(other, dtype))
        return cx.call("not", out) if negate else out

    return convert


for _name, (_op, _negate) in {"eq": ("equal", False), "ne": ("equal", True), "lt": ("less", False),
                              "le": ("less_equal", False), "gt": ("greater", False),
                              "ge": ("greater_equal", False)}.items():
    aten(f"{_name}.Tensor", f"{_name}.Scalar")(_compare(_op, _negate))


def _logical(op: str, negate: bool = False):
    def convert(cx: Emitter, self, other):
        out = cx.call(op, cx.tensor(self, DType.bool), cx.tensor(other, DType.bool))
        return cx.call("not", out) if negate else out

    return convert


aten("logical_and.default")(_logical("and"))
aten("logical_or.default")(_logical("or"))
aten("logical_xor.default")(_logical("equal", negate=True))


def _bitwise(op: str, negate: bool = False):
    logical = _logical(op, negate)

    def convert(cx: Emitter, self, other):
        if cx.out_dtype != DType.bool:
            raise NotConvertible("bitwise logic on integers")
        return logical(cx, self, other)

    return convert


aten("bitwise_and.Tensor", "bitwise_and.Scalar")(_bitwise("and"))
aten("bitwise_or.Tensor", "bitwise_or.Scalar")(_bitwise("or"))
aten("bitwise_xor.Tensor", "bitwise_xor.Scalar")(_bitwise("equal", negate=True))


@aten("where.self", "where.ScalarSelf", "where.ScalarOther", "where.Scalar")
def where(cx: Emitter, condition, self, other):
    dtype = cx.out_dtype
    return cx.call("where", cx.cast(condition, DType.bool), cx.tensor(self, dtype), cx.tensor(other, dtype))


@aten("masked_fill.Scalar", "masked_fill.Tensor")
def masked_fill(cx: Emitter, self, mask, value):
    return cx.call("where", cx.cast(mask, DType.bool), cx.tensor(value, cx.out_dtype), cx.cast(self, cx.out_dtype))


# -- reductions -------------------------------------------------------------------------------


def axes(dim) -> tuple[int, ...]:
    """A torch ``dim`` argument as llmc reduction axes (``None`` and ``[]`` mean every axis: ``()``)."""
    if dim is None:
        return ()
    return (dim,) if isinstance(dim, int) else tuple(dim)


def _reduce(op: str):
    def convert(cx: Emitter, self, dim=None, keepdim=False, dtype=None):
        return cx.call(op, cx.cast(self, cx.out_dtype), axes=axes(dim), keepdims=keepdim)

    return convert


aten("sum.dim_IntList", "sum.default")(_reduce("reduce_sum"))
aten("mean.dim", "mean.default")(_reduce("reduce_mean"))
aten("amax.default", "max.default")(_reduce("reduce_max"))
aten("amin.default", "min.default")(_reduce("reduce_min"))
aten("prod.dim_int", "prod.default")(_reduce("reduce_prod"))


@aten("max.dim")
def max_dim(cx: Emitter, self, dim, keepdim=False):
    values = cx.call("reduce_max", self, axes=(dim,), keepdims=keepdim)
    return values, cx.call("argmax", self, axis=dim, keepdims=keepdim)


@aten("argmax.default")
def argmax(cx: Emitter, self, dim=None, keepdim=False):
    if dim is None:
        flat = cx.reshape(self, (-1,))
        return cx.reshape(cx.call("argmax", flat, axis=0, keepdims=False), cx.out_shape)
    return cx.call("argmax", self, axis=dim, keepdims=keepdim)


def _softmax(op: str):
    def convert(cx: Emitter, self, dim, half_to_float=False, dtype=None):
        return cx.call(op, cx.cast(self, cx.out_dtype), axis=dim)

    return convert


aten("softmax.int", "_softmax.default")(_softmax("softmax"))
aten("log_softmax.int", "_log_softmax.default")(_softmax("log_softmax"))


@aten("cumsum.default")
def cumsum(cx: Emitter, self, dim, dtype=None):
    return cx.call("cumsum", cx.cast(self, cx.out_dtype), axis=dim)
