"""End-to-end weighting of the sensitivities: what a weight's local error does to the model's output.

``sensitivity.measure`` gives each candidate its relative output error at its own layer. Summed
over layers as they are, those numbers treat a 1% error in a value projection like a 1% error in
the output projection that writes the logits, and an allocation that minimizes their sum spends
bits where they buy little (on SmolLM2 it put the tied embedding / output table at 2 bits and
lost to uniform W3). The allocation needs every error in one currency, the model output's.

``gains`` measures, for each weight, how its local error reaches the output: the weight alone is
quantized to a probe format (RTN; ``sensitivity.probe_formats``: the lowest-bit plain candidate of
at least 3 bits, and the lowest below 3 bits where there is one), the model runs on a calibration
sample, and its output is compared with the float model's:

- a generation step graph: the KL divergence of the next-token distributions, float to perturbed,
  averaged over every position (the last-position slice before the output projection is bypassed,
  so every token of the sample is scored);
- any other graph: the relative squared error of its float outputs, ``||dy||^2 / ||y||^2``.

The weight's gain at a probe is that output error over its local error there, and ``weigh``
makes every candidate's sensitivity ``gain x local error``, with the gain of the probe nearest the
candidate in bits: the local measure keeps ranking the formats of one weight, the gains put the
weights on one scale. This assumes, as HAWQ-style analyses do, that a weight's effect on the output
grows in proportion to its local squared error (between the probes) and that the weights' effects
add. The second probe checks the first assumption where it is most stretched: on SmolLM2 a
weight's gain at w2g64 is 0.31 to 2.6 times its gain at w3g128 (median 1.01), so one weight's
2-bit error is predicted within a factor of about 2.6. An allocation with 64 of 211 weights at 2
bits still cannot answer a simple question although each weight's predicted error is small
(docs/passes/mixed.md): the second assumption, additivity, is the one to suspect there.

Cost: one float run, and for each weight and probe one run of the graph from the weight's first reader on
(the values live at that point are the float run's), so weights of late layers cost little. The
sample is the first calibration rows, up to ``tokens`` tokens (default 256; every row where the
graph's batch size is static).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmc.errors import LLMCError
from llmc.ir.graph import Graph, Node
from llmc.ir.ops.registry import substitute
from llmc.passes.quantize.calibration import Calibration, ancestors, bind_sizes, read_value
from llmc.passes.quantize.sensitivity import Row, approximate, probe_formats

DEFAULT_TOKENS = 256
CACHED_WEIGHT_BYTES = 1 << 30  # float weights kept between runs (a GGUF tensor dequantizes on every read)
_TINY = 1e-30


def gains(graph: Graph, calibration: Calibration, rows: list[Row], *, tokens: int = DEFAULT_TOKENS,
          progress: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Each row's gain at each probe format (weight -> probe label -> gain): output error over local
    error with only its weight in that format."""
    probes = probe_formats(rows)
    run = _Runner(graph, _sample(graph, calibration, tokens))
    starts: dict[int, list[Row]] = {}
    for row in rows:
        starts.setdefault(run.first_reader(row.weight), []).append(row)
    out: dict[str, dict[str, float]] = {}

    def perturb(i: int, values: dict) -> None:
        for row in starts.get(i, []):
            weight = np.asarray(run.weight(graph.constants[row.weight]), np.float32)
            for fmt in probes:
                local = row.probe_errors.get(fmt.label, next(c.error for c in row.choices if c.format == fmt))
                output = run.compare(run.tail(i, dict(values), {row.weight: approximate(weight, fmt, None)}))
                out.setdefault(row.weight, {})[fmt.label] = output / max(local, _TINY)
                if progress is not None:
                    progress(f"end-to-end gain of {row.origin}: {out[row.weight][fmt.label]:.2e} "
                             f"({run.metric} {output:.2e} at {fmt.label})")

    run.reference(perturb)
    return out


def weigh(rows: list[Row], gain: dict[str, dict[str, float]]) -> None:
    """Turn every candidate's local error into an output error: ``gain x local``, with the gain of the
    probe format nearest the candidate in bits (``Row.gains`` keeps them, ``Row.gain`` the first probe's)."""
    probes = probe_formats(rows)
    for row in rows:
        row.gains = dict(gain[row.weight])
        row.gain = row.gains[probes[0].label]
        for choice in row.choices:
            nearest = min(probes, key=lambda p: abs(p.bits - choice.format.bits))
            choice.error = row.gains[nearest.label] * choice.error


