"""``fuse``: llmc's operator fusion, decided by rules, the target's kernel limits and a cost gate.

Three steps, in order:

1. ``fold_batch_norm``: an inference batch norm after a convolution is folded into its weight
   and bias at compile time (``fold.py``).
2. ``horizontal``: linears reading the same input become one product over concatenated
   weights (q/k/v, gate/up; ``horizontal.py``).
3. vertical rules (``rules.py``: ``glu``, ``epilogue``, ``residual_norm``, ``conv_epilogue``,
   ``layout``): a group of nodes becomes one ``fused`` node, which the TVM targets compile as one
   kernel.

A vertical group is applied only when the target can make it one kernel (``legality``:
reductions, outputs, epilogue ops) and the roofline cost model predicts it saves time on the
target's device (the separate kernels' time minus the fused kernel's, with the sizes given or
each symbol at ``DEFAULT_SIZE``). Every refusal is recorded with its reason::

    before:                                          after:
      %y = linear(%x, %w)                              %z = fused(%x, %w, %r) {body=epilogue}
      %a = gelu(%y)
      %z = add(%a, %r)

Without a pass context (``run_pipeline(graph, "fuse")``) the limits are ``KernelLimits()`` and
the gate assumes a generic device (``DEFAULT_DEVICE``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from llmc.ir.graph import Graph, Node
from llmc.passes.base import Pass, PassResult, register_pass
from llmc.passes.fusion import horizontal
from llmc.passes.fusion.fold import fold_batch_norms
from llmc.passes.fusion.legality import KernelLimits, kernel_problem
from llmc.passes.fusion.outline import body_of, escapes, is_convex, outline
from llmc.passes.fusion.rules import RULES
from llmc.passes.rewrite import Refusal, RewriteReport

DEFAULT_DEVICE = "h100"
DEFAULT_SIZE = 128  # each free symbol (batch, seq, ctx) when the gate's sizes do not bind it


@dataclass
class FuseOptions:
    """rules: the vertical rules to apply, in order; horizontal / fold: run those steps;
    limits: the target's kernel limits; device: the device the cost gate assumes (a name of
    ``llmc.codegen.devices``); sizes: symbol sizes for the gate."""

    rules: tuple[str, ...] = tuple(r.name for r in RULES)
    horizontal: bool = True
    fold: bool = True
    limits: KernelLimits = field(default_factory=KernelLimits)
    device: str = DEFAULT_DEVICE
    sizes: dict = field(default_factory=dict)


@register_pass
class Fuse(Pass):
    """Fold, concatenate and group nodes into kernels (see the module docstring)."""

    name = "fuse"
    invariant = "outputs keep their values; each fused node is one kernel the target accepts"
    Options = FuseOptions

    def run(self, graph: Graph) -> PassResult:
        report = RewriteReport()  # the rewrite engine's: groups made per rule, refusals with reasons
        self.report = report
        if self.options.fold:
            report.counts["fold_batch_norm"] += fold_batch_norms(graph)
        if self.options.horizontal:
            found, reasons = horizontal.groups(graph)
            for group in found:
                horizontal.concatenate(graph, group)
                report.counts["horizontal"] += 1
            report.refusals.extend(Refusal("horizontal", node, reason) for node, reason in reasons)
        gate = CostGate(self.options.device, self.options.sizes)
        by_name = {r.name: r for r in RULES}
        for name in self.options.rules:
            rule = by_name[name]
            for node in [n for n in graph.nodes if n.op in rule.roots]:
                if node not in graph.nodes:
                    continue
                group = rule.find(graph, node)
                reason = group if isinstance(group, str) else self._problem(graph, group, rule.name, gate)
                if reason is not None:
                    report.refusals.append(Refusal(rule.name, node.name, reason))
                    continue
                outline(graph, group, rule.name)
                report.counts[rule.name] += 1
        changed = sum(report.counts.values()) > 0
        refused = Counter(r.rule for r in report.refusals)
        return PassResult(graph, changed, {"fused": dict(sorted(report.counts.items())), "refused": dict(sorted(refused.items())),
                                           "kernels_saved": gate.saved_kernels})

    def _problem(self, graph: Graph, group: list[Node], rule: str, gate: CostGate) -> str | None:
        if not is_convex(group):
            return "a path leaves the group and comes back into it"
        body, _, mapped = body_of(group, rule)
        body.outputs = [mapped[id(v)] for v in escapes(graph, group)]
        problem = kernel_problem(body, self.options.limits)
        if problem is not None:
            return f"the target cannot make it one kernel: {problem}"
        return gate.check(graph, group)


class CostGate:
    """Accepts a group when the roofline predicts its one kernel beats its separate kernels
    (``llmc.codegen.cost``; a ``dequantize_packed`` is part of its product either way)."""

    def __init__(self, device, sizes: dict):
        from llmc.codegen import devices

        self.device = devices.get(device) if isinstance(device, str) else device
        self.sizes = sizes
        self.saved_kernels = 0

    def check(self, graph: Graph, group: list[Node]) -> str | None:
        from llmc.codegen.cost import group_time, is_view

        sizes = {s: self.sizes.get(s, DEFAULT_SIZE) for s in graph.symbols()}
        parts = [n for n in group if n.op != "dequantize_packed" and not is_view(n)]
        separate = sum(group_time(graph, [n], self.device, sizes).time for n in parts)
        fused = group_time(graph, parts, self.device, sizes).time
        if fused >= separate:
            return (f"the cost model predicts no saving on {self.device.name}: one kernel {fused * 1e6:.2f} us, "
                    f"{len(parts)} kernels {separate * 1e6:.2f} us")
        self.saved_kernels += len(parts) - 1
        return None
