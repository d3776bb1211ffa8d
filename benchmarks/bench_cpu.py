"""Latency of cpu artifacts against onnxruntime (CPU) and PyTorch eager on the zoo models.

Each (model, runner) pair is measured in its own child process, so no runtime's thread pool
competes with another's; every runner gets all cores. The median of ``--runs`` calls after
``--warmup`` calls is reported, with the ratios the issue sets a bar for (cpu artifact within
2x of onnxruntime on MiniLM at batch 1, sequence 128, float32, and on the tiny Llama).

    python benchmarks/bench_cpu.py            # writes benchmarks/results/bench_cpu.json
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

import torch

RESULT = Path(__file__).parent / "results" / "bench_cpu.json"
MODELS = {"minilm": 128, "tiny-llama": 16, "tiny-gpt2": 16}
RUNNERS = ("llmc-cpu", "onnxruntime", "torch")


def model_and_inputs(name: str, seq: int):
    """The zoo model (eval, float32) and batch-1 inputs of length ``seq``."""
    from llmc import examples

    if name == "minilm":
        model, _ = examples.minilm()
        ids, mask = examples.minilm_inputs(examples.MINILM_SENTENCES[:1], seq=seq)
        return model, (ids, mask), ("input_ids", "attention_mask")
    model, _ = examples.build(name)
    torch.manual_seed(0)
    return model, (torch.randint(0, 256, (1, seq)),), ("input_ids",)


class Positional(torch.nn.Module):
    """The model called with keyword inputs, returning its first output (for the ONNX exporter)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)), **({"use_cache": False} if len(self.names) == 1 else {}))
        return out[0] if isinstance(out, tuple) else next(iter(out.values()))


def _timed(fn, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, runner: str, warmup: int, runs: int) -> dict:
    """Run in a child process: build the runner's callable, time it, return milliseconds."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    model, inputs, names = model_and_inputs(name, MODELS[name])
    info: dict = {}
    if runner == "torch":
        def call():
            with torch.no_grad():
                model(*inputs)
    elif runner == "onnxruntime":
        import onnxruntime as ort

        path = Path(tempfile.mkdtemp()) / "model.onnx"
        torch.onnx.export(Positional(model, names), inputs, str(path), input_names=list(names), opset_version=18,
                          dynamo=True, optimize=True, verbose=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = {n: t.numpy() for n, t in zip(names, inputs)}

        def call():
            session.run(None, feeds)
    else:
        import llmc
        from llmc.targets.gpu.runtime import Session

        start = time.perf_counter()
        art = llmc.compile(model, target="cpu", example_inputs=inputs)
        info["compile_s"] = round(time.perf_counter() - start, 2)
        info["kernels_per_call"] = art.manifest["payload"]["kernels_per_call"]
        session = Session(art.path)
        feeds = {v.name: t.numpy() for v, t in zip(art.graph.inputs, inputs)}

        def call():
            session.run(feeds)
    times = _timed(call, warmup, runs)
    return {"median_ms": round(1e3 * statistics.median(times), 3), "min_ms": round(1e3 * min(times), 3), **info}


def _child(name: str, runner: str, warmup: int, runs: int) -> dict:
    cmd = [sys.executable, __file__, "--one", name, runner, "--warmup", str(warmup), "--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "RUNNER"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.warmup, args.runs)))
        return
    results = {}
    for name in args.models:
        row = {runner: _child(name, runner, args.warmup, args.runs) for runner in RUNNERS}
        cpu = row["llmc-cpu"]["median_ms"]
        row["ratio_vs_onnxruntime"] = round(cpu / row["onnxruntime"]["median_ms"], 3)
        row["ratio_vs_torch"] = round(cpu / row["torch"]["median_ms"], 3)
        row["shape"] = f"batch 1, seq {MODELS[name]}, float32"
        results[name] = row
        print(name, json.dumps(row), flush=True)
    report = {
        "benchmark": "cpu artifact latency vs onnxruntime and torch eager",
        "date": datetime.date.today().isoformat(),
        "device": {"cpu": _cpu_name(), "cores": os.cpu_count(), "machine": platform.machine()},
        "versions": {p: version(p) for p in ("llmc", "apache-tvm", "torch", "onnxruntime", "transformers")},
        "method": f"median of {args.runs} calls after {args.warmup} warm-up calls, each runner in its own process",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
