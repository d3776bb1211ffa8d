"""What each candidate format costs and loses on each quantizable weight: the mixed allocation's table.

For every weight (one row per weight tensor: a tied embedding table read by the output
projection is one row) and every candidate format the target runs:

- **bytes**: what the artifact stores: packed codes, float16 scales (and minimums) and, with
  outliers, the CSR values, columns and row pointers (``stored_bytes``);
- **time_s**: the predicted decode-step time of the weight's product(s) on the device, from the
  roofline cost model (``llmc.codegen.cost.roofline``): one token, ``2 N K`` flops over the stored
  bytes plus the activations, one launch (and a second kernel for the outliers);
- **error** (sensitivity): the relative output error ``||(W - Q) X||^2 / ||W X||^2`` of the
  weight quantized to that format (RTN, outliers split off), on its calibration inputs ``X``:
  ``output`` (the default) measures it exactly through the Hessian ``X X^T`` (``measure``
  streams the calibration data once, layer by layer, and tries every candidate on the same
  inputs); ``proxy`` uses only the Hessian's diagonal, the activation-weighted weight error
  ``sum_k H_kk ||dW[:, k]||^2 / sum_k H_kk ||W[:, k]||^2`` (cheaper: no K x K matrix).

The data streams through the float model, so each weight's sensitivity is its own, not
compounded with the errors of layers before it. Weights read only by a lookup (an untied
embedding) have no activations: their error is the relative weight error ``||W - Q||^2 / ||W||^2``.
Linears reading one value form a group (``group``): the allocation may tie their formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from llmc.codegen.cost import roofline
from llmc.codegen.devices import Device
from llmc.errors import LLMCError
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph, Node
from llmc.ir.packing import Grid, decode, encode, fit
from llmc.passes.quantize.calibration import Calibration, stream
from llmc.passes.quantize.formats import NAMED, WEIGHT_SLOT, Format, aliases, quantizable
from llmc.passes.quantize.outliers import csr_bytes, split, takes_outliers

MEASURES = ("end-to-end", "output", "proxy")


@dataclass
class Choice:
    """One candidate format of one weight: its stored bytes, predicted decode time and error."""

    format: Format
    bytes: int
    time_s: float
    error: float | None = None


@dataclass
class Row:
    """One quantizable weight, the recipe key that names it, and its candidates."""

    weight: str
    key: str
    origin: str
    layer: int | None
    shape: tuple[int, int]
    group: str
    choices: list[Choice] = field(default_factory=list)
    gain: float | None = None  # end-to-end: output error per unit of local error at the first probe
    gains: dict[str, float] = field(default_factory=dict)  # ... at each probe format (``endtoend``)
    probe_errors: dict[str, float] = field(default_factory=dict)  # RTN's local error at each probe
    # format, where the choices hold GPTQ's

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]

    def to_json(self) -> dict:
        return {"weight": self.weight, "key": self.key, "layer": self.layer, "shape": list(self.shape),
                "group": self.group, "gain": self.gain, "gains": self.gains,
                "candidates": {c.format.label: {"bytes": c.bytes, "time_s": c.time_s, "error": c.error}
                               for c in self.choices}}

    @classmethod
    def from_json(cls, d: dict) -> Row:
        """A row of a manifest's table (``to_json``) again, to re-solve it; its recipe key stands for the origin."""
        choices = [Choice(Format.parse(label), c["bytes"], c["time_s"], c["error"])
                   for label, c in d["candidates"].items()]
        return cls(d["weight"], d["key"], d["key"], d["layer"], tuple(d["shape"]), d["group"], choices, d["gain"],
                   d["gains"])


def candidates(target_formats: set[str], outliers: tuple[float, ...] = ()) -> list[Format]:
    """The weight-only formats the target runs (``fp16`` included; W8A8 is not a candidate), in
    ``NAMED`` order, then each low-bit one with every outlier fraction of ``outliers``."""
    plain = [Format.parse(n) for n in NAMED if n in target_formats]
    plain = [f for f in plain if not f.act8]
    with_outliers = [f.with_outliers(o) for o in outliers if o for f in plain if f.grid is not None and f.bits < 8]
    return plain + with_outliers


def stored_bytes(fmt: Format, n: int, k: int) -> int:
    """Bytes of an [n, k] weight stored in ``fmt``: codes, scales, minimums and outliers."""
    if fmt.grid is None:
        return n * k * 2
    grid = fmt.grid
    scales = n * grid.groups(k) * 2 * (1 if grid.sym else 2)
    return n * grid.words(k) * 4 + scales + csr_bytes(n, k, fmt.outliers)


