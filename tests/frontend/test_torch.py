"""The torch.export frontend against torch eager: the built-in zoo, dynamic sequence lengths,
module origins, single ATen ops with tricky semantics, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch
from torch import nn

from llmc import examples
from llmc.errors import InputError, UnsupportedOpError
from llmc.frontend.torch import from_torch
from llmc.ir import run, sym
from llmc.testing import assert_close


def eager(model, *inputs, key=None):
    with torch.no_grad():
        out = model(*inputs)
    return (out[key] if key else out).numpy()


@pytest.fixture(scope="session")
def llama():
    """The tiny Llama, captured once with a dynamic sequence length."""
    model, (ids,) = examples.tiny_llama()
    return model, ids, from_torch(model, (ids,), dynamic={"input_ids": {1: "seq"}})


@pytest.fixture(scope="session")
def gpt2():
    model, (ids,) = examples.tiny_gpt2()
    return model, ids, from_torch(model, (ids,), dynamic={"input_ids": {1: "seq"}})


@pytest.fixture(scope="session")
def cnn():
    model, (x,) = examples.small_cnn()
    return model, x, from_torch(model, (x,))


# -- the zoo ----------------------------------------------------------------------------------


@pytest.mark.parametrize("zoo", ["llama", "gpt2"])
def test_causal_lms_match_torch(zoo, request):
    model, ids, graph = request.getfixturevalue(zoo)
    graph.verify()
    assert [v.name for v in graph.inputs] == ["input_ids"]
    assert [v.name for v in graph.outputs] == ["logits"]
    assert_close(run(graph, {"input_ids": ids.numpy()})["logits"], eager(model, ids, key="logits"))


@pytest.mark.parametrize("zoo", ["llama", "gpt2"])
@pytest.mark.parametrize("length", [7, 23])
def test_dynamic_sequence_length(zoo, length, request):
    model, _, graph = request.getfixturevalue(zoo)
    assert graph.inputs[0].type.shape == (1, sym("seq"))
    assert graph.outputs[0].type.shape == (1, sym("seq"), 256)
    ids = torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(length))
    assert_close(run(graph, {"input_ids": ids.numpy()})["logits"], eager(model, ids, key="logits"))


def test_llama_keeps_high_level_ops(llama):
    ops = llama[2].op_histogram()
    assert ops["linear"] == 15 and ops["attention"] == 2 and ops["silu"] == 2 and ops["embedding"] == 1
    assert "matmul" not in ops and "softmax" not in ops
    assert ops["rsqrt"] == 5  # RMSNorm stays decomposed here; canonicalize raises it


def test_origins_and_layers(llama):
    graph = llama[2]
    down = [n for n in graph.nodes if n.op == "linear" and n.meta.origin.endswith("layers.1.mlp.down_proj")]
    assert len(down) == 1 and down[0].meta.origin == "model.layers.1.mlp.down_proj" and down[0].meta.layer == 1
    assert down[0].inputs[1].name == "model.layers.1.mlp.down_proj.weight"
    attention = [n for n in graph.nodes if n.op == "attention"]
    assert [(n.meta.origin, n.meta.layer) for n in attention] == [
        ("model.layers.0.self_attn", 0), ("model.layers.1.self_attn", 1)]
    head = next(n for n in graph.nodes if n.meta.origin == "lm_head")
    assert head.op == "linear" and head.meta.layer is None


def test_minilm_real_weights():
    model, (ids, mask) = examples.minilm()
    graph = from_torch(model, (ids, mask))
    assert [v.name for v in graph.inputs] == ["input_ids", "attention_mask"]
    assert [v.name for v in graph.outputs] == ["last_hidden_state", "pooler_output"]
    ours = run(graph, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    assert_close(ours["last_hidden_state"], eager(model, ids, mask, key="last_hidden_state"))
    assert graph.op_histogram()["layer_norm"] == 13 and graph.op_histogram()["gelu"] == 6


def test_small_cnn(cnn):
    model, x, graph = cnn
    assert_close(run(graph, {"x": x.numpy()})["output"], eager(model, x))
    assert {"conv2d", "batch_norm", "relu", "max_pool2d", "reduce_mean", "linear"} <= set(graph.op_histogram())
    assert [n.meta.origin for n in graph.nodes if n.op == "conv2d"] == ["features.0", "features.4"]


def test_exported_program_with_named_dynamic_batch():
    model, (x,) = examples.small_cnn()
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("b", max=64)}}, strict=False)
    graph = from_torch(ep, dynamic={"x": {0: "batch"}})
    assert graph.inputs[0].type.shape == (sym("batch"), 3, 32, 32)
    x3 = torch.randn(3, 3, 32, 32)
    assert_close(run(graph, {"x": x3.numpy()})["output"], eager(model, x3))


class Halves(nn.Module):
    def forward(self, x):
        n = x.shape[1]
        positions = torch.arange(n // 2 + 1, dtype=torch.float32) * 0.5
        return x[:, : n // 2] * 2, torch.cat([x, x[:, :1]], dim=1).sum(1), positions, x.new_zeros(n, 2) + n


def test_size_arithmetic_folds_into_symbolic_attributes():
    graph = from_torch(Halves(), (torch.randn(2, 10),), dynamic={"x": {1: "seq"}})
    seq = sym("seq")
    first = next(n for n in graph.nodes if n.op == "slice")
    assert first.attrs["ends"] == (sympy.floor(seq / 2),)
    assert next(n for n in graph.nodes if n.op == "arange").attrs["end"] == sympy.floor(seq / 2) + 1
    for length in (7, 12):
        x = torch.randn(2, length)
        for got, want in zip(run(graph, {"x": x.numpy()}).values(), Halves()(x)):
            assert_close(got, want.numpy(), 1e-6)


# -- single ops whose torch semantics are easy to get wrong -------------------------------------


class Indexing(nn.Module):
    def forward(self, x, idx):
        pairs = x[idx[:, None], idx[None, :]]  # two broadcast index tensors
        apart = x[idx, :, idx]  # non-adjacent: the index dims go first
        picked = torch.gather(x, 2, idx.abs().view(1, 1, -1).expand(3, 2, -1))
        return pairs, apart, picked, x[:, -1], x.index_select(1, idx[:2])


class Arithmetic(nn.Module):
    def forward(self, x, n):
        r = torch.remainder(x, -1.5) + torch.fmod(x, 1.5) + torch.div(x, 0.7, rounding_mode="trunc")
        q = torch.div(n, 3, rounding_mode="floor") + n // -2 + (n > 2).sum(-1, keepdim=True)
        m = x.masked_fill(x > 0.5, -1.0).clamp(-0.8, 0.9) + torch.where(n > 0, x, 2.0)
        return r, q, m, torch.cumsum(n, 1), x.amax(1), x.argmax(-1), x.max(dim=0).values, n / 2


class Shapes(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, dim=-1)
        t = torch.cat([a.repeat(1, 2, 1), b.repeat(1, 2, 2)], dim=2)
        p = nn.functional.pad(x, (1, 2, 0, 1), value=-3.0)
        u = x.unsqueeze(1).squeeze(1).flatten(1).unflatten(1, (2, -1))
        return t, p, u, torch.triu(x[0], 1), torch.tril(x[0]), x.transpose(0, 2).contiguous()


class Attention(nn.Module):
    def forward(self, q, k, v, mask):
        causal = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        masked = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
        gqa = nn.functional.scaled_dot_product_attention(q, k[:, :2], v[:, :2], enable_gqa=True)
        return causal, masked, gqa


class Products(nn.Module):
    def forward(self, a, b, c):
        scaled = torch.addmm(c[0], a[0], b[0], beta=0.5, alpha=2.0)
        pieces = torch.split(a, [1, 2], 1)[1], a.unbind(1)[2]
        return scaled, torch.baddbmm(c, a, b), torch.bmm(a, b), a[0] @ b[0], *pieces


_INT = torch.tensor([[0, 3, -2, 5], [4, 1, 2, 7]])
_CASES = {
    "indexing": (Indexing(), (torch.randn(3, 3, 4), torch.tensor([2, 0, -1]))),
    "arithmetic": (Arithmetic(), (torch.randn(2, 4), _INT)),
    "shapes": (Shapes(), (torch.randn(2, 3, 4),)),
    "products": (Products(), (torch.randn(2, 3, 4), torch.randn(2, 4, 3), torch.randn(2, 3, 3))),
    # 3 queries against 5 keys: torch's is_causal aligns top-left, unlike llmc's causal
    "attention": (Attention(), (torch.randn(1, 4, 3, 8), torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8),
                                torch.randn(1, 1, 3, 5) > 0)),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_ops_match_torch(case):
    torch.manual_seed(0)
    model, inputs = _CASES[case]
    graph = from_torch(model, inputs)
    ours = run(graph, {v.name: x.numpy() for v, x in zip(graph.inputs, inputs)})
    with torch.no_grad():
        expected = model(*inputs)
    assert len(ours) == len(expected)
    for got, want in zip(ours.values(), expected):
        assert got.dtype == want.numpy().dtype
        assert_close(got, want.numpy(), 1e-6)


# -- errors -----------------------------------------------------------------------------------


class Sorting(nn.Module):
    def forward(self, x):
        return torch.sort(x).values


class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()


class TwoUnsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.sorter = nn.ModuleList([Sorting(), Sorting()])
        self.spectrum = Spectrum()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return self.sorter[0](self.proj(x)) + self.sorter[1](x) + self.spectrum(x)[..., :1]


def test_unsupported_ops_are_all_listed_with_module_paths():
    with pytest.raises(UnsupportedOpError) as info:
        from_torch(TwoUnsupported(), (torch.randn(2, 8),))
    listed = info.value.unsupported
    assert listed["aten.sort.default"] == ["sorter.0", "sorter.1"]
    assert listed["aten._fft_r2c.default"] == ["spectrum"]
    assert "sorter.0" in str(info.value) and "spectrum" in str(info.value)


def test_unknown_dynamic_input_is_refused():
    model, (x,) = examples.small_cnn()
    with pytest.raises(InputError, match="images"):
        from_torch(model, (x,), dynamic={"images": {0: "batch"}})


def test_input_shape_mismatch_when_running(cnn, llama):
    with pytest.raises(InputError, match="axis 2"):
        run(cnn[2], {"x": np.zeros((2, 3, 16, 32), np.float32)})
    with pytest.raises(InputError, match="rank"):
        run(llama[2], {"input_ids": np.zeros((1, 4, 2), np.int64)})
    with pytest.raises(InputError, match="dtype"):
        run(llama[2], {"input_ids": np.zeros((1, 4), np.int32)})
