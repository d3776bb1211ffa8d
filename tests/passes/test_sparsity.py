"""The sparsity pass: pruning methods and patterns, compact storage, the apply-or-not decision
(with injected kernel times, so it is deterministic), the interpreter against the cpu target on
sparse kernels, the cuda build, and the options refused before any calibration."""

from __future__ import annotations

import numpy as np
import pytest

import llmc
from llmc.errors import InputError, PassError, TargetError
from llmc.examples import tiny_llama
from llmc.ir.ops.sparsity import compress_bitmap, compress_nm, expand_bitmap, expand_nm
from llmc.passes.sparsity import prune
from llmc.passes.sparsity.decide import decide
from llmc.passes.sparsity.options import SparsityOptions
from llmc.passes.sparsity.storage import expanded, store

PROMPT = [1, 5, 7, 9, 11, 13, 17, 19, 23, 42]
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "ids.npz"
    np.savez(path, input_ids=np.random.default_rng(0).integers(0, 256, (4, 24)))
    return path


def test_patterns_keep_what_they_promise():
    w = RNG.standard_normal((8, 32)).astype(np.float32)
    nm = prune.magnitude(w, 0.5, "2:4")
    assert ((nm.reshape(8, 8, 4) != 0).sum(-1) == 2).all()
    assert ((prune.magnitude(w, 0.5, "4:8").reshape(8, 4, 8) != 0).sum(-1) == 4).all()
    assert (prune.magnitude(w, 0.25, "unstructured") != 0).sum() == 64
    norm = np.ones(32, np.float32)
    norm[:4] = 100.0  # loud input features: Wanda keeps their weights in every row
    kept = prune.wanda(w, norm, 0.25, "unstructured") != 0
    assert kept[:, :4].all() and (kept.sum(1) == 8).all()


def test_sparsegpt_compensates_what_it_prunes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 32)) @ rng.standard_normal((32, 32))  # correlated inputs
    w = rng.standard_normal((16, 32)).astype(np.float32)
    h = x.T @ x / len(x)

    def err(p):
        return np.linalg.norm(x @ (w - p).T) / np.linalg.norm(x @ w.T)

    for pattern in ("unstructured", "2:4"):
        sgpt = prune.sparsegpt(w, h, 0.5, pattern)
        assert (sgpt != 0).mean() == pytest.approx(0.5, abs=0.02)
        assert err(sgpt) < 0.85 * err(np.where(sgpt != 0, w, 0))  # the update, against the same mask without it
        assert err(sgpt) < err(prune.magnitude(w, 0.5, pattern))


def test_sparsegpt_refuses_non_finite_weights():
    w = np.ones((4, 8), np.float32)
    w[2, 3] = np.nan
    with pytest.raises(llmc.errors.LLMCError, match="weights with inf/NaN"):  # refused before pruning, not after
        prune.sparsegpt(w, np.eye(8), 0.5, "2:4")


def test_storage_round_trips_and_csr_only_when_smaller():
    w = prune.magnitude(RNG.standard_normal((6, 40)).astype(np.float32), 0.5, "2:4")
    assert np.array_equal(expand_nm(*compress_nm(w, 2, 4), 2, 4, 40), w)
    u = prune.magnitude(RNG.standard_normal((6, 40)).astype(np.float32), 0.3, "unstructured")
    assert np.array_equal(expand_bitmap(*compress_bitmap(u), 40), u)
    assert store(u, "unstructured").storage == "bitmap"
    sparse = prune.magnitude(RNG.standard_normal((64, 256)).astype(np.float32), 0.03, "unstructured")
    stored = store(sparse, "unstructured")
    assert stored.storage == "csr" and stored.nbytes < store(u, "unstructured").nbytes * 64
    np.testing.assert_allclose(expanded(stored), sparse, rtol=1e-3, atol=1e-3)  # float16 values


def _times(dense, sparse):
    return lambda stored, sizes: {s: {"dense": dense, "sparse": sparse} for s in sizes}


def test_decision_follows_the_measured_times():
    from llmc.codegen.devices import get

    stored = store(prune.magnitude(RNG.standard_normal((64, 256)).astype(np.float32), 0.5, "2:4"), "2:4")
    sizes, device = {"decode": 1, "prefill": 4}, get("h100")
    faster = decide(stored, "cpu", sizes, device, "speed", _times(2e-5, 1e-5))
    assert faster.applied and faster.kernel == "sparse" and faster.measured["decode"]["sparse"] == 1e-5
    slower = decide(stored, "cpu", sizes, device, "speed", _times(1e-5, 2e-5))
    assert not slower.applied and slower.kernel is None
    assert slower.reason == "not applied: no speedup on cpu at these sizes (measured: decode, prefill)"
    assert decide(stored, "cpu", sizes, device, "size", _times(1e-5, 2e-5)).kernel == "dense"
    cuda = decide(stored, "cuda", sizes, device, "size", _times(2e-5, 1e-5))
    assert not cuda.applied and cuda.kernel == "dense" and "no sparse kernel on cuda" in cuda.reason


