"""The cpu schedules on two x86 ISAs: AVX2 + FMA with 16 vector registers (``--cpu znver3``) and
AVX-512 with 32 (``--cpu cascadelake``). Tiles come from the target, builds succeed for both,
and whatever this machine's CPU can execute runs and matches the interpreter (float32, 1e-4)."""

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import te, tirx
from tvm.s_tir import dlight as dl
from tvm.target.codegen import llvm_get_cpu_features
from tvm_checks import mismatches

from llmc import examples
from llmc.ir.interpreter import run
from llmc.targets.gpu.cpu_isa import CpuIsa, cpu_isa
from llmc.targets.gpu.cpu_rules import Dense

ISAS = ("znver3", "cascadelake")
# LLVM feature -> /proc/cpuinfo flag, for the features a build for these CPUs may use.
CPUINFO_FLAGS = {"avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi2": "bmi2", "avx512f": "avx512f",
                 "avx512bw": "avx512bw", "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512cd": "avx512cd",
                 "avx512vnni": "avx512_vnni"}


def target(cpu: str):
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 2})


@cache
def missing_here(cpu: str) -> list[str]:
    """The features a build for ``cpu`` may use that this machine's CPU lacks."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = llvm_get_cpu_features(target(cpu)) & set(CPUINFO_FLAGS)
    return sorted(f for f in wanted if CPUINFO_FLAGS[f] not in flags)


def run_here_or_skip(cpu: str) -> None:
    if missing := missing_here(cpu):
        pytest.skip(f"built for {cpu}; this CPU lacks {', '.join(missing)}, so the build cannot run here")


def test_tiles_come_from_the_isa():
    avx2, avx512 = cpu_isa(target("znver3")), cpu_isa(target("cascadelake"))
    assert (avx2.simd, avx2.vector_bits, avx2.registers, avx2.fma, avx2.vnni) == ("AVX2", 256, 16, True, False)
    assert (avx512.simd, avx512.vector_bits, avx512.registers, avx512.vnni) == ("AVX-512", 512, 32, True)
    # AVX2: 4 rows x 3 vectors of 8 = 12 accumulators + 3 weight vectors + 1 broadcast = 16 registers
    assert (avx2.panel_width(), avx2.tile_rows(None), avx2.tile_rows(128)) == (24, 4, 4)
    # AVX-512: 6 rows x 4 vectors of 16 = 24 + 4 + 1 = 29 of 32; 128 rows take 4-row tiles (no padding)
    assert (avx512.panel_width(), avx512.tile_rows(None), avx512.tile_rows(132), avx512.tile_rows(128)) == (64, 6, 6, 4)
    for isa in (avx2, avx512):
        for rows in (None, 1, 3, 7, 64, 128, 132, 512):
            mr = isa.tile_rows(rows)
            assert mr * isa.panel_vectors + isa.panel_vectors + 1 <= isa.registers, (isa.cpu, rows, mr)
    assert cpu_isa(target("haswell")) == CpuIsa("haswell", "AVX2", 256, 16, fma=True, vnni=False)


def _dense_kernel(m: int, k: int, n: int, p: int):
    """The cpu lowering's packed product y[0, i, jo, ji] = sum_k x[0, i, k] * w[jo, k, ji] + b[jo, ji]."""
    x = te.placeholder((1, m, k), name="x")
    w = te.placeholder((n // p, k, p), name="w")
    b = te.placeholder((n // p, p), name="b")
    r = te.reduce_axis((0, k), name="k")
    y = te.compute((1, m, n // p, p), lambda a, i, jo, ji: te.sum(x[a, i, r] * w[jo, r, ji], axis=r), name="dense")
    z = te.compute((1, m, n // p, p), lambda a, i, jo, ji: y[a, i, jo, ji] + b[jo, ji], name="bias_add")
    return te.create_prim_func([x, w, b, z])


def _loops(func) -> dict[str, list[int]]:
    """Extents of the unrolled and vectorized loops of a scheduled function."""
    found: dict[str, list[int]] = {"unrolled": [], "vectorized": []}

    def visit(loop):
        if loop.kind == tirx.ForKind.UNROLLED:
            found["unrolled"].append(int(loop.extent))
        elif loop.kind == tirx.ForKind.VECTORIZED:
            found["vectorized"].append(int(loop.extent))

    import tvm_ffi

    tvm_ffi.structural_walk(func.body, (tirx.For, visit))
    return found


@pytest.mark.parametrize("cpu", ISAS)
@pytest.mark.parametrize("m", [128, 10])
def test_dense_register_tile_per_isa(cpu, m):
    isa = cpu_isa(target(cpu))
    k, n, p = 96, 2 * isa.panel_width(), isa.panel_width()
    with target(cpu):
        mod = dl.ApplyDefaultSchedule(Dense())(tvm.IRModule({"main": _dense_kernel(m, k, n, p)}))
    loops = _loops(mod["main"])
    rows, vectors = isa.tile_rows(m), isa.panel_vectors
    assert [rows, vectors] == loops["unrolled"][-2:], loops  # the update: rows x vectors, unrolled
    assert set(loops["vectorized"]) == {isa.lanes()}
    lib = tvm.compile(mod, target=target(cpu))
    run_here_or_skip(cpu)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(1, m, k), (n // p, k, p), (n // p, p), (1, m, n // p, p)]]
    args = [tvm.runtime.tensor(a) for a in arrays]
    lib["main"](*args)
    x, w, b, _ = arrays
    expected = x[0] @ w.transpose(1, 0, 2).reshape(k, n) + b.reshape(n)
    np.testing.assert_allclose(args[3].numpy().reshape(m, n), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ISAS)
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "small-cnn", "minilm"])
def test_zoo_model_per_isa(compiled, cpu, name):
    model, example = examples.build(name)
    dynamic = {"input_ids": {1: "seq"}} if name in ("tiny-llama", "tiny-gpt2") else None
    art = compiled(f"{name}-cpu-{cpu}", model, "cpu", example_inputs=example, dynamic=dynamic, cpu=cpu)
    assert art.manifest["target"]["options"]["cpu"] == cpu
    run_here_or_skip(cpu)
    feeds = {v.name: t.numpy() for v, t in zip(art.graph.inputs, example)}
    got = art.run(feeds)
    names = [v.name for v in art.graph.outputs]
    assert mismatches(got, run(art.graph, feeds), names, rtol=1e-4) == []
    if dynamic:  # other lengths: symbolic rows take the padded tile
        ids = {"input_ids": np.random.default_rng(1).integers(0, 256, (1, 7)).astype(np.int64)}
        assert mismatches(art.run(ids), run(art.graph, ids), names, rtol=1e-4) == []
    with torch.no_grad():
        out = model(*example)
    first = out[0] if isinstance(out, tuple) else getattr(out, "logits", getattr(out, "last_hidden_state", out))
    assert mismatches({"x": got[names[0]]}, {"x": first.numpy()}, ["torch"], rtol=1e-4) == []
