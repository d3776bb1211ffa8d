"""Every op of the registry lowers through TVM, runs on the cpu target, and matches the interpreter."""

import numpy as np
import pytest
from tvm_checks import library_kernels, mismatches
from tvm_op_graph import inputs

from llmc.codegen.tvm.lower import FUSED_PREFIX
from llmc.codegen.tvm.registry import lowered_ops
from llmc.errors import InputError
from llmc.ir.interpreter import run
from llmc.ir.ops import registry


def _ops(graph) -> set[str]:
    out = set()
    for node in graph.nodes:
        out.add(node.op)
        if node.op == "fused":
            out |= _ops(node.attrs["body"])
    return out


def test_every_registry_op_has_a_lowering():
    assert set(registry.names()) - lowered_ops() == set()


def test_the_op_graph_uses_every_op(all_ops):
    graph, _ = all_ops
    assert set(registry.names()) - _ops(graph) == set()


@pytest.fixture(scope="module")
def cpu_ops(all_ops, compiled):
    graph, names = all_ops
    return graph, names, compiled("all-ops-cpu", graph, "cpu", opt_level="O0")


@pytest.mark.parametrize("seq,kv", [(5, 9), (1, 1), (13, 20)])
def test_cpu_matches_the_interpreter_at_every_size(cpu_ops, seq, kv):
    graph, names, art = cpu_ops
    feeds = inputs(seq, kv)
    assert mismatches(art.run(feeds), run(graph, feeds), names, rtol=1e-4) == []


def test_fused_nodes_are_one_kernel_each(cpu_ops):
    graph, _, art = cpu_ops
    payload = art.manifest["payload"]
    fused = [n for n in graph.nodes if n.op == "fused"]
    kernels = {k: v for k, v in payload["kernels"].items() if k.startswith(FUSED_PREFIX)}
    assert len(kernels) == len(fused)
    assert sorted(o for origins in kernels.values() for o in origins) == sorted(n.name for n in fused)


def test_manifest_kernels_are_the_library_s(cpu_ops):
    """Every kernel the manifest counts is in model.so with the IR origins it computes; the library
    holds nothing else but TVM's shape function and reshapes that run as views."""
    art = cpu_ops[2]
    payload = art.manifest["payload"]
    kernels = set(payload["kernels"])
    assert len(kernels) <= payload["kernels_per_call"]["main"] + payload["load_time_kernels"]
    assert all(payload["kernels"].values())
    in_library = library_kernels(art.path / "model.so")
    assert kernels <= in_library
    assert all(k == "shape_func" or k.startswith("reshape") for k in in_library - kernels)


def test_cpu_runtime_checks_inputs(cpu_ops):
    _, _, art = cpu_ops
    feeds = inputs()
    with pytest.raises(InputError, match="missing"):
        art.run({k: v for k, v in feeds.items() if k != "a"})
    with pytest.raises(InputError, match="axis 3"):
        art.run({**feeds, "a": np.zeros((2, 3, 8, 7), np.float32)})
    with pytest.raises(InputError, match="dtype"):
        art.run({**feeds, "ia": feeds["ia"].astype(np.float32)})
