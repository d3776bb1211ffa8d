"""Sparse + 4-bit: N:M pruned weights with their kept values quantized (``linear_nm_q``). The
storage keeps pruned positions exactly zero and is smaller than dense 4-bit; the cpu kernels match
the interpreter on one linear and on the tiny Llama; what is not built is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import llmc
from llmc.errors import PassError
from llmc.examples import tiny_llama
from llmc.ir import DType, Graph, TensorType
from llmc.ir.ops import registry
from llmc.ir.packing import Grid
from llmc.ir.packing import quantize as rtn
from llmc.passes.sparsity import prune
from llmc.passes.sparsity.storage import expanded, store

W4G128, W4G32 = Grid(4, 128, sym=False), Grid(4, 32, sym=False)
RNG = np.random.default_rng(0)


def _pruned(n, k, pattern):
    return prune.magnitude(RNG.standard_normal((n, k)).astype(np.float32), 0.5, pattern)


@pytest.mark.parametrize("pattern, grid", [("2:4", W4G128), ("4:8", W4G32)])
def test_pruned_positions_stay_zero_and_kept_values_are_rtn_of_them(pattern, grid):
    w = _pruned(48, 256, pattern)
    stored = store(w, pattern, grid)
    assert stored.op == "linear_nm_q" and stored.label() == f"{pattern}+w4g{grid.group}"
    q = expanded(stored)
    assert np.all(q[w == 0] == 0)  # pruned stays exactly zero (absent from the storage)
    kept = stored.tensors  # the kept values alone, quantized as a dense [N, K/2] weight would be
    values = w[w != 0].reshape(48, -1)
    again = rtn(values, grid)
    assert np.array_equal(kept["words"], again.words) and np.array_equal(kept["scale"], again.scale)
    np.testing.assert_array_equal(q[w != 0].reshape(48, -1), again.dequantize())


def test_composed_bytes_of_a_smollm2_mlp_linear():
    """up_proj of SmolLM2-135M (1536 x 576): 2:4 + w4g128 against dense w4g128 and float16."""
    n, k = 1536, 576
    stored = store(_pruned(n, k, "2:4"), "2:4", W4G128)
    codes, scales, index = n * 288 // 2, n * 3 * 2 * 2, n * 288 // 4  # 4-bit codes, f16 scale+min, 2-bit indices
    assert stored.nbytes == codes + scales + index == 350208
    assert stored.dense_nbytes == rtn(np.zeros((n, k), np.float32), W4G128).nbytes == 473088
    assert stored.nbytes / (n * k * 2) == pytest.approx(0.198, abs=1e-3)


def _linear_graph(stored, rows, kernel, bias):
    n, k = stored.shape
    g = Graph("sparse_quant")
    x = g.add_input("x", TensorType(DType.f32, (1, rows, k)))
    extra = [g.add_const("bias", RNG.standard_normal(n).astype(np.float32))] if bias is not None else []
    consts = [g.add_const(f"w.{key}", t) for key, t in stored.tensors.items()]
    g.outputs = [g.call(stored.op, x, *consts, *extra, **stored.attrs, kernel=kernel)]
    return g


@pytest.mark.parametrize("pattern, grid, rows, kernel", [
    ("2:4", W4G128, 1, "sparse"),   # decode: the SparseNM schedule, codes dequantized in the loop
    ("4:8", W4G32, 5, "sparse"),    # prefill: each reduction step's panel expanded once
    ("2:4", W4G32, 3, "dense"),     # W dequantized and expanded at load time
])
def test_cpu_kernel_matches_the_reference(pattern, grid, rows, kernel, tmp_path, close):
    pytest.importorskip("tvm")
    stored = store(_pruned(40, 256, pattern), pattern, grid)  # 40 rows: the last weight panel is partial
    bias = RNG.standard_normal(40).astype(np.float32) if rows > 1 else None
    x = RNG.standard_normal((1, rows, 256)).astype(np.float32)
    graph = _linear_graph(stored, rows, kernel, bias)
    inputs = [x, *stored.tensors.values(), *([graph.constants["bias"].const.numpy()] if bias is not None else [])]
    want = registry.get("linear_nm_q").reference(inputs, {**stored.attrs, "kernel": kernel})
    art = llmc.compile(graph, target="cpu", output=tmp_path / "a")
    assert art.manifest["payload"]["unscheduled_kernels"] == []
    close(next(iter(art.run({"x": x}).values())), want, rtol=1e-5)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "ids.npz"
    np.savez(path, input_ids=np.random.default_rng(0).integers(0, 256, (4, 24)))
    return path


PROMPT = [1, 5, 7, 9, 11, 13, 17, 19, 23, 42]


def _prefill(art):
    gen = art.generator()
    return gen.prefill(np.array([PROMPT]), np.ones((1, len(PROMPT)), bool), gen.runner.new_caches(gen.spec, 1))


def _compile(tmp_path, target, calibration, **kw):
    return llmc.compile(tiny_llama()[0], target=target, output=tmp_path / target, generation=True, max_seq_len=64,
                        prefill_chunk=4, calibration=calibration, sparsity_pattern="2:4", sparsity_method="wanda",
                        quant="w4g128", **kw)


def test_tiny_llama_2_4_w4g128_interpreter_and_cpu_match(tmp_path, calibration, monkeypatch, close):
    pytest.importorskip("tvm")
    from llmc.passes.sparsity import bench

    monkeypatch.setattr(bench, "measure", lambda stored, sizes: {s: {"dense": 2e-5, "sparse": 1e-5} for s in sizes})
    ref, cpu = _compile(tmp_path, "reference", calibration), _compile(tmp_path, "cpu", calibration)
    section = cpu.manifest["sparsity"]
    layers = section["layers"]
    assert len(layers) == 14 and all(r["kernel"] == "sparse" and r["storage"] == "2:4+w4g128" for r in layers)
    assert all(r["format"] == "w4g128" for r in layers) and section["quant"] == "w4g128"
    dense_w4 = sum(rtn(np.zeros(r["shape"], np.float32), W4G128).nbytes for r in layers)
    assert sum(r["bytes"] for r in layers) < 0.85 * dense_w4
    ops = [n.op for n in cpu.graph.nodes]
    assert ops.count("linear_nm_q") == 14 and "linear_nm" not in ops
    quantized = {r["origin"] for r in cpu.manifest["quantization"]["layers"]}  # the rest: embedding (tied head)
    assert quantized and not quantized & {r["origin"] for r in layers}
    close(_prefill(cpu), _prefill(ref))
    report = (cpu.path / "report.md").read_text()
    assert "2:4+w4g128" in report and "w4g128" in report


def test_not_applied_for_speed_keeps_the_layer_for_the_quantizer():
    from llmc.codegen.devices import get
    from llmc.frontend.causal import load_causal_lm
    from llmc.passes.sparsity import sparsify
    from llmc.passes.sparsity.options import SparsityOptions

    graph = load_causal_lm(tiny_llama()[0], max_seq_len=64).graph
    graph, records = sparsify(graph, SparsityOptions(pattern="2:4", method="magnitude"), target="cpu",
                              sizes={"decode": 1}, device=get("h100"), grid=W4G128,
                              measure=lambda stored, sizes: {s: {"dense": 1e-5, "sparse": 2e-5} for s in sizes})
    assert not any(r.decision.applied for r in records)
    assert all(r.bytes == store(np.zeros(r.shape, np.float32), "2:4", W4G128).dense_nbytes for r in records)
    assert not any(n.op.startswith("linear_nm") for n in graph.nodes)  # unpruned: plain dense w4g128 follows


def test_size_runs_a_quantized_sparse_weight_by_its_kernel_on_the_cpu():
    """Not faster than dense w4g128, but expanding it at load time would hold it in float32."""
    from llmc.codegen.devices import get
    from llmc.passes.sparsity.decide import decide

    stored = store(_pruned(64, 256, "2:4"), "2:4", W4G128)
    slower = lambda stored, sizes: {s: {"dense": 1e-5, "sparse": 2e-5} for s in sizes}  # noqa: E731
    cpu = decide(stored, "cpu", {"decode": 1}, get("h100"), "size", slower)
    assert not cpu.applied and cpu.kernel == "sparse" and cpu.reason.endswith("run by its sparse kernel for size "
                                                                              "(no float32 expansion)")
    assert decide(stored, "cpu", {"decode": 1}, get("h100"), "speed", slower).kernel is None
    assert decide(stored, "cuda", {"decode": 1}, get("h100"), "size", slower).kernel == "dense"


@pytest.mark.parametrize("kwargs, text", [
    ({"sparsity": 0.5, "quant": "w4g128"}, "unstructured sparsity with w4g128 is not"),
    ({"sparsity_pattern": "2:4", "quant": "w3g128"}, "format w3g128 is not"),
    ({"sparsity_pattern": "2:4", "quant": "w2g64"}, "format w2g64 is not"),
    ({"sparsity_pattern": "2:4", "quant": "w8a8"}, "format w8a8 is not"),
    ({"sparsity_pattern": "2:4", "quant": "w4g128+o0.005"}, "format w4g128\\+o0.005 is not"),
    ({"sparsity_pattern": "2:4", "quant": "w4g64"}, "format w4g64 on target reference is not"),
    ({"sparsity_pattern": "2:4", "quant": "w4g128", "quant_method": "gptq"}, "--quant-method gptq"),
    ({"sparsity_pattern": "2:4", "quant": "mixed"}, "a recipe or --quant mixed"),
    ({"sparsity_pattern": "2:4", "recipe": {"default": "w4g128"}}, "a recipe or --quant mixed"),
])
def test_what_is_not_built_is_refused_by_name(kwargs, text, tmp_path, monkeypatch):
    from llmc.passes.quantize import calibration as calib

    monkeypatch.setattr(calib, "stream", lambda *a, **k: pytest.fail("calibration ran"))
    with pytest.raises(PassError, match=text) as info:
        llmc.compile(tiny_llama()[0], target="reference", output=tmp_path / "a", generation=True, max_seq_len=64,
                     sparsity_method="magnitude", **kwargs)
    assert "N:M (2:4, 4:8) with a 4-bit weight-only format" in str(info.value)
