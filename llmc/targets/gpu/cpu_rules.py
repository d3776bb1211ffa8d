"""CPU schedules: ordered rules (dlight ``ScheduleRule``s) that return None when they don't apply.

    LanePartials     a decode step's attention scores: cache rows summed into vector lanes, then
                     the lanes, in one kernel.
    Dense            one multiply-accumulate block (matmul, packed linear, batched attention
                     products) and elementwise producers/epilogues: rows padded to the register
                     tile, output tiled MR x NR with NR-wide vector accumulators kept in registers
                     over the whole reduction, output panels in parallel, epilogue fused into
                     the write-back.
    Conv             2-D convolutions: channel x column register tiles, rows in parallel.
    VectorRows       softmax, layer norm, rms norm and other reduce-then-map kernels over rows:
                     rows in parallel, each row's reductions summed in vector lanes.
    dlight Reduction the reduce-then-map kernels VectorRows cannot split into lanes.
    RowReduction     a lone reduction (reduce_sum, pooling, convolution, ...): parallel over
                     the output, reduction loops innermost.
    Elementwise      everything injective: producers inlined, parallel outer loop, vector inner.

The accumulator tile is a ``global``-scope cache: this TVM allocates ``local`` buffers inside
parallel loops through ``TVMBackendAllocWorkspace`` and LLVM then keeps the tile in memory,
while the ``global`` tile (compacted to MR x NR) is promoted to registers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.analysis.common_analysis import collect_block_iter_vars_used_in_access_region

from llmc.codegen.tvm.ops_linalg import WEIGHT_STAGE
from llmc.codegen.tvm.ops_quant import GEMV, GEMV_PARTIAL
from llmc.codegen.tvm.ops_transformer import SCORE_PARTIALS, SCORES
from llmc.targets.gpu.cpu_isa import CpuIsa, cpu_isa

# What TVM's schedule primitives raise when a step does not apply (tvm errors are RuntimeErrors).
SCHEDULE_ERRORS = (RuntimeError, ValueError, AssertionError)

# A parallel loop costs a few microseconds to launch; a kernel with less work than this runs on one thread.
PARALLEL_MACS = 1 << 18      # multiply-adds (products, convolutions)
PARALLEL_ELEMENTS = 1 << 14  # elements computed or reduced (elementwise and row kernels)


def lanes(target, dtype_bits: int = 32) -> int:
    return cpu_isa(target).lanes(dtype_bits)


def panel_width(target) -> int:
    """Output features per weight panel: the register tile's width (see ``cpu_isa``)."""
    return cpu_isa(target).panel_width()


def _extent(sch, loop) -> int | tirx.PrimExpr:
    e = sch.get(loop).extent
    return int(e) if isinstance(e, tirx.IntImm) else e


def _parallel(sch, loops, work_per_task: int, enough: int) -> None:
    """Fuse ``loops`` and run them in parallel when there are at least two iterations and the
    kernel's work (iterations x ``work_per_task``) is at least ``enough``, or the count is symbolic."""
    if not loops:
        return
    loops = _one_symbolic(sch, loops)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    tasks = _extent(sch, fused)
    if not isinstance(tasks, int) or (tasks >= 2 and tasks * work_per_task >= enough):
        sch.parallel(fused)


def _unit(extent) -> bool:
    return isinstance(extent, tirx.IntImm) and int(extent) == 1


def _one_symbolic(sch, loops) -> list:
    """The loops to fuse into one parallel loop, with at most one symbolic extent among them.

    Fusing two symbolic extents makes every index a division by a product of unknowns (the
    fused loop's decomposition), which TVM lowers into expressions LLVM took 25 s to compile
    per kernel (a prefill's score product over ``batch`` x rows x keys). The static loops and
    the innermost symbolic one (rows or keys, where the work is; ``batch`` is outermost) are
    moved out and run in parallel; the other symbolic loops run inside each task.
    """
    symbolic = [loop for loop in loops if not isinstance(_extent(sch, loop), int)]
    if len(symbolic) < 2:
        return loops
    static = [loop for loop in loops if isinstance(_extent(sch, loop), int)]
    try:
        sch.reorder(*static, symbolic[-1], *symbolic[:-1])
    except SCHEDULE_ERRORS:
        return loops[: loops.index(symbolic[0]) + 1]
    return [*static, symbolic[-1]]


