"""QDQ agreement: each NPU op as ONNX Runtime runs it against llmc's reference op running the
same QDQ numerics (``qdq.reference_chunk``), in LSB of the op's output quantization step.

    by_dtype, by_op = agreement(plan, artifact, "forward", feeds)   # {"uint16": max LSB}, {"linear": ...}

The schedule runs on ONNX Runtime with every NPU tensor exposed as an output; each NPU node's
reference then reads the very (dequantized) inputs its ONNX form read, so a difference is
that op's own (float summation order, a rounding tie going the other way), not one carried
from the ops before it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from llmc.targets.npu.build import NpuPlan
from llmc.targets.npu.qdq import reference_chunk
from llmc.targets.npu.runner import Session


def agreement(plan: NpuPlan, artifact: Path, variant: str, feeds: dict[str, np.ndarray],
              provider: str = "cpu") -> tuple[dict[str, float], dict[str, float]]:
    """Largest difference in LSB over every NPU op's output, per activation format and per op kind."""
    session = _exposing(Path(artifact), plan, provider)
    values = session.run(variant, feeds)
    static = plan.variants[variant]
    worst: dict[str, float] = {}
    by_op: dict[str, float] = {}
    for chunk in plan.chunks:
        if chunk.device != "npu":
            continue
        for node in chunk.nodes:
            inputs = {v.name: values[v.name] for v in node.inputs if not v.is_const}
            mine = reference_chunk([node], inputs, plan.qdq, static.env)
            for v in node.outputs:
                p = plan.qdq.act[v.name]
                lsb = float(np.abs(values[v.name] - mine[v.name]).max() / p.scale)
                worst[p.dtype] = max(worst.get(p.dtype, 0.0), lsb)
                by_op[node.op] = max(by_op.get(node.op, 0.0), lsb)
    return worst, by_op


def _exposing(artifact: Path, plan: NpuPlan, provider: str) -> Session:
    """A session whose NPU chunks also output every NPU value (models rewritten in memory)."""
    session = Session(artifact, provider)
    for variant in session.schedule["variants"].values():
        for entry, chunk in zip(variant["chunks"], plan.chunks):
            if entry["device"] != "npu":
                continue
            path = artifact / entry["file"]
            model = onnx.load(str(path), load_external_data=False)
            known = {o.name for o in model.graph.output}
            for node in chunk.nodes:
                for v in node.outputs:
                    if v.name not in known:
                        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(v.name))
                        entry["outputs"].append(v.name)
            session.models[entry["file"]] = model.SerializeToString()
    return session
