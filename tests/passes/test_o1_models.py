"""-O1 on the zoo's real models: decomposed patterns become first-class ops, outputs still match.

torch.export of the tiny Llama writes RMSNorm and RoPE out in elementary ops (and repeats the
kv heads before SDPA); the ONNX exports of GPT-2, MiniLM and the tiny Llama write out GELU,
attention and (torchscript, opset 14) layer norm. After -O1 each is one node, and the graph
still matches torch / onnxruntime within 1e-4.
"""


import numpy as np
import pytest
from zoo import token_feeds

from llmc.examples import build
from llmc.ir import run
from llmc.passes import run_pipeline
from llmc.testing import assert_close

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

DECOMPOSED = {"pow", "rsqrt", "sqrt", "reduce_mean", "softmax", "erf", "tanh", "sigmoid", "neg"}


def raised(graph) -> dict[str, int]:
    ops = graph.op_histogram()
    assert not DECOMPOSED & set(ops), f"decomposed ops left: {DECOMPOSED & set(ops)}"
    return {op: ops[op] for op in ("attention", "gelu", "layer_norm", "rms_norm", "rope", "silu") if op in ops}


def kv_heads(graph) -> set:
    """The head counts of the k each attention node reads (the tiny Llama has 2 kv heads for 4 queries)."""
    return {n.inputs[1].type.shape[1] for n in graph.nodes if n.op == "attention"}


def ids(seq: int):
    return torch.from_numpy(np.random.default_rng(seq).integers(0, 256, (1, seq)))


# -- torch.export -------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamic", [None, {"input_ids": {1: "seq"}}], ids=["static", "dynamic"])
def test_tiny_llama_from_torch(dynamic):
    from llmc.frontend.torch import from_torch

    model, example = build("tiny-llama")
    graph, _ = run_pipeline(from_torch(model, example, dynamic=dynamic), "O1", verify=True)
    assert raised(graph) == {"attention": 2, "rms_norm": 5, "rope": 4, "silu": 2}
    assert kv_heads(graph) == {2}, "grouped-query attention reads k and v unrepeated"
    attention = [n for n in graph.nodes if n.op == "attention"]
    if dynamic is None:
        assert all(n.attrs["causal"] and len(n.inputs) == 3 for n in attention), "the constant mask became causal"
    assert {n.meta.layer for n in graph.nodes if n.op == "rms_norm"} == {0, 1, None}
    for seq in ((16,) if dynamic is None else (16, 7)):
        x = ids(seq)
        with torch.no_grad():
            expected = model(x, use_cache=False).logits.numpy()
        assert_close(run(graph, {"input_ids": x.numpy()})["logits"], expected)


# -- ONNX exports -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, exporter, expected", [
    ("tiny-gpt2", "dynamo", {"attention": 2, "gelu": 2, "layer_norm": 5}),
    ("minilm", "torchscript", {"attention": 6, "gelu": 6, "layer_norm": 13}),
    ("tiny-llama", "dynamo", {"attention": 2, "rms_norm": 5, "rope": 4, "silu": 2}),
])
def test_onnx_exports(onnx_export, name, exporter, expected):
    from llmc.frontend.onnx import from_onnx

    path = onnx_export(name, exporter)
    graph, _ = run_pipeline(from_onnx(path), "O1", verify=True)
    assert raised(graph) == expected
    assert kv_heads(graph) == {2 if name == "tiny-llama" else 4 if name == "tiny-gpt2" else 12}
    session = ort.InferenceSession(str(path))
    for seq in (16, 9):
        inputs = token_feeds(name, seq)
        (want,) = session.run(None, inputs)
        assert_close(run(graph, inputs)["out"], want)