def _work(sch, loops) -> int:
    """Iterations of ``loops`` (one under another); a symbolic extent counts as plenty."""
    return math.prod(e if isinstance(e := _extent(sch, loop), int) else PARALLEL_MACS for loop in loops)


def inline_elementwise(sch) -> None:
    """Inline every elementwise block that is not a function output into its consumers."""
    _inline_all(sch, None)


def _inline_all(sch, block, keep: str | None = None) -> None:
    """Inline every block but ``block``, a block named ``keep`` and the function's outputs into their neighbours."""
    changed = True
    while changed:
        changed = False
        for info in normalize_prim_func(sch) or []:
            name = sch.get(info.block_rv).name_hint
            if (block is not None and name == sch.get(block).name_hint) or name == keep:
                continue
            block_rv = info.block_rv
            if not sch.get_consumers(block_rv) or not info.is_injective():
                continue
            try:
                sch.compute_inline(block_rv)
                changed = True
                break
            except SCHEDULE_ERRORS:
                continue



def _open(func, target):
    """A schedule of ``func`` and its normalized blocks, or (None, None) when not an llvm PrimFunc
    (the infos are also None when TVM cannot normalize the function)."""
    if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
        return None, None
    sch = s_tir.Schedule(func)
    return sch, normalize_prim_func(sch)

class LanePartials(dl.ScheduleRule):
    """A decode step's attention scores (``cache_scores``, see the TVM attention lowering): parallel
    over (batch, head), keys in order, ``KEYS_AT_ONCE`` at a time: the chunks of each key's cache row
    summed into vector lanes (every row read once, contiguously, in whole vectors; the keys' sums
    are independent chains that overlap, where one key's chain would wait on each multiply-add),
    then each key's lanes summed and scaled."""

    KEYS_AT_ONCE = 4

    def apply(self, func, target, _tunable):
        sch, infos = _open(func, target)
        if infos is None or sorted(sch.get(b.block_rv).name_hint for b in infos) != sorted([SCORES, SCORE_PARTIALS]):
            return None
        partial, scores = sch.get_sblock(SCORE_PARTIALS), sch.get_sblock(SCORES)
        *spatial, _lane = sch.get_loops(scores)  # (batch, head, key, unit): unit loops are dropped at batch 1
        *heads, j = [loop for loop in spatial if _extent(sch, loop) != 1]
        if heads:
            sch.parallel(sch.fuse(*heads) if len(heads) > 1 else heads[0])
        if _whole_vectors(_extent(sch, j), self.KEYS_AT_ONCE):
            j, _ = sch.split(j, [None, self.KEYS_AT_ONCE])
        sch.compute_at(partial, j, preserve_unit_loops=True)
        chunked = any(iv.iter_type == tirx.IterVar.CommReduce and not _unit(iv.dom.extent)
                      for iv in sch.get(partial).iter_vars)
        loops = sch.get_loops(partial)
        *_, key, lane = loops[:-1] if chunked else loops  # ..., key, lane, [chunk]
        if chunked:
            sch.reorder(loops[-1], key, lane)
        if _extent(sch, key) != 1:
            sch.unroll(key)
        sch.vectorize(lane)
        if chunked:
            sch.decompose_reduction(partial, loops[-1])
        return sch


