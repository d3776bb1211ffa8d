"""Kernel table entries of the CNN/MLP ops: dense, conv2d, pooling, mean, relu, elementwise, data movement.

Numerics (codes at ``f`` fractional bits, see ``llmc.targets.fpga.fixed``):

    linear/conv2d  acc = bias << (fx + fw - fb) + sum x * w   (exact), y = cast(acc, fx + fw)
    relu           y = cast(max(x, 0))
    max_pool2d     y = cast(max over the window's positions inside the input)
    avg_pool2d     y = cast(sum * inv[count]),  inv[c] = code of 1/c in ufixed<24,1>
    reduce_mean    y = cast(sum * inv),         inv = code of 1/n in ufixed<24,1>
    add/sub        y = cast(a << (f - fa) +/- b << (f - fb)),  f = max(fa, fb)
    mul            y = cast(a * b) at fa + fb
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from llmc.ir.graph import Node
from llmc.targets.fpga.fixed import Fixed
from llmc.targets.fpga.kernels import (
    Arg,
    Call,
    act,
    broadcast_strides,
    code_type,
    kernel,
    numel,
    shape,
    strides,
    unary_config,
)
from llmc.targets.fpga.precision import Precision

INV_TYPE = Fixed(24, 1, signed=False)
MAX_RANK = 6


def inv_codes(counts: range) -> list[int]:
    """Codes of 1/c in ``INV_TYPE`` (0 for c = 0)."""
    return [int(INV_TYPE.quantize(1.0 / c)) if c else 0 for c in counts]


def _bias(node: Node, args, P: Precision, frac: int):
    if len(node.inputs) < 3:
        return 0
    return args[2].astype(np.int64) << np.int64(frac - P.of(node.inputs[2]).frac)


def _product_types(node: Node, P: Precision) -> dict:
    x, w = node.inputs[0], node.inputs[1]
    types = {"in_t": P.of(x), "out_t": P.of(node.output), "weight_t": P.of(w), "accum_t": P.accum[node.name],
             "wcode_t": code_type(P.of(w))}
    bias = P.of(node.inputs[2]) if len(node.inputs) > 2 else Fixed(8, 8)
    types.update(bias_t=bias, bcode_t=code_type(bias))
    return types


def _weight_args(node: Node) -> list[Arg]:
    return [Arg("code", node.inputs[1].name), Arg("code", node.inputs[2].name) if len(node.inputs) > 2 else Arg("none")]


@kernel("linear", check=lambda n: None if n.inputs[1].const is not None else "its weight is not a constant")
class Linear:
    @staticmethod
    def emulate(node, args, P):
        x, w = args[0], args[1]
        frac = P.of(node.inputs[0]).frac + P.of(node.inputs[1]).frac
        acc = np.matmul(x, w.T) + _bias(node, args, P, frac)
        return [P.of(node.output).cast(acc, frac)]

    @staticmethod
    def calls(node, P):
        x, w, y = node.inputs[0], node.inputs[1], node.output
        n_out, n_in = shape(w)
        rows = numel(x) // n_in
        ints = {"rows": rows, "n_in": n_in, "n_out": n_out, "reuse": 1, "n_mult": n_in * n_out,
                "has_bias": len(node.inputs) > 2, "offchip": False}
        return [Call("dense", "llmc_dense.h", _product_types(node, P), ints, [act(x), Arg("act", y.name), *_weight_args(node)],
                     macs=rows * n_in * n_out, reduce=n_in, outputs=numel(y), weights=[v.name for v in node.inputs[1:]])]


def _windows(x: np.ndarray, kernel, stride, dilation, pads, fill, out_hw):
    """Windows [N, C, OH, OW, KH, KW] of x padded by ``pads`` (top, left, bottom, right) with ``fill``."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh, ow = out_hw
    need_h = (oh - 1) * sh + (kh - 1) * dh + 1
    need_w = (ow - 1) * sw + (kw - 1) * dw + 1
    top, left = pads[0], pads[1]
    bottom = max(need_h - x.shape[2] - top, 0)
    right = max(need_w - x.shape[3] - left, 0)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    view = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return view[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]


