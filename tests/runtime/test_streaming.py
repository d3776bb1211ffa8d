"""The weight-streaming runtime: a scheduled tiny Llama generates exactly what the resident run does,
streams its groups through the prefetch thread, and fails clearly when its weights cannot be read."""

from __future__ import annotations

import json

import numpy as np
import pytest

import llmc
from llmc.errors import ArtifactError, ModelLoadError
from llmc.examples import tiny_llama
from llmc.ir import serialize
from llmc.runtime.generate import GenerationSpec, ReferenceRunner
from llmc.runtime.streaming import StreamingRunner

SEQ = 32
PROMPT = [1, 5, 7, 9, 11, 13, 17]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()[0]


@pytest.fixture(scope="module", params=["as planned", "every group streamed, prefetch 2"])
def artifact(request, model, tmp_path_factory):
    """The tiny Llama under 300 KiB (two layers streamed, nothing read ahead: its compute is too
    short to hide a read), and the same artifact with schedule.json edited to stream every group
    with two read ahead (the runtime follows the file; the sha256 check is for `llmc.load`)."""
    out = tmp_path_factory.mktemp("stream") / "art"
    art = llmc.compile(model, "reference", output=out, generation=True, max_seq_len=SEQ, prefill_chunk=4,
                       memory_budget="300KiB")
    if request.param != "as planned":
        path = out / "schedule.json"
        doc = json.loads(path.read_text())
        doc["prefetch"] = 2
        for g in doc["groups"]:
            g["resident"] = not g.get("tensors")
        doc["memory"]["window"] = sum(g["bytes"] for g in doc["groups"] if not g["resident"])  # all 3 held
        path.write_text(json.dumps(doc))
    return art


def steps(runner, spec, n=6):
    """Logits of a prefill and ``n`` decode steps (the greedy token fed back)."""
    caches = runner.new_caches(spec, 1)
    out = [runner(np.array([PROMPT]), np.arange(len(PROMPT))[None], np.ones((1, len(PROMPT)), bool), caches)]
    for i in range(n):
        token = int(out[-1][0, -1].argmax())
        ctx = len(PROMPT) + i + 1
        out.append(runner(np.array([[token]]), np.array([[ctx - 1]]), np.ones((1, ctx), bool), caches))
    return out, caches


def test_streamed_steps_equal_the_resident_run_exactly(artifact):
    doc = json.loads((artifact.path / "schedule.json").read_text())
    assert any(not g["resident"] for g in doc["groups"])
    runner = StreamingRunner(artifact.path)
    spec = GenerationSpec.from_manifest(artifact.manifest["generation"])
    streamed, caches = steps(runner, spec)
    resident, resident_caches = steps(ReferenceRunner(serialize.load(artifact.path)), spec)
    for a, b in zip(streamed, resident):
        assert np.array_equal(a, b)
    for a, b in zip(caches, resident_caches):
        assert np.array_equal(a, b)
    runner.close()


def test_generate_under_a_budget_gives_the_resident_tokens(model, tmp_path):
    art = llmc.compile(model, "reference", output=tmp_path / "art", generation=True, max_seq_len=SEQ,
                       memory_budget="300KiB")
    generator = art.generator()
    assert isinstance(generator.runner, StreamingRunner)
    prompts = [PROMPT, [3, 4, 200, 100, 7]]
    streamed = generator.generate(prompts, max_new_tokens=8)
    resident = art.generate(prompts, max_new_tokens=8, reference=True)  # the whole graph, memory-mapped
    assert streamed.ids == resident.ids and len(streamed.ids[0]) == 8


def test_a_failed_step_restarts_the_prefetch_in_order(artifact):
    runner = StreamingRunner(artifact.path)
    spec = GenerationSpec.from_manifest(artifact.manifest["generation"])
    caches = runner.new_caches(spec, 1)
    with pytest.raises(Exception):  # noqa: B017  (a step that fails mid-way: the cache is too short)
        runner(np.ones((1, SEQ + 1), np.int64), np.arange(SEQ + 1)[None], np.ones((1, SEQ + 1), bool), caches)
    assert runner.reader is None
    again, _ = steps(runner, spec, n=2)
    expected, _ = steps(ReferenceRunner(serialize.load(artifact.path)), spec, n=2)
    assert all(np.array_equal(a, b) for a, b in zip(again, expected))
    runner.close()


def test_unreadable_weights_are_a_clear_error(model, tmp_path):
    art = llmc.compile(model, "reference", output=tmp_path / "art", generation=True, max_seq_len=SEQ,
                       prefill_chunk=4, memory_budget="300KiB")
    runner = StreamingRunner(art.path)
    spec = GenerationSpec.from_manifest(art.manifest["generation"])
    doc = json.loads((art.path / "schedule.json").read_text())
    first = min(g["offset"] for g in doc["groups"] if not g["resident"] and g.get("tensors"))
    with open(art.path / "weights.safetensors", "r+b") as f:
        f.truncate(first + 10)
    with pytest.raises((ArtifactError, ModelLoadError), match="cannot read"):
        steps(runner, spec, n=1)
    runner.close()


def test_an_artifact_without_a_schedule_is_refused(model, tmp_path):
    art = llmc.compile(model, "reference", output=tmp_path / "plain", generation=True, max_seq_len=SEQ)
    with pytest.raises(ArtifactError, match="compile it with --memory-budget"):
        StreamingRunner(art.path)


def test_streamed_buffers_are_reused(artifact, monkeypatch):
    import mmap

    runner = StreamingRunner(artifact.path)
    spec = GenerationSpec.from_manifest(artifact.manifest["generation"])
    steps(runner, spec, n=2)  # the first cycle makes the buffers
    made = []
    real = mmap.mmap
    monkeypatch.setattr(mmap, "mmap", lambda fileno, *a, **k: made.append(fileno) or real(fileno, *a, **k))
    steps(runner, spec, n=4)
    runner.close()
    assert made.count(-1) == 0  # no new anonymous buffer: every read went into a kept one


def test_quantized_weights_stream_too(model, tmp_path):
    """A budget only the quantized model fits: checked once the w8 sizes are known."""
    art = llmc.compile(model, "reference", output=tmp_path / "q", generation=True, max_seq_len=SEQ, quant="w8",
                       memory_budget="150KiB")
    assert isinstance(art.generator().runner, StreamingRunner)
    assert art.generate(PROMPT, max_new_tokens=6).ids == art.generate(PROMPT, max_new_tokens=6, reference=True).ids
