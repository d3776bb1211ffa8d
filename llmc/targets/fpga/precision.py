"""Fixed-point precision of every tensor: from calibration ranges, with overrides.

Each node output gets a ``result`` type, each constant a ``weight`` (or ``bias``) type, each
product an exact ``accum`` type (``fixed.accumulator``). Defaults (``--fpga-bits B``):

    result   fixed<B, I>  I = bits_for(1.25 * max|x|) over the calibration run (>= 1 sign bit)
    weight   fixed<B, I>  I = bits_for(max|w|) of the constant itself
    bias     fixed<I + fx + fw, I>  (exactly representable in the accumulator of x * w)
    accum    exact: every partial sum of the products is held without rounding
    integer inputs (token ids, positions) and masks: integers (fixed<32,32>, fixed<8,8>)

Ops that only move or select values (relu, max pooling, reshape, transpose, slice) keep their
input's type; attention's result has at least the integer bits of its values (it averages them). Overrides follow the quantization recipes' shape::

    {"default": {"result": "fixed<18,8>"},
     "override": {"softmax": {"result": "ufixed<16,1>"},            # an op kind
                  "features.0": {"weight": "fixed<8,3,RND,SAT>"}}}  # node names / origins (globs)

Ranges come from ``llmc.passes.quantize.calibration.stream`` (the quantization pass's streaming
executor), run on the float graph.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmc.ir.graph import Graph, Node, Value
from llmc.targets.fpga.fixed import Fixed, PrecisionError, accumulator, bits_for

HEADROOM = 1.25
SLOTS = ("result", "weight", "bias", "accum")
PASSTHROUGH = frozenset({"relu", "max_pool2d", "reshape", "transpose", "slice", "squeeze", "unsqueeze", "flatten"})
INT_TYPE = Fixed(32, 32, rounding="TRN")
BOOL_TYPE = Fixed(8, 8, rounding="TRN")


@dataclass
class Overrides:
    """Parsed precision overrides: a default per slot and per-key (op kind or node glob) slots."""

    default: dict[str, Fixed] = field(default_factory=dict)
    override: dict[str, dict[str, Fixed]] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: str | Path | Mapping | None) -> Overrides:
        if spec is None or spec == "":
            return cls()
        data = spec if isinstance(spec, Mapping) else _read(spec)
        unknown = set(data) - {"default", "override"}
        if unknown:
            raise PrecisionError(f"unknown precision keys {sorted(unknown)}", hint="a precision file has 'default' and 'override'")
        default = _slots(data.get("default", {}), "default")
        override = data.get("override", {})
        if not isinstance(override, Mapping):
            raise PrecisionError("the precision 'override' must map op kinds or node globs to slot types")
        return cls(default, {str(k): _slots(v, str(k)) for k, v in override.items()})

    def slot(self, node: Node, slot: str) -> Fixed | None:
        names = [node.name, *([node.meta.origin] if node.meta.origin else [])]
        for key, slots in self.override.items():
            if slot in slots and any(fnmatch.fnmatchcase(n, key) for n in names):
                return slots[slot]
        if slot in self.override.get(node.op, {}):
            return self.override[node.op][slot]
        return self.default.get(slot)

    def check_keys(self, graph: Graph) -> None:
        """Refuse an override key that names no op kind and matches no node."""
        ops = {n.op for n in graph.nodes}
        names = [x for n in graph.nodes for x in (n.name, n.meta.origin) if x]
        dead = [k for k in self.override if k not in ops and not any(fnmatch.fnmatchcase(n, k) for n in names)]
        if dead:
            raise PrecisionError(f"precision override(s) {dead} match no node and no op kind of {graph.name}",
                                 hint=f"op kinds here: {', '.join(sorted(ops))}")

    def to_json(self) -> dict:
        return {"default": {k: str(v) for k, v in self.default.items()},
                "override": {k: {s: str(t) for s, t in v.items()} for k, v in self.override.items()}}


def _read(spec) -> dict:
    path = Path(spec)
    text = path.read_text() if path.is_file() else str(spec)
    try:
        data = json.loads(text)
    except ValueError:
        raise PrecisionError(f"precision overrides {spec!r} are neither a JSON file nor JSON text",
                             hint='e.g. {"override": {"softmax": {"result": "ufixed<16,1>"}}}') from None
    if not isinstance(data, dict):
        raise PrecisionError("precision overrides must be a JSON object")
    return data


def _slots(value, key: str) -> dict[str, Fixed]:
    if not isinstance(value, Mapping):
        raise PrecisionError(f"precision override {key!r} must map slots ({', '.join(SLOTS)}) to types, got {value!r}")
    bad = set(value) - set(SLOTS)
    if bad:
        raise PrecisionError(f"precision override {key!r} has unknown slot(s) {sorted(bad)}", hint=f"slots: {', '.join(SLOTS)}")
    return {slot: Fixed.parse(text) for slot, text in value.items()}


# -- calibration ranges ---------------------------------------------------------------------


def calibration_ranges(graph: Graph, samples: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """max |x| of every non-constant value over the calibration ``samples`` (float graph)."""
    from llmc.ir.ops.registry import substitute
    from llmc.passes.quantize.calibration import Calibration, stream

    out: dict[str, float] = {}
    outputs = {id(v) for v in graph.outputs}

    def note(v: Value, a: np.ndarray) -> None:
        if v.const is None and a.size:
            out[v.name] = max(out.get(v.name, 0.0), float(np.max(np.abs(a.astype(np.float64)))))

    from llmc.ir.interpreter import bind_inputs

    env: dict[str, int] = {}

    def hook(node: Node, args: list[np.ndarray]):
        for v, a in zip(node.inputs, args):
            note(v, a)
        if any(id(v) in outputs for v in node.outputs):
            for v, a in zip(node.outputs, node.opdef.run(args, substitute(node.attrs, env))):
                note(v, np.asarray(a))

    for sample in samples:
        env.clear()
        env.update(bind_inputs(graph, [sample[v.name] for v in graph.inputs]))
        stream(graph, Calibration(sample, "fpga"), graph.nodes, hook)
    return out


# -- assignment -----------------------------------------------------------------------------


@dataclass
class Precision:
    """The fixed-point type of every value (by name) and the accumulator of every product node."""

    types: dict[str, Fixed]
    accum: dict[str, Fixed]
    sizes: dict[str, int] = field(default_factory=dict)  # runtime symbols (ctx) of the step being emulated

    def of(self, v: Value) -> Fixed:
        return self.types[v.name]

    def to_json(self) -> dict:
        return {"types": {k: str(v) for k, v in self.types.items()}, "accum": {k: str(v) for k, v in self.accum.items()}}


# Which inputs of an op are weights (slot) when constant; the rest are activations.
WEIGHT_SLOTS = {"linear": {1: "weight", 2: "bias"}, "conv2d": {1: "weight", 2: "bias"},
                "layer_norm": {1: "weight", 2: "bias"}, "rms_norm": {1: "weight"}, "embedding": {0: "weight"}}
PRODUCTS = {"linear": (0, 1), "conv2d": (0, 1)}


def assign(graph: Graph, ranges: Mapping[str, float], bits: int, overrides: Overrides) -> Precision:
    """Types of every value of ``graph`` (see the module docstring)."""
    overrides.check_keys(graph)
    types: dict[str, Fixed] = {}
    accum: dict[str, Fixed] = {}
    for v in graph.inputs:
        types[v.name] = _input_type(v, ranges, bits, overrides)
    for node in graph.nodes:
        slots = WEIGHT_SLOTS.get(node.op, {})
        for i, v in enumerate(node.inputs):
            if v.const is not None and v.name not in types:
                types[v.name] = _constant_type(node, v, slots.get(i, "weight"), bits, overrides, types)
        if node.op in PRODUCTS:
            a, b = (node.inputs[i] for i in PRODUCTS[node.op])
            terms = int(np.prod(b.type.shape[1:]))
            exact = accumulator(types[a.name], types[b.name], terms)
            accum[node.name] = _accum(node, exact, overrides)
            if len(node.inputs) > 2 and not accum[node.name].fits(types[node.inputs[2].name].frac, *_range(types[node.inputs[2].name])):
                raise PrecisionError(f"the bias type {types[node.inputs[2].name]} of {node.name} does not fit its "
                                     f"accumulator {accum[node.name]}", where=node.where,
                                     hint="give the bias no more fractional bits than input + weight have together")
        for v in node.outputs:
            types[v.name] = _result_type(node, v, ranges, bits, overrides, types)
        if node.op == "kv_update" and overrides.slot(node, "result") is None:
            # the buffer holds what steps write into it: the new keys/values' type, for the input too
            types[node.inputs[0].name] = types[node.output.name] = types[node.inputs[1].name]
    return Precision(types, accum)


def _range(t: Fixed) -> tuple[int, int]:
    return t.lo, t.hi


def _input_type(v: Value, ranges, bits, overrides) -> Fixed:
    if not v.type.dtype.is_float:
        return BOOL_TYPE if v.type.dtype.name == "bool" else INT_TYPE
    forced = overrides.default.get("result")
    return forced if forced is not None else _fit(ranges.get(v.name, 1.0) * HEADROOM, bits)


def _constant_type(node: Node, v: Value, slot: str, bits: int, overrides: Overrides, types) -> Fixed:
    if not v.type.dtype.is_float:
        return INT_TYPE
    forced = overrides.slot(node, slot)
    if forced is not None:
        return forced
    peak = float(np.max(np.abs(v.const.numpy()))) if v.type.numel else 0.0
    if slot == "bias" and node.op in PRODUCTS:
        a, b = (types[node.inputs[i].name] for i in PRODUCTS[node.op])
        integer = bits_for(peak)
        return Fixed(integer + a.frac + b.frac, integer)
    return _fit(peak, bits)


def _accum(node: Node, exact: Fixed, overrides: Overrides) -> Fixed:
    forced = overrides.slot(node, "accum")
    if forced is None:
        return exact
    if forced.frac < exact.frac or forced.integer < exact.integer:
        raise PrecisionError(f"accumulator override {forced} of {node.name} would lose bits: its products need "
                             f"{exact} to be summed exactly", where=node.where,
                             hint=f"give the accumulator at least {exact.frac} fractional and {exact.integer} integer bits, "
                                  "or narrow the operands instead")
    return forced


def _result_type(node: Node, v: Value, ranges, bits, overrides, types) -> Fixed:
    if not v.type.dtype.is_float:
        return BOOL_TYPE if v.type.dtype.name == "bool" else INT_TYPE
    forced = overrides.slot(node, "result")
    if forced is not None:
        return forced
    if node.op in PASSTHROUGH and node.inputs and node.inputs[0].name in types:
        return types[node.inputs[0].name]
    if node.op == "embedding":
        return types[node.inputs[0].name]
    fit = _fit(ranges.get(v.name, 1.0) * HEADROOM, bits)
    if node.op == "attention":  # a convex combination of the values: never beyond their range
        return Fixed(bits, min(max(fit.integer, types[node.inputs[2].name].integer), bits))
    return fit


def _fit(peak: float, bits: int) -> Fixed:
    return Fixed(bits, min(bits_for(peak), bits))
