"""Layers: normalizations, 2-D convolution and pooling, scaled dot-product attention."""

from __future__ import annotations

from llmc.frontend.torch.emitter import Emitter, NotConvertible
from llmc.frontend.torch.ops import aten
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else v


def _pads(padding) -> tuple[int, int, int, int]:
    """torch's symmetric (ph, pw) as llmc's (top, left, bottom, right)."""
    ph, pw = _pair(padding)
    return (ph, pw, ph, pw)


def _ones_or(cx: Emitter, v, shape, value: float):
    return v if v is not None else cx.call("full", shape=shape, value=value, dtype=cx.out_dtype)


# -- normalization ----------------------------------------------------------------------------


@aten("layer_norm.default")
def layer_norm(cx: Emitter, input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    args = [input]
    if weight is not None or bias is not None:
        args.append(_ones_or(cx, weight, normalized_shape, 1.0))
    if bias is not None:
        args.append(bias)
    return cx.call("layer_norm", *args, axis=-len(normalized_shape), eps=eps)


def _batch_norm(cx: Emitter, x, weight, bias, mean, var, eps):
    channels = (x.type.shape[1],)
    scale, shift = _ones_or(cx, weight, channels, 1.0), _ones_or(cx, bias, channels, 0.0)
    return cx.call("batch_norm", x, scale, shift, mean, var, eps=eps)


@aten("_native_batch_norm_legit_no_training.default")
def native_batch_norm(cx: Emitter, input, weight, bias, running_mean, running_var, momentum, eps):
    """Inference batch norm; the saved statistics (outputs 1 and 2) exist only for training."""
    return _batch_norm(cx, input, weight, bias, running_mean, running_var, eps), None, None


@aten("batch_norm.default")
def batch_norm(cx: Emitter, input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    if training or running_mean is None:
        raise NotConvertible("batch norm in training mode (call model.eval())")
    return _batch_norm(cx, input, weight, bias, running_mean, running_var, eps)


# -- convolution and pooling ------------------------------------------------------------------


def _same_padding(weight, dilation) -> tuple[int, int, int, int]:
    """padding='same' at stride 1: the extra pixel of an odd total goes bottom/right, as in torch."""
    total = [d * (k - 1) for d, k in zip(dilation, weight.type.shape[2:])]
    return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)


@aten("conv2d.default", "conv2d.padding")
def conv2d(cx: Emitter, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    dilation = _pair(dilation)
    if padding == "same":
        pads = _same_padding(weight, dilation)
    else:
        pads = (0, 0, 0, 0) if padding == "valid" else _pads(padding)
    args = (input, weight) if bias is None else (input, weight, bias)
    return cx.call("conv2d", *args, stride=_pair(stride), padding=pads, dilation=dilation, groups=groups)


@aten("convolution.default")
def convolution(cx: Emitter, input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    if transposed or input.type.rank != 4:
        raise NotConvertible("transposed convolution" if transposed else f"{input.type.rank - 2}-D convolution")
    return conv2d(cx, input, weight, bias, stride, padding, dilation, groups)


@aten("max_pool2d.default", "max_pool2d_with_indices.default")
def max_pool2d(cx: Emitter, self, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    out = cx.call("max_pool2d", self, kernel=_pair(kernel_size), stride=_pair(stride or kernel_size),
                  padding=_pads(padding), dilation=_pair(dilation), ceil_mode=ceil_mode)
    return (out, None) if len(cx.expected) == 2 else out


@aten("avg_pool2d.default")
def avg_pool2d(cx: Emitter, self, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    if divisor_override is not None:
        raise NotConvertible("avg_pool2d with divisor_override")
    return cx.call("avg_pool2d", self, kernel=_pair(kernel_size), stride=_pair(stride or kernel_size),
                   padding=_pads(padding), ceil_mode=ceil_mode, count_include_pad=count_include_pad)


@aten("adaptive_avg_pool2d.default", "_adaptive_avg_pool2d.default")
def adaptive_avg_pool2d(cx: Emitter, self, output_size):
    out_hw = _pair(output_size)
    if out_hw == (1, 1):
        return cx.call("reduce_mean", self, axes=(2, 3), keepdims=True)
    in_hw = self.type.shape[2:]
    if not all(isinstance(i, int) and isinstance(o, int) and i % o == 0 for i, o in zip(in_hw, out_hw)):
        raise NotConvertible(f"adaptive pooling of {S.shape_str(in_hw)} to {out_hw} (windows of unequal size)")
    kernel = tuple(i // o for i, o in zip(in_hw, out_hw))
    return cx.call("avg_pool2d", self, kernel=kernel, stride=kernel)


# -- attention --------------------------------------------------------------------------------


@aten("scaled_dot_product_attention.default")
def scaled_dot_product_attention(cx: Emitter, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """``attention``; grouped-query heads map as in torch (query head h reads kv head h // group).

    torch's ``is_causal`` aligns the causal mask top-left; llmc's ``causal`` aligns it
    bottom-right (for KV caches). They agree when queries and keys are equally long; otherwise
    the top-left mask is built explicitly.
    """
    if dropout_p > 0:
        raise NotConvertible("attention dropout (call model.eval())")
    rank = query.type.rank
    if rank not in (3, 4):
        raise NotConvertible(f"attention on rank-{rank} tensors")
    if rank == 3:
        query, key, value = (cx.reshape(t, (1, *t.type.shape)) for t in (query, key, value))
    s, t = query.type.shape[2], key.type.shape[2]
    causal = bool(is_causal) and S.same(s, t)
    if is_causal and not causal:
        attn_mask = cx.call("trilu", cx.call("full", shape=(s, t), value=1.0, dtype=DType.bool), upper=False)
    args = [query, key, value]
    if attn_mask is not None:
        args.append(attn_mask if attn_mask.type.dtype == DType.bool else cx.cast(attn_mask, query.type.dtype))
    out = cx.call("attention", *args, causal=causal, scale=0.0 if scale is None else scale)
    return cx.reshape(out, out.type.shape[1:]) if rank == 3 else out