def decode_time(fmt: Format, n: int, k: int, device: Device, readers: int = 1) -> float:
    """Predicted seconds of one token's product(s) with an [n, k] weight in ``fmt`` on ``device``."""
    if readers == 0:  # a lookup table: its gather is the same in any format, counted with the rest of the step
        return 0.0
    weight = stored_bytes(fmt, n, k) - csr_bytes(n, k, fmt.outliers)
    compute, memory = roofline(device, 2.0 * n * k, weight + 4.0 * (n + k), DType.f32, matrix=True)
    time = max(compute, memory) + device.launch
    if fmt.outliers:
        kept = csr_bytes(n, k, fmt.outliers)
        compute, memory = roofline(device, 2.0 * kept / 6, kept + 4.0 * (2 * n + k), DType.f32, matrix=False)
        time += max(compute, memory) + device.launch
    return readers * time


def probe_formats(rows: list[Row]) -> list[Format]:
    """The candidates every weight is perturbed with: the lowest-bit plain grid format of >= 3 bits,
    then, where there is one, the lowest-bit one below 3 bits (whose gain, measured rather than
    carried over from 3 bits, differs by up to 2.6x per weight on SmolLM2)."""
    plain = [c.format for c in rows[0].choices if c.format.grid is not None and not c.format.outliers]
    if not plain:
        raise LLMCError("end-to-end sensitivity needs a low-bit candidate format", hint="use --sensitivity output")
    at_least_3, below_3 = [f for f in plain if f.bits >= 3], [f for f in plain if f.bits < 3]
    if not at_least_3:
        return [_lowest(plain)]
    return [_lowest(at_least_3)] + ([_lowest(below_3)] if below_3 else [])


def _lowest(formats: list[Format]) -> Format:
    """The fewest bits, and of those the largest group."""
    return min(formats, key=lambda f: (f.bits, -f.grid.group_size(1 << 20)))


def table(graph: Graph, formats: list[Format], device: Device) -> list[Row]:
    """One row per quantizable weight with every candidate's bytes and time (no errors yet)."""
    rows: dict[str, Row] = {}
    deciders: dict[str, Node] = {}
    for node in quantizable(graph):
        value = node.inputs[WEIGHT_SLOT[node.op]]
        if value.name not in deciders or (node.op == "linear" and deciders[value.name].op != "linear"):
            deciders[value.name] = node
    keys: dict[str, str] = {}
    for name, node in deciders.items():
        value = graph.constants[name]
        n, k = (int(d) for d in value.type.shape)
        key = aliases(node.meta.origin or node.name, node.op)[0]
        if key in keys:
            raise LLMCError(f"weights {keys[key]} and {name} have the same origin {key!r}",
                            hint="a mixed recipe names each weight by its origin; give the nodes distinct origins")
        keys[key] = name
        readers = sum(1 for user, slot in value.uses if user.op == "linear" and slot == 1)
        outliers_ok = takes_outliers(value)
        row = Row(name, key, node.meta.origin or node.name, node.meta.layer, (n, k),
                  node.inputs[0].name if node.op == "linear" else name)
        for fmt in formats:
            if fmt.outliers and not outliers_ok:
                continue
            row.choices.append(Choice(fmt, stored_bytes(fmt, n, k), decode_time(fmt, n, k, device, readers)))
        rows[name] = row
    return list(rows.values())


