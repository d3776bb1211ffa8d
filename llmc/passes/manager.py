"""The pass manager: runs a pipeline, optionally verifies after each pass, times it, logs it.

``run_pipeline(graph, "O1", verify=True)`` returns the graph and one ``PassRecord`` per pass
run (a fixpoint group adds one record per pass per round, with ``round`` set). The log goes
into the artifact manifest (``[r.to_json() for r in log]``).

With ``verify=True`` the input graph is verified first, then the graph after every pass; a
pass that leaves it invalid (or crashes) raises ``PassError`` naming that pass and the passes
that ran before it, so the culprit is found without bisecting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmc.errors import LLMCError, PassError, VerifyError
from llmc.ir.graph import Graph
from llmc.passes.base import get_pass
from llmc.passes.pipelines import Fixpoint, PassStep, Step, pass_names_in, resolve

log = logging.getLogger("llmc.passes")


@dataclass
class PassRecord:
    """One pass run: its name, whether it changed the graph, wall time, and its counters.

    ``stats`` always holds ``nodes_before`` and ``nodes_after``; each pass adds its own
    (``rewrites`` by rule for canonicalize, ``folded`` for constant folding, ...).
    ``round`` is the round of the enclosing fixpoint group (1-based), None outside one.
    """

    name: str
    changed: bool
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    round: int | None = None

    def to_json(self, *, timings: bool = True) -> dict:
        """A JSON-ready dict; ``timings=False`` leaves out ``seconds`` (for byte-identical manifests)."""
        out: dict[str, Any] = {"name": self.name, "changed": self.changed}
        if timings:
            out["seconds"] = round(self.seconds, 6)
        if self.round is not None:
            out["round"] = self.round
        out["stats"] = _jsonable(self.stats)
        return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def run_pipeline(graph: Graph, pipeline: str | Sequence[str], *, verify: bool = False,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Graph, list[PassRecord]]:
    """Run ``pipeline`` (a name in ``PIPELINES``, pipeline text, or a list of entries) on ``graph``.

    ``options`` gives a pass its options by pass name (a target's: ``Target.pass_options``).
    Returns the resulting graph and the log. Unknown pass names are reported before anything runs.
    """
    steps = resolve(pipeline)
    for name in pass_names_in(steps):
        get_pass(name)
    runner = _Runner(verify, options or {})
    if verify:
        runner.check(graph, None)
    graph, _ = runner.run_steps(graph, steps, None)
    return graph, runner.log


class _Runner:
    def __init__(self, verify: bool, options: Mapping[str, Mapping[str, Any]]):
        self.verify = verify
        self.options = options
        self.log: list[PassRecord] = []

    def run_steps(self, graph: Graph, steps: Sequence[Step], round_: int | None) -> tuple[Graph, bool]:
        changed = False
        for step in steps:
            if isinstance(step, Fixpoint):
                graph, did = self.run_fixpoint(graph, step)
            else:
                graph, did = self.run_pass(graph, step, round_)
            changed |= did
        return graph, changed

    def run_fixpoint(self, graph: Graph, group: Fixpoint) -> tuple[Graph, bool]:
        changed = False
        for r in range(1, group.max_rounds + 1):
            graph, did = self.run_steps(graph, group.steps, r)
            changed |= did
            if not did:
                return graph, changed
        log.info("%s stopped at its bound of %d rounds while still changing the graph", group, group.max_rounds)
        return graph, changed

    def run_pass(self, graph: Graph, step: PassStep, round_: int | None) -> tuple[Graph, bool]:
        the_pass = get_pass(step.name)(**self.options.get(step.name, {}))
        nodes_before = len(graph.nodes)
        start = time.perf_counter()
        try:
            result = the_pass.run(graph)
        except LLMCError:
            raise
        except Exception as e:  # a bug in the pass: name it, and what ran before it
            raise self._error(step.name, f"pass {step.name} crashed: {type(e).__name__}: {e}", None) from e
        seconds = time.perf_counter() - start
        stats = {"nodes_before": nodes_before, "nodes_after": len(result.graph.nodes), **result.stats}
        record = PassRecord(step.name, result.changed, seconds, stats, round_)
        log.debug("%s: changed=%s %.3fs %s", step.name, result.changed, seconds, stats)
        if self.verify:
            self.check(result.graph, step.name)
        self.log.append(record)
        return result.graph, result.changed

    def check(self, graph: Graph, pass_name: str | None) -> None:
        try:
            graph.verify()
        except VerifyError as e:
            if pass_name is None:
                raise PassError(f"the input graph is invalid before any pass ran: {e.what}", where=e.where,
                                hint="fix the frontend or the code that built the graph") from e
            raise self._error(pass_name, f"pass {pass_name} left the graph invalid: {e.what}", e.where) from e

    def _error(self, pass_name: str, what: str, where: str | None) -> PassError:
        before = [r.name for r in self.log]
        err = PassError(what, where=where, hint=f"passes run before it: {', '.join(before) or 'none'}; "
                                                f"this is a bug in {pass_name}, please report it with the model")
        err.pass_name = pass_name
        err.previous = before
        return err
