"""Sparsity on real weights: SmolLM2-135M perplexity, cpu decode speed and the apply-or-not decisions.

For each configuration (float, then 50% unstructured and 2:4 with magnitude, Wanda and SparseGPT,
then sparse + 4-bit: w4g128 RTN alone, and 2:4 Wanda with its kept values in w4g128 or w4g32 RTN)
the model is compiled for the cpu target with ``--sparsity-for size`` (every block linear pruned
and stored compressed; where the sparse kernel does not pay it is expanded at load time, except
sparse + 4-bit weights, which run their own kernel), scored
on the offline evaluation corpus (``llmc.runtime.perplexity``, calibrated on its disjoint split),
and its decode step timed; each pruned layer's density and output error are kept. ``--decisions``
compiles each configuration for speed instead and keeps the pass's decision per weight shape with
the measured dense and sparse kernel times at decode (1 row) and prefill (the chunk). Kernel times
on a 2-core machine shared with other jobs are noisy even as medians of 15 calls.

    python benchmarks/sparsity_quality.py          # benchmarks/results/sparsity_quality.json + .png
    python benchmarks/sparsity_quality.py --decisions --configs float,magnitude:2:4,magnitude:unstructured
    python benchmarks/sparsity_quality.py --configs w4g128,wanda:2:4+w4g128   # only the sparse + 4-bit rows
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULT = Path(__file__).parent / "results" / "sparsity_quality.json"
CONFIGS = ("float", "magnitude:unstructured", "wanda:unstructured", "sparsegpt:unstructured", "magnitude:2:4",
           "wanda:2:4", "sparsegpt:2:4", "w4g128", "wanda:2:4+w4g128", "wanda:2:4+w4g32")


def options(config: str, args) -> dict:
    """``float``; a format alone (``w4g128``); ``METHOD:PATTERN``, optionally ``+FORMAT`` (sparse + low-bit, RTN)."""
    if config == "float":
        return {}
    config, _, quant = config.partition("+")
    if ":" not in config:
        return {"quant": config}
    method, pattern = config.split(":", 1)
    out = {"sparsity_method": method, "sparsity_pattern": pattern, "sparsity_for": "size"}
    if quant:
        out["quant"] = quant
    if pattern == "unstructured":
        out["sparsity"] = 0.5
    if method != "magnitude":
        out.update(calibration="builtin", calibration_samples=args.samples, calibration_length=args.length)
    return out


def run(config: str, args) -> dict:
    import llmc
    from llmc.runtime.perplexity import evaluate

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmc-sparsity-") as tmp:
        art = llmc.compile("smollm2-135m", "cpu", output=f"{tmp}/a", generation=True, all_logits=True,
                           max_seq_len=args.window, prefill_chunk=args.window, **options(config, args))
        compiled = time.perf_counter() - start
        ppl = evaluate(art, window=args.window, stride=args.stride, max_tokens=args.max_tokens)
        step = decode_step(art, args.new_tokens)
        section, quant = art.manifest.get("sparsity"), art.manifest.get("quantization")
    out = {"perplexity": ppl.ppl, "tokens": ppl.tokens, "decode_tokens_per_s": 1.0 / step, "decode_step_ms": 1e3 * step,
           "compile_seconds": compiled, "seconds": time.perf_counter() - start}
    if quant is not None:
        out["quant_bytes"] = quant["bytes"]  # the quantization pass's weights (all of them without sparsity)
    if section is not None:
        out["weight_bytes"], out["float_bytes"] = section["bytes"], section["float_bytes"]
        out["applied"], out["stored_sparse"] = section["applied"], section["stored_sparse"]
        keep = ("origin", "density", "error", "storage", "bytes")
        out["layers"] = [{k: r.get(k) for k in keep} for r in section["layers"]]
    return out


def decode_step(art, steps: int) -> float:
    """Median seconds of one batch-1 decode step after a 16-token prompt (fixed tokens: no EOS stop)."""
    import numpy as np

    gen = art.generator()
    caches = gen.runner.new_caches(gen.spec, 1)
    prompt = np.arange(1, 17, dtype=np.int64)[None, :]
    gen.prefill(prompt, np.ones_like(prompt, bool), caches)
    times = []
    for i in range(steps):
        ctx = prompt.shape[1] + i + 1
        start = time.perf_counter()
        gen.runner(np.array([[7]]), np.array([[ctx - 1]]), np.ones((1, ctx), bool), caches)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def decisions(config: str, args) -> dict:
    """The pass's apply-or-not decisions for speed (the measured kernel times behind each) and the
    decode step of the artifact it builds."""
    import llmc

    with tempfile.TemporaryDirectory(prefix="llmc-sparsity-") as tmp:
        extra = {**options(config, args), "sparsity_for": "speed"} if config != "float" else {}
        art = llmc.compile("smollm2-135m", "cpu", output=f"{tmp}/a", generation=True, max_seq_len=args.window,
                           prefill_chunk=args.window, **extra)
        section = art.manifest.get("sparsity", {"applied": 0, "layers": []})
        step = decode_step(art, args.new_tokens)
    shapes = {}
    for r in section["layers"]:  # one row per distinct kernel: the layers share four shapes
        shapes.setdefault(f"{r['shape'][0]}x{r['shape'][1]}", {k: r[k] for k in ("storage", "applied", "reason",
                                                                                  "predicted", "measured")})
    return {"applied": section["applied"], "weights": len(section["layers"]), "decode_step_ms": 1e3 * step,
            "by_shape": shapes}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in CONFIGS if c in results]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(names)), [results[c]["perplexity"] for c in names], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title("SmolLM2-135M: 50% unstructured and 2:4 sparsity, and 2:4 + w4g128")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--max-tokens", type=int, default=2048)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--samples", type=int, default=8, help="calibration windows")
    p.add_argument("--length", type=int, default=128, help="tokens per calibration window")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--decisions", action="store_true",
                   help="only compile each config for speed and record its decisions (no perplexity)")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    data.update({"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                 "settings": {k: v for k, v in vars(args).items() if k != "out"}})
    if args.decisions:
        found = data.setdefault("decisions", {})
        for config in args.configs.split(","):
            print(f"decisions {config}", file=sys.stderr, flush=True)
            found[config] = decisions(config, args)
            args.out.write_text(json.dumps(data, indent=1) + "\n")
        return
    results = data.setdefault("smollm2", {})
    for config in args.configs.split(","):
        print(f"smollm2 {config}", file=sys.stderr, flush=True)
        results[config] = run(config, args)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"  perplexity {results[config]['perplexity']:.3f}, decode {results[config]['decode_tokens_per_s']:.1f} "
              f"tokens/s", file=sys.stderr, flush=True)
    plot(results, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
