"""Bad input gets a specific error, and a failed compile leaves no artifact and no temporary folder.

Each case compiles through the Python API (asserting the error type) and through the CLI
(asserting exit code 1 and a one-line message), then checks that only the inputs remain.
"""

import json

import numpy as np
import pytest

import llmc
from llmc.cli import main
from llmc.errors import InputError, ModelLoadError, ShapeError, UnsupportedOpError, WeightsNotMaterialized

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper


def onnx_mlp(path, *, external=False, op="Relu"):
    """x[2, 8] -> MatMul(w) -> <op> -> y; ``external`` stores w in w.bin beside the model."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node(op, ["h"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                        size_threshold=0)
    else:
        onnx.save(model, path)
    return path


def truncated(tmp_path):
    path = onnx_mlp(tmp_path / "m.onnx")
    path.write_bytes(path.read_bytes()[:-40])
    return str(path), {}


def malformed(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 8)
    return str(tmp_path / "m.onnx"), {}


def missing_external_data(tmp_path):
    path = onnx_mlp(tmp_path / "m.onnx", external=True)
    (tmp_path / "w.bin").unlink()
    return str(path), {}


def not_a_model_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("hello")
    return str(tmp_path / "folder"), {}


def missing_path(tmp_path):
    return str(tmp_path / "nothing-here.onnx"), {}


def shape_contradicts_model(tmp_path):
    return str(onnx_mlp(tmp_path / "m.onnx")), {"input_shapes": {"x": (2, 9)}}


def rank_contradicts_example(tmp_path):
    return "small-cnn", {"input_shapes": {"x": (3, 32, 32)}}


def unknown_input_name(tmp_path):
    return "small-cnn", {"input_shapes": {"image": (1, 3, 32, 32)}}


def unsupported_op(tmp_path):
    return str(onnx_mlp(tmp_path / "m.onnx", op="Det")), {}


def weightless_hf_folder(tmp_path):
    from llmc.examples import tiny_llama_config

    config = tiny_llama_config()
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(tmp_path / "hf")
    return str(tmp_path / "hf"), {}


CASES = [
    (truncated, ModelLoadError),
    (malformed, ModelLoadError),
    (missing_external_data, ModelLoadError),
    (not_a_model_folder, ModelLoadError),
    (missing_path, ModelLoadError),
    (shape_contradicts_model, ShapeError),
    (rank_contradicts_example, ShapeError),
    (unknown_input_name, InputError),
    (unsupported_op, UnsupportedOpError),
    (weightless_hf_folder, WeightsNotMaterialized),
]


def cli_args(kwargs):
    return [f"--input-shape={name}={'x'.join(map(str, shape))}" for name, shape in kwargs.get("input_shapes", {}).items()]


@pytest.mark.parametrize("make, error", CASES, ids=[make.__name__ for make, _ in CASES])
def test_bad_input_is_refused_and_leaves_nothing(tmp_path, capsys, make, error):
    model, kwargs = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error) as info:
        llmc.compile(model, output=tmp_path / "out" / "art", **kwargs)
    assert info.value.hint, "every error says what to do"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out/, no .art.*.llmc-tmp

    code = main(["compile", model, "-o", str(tmp_path / "out" / "art"), *cli_args(kwargs)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_failed_compile_keeps_an_existing_artifact(tmp_path):
    good = onnx_mlp(tmp_path / "good.onnx")
    llmc.compile(str(good), output=tmp_path / "art")
    before = {p.name: p.read_bytes() for p in (tmp_path / "art").iterdir()}
    bad, _ = malformed(tmp_path)
    with pytest.raises(ModelLoadError):
        llmc.compile(bad, output=tmp_path / "art")
    assert {p.name: p.read_bytes() for p in (tmp_path / "art").iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_weightless_hf_folder_can_still_be_inspected(tmp_path, capsys):
    model, _ = weightless_hf_folder(tmp_path)
    assert main(["inspect", model, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    from llmc.examples import tiny_llama_config

    config = tiny_llama_config()
    assert facts["parameters"] - _llama_params(config) in range(65)  # + small rotary/position constants
    assert sum(1 for row in facts["layers"] if row["layer"] is not None) == config.num_hidden_layers


def _llama_params(c) -> int:
    head = c.hidden_size // c.num_attention_heads
    attn = c.hidden_size * head * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    per_layer = attn + mlp + 2 * c.hidden_size
    embeddings = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
    return c.num_hidden_layers * per_layer + embeddings + c.hidden_size
