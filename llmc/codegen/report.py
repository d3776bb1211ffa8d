"""What a person and the manifest need to know about a graph, and how it reads as tables.

``graph_facts(graph)`` is the one place the facts are computed (signature, symbolic dims,
parameter count, weight memory, op histogram, flops, the per-layer table); the manifest stores
them under ``"model"``. ``model_tables`` / ``artifact_tables`` lay facts out as ``Table``s that
``to_markdown`` writes into report.md and ``llmc inspect`` prints with rich: one layout, two media.

Flops come from each op's registry ``Cost``; symbolic dims count at the sizes given (default 1),
recorded beside the numbers under ``"sizes"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llmc.errors import InputError
from llmc.ir import shapes as S
from llmc.ir.graph import Graph, Value
from llmc.ir.ops.registry import substitute
from llmc.ir.types import TensorType


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


# -- facts ----------------------------------------------------------------------------------


def signature(values: Iterable[Value]) -> list[dict]:
    """``[{"name", "dtype", "shape"}]``; symbolic dims are strings such as ``"seq"``."""
    return [{"name": v.name, "dtype": v.type.dtype.value, "shape": [S.to_json(d) for d in v.type.shape]} for v in values]


def graph_facts(graph: Graph, sizes: Mapping[str, int] | None = None) -> dict:
    """Everything ``llmc inspect`` shows about ``graph``; JSON-ready and deterministic."""
    env = symbol_sizes(graph, sizes or {}, default=1)
    layers = layer_table(graph, env)
    return {
        "name": graph.name,
        "inputs": signature(graph.inputs),
        "outputs": signature(graph.outputs),
        "symbols": graph.symbols(),
        "sizes": env,
        "parameters": graph.parameter_count(),
        "weight_bytes": graph.weight_bytes(),
        "nodes": len(graph.nodes),
        "flops": sum(row["flops"] for row in layers),
        "ops": graph.op_histogram(),
        "layers": layers,
    }


def symbol_sizes(graph: Graph, sizes: Mapping[str, int], *, default: int) -> dict[str, int]:
    """A size for every symbolic dim of ``graph``: from ``sizes``, else ``default``.
    Names in ``sizes`` that are not symbols of the graph are an ``InputError`` (a typo, most likely)."""
    symbols = graph.symbols()
    unknown = sorted(set(sizes) - set(symbols))
    if unknown:
        raise InputError(f"the model has no symbolic dim(s) {unknown}",
                         hint=f"its symbolic dims are {symbols}" if symbols else "its shapes are all static")
    return {s: int(sizes.get(s, default)) for s in symbols}


def layer_table(graph: Graph, env: Mapping[str, int]) -> list[dict]:
    """One row per model layer (``NodeMeta.layer``; ``None`` = outside the blocks, listed last).

    A weight counts in the layer of its first reader, so a tied embedding is counted once.
    Costs are taken on concrete types (symbols bound by ``env``): exact, and fast on a 7B graph,
    where symbolic cost expressions would spend minutes in sympy.
    """
    rows: dict[int | None, dict] = {}
    counted: set[int] = set()
    concrete = Concrete(env)
    for node in graph.nodes:
        row = rows.setdefault(node.meta.layer, {"layer": node.meta.layer, "nodes": 0, "params": 0,
                                                "weight_bytes": 0, "flops": 0})
        row["nodes"] += 1
        cost = node.opdef.cost([concrete(v.type) for v in node.inputs], [concrete(v.type) for v in node.outputs],
                               substitute(node.attrs, concrete.env))
        row["flops"] += round(concrete.number(cost.flops))  # float factors (``1.0*seq``) rounded
        for v in node.inputs:
            if v.is_const and id(v) not in counted:
                counted.add(id(v))
                row["params"] += int(concrete(v.type).numel)
                row["weight_bytes"] += int(concrete(v.type).nbytes())
    return sorted(rows.values(), key=lambda r: (r["layer"] is None, r["layer"] or 0))


class Concrete:
    """Tensor types with every symbol replaced by its size (1 for symbols ``env`` does not name)."""

    def __init__(self, env: Mapping[str, int]):
        self.env = dict(env)
        self._cache: dict[TensorType, TensorType] = {}

    def __call__(self, t: TensorType) -> TensorType:
        if t.is_static:
            return t
        if t not in self._cache:
            for name in S.symbols(t.shape):
                self.env.setdefault(name, 1)
            self._cache[t] = t.with_shape(S.evaluate_shape(t.shape, self.env))
        return self._cache[t]

    def number(self, d) -> float:
        """A cost as a float. Symbols can remain (a fused node's cost sums its body's own symbolic
        types): they count at their size in ``env``, else 1."""
        if not hasattr(d, "free_symbols"):
            return float(d)
        return float(d.subs({S.sym(s): self.env.get(s, 1) for s in map(str, d.free_symbols)}))


# -- tables ---------------------------------------------------------------------------------


def model_tables(facts: dict) -> list[Table]:
    """Summary, signature, per-layer table and op histogram of ``graph_facts`` output."""
    sizes = ", ".join(f"{k}={v}" for k, v in facts["sizes"].items())
    summary = [
        ["parameters", count(facts["parameters"]) + (f" ({facts['parameters']:,})" if facts["parameters"] >= 1000 else "")],
        ["weight memory", nbytes(facts["weight_bytes"])],
        ["nodes", f"{facts['nodes']:,}"],
        ["flops per call", count(facts["flops"]) + (f" (at {sizes})" if sizes else "")],
        ["symbolic dims", ", ".join(facts["symbols"]) or "none (static shapes)"],
    ]
    sig = [[kind, v["name"], v["dtype"], "[" + ", ".join(map(str, v["shape"])) + "]"]
           for kind in ("input", "output") for v in facts[kind + "s"]]
    layers = [["-" if r["layer"] is None else str(r["layer"]), str(r["nodes"]), count(r["params"]),
               nbytes(r["weight_bytes"]), count(r["flops"])] for r in facts["layers"]]
    return [
        Table(f"model {facts['name']}", ["", ""], summary),
        Table("signature", ["", "name", "dtype", "shape"], sig),
        Table("layers (- = outside the blocks)", ["layer", "nodes", "params", "weights", "flops"], layers),
        Table("ops", ["op", "count"], [[op, str(n)] for op, n in sorted(facts["ops"].items(), key=lambda kv: (-kv[1], kv[0]))]),
    ]


def artifact_tables(manifest: dict) -> list[Table]:
    """The compile half of a manifest (target, options, passes, payload), then ``model_tables``."""
    target = manifest["target"]
    options = ", ".join(f"{k}={v}" for k, v in target["options"].items()) or "defaults"
    compiled = [["target", target["name"]], ["options", options], ["optimization", manifest["opt_level"]],
                ["llmc", manifest["llmc"]], ["schema", str(manifest["schema"])]]
    target_tables, shown = _target_tables(manifest)
    compiled += [[k, _short(v)] for k, v in manifest["payload"].items() if k not in shown]
    passes = [[pass_label(p["name"], p.get("round")), "yes" if p["changed"] else "no", _short(p["stats"])]
              for p in manifest["passes"]]
    tables = [Table("artifact", ["", ""], compiled), *model_tables(manifest["model"])]
    tables.append(Table(f"passes ({manifest['opt_level']})", ["pass", "changed", "stats"], passes))
    if "quantization" in manifest:
        tables.append(quantization_table(manifest["quantization"]))
        if "mixed" in manifest["quantization"]:
            tables.append(mixed_table(manifest["quantization"]))
    if "sparsity" in manifest:
        from llmc.passes.sparsity.report import sparsity_table

        tables.append(sparsity_table(manifest["sparsity"]))
    tables += target_tables
    if "cost" in manifest:
        from llmc.codegen.cost import cost_tables

        tables += cost_tables(manifest["cost"])
    if "files" in manifest:
        tables.append(Table("files", ["file", "sha256"], [[f, h[:16]] for f, h in manifest["files"].items()]))
    return tables


def _target_tables(manifest: dict) -> tuple[list[Table], tuple[str, ...]]:
    """The artifact's target's own tables and the payload keys they show (none for a target not installed)."""
    from llmc.codegen.target import all_targets

    target = {t.name: t for t in all_targets()}.get(manifest["target"]["name"])
    return ([], ()) if target is None else (target.report_tables(manifest), target.report_keys)


def quantization_table(section: dict) -> Table:
    """One row per quantized weight: format, outliers, method, error (and on what it was measured), bytes,
    bits per weight; with ``--quant mixed`` the chosen format's sensitivity and predicted decode time; the
    sparsity pass's pattern where it ran."""
    rows = [[r["origin"], str(r["layer"] if r["layer"] is not None else "-"), r["format"],
             f"{r.get('outliers', 0.0):.2%}" if r.get("outliers") else "-", r["method"],
             f"{r['error']:.2e} ({r['metric']})",
             "-" if r.get("sensitivity") is None else f"{r['sensitivity']:.2e}",
             "-" if r.get("time_s") is None else f"{r['time_s'] * 1e6:.1f} us", r.get("sparsity") or "-",
             nbytes(r["bytes"]), f"{32 * r['bytes'] / r['float_bytes']:.2f}"]
            for r in section["layers"]]
    ratio = section["bytes"] / max(section["float_bytes"], 1)
    calib = section["calibration"]
    data = "none" if calib is None else f"{calib['source']} ({calib['tokens']} tokens)"
    bits = f", {section['avg_bits']:.3f} average bits" if "avg_bits" in section else ""
    title = (f"quantization: recipe {_short(section['recipe'])}; calibration {data}; "
             f"{nbytes(section['bytes'])} of quantized weights, {ratio:.3f}x their float32 size{bits}")
    return Table(title, ["weight", "layer", "format", "outliers", "method", "error", "sensitivity",
                         "decode time", "sparsity", "bytes", "bits"], rows)


