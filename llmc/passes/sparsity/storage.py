"""How a pruned weight is stored: N:M values + indices, or unstructured as a bitmap or CSR.

Unstructured weights take whichever of the two is smaller for their density: the bitmap costs
``4 * nnz + N * K / 8`` bytes (float32 values and one bit per weight), CSR (the ``linear_csr`` op
of the outlier decomposition: float16 values and int32 columns) ``6 * nnz``; CSR wins below a
density of 1/16. CSR rounds the kept weights to float16; its error is measured like any other.

N:M with a low-bit ``grid`` (sparse + 4-bit) quantizes the kept values by round-to-nearest with
the mask held fixed: the ``[N, J]`` values matrix is packed by ``llmc.ir.packing`` as a dense
weight would be (groups of ``grid.group`` consecutive kept weights), the indices packed beside it
(``linear_nm_q``). Pruned positions are absent, so they stay exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.ir import packing
from llmc.ir.ops.sparse import csr_arrays
from llmc.ir.ops.sparsity import compress_bitmap, compress_nm, index_grid
from llmc.ir.packing import Grid
from llmc.passes.sparsity.prune import parse_pattern

NM, BITMAP, CSR = "nm", "bitmap", "csr"


@dataclass
class Stored:
    """One weight's compressed tensors, the op that reads them and its attributes."""

    storage: str                   # nm, bitmap or csr
    op: str                        # linear_nm, linear_bitmap or linear_csr
    tensors: dict[str, np.ndarray]  # input name -> array, in the op's input order
    attrs: dict
    nnz: int
    shape: tuple[int, int]
    grid: Grid | None = None  # the kept values' low-bit grid (``linear_nm_q``), or float32 values

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the dense weight this replaces: float32, or the same grid packed over all K."""
        n, k = self.shape
        if self.grid is None:
            return n * k * 4
        return n * self.grid.words(k) * 4 + (1 if self.grid.sym else 2) * n * self.grid.groups(k) * 2

    @property
    def density(self) -> float:
        return self.nnz / max(self.shape[0] * self.shape[1], 1)

    @property
    def pattern(self) -> str:
        return f"{self.attrs['n']}:{self.attrs['m']}" if self.storage == NM else "unstructured"

    def label(self) -> str:
        if self.storage != NM:
            return self.storage
        return self.pattern + (f"+{format_name(self.grid)}" if self.grid is not None else "")


def format_name(grid: Grid) -> str:
    return f"w{grid.bits}" + (f"g{grid.group}" if grid.group else "")


def store(w: np.ndarray, pattern: str, grid: Grid | None = None) -> Stored:
    """The compact form of the pruned ``w`` [N, K] (zeros where pruned); with a ``grid`` (N:M only)
    its kept values are quantized (see the module docstring)."""
    rows, k = w.shape
    nnz = int(np.count_nonzero(w))
    nm = parse_pattern(pattern)
    if nm is not None:
        values, index = compress_nm(w, *nm)
        attrs = {"n": nm[0], "m": nm[1], "k": k}
        if grid is None:
            return Stored(NM, "linear_nm", {"values": values, "index": index}, attrs, nnz, (rows, k))
        q = packing.quantize(values, grid)
        tensors = {"words": q.words, "scale": q.scale, "minimum": q.minimum,
                   "index": packing.pack(index, index_grid(nm[1]).bits)}
        attrs = {**attrs, "bits": grid.bits, "group": grid.group}
        return Stored(NM, "linear_nm_q", tensors, attrs, nnz, (rows, k), grid)
    if 6 * nnz < 4 * nnz + rows * -(-k // 32) * 4:
        values, columns, indptr = csr_arrays(w, w != 0)
        return Stored(CSR, "linear_csr", {"values": values, "columns": columns, "indptr": indptr}, {"k": k},
                      nnz, (rows, k))
    values, mask, offsets = compress_bitmap(w)
    return Stored(BITMAP, "linear_bitmap", {"values": values, "mask": mask, "offsets": offsets}, {"k": k},
                  nnz, (rows, k))


def expanded(stored: Stored) -> np.ndarray:
    """The float32 matrix the stored tensors stand for (what every kernel computes with)."""
    from llmc.ir.ops.sparsity import expand_bitmap, expand_nm, expand_nm_q

    t, a = stored.tensors, stored.attrs
    if stored.op == "linear_nm_q":
        return expand_nm_q(*t.values(), a)
    if stored.storage == NM:
        return expand_nm(t["values"], t["index"], a["n"], a["m"], a["k"])
    if stored.storage == BITMAP:
        return expand_bitmap(t["values"], t["mask"], t["offsets"], a["k"])
    w = np.zeros(stored.shape, np.float32)
    rows = np.repeat(np.arange(stored.shape[0]), np.diff(t["indptr"]))
    w[rows, t["columns"]] = t["values"].astype(np.float32)
    return w
