"""The roofline cost model against measured kernel times of cpu artifacts on this machine.

Each model is captured, every node's origin is set to its own name (so that the manifest's
``payload.kernels`` names the exact IR nodes each TIR kernel computes, not a module path several
nodes share) and it is compiled for the cpu target. Each entry (``main``; ``prefill`` and
``decode`` for SmolLM2's generation step) runs under the Relax VM's instrument, which times
every kernel call. Kernels that share IR nodes are joined into one unit (a TVM kernel shared
by identical layers computes the nodes of all of them); a unit's prediction is the cost model's
``group_time`` of its nodes (one kernel: its flops, and its bytes less what stays inside) with
one launch per call. Per model: Spearman's rank correlation of predicted and measured unit
times, the median ratio predicted / measured, that ratio per op kind (the kind of a unit's
costliest node), the units ranked furthest from their measured rank, and the whole call
(the node-level prediction ``graph_time`` against the wall-clock time of a call).

    python benchmarks/cost_model.py            # writes benchmarks/results/cost_model.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
from scipy.stats import spearmanr

RESULT = Path(__file__).parent / "results" / "cost_model.json"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ["tiny-llama", "tiny-gpt2", "minilm", "small-cnn", "squeezenet", "shufflenet", "resnet50", "smollm2-135m"]
MINILM_SEQ = 128
PREFILL, CONTEXT, MAX_SEQ = 128, 256, 512  # SmolLM2: a prefill chunk of 128 tokens; decode at context 256


def capture(name: str):
    """The model's graph (SmolLM2: its generation step graph), every node's origin its name."""
    from llmc import examples
    from llmc.frontend.causal import load_causal_lm
    from llmc.frontend.load import load_model

    if name == "smollm2-135m":
        graph = load_causal_lm(name, max_seq_len=MAX_SEQ).graph
    elif name == "minilm":
        model, _ = examples.minilm()
        graph = load_model(model, example_inputs=examples.minilm_inputs(seq=MINILM_SEQ))
    elif (LIGHT / f"light_{name}.onnx").is_file():
        graph = load_model(LIGHT / f"light_{name}.onnx")
    else:
        graph = load_model(name)
    for node in graph.nodes:
        node.meta.origin = node.name
    return graph


def entry_sizes(art) -> dict[str, dict[str, int]]:
    """Symbol sizes each entry runs at."""
    if "decode" in art.manifest["payload"]["kernels_per_call"]:
        return {"prefill": {"batch": 1, "seq": PREFILL, "ctx": PREFILL}, "decode": {"batch": 1, "seq": 1, "ctx": CONTEXT}}
    return {"main": {}}


def inputs_for(spec: dict, env: dict[str, int], rng) -> list[np.ndarray]:
    """Arrays for the artifact's inputs at ``env``: zero caches, all-true masks, small ids, normal floats."""
    from llmc.ir import shapes as S

    out = []
    for t in spec["inputs"]:
        shape = tuple(S.evaluate_shape(S.shape(t["shape"]), env))
        if "mask" in t["name"] or t["dtype"] == "bool":
            out.append(np.ones(shape, np.bool_ if t["dtype"] == "bool" else t["dtype"]))
        elif t["name"] == "position_ids":
            start = env["ctx"] - env["seq"]
            out.append(np.broadcast_to(np.arange(start, env["ctx"]), shape).astype(t["dtype"]))
        elif t["name"].startswith("cache_"):
            out.append(np.zeros(shape, t["dtype"]))
        elif t["dtype"].startswith("int"):
            out.append(rng.integers(0, 100, shape).astype(t["dtype"]))
        else:
            out.append(rng.standard_normal(shape).astype(t["dtype"]))
    return out


def measure(session, entry: str, args, runs: int) -> tuple[dict[str, float], dict[str, int], float, float]:
    """Per kernel: median seconds per call of the entry (all its launches summed) and launches per
    call; the median wall-clock call without the instrument; the instrument's cost per launch."""
    import tvm

    fn = session.vm[entry]
    dev = [tvm.runtime.tensor(a, session.device) for a in args]
    plain = _timed(lambda: fn(*dev, *session.params), runs)
    per_run: list[dict[str, float]] = []
    start: dict[str, float] = {}
    launches: dict[str, int] = {}

    def instrument(func, name, before, ret, *rest):
        now = time.perf_counter()
        if before:
            start[name] = now
        else:
            per_run[-1][name] = per_run[-1].get(name, 0.0) + now - start[name]
            if len(per_run) == 1:
                launches[name] = launches.get(name, 0) + 1
        return 0

    session.vm.set_instrument(instrument)
    for _ in range(runs + 2):
        per_run.append({})
        fn(*dev, *session.params)
    session.vm.set_instrument(None)
    per_run = per_run[2:]
    kernels = {k: statistics.median(r.get(k, 0.0) for r in per_run) for k in per_run[0]}
    instrumented = statistics.median(sum(r.values()) for r in per_run)
    return kernels, launches, plain, max(0.0, instrumented - plain) / sum(launches.values())


