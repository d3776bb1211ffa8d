"""Generation on the tiny random Llama: llmc's loop against transformers' ``generate``, on the
reference interpreter and the cpu target, with prompts longer than the prefill chunk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llmc
from llmc.errors import ArtifactError, InputError, ModelLoadError
from llmc.examples import tiny_llama

PROMPTS = [[1, 5, 7, 9, 11, 13, 17, 19, 23], [3, 4, 200, 100, 7, 8, 9, 10, 11, 12, 99, 98], [42, 43, 44, 45, 46]]
CHUNK = 4


@pytest.fixture(scope="module")
def model():
    return tiny_llama()[0]


@pytest.fixture(scope="module", params=["reference", "cpu"])
def artifact(request, model, tmp_path_factory):
    if request.param == "cpu":
        pytest.importorskip("tvm")
    out = tmp_path_factory.mktemp("gen") / request.param
    return llmc.compile(model, target=request.param, output=out, generation=True, max_seq_len=64, prefill_chunk=CHUNK)


def hf_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_matches_transformers(model, artifact):
    for prompt in PROMPTS:
        assert len(prompt) > CHUNK
        result = artifact.generate(prompt, max_new_tokens=32)
        assert result.ids[0] == hf_greedy(model, prompt, 32)
        assert result.stats.new_tokens == len(result.ids[0]) and result.stats.prefill_tokens_per_s > 0


def test_last_logits_match_transformers(model, artifact, close):
    gen = artifact.generator()
    for prompt in PROMPTS:
        caches = gen.runner.new_caches(gen.spec, 1)
        logits = gen.prefill(np.array([prompt]), np.ones((1, len(prompt)), bool), caches)
        with torch.no_grad():
            expected = model(torch.tensor([prompt])).logits[:, -1:].numpy()
        close(logits, expected, rtol=1e-4)


def test_batch_with_left_padding_matches_single_prompts(artifact):
    batch = artifact.generate(PROMPTS, max_new_tokens=12)
    for prompt, ids in zip(PROMPTS, batch.ids):
        assert ids == artifact.generate(prompt, max_new_tokens=12).ids[0]


def test_one_sequence_decodes_with_its_own_kernels(artifact):
    """A cpu artifact has a batch-1 decode function (its products one output row wide, not a tile of
    padded rows), chosen over the any-batch one for a single sequence; both give the same logits."""
    if artifact.target != "cpu":
        pytest.skip("the entries are the TVM targets'")
    gen = artifact.generator()
    session = gen.runner.session
    assert session.entry({"batch": 1, "seq": 1}) == "decode1"
    assert session.entry({"batch": 3, "seq": 1}) == "decode"
    assert session.entry({"batch": 1, "seq": 4}) == "prefill"
    prompt = PROMPTS[0]
    steps = []
    for batch in (1, 2):
        caches = gen.runner.new_caches(gen.spec, batch)
        ids = np.array([prompt] * batch)
        gen.prefill(ids, np.ones(ids.shape, bool), caches)
        mask = np.ones((batch, len(prompt) + 1), bool)
        steps.append(gen.runner(ids[:, -1:], np.full((batch, 1), len(prompt)), mask, caches))
    np.testing.assert_allclose(steps[0][0], steps[1][1], rtol=1e-5, atol=1e-6)


def test_sampling_is_deterministic_per_seed(artifact):
    def sample(seed):
        return artifact.generate(PROMPTS[0], max_new_tokens=16, temperature=0.8, top_k=50, top_p=0.9, seed=seed).ids[0]

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_stream_yields_the_generated_tokens(artifact):
    pieces = list(artifact.stream(PROMPTS[1], max_new_tokens=10))
    assert [p.token for p in pieces] == artifact.generate(PROMPTS[1], max_new_tokens=10).ids[0]
    assert pieces[-1].done and pieces[-1].reason == "length" and not any(p.done for p in pieces[:-1])


def test_context_full_stops_generation(artifact):
    result = artifact.generate(list(range(1, 60)), max_new_tokens=20)
    assert len(result.ids[0]) == 64 - 59 and result.reasons == ["max_seq_len"]


def test_prompt_longer_than_the_cache_is_refused(artifact):
    with pytest.raises(InputError, match="cache holds 64"):
        artifact.generate(list(range(1, 80)), max_new_tokens=4)


def test_text_needs_a_tokenizer(artifact):
    with pytest.raises(InputError, match="no tokenizer"):
        artifact.generate("hello")


def test_forward_artifact_has_no_generation(tmp_path):
    art = llmc.compile("tiny-llama", output=tmp_path / "fwd")
    with pytest.raises(ArtifactError, match="not a generation step"):
        art.generate([1, 2, 3])


def test_bad_generation_options_are_refused_before_writing(model, tmp_path):
    with pytest.raises(InputError, match="prefill-chunk 100"):
        llmc.compile(model, output=tmp_path / "a", generation=True, max_seq_len=64, prefill_chunk=100)
    with pytest.raises(InputError, match="max-seq-len 100000"):
        llmc.compile(model, output=tmp_path / "b", generation=True, max_seq_len=100000)
    assert not list(tmp_path.iterdir())


def test_hugging_face_folder_with_generation(model, tmp_path):
    """A saved Llama folder compiles into the same generation artifact (weights memory-mapped from it)."""
    model.save_pretrained(tmp_path / "folder")
    art = llmc.compile(tmp_path / "folder", output=tmp_path / "art", generation=True, max_seq_len=64, prefill_chunk=CHUNK)
    assert art.manifest["generation"]["tokenizer"] is None
    assert art.generate(PROMPTS[0], max_new_tokens=12).ids[0] == hf_greedy(model, PROMPTS[0], 12)


def test_non_llama_models_are_refused(tmp_path):
    from llmc.examples import tiny_gpt2

    with pytest.raises(ModelLoadError, match="not 'gpt2'"):
        llmc.compile(tiny_gpt2()[0], output=tmp_path / "a", generation=True)
    assert not (tmp_path / "a").exists()


def test_every_chunk_logits_match_a_full_forward(model, tmp_path, close):
    """With all_logits, chunked prefill joins every chunk's logits (what perplexity scoring reads)."""
    art = llmc.compile(model, output=tmp_path / "all", generation=True, all_logits=True, max_seq_len=64,
                       prefill_chunk=CHUNK)
    gen, prompt = art.generator(), PROMPTS[1]
    logits = gen.prefill(np.array([prompt]), np.ones((1, len(prompt)), bool), gen.runner.new_caches(gen.spec, 1),
                         every_chunk=True)
    with torch.no_grad():
        expected = model(torch.tensor([prompt])).logits.numpy()
    close(logits, expected, rtol=1e-4)
