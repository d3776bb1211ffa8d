"""Pre-flight: does a model fit a memory budget, and how fast will it run there? Asked before any build.

    pf = preflight(lm.graph, budget=parse_bytes("4GiB"), device=devices.get("h100"),
                   max_seq_len=2048, prefill_chunk=256)
    pf.fits, pf.minimum, pf.plan.tokens_per_s    # the answer
    pf.check()                                   # InputError naming the smallest budget that works

The answer counts weights (resident, and the streaming window), the KV cache at
``max_seq_len``, and the activations of a prefill chunk (``llmc.passes.schedule.plan``). It needs
shapes only: ``causal_lm_shapes`` builds the step graph of a Hugging Face folder that has a
config.json and no weights on torch's ``meta`` device, so a 7B model is answered in seconds,
before anything is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmc.codegen.devices import Device
from llmc.errors import InputError
from llmc.ir.graph import Graph
from llmc.passes.schedule.plan import Plan, StepFacts, choose, minimum_budget, show_bytes, step_facts
from llmc.passes.schedule.storage import Storage, for_device


@dataclass
class Preflight:
    """The answer for one model, budget and device: ``plan`` (None when nothing fits), the
    ``minimum`` budget any plan fits and the plan there (``at_minimum``)."""

    name: str
    budget: int
    device: Device
    storage: Storage
    facts: StepFacts
    plan: Plan | None
    minimum: int
    at_minimum: Plan
    max_seq_len: int

    @property
    def fits(self) -> bool:
        return self.plan is not None

    def check(self) -> None:
        """Refuse (``InputError``) a budget no plan fits, naming the smallest that works and its speed."""
        if self.fits:
            return
        m, f = self.at_minimum.memory, self.facts
        raise InputError(
            f"{self.name} does not fit --memory-budget {show_bytes(self.budget)}: the smallest budget that works is "
            f"{show_bytes(self.minimum)} (KV cache {show_bytes(f.kv_cache)} at --max-seq-len {self.max_seq_len}, "
            f"activations {show_bytes(f.activations)}, streaming window {show_bytes(m['window'])} of "
            f"{show_bytes(f.weights)} weights), predicted {self.at_minimum.tokens_per_s:.3g} tokens/s there "
            f"on {self.device.name}",
            hint=f"give --memory-budget {_round_up(self.minimum)} or more, or a smaller --max-seq-len")

    def to_json(self) -> dict:
        plan = self.plan or self.at_minimum
        return {"model": self.name, "device": self.device.name, "budget": self.budget, "fits": self.fits,
                "minimum_budget": self.minimum, "weights": self.facts.weights, "kv_cache": self.facts.kv_cache,
                "activations": self.facts.activations, "max_seq_len": self.max_seq_len,
                "storage": self.storage.to_json(), "memory": plan.memory, "streamed_groups": len(plan.streamed),
                "groups": len(plan.groups), "prefetch": plan.prefetch,
                "decode_tokens_per_s": self.plan.tokens_per_s if self.plan else None,
                "decode_tokens_per_s_at_minimum": self.at_minimum.tokens_per_s}


def preflight(graph: Graph, *, budget: int, device: Device, max_seq_len: int, prefill_chunk: int,
              storage: Storage | None = None, folder: Path | None = None) -> Preflight:
    """The pre-flight answer for a generation step ``graph`` (streaming from ``storage``, by
    default the one ``for_device`` gives for ``device`` and the disk under ``folder``)."""
    storage = storage or for_device(device, folder)
    facts = step_facts(graph, device, max_seq_len=max_seq_len, prefill_chunk=prefill_chunk)
    minimum = minimum_budget(facts)
    at_minimum = choose(facts, minimum, storage)
    assert at_minimum is not None, "a plan fits its own minimum budget"
    return Preflight(graph.name, budget, device, storage, facts, choose(facts, budget, storage), minimum, at_minimum,
                     max_seq_len)


def causal_lm_shapes(model, *, max_seq_len: int | None = None):
    """``load_causal_lm(model)``; a Hugging Face folder without weights is built on the meta device
    (shapes only: enough for a pre-flight answer, not for a build)."""
    from llmc.frontend.causal import load_causal_lm

    folder = Path(model) if isinstance(model, (str, Path)) else None
    if folder is not None and folder.is_dir() and (folder / "config.json").is_file() and not _has_weights(folder):
        import torch
        from transformers import AutoModelForCausalLM

        from llmc.frontend.hf import read_config

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(read_config(folder))
        lm = load_causal_lm(model, max_seq_len=max_seq_len)
        lm.graph.name = folder.name
        return lm
    return load_causal_lm(model, max_seq_len=max_seq_len)


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or (folder / "pytorch_model.bin").is_file()


def _round_up(n: int) -> str:
    """A budget a person would type, at least ``n``: whole KiB below 1 MiB, MiB below 1 GiB, else tenths of a GiB."""
    if n < 2**20:
        return f"{-(-n // 2**10)}KiB"
    if n < 2**30:
        return f"{-(-n // 2**20)}MiB"
    return f"{-(-n * 10 // 2**30) / 10:g}GiB"
