"""The Hugging Face frontend: model folders (real weights, sharded, weightless 7B) and model objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from llmc import examples
from llmc.errors import ModelLoadError, UnsafeModelError, WeightsNotMaterialized
from llmc.frontend.hf import from_hf, is_hf_folder
from llmc.ir import FileWeight, MetaWeight, run, sym
from llmc.testing import assert_close

LLAMA_2_7B_PARAMETERS = 6_738_415_616


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory):
    """The tiny Llama saved in shards of at most 100 kB (so with a safetensors index)."""
    model, (ids,) = examples.tiny_llama()
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder, max_shard_size="100KB")
    return model, ids, folder


@pytest.fixture(scope="session")
def llama_7b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama-2-7b")
    examples.llama2_7b_config().save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    return from_hf(folder)


def test_minilm_folder_matches_torch():
    folder = examples.minilm_folder()
    ids, mask = examples.minilm_inputs()
    graph = from_hf(folder, batch=ids.shape[0], seq=ids.shape[1])
    model, _ = examples.minilm()
    with torch.no_grad():
        expected = model(ids, mask).last_hidden_state.numpy()
    ours = run(graph, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    assert_close(ours["last_hidden_state"], expected)
    # the weights are read in place from the folder's safetensors file, not copied
    word = graph.constants["embeddings.word_embeddings.weight"].const
    assert isinstance(word, FileWeight) and word.path == folder / "model.safetensors"


def test_sharded_folder_round_trip(llama_folder):
    model, ids, folder = llama_folder
    assert (folder / "model.safetensors.index.json").is_file()
    graph = from_hf(folder, dynamic={"input_ids": {1: "seq"}})
    assert graph.inputs[0].type.shape == (1, sym("seq"))
    shards = {c.const.path.name for c in graph.constants.values() if isinstance(c.const, FileWeight)}
    assert len(shards) > 1
    for length in (5, 16):
        x = ids[:, :length]
        with torch.no_grad():
            expected = model(x).logits.numpy()
        assert_close(run(graph, {"input_ids": x.numpy()})["logits"], expected)


def test_model_object():
    model, (ids,) = examples.tiny_gpt2()
    graph = from_hf(model, seq=ids.shape[1])
    with torch.no_grad():
        expected = model(ids).logits.numpy()
    assert_close(run(graph, {"input_ids": ids.numpy()})["logits"], expected)


def test_weightless_llama_2_7b(llama_7b):
    graph = llama_7b
    assert graph.name == "LlamaForCausalLM"
    meta = [v for v in graph.constants.values() if isinstance(v.const, MetaWeight)]
    assert sum(v.type.numel for v in meta) == LLAMA_2_7B_PARAMETERS
    # besides the parameters, only the rotary frequencies (64) and scalar constants have data
    real = [v for v in graph.constants.values() if not isinstance(v.const, MetaWeight)]
    assert sum(v.type.numel for v in real) < 100
    assert [str(v.type) for v in graph.inputs] == ["i64[1,16]"]
    assert [str(v.type) for v in graph.outputs] == ["f32[1,16,32000]"]
    layers = {n.meta.layer for n in graph.nodes} - {None}
    assert layers == set(range(32))
    assert graph.op_histogram()["linear"] == 32 * 7 + 1 and graph.op_histogram()["attention"] == 32
    with pytest.raises(WeightsNotMaterialized):
        run(graph, {"input_ids": np.zeros((1, 16), np.int64)})


# -- folders that are not (complete, safe) models --------------------------------------------------


def test_is_hf_folder(tmp_path, llama_folder):
    assert is_hf_folder(llama_folder[2])
    assert not is_hf_folder(tmp_path)
    assert not is_hf_folder(llama_folder[2] / "config.json")


def test_folder_without_config(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="no config.json"):
        from_hf(tmp_path)


@pytest.mark.parametrize("config, match", [
    ("{not json", "not valid JSON"),
    ('{"model_type": "no-such-architecture"}', "transformers cannot read"),
])
def test_unreadable_config(tmp_path, config, match):
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ModelLoadError, match=match):
        from_hf(tmp_path)


def _copy_config(src: Path, dst: Path) -> None:
    (dst / "config.json").write_text((src / "config.json").read_text())


def test_index_pointing_outside_the_folder(tmp_path, llama_folder):
    _copy_config(llama_folder[2], tmp_path)
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "../../etc/passwd"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeModelError, match="outside"):
        from_hf(tmp_path)


def test_missing_weights_are_named(tmp_path, llama_folder):
    _copy_config(llama_folder[2], tmp_path)
    tensors = {}
    for shard in llama_folder[2].glob("*.safetensors"):
        tensors |= load_file(shard)
    del tensors["lm_head.weight"], tensors["model.norm.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ModelLoadError, match="lack 2 parameter.*lm_head.weight"):
        from_hf(tmp_path)
