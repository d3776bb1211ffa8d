"""CPU schedule of the decode N:M product (``llmc.codegen.tvm.ops_sparsity``), ahead of ``Dense``.

    SparseNM      ``linear_nm`` over weight panels, one row per sequence: panels in parallel, then
                  the kept weights j, and the P output features of a panel as one vector (P
                  values, P indices and a gather of P inputs per step).

The other sparse products (N:M prefill, bitmap) are dense products with a weight stage, which
the ``Dense`` rule schedules.
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl

from llmc.codegen.tvm.ops_sparsity import NM_BLOCK
from llmc.targets.gpu.cpu_rules import (
    PARALLEL_MACS,
    SCHEDULE_ERRORS,
    _extent,
    _open,
    _parallel,
    _vectorize,
    _work,
    lanes,
)


def _block(sch, name):
    try:
        return sch.get_sblock(name)
    except SCHEDULE_ERRORS:
        return None


class SparseNM(dl.ScheduleRule):
    def apply(self, func, target, _tunable):
        sch, _ = _open(func, target)
        block = _block(sch, NM_BLOCK) if sch is not None else None
        if block is None:
            return None
        *spatial, j = sch.get_loops(block)
        if len(spatial) < 2:
            return None
        *rows, panel, ji = spatial
        sch.reorder(panel, *rows, j, ji)
        _parallel(sch, [panel], _work(sch, [*rows, j, ji]), PARALLEL_MACS)
        vec = lanes(target)
        width = _extent(sch, ji)
        if isinstance(width, int) and width % vec == 0:
            _vectorize(sch, ji, vec)
        sch.decompose_reduction(block, j)
        return sch


def sparse_rules() -> list[dl.ScheduleRule]:
    return [SparseNM()]
