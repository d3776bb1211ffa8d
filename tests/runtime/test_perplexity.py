"""The perplexity corpus (deterministic, split without overlap) and the strided perplexity metric."""

import hashlib
import math
import sysconfig

import numpy as np
import pytest

from llmc.errors import LLMCError, ShapeError
from llmc.runtime import perplexity as ppl_module
from llmc.runtime.perplexity import (
    CALIBRATION,
    MODULES,
    corpus,
    perplexity,
    tokenize_corpus,
    transformers_scorer,
    windows,
)

# (tokens, window, stride): shorter than a window, exact multiples, ragged ends, stride 1.
PLANS = [(5, 8, 4), (8, 8, 4), (9, 8, 4), (100, 16, 8), (101, 16, 5), (37, 10, 9), (20, 4, 1), (2, 2, 1)]


@pytest.fixture
def fresh_corpus_cache():
    """Clears the corpus cache before and after, so the test reads the stdlib files itself."""
    ppl_module._split_text.cache_clear()
    yield
    ppl_module._split_text.cache_clear()


def test_corpus_is_deterministic(fresh_corpus_cache):
    first = corpus()
    ppl_module._split_text.cache_clear()
    second = corpus()
    assert first == second
    assert first.sha256 == hashlib.sha256(first.text.encode("utf-8")).hexdigest()
    assert "stdlib docstrings" in first.source and "eval split" in first.source
    assert MODULES == tuple(sorted(MODULES))


def test_corpus_is_large_prose_and_truncates():
    text = corpus().text
    assert len(text) > 200_000
    assert ">>>" not in text
    short = corpus(max_chars=1000)
    assert short.text == text[:1000] and "first 1000 chars" in short.source
    assert short.sha256 != corpus().sha256


def test_calibration_and_evaluation_share_no_paragraph():
    evaluation, calibration = corpus(), corpus(split=CALIBRATION)
    assert len(calibration.text) > 50_000
    assert not set(evaluation.text.split("\n\n")) & set(calibration.text.split("\n\n"))
    assert "calib split" in calibration.source
    assert evaluation.sha256 != calibration.sha256


def test_corpus_names_a_missing_stdlib_file(fresh_corpus_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    with pytest.raises(LLMCError, match=f"{tmp_path / MODULES[0]}.py.*missing"):
        corpus()


def test_corpus_rejects_an_unknown_split():
    with pytest.raises(LLMCError, match="unknown corpus split 'train'"):
        corpus(split="train")


def uniform_scorer(vocab: int):
    return lambda ids: np.zeros((1, ids.shape[1], vocab), dtype=np.float32)


def test_uniform_scorer_gives_vocab_size():
    ids = np.random.default_rng(0).integers(0, 50, size=300)
    result = perplexity(uniform_scorer(50), ids, window=64, stride=16)
    assert result.ppl == pytest.approx(50, rel=1e-12)
    assert result.nll == pytest.approx(math.log(50), rel=1e-12)
    assert (result.tokens, result.window, result.stride) == (299, 64, 16)


def test_a_certain_scorer_gives_one():
    vocab = 64
    ids = [1]
    for _ in range(199):
        ids.append((7 * ids[-1] + 3) % vocab)

    def certain(window_ids):
        logits = np.zeros((1, window_ids.shape[1], vocab), dtype=np.float32)
        logits[0, np.arange(window_ids.shape[1]), (7 * window_ids[0] + 3) % vocab] = 1e4
        return logits

    assert perplexity(certain, np.array(ids), window=32, stride=8).ppl == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n, window, stride", PLANS)
def test_every_token_after_the_first_is_scored_once(n, window, stride):
    plan = windows(n, window, stride)
    assert [w.begin for w in plan] == list(range(0, plan[-1].begin + 1, stride))
    assert all(w.end - w.begin <= window and w.begin < w.first for w in plan)
    scored = np.zeros(n, dtype=int)
    for w in plan:
        scored[w.first : w.end] += 1
    assert scored[0] == 0 and (scored[1:] == 1).all()

    seen, progress = [], []

    def recording(window_ids):
        seen.append(window_ids[0].tolist())
        return np.zeros((1, window_ids.shape[1], n), dtype=np.float32)

    ids = np.arange(n)  # a token's id is its position: the scorer sees which positions it gets
    result = perplexity(recording, ids, window=window, stride=stride, progress=lambda *p: progress.append(p))
    assert seen == [list(range(w.begin, w.end)) for w in plan]
    assert progress == [(i + 1, len(plan)) for i in range(len(plan))]
    assert result.tokens == n - 1


def bigram_scorer(table):
    """Logits from the current token alone, so the context a window gives does not matter."""
    return lambda ids: table[ids]


@pytest.mark.parametrize("n, window, stride", PLANS)
def test_windows_agree_with_the_whole_sequence_for_a_context_free_scorer(n, window, stride):
    rng = np.random.default_rng(n)
    table = rng.normal(size=(32, 32)) * 3
    ids = rng.integers(0, 32, size=n)
    log_probs = table - np.log(np.exp(table).sum(axis=-1, keepdims=True))
    expected = -log_probs[ids[:-1], ids[1:]].mean()
    whole = perplexity(bigram_scorer(table), ids, window=n + 1, stride=n)
    windowed = perplexity(bigram_scorer(table), ids, window=window, stride=stride)
    assert abs(whole.nll - expected) < 1e-12
    assert abs(windowed.nll - whole.nll) < 1e-12


def test_max_tokens_keeps_the_first_ids():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(16, 16))
    ids = rng.integers(0, 16, size=100)
    cut = perplexity(bigram_scorer(table), ids, window=8, stride=4, max_tokens=40)
    assert cut.tokens == 39
    assert cut.nll == pytest.approx(perplexity(bigram_scorer(table), ids[:40], window=8, stride=4).nll, abs=1e-12)


