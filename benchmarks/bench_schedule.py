"""Weight streaming under a memory budget: llmc's streamed runtime vs a resident run and naive mmap.

For each model and budget the model is compiled once for ``reference`` with ``memory_budget``
(the schedule pass lays each layer group out as one region of weights.safetensors), then each
mode generates the same greedy tokens from the same prompt ids in its own child process:

- ``resident``: every weight read into memory first (the speed of compute alone; no budget);
- ``streamed``: llmc's ``StreamingRunner`` following schedule.json (resident groups, prefetch);
- ``naive-mmap``: the whole weights file memory-mapped and paged by the OS, with the file's pages
  dropped from the page cache (``posix_fadvise(DONTNEED)``) before every step: a model larger
  than the memory left for the page cache is re-read on every step (an LRU cache under a cyclic
  scan longer than itself keeps nothing), which is what a budget below the model size means;
- ``naive-mmap-cold-start``: the same, dropped once before the run (then the page cache, outside
  any budget, holds the whole model: shown for reference, it does not respect the budget).

Every child drops the weights file from the page cache before it starts. Peak RSS is the
child's ``ru_maxrss``; ``baseline`` is its RSS after imports, before any weight is read (the
fixed overhead the budget does not cover). Results are medians over ``--repeats`` runs on a
shared, contended 2-core machine; predicted figures come from schedule.json.

    python benchmarks/bench_schedule.py                      # both models -> results/bench_schedule.json
    python benchmarks/bench_schedule.py --models smollm2     # SmolLM2 only
    python benchmarks/bench_schedule.py --models "" --pipeline   # 1, 2 and 3 stage processes only
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
from pathlib import Path

RESULT = Path(__file__).parent / "results" / "bench_schedule.json"
MODELS = {
    # name: (model, max_seq_len, budgets, prompt tokens, new tokens)
    "smollm2": ("smollm2-135m", 256, ["160MiB", "256MiB"], 16, 16),
    "tinyllama-1.1b": ("tinyllama", 256, ["1GiB", "2GiB"], 8, 4),
}
MODE_NOTES = {
    "mmap-warm": "pipeline baseline: one process, whole weights file memory-mapped, page cache warm",
    "resident": "every weight read into memory before generating (no budget)",
    "streamed": "llmc StreamingRunner following schedule.json",
    "naive-mmap": "whole weights file memory-mapped, its pages dropped from the page cache before every step",
    "naive-mmap-cold-start": "whole weights file memory-mapped, page cache dropped once before the run (no budget)",
}
MODES = tuple(m for m in MODE_NOTES if m != "mmap-warm")


def child(spec: dict) -> None:
    """One generation in this process; prints a JSON line of its measurements."""
    import numpy as np

    from llmc import api
    from llmc.passes.schedule.storage import drop_cache
    from llmc.runtime.generate import GenerationSpec, Generator, ReferenceRunner
    from llmc.runtime.streaming import StreamingRunner, rss_bytes

    art = api.load(spec["artifact"], verify=False)
    weights = Path(spec["artifact"]) / "weights.safetensors"
    fd = os.open(weights, os.O_RDONLY)
    drop_cache(fd)
    baseline = rss_bytes()
    start = time.perf_counter()
    mode = spec["mode"]
    if mode == "streamed":
        runner = StreamingRunner(Path(spec["artifact"]))
    elif mode == "stages":
        from llmc.runtime.distributed import launch

        runner = launch(Path(spec["artifact"]))
    else:
        graph = art.graph
        if mode == "resident":
            from llmc.ir.tensor import ArrayWeight

            for v in graph.constants.values():
                v.const = ArrayWeight(np.array(v.const.numpy()), v.const.dtype)
        runner = ReferenceRunner(graph)
        if mode == "naive-mmap":
            runner = _ColdSteps(runner, fd)
    load_s = time.perf_counter() - start
    if mode == "streamed":
        baseline = runner.baseline_rss  # after the graph is loaded and split, before any weight is read
    gen = Generator(runner, GenerationSpec.from_manifest(art.manifest["generation"]))
    prompt = [int(t) for t in np.random.default_rng(0).integers(1, 1000, spec["prompt"])]
    start = time.perf_counter()
    result = gen.generate([prompt], max_new_tokens=spec["new"])
    total = time.perf_counter() - start
    if mode == "stages":
        runner.close()
    print(json.dumps({"ids": result.ids[0], "load_s": load_s, "generate_s": total,
                      "decode_tokens_per_s": result.stats.decode_tokens_per_s,
                      "ttft_s": result.stats.ttft_s, "baseline_rss": baseline,
                      "peak_rss": _peak_rss()}), flush=True)


def _peak_rss() -> int:
    """This process's high-water RSS (VmHWM: of this program only; ``ru_maxrss`` would include the
    parent's RSS at the fork before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class _ColdSteps:
    """A runner whose weights file leaves the page cache before every step (see ``naive-mmap``)."""

    def __init__(self, runner, fd: int):
        self.runner, self.fd = runner, fd

    def new_caches(self, spec, batch):
        return self.runner.new_caches(spec, batch)

    def __call__(self, *args):
        from llmc.passes.schedule.storage import drop_cache

        drop_cache(self.fd)
        return self.runner(*args)


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"{spec['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tinyllama_folder(root: Path) -> Path:
    """A TinyLlama-1.1B-shaped Hugging Face folder of seeded random float16 weights (``scale_1b``'s)."""
    from scale_1b import write_model  # benchmarks/ is on the path when a script here runs

    folder = root / "tinyllama-1.1b-random"
    if not (folder / "config.json").is_file():
        write_model(folder, 22, seed=0)
    return folder


