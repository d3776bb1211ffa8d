"""``quantize_for``: what ``llmc.compile`` runs for ``--quant`` / ``--recipe``: check, calibrate, quantize, describe.

``--quant mixed`` first chooses the recipe under a budget (``mixed.plan``); the chosen recipe is
written beside the manifest as ``recipe.json``, which ``--recipe`` reads back."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llmc.codegen.devices import Device
from llmc.errors import InputError
from llmc.ir.graph import Graph
from llmc.passes.manager import PassRecord
from llmc.passes.quantize import LayerRecord, Recipe, load_calibration, quantize
from llmc.passes.quantize.allocate import Budget
from llmc.passes.quantize.calibration import DEFAULT_LENGTH, DEFAULT_SAMPLES
from llmc.passes.quantize.formats import check_recipe
from llmc.passes.quantize.mixed import MIXED, recipe_json
from llmc.passes.quantize.mixed import plan as plan_mixed
from llmc.passes.quantize.outliers import check_target

PLOT = "quantization.png"
RECIPE = "recipe.json"


def quantize_for(graph: Graph, target, *, quant: str | None, method: str, recipe, calibration, samples: int | None,
                 length: int | None, tokenizer: Callable[[Path], None] | None,
                 progress: Callable[[str], None], budget: Budget | None = None, device: Device | None = None,
                 sensitivity: str | None = None, outliers: float | None = None, reorder: bool = False,
                 tie_groups: bool = False) -> tuple[Graph, Callable[[Path], dict], PassRecord]:
    """Quantize ``graph`` for ``target``; returns it, the writer of the manifest's
    ``quantization`` section (with its plot) and the pass record. ``quant="mixed"`` chooses the
    formats under ``budget`` (costs on ``device``; ``mixed.plan``)."""
    start = time.perf_counter()
    nodes_before = len(graph.nodes)
    formats = set(target.quant_formats())
    loaded: list = []

    def load():
        if calibration is not None and not loaded:
            progress(f"reading calibration data {calibration}")
            loaded.append(load_calibration(graph, calibration, tokenizer=_tokenize(tokenizer), vocab=_vocab(graph),
                                           samples=samples or DEFAULT_SAMPLES, length=length or DEFAULT_LENGTH))
        return loaded[0] if loaded else None

    mixed = None
    if quant == MIXED:
        if recipe is not None:
            raise InputError("--quant mixed chooses the recipe itself", hint="leave out --recipe (or --quant mixed)")
        mixed = plan_mixed(graph, target, device, budget, method=method, outliers=outliers, reorder=reorder,
                           how=sensitivity, tie_groups=tie_groups, load=load, progress=progress)
        plan = mixed.recipe
    else:
        if budget is not None or outliers is not None or reorder:
            raise InputError("budgets, --outliers and --reorder-channels go with --quant mixed",
                             hint="use --quant mixed, or a format with outliers such as --quant w3g128+o0.005")
        plan = Recipe.of(quant, recipe, method)
    check_target([f.label for f in [plan.default, *plan.override.values()] if f is not None and f.outliers], target)
    check_recipe(graph, plan, formats, target.name)
    data = load()
    graph, layers = quantize(graph, plan, data, target_formats=formats, target=target.name, progress=progress)
    if mixed is not None:
        mixed.annotate(layers)
    params = sum(r.float_bytes for r in layers) / 4
    section = {
        "recipe": recipe_json(mixed) if mixed is not None else plan.to_json(),
        "avg_bits": 8.0 * sum(r.bytes for r in layers) / max(params, 1),
        **({"mixed": mixed.section} if mixed is not None else {}),
        "calibration": None if data is None else {"source": data.source, "tokens": data.tokens},
        "layers": [r.to_json() for r in layers],
        "bytes": sum(r.bytes for r in layers),
        "float_bytes": sum(r.float_bytes for r in layers),
    }
    stats = {"nodes_before": nodes_before, "nodes_after": len(graph.nodes), "weights": len(layers)}

    def write(folder: Path) -> dict:
        from llmc.passes.quantize.plot import plot_layers

        title = f"{graph.name}: {', '.join(sorted(plan.formats))} ({plan.method})"
        if mixed is not None:
            title = f"{graph.name}: mixed, {section['avg_bits']:.3f} average bits ({mixed.section['budget_text']})"
            (folder / RECIPE).write_text(json.dumps(section["recipe"], indent=1) + "\n")
        drawn = bool(layers) and plot_layers(layers, folder / PLOT, title=title)
        return {**section, "plot": PLOT if drawn else None, **({"recipe_file": RECIPE} if mixed is not None else {})}

    return graph, write, PassRecord("quantize", bool(layers), time.perf_counter() - start, stats)


def _tokenize(save_tokenizer: Callable[[Path], None] | None):
    """Token ids of a text with the model's own tokenizer (written out by ``save_tokenizer``)."""
    if save_tokenizer is None:
        return None

    def tokenize(text: str) -> list[int]:
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory(prefix="llmc-tok-") as folder:
            save_tokenizer(Path(folder))
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    return tokenize


def _vocab(graph: Graph) -> int | None:
    """The vocabulary size: rows of the table the token ids index."""
    for node in graph.nodes:
        if node.op == "embedding" and node.inputs[1].name == "input_ids":
            return int(node.inputs[0].type.shape[0])
    return None


__all__ = ["LayerRecord", "quantize_for"]