def test_decision_asks_the_cost_model_first():
    from llmc.codegen.devices import get

    dense_density = store(RNG.standard_normal((64, 256)).astype(np.float32), "unstructured")  # bitmap of everything

    def never(*_):
        raise AssertionError("measured although the cost model says the sparse kernel loses")

    d = decide(dense_density, "cpu", {"decode": 1}, get("h100"), "speed", never)
    assert not d.applied and "cost model" in d.reason and d.predicted["decode"]["sparse"] > d.predicted["decode"]["dense"]


@pytest.mark.parametrize("kwargs, error, text", [
    ({"sparsity": 1.0}, PassError, "outside (0, 1]"),
    ({"sparsity": -0.2}, PassError, "outside (0, 1]"),
    ({"sparsity_pattern": "3:7"}, PassError, "multiple of 7"),
    ({"sparsity_pattern": "2:4", "sparsity": 0.7}, PassError, "disagrees with the pattern 2:4"),
    ({"sparsity_pattern": "2:4", "sparsity_scope": "global"}, PassError, "global density target"),
    ({"sparsity_pattern": "2-4"}, PassError, "not unstructured or N:M"),
    ({"sparsity": 0.5, "sparsity_method": "wanda"}, InputError, "needs calibration data"),
    ({"sparsity": 0.5, "target": "npu"}, TargetError, "target npu cannot run"),
    ({"sparsity": 0.5, "quant": "w4g128"}, PassError, "unstructured sparsity with w4g128 is not"),
])
def test_bad_requests_are_refused_before_calibration(kwargs, error, text, tmp_path, monkeypatch):
    from llmc.passes.quantize import calibration as calib

    monkeypatch.setattr(calib, "stream", lambda *a, **k: pytest.fail("calibration ran"))
    kwargs = {"sparsity_method": "magnitude", **kwargs}
    target = kwargs.pop("target", "reference")
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        llmc.compile(tiny_llama()[0], target=target, output=tmp_path / "a", generation=True, max_seq_len=64, **kwargs)


def _prefill(art):
    gen = art.generator()
    return gen.prefill(np.array([PROMPT]), np.ones((1, len(PROMPT)), bool), gen.runner.new_caches(gen.spec, 1))


def _compile(tmp_path, target, calibration, **kw):
    return llmc.compile(tiny_llama()[0], target=target, output=tmp_path / target, generation=True, max_seq_len=64,
                        prefill_chunk=4, calibration=calibration, **kw)


def test_interpreter_and_cpu_match_on_sparse_kernels(tmp_path, calibration, monkeypatch, close):
    pytest.importorskip("tvm")
    from llmc.passes.sparsity import bench

    monkeypatch.setattr(bench, "measure", _times(2e-5, 1e-5))  # as if every sparse kernel were faster
    kw = {"sparsity_pattern": "2:4", "sparsity_method": "wanda"}
    ref, cpu = _compile(tmp_path, "reference", calibration, **kw), _compile(tmp_path, "cpu", calibration, **kw)
    layers = cpu.manifest["sparsity"]["layers"]
    assert len(layers) == 14 and all(r["applied"] and r["kernel"] == "sparse" for r in layers)
    assert all(r["measured"]["prefill"] == {"dense": 2e-5, "sparse": 1e-5} for r in layers)
    assert {n.op for n in cpu.graph.nodes} >= {"linear_nm"}
    close(_prefill(cpu), _prefill(ref))
    report = (cpu.path / "report.md").read_text()
    assert "sparsity: wanda 2:4 at density 0.5 for speed on cpu; 14 of 14 weights run a sparse kernel" in report


def test_not_applied_keeps_dense_weights_and_size_stores_them_compressed():
    from llmc.codegen.devices import get
    from llmc.frontend.causal import load_causal_lm
    from llmc.passes.sparsity import sparsify

    ops = {}
    for goal in ("speed", "size"):
        graph = load_causal_lm(tiny_llama()[0], max_seq_len=64).graph
        options = SparsityOptions(0.5, "unstructured", "magnitude", goal)
        graph, records = sparsify(graph, options, target="cpu", sizes={"decode": 1, "prefill": 4},
                                  device=get("h100"), measure=_times(1e-5, 2e-5))
        assert len(records) == 14 and not any(r.decision.applied for r in records)
        ops[goal] = [(n.op, n.attrs.get("kernel")) for n in graph.nodes if n.op.startswith("linear")]
    assert set(ops["speed"]) == {("linear", None)}  # layers blocks keep dense weights; the head stays dense
    assert ("linear_bitmap", "dense") in ops["size"] and ops["size"].count(("linear", None)) == 1


def test_a_global_density_spreads_over_the_layers():
    from llmc.frontend.causal import load_causal_lm
    from llmc.passes.sparsity import sparsify

    graph = load_causal_lm(tiny_llama()[0], max_seq_len=64).graph
    graph, records = sparsify(graph, SparsityOptions(0.6, scope="global", method="magnitude"))
    kept = sum(r.density * r.float_bytes for r in records) / sum(r.float_bytes for r in records)
    assert kept == pytest.approx(0.4, abs=0.01)
    assert len({round(r.density, 3) for r in records}) > 1  # each layer's density follows its scores
