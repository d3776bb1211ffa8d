"""``llmc compile``, ``llmc inspect`` and ``llmc targets``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llmc.cli import show
from llmc.cli.args import dynamic_dict, shapes_dict
from llmc.codegen.report import Table, count, nbytes, pass_label


def target_options(a) -> dict[str, str]:
    """--option K=V pairs plus the shorthand flags (--arch, --dtype, --cpu) that were given."""
    from llmc.cli import TARGET_OPTION_FLAGS

    options = dict(a.option or [])
    options.update({k: getattr(a, k) for k in TARGET_OPTION_FLAGS if getattr(a, k) is not None})
    return options


def generation_options(a) -> dict:
    """--max-seq-len and --prefill-chunk, where given."""
    return {k: getattr(a, k) for k in ("max_seq_len", "prefill_chunk") if getattr(a, k) is not None}


def mixed_options(a, options: dict) -> dict:
    """--avg-bits, --weight-budget, --latency-budget and the rest of --quant mixed; ``--device`` names the
    budget's device (taken out of ``options``) when the target has no device option of its own."""
    from llmc.codegen.target import get_target

    out = {k: getattr(a, k) for k in ("avg_bits", "weight_budget", "latency_budget", "outliers")
           if getattr(a, k) is not None}
    out.update(sensitivity=a.sensitivity, reorder_channels=a.reorder_channels, tie_groups=a.tie_groups)
    if a.quant == "mixed" and "device" in options:
        known = dataclasses.fields(get_target(a.target).Options)
        if "device" not in {f.name for f in known}:
            out["budget_device"] = options.pop("device")
    return out


def sparsity_options(a) -> dict:
    """--sparsity and its companions, as ``llmc.compile`` takes them."""
    return {"sparsity": a.sparsity, "sparsity_pattern": a.sparsity_pattern, "sparsity_method": a.sparsity_method,
            "sparsity_for": a.sparsity_for, "sparsity_scope": a.sparsity_scope}


def compile_cmd(a) -> int:
    from llmc import api

    options = target_options(a)
    with show.status(f"compiling {a.model}") as update:
        art = api.compile(
            a.model, a.target, output=a.output, opt_level=a.opt_level, input_shapes=shapes_dict(a.input_shape),
            dynamic=dynamic_dict(a.dynamic), verify=a.verify, sizes=dict(a.size or []), progress=update,
            generation=a.generation, all_logits=a.all_logits, quant=a.quant, quant_method=a.quant_method,
            recipe=a.recipe, calibration=a.calibration, calibration_samples=a.calibration_samples,
            calibration_length=a.calibration_length, memory_budget=a.memory_budget, stages=a.stages,
            **generation_options(a), **mixed_options(a, options), **sparsity_options(a), **options,
        )
    model = art.manifest["model"]
    show.line(f"wrote {art.path} (target {art.target}, {art.manifest['opt_level']}): "
              f"{count(model['parameters'])} parameters, {nbytes(model['weight_bytes'])} of weights, "
              f"{len(art.manifest['files']) + 1} files")
    rows = [[pass_label(r.name, r.round), "yes" if r.changed else "no", f"{r.seconds:.3f}", _stats(r.stats)]
            for r in art.passes]
    from llmc.codegen.target import get_target

    show.tables([Table("passes", ["pass", "changed", "seconds", "stats"], rows), *get_target(art.target).report_tables(art.manifest)])
    return 0


def _stats(stats: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in stats.items()) or "-"


def inspect_cmd(a) -> int:
    from llmc.codegen.artifact import MANIFEST

    device = _device(a.device)
    path = Path(a.model)
    if path.is_dir() and (path / MANIFEST).is_file():
        return _inspect_artifact(path, a, device)
    if a.memory_budget is not None:
        return _preflight(a)
    from llmc.codegen.report import graph_facts, model_tables

    with show.status(f"capturing {a.model}"):
        graph = _captured(a, device)
        facts = graph_facts(graph, dict(a.size or []))
        cost = _cost(graph, device, a)
    if a.ir:
        show.line(str(graph))
    elif a.json:
        show.as_json({**facts, **({"cost": cost} if cost else {})})
    else:
        show.tables(model_tables(facts) + _cost_tables(cost))
    return 0


