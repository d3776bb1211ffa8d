"""Artifact folders: layout, manifest facts, determinism, integrity checks, all-or-nothing writes."""

import json

import numpy as np
import pytest

import llmc
from llmc.codegen.artifact import MANIFEST, check_output, read_artifact, write_artifact
from llmc.codegen.target import Payload, Target, get_target
from llmc.errors import ArtifactError, TargetError, WeightsNotMaterialized
from llmc.ir import DType, Graph, MetaWeight, NodeMeta, TensorType, run, sym
from llmc.passes.manager import PassRecord


def toy_lm(vocab=32, dim=8) -> Graph:
    """embedding -> 2 blocks (linear, relu) -> linear head; ids are [1, seq]."""
    rng = np.random.default_rng(0)
    g = Graph("toy")
    ids = g.add_input("input_ids", TensorType(DType.i64, (1, sym("seq"))))
    x = g.call("embedding", g.add_const("embed", rng.standard_normal((vocab, dim)).astype(np.float32)), ids,
               meta=NodeMeta(origin="embed"))
    for i in range(2):
        w = g.add_const(f"layers.{i}.w", rng.standard_normal((dim, dim)).astype(np.float32))
        x = g.call("linear", x, w, meta=NodeMeta(origin=f"layers.{i}.fc", layer=i))
        x = g.call("relu", x, meta=NodeMeta(origin=f"layers.{i}.act", layer=i))
    head = g.add_const("head", rng.standard_normal((vocab, dim)).astype(np.float32))
    g.outputs = [g.call("linear", x, head, meta=NodeMeta(origin="lm_head"))]
    g.verify()
    return g


def write(graph, out, target=None, **kw):
    kw.setdefault("passes", [PassRecord("dce", True, 0.5, {"removed": 1})])
    return write_artifact(graph, out, target=target or get_target("reference"), options=None, opt_level="O1", **kw)


class PayloadTarget(Target):
    """A target writing a payload file, or failing while lowering."""

    name = "test-payload"
    description = "test"

    def __init__(self, fail=False, claim=()):
        self.fail, self.claim = fail, list(claim)

    def lower(self, graph, options, out):
        if self.fail:
            raise TargetError("lowering failed on purpose")
        (out / "kernels").mkdir()
        (out / "kernels" / "model.bin").write_bytes(b"\x7fELF" + graph.name.encode())
        return Payload(files=["kernels/model.bin", *self.claim], manifest={"kernels": 1})


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_layout_and_manifest_facts(tmp_path):
    manifest = write(toy_lm(), tmp_path / "a", sizes={"seq": 4})
    assert leftovers(tmp_path / "a") == ["graph.json", "manifest.json", "report.md", "weights.safetensors"]
    assert manifest == read_artifact(tmp_path / "a")
    assert manifest["schema"] == 1 and manifest["llmc"] == llmc.__version__
    assert manifest["target"] == {"name": "reference", "options": {}}
    assert manifest["passes"] == [{"name": "dce", "changed": True, "stats": {"removed": 1}}]  # no timings
    model = manifest["model"]
    assert model["inputs"] == [{"name": "input_ids", "dtype": "i64", "shape": [1, "seq"]}]
    assert model["outputs"][0]["shape"] == [1, "seq", 32]
    assert model["symbols"] == ["seq"] and model["sizes"] == {"seq": 4}
    assert model["parameters"] == 32 * 8 * 2 + 2 * 64 and model["weight_bytes"] == 4 * model["parameters"]
    assert model["ops"] == {"embedding": 1, "linear": 3, "relu": 2}
    layers = {row["layer"]: row for row in model["layers"]}
    assert list(layers) == [0, 1, None]
    assert layers[0] == {"layer": 0, "nodes": 2, "params": 64, "weight_bytes": 256, "flops": 2 * 4 * 64 + 4 * 8}
    assert layers[None]["params"] == 2 * 32 * 8 and layers[None]["flops"] == 2 * 4 * 8 * 32
    assert model["flops"] == sum(row["flops"] for row in model["layers"])
    assert set(manifest["files"]) == {"graph.json", "report.md", "weights.safetensors"}
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| 0 | 2 | 64 | 256 B |" in report and "| input | input_ids | i64 | [1, seq] |" in report


def test_same_graph_gives_byte_identical_files(tmp_path):
    write(toy_lm(), tmp_path / "a")
    write(toy_lm(), tmp_path / "b")
    names = leftovers(tmp_path / "a")
    assert names == leftovers(tmp_path / "b")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert str(tmp_path) not in (tmp_path / "a" / MANIFEST).read_text()


