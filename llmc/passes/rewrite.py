"""The rewrite engine: rules (pattern + check + rewrite) grouped in rule sets, applied to a graph.

    gelu_erf = Rule(
        "gelu_erf",
        P.product(x, P.const(value=0.5), P.op("add", P.op("erf", ...), P.const(value=1.0))),
        rewrite=lambda m: m.call("gelu", m["x"], approximate="none"),
    )
    report = Rewriter([RuleSet("activations", [gelu_erf, ...])]).apply(graph)
    report.counts      # {"gelu_erf": 12}
    report.reasons("rms_norm")   # why a rule's check refused where its pattern matched

A rule's ``check(match)`` returns None to accept or a string saying why it refuses; refusals
are recorded so tests can assert them. ``rewrite(match)`` builds the replacement with
``match.call(op, ...)``, which inserts nodes before the matched root and gives them the root's
meta (origin, layer). The engine then redirects the root's readers to the replacement (a graph
output keeps its name) and removes the matched nodes nothing else reads; matched nodes still
read from outside stay (DCE removes what becomes dead later).

Rules are indexed by the op of their pattern's root, so a sweep costs O(nodes x rules per op).
Sweeps repeat until one rewrites nothing (at most ``max_sweeps``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from llmc.errors import LLMCError, PassError
from llmc.ir.graph import Graph, Node, Value, same_type
from llmc.passes.edit import remove_unread, replace_value, replacement_problem
from llmc.passes.patterns import MatchState, Pattern, small_array


class Match:
    """One accepted way a rule's pattern fits: captured values, matched nodes (root first)."""

    def __init__(self, graph: Graph, root: Node, captures: dict[str, Value], nodes: list[Node]):
        self.graph = graph
        self.root = root
        self.captures = captures
        self.nodes = nodes
        self.created: list[Node] = []

    def __getitem__(self, name: str) -> Value:
        return self.captures[name]

    def __contains__(self, name: str) -> bool:
        return name in self.captures

    def node(self, name: str) -> Node:
        """The node that produced the value captured as ``name``."""
        producer = self.captures[name].producer
        if producer is None:
            raise PassError(f"capture {name!r} is not a node output")
        return producer

    def array(self, name: str) -> np.ndarray | None:
        """The data of the captured constant ``name`` if it is small and materialized, else None."""
        return small_array(self.captures[name])

    def scalar(self, name: str) -> float | None:
        """The captured constant ``name`` as a float when it holds one element, else None.

        The float is the shortest decimal of the stored number (an f32 1e-5 reads 1e-05, not
        9.99999974e-06), so attributes made from it read like the model's config.
        """
        data = self.array(name)
        if data is None or data.size != 1:
            return None
        value = data.reshape(-1)[0]
        try:
            return float(str(value))
        except ValueError:
            return float(value)

    def call(self, op: str, *inputs: Value, **attrs) -> Value:
        """Add a node before the root, with the root's meta; returns its (first) output."""
        node = self.graph.add_node(op, inputs, attrs, meta=self.root.meta.copy(), before=self.root)
        self.created.append(node)
        return node.outputs[0]


Check = Callable[[Match], "str | None"]


@dataclass(frozen=True)
class Rule:
    """``pattern`` to find, ``check`` to accept (None) or refuse (a reason), ``rewrite`` to build."""

    name: str
    pattern: Pattern
    rewrite: Callable[[Match], Value]
    check: Check | None = None

    def __post_init__(self):
        if not self.pattern.root_ops():
            raise PassError(f"rule {self.name}: its pattern must be rooted at an op (or alternatives of ops)")


@dataclass(frozen=True)
class RuleSet:
    """Rules grouped by theme (``norms``, ``activations``...), applied together."""

    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Refusal:
    rule: str
    node: str
    reason: str


