"""The model zoo through the TVM targets: cpu artifacts run here and match the interpreter
(float32 1e-4, float16 1e-2) and the source framework; cuda artifacts carry sm_90 device code."""

import numpy as np
import pytest
import torch
from test_tvm_cuda import check_device_code
from tvm_checks import mismatches

from llmc import examples
from llmc.ir.interpreter import run
from llmc.targets.gpu import device_code

DYNAMIC = {"tiny-llama": {"input_ids": {1: "seq"}}, "tiny-gpt2": {"input_ids": {1: "seq"}}}
ONNX_FAST = ["squeezenet", "shufflenet"]
ONNX_SLOW = ["inception_v1", "resnet50", "densenet121", "inception_v2", "vgg19", "bvlc_alexnet", "zfnet512"]
# cuda builds of these take 1-2 minutes each on 2 cores, mostly nvcc on one translation unit
# (densenet121: 242 kernels, 106 s); the suite builds them for cpu only (same lowering) and
# the cuda build of the smaller CNNs and of every transformer checks the cuda path.
CUDA_TOO_SLOW = {"densenet121", "inception_v1", "inception_v2", "resnet50", "vgg19"}


def _compile(compiled, name, target, **options):
    model, example = examples.build(name)
    art = compiled(f"{name}-{target}-{options}", model, target, example_inputs=example, dynamic=DYNAMIC.get(name),
                   **options)
    return model, example, art


def _feeds(art, example):
    return {v.name: t.numpy() for v, t in zip(art.graph.inputs, example)}


@pytest.mark.parametrize("name", list(examples.EXAMPLES))
def test_zoo_model_on_cpu(compiled, name):
    model, example, art = _compile(compiled, name, "cpu")
    feeds = _feeds(art, example)
    got = art.run(feeds)
    names = [v.name for v in art.graph.outputs]
    assert mismatches(got, run(art.graph, feeds), names, rtol=1e-4) == []
    with torch.no_grad():
        out = model(*example)
    first = out[0] if isinstance(out, tuple) else getattr(out, "logits", getattr(out, "last_hidden_state", out))
    assert mismatches({"x": got[names[0]]}, {"x": first.numpy()}, ["torch"], rtol=1e-4) == []


def test_tiny_llama_runs_every_length_from_one_compile(compiled):
    _, _, art = _compile(compiled, "tiny-llama", "cpu")
    rng = np.random.default_rng(0)
    for seq in (1, 7, 128, 300):
        feeds = {"input_ids": rng.integers(0, 256, (1, seq)).astype(np.int64)}
        assert mismatches(art.run(feeds), run(art.graph, feeds), ["logits"], rtol=1e-4) == [], f"seq {seq}"


def test_tiny_llama_float16_on_cpu(compiled):
    _, example, art = _compile(compiled, "tiny-llama", "cpu", dtype="float16")
    feeds = _feeds(art, example)
    got = art.run(feeds)
    assert got["logits"].dtype == np.float16
    assert mismatches(got, run(art.graph, feeds), ["logits"], rtol=1e-2) == []


@pytest.mark.skipif(device_code.find_nvcc() is None, reason="needs nvcc")
@pytest.mark.parametrize("name", list(examples.EXAMPLES))
def test_zoo_model_compiles_for_sm90(compiled, name):
    _, _, art = _compile(compiled, name, "cuda", arch="sm_90")
    check_device_code(art)


def _onnx_case(compiled, tmp_path_factory, name, target, **options):
    from zoo import randomized_zoo_model

    path = randomized_zoo_model(name, tmp_path_factory.mktemp(name))
    return path, compiled(f"onnx-{name}-{target}", path, target, **options)


def _check_onnx_cpu(compiled, tmp_path_factory, name):
    from zoo import ort_outputs

    path, art = _onnx_case(compiled, tmp_path_factory, name, "cpu")
    x = np.random.default_rng(0).standard_normal(art.graph.inputs[0].type.shape).astype(np.float32)
    feeds = {art.graph.inputs[0].name: x}
    got, ref = art.run(feeds), ort_outputs(path, feeds)
    keys = [k for k in got if k in ref]
    assert keys and mismatches({k: got[k] for k in keys}, {k: ref[k] for k in keys}, keys, rtol=1e-4) == []
    if device_code.find_nvcc() is not None and name not in CUDA_TOO_SLOW:
        check_device_code(_onnx_case(compiled, tmp_path_factory, name, "cuda", arch="sm_90")[1])


@pytest.mark.parametrize("name", ONNX_FAST)
def test_onnx_cnn(compiled, tmp_path_factory, name):
    _check_onnx_cpu(compiled, tmp_path_factory, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ONNX_SLOW)
def test_onnx_cnn_large(compiled, tmp_path_factory, name):
    _check_onnx_cpu(compiled, tmp_path_factory, name)