def mixed_table(section: dict) -> Table:
    """The mixed-precision allocation against its budget, and the greedy baseline on the same sensitivities."""
    m = section["mixed"]
    greedy = m["greedy_baseline"]
    rows = [["budget", m["budget_text"]], ["achieved", _spent(m["achieved"], m["budget"]["kind"])],
            ["smallest possible", _spent(m["minimum"], m["budget"]["kind"])],
            ["average bits", f"{m['avg_bits']:.3f} ({m['avg_bits_definition']})"],
            ["predicted decode step", f"{m['decode_time_s'] * 1e3:.3f} ms on {m['device']}"],
            ["total sensitivity", f"{m['total_error']:.4g} ({m['measure']}; {m['solver']})"],
            ["greedy baseline", (f"{' / '.join(greedy['formats'])}: total sensitivity {greedy['total_error']:.4g}, "
                                 f"{_spent(greedy['achieved'], m['budget']['kind'])}")],
            ["candidates", ", ".join(m["candidates"])]]
    return Table("mixed precision: the allocation against the budget", ["", ""], rows)


def _spent(value: float, kind: str) -> str:
    if kind == "avg_bits":
        return f"{value:.3f} average bits"
    return f"{value * 1e3:.3f} ms" if kind == "latency" else nbytes(int(value))