@dataclass
class RewriteReport:
    """What a rewriter did: rewrites per rule, refusals (rule, node, reason), sweeps run."""

    counts: Counter = field(default_factory=Counter)
    refusals: list[Refusal] = field(default_factory=list)
    sweeps: int = 0

    @property
    def changed(self) -> bool:
        return sum(self.counts.values()) > 0

    def reasons(self, rule: str) -> list[str]:
        return [r.reason for r in self.refusals if r.rule == rule]


class Rewriter:
    """Applies rules (or rule sets) to graphs, rules indexed by their root op."""

    def __init__(self, rules: Iterable[Rule | RuleSet]):
        self.rules: list[Rule] = []
        for r in rules:
            self.rules.extend(r.rules if isinstance(r, RuleSet) else [r])
        names = Counter(r.name for r in self.rules)
        if dupes := sorted(n for n, c in names.items() if c > 1):
            raise PassError(f"rule names must be unique, repeated: {dupes}")
        self.by_op: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for op in sorted(rule.pattern.root_ops()):
                self.by_op.setdefault(op, []).append(rule)

    def apply(self, graph: Graph, *, max_sweeps: int = 8) -> RewriteReport:
        report = RewriteReport()
        seen: set[Refusal] = set()
        while report.sweeps < max_sweeps:
            report.sweeps += 1
            if not self._sweep(graph, report, seen):
                break
        return report

    def _sweep(self, graph: Graph, report: RewriteReport, seen: set[Refusal]) -> int:
        removed: set[Node] = set()
        done = 0
        for node in list(graph.nodes):
            if node in removed or not node.outputs:
                continue
            for rule in self.by_op.get(node.op, ()):
                gone = self._try(graph, node, rule, report, seen)
                if gone is not None:
                    removed |= gone
                    report.counts[rule.name] += 1
                    done += 1
                    break
        return done

    def _try(self, graph: Graph, node: Node, rule: Rule, report: RewriteReport, seen: set[Refusal]) -> set[Node] | None:
        """Rewrite at ``node`` if the rule matches and its check accepts; returns the removed nodes."""
        root = node.outputs[0]
        state = MatchState()
        match, reason = None, None
        for _ in rule.pattern.match(root, state):
            candidate = Match(graph, node, dict(state.captures), list(state.nodes))
            reason = rule.check(candidate) if rule.check else None
            if reason is None:
                match = candidate
                break
        if match is None:
            if reason is not None:
                self._refuse(report, seen, rule, node, reason)
            return None
        new = self._build(rule, match)
        problem = replacement_problem(graph, root, new)
        if problem:
            graph.remove_nodes(match.created)
            self._refuse(report, seen, rule, node, problem)
            return None
        replace_value(graph, root, new)
        return remove_unread(graph, match.nodes)

    @staticmethod
    def _build(rule: Rule, match: Match) -> Value:
        root = match.root
        try:
            new = rule.rewrite(match)
        except LLMCError as e:
            match.graph.remove_nodes(match.created)
            raise PassError(f"rule {rule.name} failed to build its replacement: {e}", where=root.where) from e
        if not same_type(new.type, root.outputs[0].type):
            match.graph.remove_nodes(match.created)
            raise PassError(f"rule {rule.name} replaced %{root.outputs[0].name}: {root.outputs[0].type} "
                            f"with a value of type {new.type}", where=root.where,
                            hint="the rule's check must refuse this case; please report it")
        return new

    @staticmethod
    def _refuse(report: RewriteReport, seen: set[Refusal], rule: Rule, node: Node, reason: str) -> None:
        refusal = Refusal(rule.name, node.name, reason)
        if refusal not in seen:
            seen.add(refusal)
            report.refusals.append(refusal)


def apply_rules(graph: Graph, *rules: Rule | RuleSet, max_sweeps: int = 8) -> RewriteReport:
    """Apply ``rules`` to ``graph`` in place until nothing matches; what ``canonicalize`` does."""
    return Rewriter(rules).apply(graph, max_sweeps=max_sweeps)