def _window_ints(node: Node) -> dict:
    a = node.attrs
    x, y = shape(node.inputs[0]), shape(node.output)
    k = a["kernel"] if "kernel" in a else shape(node.inputs[1])[2:]
    pads = a["padding"]
    return {"h_in": x[2], "w_in": x[3], "h_out": y[2], "w_out": y[3], "k_h": k[0], "k_w": k[1],
            "stride_h": a["stride"][0], "stride_w": a["stride"][1], "pad_top": pads[0], "pad_left": pads[1],
            "pad_bottom": pads[2], "pad_right": pads[3], "dil_h": a["dilation"][0], "dil_w": a["dilation"][1]}


@kernel("conv2d", check=lambda n: None if n.inputs[1].const is not None else "its weight is not a constant")
class Conv2d:
    @staticmethod
    def emulate(node, args, P):
        x, w = args[0], args[1]
        a, g = node.attrs, node.attrs["groups"]
        frac = P.of(node.inputs[0]).frac + P.of(node.inputs[1]).frac
        out_hw = shape(node.output)[2:]
        win = _windows(x, w.shape[2:], a["stride"], a["dilation"], a["padding"], 0, out_hw)
        cig, cog = x.shape[1] // g, w.shape[0] // g
        parts = [np.einsum("nchwij,ocij->nohw", win[:, i * cig:(i + 1) * cig], w[i * cog:(i + 1) * cog], dtype=np.int64)
                 for i in range(g)]
        acc = np.concatenate(parts, axis=1)
        if len(node.inputs) > 2:
            acc = acc + _bias(node, args, P, frac).reshape(1, -1, 1, 1)
        return [P.of(node.output).cast(acc, frac)]

    @staticmethod
    def calls(node, P):
        x, w, y = node.inputs[0], node.inputs[1], node.output
        xs, ws = shape(x), shape(w)
        ints = {"batch": xs[0], "c_in": xs[1], "c_out": ws[0], **_window_ints(node), "groups": node.attrs["groups"],
                "reuse": 1, "has_bias": len(node.inputs) > 2}
        per_pixel = int(np.prod(ws))
        ints["n_mult"] = per_pixel
        pixels = numel(y) // ws[0]
        return [Call("conv2d", "llmc_conv2d.h", _product_types(node, P), ints, [act(x), Arg("act", y.name), *_weight_args(node)],
                     macs=pixels * per_pixel, reduce=int(np.prod(ws[1:])), outputs=numel(y), weights=[v.name for v in node.inputs[1:]])]


def _pool_check(node: Node) -> str | None:
    return None if len(node.inputs[0].type.shape) == 4 else "only 2-D pooling of NCHW tensors is supported"


@kernel("max_pool2d", check=_pool_check)
class MaxPool:
    @staticmethod
    def emulate(node, args, P):
        a = node.attrs
        low = np.iinfo(np.int64).min
        win = _windows(args[0], a["kernel"], a["stride"], a["dilation"], a["padding"], low, shape(node.output)[2:])
        return [P.of(node.output).cast(win.max(axis=(4, 5)), P.of(node.inputs[0]).frac)]

    @staticmethod
    def calls(node, P):
        x, y = node.inputs[0], node.output
        ints = {"batch": shape(x)[0], "channels": shape(x)[1], **_window_ints(node)}
        return [Call("max_pool2d", "llmc_pool.h", {"in_t": P.of(x), "out_t": P.of(y)}, ints, [act(x), Arg("act", y.name)],
                     outputs=numel(y))]


def _accum_of(t: Fixed, terms: int) -> Fixed:
    growth = int(np.ceil(np.log2(max(terms, 2))))
    return Fixed(t.width + growth, t.integer + growth, True, "TRN", "WRAP")


