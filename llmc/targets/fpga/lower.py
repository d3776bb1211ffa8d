"""Lowering a graph to an fpga artifact: calibrate, choose precisions, plan, emit, predict.

    calibration samples ─▶ ranges ─▶ Precision ─▶ kernel calls ─▶ Plan (fits the device or
    refuses) ─▶ hls/ project ─▶ tb_data/ from the emulation ─▶ manifest section ``fpga``

Everything that can refuse (unsupported ops, bad precision overrides, no fit) does so before
any file is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from llmc.errors import InputError
from llmc.ir import shapes as S
from llmc.ir.graph import Graph
from llmc.targets.fpga import emulate
from llmc.targets.fpga.bind import RUNTIME, capacity
from llmc.targets.fpga.devices import FpgaDevice
from llmc.targets.fpga.emit import Emitter
from llmc.targets.fpga.estimate import Plan, plan, unit_of
from llmc.targets.fpga.kernels import KERNELS, numel, use_capacity
from llmc.targets.fpga.precision import Overrides, Precision, assign, calibration_ranges

SEED = 0


def calibration_samples(graph: Graph, npz: str, count: int) -> tuple[list[dict[str, np.ndarray]], str]:
    """Inputs to calibrate on: the arrays of an .npz (one sample, or a leading sample axis), or
    ``count`` seeded synthetic samples: standard normal floats, token ids uniform over the
    embedding table that reads them, positions 0.., masks all ones."""
    if npz:
        path = Path(npz)
        if not path.is_file():
            raise InputError(f"calibration inputs {npz} do not exist", hint="give an .npz of model inputs")
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        names = [v.name for v in graph.inputs]
        if sorted(arrays) != sorted(names):
            raise InputError(f"calibration inputs {npz} hold {sorted(arrays)}, the model takes {names}")
        if all(arrays[v.name].ndim == len(v.type.shape) for v in graph.inputs):  # one sample
            return [arrays], str(path)
        return [{k: a[i] for k, a in arrays.items()} for i in range(len(arrays[names[0]]))], str(path)
    from llmc.frontend.decoder import is_step_graph

    rng = np.random.default_rng(SEED)
    vocab = {n.inputs[1].name: int(n.inputs[0].type.shape[0]) for n in graph.nodes if n.op == "embedding"}
    env = {k: max(v // 2, 1) for k, v in capacity(graph).items()}  # a step halfway into the KV buffer
    step = is_step_graph(graph)
    samples = []
    for _ in range(count):
        sample = {}
        for v in graph.inputs:
            shape = S.evaluate_shape(v.type.shape, env)
            if v.type.dtype.is_float:
                sample[v.name] = rng.standard_normal(shape).astype(v.type.dtype.np)
            elif v.name in vocab:
                sample[v.name] = rng.integers(0, vocab[v.name], shape).astype(v.type.dtype.np)
            elif "position" in v.name:
                start = env.get(RUNTIME, shape[-1]) - shape[-1] if step else 0
                sample[v.name] = np.broadcast_to(start + np.arange(shape[-1]), shape).astype(v.type.dtype.np)
            else:
                sample[v.name] = np.ones(shape, v.type.dtype.np)
        samples.append(sample)
    return samples, f"synthetic ({count} seeded samples: normal floats, uniform token ids)"


def activation_bits(graph: Graph, P: Precision) -> dict[str, int]:
    """Bits of the buffer each node writes (io_parallel keeps each intermediate array)."""
    outputs = {v.name for v in graph.outputs}
    return {n.name: sum(numel(v) * P.of(v).width for v in n.outputs if v.name not in outputs) for n in graph.nodes}


def prepare(graph: Graph, options, device: FpgaDevice, progress: Callable[[str], None] = lambda s: None):
    """(Precision, calls per node, Plan, calibration samples, their source): every decision, nothing written."""
    use_capacity(capacity(graph))
    samples, source = calibration_samples(graph, options.calibration_inputs, options.calibration_samples)
    progress(f"calibrating on {source}")
    ranges = calibration_ranges(graph, samples)
    P = assign(graph, ranges, options.fpga_bits, Overrides.of(options.precision))
    calls = [(node, KERNELS[node.op].calls(node, P)) for node in graph.nodes]
    units = []
    for node, cs in calls:
        for call in cs:
            if call.kernel == "alias":
                continue
            bits = sum(numel(graph.constants[w]) * P.types[w].width for w in call.weights if w in graph.constants)
            units.append(unit_of(node, call, bits))
    progress(f"planning for {device.description}")
    return P, calls, plan(units, device, activation_bits(graph, P)), samples, source


def write(graph: Graph, options, device: FpgaDevice, out: Path, P: Precision, calls, p: Plan,
          samples: list[dict[str, np.ndarray]]) -> tuple[list[Path], list[str]]:
    """Write ``out/hls``; returns the files and the off-chip weights in call order."""
    use_capacity(capacity(graph))
    em = Emitter(graph, P, calls, p.offchip(), device.name, device.part, device.clock_mhz)
    hls = out / "hls"
    files = em.write(hls)
    codes = emulate.input_codes(graph, P, samples[0])
    files += em.testbench(hls, codes, emulate.run_codes(graph, P, codes))
    return files, em.offchip_order()
