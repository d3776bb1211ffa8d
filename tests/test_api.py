"""The Python API: llmc.compile / llmc.load / Artifact.run, against torch and the interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llmc
from llmc.errors import LLMCError, TargetError
from llmc.ir import DType, Graph, TensorType, run

README = Path(__file__).parents[1] / "README.md"


def mlp_graph() -> Graph:
    """x [batch, 16] -> linear -> gelu -> linear -> [batch, 4]."""
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    x = g.add_input("x", TensorType(DType.f32, ("batch", 16)))
    h = g.call("linear", x, g.add_const("w1", rng.standard_normal((32, 16)).astype(np.float32)))
    h = g.call("gelu", h)
    g.outputs = [g.call("linear", h, g.add_const("w2", rng.standard_normal((4, 32)).astype(np.float32)))]
    return g


def test_import_is_lazy():
    code = "import sys, llmc; assert not {'llmc.api', 'numpy', 'torch'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compile_graph_run_and_reload(tmp_path):
    graph = mlp_graph()
    art = llmc.compile(graph, output=tmp_path / "a", sizes={"batch": 2})
    assert art.path == tmp_path / "a" and art.target == "reference"
    assert art.passes and all(r.seconds >= 0 for r in art.passes)
    assert art.manifest["model"]["symbols"] == ["batch"]
    assert art.manifest["model"]["sizes"] == {"batch": 2}
    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    expected = run(mlp_graph(), {"x": x})
    got = art.run({"x": x})
    again = llmc.load(tmp_path / "a").run({"x": x})
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-6)
        np.testing.assert_array_equal(again[name], got[name])


def test_two_compiles_are_byte_identical(tmp_path):
    for out in ("a", "b"):
        llmc.compile(mlp_graph(), output=tmp_path / out)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_captured_example_compiles_byte_identically_and_reloads(tmp_path):
    pytest.importorskip("torch")
    arts = [llmc.compile("small-cnn", output=tmp_path / out) for out in ("a", "b")]
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    fresh = arts[0].run({"x": x})
    reloaded = llmc.load(tmp_path / "b").run({"x": x})
    assert list(fresh) == list(reloaded)
    for name in fresh:
        np.testing.assert_array_equal(fresh[name], reloaded[name])


def test_output_defaults_to_a_new_temporary_folder():
    art = llmc.compile(mlp_graph(), opt_level="0")
    assert (art.path / "manifest.json").is_file() and art.manifest["opt_level"] == "O0"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"target": "nope"}, LLMCError, "unknown target 'nope'"),
    ({"opt_level": "O7"}, TargetError, "no pipeline O7"),
    ({"frobnicate": "1"}, TargetError, "no option"),
])
def test_bad_compile_arguments_write_nothing(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        llmc.compile(mlp_graph(), output=tmp_path / "a", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_compile_torch_module_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()
    art = llmc.compile(model, example_inputs=(torch.randn(2, 16),), output=tmp_path / "mlp")
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    got = art.run({art.input_names[0]: x})[art.output_names[0]]
    want = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    block = re.search(r"## Python\n\n```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {})  # noqa: S102 -- the README example is the code under test
    assert (tmp_path / "out" / "mlp" / "manifest.json").is_file()
    assert capsys.readouterr().out.strip() == "676"  # the count the README's comment claims
