"""Speed of llmc's low-bit kernels on this CPU, beside onnxruntime and llama.cpp in the same run.

1. Decode GEMV (one token: x [1, K] times a 4-bit weight [N, K]) at SmolLM2's and Llama-2-7B's
   shapes, blocks of 32 and 128: llmc's cpu kernel (compiled as in a generation artifact: the
   batch dimension symbolic) against onnxruntime's ``MatMulNBits`` (com.microsoft, CPU provider,
   same bits and block size, symmetric) twice: float32 compute (``accuracy_level`` 0, what llmc
   computes) and int8 compute (``accuracy_level`` 4: the input quantized to int8 per block, the
   faster path llama.cpp also takes). Medians of repeated calls.
2. SmolLM2-135M decode tokens/s at batch 1 (128 new tokens after a 128-token prompt): llmc cpu
   artifacts in float32, W8 and W4 (g32, RTN) against llama.cpp on the Q4_1 GGUF file, each in a
   child process (``bench_generate``'s runners).

    python benchmarks/bench_quant.py                  # writes benchmarks/results/bench_quant.json
    python benchmarks/bench_quant.py --parts gemv
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from bench_cpu import _timed  # benchmarks/ is on the path when a script here runs
from capture_7b import cpu_model

RESULT = Path(__file__).parent / "results" / "bench_quant.json"
SHAPES = {"smollm2": [(576, 576), (1536, 576), (576, 1536), (49152, 576)],
          "llama2-7b": [(4096, 4096), (11008, 4096), (4096, 11008)]}
BLOCKS = (32, 128)
DECODE = {"llmc float32": None, "llmc w8": "w8", "llmc w4g32": "w4g32", "llmc w4g128": "w4g128"}


def timed(fn, repeats: int) -> float:
    return statistics.median(_timed(fn, 3, repeats))


def llmc_gemv(w: np.ndarray, block: int, sym: bool, x: np.ndarray, tmp: str) -> float:
    import llmc
    from llmc.ir import packing
    from llmc.ir.dtypes import DType
    from llmc.ir.graph import Graph
    from llmc.ir.types import TensorType
    from llmc.targets.gpu.runtime import Session

    n, k = w.shape
    p = packing.quantize(w, packing.Grid(4, block, sym))
    g = Graph("gemv")
    xin = g.add_input("x", TensorType(DType.f32, ("batch", k)))
    tensors = [g.add_const("w.q", p.words), g.add_const("w.s", p.scale)]
    if p.minimum is not None:
        tensors.append(g.add_const("w.m", p.minimum))
    g.outputs = [g.call("linear", xin, g.call("dequantize_packed", *tensors, bits=4, group=block, k=k))]
    art = llmc.compile(g, "cpu", output=f"{tmp}/gemv-{n}-{k}-{block}-{sym}")
    session = Session(art.path)
    import tvm

    args = [tvm.runtime.tensor(x, session.device)]
    fn = session.vm[session.entry({"batch": 1})]
    got = fn(*args, *session.params)[0].numpy()
    expected = x @ p.dequantize().T
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), "llmc GEMV does not match"
    return timed(lambda: fn(*args, *session.params), 200)


def ort_gemv(w: np.ndarray, block: int, x: np.ndarray, accuracy_level: int = 0) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n, k = w.shape
    blocks = -(-k // block)
    wp = np.zeros((n, blocks * block), np.float32)
    wp[:, :k] = w
    groups = wp.reshape(n, blocks, block)
    scale = np.maximum(np.abs(groups).max(-1) / 7, 1e-8).astype(np.float32)
    codes = (np.clip(np.round(groups / scale[..., None]), -8, 7) + 8).astype(np.uint8)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)  # [n, blocks, block/2]
    node = helper.make_node("MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=block, accuracy_level=accuracy_level)
    graph = helper.make_graph([node], "gemv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor("w", TensorProto.UINT8, packed.shape, packed.tobytes(), raw=True),
                               helper.make_tensor("s", TensorProto.FLOAT, scale.shape, scale.ravel())])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"x": x}
    got = sess.run(None, feeds)[0]
    deq = ((codes.astype(np.float32) - 8) * scale[..., None]).reshape(n, -1)[:, :k]
    tolerance = 1e-3 if accuracy_level == 0 else 3e-2  # level 4 rounds the input to int8
    assert np.abs(got - x @ deq.T).max() <= tolerance * np.abs(x @ deq.T).max(), "MatMulNBits does not match"
    return timed(lambda: sess.run(None, feeds), 200)


def gemv_part() -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmc-bq-") as tmp:
        for model, shapes in SHAPES.items():
            for n, k in shapes:
                w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
                x = rng.standard_normal((1, k)).astype(np.float32)
                for block in BLOCKS:
                    row = {"model": model, "n": n, "k": k, "block": block,
                           "ort_ms": 1e3 * ort_gemv(w, block, x),
                           "llmc_sym_ms": 1e3 * llmc_gemv(w, block, True, x, tmp),
                           "llmc_asym_ms": 1e3 * llmc_gemv(w, block, False, x, tmp)}
                    row["ort_int8_ms"] = 1e3 * ort_gemv(w, block, x, accuracy_level=4)
                    row["ratio_sym"] = row["llmc_sym_ms"] / row["ort_ms"]
                    row["ratio_sym_to_int8"] = row["llmc_sym_ms"] / row["ort_int8_ms"]
                    row["ratio_asym"] = row["llmc_asym_ms"] / row["ort_ms"]
                    row["llmc_sym_gb_per_s"] = n * k * 0.5 / (row["llmc_sym_ms"] / 1e3) / 1e9
                    rows.append(row)
                    print(f"{model} {n}x{k} g{block}: ort {row['ort_ms']:.3f} ms (int8 {row['ort_int8_ms']:.3f}), "
                          f"llmc sym {row['llmc_sym_ms']:.3f} ({row['ratio_sym']:.2f}x, {row['ratio_sym_to_int8']:.2f}x), "
                          f"asym {row['llmc_asym_ms']:.3f} ({row['ratio_asym']:.2f}x)",
                          file=sys.stderr, flush=True)
    return rows


def decode_child(name: str, artifact: str | None) -> dict:
    from bench_generate import LlamaCppRunner, LlmcRunner, prompt_ids, warm_decode

    runner = LlamaCppRunner() if artifact is None else LlmcRunner(artifact)
    ids = prompt_ids(128)
    result = warm_decode(runner, ids)
    if artifact is not None:
        result["step_breakdown_ms"] = breakdown(runner, np.array([ids]), 32)
    return result


def breakdown(runner, ids: np.ndarray, steps: int) -> dict:
    """Where a decode step's time goes (medians over ``steps``, instrumented run): products with
    packed or float weights, other kernels, the VM's own builtins (shapes, allocations, views),
    and what is left outside the VM (the Python loop, argument conversion)."""
    session = runner.gen.runner.session
    spent: dict[str, float] = {}
    clock: list[float] = []

    def instrument(_func, name, before, _ret, *_args):
        if before:
            clock.append(time.perf_counter())
        else:
            kind = "products" if name.startswith("dense_packed") else "vm builtins" if name.startswith("vm.") \
                else "other kernels"
            spent[kind] = spent.get(kind, 0.0) + time.perf_counter() - clock.pop()
        return 0

    state = runner.prefill(ids)
    session.vm.set_instrument(instrument)
    rows = []
    for _ in range(steps):
        spent.clear()
        t0 = time.perf_counter()
        state = runner.step(state)
        total = time.perf_counter() - t0
        rows.append({**spent, "outside the VM": total - sum(spent.values()), "step": total})
    return {k: 1e3 * statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}


def decode_part(timeout: int, names: list[str]) -> dict:
    import llmc

    results = {}
    runs = {**DECODE, "llama.cpp Q4_1": "llama.cpp"}
    with tempfile.TemporaryDirectory(prefix="llmc-bq-") as tmp:
        for name, quant in ((n, runs[n]) for n in names):
            artifact = None
            if quant != "llama.cpp":
                start = time.perf_counter()
                art = llmc.compile("smollm2-135m", "cpu", output=f"{tmp}/{name.replace(' ', '_')}", prefill_chunk=128,
                                   quant=quant)
                artifact = str(art.path)
                print(f"compiled {name} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--child", name] + (["--artifact", artifact] if artifact else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            if proc.returncode != 0:
                results[name] = {"failed": proc.stderr.strip().splitlines()[-1:]}
                continue
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            if artifact:
                results[name]["weight_file_bytes"] = os.path.getsize(Path(artifact) / "weights.safetensors")
            print(f"{name}: {results[name]['tokens_per_s']:.1f} tokens/s", file=sys.stderr, flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="gemv,decode")
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--decode", default=",".join([*DECODE, "llama.cpp Q4_1"]), help="decode runners, comma-separated")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--artifact", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(decode_child(args.child, args.artifact)))
        return
    out = {"benchmark": "bench_quant", "date": datetime.date.today().isoformat(),
           "device": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
           "versions": {k: version(k) for k in ("llmc", "apache-tvm", "onnxruntime", "numpy")}}
    parts = args.parts.split(",")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if "gemv" in parts:
        out["gemv_int4"] = gemv_part()
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    if "decode" in parts:
        out["smollm2_decode_batch1"] = decode_part(args.timeout, args.decode.split(","))
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
