"""What the cpu and cuda targets share: check, lower through TVM, export, describe, run.

TVM's compiler is imported only when compiling: ``run`` works with the runtime alone.

Payload written into the artifact folder:

    model.so            TVM Relax VM executable (host code, and for cuda the embedded fatbin)
    tvm.json            runtime signature: inputs/outputs (TVM dtypes, symbolic shapes), weight
                        keys in parameter order and the file holding them, device
    params.safetensors  only when the target changed the weights' dtype (cuda --dtype float16):
                        the weights as the module takes them; otherwise the artifact's own
                        weights.safetensors is read at load time
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from llmc.codegen.target import Payload, Target
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph
from llmc.ir.tensor import CastWeight, write_safetensors
from llmc.targets.gpu.runtime import LIBRARY, SPEC, Session, StepRunner

WEIGHTS = "weights.safetensors"
# The vertical fusion rules the cpu takes by default. ``glu`` and ``epilogue`` make one kernel
# whose epilogue the Dense schedule leaves as a loop nest of its own after the tiled product
# (it reads the product through the panel reshape), which measured slower than TVM's separate
# vectorized epilogue kernel; they stay available (``llmc.passes.fusion``) and run on cuda.
CPU_FUSION_RULES = ("residual_norm", "layout", "conv_epilogue")
CAST_PARAMS = "params.safetensors"
DTYPES = {"float32": DType.f32, "float16": DType.f16, "bfloat16": DType.bf16}


class TvmTarget(Target):
    """Base of the TVM targets. Subclasses define the TVM target, schedules, export and checks."""

    device: ClassVar[str]
    # a generation artifact's batch-1 decode function (``entries``): on cpu its one-row products read
    # weights about 15% faster than the padded register tiles of the any-batch decode
    one_sequence_decode: ClassVar[bool] = False

    @property
    def pipelines(self):
        from llmc.passes import PIPELINES

        return {level: list(PIPELINES[level]) for level in ("O0", "O1", "O2")}

    default_level = "O2"

    def kernel_limits(self):
        """Two reducing stages per kernel (a product and the softmax or norm after it, or two
        products with an epilogue between): TVM builds and schedules such a body as one kernel."""
        from llmc.passes.fusion.legality import KernelLimits

        return KernelLimits(max_reductions=2)

    def pass_options(self, options: Any) -> dict[str, dict[str, Any]]:
        """On the cpu, the rules whose kernels measured faster than TVM's own grouping
        (``CPU_FUSION_RULES``); cuda takes every rule (dlight's matmul rules fuse epilogues)."""
        out = super().pass_options(options)
        if self.device == "cpu":
            out["fuse"]["rules"] = CPU_FUSION_RULES
        return out

    def device_name(self, options: Any) -> str | None:
        """cpu: this machine (measured once, cached); cuda: the data-sheet device of ``--arch``."""
        if self.device == "cpu":
            return "cpu"
        from llmc.codegen.devices.table import ARCH_DEVICES

        return ARCH_DEVICES.get(str(getattr(options, "arch", "")))

    def supported_ops(self) -> set[str]:
        from llmc.codegen.tvm.registry import lowered_ops

        return lowered_ops()

    def check(self, graph: Graph, options: Any) -> None:
        """Refuse before compiling: options this target cannot honour, ops with no lowering."""
        from llmc.codegen.tvm.lower import check_lowerable

        self.check_options(options)
        self.check_fused(graph)
        check_lowerable(graph)

    def check_options(self, options: Any) -> None:
        raise NotImplementedError

    def lower(self, graph: Graph, options: Any, out: Path) -> Payload:
        from llmc.codegen.tvm.build import build
        from llmc.codegen.tvm.lower import lower_graph

        self.check(graph, options)
        lower_options = self.lower_options(options)
        lowered = lower_graph(graph, lower_options, entries(graph, self.one_sequence_decode))
        target = self.tvm_target(options)
        built = build(lowered, target, self.schedule(options))
        out = Path(out)
        self.export(built.executable, out / LIBRARY, options)
        params_file = _write_params(graph, lowered, lower_options, out)
        spec = {
            "format": 1, "device": self.device,
            "inputs": [t.to_json() for t in lowered.inputs], "outputs": [t.to_json() for t in lowered.outputs],
            "params": {"file": params_file, "keys": [t.name for t in lowered.params]},
            "transform_params": built.transform, "entries": lowered.entries,
        }
        (out / SPEC).write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
        files = [LIBRARY, SPEC] + ([CAST_PARAMS] if params_file == CAST_PARAMS else [])
        facts = {
            "tvm": _tvm_version(), "device": self.device, "dtype": options.dtype,
            "kernels_per_call": {entry: len(calls) for entry, calls in built.calls.items()},
            "kernels_per_layer": {entry: kernels_per_layer(graph, calls, built.kernels) for entry, calls in built.calls.items()},
            "load_time_kernels": len(built.load_calls),
            "kernels": built.kernels, "unscheduled_kernels": built.unscheduled,
            "params": {"file": params_file, "count": len(lowered.params)},
            "device_code": self.device_code(out / LIBRARY, options, built),
        }
        return Payload(files=files, manifest=facts)

    def can_run(self) -> bool:
        try:
            import tvm
        except ImportError:
            return False
        return bool((tvm.cpu(0) if self.device == "cpu" else tvm.cuda(0)).exist)

    def run(self, artifact: Path, inputs) -> dict[str, np.ndarray]:
        return Session(artifact).run(inputs)

    def step_runner(self, artifact: Path) -> StepRunner:
        return StepRunner(Session(artifact))

    # -- what subclasses provide ------------------------------------------------------------

    def lower_options(self, options: Any):
        from llmc.codegen.tvm.context import LowerOptions

        dtype = DTYPES[options.dtype]
        return LowerOptions(float_dtype=None if dtype == DType.f32 else dtype)

    def tvm_target(self, options: Any):
        raise NotImplementedError

    def schedule(self, options: Any):
        raise NotImplementedError

    def export(self, executable, path: Path, options: Any) -> None:
        executable.export_library(str(path))

    def device_code(self, library: Path, options: Any, built) -> dict:
        raise NotImplementedError


def entries(graph: Graph, one_sequence: bool = False) -> dict[str, dict[str, int]]:
    """The module's functions: ``main``; or, for a generation step graph, ``prefill`` (any chunk
    length) and ``decode`` (compiled for one token: static sequence length, its own attention
    kernels), and with ``one_sequence`` ``decode1`` (one token of one sequence: static batch too,
    so products are scheduled for one output row instead of a register tile of padded rows)."""
    from llmc.frontend.decoder import is_step_graph

    if not is_step_graph(graph):
        return {"main": {}}
    return {"prefill": {}, **({"decode1": {"batch": 1, "seq": 1}} if one_sequence else {}), "decode": {"seq": 1}}


def kernels_per_layer(graph: Graph, calls: list[str], origins: dict[str, list[str]]) -> dict:
    """Kernels of one call inside and outside the decoder layers: ``outside`` counts the kernels
    whose IR nodes carry no layer (embeddings, final norm, head), ``per_layer`` the rest divided
    by the number of layers (TVM shares one kernel between identical layers, so a launch is
    attributed to the blocks as a whole, not to one layer)."""
    from llmc.codegen.tvm.lower import all_nodes

    layer_of: dict[str, int | None] = {}
    for node in all_nodes(graph):
        layer_of.setdefault(node.meta.origin or node.name, node.meta.layer)
    layers = {v for v in layer_of.values() if v is not None}
    inside = sum(1 for k in calls if any(layer_of.get(o) is not None for o in origins.get(k, [])))
    return {"layers": len(layers), "outside": len(calls) - inside,
            "per_layer": round(inside / len(layers), 2) if layers else 0}


def _write_params(graph: Graph, lowered, options, out: Path) -> str:
    """The file the runtime reads weights from; writes ``params.safetensors`` if dtypes changed."""
    from llmc.codegen.tvm.lower import body_constants

    consts = body_constants(graph, "")
    keys = [t.name for t in lowered.params]
    if all(options.dtype(consts[k].type.dtype) == consts[k].type.dtype for k in keys):
        return WEIGHTS
    write_safetensors(out / CAST_PARAMS, {k: CastWeight(consts[k].const, options.dtype(consts[k].type.dtype))
                                          for k in keys})
    return CAST_PARAMS


def _tvm_version() -> str:
    import tvm

    return tvm.__version__
