"""``sparsify_for``: what ``llmc.compile`` runs for ``--sparsity``: check, calibrate, prune, decide, describe."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from llmc.ir import shapes as S
from llmc.ir.graph import Graph
from llmc.passes.manager import PassRecord
from llmc.passes.sparsity import SparsityOptions, candidates, check_graph, check_request, sparsify
from llmc.passes.sparsity.decide import Measure


def compiled_sizes(graph: Graph, prefill_chunk: int | None, sizes: dict[str, int]) -> dict[str, int]:
    """Rows of the products at each size the artifact is compiled for: a generation step's decode
    (one token) and prefill chunk, or one call of the graph (symbols bound by ``sizes``, else 1)."""
    if prefill_chunk is not None:
        return {"decode": 1, "prefill": prefill_chunk}
    nodes = candidates(graph)
    if not nodes:
        return {"call": 1}
    lead = nodes[0].inputs[0].type.shape[:-1]
    env = {name: sizes.get(name, 1) for name in S.symbols(lead)}
    return {"call": int(np.prod(S.evaluate_shape(lead, env) or (1,)))}


def sparsify_for(graph: Graph, target, target_options, *, options: SparsityOptions, calibration, quant,
                 quant_method: str = "rtn",
                 samples: int | None, length: int | None, tokenizer, prefill_chunk: int | None,
                 sizes: dict[str, int], measure: Measure | None,
                 progress: Callable[[str], None]) -> tuple[Graph, Callable[[Path], dict], PassRecord]:
    """Sparsify ``graph`` for ``target`` (the kept values quantized when ``quant`` is a format
    ``check_request`` accepts); returns it, the writer of the manifest's ``sparsity`` section and
    the pass record."""
    from llmc.codegen.devices import for_target
    from llmc.passes.quantize.apply import _tokenize, _vocab
    from llmc.passes.quantize.calibration import DEFAULT_LENGTH, DEFAULT_SAMPLES, load_calibration

    start, nodes_before = time.perf_counter(), len(graph.nodes)
    grid = check_request(options, target, calibration=calibration, quant=quant, quant_method=quant_method)
    check_graph(graph, options)
    data = None
    if calibration is not None and options.needs_calibration:
        progress(f"reading calibration data {calibration}")
        data = load_calibration(graph, calibration, tokenizer=_tokenize(tokenizer), vocab=_vocab(graph),
                                samples=samples or DEFAULT_SAMPLES, length=length or DEFAULT_LENGTH)
    at = compiled_sizes(graph, prefill_chunk, sizes)
    device = for_target(target.name, vars(target_options) if target_options is not None else {})
    if measure is None and target.name == "cpu":
        from llmc.passes.sparsity.bench import measure
    graph, records = sparsify(graph, options, data, target=target.name, sizes=at, device=device, measure=measure,
                              grid=grid, progress=progress)
    section = {
        "options": options.to_json(), "quant": quant if grid is not None else None, "target": target.name, "sizes": at,
        "device": None if device is None else device.name,
        "calibration": None if data is None else {"source": data.source, "tokens": data.tokens},
        "layers": [r.to_json() for r in records],
        "applied": sum(r.decision.applied for r in records),
        "stored_sparse": sum(r.decision.kernel is not None for r in records),
        "bytes": sum(r.bytes for r in records), "float_bytes": sum(r.float_bytes for r in records),
    }
    stats = {"nodes_before": nodes_before, "nodes_after": len(graph.nodes), "weights": len(records), "applied": section["applied"], "stored_sparse": section["stored_sparse"]}
    return graph, lambda folder: section, PassRecord("sparsify", section["stored_sparse"] > 0, time.perf_counter() - start, stats)
