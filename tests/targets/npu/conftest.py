"""Artifacts shared by the NPU tests (compiled once per session): small-cnn, MiniLM, a tiny Llama."""

import numpy as np
import pytest

import llmc

@pytest.fixture(scope="session")
def cnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npu-cnn")
    rng = np.random.default_rng(0)
    np.savez(folder / "cal.npz", x=rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    art = llmc.compile("small-cnn", target="npu", output=folder / "art", calib=str(folder / "cal.npz"))
    return art, dict(np.load(folder / "cal.npz"))


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    from llmc.examples import minilm_inputs

    folder = tmp_path_factory.mktemp("npu-minilm")
    ids, mask = minilm_inputs()
    np.savez(folder / "cal.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    art = llmc.compile("minilm", target="npu", output=folder / "art", calib=str(folder / "cal.npz"))
    return art, dict(np.load(folder / "cal.npz"))


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """A 2-layer Llama step graph, prefill in chunks of 8 tokens (cache of 64), calibrated on random ids."""
    from llmc.examples import tiny_llama

    folder = tmp_path_factory.mktemp("npu-llm")
    rng = np.random.default_rng(0)
    np.savez(folder / "ids.npz", input_ids=rng.integers(0, 256, (4, 16)).astype(np.int64))
    return llmc.compile(tiny_llama()[0], target="npu", output=folder / "art", generation=True, max_seq_len=64,
                        prefill_chunk=64, chunk=8, calib=str(folder / "ids.npz"))