def test_reloaded_artifact_gives_the_same_outputs(tmp_path):
    graph = toy_lm()
    write(graph, tmp_path / "a")
    art = llmc.load(tmp_path / "a")
    ids = np.array([[3, 1, 4, 1, 5]], dtype=np.int64)
    expected = run(graph, {"input_ids": ids})
    got = art.run({"input_ids": ids})
    assert list(got) == art.output_names == list(expected)
    np.testing.assert_array_equal(got[art.output_names[0]], expected[art.output_names[0]])
    np.testing.assert_array_equal(art.run({"input_ids": ids}, reference=True)[art.output_names[0]],
                                  expected[art.output_names[0]])


def test_payload_files_are_hashed_and_listed(tmp_path):
    manifest = write(toy_lm(), tmp_path / "a", target=PayloadTarget())
    assert manifest["payload"] == {"files": ["kernels/model.bin"], "kernels": 1}
    assert "kernels/model.bin" in manifest["files"]
    (tmp_path / "a" / "kernels" / "model.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="kernels/model.bin is corrupted"):
        read_artifact(tmp_path / "a")


def test_target_claiming_an_unwritten_file_is_refused(tmp_path):
    with pytest.raises(TargetError, match="did not write"):
        write(toy_lm(), tmp_path / "a", target=PayloadTarget(claim=["missing.so"]))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupted_artifact_is_detected_by_sha256(tmp_path, damage):
    write(toy_lm(), tmp_path / "a")
    weights = tmp_path / "a" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[:-4]))
    else:
        weights.unlink()
    with pytest.raises(ArtifactError, match="corrupted|missing"):
        llmc.load(tmp_path / "a")
    llmc.load(tmp_path / "a", verify=False)  # the manifest itself is still readable


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{not json", "not valid JSON"),
    (lambda m: json.dumps({**m, "schema": 99}), "schema 99"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "model"}), "lacks"),
    (lambda m: json.dumps({**m, "files": {"../outside": "0" * 64}}), "outside the artifact"),
])
def test_damaged_manifest_is_refused(tmp_path, edit, message):
    manifest = write(toy_lm(), tmp_path / "a")
    (tmp_path / "a" / MANIFEST).write_text(edit(manifest))
    with pytest.raises(ArtifactError, match=message):
        read_artifact(tmp_path / "a")


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not an llmc artifact"):
        llmc.load(tmp_path)


def test_failed_write_leaves_nothing_and_removes_created_parents(tmp_path):
    with pytest.raises(TargetError, match="on purpose"):
        write(toy_lm(), tmp_path / "new" / "deeper" / "a", target=PayloadTarget(fail=True))
    assert leftovers(tmp_path) == []


def test_weightless_graph_leaves_nothing(tmp_path):
    g = Graph("meta")
    x = g.add_input("x", TensorType(DType.f32, (2, 8)))
    g.outputs = [g.call("linear", x, g.add_const("w", MetaWeight(TensorType(DType.f32, (4, 8)))))]
    with pytest.raises(WeightsNotMaterialized):
        write(g, tmp_path / "a")
    assert leftovers(tmp_path) == []


def test_failed_rewrite_keeps_the_previous_artifact(tmp_path):
    write(toy_lm(), tmp_path / "a")
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(TargetError):
        write(toy_lm(), tmp_path / "a", target=PayloadTarget(fail=True))
    assert leftovers(tmp_path) == ["a"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before


def test_rewrite_replaces_the_previous_artifact(tmp_path):
    write(toy_lm(), tmp_path / "a")
    write(toy_lm(), tmp_path / "a", target=PayloadTarget())
    assert leftovers(tmp_path) == ["a"]
    assert read_artifact(tmp_path / "a")["payload"]["kernels"] == 1


def test_foreign_folder_or_file_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me too")
    for out in (tmp_path / "mine", tmp_path / "file"):
        with pytest.raises(ArtifactError, match="not an llmc artifact|is a file"):
            write(toy_lm(), out)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == ["file", "mine"]
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")  # an empty folder may be filled


def test_flops_of_a_fused_node_equal_those_of_its_body():
    from llmc.codegen.report import graph_facts

    def chain(g, x):
        return g.call("silu", g.call("gelu", x))

    plain = Graph("plain")
    plain.outputs = [chain(plain, plain.add_input("x", TensorType(DType.f32, (sym("seq"), 8))))]
    body = Graph("body")
    body.outputs = [chain(body, body.add_input("a", TensorType(DType.f32, (sym("seq"), 8))))]
    fused = Graph("fused")
    fused.outputs = [fused.call("fused", fused.add_input("x", TensorType(DType.f32, (sym("seq"), 8))), body=body)]
    flops = [graph_facts(g, {"seq": 5})["flops"] for g in (plain, fused)]
    assert flops[0] == flops[1] > 0
