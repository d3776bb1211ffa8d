"""Elementwise ops: unary math and activations, broadcasting binary ops, where, cast, clip.

All of them map onto Relax ops whose legalization matches llmc's reference (numpy broadcasting;
integer division and remainder truncate toward zero, as C does).
"""

from __future__ import annotations

import math

from tvm import topi
from tvm.relax import op as R

from llmc.codegen.tvm.registry import lowers
from llmc.ir.dtypes import DType

UNARY = {
    "neg": R.negative, "abs": R.abs, "exp": R.exp, "log": R.log, "sqrt": R.sqrt, "rsqrt": R.rsqrt,
    "tanh": R.tanh, "sigmoid": R.sigmoid, "relu": R.nn.relu, "silu": R.nn.silu, "erf": R.erf,
    "sin": R.sin, "cos": R.cos, "floor": R.floor, "ceil": R.ceil, "not": R.logical_not,
}

BINARY = {
    "add": R.add, "sub": R.subtract, "mul": R.multiply, "div": R.divide, "pow": R.power,
    "maximum": R.maximum, "minimum": R.minimum, "mod": R.mod, "equal": R.equal, "less": R.less,
    "less_equal": R.less_equal, "greater": R.greater, "greater_equal": R.greater_equal,
    "and": R.logical_and, "or": R.logical_or,
}


FAST = {"exp": topi.fast_exp, "erf": topi.fast_erf, "tanh": topi.fast_tanh}


@lowers(*UNARY)
def unary(ctx, node, args):
    if node.op in FAST:
        return fast_or_exact(ctx, node.op, args[0], node.inputs[0].type.dtype)
    if node.op in ("sigmoid", "silu") and ctx.options.fast_math and ctx.options.dtype(node.inputs[0].type.dtype) == DType.f32:
        return fast_sigmoid(ctx, args[0], times_x=node.op == "silu")
    return UNARY[node.op](args[0])


def fast_sigmoid(ctx, x, *, times_x: bool):
    """1 / (1 + e^-x) (times x for silu) with the vectorizable exp: libm's expf would leave the loop scalar."""
    e = ctx.emit_te(topi.fast_exp, ctx.emit(R.negative(x)), name="fast_exp")
    one = ctx.const(1.0, DType.f32)
    sigmoid = ctx.emit(R.divide(one, ctx.emit(R.add(one, e))))
    return R.multiply(x, sigmoid) if times_x else sigmoid


def fast_or_exact(ctx, op: str, x, dtype: DType):
    """exp/erf/tanh: TVM's vectorizable float32 approximation under ``fast_math``, else the Relax op."""
    if ctx.options.fast_math and ctx.options.dtype(dtype) == DType.f32:
        return ctx.emit_te(FAST[op], x, name=f"fast_{op}")
    return UNARY[op](x)


@lowers(*BINARY)
def binary(ctx, node, args):
    dtype = ctx.options.dtype(node.inputs[0].type.dtype)
    if node.op == "mod" and dtype in (DType.f16, DType.bf16):  # no half-precision fmod in CUDA C
        wide = [ctx.emit(R.astype(a, "float32")) for a in args]
        return R.astype(ctx.emit(R.mod(*wide)), ctx.dtype(dtype))
    return BINARY[node.op](*args)


@lowers("reciprocal")
def reciprocal(ctx, node, args):
    return R.divide(ctx.const(1, node.inputs[0].type.dtype), args[0])


@lowers("gelu")
def gelu(ctx, node, args):
    tanh = node.attrs["approximate"] == "tanh"
    if not ctx.options.fast_math:
        return R.nn.gelu_tanh(args[0]) if tanh else R.nn.gelu(args[0])
    x, dtype = args[0], node.inputs[0].type.dtype
    if tanh:  # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
        cube = ctx.emit(R.multiply(x, ctx.emit(R.multiply(x, x))))
        inner = R.multiply(ctx.emit(R.add(x, ctx.emit(R.multiply(cube, ctx.const(0.044715, dtype))))),
                           ctx.const(math.sqrt(2 / math.pi), dtype))
        curve = fast_or_exact(ctx, "tanh", ctx.emit(inner), dtype)
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        curve = fast_or_exact(ctx, "erf", ctx.emit(R.multiply(x, ctx.const(1 / math.sqrt(2), dtype))), dtype)
    half = ctx.emit(R.multiply(x, ctx.const(0.5, dtype)))
    return R.multiply(half, ctx.emit(R.add(ctx.emit(curve), ctx.const(1.0, dtype))))


@lowers("leaky_relu")
def leaky_relu(ctx, node, args):
    return R.nn.leakyrelu(args[0], node.attrs["alpha"])


@lowers("clip")
def clip(ctx, node, args):
    """max(min(x, hi), lo); an infinite bound is no bound, integer bounds truncate like the reference."""
    x, dtype = args[0], node.inputs[0].type.dtype
    for key, fn in (("max", R.minimum), ("min", R.maximum)):
        bound = node.attrs[key]
        if math.isinf(bound):
            continue
        x = fn(x, ctx.const(bound if dtype.is_float else math.trunc(bound), dtype))
    return x


@lowers("cast")
def cast(ctx, node, args):
    """Conversion; to bool means "is non-zero" (a plain truncating conversion would map 0.5 to False)."""
    src, dst = node.inputs[0].type.dtype, node.attrs["dtype"]
    if dst == DType.bool and src != DType.bool:
        return R.not_equal(args[0], ctx.const(0, src))
    return R.astype(args[0], ctx.dtype(dst))


@lowers("where")
def where(ctx, node, args):
    return R.where(*args)
