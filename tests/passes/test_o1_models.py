"""-O1 on the zoo's real models: decomposed patterns become first-class ops, outputs still match.

torch.export of the tiny Llama writes RMSNorm and RoPE out in elementary ops (and repeats the
kv heads before SDPA); the ONNX exports of GPT-2, MiniLM and the tiny Llama write out GELU,
attention and (torchscript, opset 14) layer norm. After -O1 each is one node, and the graph
still matches torch / onnxruntime within 1e-4.
"""

from pathlib import Path

import numpy as np
import pytest

from llmc.examples import build, minilm_inputs
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
    graph, log = run_pipeline(from_torch(model, example, dynamic=dynamic), "O1", verify=True)
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


def export(name: str, exporter: str, folder: Path) -> Path:
    model, inputs = build(name)
    names = ["input_ids", "attention_mask"][: len(inputs)]
    causal = name != "minilm"

    class FirstOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask=None):
            args = (input_ids,) if attention_mask is None else (input_ids, attention_mask)
            return self.m(*args, **({"use_cache": False} if causal else {}))[0]

    path = folder / f"{name}-{exporter}.onnx"
    with torch.no_grad():
        if exporter == "dynamo":
            seq = torch.export.Dim("seq", min=2, max=128)
            torch.onnx.export(FirstOutput().eval(), inputs, str(path), input_names=names, output_names=["out"],
                              dynamo=True, opset_version=18, dynamic_shapes={n: {1: seq} for n in names}, verbose=False)
        else:  # opset 14: layer norm written out as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add
            torch.onnx.export(FirstOutput().eval(), inputs, str(path), input_names=names, output_names=["out"],
                              dynamo=False, opset_version=14, dynamic_axes={n: {1: "seq"} for n in names})
    return path


def feeds(name: str, seq: int) -> dict:
    if name == "minilm":
        tokens, mask = minilm_inputs(seq=seq)
        return {"input_ids": tokens.numpy(), "attention_mask": mask.numpy()}
    return {"input_ids": ids(seq).numpy()}


@pytest.mark.parametrize("name, exporter, expected", [
    ("tiny-gpt2", "dynamo", {"attention": 2, "gelu": 2, "layer_norm": 5}),
    ("minilm", "torchscript", {"attention": 6, "gelu": 6, "layer_norm": 13}),
    ("tiny-llama", "dynamo", {"attention": 2, "rms_norm": 5, "rope": 4, "silu": 2}),
])
def test_onnx_exports(tmp_path, name, exporter, expected):
    from llmc.frontend.onnx import from_onnx

    path = export(name, exporter, tmp_path)
    graph, _ = run_pipeline(from_onnx(path), "O1", verify=True)
    assert raised(graph) == expected
    assert kv_heads(graph) == {2 if name == "tiny-llama" else 4 if name == "tiny-gpt2" else 12}
    session = ort.InferenceSession(str(path))
    for seq in (16, 9):
        inputs = feeds(name, seq)
        (want,) = session.run(None, inputs)
        assert_close(run(graph, inputs)["out"], want)
