"""Scale: GPTQ W4g128 quantization and cpu compile of a 1.1B-parameter Llama-shaped model in under 2 GB.

Writes a Hugging Face folder shaped like TinyLlama-1.1B (22 layers, hidden 2048, intermediate 5632,
32 query / 4 key-value heads, vocabulary 32000) with seeded random float16 weights (normal, std 0.02;
norms 1), tensor by tensor into a few safetensors shards, and an .npz of random calibration token ids.
Then compiles it for ``cpu`` with ``quant="w4g128", quant_method="gptq"`` in a child process, so the
peak resident memory measured (``ru_maxrss`` of the child) is the compile's alone; the child's VmRSS is
also sampled every 0.5 s to show which step the peak falls in. Finally one prefill and one decode step
of the artifact on the cpu runtime are compared with the reference interpreter on the same artifact.

    python benchmarks/scale_1b.py                     # writes benchmarks/results/scale_1b.json
    python benchmarks/scale_1b.py --layers 2 --output /tmp/scale.json   # a quick end-to-end check
    python benchmarks/scale_1b.py --keep /tmp/scale   # keep (and reuse) the model folder and artifact
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from capture_7b import cpu_model  # benchmarks/ is on the path when a script here runs

from llmc.ir.dtypes import DType
from llmc.ir.tensor import Weight, write_safetensors
from llmc.ir.types import TensorType

RESULT = Path(__file__).parent / "results" / "scale_1b.json"
LIMIT_BYTES = 2 * 10**9
SHARD_LAYERS = 8  # decoder layers per safetensors shard
SAMPLE_SECONDS = 0.5
# Progress lines of llmc.compile that open a phase (the first phase whose prefix matches).
PHASES = (("capturing", "capture"), ("optimizing", "optimize"), ("reading calibration", "quantize"),
          ("quantized", "quantize"), ("lowering", "lower + write"))


def tinyllama_config(layers: int):
    """TinyLlama-1.1B's config (``layers`` decoder layers), as transformers writes it."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers,
                       num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                       eos_token_id=2, architectures=["LlamaForCausalLM"], dtype="float16")


