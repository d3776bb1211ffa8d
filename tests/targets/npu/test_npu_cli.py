"""The CLI on NPU artifacts: `llmc compile --target=npu --chunk`, `llmc run`, `llmc generate`."""

import numpy as np

from llmc.cli import main


def test_cli_compile_and_run_small_cnn(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code = main(["compile", "small-cnn", "--target=npu", "--option", f"calib={tmp_path / 'in.npz'}",
                 "-o", str(tmp_path / "art")])
    assert code == 0, capsys.readouterr().err
    code = main(["run", str(tmp_path / "art"), "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(tmp_path / "out.npz")])
    out = capsys.readouterr().out
    assert code == 0 and "npu runtime" in out
    with np.load(tmp_path / "out.npz") as got:
        assert got["output"].shape == (2, 10)


def test_cli_generate_on_a_chunked_llm(tiny_llm, capsys):
    code = main(["generate", str(tiny_llm.path), "--prompt-ids", ",".join(["7"] * 19), "--max-new-tokens", "4"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "npu runtime" in out.out + out.err
