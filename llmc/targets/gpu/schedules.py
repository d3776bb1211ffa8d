"""GPU schedules: TVM's dlight rules in order, then llmc's last-resort rule.

Order matters: the first rule that applies schedules the kernel. Matmul (tiled through shared
memory; without tensor cores, see ``MatmulNoTensorCore``) before GEMV and LowBatchGEMV (decode-shaped products), the reduction family before
RMSNorm and Transpose, and Fallback (one thread per element, reductions serial per thread) last.
``SerialKernel`` catches the kernels Fallback refuses (several reductions in one kernel, as
``fused`` IR nodes can hold): it runs the whole kernel in one thread; correct, slow, and
reported in the manifest so a missing schedule is visible.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from llmc.codegen.tvm.build import SERIAL_ATTR
from llmc.codegen.tvm.lower import FUSED_PREFIX
from llmc.targets.gpu.cpu_rules import SCHEDULE_ERRORS


class SerialKernel(dl.ScheduleRule):
    """Run the whole kernel in one GPU thread: every block computed under one unit loop."""

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "cuda":
            return None
        sch = s_tir.Schedule(func.with_attr(SERIAL_ATTR, True))
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if not blocks:
            return None
        loops = sch.get_loops(blocks[-1])
        unit = sch.add_unit_loop(loops[0] if loops else blocks[-1])
        for block in reversed(blocks[:-1]):
            sch.compute_at(block, unit, preserve_unit_loops=True)
        bx, tx = sch.split(unit, [1, 1])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        return sch


class MatmulNoTensorCore(dl.ScheduleRule):
    """dlight's Matmul without its tensor-core path, which it takes only for an arch >= sm_70:
    in the PyPI TVM 0.27 build, tensorizing a float16 matmul crashes the process (a segfault
    inside ``Tensorize``), and merely reaching that path imports TVM's tensor intrinsics, a
    minute of work. So the rule sees the target as a pre-Volta one (sm_60: its arch matters to
    the rule for that choice only) and every matmul takes dlight's CUDA-core tiling
    (shared-memory staging, vthreads, padded einsum)."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        config = {**{k: v for k, v in target.export().items() if k != "host"}, "arch": "sm_60"}
        return dl.gpu.Matmul().apply(func, tvm.target.Target(config), tunable)


class AlreadyScheduled(dl.ScheduleRule):
    """Kernels TVM generated already bound to GPU threads (e.g. its scan for cumsum): kept as they are."""

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not _thread_bound(func):
            return None
        return s_tir.Schedule(func)


class DecodeGEMV(dl.ScheduleRule):
    """dlight's LowBatchGEMV for a decode step's products (output [batch, 1..., N]: one row per
    sequence, the batch symbolic), which the Matmul rule would otherwise tile as a GEMM; with a
    packed weight, its dequantization is inlined into the GEMV's loads."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or not _one_row_per_batch(func):
            return None
        return dl.gpu.LowBatchGEMV().apply(func, target, tunable)


def _one_row_per_batch(func) -> bool:
    """The kernel's last block writes [batch (symbolic), 1, ..., N]."""
    writes = []
    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, lambda b: writes.extend(w.source for w in b.writes)))
    if not writes or len(writes[-1].shape) < 2:
        return False
    shape = writes[-1].shape
    unit = all(isinstance(d, tirx.IntImm) and d.value == 1 for d in shape[1:-1])
    return unit and not isinstance(shape[0], tirx.IntImm)


def gpu_rules() -> list[dl.ScheduleRule]:
    return [
        AlreadyScheduled(), DecodeGEMV(), MatmulNoTensorCore(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(),
        dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.RMSNorm(), dl.gpu.Transpose(), dl.gpu.Fallback(), SerialKernel(),
    ]


def gpu_schedule() -> tvm.transform.Pass:
    """Schedule every kernel with the first rule that applies (a rule that raises does not apply).

    The kernel of a fused IR node is first offered to the rules as one launch: its elementwise
    steps inlined (so dlight sees one epilogue), and a schedule that splits it into several
    grid launches refused. If no rule makes one launch of it, it takes the first rule that
    applies at all (dlight then launches it as a few grids, in order; ``SerialKernel`` cannot
    help there: a single thread would need the kernel's intermediates, of symbolic size, in
    global memory, which CUDA code cannot allocate).
    """

    @tvm.transform.module_pass(opt_level=0, name="LlmcGpuSchedule")
    def schedule(mod, _ctx):
        target = tvm.target.Target.current()
        general = [_Guarded(rule) for rule in gpu_rules()]
        one_launch = [_Guarded(_OneLaunch(rule)) for rule in gpu_rules() if not isinstance(rule, SerialKernel)]
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
                continue
            for rule in (one_launch + general) if gvar.name_hint.startswith(FUSED_PREFIX) else general:
                sch = rule.apply(func, target, False)
                if sch is not None:
                    mod[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
                    break
        return mod

    return schedule


class _OneLaunch(dl.ScheduleRule):
    """``rule`` on the kernel with its elementwise steps inlined, accepted only as one launch."""

    def __init__(self, rule: dl.ScheduleRule):
        self.rule = rule

    def apply(self, func, target, tunable):
        from llmc.targets.gpu.cpu_rules import inline_elementwise

        sch = s_tir.Schedule(func)
        inline_elementwise(sch)
        result = self.rule.apply(sch.mod["main"], target, tunable)
        return result if result is None or _launches(result.mod["main"]) == 1 else None


def _launches(func) -> int:
    """Device kernels a scheduled PrimFunc becomes: one per loop nest bound to blockIdx.x."""
    count = []
    tvm_ffi.structural_walk(func.body, (tirx.For, lambda f: count.append(
        f.kind == tirx.ForKind.THREAD_BINDING and f.thread_binding is not None
        and f.thread_binding.thread_tag == "blockIdx.x")))
    return sum(count)


class _Guarded(dl.ScheduleRule):
    """A rule whose failure on a kernel means "does not apply": dlight rules assert on kernels
    they do not expect, and some leave shared/local scratch of symbolic size, which CUDA cannot
    allocate; such a schedule is refused and the next rule tries."""

    def __init__(self, rule: dl.ScheduleRule):
        self.rule = rule

    def apply(self, func, target, tunable):
        try:
            sch = self.rule.apply(func, target, tunable)
        except (*SCHEDULE_ERRORS, IndexError):
            return None
        return sch if sch is None or _static_scratch(sch.mod["main"]) else None


def _thread_bound(func) -> bool:
    found = []
    tvm_ffi.structural_walk(func.body, (tirx.For, lambda f: found.append(f.kind == tirx.ForKind.THREAD_BINDING)))
    return any(found)


def _static_scratch(func) -> bool:
    """Every shared/local buffer the kernel allocates has a constant size once TVM has compacted
    it to the region each thread block uses (as the build will)."""
    mod = tvm.transform.Sequential([
        s_tir.transform.LowerCrossThreadReduction(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
    ])(tvm.IRModule({"main": func}))
    sizes = []

    def visit(block):
        for buf in block.alloc_buffers:
            if buf.scope() != "global":
                sizes.append(all(isinstance(d, tirx.IntImm) for d in buf.shape))

    tvm_ffi.structural_walk(mod["main"].body, (s_tir.SBlock, visit))
    return all(sizes)
