"""Capture + inspect of a Llama-2-7B-shaped model from a weightless Hugging Face folder.

Writes the Llama-2-7B config.json (no weights) into a temporary folder and runs
``llmc inspect FOLDER --json`` in a child process, exactly as a user would, measuring its wall
time (interpreter start and imports included) and its peak resident memory (``ru_maxrss`` of
the child, measured from outside). The issue's bar: under 60 s and under 2 GB on a 2-core machine.

    python benchmarks/capture_7b.py            # writes benchmarks/results/capture_7b.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

LIMIT_SECONDS = 60
LIMIT_BYTES = 2 * 10**9
RESULT = Path(__file__).parent / "results" / "capture_7b.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(folder: Path) -> dict:
    """One ``llmc inspect FOLDER --json`` in a fresh process: seconds, peak RSS bytes, its facts."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmc", "inspect", str(folder), "--json"],
                          capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux; max over children
    if proc.returncode != 0:
        sys.exit(f"llmc inspect failed ({proc.returncode}):\n{proc.stderr}")
    if peak_kib <= before:
        sys.exit("cannot attribute peak memory: an earlier child process used more; run one measurement per process")
    return {"seconds": seconds, "peak_rss_bytes": peak_kib * 1024, "facts": json.loads(proc.stdout)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=RESULT)
    args = p.parse_args()

    from llmc.examples import llama2_7b_config

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama-2-7b"
        config = llama2_7b_config()
        config.architectures = ["LlamaForCausalLM"]  # as in the real Llama-2-7b-hf config.json
        config.save_pretrained(folder)
        files = sorted(f.name for f in folder.iterdir())
        run = measure(folder)
    facts = run["facts"]
    result = {
        "benchmark": "capture + inspect of a Llama-2-7B-shaped Hugging Face folder without weights",
        "command": "llmc inspect FOLDER --json",
        "folder_files": files,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "device": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(),
                     **{pkg: version(pkg) for pkg in ("torch", "transformers", "llmc")}},
        "seconds": round(run["seconds"], 2),
        "peak_rss_bytes": run["peak_rss_bytes"],
        "peak_rss_gib": round(run["peak_rss_bytes"] / 2**30, 3),
        "parameters": facts["parameters"],
        "weight_bytes": facts["weight_bytes"],
        "nodes": facts["nodes"],
        "layers": sum(1 for row in facts["layers"] if row["layer"] is not None),
        "inputs": facts["inputs"],
        "limits": {"seconds": LIMIT_SECONDS, "peak_rss_bytes": LIMIT_BYTES},
        "within_limits": run["seconds"] < LIMIT_SECONDS and run["peak_rss_bytes"] < LIMIT_BYTES,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds", "peak_rss_gib", "parameters", "layers", "within_limits")}))


if __name__ == "__main__":
    main()