def _inspect_artifact(path: Path, a, device) -> int:
    from llmc import api
    from llmc.codegen.report import artifact_tables

    with show.status(f"checking {path}"):
        art = api.load(path)
        cost = _cost(art.graph, device, a)
    if a.ir:
        show.line(str(art.graph))
    elif a.json:
        show.as_json({**art.manifest, **({"cost": cost} if cost else {})})
    else:
        from llmc.passes.schedule.tables import schedule_tables

        manifest = {k: v for k, v in art.manifest.items() if not (cost and k == "cost")}
        show.tables(artifact_tables(manifest) + schedule_tables(path) + _cost_tables(cost))
    return 0


def _preflight(a) -> int:
    """``inspect MODEL --memory-budget SIZE``: the pre-flight answer on this CPU and ``--device`` (h100)."""
    from llmc.codegen import devices
    from llmc.frontend.causal import DEFAULT_PREFILL_CHUNK
    from llmc.passes.schedule.plan import parse_bytes
    from llmc.passes.schedule.preflight import causal_lm_shapes, preflight
    from llmc.passes.schedule.tables import preflight_tables

    budget = parse_bytes(a.memory_budget)
    with show.status(f"reading {a.model}"):
        lm = causal_lm_shapes(a.model, max_seq_len=a.max_seq_len)
        chunk = a.prefill_chunk or min(DEFAULT_PREFILL_CHUNK, lm.max_seq_len)
        answers = [preflight(lm.graph, budget=budget, device=devices.get(name), max_seq_len=lm.max_seq_len,
                             prefill_chunk=chunk) for name in dict.fromkeys(["cpu", a.device or "h100"])]
    if a.json:
        show.as_json([p.to_json() for p in answers])
    else:
        show.tables(preflight_tables(answers))
    return 0


def _device(name: str | None):
    """The ``--device`` (an unknown name is an error listing the known ones), or None."""
    if name is None:
        return None
    from llmc.codegen import devices

    return devices.get(name)


def _captured(a, device):
    """The model's graph. With ``--device``: as compiling it would optimize it (-O1 of the device's
    target), and an LLM as its generation step graph, so that decode and prefill can be predicted."""
    from llmc.frontend.load import load_model

    if device is None:
        return load_model(a.model, input_shapes=shapes_dict(a.input_shape), dynamic=dynamic_dict(a.dynamic))
    from llmc.codegen.target import get_target
    from llmc.frontend.causal import is_generation_model, load_causal_lm
    from llmc.passes import run_pipeline

    if is_generation_model(a.model) and not (a.input_shape or a.dynamic):
        graph = load_causal_lm(a.model).graph
    else:
        graph = load_model(a.model, input_shapes=shapes_dict(a.input_shape), dynamic=dynamic_dict(a.dynamic))
    target = {"cpu": "cpu", "gpu": "cuda"}.get(device.kind, "reference")
    return run_pipeline(graph, get_target(target).pipeline("O1"))[0]


def _cost(graph, device, a) -> dict | None:
    """The cost model's section for ``graph`` on ``device`` at ``--size`` (every kernel listed)."""
    if device is None:
        return None
    from llmc.codegen.cost import cost_section
    from llmc.codegen.report import symbol_sizes

    sizes = dict(a.size or [])
    symbol_sizes(graph, sizes, default=1)  # unknown names are an error
    return cost_section(graph, device, sizes, nodes=a.json)


def _cost_tables(cost: dict | None) -> list[Table]:
    if cost is None:
        return []
    from llmc.codegen.cost import cost_tables

    return cost_tables(cost)


def targets_cmd(a) -> int:
    from llmc.codegen.target import all_targets

    rows = []
    for t in all_targets():
        options = _options(t.Options)
        rows.append([t.name, t.description, options, ", ".join(t.pipelines), ", ".join(t.quant_formats()) or "-",
                     "yes" if t.can_run() else "no"])
    show.tables([Table("targets", ["target", "what it builds", "options (--option K=V)", "levels (-O)", "formats (--quant)",
                                   "runs here"], rows)])
    return 0


def _options(cls) -> str:
    if not dataclasses.is_dataclass(cls):
        return "-"
    parts = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            parts.append(f"{f.name}={f.default}")
        elif f.default_factory is not dataclasses.MISSING:
            parts.append(f"{f.name}={f.default_factory()}")
        else:
            parts.append(f"{f.name} (required)")
    return ", ".join(parts) or "-"