class QuantGemv(dl.ScheduleRule):
    """A decode step's product with packed low-bit weights (``quantized_gemv``): panels of output
    features in parallel; per group, the partial sums of one panel computed with the reduction
    loop outside and the P output features as one vector, then scaled into the result. The input's
    group sums are computed once, before the panels (inside each panel they were a scalar loop per
    group that cost 20% of a SmolLM2 W4 decode step)."""

    def apply(self, func, target, _tunable):
        sch, infos = _open(func, target)
        if infos is None:
            return None
        try:
            y, part = sch.get_sblock(GEMV), sch.get_sblock(GEMV_PARTIAL)
        except SCHEDULE_ERRORS:
            return None
        if len(sch.get_loops(y)) < 3:  # a single panel and no batch: unit loops were dropped
            sch.add_unit_loop(sch.get_loops(y)[0])
        *outer, ji, g = sch.get_loops(y)  # (batch..., panel), output features, groups
        width = _extent(sch, ji)
        if width != int(sch.get(y).writes[0].source.shape[-1]):  # a unit loop was dropped: roles unclear
            return None
        sch.reorder(*outer, g, ji)
        sch.compute_at(part, g, preserve_unit_loops=True)
        vec = lanes(target, _bits(sch.get(y)))
        for consumer in sch.get_consumers(y):
            sch.reverse_compute_at(consumer, outer[-1])
            if _extent(sch, sch.get_loops(consumer)[-1]) == width:
                _vectorize(sch, sch.get_loops(consumer)[-1], vec)
        _parallel(sch, outer, _work(sch, [g]) * _work(sch, sch.get_loops(part)[-2:]), PARALLEL_MACS)
        ji_p, kk = sch.get_loops(part)[-2:]
        sch.reorder(kk, ji_p)
        _vectorize(sch, ji_p, vec)
        sch.decompose_reduction(part, kk)
        per = _codes_per_word(sch.get(part))
        if per and isinstance(_extent(sch, kk), int) and _extent(sch, kk) % per == 0:
            sch.unroll(sch.split(kk, [None, per])[1])  # one word load, `per` constant shifts
        _vectorize(sch, sch.get_loops(y)[-1], vec)
        sch.decompose_reduction(y, g)
        return sch


def _codes_per_word(block) -> int | None:
    """Codes per packed word of a ``quantized_gemv`` partial block (from the shift's modulus), if visible."""
    found = []
    tvm_ffi.structural_walk(block.body, (tirx.FloorMod, lambda m: found.append(m.b)))
    values = [int(b.value) for b in found if isinstance(b, tirx.IntImm)]
    return values[0] if values else None


