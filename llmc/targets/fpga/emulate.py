"""The fixed-point emulation: the definition of what an fpga artifact computes.

Runs a graph on int64 codes with the precision plan's types, each node through its kernel
table entry (``llmc.targets.fpga.kernels``). Float inputs are quantized with their input type
(round half up, saturate); integer inputs (token ids, positions, masks) are read as they are.
The C-simulation of the emitted HLS project must reproduce these codes exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from llmc.errors import InputError
from llmc.ir.graph import Graph, Value
from llmc.targets.fpga.kernels import CAPACITY, KERNELS, shape
from llmc.targets.fpga.precision import Precision


def input_codes(graph: Graph, P: Precision, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Codes of the graph's inputs (checked against the signature), laid out at their array
    shapes (a mask of ``ctx`` positions padded with zeros to the buffer's capacity); the runtime
    sizes (``ctx``) go to ``P.sizes``."""
    from llmc.ir.interpreter import bind_inputs

    missing = [v.name for v in graph.inputs if v.name not in inputs]
    if missing:
        raise InputError(f"missing inputs {missing}", hint=f"the model's inputs are {[v.name for v in graph.inputs]}")
    env = bind_inputs(graph, [np.asarray(inputs[v.name]) for v in graph.inputs])
    P.sizes = {k: v for k, v in env.items() if k in CAPACITY}
    codes = {}
    for v in graph.inputs:
        c = encode(v, P, inputs[v.name])
        full = shape(v)
        if list(c.shape) != full:
            c = np.pad(c, [(0, f - n) for f, n in zip(full, c.shape)])
        codes[v.name] = c
    return codes


def encode(v: Value, P: Precision, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if v.type.dtype.is_float:
        return P.of(v).quantize(array)
    return array.astype(np.int64)


def constant_codes(v: Value, P: Precision) -> np.ndarray:
    return encode(v, P, v.const.numpy())


def run_codes(graph: Graph, P: Precision, codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output codes by name from input codes by name."""
    values: dict[str, np.ndarray] = dict(codes)
    last = {v.name: i for i, n in enumerate(graph.nodes) for v in n.inputs}
    keep = {v.name for v in graph.outputs}
    for i, node in enumerate(graph.nodes):
        args = [values[v.name] if v.name in values else constant_codes(v, P) for v in node.inputs]
        for v, out in zip(node.outputs, KERNELS[node.op].emulate(node, args, P)):
            values[v.name] = np.asarray(out, np.int64).reshape(shape(v))
        for v in node.inputs:
            if last.get(v.name) == i and v.name not in keep:
                values.pop(v.name, None)
    return {v.name: values[v.name] for v in graph.outputs}


def decode(graph: Graph, P: Precision, codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs as the graph's dtypes: float outputs are their fixed-point values."""
    out = {}
    for v in graph.outputs:
        c = codes[v.name]
        out[v.name] = P.of(v).value(c).astype(v.type.dtype.np) if v.type.dtype.is_float else c.astype(v.type.dtype.np)
    return out


def run(graph: Graph, P: Precision, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The emulated outputs (float values of the output codes) for float/integer inputs by name."""
    return decode(graph, P, run_codes(graph, P, input_codes(graph, P, inputs)))
