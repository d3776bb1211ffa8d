"""The cpu runtime path: TVM's runtime alone (TVM_USE_RUNTIME_LIB=1), DLPack tensors in and out."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from tvm_op_graph import small_graph

from llmc.ir.interpreter import run
from llmc.testing import assert_close


@pytest.fixture(scope="module")
def mlp(compiled):
    return compiled("mlp-cpu", small_graph(), "cpu")


def test_runs_with_the_runtime_library_only(mlp, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 6, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys, numpy as np, tvm
        assert tvm._RUNTIME_ONLY
        from llmc.targets.gpu.runtime import Session
        out = Session({str(mlp.path)!r}).run({{"x": np.load({str(tmp_path / 'x.npy')!r})}})
        np.save({str(tmp_path / 'y.npy')!r}, next(iter(out.values())))
        assert "tvm.relax" not in sys.modules
    """)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    expected = next(iter(run(mlp.graph, {"x": x}).values()))
    assert_close(np.load(tmp_path / "y.npy"), expected)


def test_torch_tensors_in_and_out(mlp):
    from llmc.targets.gpu.runtime import Session

    x = torch.randn(1, 3, 16)
    out = next(iter(Session(mlp.path).run({"x": x}).values()))
    assert isinstance(out, torch.Tensor)
    expected = next(iter(run(mlp.graph, {"x": x.numpy()}).values()))
    assert_close(out.numpy(), expected)
