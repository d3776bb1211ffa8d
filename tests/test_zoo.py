"""The whole flow on every zoo model and frontend: capture -> -O1 -> reference artifact ->
reload -> run, compared with the original framework (torch eager or onnxruntime) at 1e-4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llmc
from llmc.examples import build, minilm_folder
from llmc.testing import assert_close
from zoo import ZOO_CNNS, ort_outputs, randomized_zoo_model, token_feeds


def round_trip(model, tmp_path, **kw) -> llmc.Artifact:
    art = llmc.compile(model, target="reference", output=tmp_path / "art", opt_level="O1", verify=True, **kw)
    return llmc.load(art.path)


def torch_outputs(model, inputs) -> np.ndarray:
    with torch.no_grad():
        out = model(*inputs)
    return (out if isinstance(out, torch.Tensor) else out[0]).numpy()


def torch_feeds(art: llmc.Artifact, inputs) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in zip(art.input_names, inputs)}


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "minilm", "small-cnn"])
def test_examples_through_torch_export(name, tmp_path):
    model, inputs = build(name)
    art = round_trip(model, tmp_path, example_inputs=inputs)
    got = art.run(torch_feeds(art, inputs))[art.output_names[0]]
    assert_close(got, torch_outputs(model, inputs))


def test_small_cnn_through_fx(tmp_path):
    model, inputs = build("small-cnn")
    art = round_trip(torch.fx.symbolic_trace(model), tmp_path, example_inputs=inputs)
    assert_close(art.run(torch_feeds(art, inputs))[art.output_names[0]], torch_outputs(model, inputs))


def test_minilm_through_its_hugging_face_folder(tmp_path):
    model, inputs = build("minilm")
    shape = tuple(inputs[0].shape)
    art = round_trip(minilm_folder(), tmp_path, input_shapes={"input_ids": shape, "attention_mask": shape})
    assert art.input_names == ["input_ids", "attention_mask"]
    assert_close(art.run(torch_feeds(art, inputs))["last_hidden_state"], torch_outputs(model, inputs))


@pytest.mark.parametrize("name, exporter", [("tiny-llama", "dynamo"), ("tiny-gpt2", "dynamo"), ("minilm", "torchscript")])
def test_transformers_through_onnx(name, exporter, onnx_export, tmp_path):
    path = onnx_export(name, exporter)
    art = round_trip(path, tmp_path)
    for seq in (16, 5):  # one artifact, every sequence length
        feeds = token_feeds(name, seq)
        assert_close(art.run(feeds)["out"], ort_outputs(path, feeds)["out"])


@pytest.mark.parametrize("name", ZOO_CNNS)
def test_onnx_cnns(name, tmp_path):
    path = randomized_zoo_model(name, tmp_path)
    try:
        art = round_trip(path, tmp_path)
        x = np.random.default_rng(2).standard_normal((1, 3, 224, 224), dtype=np.float32)
        feeds = {art.input_names[0]: x}
        got, want = art.run(feeds), ort_outputs(path, feeds)
        assert list(got) == list(want)
        for key in want:
            assert_close(got[key], want[key])
    finally:
        (tmp_path / "weights.bin").unlink()  # up to 550 MB (vgg19); pytest keeps old tmp folders
        (tmp_path / "art" / "weights.safetensors").unlink(missing_ok=True)
