"""Relax module -> scheduled TIR kernels -> TVM executable, with the kernel books kept.

The Relax pipeline is TVM's own (lift parameter transforms, legalize, fuse), run step by step
so that the kernel -> IR node map can be read between ``FuseOps`` and ``FuseTIR`` (see
``trace``), and so that each target schedules every kernel with its own ordered rules before
the rest of TVM's build (memory planning, VM code generation, TIR lowering, codegen).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.relax.backend.cuda import pipeline as cuda_pipeline

from llmc.codegen.tvm import trace
from llmc.codegen.tvm.lower import Lowered

TRANSFORMS = ("main_transform_params", "transform_params")  # one entry's weight transform; several entries' shared one
SERIAL_ATTR = "llmc.serial_kernel"  # set by a target's last-resort rule that runs a kernel in one thread


@dataclass
class Built:
    """A compiled module and its kernel books.

    calls: entry function -> the TIR kernels one call of it launches, in order (its length is the
           number of kernels per call).
    load_calls: the kernels the weight transform launches once when weights are loaded.
    transform: that function's name (``main_transform_params``; ``transform_params`` when
           several entries share it), or None when no weight is transformed.
    kernels: every kernel -> the origins of the IR nodes it computes.
    unscheduled: kernels no schedule rule took (compiled as TVM lowers them by default).
    serial: kernels only a last-resort single-thread rule could schedule.
    """

    executable: relax.VMExecutable
    calls: dict[str, list[str]]
    load_calls: list[str]
    kernels: dict[str, list[str]]
    transform: str | None
    unscheduled: list[str]
    serial: list[str]


def optimize(lowered: Lowered, target: tvm.target.Target) -> tuple[tvm.IRModule, dict]:
    """Lift weight transforms, legalize, fuse; returns the fused module and kernel -> origins."""
    mod = lowered.mod
    with target:
        mod = tvm.transform.Sequential([
            relax.backend.DispatchSortScan(),  # cumsum and friends: TVM's per-target scan kernels
            relax.transform.LiftTransformParams(shared_transform=len(lowered.entries) > 1),
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
        ])(mod)
        keys = {}
        for func in _relax_functions(mod):
            keys.update(trace.call_tir_keys(func))
        unfused = mod
        mod = relax.transform.FuseOps()(mod)
        tags = trace.kernel_tags(mod, keys)
        for name in _entry_functions(mod, lowered):
            for kernel, more in trace.absorbed_tags(mod, unfused[name], mod[name], keys).items():
                tags.setdefault(kernel, set()).update(more)
        mod = tvm.transform.Sequential([relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()])(mod)
    origins = {k: sorted({lowered.origins[t] for t in v if t in lowered.origins}) for k, v in tags.items()}
    return mod, origins


def build(lowered: Lowered, target: tvm.target.Target, schedule: tvm.transform.Pass) -> Built:
    """Optimize, schedule every kernel with ``schedule`` (run under ``target``), and compile."""
    mod, origins = optimize(lowered, target)
    with target:
        mod = relax.transform.RewriteDataflowReshape()(schedule(mod))  # reshapes become views, not kernels
    mod = relax.transform.DeadCodeElimination(list(_entry_functions(mod, lowered)))(mod)  # kernels nothing calls
    prim = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    unscheduled = sorted(k for k, f in prim.items() if not (f.attrs and f.attrs.get("tirx.is_scheduled")))
    serial = sorted(k for k, f in prim.items() if f.attrs and f.attrs.get(SERIAL_ATTR))
    calls = {entry: trace.tir_calls(mod[entry]) for entry in lowered.entries}
    transform = next((n for n in _entry_functions(mod, lowered) if n in TRANSFORMS), None)
    load_calls = trace.tir_calls(mod[transform]) if transform else []
    backend = cpu_pipeline if target.kind.name == "llvm" else cuda_pipeline
    rest = tvm.transform.Sequential(backend.dataflow_lower_passes(target) + backend.finalize_passes(target))
    executable = tvm.compile(mod, target, relax_pipeline=rest)
    launched = {k for entry_calls in calls.values() for k in entry_calls}
    kernels = {k: origins.get(k, []) for k in sorted(launched | set(load_calls))}
    return Built(executable, calls, load_calls, kernels, transform, unscheduled, serial)


def _entry_functions(mod: tvm.IRModule, lowered: Lowered) -> list[str]:
    names = {*lowered.entries, *TRANSFORMS}
    return [g.name_hint for g in mod.get_global_vars() if g.name_hint in names]


def _relax_functions(mod: tvm.IRModule):
    return [f for _, f in mod.functions_items() if isinstance(f, relax.Function)]
