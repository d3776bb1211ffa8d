"""Every op's numpy reference against torch, the independent oracle, on awkward cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmc.ir import DType, Graph, TensorType, run
from llmc.ir.ops import registry

from llmc.testing import assert_close

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def run_op(op, arrays, **attrs):
    g = Graph()
    ins = [g.add_input(f"i{k}", TensorType(DType.from_numpy(a.dtype), a.shape)) for k, a in enumerate(arrays)]
    out = g.call(op, *ins, **attrs)
    g.outputs = list(out) if isinstance(out, tuple) else [out]
    g.verify()
    res = run(g, {f"i{k}": a for k, a in enumerate(arrays)})
    return [res[v.name] for v in g.outputs] if len(g.outputs) > 1 else res[g.outputs[0].name]


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_every_op_is_documented_and_costed():
    for name in registry.names():
        opdef = registry.get(name)
        assert opdef.doc, f"{name} has no doc"
        assert opdef.kind != "other", f"{name} has no kind"


@pytest.mark.parametrize("causal", [False, True])
def test_attention_grouped_query_with_kv_cache_offset(causal):
    q, k, v = randn(2, 4, 3, 8), randn(2, 2, 5, 8), randn(2, 2, 5, 6)
    mask = rng.random((2, 1, 3, 5)) > 0.2
    mask[..., -1] = True
    got = run_op("attention", [q, k, v, mask], causal=causal)
    kk, vv = (t(a).repeat_interleave(2, dim=1) for a in (k, v))
    m = t(mask)
    if causal:
        m = m & torch.ones(3, 5, dtype=torch.bool).tril(diagonal=2)
    assert_close(got, F.scaled_dot_product_attention(t(q), kk, vv, attn_mask=m).numpy())


def test_rope_matches_rotate_half_and_interleaved():
    x, cos, sin = randn(1, 2, 4, 8), randn(1, 1, 4, 8), randn(1, 1, 4, 8)
    half = np.concatenate([-x[..., 4:], x[..., :4]], -1)
    assert_close(run_op("rope", [x, cos, sin]), x * cos + half * sin)
    pairs = np.stack([-x[..., 1::2], x[..., 0::2]], -1).reshape(x.shape)
    assert_close(run_op("rope", [x, cos, sin], interleaved=True), x * cos + pairs * sin)


def test_norms():
    x, w, b = randn(2, 5, 16), randn(16), randn(16)
    assert_close(run_op("layer_norm", [x, w, b], eps=1e-5), F.layer_norm(t(x), (16,), t(w), t(b)).numpy())
    assert_close(run_op("rms_norm", [x, w], eps=1e-6), F.rms_norm(t(x), (16,), t(w), eps=1e-6).numpy())
    img, mean, var = randn(2, 3, 4, 4), randn(3), rng.random(3).astype(np.float32) + 0.5
    got = run_op("batch_norm", [img, w[:3], b[:3], mean, var], eps=1e-3)
    ref = F.batch_norm(t(img), t(mean), t(var), t(w[:3]), t(b[:3]), eps=1e-3)
    assert_close(got, ref.numpy())
    assert_close(run_op("lrn", [img], size=3, alpha=1e-2, beta=0.75, bias=2.0),
                 F.local_response_norm(t(img), 3, alpha=1e-2, beta=0.75, k=2.0).numpy())


@pytest.mark.parametrize("groups,stride,padding,dilation", [(1, 1, 1, 1), (2, 2, 0, 1), (4, 1, 2, 2), (1, 2, 3, 1)])
def test_conv2d(groups, stride, padding, dilation):
    x, w, b = randn(2, 4, 9, 11), randn(8, 4 // groups, 3, 3), randn(8)
    got = run_op("conv2d", [x, w, b], stride=(stride,) * 2, padding=(padding,) * 4, dilation=(dilation,) * 2, groups=groups)
    ref = F.conv2d(t(x), t(w), t(b), stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert_close(got, ref.numpy())


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pools(ceil_mode):
    x = randn(1, 2, 10, 9)
    attrs = dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1), ceil_mode=ceil_mode)
    assert_close(run_op("max_pool2d", [x], **attrs), F.max_pool2d(t(x), 3, 2, 1, ceil_mode=ceil_mode).numpy())
    for include in (False, True):
        ref = F.avg_pool2d(t(x), 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=include)
        assert_close(run_op("avg_pool2d", [x], count_include_pad=include, **attrs), ref.numpy())


def test_activations_and_softmax():
    x = randn(3, 7) * 3
    assert_close(run_op("gelu", [x]), F.gelu(t(x)).numpy())
    assert_close(run_op("gelu", [x], approximate="tanh"), F.gelu(t(x), approximate="tanh").numpy())
    assert_close(run_op("silu", [x]), F.silu(t(x)).numpy())
    assert_close(run_op("softmax", [x], axis=0), torch.softmax(t(x), 0).numpy())
    assert_close(run_op("log_softmax", [x]), torch.log_softmax(t(x), -1).numpy())


def test_shape_ops():
    x = randn(2, 6, 4)
    np.testing.assert_array_equal(run_op("slice", [x], axes=(1, 2), starts=(-4, 0), ends=(2**62, 4), steps=(2, 3)),
                                  x[:, -4::2, 0:4:3])
    a, b = run_op("split", [x], axis=1, sizes=(2, 4))
    np.testing.assert_array_equal(b, x[:, 2:])
    idx = np.array([[0, -1]], np.int64)
    np.testing.assert_array_equal(run_op("gather", [x, idx], axis=1), np.take(x, idx, axis=1, mode="wrap"))
    np.testing.assert_array_equal(run_op("expand", [x[:, :1]], shape=(3, -1, 5, 4)), np.broadcast_to(x[:, :1], (3, 2, 5, 4)))
    np.testing.assert_array_equal(run_op("trilu", [x], upper=False, k=1), np.tril(x, 1))


def test_quantize_dequantize_blocked():
    x = randn(4, 8)
    scale = (np.abs(x).reshape(4, 2, 4).max(-1) / 127).astype(np.float32)
    q = run_op("quantize", [x, scale], axis=1, dtype=DType.i8)
    back = run_op("dequantize", [q, scale], axis=1)
    assert q.dtype == np.int8
    assert np.abs(back - x).max() <= scale.max() / 2 + 1e-7