def test_bad_plans_and_logits_are_refused():
    with pytest.raises(LLMCError, match="0 < stride < window"):
        perplexity(uniform_scorer(8), np.arange(8), window=4, stride=4)
    with pytest.raises(LLMCError, match="at least 2 tokens"):
        perplexity(uniform_scorer(8), np.arange(1))
    with pytest.raises(ShapeError, match=r"logits of shape \(1, 3, 8\) for ids of shape \(1, 4\)"):
        perplexity(lambda ids: np.zeros((1, 3, 8)), np.arange(8), window=4, stride=2)
    with pytest.raises(ShapeError, match="outside the scorer's vocabulary of 4"):
        perplexity(uniform_scorer(4), np.arange(8), window=4, stride=2)
    with pytest.raises(ShapeError, match="1-D token ids"):
        perplexity(uniform_scorer(8), np.zeros((1, 8), dtype=np.int64))


def test_to_json_round_trips_the_fields():
    result = perplexity(uniform_scorer(8), np.arange(8), window=4, stride=2)
    result.corpus_sha256 = "abc"
    assert result.to_json() == {
        "ppl": result.ppl,
        "nll": result.nll,
        "tokens": 7,
        "window": 4,
        "stride": 2,
        "corpus_sha256": "abc",
    }


def test_tokenize_corpus_adds_no_special_tokens_and_does_not_warn(capfd):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "[UNK]": 1, "the": 2, "cat": 3, "sat": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", model_max_length=4)

    assert tokenizer("the cat")["input_ids"] == [0, 2, 3]  # by default it adds <s>
    ids = tokenize_corpus(tokenizer, "the cat sat " * 10)  # 30 tokens, more than model_max_length
    assert ids.dtype == np.int64 and ids.tolist() == [2, 3, 4] * 10
    assert "longer than the specified maximum" not in capfd.readouterr().err


def test_transformers_scorer_matches_the_models_own_loss():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config).eval()
    ids = np.random.default_rng(0).integers(0, 256, size=48)
    with torch.no_grad():
        loss = model(torch.from_numpy(ids)[None], labels=torch.from_numpy(ids)[None]).loss.item()

    result = perplexity(transformers_scorer(model), ids, window=64, stride=32)
    assert result.tokens == 47
    assert result.ppl == pytest.approx(math.exp(loss), rel=1e-5)

    with pytest.raises(LLMCError, match=r"float32 model, got parameters of \['torch.bfloat16'\]"):
        transformers_scorer(model.to(torch.bfloat16))