@kernel("avg_pool2d", check=_pool_check)
class AvgPool:
    @staticmethod
    def emulate(node, args, P):
        a, x = node.attrs, args[0]
        out_hw = shape(node.output)[2:]
        win = _windows(x, a["kernel"], a["stride"], a["dilation"], a["padding"], 0, out_hw)
        total = win.sum(axis=(4, 5), dtype=np.int64)
        counts = AvgPool.counts(node, x.shape)
        inv = np.asarray(inv_codes(range(int(np.prod(a["kernel"])) + 1)), np.int64)[counts]
        return [P.of(node.output).cast(total * inv, P.of(node.inputs[0]).frac + INV_TYPE.frac)]

    @staticmethod
    def counts(node, xshape) -> np.ndarray:
        """Positions counted per output [OH, OW]: inside the input, or inside the padded extent with count_include_pad."""
        a, ints = node.attrs, _window_ints(node)
        ones = np.ones((1, 1, *xshape[2:]), np.int64)
        inside = _windows(ones, a["kernel"], a["stride"], a["dilation"], a["padding"], 0, shape(node.output)[2:])
        if not a["count_include_pad"]:
            return inside.sum(axis=(4, 5))[0, 0]
        h, w = xshape[2] + ints["pad_top"] + ints["pad_bottom"], xshape[3] + ints["pad_left"] + ints["pad_right"]
        extent = np.ones((1, 1, h, w), np.int64)
        return _windows(extent, a["kernel"], a["stride"], a["dilation"], (0, 0, 0, 0), 0, shape(node.output)[2:]).sum(axis=(4, 5))[0, 0]

    @staticmethod
    def calls(node, P):
        x, y = node.inputs[0], node.output
        k = int(np.prod(node.attrs["kernel"]))
        ints = {"batch": shape(x)[0], "channels": shape(x)[1], **_window_ints(node),
                "count_pad": node.attrs["count_include_pad"], "inv": inv_codes(range(k + 1))}
        types = {"in_t": P.of(x), "out_t": P.of(y), "accum_t": _accum_of(P.of(x), k), "inv_t": INV_TYPE}
        return [Call("avg_pool2d", "llmc_pool.h", types, ints, [act(x), Arg("act", y.name)], macs=numel(y),
                     reduce=k, outputs=numel(y))]


def _mean_view(node: Node) -> tuple[int, int, int] | None:
    dims = shape(node.inputs[0])
    axes = sorted(a % len(dims) for a in node.attrs["axes"]) or list(range(len(dims)))
    if axes != list(range(axes[0], axes[-1] + 1)):
        return None
    return (int(np.prod(dims[: axes[0]])), int(np.prod(dims[axes[0]: axes[-1] + 1])), int(np.prod(dims[axes[-1] + 1:])))


@kernel("reduce_mean", check=lambda n: None if _mean_view(n) else "its axes are not contiguous")
class Mean:
    @staticmethod
    def emulate(node, args, P):
        outer, reduce, inner = _mean_view(node)
        total = args[0].reshape(outer, reduce, inner).sum(axis=1, dtype=np.int64)
        out = P.of(node.output).cast(total * inv_codes(range(reduce, reduce + 1))[0], P.of(node.inputs[0]).frac + INV_TYPE.frac)
        return [out.reshape(shape(node.output))]

    @staticmethod
    def calls(node, P):
        outer, reduce, inner = _mean_view(node)
        x, y = node.inputs[0], node.output
        types = {"in_t": P.of(x), "out_t": P.of(y), "accum_t": _accum_of(P.of(x), reduce), "inv_t": INV_TYPE}
        ints = {"outer": outer, "reduce": reduce, "inner": inner, "inv_code": inv_codes(range(reduce, reduce + 1))[0]}
        return [Call("mean", "llmc_pool.h", types, ints, [act(x), Arg("act", y.name)], macs=numel(y), reduce=reduce,
                     outputs=numel(y))]


@kernel("relu")
class Relu:
    @staticmethod
    def emulate(node, args, P):
        return [P.of(node.output).cast(np.maximum(args[0], 0), P.of(node.inputs[0]).frac)]

    @staticmethod
    def calls(node, P):
        return [unary_config(node, P, "relu")]


@kernel("reshape", "flatten", "squeeze", "unsqueeze")
class Reshape:
    """A reshape renames the array (same type) or, with an overridden type, casts it."""

    @staticmethod
    def emulate(node, args, P):
        return [P.of(node.output).cast(args[0], P.of(node.inputs[0]).frac).reshape(shape(node.output))]

    @staticmethod
    def calls(node, P):
        if P.of(node.inputs[0]) == P.of(node.output) and node.inputs[0].const is None:
            return [Call("alias", "", {}, {}, [act(node.inputs[0]), Arg("act", node.output.name)])]
        return [unary_config(node, P, "cast")]


_BINARY = {"add": 0, "sub": 1, "mul": 2, "maximum": 3, "minimum": 4}


def _rank_check(node: Node) -> str | None:
    return None if len(node.output.type.shape) <= MAX_RANK else f"tensors of rank > {MAX_RANK} are not supported"


