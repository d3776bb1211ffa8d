"""graph.json + weights.safetensors round trips, lazily and deterministically."""

import numpy as np
import pytest
from safetensors import safe_open

from llmc.errors import ArtifactError, WeightsNotMaterialized
from llmc.ir import DType, FileWeight, Graph, MetaWeight, NodeMeta, QuantSpec, TensorType, run, serialize


def graph_with_everything() -> Graph:
    g = Graph()
    x = g.add_input("x", TensorType(DType.f32, ("batch", "seq", 8)))
    w = g.add_const("w", np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32))
    h = g.call("linear", x, w, meta=NodeMeta(origin="m.layers.1.fc", layer=1, quant=QuantSpec(bits=8)))
    body = Graph("body")
    a = body.add_input("a", h.type)
    body.outputs = [body.call("silu", body.call("neg", a))]
    y = g.call("fused", h, body=body)
    z = g.call("reshape", y, shape=("batch", -1))
    g.outputs = [z, g.call("cast", z, dtype=DType.f16)]
    return g


def test_round_trip_keeps_types_meta_and_numerics(tmp_path):
    g = graph_with_everything()
    g.verify()
    serialize.save(g, tmp_path)
    back = serialize.load(tmp_path)
    back.verify()
    assert str(back) == str(g)
    assert back.nodes[0].meta.quant == QuantSpec(bits=8)
    assert isinstance(back.constants["w"].const, FileWeight)
    x = np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32)
    for a, b in zip(run(g, {"x": x}).values(), run(back, {"x": x}).values()):
        np.testing.assert_array_equal(a, b)


def test_files_are_deterministic_and_standard_safetensors(tmp_path):
    serialize.save(graph_with_everything(), tmp_path / "a")
    serialize.save(graph_with_everything(), tmp_path / "b")
    for name in ("graph.json", "weights.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with safe_open(tmp_path / "a" / "weights.safetensors", framework="np") as f:
        assert f.get_tensor("w").shape == (16, 8)


def test_weights_are_memory_mapped(tmp_path):
    serialize.save(graph_with_everything(), tmp_path)
    w = serialize.load(tmp_path).constants["w"].const.numpy()
    assert isinstance(w, np.memmap)


def test_meta_weights_have_types_but_no_data():
    w = MetaWeight(TensorType(DType.bf16, (32000, 4096)))
    assert w.nbytes == 32000 * 4096 * 2 and not w.materialized
    with pytest.raises(WeightsNotMaterialized):
        w.numpy()


def test_truncated_weights_and_bad_schema_are_reported(tmp_path):
    serialize.save(graph_with_everything(), tmp_path)
    data = (tmp_path / "weights.safetensors").read_bytes()
    (tmp_path / "weights.safetensors").write_bytes(data[:-100])
    from llmc.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="truncated"):
        serialize.load(tmp_path)
    (tmp_path / "graph.json").write_text('{"schema": 99}')
    with pytest.raises(ArtifactError, match="schema 99"):
        serialize.load(tmp_path)
