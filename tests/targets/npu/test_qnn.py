"""NPU chunks on ONNX Runtime's QNN execution provider (HTP backend; an x86-64 simulator here) with
``session.disable_cpu_ep_fallback=1``: loading proves every node of every NPU chunk is on the HTP."""

import pytest

from npu_checks import make_plan_of
from llmc.targets.npu.agreement import agreement
from llmc.targets.npu.runner import Session

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install 'llmc[npu]')")

TOL_LSB_QNN = {"uint8": 2.01, "uint16": 64.0}  # the simulator is not bit-identical to the CPU provider


def test_every_npu_chunk_loads_on_the_htp_without_cpu_fallback(cnn, minilm, tiny_llm):
    for art, variants in ((cnn[0], ["forward"]), (minilm[0], ["forward"]), (tiny_llm, ["prefill", "decode"])):
        session = Session(art.path, provider="qnn")
        for variant in variants:
            sessions = session.sessions(variant)
            chunks = session.schedule["variants"][variant]["chunks"]
            for chunk, s in zip(chunks, sessions):
                if chunk["device"] == "npu":
                    assert s.get_providers()[0] == "QNNExecutionProvider"


def test_htp_simulator_agrees_within_a_few_lsb(cnn):
    art, feeds = cnn
    worst, _ = agreement(make_plan_of(art), art.path, "forward", feeds, provider="qnn")
    assert worst["uint8"] <= TOL_LSB_QNN["uint8"]


def test_generation_on_the_htp_matches_the_cpu_provider(tiny_llm, monkeypatch):
    import numpy as np

    prompt = [int(t) for t in np.random.default_rng(1).integers(0, 256, 21)]
    cpu = tiny_llm.generate(prompt, max_new_tokens=6)
    monkeypatch.setenv("LLMC_NPU_EP", "qnn")
    htp = tiny_llm.generate(prompt, max_new_tokens=6)
    assert htp.ids == cpu.ids


def test_qnn_context_binaries_load_and_agree(cnn, tmp_path, monkeypatch):
    import json

    import numpy as np

    import llmc

    art, feeds = cnn
    np.savez(tmp_path / "cal.npz", **feeds)
    ctx = llmc.compile("small-cnn", target="npu", output=tmp_path / "ctx", calib=str(tmp_path / "cal.npz"),
                       qnn_context=True)
    entry = json.loads((ctx.path / "schedule.json").read_text())["variants"]["forward"]["chunks"][0]
    assert entry["qnn_context"] == "chunks/00_npu_ctx.onnx" and (ctx.path / entry["qnn_context"]).is_file()
    monkeypatch.setenv("LLMC_NPU_EP", "qnn")
    from_context, compiled = ctx.run(feeds)["output"], art.run(feeds)["output"]
    np.testing.assert_array_equal(from_context, compiled)  # the same HTP program, compiled earlier