def tensor_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every weight of a Llama model by its state-dict name."""
    h, f, kv = config.hidden_size, config.intermediate_size, config.num_key_value_heads * config.head_dim
    shapes = {"model.embed_tokens.weight": (config.vocab_size, h), "model.norm.weight": (h,),
              "lm_head.weight": (config.vocab_size, h)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}"
        shapes.update({f"{p}.input_layernorm.weight": (h,), f"{p}.post_attention_layernorm.weight": (h,),
                       f"{p}.self_attn.q_proj.weight": (h, h), f"{p}.self_attn.k_proj.weight": (kv, h),
                       f"{p}.self_attn.v_proj.weight": (kv, h), f"{p}.self_attn.o_proj.weight": (h, h),
                       f"{p}.mlp.gate_proj.weight": (f, h), f"{p}.mlp.up_proj.weight": (f, h),
                       f"{p}.mlp.down_proj.weight": (h, f)})
    return shapes


class RandomWeight(Weight):
    """A float16 weight made when written: normal with std 0.02 (seeded by its name), or ones for a norm."""

    def __init__(self, name: str, shape: tuple[int, ...], seed: int):
        self.name, self.seed = name, seed
        self.type = TensorType(DType.f16, shape)

    def numpy(self) -> np.ndarray:
        if len(self.shape) == 1:
            return np.ones(self.shape, np.float16)
        rng = np.random.default_rng([self.seed, *self.name.encode()])
        return (rng.standard_normal(self.shape, np.float32) * 0.02).astype(np.float16)


def write_model(folder: Path, layers: int, seed: int) -> int:
    """The model folder: config.json and shards of ``SHARD_LAYERS`` layers with their index; its weight bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    config = tinyllama_config(layers)
    config.save_pretrained(folder)
    shapes = tensor_shapes(config)
    count = -(-layers // SHARD_LAYERS)

    def shard(name: str) -> int:
        return int(name.split(".")[2]) // SHARD_LAYERS if name.startswith("model.layers.") else count - 1

    weight_map = {n: f"model-{shard(n) + 1:05d}-of-{count:05d}.safetensors" for n in shapes}
    for file in sorted(set(weight_map.values())):
        write_safetensors(folder / file, {n: RandomWeight(n, s, seed) for n, s in shapes.items()
                                          if weight_map[n] == file})
    size = sum(2 * int(np.prod(s)) for s in shapes.values())
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return size


def write_calibration(path: Path, samples: int, length: int, vocab: int, seed: int) -> None:
    ids = np.random.default_rng(seed).integers(0, vocab, (samples, length), dtype=np.int64)
    np.savez(path, input_ids=ids)


# -- the compile, in a child process ---------------------------------------------------------


def child(spec: dict) -> None:
    """Compile as ``spec`` says, printing each progress line as JSON with its time; then the pass records."""
    import llmc

    start = time.perf_counter()

    def progress(line: str) -> None:
        print(json.dumps({"t": time.perf_counter() - start, "line": line}), flush=True)

    art = llmc.compile(spec["folder"], "cpu", output=spec["output"], generation=True,
                       max_seq_len=spec["max_seq_len"], quant="w4g128", quant_method="gptq",
                       calibration=spec["calibration"], calibration_samples=spec["samples"],
                       calibration_length=spec["length"], progress=progress)
    print(json.dumps({"t": time.perf_counter() - start, "passes": [r.to_json() for r in art.passes]}), flush=True)


def memory(pid: int) -> tuple[int, int] | None:
    """Resident bytes of process ``pid`` now and its high-water mark so far (None once it is gone)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def run_child(spec: dict) -> dict:
    """Run the compile in a child; its progress log, pass records, RSS samples, wall time and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    samples: list[tuple[float, int, int]] = []  # (seconds, RSS, high-water mark)

    def sample() -> None:
        while proc.poll() is None:
            now = memory(proc.pid)
            if now is not None:
                samples.append((time.perf_counter() - start, *now))
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log, passes = [], []
    for raw in proc.stdout:
        row = json.loads(raw)
        if "passes" in row:
            passes = row["passes"]
            continue
        log.append(row)
        rss, hwm = samples[-1][1:] if samples else (0, 0)
        print(f"[{row['t']:7.1f} s  RSS {rss / 2**30:5.2f} GiB  peak {hwm / 2**30:5.2f} GiB] {row['line']}", flush=True)
    proc.wait()
    seconds = time.perf_counter() - start
    sampler.join()
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux; max over children
    if proc.returncode != 0:
        sys.exit(f"the compile failed ({proc.returncode})")
    if peak_kib <= before:
        sys.exit("cannot attribute peak memory: an earlier child process used more")
    return {"seconds": seconds, "peak_rss_bytes": peak_kib * 1024, "log": log, "passes": passes, "samples": samples}


def phase_of(line: str) -> str:
    return next((phase for prefix, phase in PHASES if line.startswith(prefix)), "other")


def interval_peaks(samples: list[tuple[float, int, int]]) -> list[tuple[float, int]]:
    """(seconds, highest RSS since the previous sample): the high-water mark where it rose, else the RSS."""
    out, before = [], 0
    for t, rss, hwm in samples:
        out.append((t, hwm if hwm > before else rss))
        before = hwm
    return out


def phases(run: dict) -> dict:
    """Seconds and the highest RSS of each phase (from its first progress line to the next phase's)."""
    bounds = []  # (start time, phase)
    for row in run["log"]:
        phase = phase_of(row["line"])
        if not bounds or bounds[-1][1] != phase:
            bounds.append((row["t"], phase))
    ends = [t for t, _ in bounds[1:]] + [run["seconds"]]
    peaks = interval_peaks(run["samples"])
    out = {}
    for (begin, phase), end in zip(bounds, ends):
        rss = [r for t, r in peaks if begin <= t < end]
        out[phase] = {"seconds": round(end - begin, 1), "max_rss_gib": round(max(rss) / 2**30, 3) if rss else None}
    return out


def peak_sample(run: dict) -> dict:
    """When the high-water mark reached its final value (to one sampling interval), and the last progress line then.

    A ``quantized W`` line is printed when W is done, so the peak lies in the step that follows that line."""
    t, _, hwm = next(s for s in run["samples"] if s[2] == run["samples"][-1][2])
    current = [row["line"] for row in run["log"] if row["t"] <= t]
    return {"seconds": round(t, 1), "rss_gib": round(hwm / 2**30, 3), "after": current[-1] if current else "start"}


def quantize_seconds(run: dict) -> dict:
    """Seconds spent quantizing each kind of weight (q_proj, down_proj, lm_head, ...), from the progress lines."""
    out: dict[str, float] = {}
    rows = run["log"]
    for prev, row in itertools.pairwise(rows):
        if row["line"].startswith("quantized ") and " error " in row["line"]:
            kind = row["line"].split()[1].split(".")[-1]
            out[kind] = round(out.get(kind, 0.0) + row["t"] - prev["t"], 1)
    return out


# -- checking the artifact -------------------------------------------------------------------


def decode_check(path: Path, ids: np.ndarray) -> dict:
    """Prefill ``ids`` and one greedy decode step on the cpu runtime and on the reference interpreter."""
    import llmc

    art = llmc.load(path)
    runs = {}
    for name, reference in (("cpu", False), ("reference", True)):
        gen = art.generator(reference=reference)
        if not reference and art.runtime() is None:
            sys.exit("the cpu runtime cannot run here")
        caches = gen.runner.new_caches(gen.spec, 1)
        mask = np.ones((1, ids.size), bool)
        prefill = gen.prefill(ids[None], mask, caches)
        token = prefill[:, -1].argmax(-1)
        start = time.perf_counter()
        step = gen.runner(token[:, None], np.array([[ids.size]]), np.ones((1, ids.size + 1), bool), caches)
        runs[name] = {"prefill": prefill[0, -1], "step": step[0, -1], "token": int(token[0]),
                      "seconds": time.perf_counter() - start}

    def rel(key: str) -> float:
        a, b = runs["cpu"][key].astype(np.float64), runs["reference"][key].astype(np.float64)
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    return {"prompt_tokens": int(ids.size), "prefill_rel_error": rel("prefill"), "decode_rel_error": rel("step"),
            "same_prefill_token": runs["cpu"]["token"] == runs["reference"]["token"],
            "same_decode_token": int(runs["cpu"]["step"].argmax()) == int(runs["reference"]["step"].argmax()),
            "cpu_decode_step_s": round(runs["cpu"]["seconds"], 3),
            "reference_decode_step_s": round(runs["reference"]["seconds"], 3)}


# -- main ------------------------------------------------------------------------------------


def measure(work: Path, args) -> dict:
    folder, calibration, artifact = work / "model", work / "calibration.npz", work / "artifact"
    t0 = time.perf_counter()
    if not (folder / "model.safetensors.index.json").is_file():
        print(f"writing the model folder {folder}", flush=True)
        write_model(folder, args.layers, args.seed)
    config = json.loads((folder / "config.json").read_text())
    if config["num_hidden_layers"] != args.layers:
        sys.exit(f"{folder} holds {config['num_hidden_layers']} layers, not {args.layers}: use another --keep folder")
    write_calibration(calibration, args.samples, args.length, config["vocab_size"], args.seed)
    write_seconds = time.perf_counter() - t0
    spec = {"folder": str(folder), "output": str(artifact), "calibration": str(calibration),
            "samples": args.samples, "length": args.length, "max_seq_len": args.max_seq_len}
    run = run_child(spec)
    print("checking one decode step against the reference interpreter", flush=True)
    ids = np.load(calibration)["input_ids"][0, :8]
    check = decode_check(artifact, ids)
    float_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    artifact_bytes = (artifact / "weights.safetensors").stat().st_size
    return {"config": config, "write_seconds": write_seconds, "run": run, "check": check,
            "float16_bytes": float_bytes, "artifact_weight_bytes": artifact_bytes,
            "artifact_files": {p.name: p.stat().st_size for p in sorted(artifact.iterdir()) if p.is_file()}}


def versions() -> dict:
    import tvm

    return {"python": platform.python_version(), "tvm": tvm.__version__,
            **{pkg: version(pkg) for pkg in ("numpy", "torch", "transformers", "llmc")}}


def report(m: dict, args) -> dict:
    run, c = m["run"], m["config"]
    return {
        "benchmark": "GPTQ w4g128 quantization + cpu compile of a TinyLlama-1.1B-shaped folder of random float16 "
                     "weights, in a child process",
        "call": f"llmc.compile(folder, 'cpu', generation=True, max_seq_len={args.max_seq_len}, quant='w4g128', "
                f"quant_method='gptq', calibration='calibration.npz', calibration_samples={args.samples}, "
                f"calibration_length={args.length})",
        "note": args.note,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "device": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "config": {k: c[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                                     "num_key_value_heads", "vocab_size", "tie_word_embeddings")},
        "parameters": m["float16_bytes"] // 2,
        "weights": f"random normal std 0.02 (norms 1), float16, seed {args.seed}",
        "calibration": {"samples": args.samples, "tokens": args.length, "ids": f"random, seed {args.seed}"},
        "write_folder_seconds": round(m["write_seconds"], 1),
        "compile_seconds": round(run["seconds"], 1),
        "phases": phases(run),
        "quantize_seconds_by_weight": quantize_seconds(run),
        "passes": run["passes"],
        "peak_rss_bytes": run["peak_rss_bytes"],
        "peak_rss_gib": round(run["peak_rss_bytes"] / 2**30, 3),
        "peak_rss_gb": round(run["peak_rss_bytes"] / 1e9, 3),
        "peak_rss_sample": peak_sample(run),
        "float16_weight_bytes": m["float16_bytes"],
        "artifact_weight_bytes": m["artifact_weight_bytes"],
        "weight_ratio": round(m["artifact_weight_bytes"] / m["float16_bytes"], 4),
        "artifact_files": m["artifact_files"],
        "decode_check": m["check"],
        "limits": {"peak_rss_bytes": LIMIT_BYTES},
        "within_limits": run["peak_rss_bytes"] < LIMIT_BYTES,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=22, help="decoder layers (22: TinyLlama-1.1B)")
    p.add_argument("--samples", type=int, default=16, help="calibration samples")
    p.add_argument("--length", type=int, default=128, help="calibration tokens per sample")
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="work folder to keep and reuse (default: a temporary one)")
    p.add_argument("--output", type=Path, default=RESULT)
    p.add_argument("--note", default="wall times are noisy: the 2-core machine was shared with other work during the run",
                   help="what the result's note field says about the run (machine load)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        m = measure(args.keep, args)
    else:
        with tempfile.TemporaryDirectory(prefix="llmc-scale-") as tmp:
            m = measure(Path(tmp), args)
    result = report(m, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("compile_seconds", "peak_rss_gib", "peak_rss_gb", "weight_ratio",
                                             "within_limits")}))
    print(json.dumps(result["decode_check"]))


if __name__ == "__main__":
    main()
