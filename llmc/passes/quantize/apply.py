"""``quantize_for``: what ``llmc.compile`` runs for ``--quant`` / ``--recipe``: check, calibrate, quantize, describe."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llmc.ir.graph import Graph
from llmc.passes.manager import PassRecord
from llmc.passes.quantize import LayerRecord, Recipe, load_calibration, quantize
from llmc.passes.quantize.calibration import DEFAULT_LENGTH, DEFAULT_SAMPLES
from llmc.passes.quantize.formats import check_recipe

PLOT = "quantization.png"


def quantize_for(graph: Graph, target, *, quant: str | None, method: str, recipe, calibration, samples: int | None,
                 length: int | None, tokenizer: Callable[[Path], None] | None,
                 progress: Callable[[str], None]) -> tuple[Graph, Callable[[Path], dict], PassRecord]:
    """Quantize ``graph`` for ``target``; returns it, the writer of the manifest's
    ``quantization`` section (with its plot) and the pass record."""
    start = time.perf_counter()
    nodes_before = len(graph.nodes)
    plan = Recipe.of(quant, recipe, method)
    formats = set(target.quant_formats())
    check_recipe(graph, plan, formats, target.name)
    data = None
    if calibration is not None:
        progress(f"reading calibration data {calibration}")
        data = load_calibration(graph, calibration, tokenizer=_tokenize(tokenizer), vocab=_vocab(graph),
                                samples=samples or DEFAULT_SAMPLES, length=length or DEFAULT_LENGTH)
    graph, layers = quantize(graph, plan, data, target_formats=formats, target=target.name, progress=progress)
    section = {
        "recipe": plan.to_json(),
        "calibration": None if data is None else {"source": data.source, "tokens": data.tokens},
        "layers": [r.to_json() for r in layers],
        "bytes": sum(r.bytes for r in layers),
        "float_bytes": sum(r.float_bytes for r in layers),
    }
    stats = {"nodes_before": nodes_before, "nodes_after": len(graph.nodes), "weights": len(layers)}

    def write(folder: Path) -> dict:
        from llmc.passes.quantize.plot import plot_layers

        title = f"{graph.name}: {', '.join(sorted(plan.formats))} ({plan.method})"
        drawn = bool(layers) and plot_layers(layers, folder / PLOT, title=title)
        return {**section, "plot": PLOT if drawn else None}

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
