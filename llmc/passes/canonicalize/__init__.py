"""Canonicalization: local rewrite rules, grouped by theme, applied until none fires.

Rule sets (each a module here): ``simplify`` (identities, shape-op chains), ``activations``
(gelu, silu), ``norms`` (layer_norm, rms_norm), ``attention``, ``rope``, ``linear`` (products
with a constant weight matrix).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from llmc.errors import PassError
from llmc.ir.graph import Graph
from llmc.passes.base import Pass, PassResult, register_pass
from llmc.passes.canonicalize import activations, attention, linear, norms, rope, simplify
from llmc.passes.rewrite import Rewriter, RuleSet

RULE_SETS: dict[str, RuleSet] = {rs.name: rs for rs in (
    simplify.RULES, activations.RULES, norms.RULES, attention.RULES, rope.RULES, linear.RULES,
)}


@cache
def _rewriter(names: tuple[str, ...]) -> Rewriter:
    unknown = sorted(set(names) - set(RULE_SETS))
    if unknown:
        raise PassError(f"canonicalize has no rule set(s) {unknown}", hint=f"known: {', '.join(RULE_SETS)}")
    return Rewriter(RULE_SETS[n] for n in names)


@dataclass
class CanonicalizeOptions:
    """rule_sets: which rule sets to apply; max_sweeps: bound on sweeps over the graph."""

    rule_sets: tuple[str, ...] = tuple(RULE_SETS)
    max_sweeps: int = 8


@register_pass
class Canonicalize(Pass):
    """Simplify, and raise decomposed patterns back to first-class ops, by rewrite rules.

    Every rule replaces a value by one that computes the same thing (up to float rounding of
    a reassociated expression); replacement nodes inherit the matched root's origin and layer::

        before:
          graph main(%x: f32[2,8]) {
            // 3 constants, 3 elements
            %t = div(%x, %sqrt2) : f32[2,8]
            %e = erf(%t) : f32[2,8]
            %a = add(%e, %one) : f32[2,8]
            %h = mul(%x, %half) : f32[2,8]
            %y = mul(%h, %a) : f32[2,8]
            return %y
          }
        after:
          graph main(%x: f32[2,8]) {
            // 3 constants, 3 elements
            %y = gelu(%x) {approximate=none} : f32[2,8]
            return %y
          }

    The stats count rewrites by rule and refusals by rule (a check that said no, and why,
    is in ``llmc.passes.rewrite.RewriteReport``; tests read it through ``apply_rules``).
    """

    name = "canonicalize"
    invariant = "every value keeps its value (to float rounding); decomposed patterns become first-class ops"
    Options = CanonicalizeOptions

    def run(self, graph: Graph) -> PassResult:
        report = _rewriter(tuple(self.options.rule_sets)).apply(graph, max_sweeps=self.options.max_sweeps)
        refused: dict[str, int] = {}
        for r in report.refusals:
            refused[r.rule] = refused.get(r.rule, 0) + 1
        stats = {"rewrites": dict(sorted(report.counts.items())), "refused": refused, "sweeps": report.sweeps}
        return PassResult(graph, report.changed, stats)