def _sample(graph: Graph, calibration: Calibration, tokens: int) -> dict[str, np.ndarray]:
    """The first calibration rows holding at most ``tokens`` tokens (axis 1 of the first input; at
    least one row); every row where the graph's batch axis is static."""
    if any(v.type.shape and isinstance(v.type.shape[0], int) for v in graph.inputs if v.name in calibration.inputs):
        return calibration.inputs
    first = next(iter(calibration.inputs.values()))
    per_row = int(first.shape[1]) if first.ndim > 1 else 1
    keep = max(1, tokens // max(per_row, 1))
    return {k: v[:keep] for k, v in calibration.inputs.items()}


class _Runner:
    """The graph's nodes that its compared outputs need, run with the reference ops; values freed after use."""

    def __init__(self, graph: Graph, inputs: dict[str, np.ndarray]):
        from llmc.frontend.decoder import LOGITS, is_step_graph

        self.graph, self.inputs = graph, inputs
        self.env = bind_sizes(graph, inputs)
        step = is_step_graph(graph)
        self.outputs = ([v for v in graph.outputs if v.name == LOGITS] if step else
                        [v for v in graph.outputs if v.type.dtype.is_float])
        self.metric = "KL" if step else "relative error"
        self.bypass = self._last_position_slice() if step else set()
        heads = {id(v.producer) for v in self.outputs if v.producer is not None}
        needed = ancestors(graph, heads) | heads
        self.order = [n for n in graph.nodes if id(n) in needed]
        self.last = {id(v): i for i, n in enumerate(self.order) for v in n.inputs}
        for v in self.outputs:
            self.last[id(v)] = len(self.order)
        self.float_out: list[np.ndarray] | None = None
        self.weights: dict[str, np.ndarray] = {}  # read once, up to CACHED_WEIGHT_BYTES in all
        self.weight_bytes = 0
        self._x = self._lse = self._p = None  # the float run's logits, their logsumexp and probabilities

    def _last_position_slice(self) -> set[int]:
        """The slice to the last position between the final norm and the output projection, if any."""
        head = self.outputs[0].producer
        feed = head.inputs[0].producer if head is not None else None
        return {id(feed)} if feed is not None and feed.op == "slice" else set()

    def first_reader(self, const: str) -> int:
        for i, node in enumerate(self.order):
            if any(v.name == const for v in node.inputs):
                return i
        raise LLMCError(f"no node computing the compared outputs reads {const}")

    def reference(self, before: Callable[[int, dict], None]) -> None:
        """The float run, calling ``before(i, values)`` with the live values ahead of node ``i``
        (the float outputs are computed first, in a run of their own, for ``compare``)."""
        self.float_out = self.tail(0, self._inputs(), {})
        values = self._inputs()
        for i in range(len(self.order)):
            before(i, values)
            self._step(i, values, {})

    def _inputs(self) -> dict:
        return {id(v): self.inputs[v.name] for v in self.graph.inputs if v.name in self.inputs}

    def tail(self, start: int, values: dict, replace: dict[str, np.ndarray]) -> list[np.ndarray]:
        for i in range(start, len(self.order)):
            self._step(i, values, replace)
        return [values[id(v)] for v in self.outputs]

    def _step(self, i: int, values: dict, replace: dict[str, np.ndarray]) -> None:
        node: Node = self.order[i]
        args = [replace[v.name] if v.name in replace else self.weight(v) if v.const is not None
                else read_value(v, values, self.env) for v in node.inputs]
        if id(node) in self.bypass:
            outs = [args[0]]
        else:
            try:
                outs = node.opdef.run(args, substitute(node.attrs, self.env))
            except (ValueError, IndexError, TypeError, FloatingPointError) as e:
                raise LLMCError(f"end-to-end sensitivity failed: {e}", where=node.where) from e
        for v, out in zip(node.outputs, outs):
            values[id(v)] = np.asarray(out, dtype=v.type.dtype.np)
        for v in node.inputs:
            if self.last.get(id(v)) == i:
                values.pop(id(v), None)

    def weight(self, v) -> np.ndarray:
        """A constant's array: the weights of every tail run are the same, so the first
        ``CACHED_WEIGHT_BYTES`` of them are kept rather than read (and dequantized) again each run."""
        if v.name in self.weights:
            return self.weights[v.name]
        array = np.asarray(v.const.numpy())
        if self.weight_bytes + array.nbytes <= CACHED_WEIGHT_BYTES:
            self.weights[v.name] = array
            self.weight_bytes += array.nbytes
        return array

    def compare(self, outs: list[np.ndarray]) -> float:
        """The output error of ``outs`` against the float run's (KL or relative squared error)."""
        if self.metric == "KL":  # sum_j p_j (log p_j - log q_j) = sum_j p_j (x_j - y_j) - (lse(x) - lse(y))
            if self._p is None:
                self._x = self.float_out[0].reshape(-1, self.float_out[0].shape[-1]).astype(np.float32)
                self._lse = _logsumexp(self._x)
                self._p = np.exp(self._x - self._lse[:, None]).astype(np.float32)
            y = outs[0].reshape(self._x.shape).astype(np.float32)
            rows = np.einsum("ij,ij->i", self._p, self._x - y, dtype=np.float64) - (self._lse - _logsumexp(y))
            return float(np.mean(rows))
        num = sum(float(np.sum((o.astype(np.float64) - r) ** 2)) for o, r in zip(outs, self.float_out))
        den = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in self.float_out)
        return num / max(den, _TINY)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Per row, in float64."""
    top = x.max(axis=-1)
    return top + np.log(np.sum(np.exp(x - top[:, None]), axis=-1, dtype=np.float64))
