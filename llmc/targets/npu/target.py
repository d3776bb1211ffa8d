"""``--target=npu``: partition, chunk and quantize a model into static-shape QDQ ONNX graphs.

    llmc compile small-cnn --target=npu --option calib=inputs.npz -o out/cnn
    llmc compile smollm2-135m --target=npu --chunk 128 -o out/npu

Lowering: the profile (``--device``, default ``qnn-htp``) and the partitioner tag every node
``npu`` or ``cpu``; the chunker cuts the graph at the tag boundaries; calibration gives every
NPU tensor a static range; each chunk is written per *variant* as an ONNX file with QDQ around
every NPU op (``chunks/[variant/]NN_npu.onnx``, ``NN_cpu.onnx``), all of them reading their
constants from one ``chunks/weights.bin``. A forward model has one variant (``forward``, the
graph's own static shapes); a generation step has ``prefill`` (``chunk`` tokens) and ``decode``
(one token), batch 1, whose graphs differ only in the sequence length and share every weight.
``schedule.json`` holds the chunk order, the tensors between chunks and the prefill/decode loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.codegen.target import Payload, Target, register_target
from llmc.errors import InputError, TargetError
from llmc.ir.graph import Graph
from llmc.targets.npu.runner import SCHEDULE


@dataclass
class NpuOptions:
    """device: an NPU profile (qnn-htp, generic-int8, or a profile .json); chunk: prefill tokens per NPU graph;
    calib: an .npz of model inputs (forward models); samples: calibration windows of an LLM (builtin text);
    qnn_context: also write each NPU chunk as a QNN context binary (needs onnxruntime-qnn)."""

    device: str = "qnn-htp"
    chunk: int = 256
    calib: str = ""
    samples: int = 8
    qnn_context: bool = False

    def __post_init__(self):
        if isinstance(self.qnn_context, str):
            self.qnn_context = self.qnn_context.lower() in ("1", "true", "yes")
        try:
            self.chunk, self.samples = int(self.chunk), int(self.samples)
        except ValueError:
            raise TargetError(f"--chunk and samples must be integers, got {self.chunk!r}, {self.samples!r}") from None
        if self.chunk < 2 or self.samples < 1:
            raise TargetError(f"--chunk must be at least 2 tokens and samples at least 1 "
                              f"(got {self.chunk}, {self.samples})")


class NpuTarget(Target):
    name = "npu"
    description = ("static-shape QDQ ONNX chunks for an NPU (QNN HTP profile), CPU fallback chunks, "
                   "fixed-size prefill; runs on onnxruntime")
    Options = NpuOptions
    default_level = "O2"

    @property
    def pipelines(self) -> dict[str, list[str]]:
        from llmc.passes import PIPELINES

        return {level: PIPELINES[level] for level in ("O0", "O1", "O2")}

    def pass_options(self, options) -> dict:
        """Fusion folds batch norms into convolutions only: an NPU chunk is made of single ops."""
        return {"fuse": {"rules": (), "horizontal": False, "fold": True}}

    def quant_formats(self) -> tuple[str, ...]:
        return ()  # the NPU recipe quantizes for itself (uint16/uint8 activations, int8 weights)

    def check(self, graph: Graph, options: NpuOptions) -> None:
        from llmc.targets.npu.profiles import get_profile

        get_profile(options.device)
        _need_onnx()
        fused = [n for n in graph.nodes if n.op == "fused"]
        if fused:
            raise TargetError(f"the npu target runs single ops; {fused[0].name} is a fused node",
                              hint="compile at -O1 or with the npu target's own -O2")

    def lower(self, graph: Graph, options: NpuOptions, out: Path) -> Payload:
        from llmc.targets.npu.build import build

        return build(graph, options, out)

    def can_run(self) -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def run(self, artifact: Path, inputs) -> dict[str, np.ndarray]:
        from llmc.targets.npu.runner import Session

        schedule = json.loads((Path(artifact) / SCHEDULE).read_text())
        if "forward" not in schedule["variants"]:
            raise InputError("this NPU artifact is a generation step", hint="use `llmc generate` on it")
        names = schedule["inputs"]
        missing, extra = [n for n in names if n not in inputs], [n for n in inputs if n not in names]
        if missing or extra:
            raise InputError(f"inputs do not match the model: missing {missing}, unexpected {extra}",
                             hint=f"the model's inputs are {names}")
        values = Session(artifact).run("forward", {n: np.asarray(inputs[n]) for n in names})
        return {n: values[n] for n in schedule["outputs"]}

    def step_runner(self, artifact: Path):
        from llmc.targets.npu.runner import Session, StepRunner

        return StepRunner(Session(artifact))


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise TargetError("the npu target needs the onnx and onnxruntime packages",
                          hint="pip install onnx onnxruntime (and onnxruntime-qnn for the QNN EP: pip install 'llmc[npu]')") from None


register_target(NpuTarget())
