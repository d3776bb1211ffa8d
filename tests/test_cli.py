"""The llmc command: compile / inspect / run / targets, exit codes and error lines.

Most tests call ``main(argv)`` in-process (fast); one runs the installed ``llmc`` script.
"""

import argparse
import contextlib
import io
import json
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest

import llmc
from llmc.cli import main

README = Path(__file__).parents[1] / "README.md"


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def mlp_onnx(path: Path) -> Path:
    """A static ONNX MLP x[2, 8] -> MatMul -> Add -> Relu -> y[2, 4], built without torch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Add", ["h", "b"], ["z"], name="add"),
             helper.make_node("Relu", ["z"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def readme_cli(tmp_path_factory):
    """The README's command-line block, run line by line in a fresh folder (via main, in-process).

    It compiles tiny-llama with a dynamic sequence length, runs it at seq=7 and compares it with a
    fresh capture; returns the folder and each line's (exit code, stdout, stderr).
    """
    block = re.search(r"## Command line\n\n```sh\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    folder = tmp_path_factory.mktemp("readme")
    results = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for line in block.strip().splitlines():
            argv = shlex.split(line.split("#")[0])
            assert argv[0] == "llmc"
            with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
                code = main(argv[1:])
            results.append((line, code, out.getvalue(), err.getvalue()))
    return folder, results


def test_readme_cli_examples_run(readme_cli):
    folder, results = readme_cli
    for line, code, out, err in results:
        assert code == 0, f"{line}: {err}"
    assert llmc.load(folder / "out" / "tl-dyn").manifest["model"]["symbols"] == ["seq"]
    run_out = next(out for line, _, out, _ in results if line.startswith("llmc run"))
    assert "[1, 7]" in run_out and re.search(r"logits\s+│\s+\S+\s+│\s+ok", run_out)
    with np.load(folder / "out" / "logits.npz") as saved:
        assert saved["logits"].shape == (1, 7, 256)


def test_compile_by_the_installed_script(tmp_path, capsys):
    proc = subprocess.run(["llmc", "compile", "small-cnn", "--target=reference", "-o", str(tmp_path / "cnn")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {tmp_path / 'cnn'}" in proc.stdout and proc.stderr == ""
    code, out, err = cli(capsys, "run", tmp_path / "cnn", "--compare-with", "small-cnn", "--input-shape", "x=2x3x32x32")
    assert code == 0 and "ok" in out, err


def test_targets_lists_reference(capsys):
    code, out, _ = cli(capsys, "targets")
    assert code == 0 and "reference" in out and "O0, O1" in out


def test_compile_inspect_and_run_an_onnx_file(tmp_path, capsys):
    model = mlp_onnx(tmp_path / "mlp.onnx")
    code, out, err = cli(capsys, "compile", model, "-o", tmp_path / "art", "-O0", "--verify")
    assert code == 0, err
    assert "wrote" in out and "passes" in out
    code, out, _ = cli(capsys, "inspect", tmp_path / "art", "--json")
    manifest = json.loads(out)
    assert manifest == llmc.load(tmp_path / "art").manifest and manifest["opt_level"] == "O0"
    code, out, _ = cli(capsys, "inspect", tmp_path / "art")
    assert code == 0 and "signature" in out and "sha256" in out

    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, out, err = cli(capsys, "run", tmp_path / "art", "--inputs", tmp_path / "in.npz",
                         "--outputs", tmp_path / "out.npz", "--compare-with", model)
    assert code == 0, err
    assert re.search(r"y\s+│\s+0\s+│\s+ok", out)
    with np.load(tmp_path / "out.npz") as result:
        np.testing.assert_array_equal(result["y"], llmc.load(tmp_path / "art").run({"x": x})["y"])


def test_compile_a_pt2_program_and_compare(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Tanh()).eval()
    torch.export.save(torch.export.export(model, (torch.randn(3, 16),)), tmp_path / "m.pt2")
    code, _, err = cli(capsys, "compile", tmp_path / "m.pt2", "-o", tmp_path / "art")
    assert code == 0, err
    code, out, err = cli(capsys, "run", tmp_path / "art", "--compare-with", tmp_path / "m.pt2")
    assert code == 0 and "ok" in out, err
    code, _, err = cli(capsys, "inspect", tmp_path / "m.pt2", "--input-shape", "input=4x16")
    assert code == 1 and "exported" in err


def test_inspect_a_model_as_tables_json_and_ir(tmp_path, capsys):
    model = mlp_onnx(tmp_path / "mlp.onnx")
    code, out, _ = cli(capsys, "inspect", model)
    assert code == 0 and "parameters" in out and "layers" in out
    code, out, _ = cli(capsys, "inspect", model, "--json")
    facts = json.loads(out)
    assert facts["parameters"] == 8 * 4 + 4 and facts["inputs"] == [{"name": "x", "dtype": "f32", "shape": [2, 8]}]
    code, out, _ = cli(capsys, "inspect", model, "--ir")
    assert out.startswith("graph ") and "return %y" in out


def test_random_ids_stay_inside_the_vocabulary(readme_cli):
    from llmc.cli.run import random_inputs, vocab_size

    graph = llmc.load(readme_cli[0] / "out" / "tl-dyn").graph
    assert vocab_size(graph.inputs[0]) == 256
    ids = random_inputs(graph, {"input_ids": (1, 300)}, {}, seed=1)["input_ids"]
    assert ids.shape == (1, 300) and ids.min() >= 0 and ids.max() < 256 and ids.max() > 200


def test_usage_errors_exit_2(capsys):
    assert cli(capsys, "compile", "tiny-llama")[0] == 2  # no -o
    assert cli(capsys, "compile", "tiny-llama", "-o", "x", "--input-shape", "ids=1by2")[0] == 2
    assert cli(capsys, "frobnicate")[0] == 2


def test_llmc_errors_are_one_line_and_exit_1(tmp_path, capsys):
    code, out, err = cli(capsys, "inspect", tmp_path / "missing.onnx")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.onnx" in err
    with pytest.raises(llmc.errors.ModelLoadError):
        main(["inspect", str(tmp_path / "missing.onnx"), "--debug"])


def test_error_line_drops_a_verify_listing():
    from llmc.cli import _without_listing

    error = llmc.errors.VerifyError("output %y is mistyped", where="relu r\n  >> %y = relu(%x)", hint="rebuild it")
    assert _without_listing(error) == "output %y is mistyped (at relu r). rebuild it"


def test_run_rejects_unknown_inputs(readme_cli, tmp_path, capsys):
    artifact = readme_cli[0] / "out" / "tl-dyn"
    np.savez(tmp_path / "in.npz", tokens=np.zeros((1, 4), np.int64))
    code, _, err = cli(capsys, "run", artifact, "--inputs", tmp_path / "in.npz")
    assert code == 1 and "input_ids" in err
    code, _, err = cli(capsys, "run", artifact, "--input-shape", "input_ids=1x4x2")
    assert code == 1 and "rank" in err
    code, _, err = cli(capsys, "run", artifact, "--size", "sq=4")
    assert code == 1 and "no symbolic dim(s) ['sq']" in err and "['seq']" in err


def test_ci_runs_the_readme_commands():
    text = README.read_text()
    setup, tests = re.findall(r"```sh\n(.*?)\n```", text, re.DOTALL)[:2]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text().splitlines()
    assert setup in ci and tests in ci
    assert "pip install torch==2.13.0" in setup and "set -euo pipefail" in ci


def test_target_option_flags_reach_the_target(tmp_path, capsys):
    from llmc.cli.commands import target_options as merge

    args = argparse.Namespace(option=[("nvcc", "/x/nvcc")], arch="sm_90", dtype=None, cpu=None, device=None,
                              chunk=None, fpga_bits=None)
    assert merge(args) == {"nvcc": "/x/nvcc", "arch": "sm_90"}
    code, _, err = cli(capsys, "compile", "small-cnn", "-o", tmp_path / "a", "--arch", "sm_90")
    assert code == 1 and "no option(s) ['arch']" in err and not (tmp_path / "a").exists()