def pass_label(name: str, round: int | None) -> str:
    """``cse`` or, inside a fixpoint group, ``cse (round 2)``."""
    return name if round is None else f"{name} (round {round})"


def _short(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def to_markdown(tables: list[Table], title: str) -> str:
    lines = [f"# {title}", ""]
    for t in tables:
        lines += [f"## {t.title}", "", "| " + " | ".join(t.columns) + " |", "|" + " --- |" * len(t.columns)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in t.rows]
        lines.append("")
    return "\n".join(lines)


def render_report(manifest: dict) -> str:
    """report.md of an artifact (everything in the manifest except the file hashes)."""
    body = {k: v for k, v in manifest.items() if k != "files"}
    text = to_markdown(artifact_tables(body), f"llmc artifact: {manifest['model']['name']}")
    plot = manifest.get("quantization", {}).get("plot")
    text += f"\n![error and bits per quantized weight]({plot})\n" if plot else ""
    cost_plot = manifest.get("cost", {}).get("plot")
    return text + (f"\n![predicted time per layer]({cost_plot})\n" if cost_plot else "")


def plot_cost(section: dict, path: Path) -> bool:
    """Write a PNG of a ``llmc.codegen.cost.cost_section``: predicted time per layer, stacked
    compute-bound, memory-bound and launch time, one panel per phase (call, or decode and prefill).
    Returns False (writing nothing) when matplotlib (the ``report`` extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = section["phases"]
    width = max(6, 0.25 * max(len(p["layers"]) for p in phases.values()))
    fig, axes = plt.subplots(len(phases), 1, figsize=(width, 3.2 * len(phases)), squeeze=False)
    for ax, (phase, facts) in zip(axes[:, 0], phases.items()):
        labels = ["-" if r["key"] is None else str(r["key"]) for r in facts["layers"]]
        bottom = [0.0] * len(labels)
        for part, color in (("compute_bound_s", "tab:red"), ("memory_bound_s", "tab:blue"), ("launch_s", "tab:gray")):
            values = [1e3 * r[part] for r in facts["layers"]]
            ax.bar(range(len(labels)), values, bottom=bottom, color=color, label=part[:-2].replace("_", "-"))
            bottom = [b + v for b, v in zip(bottom, values)]
        sizes = ", ".join(f"{k}={v}" for k, v in facts["sizes"].items())
        ax.set_title(f"{phase} on {section['device']['name']}" + (f" ({sizes})" if sizes else ""), fontsize=9)
        ax.set_ylabel("predicted ms")
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("layer (- = outside the blocks)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- numbers for people ---------------------------------------------------------------------


def count(n: float) -> str:
    """``6738415616`` -> ``6.74 B``."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return str(int(n))


def nbytes(n: float) -> str:
    """``13476831232`` -> ``12.55 GiB``."""
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{int(n)} B"
