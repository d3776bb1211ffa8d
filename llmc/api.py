"""The Python API: ``llmc.compile(model, target=...)`` and ``llmc.load(path)``.

    art = llmc.compile("tiny-llama", target="reference", output="out/tiny-llama")
    art.manifest["model"]["parameters"]          # facts written into manifest.json
    outputs = llmc.load("out/tiny-llama").run({"input_ids": ids})   # dict of numpy arrays
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from llmc.codegen.artifact import check_output, read_artifact, write_artifact
from llmc.codegen.target import Target, all_targets, get_target
from llmc.errors import ArtifactError, InputError, WeightsNotMaterialized
from llmc.frontend.causal import generation_section, is_generation_model, load_causal_lm
from llmc.frontend.load import Dynamic, InputShapes, load_model
from llmc.ir.graph import Graph


class Artifact:
    """A compiled artifact folder: ``path``, its ``manifest``, its ``graph``, and ``run``.

    ``passes`` holds the ``PassRecord``s (with timings) of the compile that made it; empty when
    loaded from disk, since timings are not written (artifacts are byte-deterministic).
    """

    def __init__(self, path: Path, manifest: dict, passes: list | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.passes = list(passes or [])
        self._graph: Graph | None = None

    @property
    def target(self) -> str:
        return self.manifest["target"]["name"]

    @property
    def graph(self) -> Graph:
        """The optimized IR (weights memory-mapped from weights.safetensors)."""
        if self._graph is None:
            from llmc.ir import serialize

            self._graph = serialize.load(self.path)
        return self._graph

    @property
    def input_names(self) -> list[str]:
        return [v["name"] for v in self.manifest["model"]["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [v["name"] for v in self.manifest["model"]["outputs"]]

    def runtime(self, *, reference: bool = False) -> Target | None:
        """The target whose runtime ``run`` uses here, or None for the reference interpreter
        (asked for, or the artifact's target is not installed / cannot run on this machine)."""
        if reference:
            return None
        target = {t.name: t for t in all_targets()}.get(self.target)
        return target if target is not None and target.can_run() else None

    def run(self, inputs: Mapping[str, np.ndarray], *, reference: bool = False) -> dict[str, np.ndarray]:
        """Run on inputs keyed by the model's input names; outputs keyed by its output names.

        Uses the target's runtime where this machine has one (see ``runtime``), otherwise the
        reference interpreter on the artifact's graph.
        """
        from llmc.ir import interpreter

        target = self.runtime(reference=reference)
        if target is None:
            return interpreter.run(self.graph, inputs)
        return target.run(self.path, inputs)

    def generator(self, *, reference: bool = False, distributed: bool = False):
        """A ``llmc.runtime.generate.Generator`` over this generation artifact (target runtime or interpreter).

        ``distributed``: an artifact compiled with ``stages`` runs as that many local torch.distributed
        processes (``llmc.runtime.distributed``); close them with ``generator.runner.close()``."""
        from llmc.runtime.generate import GenerationSpec, Generator, ReferenceRunner

        section = self.manifest.get("generation")
        if section is None:
            raise ArtifactError(f"{self.path} holds one forward pass, not a generation step",
                                hint="compile a GGUF file or a causal LM with generation=True (--generation)")
        target = self.runtime(reference=reference)
        if distributed:
            from llmc.runtime.distributed import launch

            runner = launch(self.path)
        else:
            runner = ReferenceRunner(self.graph) if target is None else target.step_runner(self.path)
        tokenizer = None
        if section.get("tokenizer"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(self.path / section["tokenizer"]), local_files_only=True)
        return Generator(runner, GenerationSpec.from_manifest(section), tokenizer)

    def generate(self, prompt, *, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, stop=(), chat: bool = False, reference: bool = False):
        """Generate from ``prompt`` (text, token ids, or a batch of either); a ``Generation`` with
        ``.text``/``.texts``, ``.ids`` and ``.stats``. ``stream`` is the token-by-token form."""
        from llmc.runtime.sampling import Sampling

        return self.generator(reference=reference).generate(
            prompt, max_new_tokens=max_new_tokens, sampling=Sampling(temperature, top_k, top_p, seed), stop=stop, chat=chat)

    def stream(self, prompt, *, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int = 0, stop=(), chat: bool = False, reference: bool = False):
        """Iterate over ``Piece``s (token id, the text it adds) as each token is chosen."""
        from llmc.runtime.sampling import Sampling

        return self.generator(reference=reference).stream(
            prompt, max_new_tokens=max_new_tokens, sampling=Sampling(temperature, top_k, top_p, seed), stop=stop, chat=chat)

    def __repr__(self) -> str:
        return f"<llmc.Artifact {self.path} target={self.target}>"


def compile(
    model,
    target: str = "reference",
    *,
    example_inputs=None,
    output: str | Path | None = None,
    opt_level: str | None = None,
    input_shapes: InputShapes | None = None,
    dynamic: Dynamic | None = None,
    verify: bool = False,
    sizes: Mapping[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
    generation: bool | None = None,
    max_seq_len: int | None = None,
    prefill_chunk: int | None = None,
    all_logits: bool = False,
    quant: str | None = None,
    quant_method: str | None = None,
    recipe: str | Path | dict | None = None,
    calibration: str | Path | None = None,
    calibration_samples: int | None = None,
    calibration_length: int | None = None,
    memory_budget: int | str | None = None,
    stages: int | None = None,
    avg_bits: float | None = None,
    weight_budget: str | None = None,
    latency_budget: str | None = None,
    budget_device: str | None = None,
    sensitivity: str | None = None,
    outliers: float | None = None,
    reorder_channels: bool = False,
    tie_groups: bool = False,
    sparsity: float | None = None,
    sparsity_pattern: str | None = None,
    sparsity_method: str = "wanda",
    sparsity_for: str = "speed",
    sparsity_scope: str = "layer",
    **target_options,
) -> Artifact:
    """Capture ``model`` (any form ``load_model`` takes), optimize it and write its artifact.

    ``generation`` compiles a decoder-only LLM's generation step instead of its forward pass
    (``llmc.frontend.decoder``): a KV cache of ``max_seq_len`` positions, prompts in chunks of
    ``prefill_chunk`` tokens (default 256, at most the cache), logits of the last position (of
    every position with ``all_logits``). None means: for GGUF files and built-in LLMs, which
    compile only this way. ``Artifact.generate`` runs it.

    ``output`` is the artifact folder (written atomically; default: a new temporary folder the
    caller owns). ``opt_level`` names the target's pipeline ("O0", "O1", ...; "1" also works).
    ``opt_level`` None is the target's default (``-O2`` for cpu and cuda: ``-O1`` and fusion).
    ``verify`` checks the graph after every pass. ``sizes`` binds symbolic dims for the
    manifest's flops estimates (default 1). ``progress`` is called with a line per step.
    ``quant`` (a format: ``w4g128``, ``w8``, ``w8a8``, ...; ``llmc.passes.quantize.formats``) and/or
    ``recipe`` (per-node overrides) quantize the weights with ``quant_method`` (``rtn``, ``gptq``,
    ``awq``; None: ``gptq`` for ``quant="mixed"``, else ``rtn``) on ``calibration`` data (``builtin``, a .txt or an .npz file; ``calibration_samples``
    windows of ``calibration_length`` tokens). Recipes and calibration data are checked before
    any calibration runs.
    ``memory_budget`` (bytes, or text such as ``"160MiB"``) schedules a generation step into layer
    groups that run within it, streaming weights (``llmc.passes.schedule``); ``stages`` splits it
    into pipeline stages for ``--distributed`` runs. A budget no plan fits is refused before any build.
    ``quant="mixed"`` chooses a format per weight (``llmc.passes.quantize.allocate``) under one budget:
    ``avg_bits`` (stored bits per weight parameter), ``weight_budget`` ("60MiB") or ``latency_budget``
    ("8ms" per decode step on ``budget_device``, default the target's device), by ``sensitivity``
    (``end-to-end``: each weight's output error scaled by its measured effect on the next-token
    distribution; ``output``: the local output error alone; ``proxy``: its Hessian-diagonal estimate;
    None: ``end-to-end`` for LLM generation steps, ``output`` otherwise) on the calibration data;
    ``outliers`` (a fraction such as 0.005) adds candidates that keep outliers in float16, ``reorder_channels`` groups outlier channels first,
    ``tie_groups`` gives linears that read one input one format.
    ``sparsity`` (the fraction of weights zeroed) and/or ``sparsity_pattern`` (``unstructured``,
    ``2:4``, ``4:8``) prune the linears inside the blocks by ``sparsity_method`` (``magnitude``,
    ``wanda``, ``sparsegpt``), per layer or under one ``sparsity_scope="global"`` density, and store
    them compressed where the sparse kernel is faster on the target (``sparsity_for="speed"``) or
    everywhere (``"size"``); see ``llmc.passes.sparsity``. Options are checked before any work.
    ``target_options`` are the target's options (``llmc targets`` lists them).
    """
    tgt = get_target(target)
    options = tgt.make_options(**target_options)
    quant_method = quant_method or ("gptq" if quant == "mixed" else "rtn")
    sparse = _sparsity(tgt, sparsity, sparsity_pattern, sparsity_method, sparsity_for, sparsity_scope, calibration,
                       quant or recipe, quant_method)
    level = str(opt_level or tgt.default_level)
    level = level if level.startswith("O") else f"O{level.lstrip('-')}"
    pipeline = tgt.pipeline(level)
    scratch = Path(tempfile.mkdtemp(prefix="llmc-")) if output is None else None
    out = scratch / "artifact" if scratch is not None else Path(output)
    step = progress or (lambda line: None)
    try:
        check_output(out)
        step(f"capturing {model if isinstance(model, (str, Path)) else type(model).__name__}")
        sections = {}
        if generation is False and is_generation_model(model):
            raise InputError(f"{model} is an LLM file that llmc compiles only as a generation step",
                             hint="leave out --no-generation / generation=False")
        if generation or (generation is None and is_generation_model(model)):
            if input_shapes or dynamic or example_inputs is not None:
                raise InputError("a generation artifact has fixed inputs (ids, positions, mask, caches)",
                                 hint="leave out input shapes, dynamic dims and example inputs, or pass generation=False")
            lm = load_causal_lm(model, max_seq_len=max_seq_len, all_logits=all_logits)
            graph, sections["generation"] = lm.graph, generation_section(lm, prefill_chunk, all_logits)
        else:
            if memory_budget is not None or stages is not None:
                raise InputError("--memory-budget and --stages schedule a generation step",
                                 hint="compile an LLM with generation=True (--generation)")
            graph = load_model(model, example_inputs=example_inputs, input_shapes=input_shapes, dynamic=dynamic)
        schedule = None
        if memory_budget is not None or stages is not None:
            from llmc.passes.schedule.request import ScheduleRequest

            schedule = ScheduleRequest.make(lm, tgt.name, target_options, memory_budget=memory_budget, stages=stages,
                                            prefill_chunk=prefill_chunk, folder=out.parent)
            if quant is None and recipe is None:  # quantized weights are checked once their sizes are known
                schedule.check(graph)
        require_weights(graph)
        step(f"optimizing ({level}: {', '.join(pipeline) or 'no passes'})")
        from llmc.passes import run_pipeline
        from llmc.passes.pipelines import resolve, split_for_quantization

        early, late = split_for_quantization(resolve(pipeline))  # fusion follows quantization
        pass_options = tgt.pass_options(options)
        graph, records = run_pipeline(graph, [str(s) for s in early], verify=verify, options=pass_options)
        if sparse is not None:
            from llmc.frontend.causal import DEFAULT_PREFILL_CHUNK
            from llmc.passes.sparsity.apply import sparsify_for

            chunk = (prefill_chunk or min(DEFAULT_PREFILL_CHUNK, lm.max_seq_len)) if "generation" in sections else None
            graph, sections["sparsity"], record = sparsify_for(
                graph, tgt, options, options=sparse, calibration=calibration, quant=quant or recipe,
                quant_method=quant_method, samples=calibration_samples, length=calibration_length,
                tokenizer=lm.save_tokenizer if "generation" in sections else None, prefill_chunk=chunk,
                sizes=dict(sizes or {}), measure=None, progress=step)
            records.append(record)
        if quant is not None or recipe is not None:
            from llmc.passes.quantize.apply import quantize_for

            graph, sections["quantization"], record = quantize_for(
                graph, tgt, quant=quant, method=quant_method, recipe=recipe, calibration=calibration,
                samples=calibration_samples, length=calibration_length,
                tokenizer=lm.save_tokenizer if "generation" in sections else None, progress=step,
                **_mixed_options(tgt, options, quant, avg_bits, weight_budget, latency_budget, budget_device,
                                 sensitivity, outliers, reorder_channels, tie_groups))
            records.append(record)
        graph, more = run_pipeline(graph, [str(s) for s in late], verify=verify, options=pass_options)
        records.extend(more)
        if schedule is not None:
            graph, record, sections["schedule"] = schedule.apply(graph)
            records.append(record)
        tgt.check(graph, options)
        step(f"lowering for {tgt.name} and writing {out}")
        manifest = write_artifact(graph, out, target=tgt, options=options, opt_level=level, passes=records,
                                  sizes=dict(sizes or {}), sections=sections)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Artifact(out, manifest, passes=records)


def _mixed_options(tgt, options, quant, avg_bits, weight_budget, latency_budget, budget_device, sensitivity,
                   outliers, reorder_channels, tie_groups) -> dict:
    """``quantize_for``'s mixed-precision arguments: the budget and (for ``mixed``) the device its costs are
    predicted on."""
    from llmc.codegen import devices
    from llmc.passes.quantize.allocate import Budget

    budget = Budget.parse(avg_bits=avg_bits, weight_budget=weight_budget, latency_budget=latency_budget,
                          device=budget_device)
    device = None
    if quant == "mixed" and budget_device is not None:
        device = devices.get(budget_device)
    elif quant == "mixed":
        fields = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}
        device = devices.for_target(tgt.name, fields) or devices.get("cpu")
    if device is not None and budget is not None and budget.kind == "latency":
        budget = dataclasses.replace(budget, device=device.name)
    return {"budget": budget, "device": device, "sensitivity": sensitivity, "outliers": outliers,
            "reorder": reorder_channels, "tie_groups": tie_groups}


def _sparsity(tgt, sparsity, pattern, method, goal, scope, calibration, quant, quant_method):
    """The checked sparsity request, or None when none was made (refused here, before any work)."""
    if sparsity is None and pattern is None:
        return None
    from llmc.passes.sparsity import SparsityOptions, check_request

    request = SparsityOptions(sparsity, pattern or "unstructured", method, goal, scope)
    check_request(request, tgt, calibration=calibration, quant=quant, quant_method=quant_method)
    return request


def load(path: str | Path, *, verify: bool = True) -> Artifact:
    """The artifact at ``path``; ``verify`` checks the sha256 of every file (``ArtifactError`` if any differs)."""
    return Artifact(Path(path), read_artifact(Path(path), verify=verify))


def require_weights(graph: Graph) -> None:
    """Refuse a graph whose weights have shapes but no data (meta capture of a weightless folder)."""
    missing = [v for v in graph.constants.values() if not v.const.materialized]
    if missing:
        size = sum(v.type.nbytes() for v in missing)
        raise WeightsNotMaterialized(
            f"{len(missing)} of {len(graph.constants)} weights of {graph.name} have no data "
            f"({size / 2**30:.2f} GiB missing, e.g. {missing[0].name})",
            hint="put the model's *.safetensors files beside its config.json to compile it; "
                 "`llmc inspect` works without them",
        )
