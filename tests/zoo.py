"""The test suite's model zoo beyond llmc.examples: ONNX exports of the built-in transformers,
the onnx package's CNNs with random weights, and onnxruntime as the reference runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO_CNNS = ["resnet50", "squeezenet", "shufflenet", "densenet121", "inception_v1", "inception_v2", "vgg19",
            "bvlc_alexnet", "zfnet512"]
TRANSFORMERS = ["tiny-llama", "tiny-gpt2", "minilm"]


def ort_outputs(model: onnx.ModelProto | Path, feeds: dict) -> dict:
    """Outputs of onnxruntime (CPU provider) by output name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


# -- transformer exports ----------------------------------------------------------------------


def _first_output(model, causal: bool):
    """A module: forward(input_ids[, attention_mask]) -> logits / last hidden state, no KV cache."""
    import torch

    class FirstOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask=None):
            args = (input_ids,) if attention_mask is None else (input_ids, attention_mask)
            return self.m(*args, **({"use_cache": False} if causal else {}))[0]

    return FirstOutput().eval()


def export_onnx(name: str, exporter: str, folder: Path) -> Path:
    """Export a built-in transformer with a dynamic ``seq`` axis; its output is named ``out``.

    exporter: ``dynamo`` (opset 18, optimized), ``dynamo-unoptimized`` (keeps CastLike,
    SplitToSequence, ...) or ``torchscript`` (opset 14: layer norm written out in elementary ops).
    """
    import torch

    from llmc.examples import build

    model, inputs = build(name)
    names = ["input_ids", "attention_mask"][: len(inputs)]
    wrapper = _first_output(model, causal=name != "minilm")
    path = folder / f"{name}-{exporter}.onnx"
    with torch.no_grad():
        if exporter.startswith("dynamo"):
            seq = torch.export.Dim("seq", min=2, max=128)
            torch.onnx.export(wrapper, inputs, str(path), input_names=names, output_names=["out"], dynamo=True,
                              opset_version=18, dynamic_shapes={n: {1: seq} for n in names}, verbose=False,
                              optimize=exporter == "dynamo")
        else:
            torch.onnx.export(wrapper, inputs, str(path), input_names=names, output_names=["out"], dynamo=False,
                              opset_version=14, dynamic_axes={n: {1: "seq"} for n in names})
    return path


def token_feeds(name: str, seq: int) -> dict[str, np.ndarray]:
    """Inputs for a built-in transformer at length ``seq``: real sentences for MiniLM, random ids otherwise."""
    if name == "minilm":
        from llmc.examples import minilm_inputs

        ids, mask = minilm_inputs(seq=seq)
        return {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return {"input_ids": np.random.default_rng(seq).integers(0, 256, (1, seq))}


# -- the onnx package's CNNs ------------------------------------------------------------------

_PERIOD = 1_000_003  # big weights repeat a random block of this (prime) length


def _write_random(f, shape, rng) -> tuple[int, int]:
    """He-scaled normal weights (rank >= 2) or U(0.5, 1.5) vectors (biases, batch-norm statistics)."""
    n = int(np.prod(shape))
    if len(shape) >= 2:
        block = rng.standard_normal(min(n, _PERIOD), dtype=np.float32) * np.float32(np.sqrt(2 / np.prod(shape[1:])))
    else:
        block = rng.uniform(0.5, 1.5, n).astype(np.float32)
    offset = f.tell()
    for start in range(0, n, len(block)):
        f.write(block[: n - start].tobytes())
    return offset, 4 * n


def randomized_zoo_model(name: str, folder: Path) -> Path:
    """The zoo CNN ``name`` with random weights in an external data file ``weights.bin``.

    The light models fill every weight with ConstantOfShape(0.02), so all channels are equal and
    the softmax is uniform whatever the input: useless for checking numerics. Each such node
    becomes an initializer stored externally (as big models are), and the softmax inputs become
    extra outputs so the logits are compared too.
    """
    model = onnx.load(LIGHT / f"light_{name}.onnx")
    rng = np.random.default_rng(0)
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep, weights = [], []
    with open(folder / "weights.bin", "wb") as f:
        for node in model.graph.node:
            if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
                keep.append(node)
                continue
            shape = [int(d) for d in shapes[node.input[0]]]
            offset, length = _write_random(f, shape, rng)
            tensor = TensorProto(name=node.output[0], data_type=TensorProto.FLOAT, dims=shape,
                                 data_location=TensorProto.EXTERNAL)
            for key, value in (("location", "weights.bin"), ("offset", offset), ("length", length)):
                tensor.external_data.add(key=key, value=str(value))
            weights.append(tensor)
    used = {i for n in keep for i in n.input}
    graph = model.graph
    graph.ClearField("node")
    graph.node.extend(keep)
    initializers = [t for t in graph.initializer if t.name in used] + weights
    graph.ClearField("initializer")
    graph.initializer.extend(initializers)
    inputs = [i for i in graph.input if i.name not in shapes]
    graph.ClearField("input")
    graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 7)  # initializers need not be listed as inputs
    outputs = {o.name for o in graph.output}
    logits = {n.input[0] for n in keep if n.op_type == "Softmax" and n.output[0] in outputs}
    graph.output.extend(v for v in onnx.shape_inference.infer_shapes(model).graph.value_info if v.name in logits)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path