@kernel(*_BINARY, check=_rank_check)
class Binary:
    @staticmethod
    def emulate(node, args, P):
        (a, b), (ta, tb) = args, (P.of(v) for v in node.inputs)
        out = P.of(node.output)
        if node.op in ("and", "or"):
            return [((a != 0) & (b != 0) if node.op == "and" else (a != 0) | (b != 0)).astype(np.int64)]
        if node.op == "mul":
            return [out.cast(a * b, ta.frac + tb.frac)]
        f = max(ta.frac, tb.frac)
        a, b = a << np.int64(f - ta.frac), b << np.int64(f - tb.frac)
        result = {"add": np.add, "sub": np.subtract, "maximum": np.maximum, "minimum": np.minimum}[node.op](a, b)
        return [out.cast(result, f)]

    @staticmethod
    def calls(node, P):
        a, b, y = *node.inputs, node.output
        dims = shape(y)
        types = {"a_t": P.of(a), "b_t": P.of(b), "out_t": P.of(y)}
        ints = {"rank": len(dims) or 1, "shape": dims or [1], "a_stride": broadcast_strides(shape(a), dims) or [0],
                "b_stride": broadcast_strides(shape(b), dims) or [0], "a_offset": 0, "b_offset": 0, "op": _BINARY[node.op]}
        macs = numel(y) if node.op == "mul" else 0
        return [Call("binary", "llmc_eltwise.h", types, ints, [act(a), act(b), Arg("act", y.name)], macs=macs, outputs=numel(y))]


def _copy_call(x, y, P, dims, in_stride, in_offset, out_stride, out_offset) -> Call:
    ints = {"rank": len(dims), "shape": dims, "in_stride": in_stride, "in_offset": in_offset,
            "out_stride": out_stride, "out_offset": out_offset}
    return Call("gather_copy", "llmc_eltwise.h", {"in_t": P.of(x), "out_t": P.of(y)}, ints, [act(x), Arg("act", y.name)],
                outputs=int(np.prod(dims)))


@kernel("transpose", check=_rank_check)
class Transpose:
    @staticmethod
    def emulate(node, args, P):
        return [P.of(node.output).cast(np.transpose(args[0], node.attrs["perm"]), P.of(node.inputs[0]).frac)]

    @staticmethod
    def calls(node, P):
        x, y = node.inputs[0], node.output
        own = strides(shape(x))
        return [_copy_call(x, y, P, shape(y), [own[p] for p in node.attrs["perm"]], 0, strides(shape(y)), 0)]


@kernel("concat", check=_rank_check)
class Concat:
    @staticmethod
    def emulate(node, args, P):
        out = P.of(node.output)
        return [np.concatenate([out.cast(a, P.of(v).frac) for a, v in zip(args, node.inputs)], axis=node.attrs["axis"])]

    @staticmethod
    def calls(node, P):
        y = node.output
        axis = node.attrs["axis"] % len(shape(y))
        out_strides, offset, calls = strides(shape(y)), 0, []
        for x in node.inputs:
            calls.append(_copy_call(x, y, P, shape(x), strides(shape(x)), 0, out_strides, offset * out_strides[axis]))
            offset += shape(x)[axis]
        return calls


@kernel("slice", check=_rank_check)
class Slice:
    @staticmethod
    def emulate(node, args, P):
        index = [slice(None)] * args[0].ndim
        a = node.attrs
        for i, axis in enumerate(a["axes"]):
            step = a["steps"][i] if a["steps"] else 1
            index[axis] = slice(a["starts"][i], a["ends"][i], step)
        return [P.of(node.output).cast(args[0][tuple(index)], P.of(node.inputs[0]).frac)]

    @staticmethod
    def calls(node, P):
        x, y = node.inputs[0], node.output
        dims, own, a = shape(x), strides(shape(x)), node.attrs
        in_stride, offset = list(own), 0
        for i, axis in enumerate(a["axes"]):
            axis %= len(dims)
            step = a["steps"][i] if a["steps"] else 1
            start = range(dims[axis])[slice(a["starts"][i], a["ends"][i], step)].start
            offset += start * own[axis]
            in_stride[axis] = own[axis] * step
        return [_copy_call(x, y, P, shape(y), in_stride, offset, strides(shape(y)), 0)]