def _timed(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def units(kernel_origins: dict[str, list[str]], calls: list[str]) -> list[tuple[list[str], set[str]]]:
    """Kernels of one entry joined where they share IR nodes: [(kernels, origins)]."""
    parent = {k: k for k in set(calls)}

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    owner: dict[str, str] = {}
    for k in parent:
        for origin in kernel_origins.get(k, []):
            if origin in owner:
                parent[root(k)] = root(owner[origin])
            else:
                owner[origin] = k
    groups: dict[str, tuple[list[str], set[str]]] = {}
    for k in sorted(parent):
        ks, origins = groups.setdefault(root(k), ([], set()))
        ks.append(k)
        origins.update(kernel_origins.get(k, []))
    return list(groups.values())


def compare(art, env: dict[str, int], measured: dict[str, float], launches: dict[str, int], device) -> dict:
    """Predicted against measured per unit, for one entry."""
    from llmc.codegen.cost import group_time, load_time

    graph = art.graph
    prepared = load_time(graph)
    by_origin: dict[str, list] = {}
    for node in graph.nodes:
        if id(node) not in prepared:
            by_origin.setdefault(node.meta.origin or node.name, []).append(node)
    calls = art.manifest["payload"]["kernels"]
    launched = [k for k in measured if not k.startswith("vm.")]
    rows = []
    for kernels, origins in units(calls, launched):
        nodes = [n for o in sorted(origins) for n in by_origin.get(o, [])]
        if not nodes:
            continue
        predicted = group_time(graph, nodes, device, env, launches=sum(launches[k] for k in kernels))
        costliest = max(nodes, key=lambda n: group_time(graph, [n], device, env).time)
        rows.append({"kernels": kernels, "ops": sorted({n.op for n in nodes}), "kind": _kind(costliest),
                     "predicted_s": predicted.time, "measured_s": sum(measured[k] for k in kernels),
                     "bound": predicted.bound})
    return summarize(rows)


def _kind(node) -> str:
    """The op kind of a node; a fused node's is ``fused(<kind>)`` of the matrix op in it, else of its first op."""
    if node.op != "fused":
        return node.opdef.kind
    kinds = [n.opdef.kind for n in node.attrs["body"].nodes if n.opdef.kind != "shape"]
    matrix = [k for k in kinds if k in ("matmul", "conv", "attention")]
    return f"fused({(matrix or kinds or ['shape'])[0]})"


def summarize(rows: list[dict]) -> dict:
    pred = np.array([r["predicted_s"] for r in rows])
    meas = np.array([r["measured_s"] for r in rows])
    ratio = pred / np.maximum(meas, 1e-9)
    rho = float(spearmanr(pred, meas).statistic) if len(rows) > 2 else float("nan")
    rank_p, rank_m = _ranks(pred), _ranks(meas)
    by_kind: dict[str, list[float]] = {}
    for r, q in zip(rows, ratio):
        by_kind.setdefault(r["kind"], []).append(float(q))
    worst = sorted(range(len(rows)), key=lambda i: -abs(rank_p[i] - rank_m[i]))[:5]
    return {
        "units": len(rows), "spearman": round(rho, 3), "median_ratio": round(float(np.median(ratio)), 3),
        "predicted_ms": round(1e3 * float(pred.sum()), 3), "measured_kernels_ms": round(1e3 * float(meas.sum()), 3),
        "per_kind": {k: {"units": len(v), "median_ratio": round(float(np.median(v)), 3)} for k, v in sorted(by_kind.items())},
        "ranked_wrong": [{"ops": rows[i]["ops"], "kernels": rows[i]["kernels"][:3], "bound": rows[i]["bound"],
                          "predicted_us": round(1e6 * rows[i]["predicted_s"], 2),
                          "measured_us": round(1e6 * rows[i]["measured_s"], 2),
                          "rank_predicted": int(rank_p[i]), "rank_measured": int(rank_m[i])} for i in worst],
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(-x, kind="stable")
    ranks = np.empty(len(x), int)
    ranks[order] = np.arange(1, len(x) + 1)
    return ranks


def run_model(name: str, device, runs: int, opt_level: str | None) -> dict:
    """Compile ``name`` for the cpu, time each entry's kernels, compare with the cost model."""
    import llmc
    from llmc.codegen.cost import graph_time
    from llmc.targets.gpu.runtime import Session

    graph = capture(name)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        art = llmc.compile(graph, target="cpu", output=Path(tmp) / "art", **({"opt_level": opt_level} if opt_level else {}))
        compile_s = time.perf_counter() - start
        session = Session(art.path)
        rng = np.random.default_rng(0)
        out = {"opt_level": art.manifest["opt_level"], "compile_s": round(compile_s, 1)}
        for entry, env in entry_sizes(art).items():
            args = inputs_for(session.spec, env, rng)
            measured, launches, wall, overhead = measure(session, entry, args, runs)
            row = compare(art, env, measured, launches, device)
            row.update({"sizes": env, "launches": sum(v for k, v in launches.items() if not k.startswith("vm.")),
                        "instrument_us_per_launch": round(1e6 * overhead, 2),
                        "call_predicted_ms": round(1e3 * graph_time(art.graph, device, env), 3),
                        "call_measured_ms": round(1e3 * wall, 3)})
            out[entry] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--opt-level", help="optimization level of the artifacts (default: the cpu target's)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    from llmc.codegen import devices

    device = devices.get("cpu")
    results = {}
    for name in args.models:
        try:
            results[name] = run_model(name, device, args.runs, args.opt_level)
        except Exception as e:  # noqa: BLE001  (a model that fails to compile or run must not lose the others)
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        print(name, json.dumps({e: {k: r[k] for k in ("spearman", "median_ratio")} for e, r in results[name].items()
                                if isinstance(r, dict)}), flush=True)
    report = {
        "benchmark": "roofline cost model: predicted vs measured kernel times of cpu artifacts",
        "date": datetime.date.today().isoformat(),
        "device": {"cpu": device.facts["cpu"], "cores": os.cpu_count(), "machine": platform.machine(),
                   "model": device.to_json()},
        "versions": {p: version(p) for p in ("llmc", "apache-tvm", "numpy", "scipy", "torch")},
        "method": (f"median of {args.runs} instrumented calls per entry (Relax VM set_instrument); kernels sharing "
                   "IR nodes joined into units; prediction: llmc.codegen.cost.group_time of a unit's nodes"),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
