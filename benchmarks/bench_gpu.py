"""Latency of cuda artifacts on a GPU, against PyTorch eager and torch.compile, and the achieved
memory bandwidth of decode-shaped GEMVs (fp16) against the device's measured copy bandwidth.

Run where a GPU is present. The artifacts are compiled first (needs TVM's compiler and nvcc; or
pass ``--artifacts DIR`` holding artifacts compiled elsewhere as ``DIR/<model>``), then each is
run with TVM's runtime only. Writes benchmarks/results/bench_gpu.json with device, versions, date.

    python benchmarks/bench_gpu.py [--arch sm_90] [--artifacts DIR]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

RESULT = Path(__file__).parent / "results" / "bench_gpu.json"
MODELS = {"minilm": 128, "tiny-llama": 16, "tiny-gpt2": 16}
GEMVS = {"gemv_4096x4096": (4096, 4096), "gemv_4096x11008": (4096, 11008)}


def _cuda_median_ms(fn, warmup: int = 10, runs: int = 50) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth of a 1 GiB buffer (bytes read + written per second)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _cuda_median_ms(lambda: dst.copy_(src), runs=20)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def gemv_graph(k: int, n: int):
    """y = x @ W^T for x [1, k], W [n, k] (float16 weights at compile time): a decode step's projection."""
    from llmc.ir import DType, Graph, TensorType

    g = Graph(f"gemv_{k}x{n}")
    x = g.add_input("x", TensorType(DType.f32, (1, k)))
    w = g.add_const("w", (np.random.default_rng(0).standard_normal((n, k)) * 0.02).astype(np.float32))
    g.outputs = [g.call("linear", x, w)]
    return g


def compile_or_load(name: str, model, example, arch: str, artifacts: Path | None):
    import llmc

    if artifacts is not None:
        return llmc.load(artifacts / name)
    return llmc.compile(model, target="cuda", example_inputs=example, arch=arch, dtype="float16")


def bench_models(arch: str, artifacts: Path | None) -> dict:
    from llmc import examples
    from llmc.targets.gpu.runtime import Session

    out = {}
    for name, seq in MODELS.items():
        model, _ = examples.build(name)
        if name == "minilm":
            example = examples.minilm_inputs(examples.MINILM_SENTENCES[:1], seq=seq)
        else:
            example = (torch.randint(0, 256, (1, seq)),)
        art = compile_or_load(name, model, example, arch, artifacts)
        session = Session(art.path)
        gpu_model = copy.deepcopy(model).half().cuda().eval()
        inputs = tuple(t.cuda() for t in example)
        feeds = {v.name: t for v, t in zip(art.graph.inputs, inputs)}
        compiled = torch.compile(gpu_model)
        with torch.no_grad():
            row = {
                "llmc-cuda_ms": _cuda_median_ms(lambda s=session, f=feeds: s.run(f)),
                "torch_eager_ms": _cuda_median_ms(lambda m=gpu_model, i=inputs: m(*i)),
                "torch_compile_ms": _cuda_median_ms(lambda m=compiled, i=inputs: m(*i)),
            }
        row["kernels_per_call"] = art.manifest["payload"]["kernels_per_call"]
        out[name] = row
        print(name, json.dumps(row), flush=True)
    return out


def bench_gemvs(arch: str, artifacts: Path | None, copy_gbs: float) -> dict:
    import llmc
    from llmc.targets.gpu.runtime import Session

    out = {}
    for name, (k, n) in GEMVS.items():
        art = llmc.load(artifacts / name) if artifacts else llmc.compile(gemv_graph(k, n), target="cuda", arch=arch)
        session = Session(art.path)
        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        ms = _cuda_median_ms(lambda s=session, x=x: s.run({"x": x}))
        moved = 2 * (k * n + k + n)  # fp16 weights dominate
        gbs = moved / (ms * 1e-3) / 1e9
        out[name] = {"ms": ms, "achieved_gbs": gbs, "fraction_of_copy_bandwidth": gbs / copy_gbs}
        print(name, json.dumps(out[name]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU")
    copy_gbs = copy_bandwidth_gbs()
    report = {
        "benchmark": "cuda artifact latency vs torch eager / torch.compile; decode GEMV bandwidth",
        "date": datetime.date.today().isoformat(),
        "device": {"gpu": torch.cuda.get_device_name(), "arch": args.arch, "copy_bandwidth_gbs": copy_gbs},
        "versions": {p: version(p) for p in ("llmc", "apache-tvm", "torch")},
        "method": "median of 50 calls after 10 warm-up calls, CUDA events; inputs already on the GPU",
        "models": bench_models(args.arch, args.artifacts),
        "gemv": bench_gemvs(args.arch, args.artifacts, copy_gbs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
