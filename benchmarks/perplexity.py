"""Perplexity of SmolLM2-135M-Instruct on the offline evaluation corpus: llmc (cpu target and
reference interpreter) beside transformers reading the same GGUF file, same windows, same ids.

The corpus is a fixed extraction of the Python standard library's docstrings
(``llmc.runtime.perplexity.corpus``, hashed in the result); its first ``--max-tokens`` tokens
are scored with windows of ``--window`` tokens moved by ``--stride``.

    python benchmarks/perplexity.py                      # writes benchmarks/results/perplexity.json
    python benchmarks/perplexity.py --max-tokens 2048 --runners llmc-cpu,transformers
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

from capture_7b import cpu_model  # benchmarks/ is on the path when a script here runs

RESULT = Path(__file__).parent / "results" / "perplexity.json"
RUNNERS = ("llmc-cpu", "llmc-reference", "transformers")


def progress(name: str):
    def show(done: int, total: int) -> None:
        print(f"\r{name}: window {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return show


def run_llmc(model: str, target: str, args) -> dict:
    from llmc.runtime.perplexity import evaluate

    start = time.perf_counter()
    result = evaluate(model, target=target, window=args.window, stride=args.stride, max_tokens=args.max_tokens,
                      progress=progress(f"llmc-{target}"))
    return {**result.to_json(), "seconds": time.perf_counter() - start}


def run_transformers(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmc.examples import SMOLLM2_FILE, smollm2_135m
    from llmc.runtime.perplexity import corpus, perplexity, tokenize_corpus, transformers_scorer

    torch.manual_seed(0)
    folder = str(smollm2_135m().parent)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_FILE, dtype=torch.float32)
    text = corpus()
    start = time.perf_counter()
    result = perplexity(transformers_scorer(model), tokenize_corpus(tokenizer, text.text), window=args.window,
                        stride=args.stride, max_tokens=args.max_tokens, progress=progress("transformers"))
    result.corpus_sha256 = text.sha256
    return {**result.to_json(), "seconds": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--runners", default=",".join(RUNNERS))
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    from llmc.runtime.perplexity import corpus

    text = corpus()
    results = {}
    for runner in args.runners.split(","):
        if runner == "transformers":
            results[runner] = run_transformers(args)
        else:
            results[runner] = run_llmc(args.model, runner.removeprefix("llmc-"), args)
        print(f"{runner}: perplexity {results[runner]['ppl']:.4f} over {results[runner]['tokens']} tokens "
              f"({results[runner]['seconds']:.0f} s)", file=sys.stderr)
    if "transformers" in results:
        base = results["transformers"]["ppl"]
        for r in results.values():
            r["relative_to_transformers"] = r["ppl"] / base - 1
    out = {
        "benchmark": "perplexity", "model": args.model, "date": datetime.date.today().isoformat(),
        "device": {"cpu": cpu_model(), "python": platform.python_version()},
        "versions": {k: version(k) for k in ("llmc", "torch", "transformers", "apache-tvm", "numpy")},
        "corpus": {"source": text.source, "sha256": text.sha256, "chars": len(text.text)},
        "window": args.window, "stride": args.stride, "max_tokens": args.max_tokens, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