def measure(graph: Graph, calibration: Calibration, rows: list[Row], *, how: str = "end-to-end",
            method: str = "rtn", progress: Callable[[str], None] | None = None) -> None:
    """Fill in every candidate's error (see the module docstring), streaming ``calibration`` once;
    ``end-to-end`` then scales each weight's ``output`` errors by its gain (``endtoend``). With a
    ``method`` that ends in GPTQ (``gptq``, ``awq+gptq``), the ``output`` errors are those of GPTQ's
    rounding under the weight's Hessian, which the quantizer will use (RTN's rank formats differently:
    GPTQ recovers far more at 3 bits than at 2)."""
    if how not in MEASURES:
        raise LLMCError(f"unknown sensitivity measure {how!r}", hint=f"use one of {', '.join(MEASURES)}")
    by_weight = {row.weight: row for row in rows}
    hooked = [node for node in graph.nodes if node.op == "linear" and node.inputs[1].name in by_weight]
    done: set[str] = set()
    step = progress or (lambda line: None)
    local = "output" if how == "end-to-end" else how
    gptq_rounding = method.endswith("gptq") and local == "output"
    probes = probe_formats(rows) if gptq_rounding and how == "end-to-end" else []  # the gains' RTN reference

    def hook(node: Node, args: list[np.ndarray]) -> None:
        row = by_weight[node.inputs[1].name]
        if row.weight in done:  # a second reader of the same weight: the first one's inputs stand
            return
        done.add(row.weight)
        x = np.asarray(args[0], np.float64).reshape(-1, args[0].shape[-1])
        _errors(row, np.asarray(args[1], np.float32), x, local, gptq_rounding, probes)
        step(f"sensitivity of {row.origin}: " + ", ".join(f"{c.format.label} {c.error:.1e}" for c in row.choices))

    stream(graph, calibration, hooked, hook)
    for row in rows:
        if row.weight not in done:  # no linear reads it (a lookup table): weight error
            _errors(row, np.asarray(graph.constants[row.weight].const.numpy(), np.float32), None, local, False, [])
    if how == "end-to-end":
        from llmc.passes.quantize.endtoend import gains, weigh

        weigh(rows, gains(graph, calibration, rows, progress=progress))


def _errors(row: Row, w: np.ndarray, x: np.ndarray | None, how: str, gptq_rounding: bool,
            probes: list[Format]) -> None:
    """Each candidate's relative (squared) error on inputs ``x`` (rows of activations), or on the weights;
    also RTN's error at each of the ``probes`` (``Row.probe_errors``)."""
    from llmc.passes.quantize.gptq import output_error

    if gptq_rounding and x is not None and len(x) > 1:
        # GPTQ is fitted on the first half of the calibration rows and scored on the other half: scored
        # on the rows it was fitted to, its error is optimistic wherever rows are few against inputs
        half = len(x) // 2
        fit, hessian = x[:half].T @ x[:half] / half, x[half:].T @ x[half:] / (len(x) - half)
    else:
        hessian = fit = None if x is None else (x.T @ x) / max(len(x), 1)
    h_diag = None if hessian is None else np.diag(hessian).copy()
    for probe in probes if hessian is not None else []:
        row.probe_errors[probe.label] = output_error(w, approximate(w, probe, h_diag), hessian)
    for choice in row.choices:
        approx = approximate(w, choice.format, h_diag, fit if gptq_rounding else None)
        if hessian is None:
            choice.error = float(np.sum((approx - w) ** 2) / max(float(np.sum(w.astype(np.float64) ** 2)), 1e-30))
        elif how == "output":
            choice.error = output_error(w, approx, hessian)
        else:
            col = np.sum((approx.astype(np.float64) - w) ** 2, axis=0)
            choice.error = float(col @ h_diag / max(float(np.sum(w.astype(np.float64) ** 2, axis=0) @ h_diag), 1e-30))


def approximate(w: np.ndarray, fmt: Format, h_diag: np.ndarray | None, hessian: np.ndarray | None = None
                ) -> np.ndarray:
    """The float32 matrix ``w`` becomes in ``fmt`` (RTN, or GPTQ under ``hessian``; outliers split off)."""
    from llmc.passes.quantize.gptq import gptq

    if fmt.grid is None:
        return w.astype(np.float16).astype(np.float32)
    rounding = ((lambda dense: gptq(dense, hessian, fmt.grid)) if hessian is not None else
                (lambda dense: _Rounded(dense, fmt.grid)))
    if fmt.outliers:
        return split(w, fmt.grid, fmt.outliers, h_diag, rounding).dequantize()
    return rounding(w).dequantize()


class _Rounded:
    """RTN's values of ``w`` on ``grid``, group by group, exactly as ``packing.quantize`` stores them but
    without packing the codes into words (only the values are measured here)."""

    def __init__(self, w: np.ndarray, grid: Grid):
        self.values = np.empty(w.shape, np.float32)
        size = grid.group_size(w.shape[1])
        for start in range(0, w.shape[1], size):
            block = w[:, start:start + size].astype(np.float32)
            scale, minimum = fit(block, grid)
            self.values[:, start:start + size] = decode(encode(block, scale, minimum, grid), scale, minimum, grid)

    def dequantize(self) -> np.ndarray:
        return self.values.copy()
