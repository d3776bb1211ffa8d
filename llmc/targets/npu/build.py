"""What ``NpuTarget.lower`` does: plan (profile, placement, chunks, QDQ parameters) and write.

    plan = make_plan(graph, options, tokenizer=folder)    # decisions only, nothing written
    payload = write(plan, out)                             # chunks/*.onnx, chunks/weights.bin, schedule.json

Calibration: a generation step calibrates on ``samples`` windows of ``chunk`` tokens of llmc's
builtin calibration text, tokenized with the artifact's tokenizer; a forward model on the
``.npz`` given as ``--option calib=FILE`` (which an LLM may use too: ``input_ids`` only) (the NPU needs every activation range ahead of
time, so a forward model without calibration data is refused, not guessed).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx

from llmc.codegen.report import Concrete
from llmc.codegen.target import Payload
from llmc.errors import TargetError
from llmc.ir.graph import Graph
from llmc.ir.ops.registry import substitute
from llmc.targets.npu.chunker import Chunk, cut
from llmc.targets.npu.emit import ChunkEmitter, Static, Store
from llmc.targets.npu.partition import NPU, Placement, partition, summary
from llmc.targets.npu.plot import plot_placement
from llmc.targets.npu.profiles import Profile, get_profile
from llmc.targets.npu.qdq import QdqPlan, calibrate_ranges
from llmc.targets.npu.runner import SCHEDULE

CHUNKS = "chunks"
WEIGHTS = "weights.bin"
TOKENIZER = "tokenizer"
PLOT = "placement.png"


@dataclass
class NpuPlan:
    graph: Graph
    profile: Profile
    kind: str                       # "llm" or "cnn": which activation format the profile gives
    placement: dict[str, Placement]
    chunks: list[Chunk]
    qdq: QdqPlan
    variants: dict[str, Static]     # forward, or prefill + decode
    loop: dict | None               # generation: chunk, cache_len, max_seq_len, layers


def make_plan(graph: Graph, options, *, tokenizer: Path | None = None) -> NpuPlan:
    from llmc.frontend.decoder import is_step_graph

    profile = get_profile(options.device)
    step = is_step_graph(graph)
    kind = "cnn" if any(n.op == "conv2d" for n in graph.nodes) else "llm"
    placement = partition(graph, profile)
    chunks = cut(graph, placement)
    npu_nodes = [n for n in graph.nodes if placement[n.name].device == NPU]
    names = {v.name for n in npu_nodes for v in (*n.inputs, *n.outputs) if not v.is_const}
    calibration = _calibration(graph, options, tokenizer, step)
    ranges = calibrate_ranges(graph, calibration, names)
    qdq = QdqPlan(npu_nodes, ranges, profile.activation_dtype(kind), profile.per_channel)
    loop = None
    if step:
        cache = graph.inputs[3].type.shape
        length = int(cache[2])
        if options.chunk > length:
            raise TargetError(f"--chunk {options.chunk} is longer than the KV cache ({length} positions)",
                              hint="give a smaller --chunk or a larger --max-seq-len")
        cache_len = length + options.chunk  # pad rows of the last chunk land after the context
        variants = {"prefill": Static({"batch": 1, "seq": options.chunk, "ctx": cache_len}, cache_len),
                    "decode": Static({"batch": 1, "seq": 1, "ctx": cache_len}, cache_len)}
        layers = sum(1 for v in graph.inputs if v.name.startswith("cache_k."))
        loop = {"chunk": options.chunk, "cache_len": cache_len, "max_seq_len": length, "layers": layers,
                "batch": 1, "all_logits": graph.outputs[0].type.shape[1] != 1}
    else:
        symbols = graph.symbols()
        if symbols:
            raise TargetError(f"NPU graphs have static shapes, and {graph.name} has symbolic dims {symbols}",
                              hint="compile with fixed input shapes (--input-shape) or without dynamic dims")
        variants = {"forward": Static()}
    return NpuPlan(graph, profile, kind, placement, chunks, qdq, variants, loop)


def _calibration(graph: Graph, options, tokenizer: Path | None, step: bool):
    from llmc.passes.quantize.calibration import BUILTIN, load_calibration

    if options.calib:
        return load_calibration(graph, options.calib)
    if step:
        if tokenizer is None or not tokenizer.is_dir():
            raise TargetError("the npu target calibrates an LLM on text, and this model has no tokenizer",
                              hint="give token ids to calibrate on: --option calib=ids.npz (input_ids [samples, tokens])")
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        return load_calibration(graph, BUILTIN, tokenizer=lambda t: tok(t, add_special_tokens=False)["input_ids"],
                                vocab=_vocab(graph), samples=options.samples, length=options.chunk)
    raise TargetError(f"the npu target needs calibration inputs for {graph.name} (static activation ranges)",
                      hint="give an .npz of typical model inputs: --option calib=inputs.npz")


def _vocab(graph: Graph) -> int:
    for node in graph.nodes:
        if node.op == "embedding" and node.inputs[1].name == "input_ids":
            return int(node.inputs[0].type.shape[0])
    raise TargetError(f"{graph.name} has no token embedding")


def write(plan: NpuPlan, out: Path, *, qnn_context: bool = False) -> Payload:
    if qnn_context:
        from llmc.targets.npu.runner import qnn_available

        if not qnn_available():
            raise TargetError("QNN context binaries (qnn_context=1) need the onnxruntime-qnn package",
                              hint="pip install 'llmc[npu]', or leave out --option qnn_context=1")
    folder = out / CHUNKS
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder / WEIGHTS)
    files, variants = [f"{CHUNKS}/{WEIGHTS}"], {}
    try:
        for variant, static in plan.variants.items():
            entries = []
            prefix = "" if variant == "forward" else f"{variant}_"
            for chunk in _progress(plan.chunks, f"writing {variant} chunks"):
                name = f"{prefix}{chunk.name}"
                emitter = ChunkEmitter(chunk, static, store, plan.qdq, name)
                model = emitter.build()
                onnx.save(model, str(folder / f"{name}.onnx"))
                store.file.flush()
                onnx.checker.check_model(str(folder / f"{name}.onnx"))
                files.append(f"{CHUNKS}/{name}.onnx")
                entries.append({"file": f"{CHUNKS}/{name}.onnx", "device": chunk.device, "nodes": len(chunk.nodes),
                                "inputs": [v.name for v in chunk.inputs], "extra_inputs": emitter.extra_inputs,
                                "outputs": [v.name for v in chunk.outputs]})
                if qnn_context and chunk.device == NPU:
                    entries[-1]["qnn_context"] = _context_binary(folder, name)
                    files.append(entries[-1]["qnn_context"])
            variants[variant] = {"sizes": dict(static.env), "chunks": entries}
    finally:
        weight_bytes = store.close()
    graph = plan.graph
    graphs = sum(f.endswith(".onnx") and not f.endswith("_ctx.onnx") for f in files)
    schedule = {"inputs": [v.name for v in graph.inputs], "outputs": [v.name for v in graph.outputs],
                "variants": variants, "loop": plan.loop,
                "placement": {n: [p.device, p.reason] for n, p in plan.placement.items()}}
    (out / SCHEDULE).write_text(json.dumps(schedule, indent=1) + "\n")
    files.append(SCHEDULE)
    flops = node_flops(graph, plan.variants)
    facts = summary(graph, plan.placement, flops)
    sizes = ", ".join(f"{k}={v}" for k, v in next(iter(plan.variants.values())).env.items())
    drawn = plot_placement(graph, plan.placement, flops, out / PLOT,
                           title=f"{graph.name} on {plan.profile.name}" + (f" ({sizes})" if sizes else ""))
    files += [PLOT] if drawn else []
    chunk_weights = [_int8_bytes(c) for c in plan.chunks if c.device == NPU]
    manifest = {
        "runtime": "onnxruntime (CPU provider; NPU chunks on the QNN EP with LLMC_NPU_EP=qnn)",
        "profile": {"name": plan.profile.name, "description": plan.profile.description},
        "placement": facts, "plot": PLOT if drawn else None, "graphs": graphs, "qnn_context": qnn_context,
        "chunks": {"npu": sum(c.device == NPU for c in plan.chunks), "cpu": sum(c.device != NPU for c in plan.chunks)},
        "variants": {v: dict(s.env) for v, s in plan.variants.items()},
        "on_chip": {"sram_bytes": plan.profile.sram_bytes, "largest_npu_chunk_weights": max(chunk_weights, default=0),
                    "npu_chunks_streaming_weights": sum(b > plan.profile.sram_bytes for b in chunk_weights)},
        "quantization": plan.qdq.to_json(), "weights_bytes": weight_bytes, "schedule": SCHEDULE,
    }
    return Payload(files=files, manifest=manifest)


def _context_binary(folder: Path, name: str) -> str:
    """Compile an NPU chunk for the HTP now (``ep.context_enable``): ``chunks/NAME_ctx.onnx``, one
    EPContext node holding the QNN context binary, which the QNN EP loads without compiling."""
    import onnxruntime as ort

    from llmc.targets.npu.runner import qnn_session_options

    options = qnn_session_options()
    options.add_session_config_entry("ep.context_enable", "1")
    options.add_session_config_entry("ep.context_embed_mode", "1")
    options.add_session_config_entry("ep.context_file_path", str(folder / f"{name}_ctx.onnx"))
    try:
        ort.InferenceSession(str(folder / f"{name}.onnx"), options)
    except Exception as e:  # onnxruntime raises its own error types
        raise TargetError(f"the QNN EP cannot compile chunk {name} for the HTP: {e}") from None
    return f"{CHUNKS}/{name}_ctx.onnx"


def _int8_bytes(chunk: Chunk) -> int:
    """Bytes of the constants an NPU chunk reads, at one byte per element (int8 weights dominate)."""
    seen = {v.name: v.type.numel for n in chunk.nodes for v in n.inputs if v.is_const}
    return int(sum(seen.values()))


def node_flops(graph: Graph, variants: dict[str, Static]) -> dict[str, float]:
    """Flops of each node at the first variant's sizes (prefill for a generation step)."""
    static = next(iter(variants.values()))
    concrete = Concrete(static.env)
    out = {}
    for node in graph.nodes:
        cost = node.opdef.cost([concrete(v.type) for v in node.inputs], [concrete(v.type) for v in node.outputs],
                               substitute(node.attrs, concrete.env))
        out[node.name] = concrete.number(cost.flops)
    return out


def _progress(items, label: str):
    if not sys.stderr.isatty():
        return items
    from rich.progress import track

    return track(items, description=label, transient=True)


def build(graph: Graph, options, out: Path) -> Payload:
    return write(make_plan(graph, options, tokenizer=out / TOKENIZER), out, qnn_context=options.qnn_context)
