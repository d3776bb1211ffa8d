"""Converters for elementwise math, comparisons, logic, casts and reductions."""

from __future__ import annotations

import numpy as np

from llmc.frontend.onnx import shapes
from llmc.frontend.onnx.context import NodeCx, converter
from llmc.frontend.onnx.reader import dtype_of

UNARY = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Erf": "erf", "Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal", "Sin": "sin", "Cos": "cos",
    "Floor": "floor", "Ceil": "ceil", "Not": "not",
}
BINARY = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Equal": "equal", "Less": "less",
    "LessOrEqual": "less_equal", "Greater": "greater", "GreaterOrEqual": "greater_equal", "And": "and", "Or": "or",
}
VARIADIC = {"Sum": "add", "Max": "maximum", "Min": "minimum", "Mean": "add"}
REDUCE = {
    "ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max", "ReduceMin": "reduce_min",
    "ReduceProd": "reduce_prod",
}


@converter(*UNARY)
def _unary(cx: NodeCx):
    return cx.call(UNARY[cx.op_type], cx.value(0))


@converter(*BINARY)
def _binary(cx: NodeCx):
    a, b = cx.value(0), cx.value(1)
    if cx.op_type == "Pow" and b.type.dtype != a.type.dtype:  # the one ONNX op with mixed input types
        b = cx.call("cast", b, dtype=a.type.dtype)
    return cx.call(BINARY[cx.op_type], a, b)


@converter(*VARIADIC)
def _variadic(cx: NodeCx):
    values = cx.values()
    out = values[0]
    for v in values[1:]:
        out = cx.call(VARIADIC[cx.op_type], out, v)
    if cx.op_type == "Mean" and len(values) > 1:
        out = cx.call("div", out, cx.const(len(values), out.type.dtype))
    return out


@converter("Where")
def _where(cx: NodeCx):
    return cx.call("where", cx.value(0), cx.value(1), cx.value(2))


@converter("IsNaN")
def _isnan(cx: NodeCx):
    """NaN is the one value unequal to itself: not(x == x)."""
    x = cx.value(0)
    return cx.call("not", cx.call("equal", x, x))


@converter("Cast", "CastLike")
def _cast(cx: NodeCx):
    if cx.op_type == "CastLike":
        dtype = cx.type(1).dtype
    else:
        dtype = dtype_of(cx.attr("to"), f"Cast target of {cx.meta.origin}")
    known = cx.known(0)
    if known is not None and not shapes.is_symbolic(known):  # CastLike of a constant: only the target's type matters
        return known.astype(dtype.np)
    x = cx.value(0)
    return x if x.type.dtype == dtype else cx.call("cast", x, dtype=dtype)


@converter("Clip")
def _clip(cx: NodeCx):
    """``clip`` with constant bounds; bounds computed at run time become maximum / minimum."""
    x = cx.value(0)
    bounds = {}
    for i, key, op in ((1, "min", "maximum"), (2, "max", "minimum")):
        if not cx.has(i):
            continue
        known = cx.known(i)
        if known is None:
            x = cx.call(op, x, cx.value(i))
        else:
            bounds[key] = float(np.asarray(known).reshape(()))
    return cx.call("clip", x, **bounds) if bounds else x


@converter("LeakyRelu")
def _leaky_relu(cx: NodeCx):
    return cx.call("leaky_relu", cx.value(0), alpha=cx.attr("alpha", 0.01))


@converter("Gelu")
def _gelu(cx: NodeCx):
    return cx.call("gelu", cx.value(0), approximate=cx.attr("approximate", "none"))


@converter(*REDUCE)
def _reduce(cx: NodeCx):
    """Axes come from the attribute (ReduceMean/Max/Min/Prod before opset 18) or the second input."""
    axes = cx.ints(1, "axes") if cx.has(1) else list(cx.attr("axes", []))
    if not axes and cx.attr("noop_with_empty_axes", 0):
        return cx.value(0)
    return cx.call(REDUCE[cx.op_type], cx.value(0), axes=axes, keepdims=bool(cx.attr("keepdims", 1)))


@converter("ArgMax")
def _argmax(cx: NodeCx):
    if cx.attr("select_last_index", 0):
        raise cx.fail("select_last_index=1")
    return cx.call("argmax", cx.value(0), axis=cx.attr("axis", 0), keepdims=bool(cx.attr("keepdims", 1)))


@converter("CumSum")
def _cumsum(cx: NodeCx):
    if cx.attr("exclusive", 0) or cx.attr("reverse", 0):
        raise cx.fail("exclusive or reverse cumulative sums")
    (axis,) = cx.ints(1, "axis")
    return cx.call("cumsum", cx.value(0), axis=axis)