def measure(name: str, root: Path, repeats: int, only: list[str] | None = None) -> list[dict]:
    import llmc

    model, max_seq_len, budgets, prompt, new = MODELS[name]
    budgets = [b for b in budgets if not only or b in only]
    source = str(tinyllama_folder(root)) if model == "tinyllama" else model
    rows = []
    for budget in budgets:
        out = root / f"{name}-{budget}"
        if not (out / "manifest.json").is_file():
            print(f"compiling {name} under {budget}", flush=True)
            llmc.compile(source, "reference", output=out, generation=True, max_seq_len=max_seq_len,
                         memory_budget=budget)
        schedule = json.loads((out / "schedule.json").read_text())
        row = {"model": name, "budget": budget, "budget_bytes": schedule["budget"], "max_seq_len": max_seq_len,
               "prompt_tokens": prompt, "new_tokens": new,
               "weights_bytes": sum(g["bytes"] for g in schedule["groups"]),
               "plan": {"groups": len(schedule["groups"]), "streamed": sum(not g["resident"] for g in schedule["groups"]),
                        "prefetch": schedule["prefetch"], "layers_per_group": schedule["layers_per_group"],
                        "memory": schedule["memory"]},
               "predicted_decode_tokens_per_s": schedule["predicted"]["decode_tokens_per_s"],
               "storage": schedule["storage"], "modes": {}}
        runs = {mode: [] for mode in MODES}
        for _ in range(repeats):  # modes interleaved, so the machine's load falls on each alike
            for mode in MODES:
                runs[mode].append(run_child({"artifact": str(out), "mode": mode, "prompt": prompt, "new": new}))
                print(f"{name} {budget} {mode}: {runs[mode][-1]['decode_tokens_per_s']:.2f} tokens/s, peak RSS "
                      f"{runs[mode][-1]['peak_rss'] / 2**20:.0f} MiB (baseline "
                      f"{runs[mode][-1]['baseline_rss'] / 2**20:.0f})", flush=True)
        row["modes"] = {mode: _summary(r) for mode, r in runs.items()}
        ids = {m: r["ids"] for m, r in row["modes"].items()}
        row["tokens_identical"] = all(v == ids["resident"] for v in ids.values())
        streamed = row["modes"]["streamed"]
        row["streamed_within_budget"] = streamed["peak_rss"] - streamed["baseline_rss"] <= schedule["budget"]
        row["streamed_vs_naive_speedup"] = streamed["decode_tokens_per_s"] / row["modes"]["naive-mmap"]["decode_tokens_per_s"]
        rows.append(row)
    return rows


def pipeline(root: Path, repeats: int) -> list[dict]:
    """SmolLM2 as 1 (one process, weights memory-mapped and warm), 2 and 3 local stage processes."""
    import llmc

    rows = []
    for stages in (1, 2, 3):
        out = root / f"smollm2-stages-{stages}"
        if not (out / "manifest.json").is_file():
            print(f"compiling smollm2 in {stages} stages", flush=True)
            llmc.compile("smollm2-135m", "reference", output=out, max_seq_len=256,
                         **({"stages": stages} if stages > 1 else {}))
        runs = [run_child({"artifact": str(out), "mode": "stages" if stages > 1 else "mmap-warm", "prompt": 16,
                           "new": 16}) for _ in range(repeats)]
        row = {"stages": stages, **_summary(runs)}
        if stages > 1:
            doc = json.loads((out / "schedule.json").read_text())
            times = [s["compute_s"] for s in doc["stages"]]
            row["predicted"] = {"stage_compute_s": times, "decode_tokens_per_s": 1 / sum(times),
                                "decode_tokens_per_s_with_microbatches": 1 / max(times)}
        print(f"smollm2 {stages} stage(s): {row['decode_tokens_per_s']:.2f} tokens/s", flush=True)
        rows.append(row)
    return rows


def _summary(runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("load_s", "generate_s", "decode_tokens_per_s",
                                                             "ttft_s", "baseline_rss", "peak_rss")}
    return {**med, "runs": len(runs), "ids": runs[0]["ids"],
            "decode_tokens_per_s_all": [round(r["decode_tokens_per_s"], 3) for r in runs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budgets", help="comma-separated: only these of each model's budgets (e.g. 256MiB)")
    p.add_argument("--keep", type=Path, help="keep (and reuse) models and artifacts in this folder")
    p.add_argument("--output", type=Path, default=RESULT, help="results file (updated: other entries are kept)")
    p.add_argument("--pipeline", action="store_true", help="also SmolLM2 in 1, 2 and 3 stage processes")
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-schedule-"))
    from importlib.metadata import version

    result = json.loads(args.output.read_text()) if args.output.is_file() else {"results": []}
    result.update({"benchmark": "weight streaming under a memory budget, and pipeline stages (reference runtime)",
                   "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
                   "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "note": "shared machine, other jobs running: medians of the runs, noisy"},
                   "versions": {"python": platform.python_version(), "llmc": version("llmc")},
                   "modes": MODE_NOTES})
    for name in filter(None, args.models.split(",")):
        rows = measure(name, root, args.repeats if name == "smollm2" else 1, args.budgets.split(",") if args.budgets else None)
        keys = {(r["model"], r["budget"]) for r in rows}
        result["results"] = [r for r in result["results"] if (r["model"], r["budget"]) not in keys] + rows
    if args.pipeline:
        result["pipeline"] = pipeline(root, args.repeats)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
