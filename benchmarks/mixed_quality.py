"""Mixed precision at equal average bits: uniform RTN and GPTQ vs llmc's exact allocation (with and
without outliers) vs an NNCF-style greedy two-format allocation on the same sensitivities.

SmolLM2-135M-Instruct: perplexity on the offline evaluation corpus (``llmc.runtime.perplexity``;
calibration on its disjoint split). all-MiniLM-L6-v2: mean cosine similarity of sentence embeddings
to float32's (sentences and calibration of ``benchmarks/quant_quality.py``). Sensitivities are
measured once per model (``llmc.passes.quantize.sensitivity``, every candidate the cpu target runs
plus each low-bit one with 0.5% outliers); every allocation is then solved from that table and
compiled as an explicit recipe (``--recipe``), so the three allocators see identical numbers.
Average bits follow the manifest's definition (``docs/passes/mixed.md``).

    python benchmarks/mixed_quality.py                     # writes benchmarks/results/mixed_quality.json + .png
    python benchmarks/mixed_quality.py --bits 3.5 --max-tokens 1024 --models smollm2
    python benchmarks/mixed_quality.py --models smollm2 --table-from out/m --samples 32 --target cpu
                                       # re-solve the table a --quant mixed artifact measured (its method only)
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

RESULTS = Path(__file__).parent / "results"
RESULT = RESULTS / "mixed_quality.json"
PLOT = RESULTS / "mixed_quality.png"
OUTLIERS = 0.005
METHODS = ("rtn", "gptq")
UNIFORM = ("w3g128:rtn", "w3g128:gptq", "w3g128+o0.005:rtn", "w4g128:rtn", "w4g128:gptq")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the sensitivity table, measured once -----------------------------------------------------------


def prepared_graph(graph, target: str):
    """The graph exactly as ``llmc.compile`` hands it to quantization (after the target's early passes)."""
    from llmc.codegen.target import get_target
    from llmc.passes import run_pipeline
    from llmc.passes.pipelines import resolve, split_for_quantization

    tgt = get_target(target)
    early, _ = split_for_quantization(resolve(tgt.pipeline(tgt.default_level)))
    graph, _ = run_pipeline(graph, [str(s) for s in early], options=tgt.pass_options(tgt.make_options()))
    return graph, tgt


def sensitivities(graph, tgt, calibration):
    """The candidates' sensitivities per rounding method (``rtn``, and ``gptq``: GPTQ's local errors on
    held-out rows), as ``--quant mixed`` measures them by default: for an LLM both scaled by one set
    of end-to-end gains, for MiniLM the local errors."""
    from llmc.codegen import devices
    from llmc.passes.quantize.endtoend import gains, weigh
    from llmc.passes.quantize.mixed import default_measure
    from llmc.passes.quantize.sensitivity import candidates, measure, table

    formats = candidates(set(tgt.quant_formats()), (OUTLIERS,))
    start = time.perf_counter()
    tables = {}
    for method in METHODS:
        tables[method] = table(graph, formats, devices.get("cpu"))
        measure(graph, calibration, tables[method], how="output", method=method)
    how = default_measure(graph)
    if how == "end-to-end":
        gain = gains(graph, calibration, tables["rtn"])
        for rows in tables.values():
            weigh(rows, gain)
    seconds = time.perf_counter() - start
    log(f"  {how} sensitivities of {len(formats)} formats x {len(tables['rtn'])} weights ({', '.join(METHODS)}) "
        f"in {seconds:.0f} s")
    return tables, {"measure": how, "seconds": round(seconds, 1), "gains": {r.key: r.gain for r in tables["rtn"]}}


def table_from(artifact: Path) -> tuple[dict, dict]:
    """The sensitivity table a ``--quant mixed`` artifact measured (its manifest), keyed by its rounding method."""
    from llmc.passes.quantize.sensitivity import Row

    q = json.loads((Path(artifact) / "manifest.json").read_text())["quantization"]
    rows = [Row.from_json(r) for r in q["mixed"]["table"]]
    return {q["recipe"]["method"]: rows}, {"measure": q["mixed"]["measure"], "table_from": str(artifact),
                                           "calibration": q["calibration"], "gains": {r.key: r.gain for r in rows}}


def allocations(rows, bits: float, method: str) -> dict[str, dict]:
    """Recipe, predicted average bits and total sensitivity of each allocator at ``bits`` (outliers with RTN only)."""
    from llmc.passes.quantize.allocate import Budget, bracket, greedy, recipe, solve
    from llmc.passes.quantize.sensitivity import Row

    budget = Budget("avg_bits", bits)
    plain = [Row(r.weight, r.key, r.origin, r.layer, r.shape, r.group, [c for c in r.choices if not c.format.outliers])
             for r in rows]
    solvers = (("llmc", plain, None), ("llmc+outliers", rows, None), ("greedy", plain, "greedy"))
    out = {}
    for name, table_, solver in solvers if method == "rtn" else [s for s in solvers if s[0] != "llmc+outliers"]:
        if solver == "greedy":
            low, high = bracket([c.format for c in plain[0].choices], plain, budget)
            choice, name = greedy(plain, budget, low, high), f"greedy {low.name}/{high.name}"
        else:
            choice = solve(table_, budget)
        out[name] = {"recipe": recipe(table_, choice, method).to_json(), "predicted_avg_bits": budget.spend(table_, choice),
                     "total_sensitivity": sum(choice[r.weight].error for r in table_)}
    return out


# -- evaluation ---------------------------------------------------------------------------------


def variants(tables, bits_list) -> list[tuple[str, float | None, dict, dict]]:
    """(label, target bits, compile options, facts) in the order they are evaluated."""
    out = []
    for bits in bits_list:
        for method, rows in tables.items():
            for name, facts in allocations(rows, bits, method).items():
                out.append((f"{name}:{method}@{bits:g}", bits, {"recipe": facts["recipe"]},
                            {k: v for k, v in facts.items() if k != "recipe"}))
    for uniform in UNIFORM:
        fmt, method = uniform.split(":")
        out.append((uniform, None, {"quant": fmt, "quant_method": method}, {}))
    # the 3.5-bit comparison and uniform W3 first (round to nearest, then GPTQ), then the other budgets
    return sorted(out, key=lambda v: (v[1] != 3.5 and not v[0].startswith("w3g128"), "gptq" in v[0]))


def smollm2(args, results, save) -> None:
    import llmc
    from llmc.api import load_causal_lm
    from llmc.passes.quantize.apply import _tokenize, _vocab
    from llmc.passes.quantize.calibration import load_calibration
    from llmc.runtime.perplexity import evaluate

    if args.table_from:  # no model load, no calibration run: the artifact measured them
        tables, measured = table_from(args.table_from)
    else:
        lm = load_causal_lm("smollm2-135m", max_seq_len=args.window, all_logits=True)
        graph, tgt = prepared_graph(lm.graph, args.target)
        calibration = load_calibration(graph, "builtin", tokenizer=_tokenize(lm.save_tokenizer),
                                       vocab=_vocab(graph), samples=args.samples, length=args.length)
        tables, measured = sensitivities(graph, tgt, calibration)
    out = results.setdefault("smollm2", {"metric": f"perplexity, offline eval corpus, window {args.window} stride "
                                                   f"{args.stride}, at most {args.max_tokens} tokens; calibration builtin "
                                                   f"{args.samples} x {args.length} tokens"})
    out["sensitivity"] = measured
    todo = [v for v in [("float", None, {}, {})] + variants(tables, args.bits) if _wanted(v[0], args)]
    with tempfile.TemporaryDirectory(prefix="llmc-mq-") as tmp:
        for label, bits, options, facts in todo:
            if label in out:
                continue
            start = time.perf_counter()
            if options:
                options = {**options, "calibration": "builtin", "calibration_samples": args.samples,
                           "calibration_length": args.length}
            art = llmc.compile("smollm2-135m", args.target, output=f"{tmp}/{len(out)}", generation=True,
                               all_logits=True, max_seq_len=args.window, prefill_chunk=args.window, **options)
            result = evaluate(art, max_tokens=args.max_tokens, window=args.window, stride=args.stride)
            out[label] = {"perplexity": result.ppl, "tokens": result.tokens, "target_bits": bits, **facts,
                          **_size(art), "seconds": time.perf_counter() - start}
            save()
            log(f"smollm2 {label}: perplexity {result.ppl:.3f} at {out[label]['avg_bits']:.3f} bits")


def minilm(args, results, save) -> None:
    from quant_quality import CALIBRATION_SENTENCES, SENTENCES
    from transformers import AutoTokenizer

    import llmc
    from llmc.examples import minilm_folder
    from llmc.frontend.load import load_model
    from llmc.passes.quantize.calibration import load_calibration

    tok = AutoTokenizer.from_pretrained(str(minilm_folder()))

    def batch(sentences):
        enc = tok(sentences, padding="max_length", max_length=24, truncation=True, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    feeds, calib = batch(SENTENCES), batch(CALIBRATION_SENTENCES)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    out = results.setdefault("minilm", {"metric": "mean cosine similarity of mean-pooled sentence embeddings to "
                                                  "float32, 12 sentences; calibration 12 other sentences"})
    with tempfile.TemporaryDirectory(prefix="llmc-mq-") as tmp:
        np.savez(f"{tmp}/calib.npz", **calib)
        graph, tgt = prepared_graph(load_model(str(minilm_folder()), input_shapes=shapes), args.target)
        tables, out["sensitivity"] = sensitivities(graph, tgt, load_calibration(graph, f"{tmp}/calib.npz"))
        reference = None
        for label, bits, options, facts in [v for v in [("float", None, {}, {})] + variants(tables, args.bits)
                                             if _wanted(v[0], args)]:
            if options:
                options = {**options, "calibration": f"{tmp}/calib.npz"}
            art = llmc.compile(str(minilm_folder()), args.target, output=f"{tmp}/{len(out)}", input_shapes=shapes,
                               **options)
            hidden = next(iter(art.run(feeds).values()))
            mask = feeds["attention_mask"][..., None]
            emb = (hidden * mask).sum(1) / mask.sum(1)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            reference = emb if reference is None else reference
            out[label] = {"mean_cosine": float((emb * reference).sum(1).mean()), "target_bits": bits, **facts,
                          **_size(art)}
            save()
            log(f"minilm {label}: cosine {out[label]['mean_cosine']:.5f} at {out[label]['avg_bits']:.3f} bits")


def _wanted(label: str, args) -> bool:
    return not args.only or any(label.startswith(prefix) for prefix in args.only.split(","))


def _size(art) -> dict:
    q = art.manifest.get("quantization")
    if q is None:
        return {"avg_bits": 32.0, "bytes": None}
    return {"avg_bits": q["avg_bits"], "bytes": q["bytes"]}


# -- table and picture --------------------------------------------------------------------------


def pareto_plot(results: dict, path: Path) -> bool:
    """Perplexity (log) against stored bytes of the quantized weights, one marker per allocator."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {k: v for k, v in results.get("smollm2", {}).items() if isinstance(v, dict) and v.get("bytes")}
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, marker in (("llmc:", "o"), ("llmc+outliers:", "s"), ("greedy", "^"), ("w", "x")):
        for method, color in (("rtn", "tab:blue"), ("gptq", "tab:red")):
            pts = [(v["bytes"] / 2**20, v["perplexity"]) for k, v in rows.items()
                   if k.startswith(kind) and f":{method}" in k]
            if pts:
                label = {"w": "uniform"}.get(kind, kind.rstrip(":"))
                ax.scatter(*zip(*pts), marker=marker, color=color, label=f"{label} ({method})")
    ax.set_yscale("log")
    ax.set_xlabel("stored bytes of quantizable weights (MiB)")
    ax.set_ylabel("perplexity")
    ax.set_title("SmolLM2-135M: perplexity vs size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="smollm2,minilm")
    p.add_argument("--bits", default="3.5,3.0,4.25", help="average bits to allocate at (3.5 is evaluated first)")
    p.add_argument("--target", default="reference", help="where perplexity is scored (reference: no kernel builds)")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--samples", type=int, default=8, help="calibration samples (of --length tokens)")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--only", default="", help="evaluate only labels starting with these (comma-separated)")
    p.add_argument("--table-from", type=Path, help="a --quant mixed artifact of SmolLM2: re-solve its table "
                                                    "(give its --samples) instead of measuring one")
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args()
    args.bits = [float(b) for b in args.bits.split(",")]
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}  # resume a cut run
    results.update({"benchmark": "mixed_quality",
                    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
                    "versions": {k: version(k) for k in ("llmc", "apache-tvm", "numpy", "scipy")},
                    "target": args.target, "outliers": OUTLIERS})
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        pareto_plot(results, args.out.with_suffix(".png"))

    for model, run in (("minilm", minilm), ("smollm2", smollm2)):
        if model in args.models.split(","):
            run(args, results, save)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
