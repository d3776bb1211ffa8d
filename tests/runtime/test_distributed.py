"""Pipeline stages: a tiny Llama compiled with --stages runs as torch.distributed processes (gloo),
generates exactly the one-process tokens, and a stage that dies stops the others with a clear error."""

from __future__ import annotations

import os
import signal
import time

import pytest

import llmc
from llmc.cli import main
from llmc.errors import InputError, TargetError
from llmc.examples import tiny_llama
from llmc.passes.schedule.stages import balanced_ranges

PROMPTS = [[1, 5, 7, 9, 11, 13, 17, 19, 23], [3, 4, 200, 100, 7]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()[0]


@pytest.fixture(scope="module")
def staged(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("stages") / "three"
    return llmc.compile(model, "reference", output=out, generation=True, max_seq_len=32, prefill_chunk=4, stages=3)


def test_balanced_ranges():
    assert balanced_ranges([1, 1, 1, 1], 2) == [(0, 1), (2, 3)]
    assert balanced_ranges([0, 5, 1, 1, 1, 0], 2) == [(0, 1), (2, 5)]
    assert balanced_ranges([1, 2, 3], 3) == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(InputError, match="--stages 5"):
        balanced_ranges([1, 2, 3, 4], 5)


def test_stage_payloads_and_interfaces(staged):
    import json

    doc = json.loads((staged.path / "schedule.json").read_text())
    stages = doc["stages"]
    assert [s["units"] for s in stages] == [[0, 1], [2, 2], [3, 3]]
    for s in stages:
        assert (staged.path / s["folder"] / "graph.json").is_file()
        assert (staged.path / s["folder"] / "weights.safetensors").is_file()
    assert stages[0]["caches"] == ["cache_k.0", "cache_v.0"] and stages[2]["caches"] == []
    assert stages[0]["send"] == stages[1]["receive"] and stages[1]["send"] == stages[2]["receive"]
    assert "logits" in stages[2]["outputs"]


def test_two_stages_generate_the_one_process_tokens(model, tmp_path, capsys):
    art = llmc.compile(model, "reference", output=tmp_path / "two", generation=True, max_seq_len=32,
                       prefill_chunk=4, stages=2)
    expected = art.generate(PROMPTS[0], max_new_tokens=8).ids[0]
    assert main(["generate", str(art.path), "--distributed", "--prompt-ids", ",".join(map(str, PROMPTS[0])),
                 "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == [str(t) for t in expected]
    assert "in 2 stage processes" in out.err


def test_a_dead_stage_stops_the_others(staged, capfd):
    expected = staged.generate(PROMPTS, max_new_tokens=4).ids
    generator = staged.generator(distributed=True)
    assert generator.generate(PROMPTS, max_new_tokens=4).ids == expected  # three ranks, a batch of two
    assert generator.generate(PROMPTS[1], max_new_tokens=2).ids == [expected[1][:2]]  # new caches, same ranks
    (_, middle), (_, last) = generator.runner.processes
    os.kill(middle.pid, signal.SIGKILL)
    start = time.perf_counter()
    with pytest.raises(TargetError, match=rf"pipeline stage 1 \(pid {middle.pid}\) exited with code -9"):
        generator.generate(PROMPTS[0], max_new_tokens=4)
    assert time.perf_counter() - start < 30
    assert last.returncode == 1  # it noticed and ended itself (not killed by the launcher: that is -9)
    assert "error: stage 2: pipeline stage 1 stopped answering stage 2" in capfd.readouterr().err


def test_stages_refused_before_any_build(model, tmp_path):
    with pytest.raises(InputError, match="--stages 9"):
        llmc.compile(model, "reference", output=tmp_path / "a", generation=True, max_seq_len=32, stages=9)
    with pytest.raises(InputError, match=r"stage \d of 2 needs .* more than --memory-budget"):
        llmc.compile(model, "reference", output=tmp_path / "b", generation=True, max_seq_len=32, stages=2,
                     memory_budget="100KiB")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
