"""Decode speed of SmolLM2-135M's cpu artifacts per quantization recipe, at batch 1 on this CPU.

The speed half of ``mixed_quality.py`` (which scores perplexity on the interpreter): for the float
model, uniform W4/W3/W2, W3 with 0.5% float16 outliers, a mixed recipe (``--recipe``: a
``recipe.json`` written by ``--quant mixed``, e.g. the 3.5-bit allocation), and 2:4 sparsity + W4
stored compressed (``--sparsity-for size``), each compiled for ``cpu`` (RTN: the rounding method
does not change the kernels) and run in its own child process: 128 new tokens after a 128-token
prompt, tokens/s = 1 / median step (``bench_generate``'s runner), beside the bytes of weights.

    python benchmarks/mixed_speed.py --recipe out/m/recipe.json   # writes benchmarks/results/mixed_speed.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from capture_7b import cpu_model  # benchmarks/ is on the path when a script here runs

RESULT = Path(__file__).parent / "results" / "mixed_speed.json"
# label -> llmc.compile options (on top of the cpu target and RTN)
RECIPES = {
    "float32": {},
    "w4g128": {"quant": "w4g128"},
    "w3g128": {"quant": "w3g128"},
    "w2g64": {"quant": "w2g64"},
    "w3g128+o0.005": {"quant": "w3g128+o0.005"},
    "2:4 + w4g128 (stored compressed)": {"quant": "w4g128", "sparsity": 0.5, "sparsity_pattern": "2:4",
                                         "sparsity_method": "magnitude", "sparsity_for": "size"},
}


def child(artifact: str) -> dict:
    from bench_generate import LlmcRunner, prompt_ids, warm_decode

    return warm_decode(LlmcRunner(artifact), prompt_ids(128))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, help="a mixed allocation's recipe.json to time as well")
    p.add_argument("--only", default="", help="labels to run (comma-separated; default all)")
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    import llmc
    from llmc.examples import smollm2_135m

    recipes = dict(RECIPES)
    if args.recipe:  # rounded by RTN here: the method does not change the kernels
        recipes[f"mixed ({args.recipe.parent.name})"] = {"recipe": {**json.loads(args.recipe.read_text()), "method": "rtn"}}
    wanted = [w for w in args.only.split(",") if w]
    results = {}
    with tempfile.TemporaryDirectory(prefix="llmc-mixed-speed-") as tmp:
        for i, (label, options) in enumerate(recipes.items()):
            if wanted and not any(label.startswith(w) for w in wanted):
                continue
            print(f"compiling {label} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            art = llmc.compile(smollm2_135m(), "cpu", output=Path(tmp) / str(i), **options)
            row = {"compile_s": round(time.perf_counter() - start, 1),
                   "options": {k: v if k != "recipe" else str(args.recipe) for k, v in options.items()},
                   "weight_file_bytes": sum(f.stat().st_size for f in art.path.glob("*.safetensors"))}
            if "quantization" in art.manifest:
                row["avg_bits"] = art.manifest["quantization"].get("avg_bits")
            proc = subprocess.run([sys.executable, __file__, "--child", str(art.path)], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                row["failed"] = proc.stderr.strip().splitlines()[-1:]
            else:
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            results[label] = row
            print(f"  {row.get('tokens_per_s', 0):.1f} tokens/s, {row['weight_file_bytes'] / 2**20:.1f} MiB",
                  file=sys.stderr, flush=True)
    out = {"benchmark": "mixed_speed", "model": "smollm2-135m", "date": datetime.date.today().isoformat(),
           "device": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
           "versions": {"llmc": llmc.__version__}, "decode": "batch 1, 128 new tokens after 128, median step",
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
