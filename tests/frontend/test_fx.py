"""The torch.fx frontend: symbolic_trace'd modules against torch eager."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmc import examples
from llmc.errors import InputError, UnsupportedOpError
from llmc.frontend.fx import from_fx
from llmc.ir import run
from llmc.testing import assert_close


def test_small_cnn_matches_torch():
    model, (x,) = examples.small_cnn()
    graph = from_fx(torch.fx.symbolic_trace(model), (x,))
    with torch.no_grad():
        expected = model(x).numpy()
    assert_close(run(graph, {"x": x.numpy()})["output"], expected)
    assert graph.op_histogram() == {"batch_norm": 2, "conv2d": 2, "max_pool2d": 2, "relu": 2, "linear": 1,
                                    "reduce_mean": 1, "reshape": 1}
    assert [n.meta.origin for n in graph.nodes if n.op in ("conv2d", "linear")] == [
        "features.0", "features.4", "classifier"]
    assert "features.1.running_var" in graph.constants


class Block(nn.Module):
    """Functions, methods, Python size arithmetic, tensor slicing and dict outputs."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.act = nn.Sequential(nn.GELU(approximate="tanh"), nn.Dropout(0.1))
        self.register_buffer("offset", torch.linspace(-1, 1, 6))

    def forward(self, x):
        h = self.act(self.norm(self.proj(x))) + self.offset
        h = F.softmax(h, dim=-1) * x.size(1)
        mid = h[:, 1:5].transpose(0, 1).contiguous().view(-1, 2)
        return {"mid": mid, "last": torch.flatten(h[None, ..., -1], 1), "mean": h.mean(-1)}


def test_functions_methods_and_slicing():
    model = Block().eval()
    x = torch.randn(3, 4)
    graph = from_fx(torch.fx.symbolic_trace(model), (x,))
    assert [v.name for v in graph.outputs] == ["mid", "last", "mean"]
    ours = run(graph, {"x": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    for name in expected:
        assert_close(ours[name], expected[name].numpy())


class Unusual(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 4)

    def forward(self, x):
        return torch.sort(self.rnn(x)[0]).values.cummax(0).values


def test_unsupported_calls_are_all_listed():
    with pytest.raises(UnsupportedOpError) as info:
        from_fx(torch.fx.symbolic_trace(Unusual()), (torch.randn(2, 3, 4),))
    listed = info.value.unsupported
    assert listed["torch.nn.modules.rnn.GRU"] == ["rnn"]
    assert "sort" in listed and "Tensor.cummax" in listed


def test_example_input_count_must_match():
    model, (x,) = examples.small_cnn()
    with pytest.raises(InputError, match="takes 1 inputs"):
        from_fx(torch.fx.symbolic_trace(model), (x, x))
