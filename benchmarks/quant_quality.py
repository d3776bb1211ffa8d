"""Quality of llmc's quantization recipes on real weights.

SmolLM2-135M-Instruct: perplexity on the offline evaluation corpus (``llmc.runtime.perplexity``,
the same windows as ``benchmarks/perplexity.py``) of float32 (the GGUF file dequantized) and of
each recipe, calibrated on the corpus' disjoint calibration split (``--calibration builtin``).
all-MiniLM-L6-v2 (real weights): mean cosine similarity of each recipe's sentence embeddings
(mean-pooled last hidden state) to float32's, on fixed English sentences; calibrated on other
sentences (an .npz of tokenized inputs).

    python benchmarks/quant_quality.py                  # writes benchmarks/results/quant_quality.json
    python benchmarks/quant_quality.py --recipes w8:rtn,w4g128:gptq --max-tokens 2048
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "quant_quality.json"
RECIPES = ("float:-", "w8:rtn", "w4g128:rtn", "w4g128:gptq", "w4g128:awq", "w4g32:gptq", "w3g128:rtn", "w3g128:gptq",
           "w3g128:awq", "w8a8:smoothquant")
SENTENCES = [
    "The cat sat quietly on the warm windowsill.", "Stock markets fell sharply after the announcement.",
    "She plays the violin in the city orchestra.", "Heavy rain is expected across the north tomorrow.",
    "The recipe calls for two cups of flour and an egg.", "Quantum computers use qubits instead of bits.",
    "He forgot his umbrella at the train station.", "The museum opens a new exhibition on ancient Egypt.",
    "Regular exercise improves both mood and sleep.", "The committee postponed its decision until spring.",
    "A small boat drifted slowly across the lake.", "Engineers tested the bridge under heavy loads.",
]
CALIBRATION_SENTENCES = [
    "Birds migrate south when the weather turns cold.", "The library extended its opening hours this month.",
    "Fresh bread smells wonderful in the morning.", "The team celebrated their victory late into the night.",
    "Solar panels convert sunlight into electricity.", "The old clock in the hall stopped at midnight.",
    "Children built a snowman in the park.", "The doctor recommended more water and rest.",
    "The train to the coast leaves every hour.", "Farmers harvested the wheat before the storm.",
    "Our neighbours adopted a playful puppy.", "The software update fixed several security bugs.",
]  # as many as SENTENCES: the compiled model has static shapes


def recipe_options(recipe: str) -> dict:
    fmt, method = recipe.split(":")
    if fmt == "float":
        return {}
    return {"quant": fmt, "quant_method": "rtn" if method == "smoothquant" else method, "calibration": "builtin"}


def smollm2(recipes, args, out: dict, save) -> None:
    from llmc.runtime.perplexity import evaluate

    for recipe in recipes:
        start = time.perf_counter()
        print(f"smollm2 {recipe}", file=sys.stderr, flush=True)
        result = evaluate("smollm2-135m", target=args.target, window=args.window, stride=args.stride,
                          max_tokens=args.max_tokens, **recipe_options(recipe))
        out[recipe] = {"perplexity": result.ppl, "tokens": result.tokens, "seconds": time.perf_counter() - start}
        save()
        print(f"  perplexity {result.ppl:.4f}", file=sys.stderr, flush=True)


def minilm(recipes, args, out: dict, save) -> None:
    from transformers import AutoTokenizer

    import llmc
    from llmc.examples import minilm_folder

    tok = AutoTokenizer.from_pretrained(str(minilm_folder()))

    def batch(sentences):
        enc = tok(sentences, padding="max_length", max_length=24, truncation=True, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    feeds, calib = batch(SENTENCES), batch(CALIBRATION_SENTENCES)
    reference = None
    with tempfile.TemporaryDirectory(prefix="llmc-qq-") as tmp:
        np.savez(f"{tmp}/calib.npz", **calib)
        for recipe in recipes:
            options = recipe_options(recipe)
            if "calibration" in options:
                options["calibration"] = f"{tmp}/calib.npz"
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            art = llmc.compile(str(minilm_folder()), args.target, output=f"{tmp}/{recipe.replace(':', '_')}",
                               input_shapes=shapes, **options)
            hidden = next(iter(art.run(feeds).values()))
            mask = feeds["attention_mask"][..., None]
            emb = (hidden * mask).sum(1) / mask.sum(1)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            reference = emb if reference is None else reference
            out[recipe] = {"mean_cosine": float((emb * reference).sum(1).mean())}
            save()
            print(f"minilm {recipe}: cosine {out[recipe]['mean_cosine']:.5f}", file=sys.stderr, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help="FORMAT:METHOD list; float:- first")
    p.add_argument("--models", default="smollm2,minilm")
    p.add_argument("--target", default="cpu")
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    recipes = args.recipes.split(",")
    results = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
               "versions": {k: version(k) for k in ("llmc", "apache-tvm", "numpy")}, "target": args.target}
    models = args.models.split(",")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every recipe: a long run cut short keeps what it measured
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    for model, run in (("smollm2", smollm2), ("minilm", minilm)):
        if model in models:
            results[model] = {}
            run(recipes, args, results[model], save)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
