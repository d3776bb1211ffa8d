"""The ``Target`` interface every backend implements, and the registry that finds them.

A target declares its options (a dataclass), its default pass pipeline per optimization
level, which ops it supports, how it lowers an optimized graph into files inside an artifact
folder, and, where this machine can, how it runs an artifact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llmc.errors import LLMCError, TargetError, UnsupportedOpError
from llmc.ir.graph import Graph


@dataclass
class Payload:
    """What ``Target.lower`` wrote: file paths relative to the artifact folder, and facts for the manifest."""

    files: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


class Target:
    """Base class of targets. Subclasses set the class attributes and override the methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type] = type("NoOptions", (), {"__annotations__": {}})
    pipelines: ClassVar[Mapping[str, list[str]]] = {"O0": [], "O1": []}
    default_level: ClassVar[str] = "O1"

    def kernel_limits(self):
        """What one kernel of this target may hold (``llmc.passes.fusion.legality.KernelLimits``);
        None when the target makes no kernels of its own (every fused node is accepted)."""
        return None

    def device_name(self, options: Any) -> str | None:
        """The device (``llmc.codegen.devices``) the cost model assumes for this target, or None."""
        return None

    def pass_options(self, options: Any) -> dict[str, dict[str, Any]]:
        """Options of passes that depend on the target: fusion's kernel limits and cost-gate device."""
        limits, device = self.kernel_limits(), self.device_name(options)
        fuse = {**({"limits": limits} if limits is not None else {}), **({"device": device} if device else {})}
        return {"fuse": fuse} if fuse else {}

    def quant_formats(self) -> tuple[str, ...]:
        """The quantization formats this target runs (``llmc.passes.quantize.formats``)."""
        from llmc.passes.quantize.formats import NAMED

        return NAMED

    def supported_ops(self) -> set[str] | None:
        """Ops this target can lower; None means every registered op."""
        return None

    def make_options(self, **values) -> Any:
        """Options from keyword values (CLI flags arrive as strings); unknown names are errors."""
        known = {f.name: f for f in dataclasses.fields(self.Options)} if dataclasses.is_dataclass(self.Options) else {}
        unknown = set(values) - set(known)
        if unknown:
            raise TargetError(f"target {self.name} has no option(s) {sorted(unknown)}",
                              hint=f"its options are {sorted(known) or 'none'}")
        return self.Options(**values)

    def pipeline(self, level: str) -> list[str]:
        if level not in self.pipelines:
            raise TargetError(f"target {self.name} has no pipeline {level}", hint=f"use one of {', '.join(self.pipelines)}")
        return list(self.pipelines[level])

    def check(self, graph: Graph, options: Any) -> None:
        """Refuse, before any long step, what this target cannot build (listing every cause)."""
        self.check_fused(graph)
        supported = self.supported_ops()
        if supported is None:
            return
        missing: dict[str, list[str]] = {}
        for node in graph.nodes:
            if node.op not in supported:
                missing.setdefault(node.op, []).append(node.meta.origin or node.name)
        if missing:
            raise UnsupportedOpError(missing, source=f"target {self.name}")

    def check_fused(self, graph: Graph) -> None:
        """Refuse a ``fused`` node this target cannot compile as one kernel, naming the rule that made it."""
        limits = self.kernel_limits()
        if limits is None:
            return
        from llmc.passes.fusion.legality import kernel_problem

        for node in graph.nodes:
            if node.op == "fused" and (problem := kernel_problem(node.attrs["body"], limits)) is not None:
                raise TargetError(f"fused node {node.name} (rule {node.attrs['body'].name}) cannot be one "
                                  f"{self.name} kernel: {problem}", where=node.where,
                                  hint="compile the model unfused (-O1), or fuse it for this target")

    def lower(self, graph: Graph, options: Any, out: Path) -> Payload:
        """Write the target's payload for ``graph`` into the (temporary) artifact folder ``out``."""
        raise NotImplementedError

    # Payload keys that ``report_tables`` shows (left out of the generic artifact table).
    report_keys: ClassVar[tuple[str, ...]] = ()

    def report_tables(self, manifest: dict) -> list:
        """Tables (``llmc.codegen.report.Table``) of the target's own facts in ``manifest``, shown by
        report.md, ``llmc inspect`` and ``llmc compile``."""
        return []

    def can_run(self) -> bool:
        return False

    def run(self, artifact: Path, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise TargetError(f"target {self.name} cannot run artifacts on this machine",
                          hint="use `llmc run --reference` to run the artifact's graph on the interpreter")

    def step_runner(self, artifact: Path):
        """A runner of one generation step (``llmc.runtime.generate``'s runner contract)."""
        raise TargetError(f"target {self.name} cannot run generation steps on this machine",
                          hint="generate with --reference to use the interpreter")


_TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    _TARGETS[target.name] = target
    return target


def get_target(name: str) -> Target:
    _load_builtin_targets()
    try:
        return _TARGETS[name]
    except KeyError:
        raise LLMCError(f"unknown target {name!r}", hint=f"available targets: {', '.join(sorted(_TARGETS))}") from None


def all_targets() -> list[Target]:
    _load_builtin_targets()
    return [_TARGETS[k] for k in sorted(_TARGETS)]


def _load_builtin_targets() -> None:
    """Import the target modules that register themselves (kept lazy: TVM is heavy)."""
    import importlib

    for module in ("llmc.targets.reference", "llmc.targets.gpu", "llmc.targets.npu", "llmc.targets.fpga"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if not e.name or not e.name.startswith("llmc.targets"):
                raise