class Dense(dl.ScheduleRule):
    """Register-tiled matrix product with fused epilogue (see module docstring).

    Loop roles come from the operands: the last spatial loop is the vector (output feature)
    loop; when the weight operand is also indexed by the loop before it, that loop walks
    weight panels (llmc's packed linear) and the rows are the loop before that; otherwise the
    loop before the vector loop is the rows and the vector loop is split into panels.
    """

    def apply(self, func, target, _tunable):
        sch, infos = _open(func, target)
        if infos is None:
            return None
        reductions = [b for b in infos if not b.is_injective()]
        if len(reductions) != 1 or reductions[0].dom_kind().count("R") != 1 or not reductions[0].dom_kind().endswith("SR"):
            return None
        block = reductions[0].block_rv
        _inline_all(sch, block, keep=WEIGHT_STAGE)
        if len([b for b in normalize_prim_func(sch) if not b.is_injective()]) != 1 or not _is_mac(sch.get(block)):
            return None
        isa = cpu_isa(target)
        vec = isa.lanes(_bits(sch.get(block)))
        loops = sch.get_loops(block)
        spatial = len(loops) - 1
        packed = spatial >= 2 and _weight_indexed_by_panel(sch.get(block))
        n = _extent(sch, loops[spatial - 1])
        nr = n if packed else _panel(n, vec, isa)
        if nr is None or (packed and not isinstance(n, int)) or nr % vec:
            return None
        row = spatial - (3 if packed else 2)
        rows = _extent(sch, loops[row]) if row >= 0 else 1
        mr = isa.tile_rows(rows if isinstance(rows, int) else None, nr // vec) if rows != 1 else 1
        pads = [1] * spatial + [1]
        if mr > 1:
            pads[row] = mr
        if not packed and (not isinstance(n, int) or n % nr):
            pads[spatial - 1] = nr  # the vector loop must never run past the output
        if any(p > 1 for p in pads):
            try:
                sch.pad_einsum(block, pads)
            except SCHEDULE_ERRORS:
                return None
        return _tile(sch, block, Tile(row if mr > 1 else None, mr, nr, vec, packed))


@dataclass(frozen=True)
class Tile:
    """A register tile: ``rows`` x ``width`` outputs (``width`` in vectors of ``lanes``), ``row``
    the loop of the tile's rows (None: one row), ``packed`` when the weight is in panels."""

    row: int | None
    rows: int
    width: int
    lanes: int
    packed: bool


def _tile(sch, block, tile: Tile):
    """Tile ``block``: parallel (batch, panel, row-tile) x reduction x rows x vectors x lanes."""
    loops = sch.get_loops(block)
    *spatial, k = loops
    vector = spatial[-1]
    if tile.packed:
        panel = spatial[-2]
    else:
        panel, vector = sch.split(vector, [None, tile.width])
    rest = [l for idx, l in enumerate(spatial[: len(spatial) - (2 if tile.packed else 1)]) if idx != tile.row]
    if tile.row is not None:
        row_outer, row_inner = sch.split(spatial[tile.row], [None, tile.rows])
        sch.reorder(*rest, panel, row_outer, k, row_inner, vector)
        outer = [*rest, panel, row_outer]
    else:
        sch.reorder(*rest, panel, k, vector)
        outer, row_inner = [*rest, panel], None
    _parallel_padding(sch, block)
    _stage_weights(sch, k, tile.lanes)
    acc = sch.cache_write(block, 0, "global")
    _parallel(sch, outer, _work(sch, sch.get_loops(block)[len(outer):]), PARALLEL_MACS)
    inner = 3 if tile.row is not None else 2  # loops under the tile root: k, [rows], vector
    sch.reverse_compute_at(acc, sch.get_loops(block)[-inner - 1])
    _inline_epilogue(sch, acc)
    _vectorize(sch, sch.get_loops(acc)[-1], tile.lanes)
    _vectorize(sch, vector, tile.lanes)
    if row_inner is not None:
        sch.unroll(row_inner)
    sch.decompose_reduction(block, k)
    return sch


def _vectorize(sch, loop, vec: int) -> None:
    """Vectorize ``loop``, as unrolled whole vectors of ``vec`` lanes when it is a multiple of them
    (LLVM compiles a 24-lane vector on AVX2 into shuffles; three 8-lane ones are plain registers)."""
    extent = _extent(sch, loop)
    if isinstance(extent, int) and extent > vec and extent % vec == 0:
        vectors, loop = sch.split(loop, [None, vec])
        sch.unroll(vectors)
    elif not isinstance(extent, int):  # a symbolic multiple of vec: a loop of whole vectors
        _, loop = sch.split(loop, [None, vec])
    sch.vectorize(loop)


def _inline_epilogue(sch, acc) -> None:
    """Inline the accumulator's consumers (un-padding copy, bias, activation) into its write-back."""
    changed = True
    while changed:
        changed = False
        for consumer in sch.get_consumers(acc):
            try:
                sch.reverse_compute_inline(consumer)
                changed = True
            except SCHEDULE_ERRORS:
                pass


def _parallel_padding(sch, block) -> None:
    """The zero-padded copies ``pad_einsum`` made of the operands, in parallel over their rows."""
    for producer in sch.get_producers(block):
        if sch.get(producer).name_hint.endswith("_pad"):
            loops = sch.get_loops(producer)
            _parallel(sch, loops[:-1] if len(loops) > 1 else loops, _work(sch, loops[-1:]), PARALLEL_ELEMENTS)


def _stage_weights(sch, k, lanes: int) -> None:
    """Compute the product's weight stage (a quantized panel being dequantized) once per reduction
    step, as one vector every row of the register tile reads, instead of once per row."""
    try:
        stage = sch.get_sblock(WEIGHT_STAGE)
    except SCHEDULE_ERRORS:
        return
    sch.compute_at(stage, k, preserve_unit_loops=True)
    _vectorize(sch, sch.get_loops(stage)[-1], lanes)


def _weight_indexed_by_panel(block) -> bool:
    """The operand read with the last spatial iter is also indexed by the one before it."""
    spatial = [iv.var for iv in block.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [iv.var for iv in block.iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
    for read in block.reads:
        used = collect_block_iter_vars_used_in_access_region(block, read.region)
        if reduce[0] in used and spatial[-1] in used and read.source.same_as(block.writes[0].source) is False:
            return spatial[-2] in used
    return False


class Conv(dl.ScheduleRule):
    """A 2-D convolution (spatial loops [n,] c, h, w and 3 reduction loops) with elementwise
    producers (padding) and epilogues: output tiles of channels x vectors of columns, sized like
    the dense tile (``cpu_isa``), accumulated in registers over the whole reduction, (n, channel
    tile, row) in parallel."""

    def apply(self, func, target, _tunable):
        sch, infos = _open(func, target)
        if infos is None:
            return None
        reductions = [b for b in infos if not b.is_injective()]
        if len(reductions) != 1 or not _is_mac(sch.get(reductions[0].block_rv)):
            return None
        block = reductions[0].block_rv
        kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
        loops = sch.get_loops(block)
        spatial = len(kinds) - 3  # batch, channels, rows, columns (a unit batch may be gone)
        if spatial not in (3, 4) or kinds != [tirx.IterVar.DataPar] * spatial + [tirx.IterVar.CommReduce] * 3 \
                or len(loops) != len(kinds):
            return None
        *n, c, h, w = loops[:spatial]
        reduce = loops[spatial:]
        width, channels = _extent(sch, w), _extent(sch, c)
        if not isinstance(width, int) or not isinstance(channels, int):
            return None
        isa = cpu_isa(target)
        vec = isa.lanes(_bits(sch.get(block)))
        cols = _divisor(width, (*(v * vec for v in range(isa.panel_vectors, 0, -1)), 16, 14, 8, 7, 4, 2, 1))
        rows = _divisor(channels, range(isa.tile_rows(None, -(-cols // vec)), 0, -1))
        co, ci = sch.split(c, [None, rows])
        wo, wi = sch.split(w, [None, cols])
        sch.reorder(*n, co, h, wo, *reduce, ci, wi)
        acc = sch.cache_write(block, 0, "global")
        _parallel(sch, [*n, co, h], _work(sch, [wo, *reduce, ci, wi]), PARALLEL_MACS)
        sch.reverse_compute_at(acc, sch.get_loops(block)[1])
        for consumer in sch.get_consumers(acc):
            try:
                sch.reverse_compute_inline(consumer)
            except SCHEDULE_ERRORS:
                pass
        _vectorize(sch, sch.get_loops(acc)[-1], vec)
        _vectorize(sch, wi, vec)
        sch.unroll(ci)
        sch.decompose_reduction(block, sch.get_loops(block)[2])
        for producer in sch.get_producers(block):  # padding: a plain copy, parallel over (n, c)
            try:
                loops = sch.get_loops(producer)
                _parallel(sch, loops[:2], _work(sch, loops[2:]), PARALLEL_ELEMENTS)
            except SCHEDULE_ERRORS:
                pass
        return sch


class VectorRows(dl.ScheduleRule):
    """Reduce-then-map kernels over rows (softmax, layer norm, rms norm): rows in parallel, and
    each reduction over a row summed in vector lanes (``rfactor``: one partial per lane, then the
    lanes combined), so the row is read in whole vectors instead of one serial chain of scalars.
    Steps read by one consumer are inlined into it; a step read twice (softmax's exponentials) is
    computed once per row into a row buffer. Kernels with no reduction it can split this way go
    to dlight's ``Reduction`` (the next rule)."""

    def apply(self, func, target, _tunable):
        sch, infos = _open(func, target)
        if infos is None:
            return None
        _inline_single_use(sch)
        infos = normalize_prim_func(sch)
        if not infos or len(infos) < 2 or not infos[-1].is_injective() or all(b.is_injective() for b in infos):
            return None
        kinds = [b.dom_kind() for b in infos]
        lead = min(len(k) - len(k.lstrip("S")) for k in kinds)
        if not lead or any(b.is_injective() == ("R" in k) for b, k in zip(infos, kinds)):
            return None
        vec = lanes(target, _bits(sch.get(infos[-1].block_rv)))
        partials = []
        for info in infos:
            if not info.is_injective() and (rf := _lane_partials(sch, info, vec)) is not None:
                partials.append(rf)
        if not partials:
            return None
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        loops = sch.get_loops(blocks[-1])
        rows = sch.fuse(*loops[:lead]) if lead > 1 else loops[0]
        _parallel(sch, [rows], len(blocks) * _work(sch, loops[lead:]), PARALLEL_ELEMENTS)
        for block in reversed(blocks[:-1]):
            sch.compute_at(block, rows, preserve_unit_loops=True)
        names = {sch.get(rf).name_hint for rf in partials}
        for block in blocks:
            loops = sch.get_loops(block)
            if sch.get(block).name_hint in names:  # (rows, lane, units..., chunk): chunks outside, lanes as one vector
                sch.reorder(loops[-1], loops[1])
                sch.vectorize(loops[1])
                sch.decompose_reduction(block, loops[-1])
            elif len(loops) > 1 and _whole_vectors(_extent(sch, loops[-1]), vec):
                _vectorize(sch, loops[-1], vec)
        return sch


def _lane_partials(sch, info, vec: int):
    """Split a row reduction (innermost loop, a static multiple of ``vec``) into ``vec`` lane partials; the rfactor block."""
    if info.dom_kind().count("R") != 1 or not info.dom_kind().endswith("R"):
        return None
    k = sch.get_loops(info.block_rv)[-1]
    if not _whole_vectors(_extent(sch, k), vec):  # symbolic rows too: a cache read of 16 * ceil(ctx / 16) keys
        return None
    _, lane = sch.split(k, [None, vec])
    try:
        return sch.rfactor(lane, factor_axis=len(sch.get(info.block_rv).writes[0].region))
    except SCHEDULE_ERRORS:
        return None


def _inline_single_use(sch) -> None:
    """Inline every elementwise block read by exactly one other block into it."""
    changed = True
    while changed:
        changed = False
        for info in normalize_prim_func(sch) or []:
            if not info.is_injective() or len(sch.get_consumers(info.block_rv)) != 1:
                continue
            try:
                sch.compute_inline(info.block_rv)
                changed = True
                break
            except SCHEDULE_ERRORS:
                continue


class RowReduction(dl.ScheduleRule):
    """One reduction block (after inlining): parallel over its leading spatial loops."""

    def apply(self, func, target, _tunable):
        sch, infos = _open(func, target)
        if infos is None:
            return None
        _inline_all(sch, None)
        infos = normalize_prim_func(sch)
        if infos is None or len(infos) > 2 or infos[0].is_injective() or not infos[0].dom_kind().startswith("S"):
            return None
        block = infos[0].block_rv
        loops = sch.get_loops(block)
        leading = len(infos[0].dom_kind()) - len(infos[0].dom_kind().lstrip("S"))
        _parallel(sch, loops[:leading], _work(sch, loops[leading:]), PARALLEL_ELEMENTS)
        if len(infos) == 2:
            sch.reverse_compute_at(infos[1].block_rv, sch.get_loops(block)[0])
        return sch


class Elementwise(dl.ScheduleRule):
    """Injective kernels: one loop nest, parallel outside, vectorized inside."""

    def apply(self, func, target, _tunable):
        sch, infos = _open(func, target)
        if infos is None or not all(b.is_injective() for b in infos):
            return None
        _inline_all(sch, None)
        for info in normalize_prim_func(sch) or []:
            loops = sch.get_loops(info.block_rv)
            if not loops:
                continue
            vec = lanes(target, _bits(sch.get(info.block_rv)))
            if _whole_vectors(_extent(sch, loops[-1]), vec):
                _, v = sch.split(loops[-1], [None, vec])
                sch.vectorize(v)
                loops = sch.get_loops(info.block_rv)
            outer = loops[:-1] if len(loops) > 1 else loops
            _parallel(sch, outer, _work(sch, loops[len(outer):]), PARALLEL_ELEMENTS)
        return sch


def cpu_rules() -> list[dl.ScheduleRule]:
    """The CPU rules in order (the first that applies schedules a kernel)."""
    from llmc.targets.gpu.cpu_sparse_rules import sparse_rules

    return [LanePartials(), QuantGemv(), *sparse_rules(), Dense(), Conv(), Guarded(VectorRows()), Guarded(dl.cpu.Reduction()),
            RowReduction(), Elementwise()]


def cpu_schedule() -> tvm.transform.Pass:
    """The CPU rules in order; kernels no rule takes stay as LLVM compiles them, serially."""
    return dl.ApplyDefaultSchedule(*cpu_rules())


class Guarded(dl.ScheduleRule):
    """A rule that raises on kernels it does not handle (dlight's CPU ``Reduction`` on a fused
    residual add + norm that writes two tensors) declines them instead, so the next rule tries."""

    def __init__(self, rule: dl.ScheduleRule):
        self.rule = rule

    def apply(self, func, target, tunable):
        try:
            return self.rule.apply(func, target, tunable)
        except SCHEDULE_ERRORS:
            return None


def _whole_vectors(extent, vec: int) -> bool:
    """``extent`` is a positive multiple of ``vec``: static, or symbolic and provably so (``16 * ceil(ctx / 16)``)."""
    if isinstance(extent, int):
        return extent % vec == 0 and extent >= vec
    from tvm.sym.analyzer import Analyzer

    return Analyzer().can_prove_equal(tirx.floormod(extent, vec), 0)


def _is_mac(block) -> bool:
    """``C[...] = C[...] + A[...] * B[...]`` (possibly with casts)."""
    value = block.body.value if hasattr(block.body, "value") else None
    return isinstance(value, tirx.Add) and _strip_cast(value.b).__class__ is tirx.Mul


def _strip_cast(e):
    while isinstance(e, tirx.Cast):
        e = e.value
    return e


def _bits(block) -> int:
    return block.writes[0].source.dtype.bits if block.writes else 32


def _divisor(n: int, choices) -> int:
    return next(d for d in choices if n % d == 0)


def _panel(n, vec: int, isa: CpuIsa) -> int | None:
    """The output tile width: a panel of the ISA's vectors, or fewer vectors that divide ``n``
    (no padding), narrower when the output is narrower; None below one vector."""
    most = isa.panel_vectors
    if not isinstance(n, int):
        return most * vec
    if n < vec:
        return None
    if n < most * vec:
        return math.ceil(n / vec) * vec
    return next((v * vec for v in range(most, 0, -1) if n % (v * vec) == 0), most * vec)
