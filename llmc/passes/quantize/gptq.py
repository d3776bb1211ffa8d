"""GPTQ (Frantar et al. 2022): quantize ``W[n, k]`` one input column at a time, moving each column's rounding
error onto the columns not yet quantized so that the layer output on the calibration inputs changes least.

With ``H`` the mean of ``x x^T`` over calibration tokens, quantizing column ``i`` while the set ``F`` of
columns is still free changes the others by the optimal (OBS) update

    W[:, F] -= (W[:, i] - q) / Hinv_F[i, i] * Hinv_F[i, F]        Hinv_F = (H restricted to F)^-1

and row ``i`` of the upper Cholesky factor ``U`` of ``H^-1`` (in processing order) is exactly
``Hinv_F[i, F] / sqrt(Hinv_F[i, i])``, so one factorization serves every step. Updates of the columns
after a block of ``block`` columns are applied once per block (lazy batch updates: the same numbers).

Invariant: every code is computed against the float16-exact scale/minimum its group stores, and the
returned ``Packed`` holds codes in the original column order, so its groups stay contiguous ranges of ``k``.
Which weights fit a group's grid:

- ``act_order=False`` (classic GPTQ): the weights of the group as they are, error updates included, when
  its first column is processed. Blocks are then rounded to whole groups, so a group never straddles two.
- ``act_order=True`` (columns by decreasing ``H[i, i]``, "static groups"): every group's grid is fitted
  once, from the weights before any update, since its columns are processed far apart.

Each group's range is clipped where that lowers its error weighted by the inputs' mean squares
(``packing.fit`` with ``H[k, k]``): on SmolLM2 at w3g128 the perplexity fell from 36.8 to 27.9.
"""

from __future__ import annotations

import mmap

import numpy as np

from llmc.errors import LLMCError, ShapeError
from llmc.ir.packing import Grid, Packed, decode, encode, fit

DAMP_TRIES = 3  # dampening damp, 10 damp, 100 damp before giving up
ERROR_BLOCK = 1 << 22  # elements of a row block of ``output_error`` (32 MiB in float64)
CONVERT_BLOCK = 1 << 20  # elements per step of the in-place float32 conversion of U


def gptq(w: np.ndarray, hessian: np.ndarray, grid: Grid, *, damp: float = 0.01, block: int = 128,
         act_order: bool = True) -> Packed:
    """Quantize ``w`` [N, K] on ``grid`` minimizing the output error under ``hessian`` [K, K] (see module).

    Memory beside ``w`` and the Hessian: one float32 working copy of ``w`` (in processing order, made a
    block of rows at a time), the product of each lazy update, the packed words and ``U`` (made in the
    memory of its float64 inverse, before the working copy). Rows are independent in exact arithmetic,
    but the matrix is not quantized a block of rows at a time: OpenBLAS's float32 product of a row
    depends on how many rows the product has, so row blocks would not reproduce the codes bit for bit."""
    if block < 1:
        raise LLMCError(f"GPTQ block size {block} must be >= 1", hint="use 128")
    n, k, diag, dead = _prepare(w, hessian)
    order = np.argsort(-diag, kind="stable") if act_order else np.arange(k)
    u = _inverse_cholesky(hessian, diag, order, damp)  # before the working copy: its float64 matrix is the peak
    weights = _permuted(w, order, dead)
    grids = _Grids(n, k, grid, diag)
    if act_order:
        position = np.argsort(order)  # the processing position of each input column
        for g in range(grid.groups(k)):
            grids.fit(g, weights[:, position[grids.columns(g)]])
    elif grid.group:
        block = grids.size * max(1, block // grids.size)
    for start in range(0, k, block):
        end = min(start + block, k)
        err = _quantize_block(weights, u, order, start, end, grids, refit=not act_order)
        weights[:, end:] -= err @ u[start:end, end:]
    return grids.packed()


def _permuted(w: np.ndarray, order: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """``w`` in float32 with its columns in processing ``order`` and dead inputs zeroed, checked finite: the
    one working copy, converted a block of rows at a time (whole, the float32 copy and its permutation
    were two more copies of ``w``: 524 MB for a 32000 x 2048 head)."""
    w = np.asarray(w)
    n, k = w.shape
    weights = np.empty((n, k), np.float32)
    step = max(1, ERROR_BLOCK // max(k, 1))
    for start in range(0, n, step):
        part = np.asarray(w[start:start + step], np.float32)
        if not np.isfinite(part).all():
            raise _not_finite()
        np.take(part, order, axis=1, out=weights[start:start + step], mode="clip")  # no temporary
    weights[:, dead[order]] = 0.0
    return weights


def output_error(w: np.ndarray, packed: Packed | np.ndarray, hessian: np.ndarray) -> float:
    """Relative error of the layer output on the calibration inputs: tr(D H D^T) / tr(W H W^T), D = W - Q,
    with ``Q`` packed weights or the float matrix they stand for (codes plus outliers).

    Summed over blocks of rows, so the float64 temporaries are a few rows, not the whole matrix."""
    h = np.asarray(hessian, np.float64)
    rows = max(1, ERROR_BLOCK // h.shape[0])
    num = den = 0.0
    for start in range(0, packed.shape[0], rows):
        part = np.asarray(w[start:start + rows], np.float64)
        d = part - _rows(packed, start, start + rows)
        num += float(np.sum((d @ h) * d))
        den += float(np.sum((part @ h) * part))
    if den <= 0:
        return 0.0 if num <= 0 else float("inf")
    return max(num, 0.0) / den


def _rows(packed: Packed | np.ndarray, start: int, end: int) -> np.ndarray:
    if not isinstance(packed, Packed):
        return np.asarray(packed[start:end], np.float64)
    return packed.rows(start, end).dequantize()


class HessianAccumulator:
    """Running ``mean(x x^T)`` (float64 [K, K]) over calibration rows ``x[..., K]`` of one linear's input.

    Reading ``value`` ends the accumulation: the sum is divided in place, so only one K x K matrix exists."""

    def __init__(self):
        self._sum: np.ndarray | None = None
        self.count = 0
        self._mean = False

    def add(self, x: np.ndarray) -> None:
        if self._mean:
            raise LLMCError("calibration rows were added after the Hessian was read", hint="add every row first")
        rows = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
        if self._sum is None:
            self._sum = np.zeros((rows.shape[1], rows.shape[1]))
        elif rows.shape[1] != self._sum.shape[0]:
            raise ShapeError(f"calibration rows have {rows.shape[1]} features, earlier ones {self._sum.shape[0]}")
        self._sum += rows.T @ rows
        self.count += rows.shape[0]

    @property
    def value(self) -> np.ndarray:
        if not self.count:
            raise LLMCError("no calibration rows were added to the Hessian", hint="run calibration inputs first")
        if not self._mean:
            self._sum /= self.count
            self._mean = True
        return self._sum


class _Grids:
    """The per-group scale (and minimum) of one matrix, [N, groups], filled in as groups are fitted, and its
    packed words, filled in as columns are rounded (no [N, K] array of codes: 65 MB for a 32000 x 2048 head)."""

    def __init__(self, n: int, k: int, grid: Grid, importance: np.ndarray):
        self.grid, self.size, self.k = grid, grid.group_size(k), k
        self.importance = importance  # [K]: each input's H[k, k], what a group's clipping is weighed by
        self.scale = np.ones((n, grid.groups(k)), np.float32)
        self.minimum = None if grid.sym else np.zeros((n, grid.groups(k)), np.float32)
        self.words = np.zeros((n, grid.words(k)), np.uint32)

    def columns(self, g: int) -> slice:
        return slice(g * self.size, min((g + 1) * self.size, self.k))

    def fit(self, g: int, block: np.ndarray) -> None:
        self.scale[:, g], minimum = fit(block, self.grid, self.importance[self.columns(g)])
        if minimum is not None:
            self.minimum[:, g] = minimum

    def packed(self) -> Packed:
        """The packed matrix (``packing.from_codes`` of the codes rounded)."""
        minimum = None if self.minimum is None else self.minimum.astype(np.float16)
        return Packed(self.words.view(np.int32), self.scale.astype(np.float16), minimum, self.grid, self.k)

    def round(self, column: int, w: np.ndarray) -> np.ndarray:
        """The values of input column ``column`` holding ``w`` [N] on its grid; its codes go into the words."""
        g = column // self.size
        scale, minimum = self.scale[:, g], None if self.minimum is None else self.minimum[:, g]
        codes = encode(w[:, None], scale, minimum, self.grid)
        per = self.grid.per_word
        self.words[:, column // per] |= codes[:, 0].astype(np.uint32) << np.uint32(self.grid.bits * (column % per))
        return decode(codes, scale, minimum, self.grid)[:, 0]


def _quantize_block(weights, u, order, start, end, grids: _Grids, *, refit: bool) -> np.ndarray:
    """Quantize processing positions [start, end), updating the block's later columns; the scaled errors."""
    cols = weights[:, start:end]  # a view: in-block updates land in ``weights``
    err = np.empty_like(cols)
    for i in range(end - start):
        column = int(order[start + i])
        if refit and column % grids.size == 0:
            grids.fit(column // grids.size, weights[:, grids.columns(column // grids.size)])
        q = grids.round(column, cols[:, i])
        err[:, i] = (cols[:, i] - q) / u[start + i, start + i]
        cols[:, i + 1:] -= np.outer(err[:, i], u[start + i, start + i + 1:end])
    return err


def _prepare(w: np.ndarray, hessian: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """``w``'s shape, the Hessian's diagonal with dead inputs (``H[i, i] == 0``) set to 1, and those inputs."""
    h = np.asarray(hessian, np.float64)
    if np.ndim(w) != 2 or h.shape != (np.shape(w)[1],) * 2:
        raise ShapeError(f"GPTQ needs W [N, K] and H [K, K], got {np.shape(w)} and {h.shape}")
    if not np.isfinite(h).all():
        raise _not_finite()
    diag = np.diag(h).copy()
    if (diag < 0).any():
        raise LLMCError(f"the Hessian has negative diagonal entries (input {int(np.argmin(diag))})",
                        hint="pass mean(x x^T) over calibration tokens")
    dead = diag == 0
    diag[dead] = 1.0
    return *np.shape(w), diag, dead


def _inverse_cholesky(hessian: np.ndarray, diag: np.ndarray, order: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor ``U`` (float32) of ``(h + d * mean(diag h) * I)^-1``, d = damp, 10 damp, ... until it
    exists, with ``h`` the Hessian in processing ``order`` and ``diag`` its diagonal (dead inputs set to 1).

    With ``J`` the order reversal and ``J h J = L L^T``: ``h^-1 = (J L^-1 J)^T (J L^-1 J)`` and ``J L^-1 J`` is
    upper triangular, so ``U = J L^-1 J`` (one factorization, no explicit ``h^-1``). Each try copies ``J h J``
    from the Hessian, factors it and inverts the factor in place (LAPACK ``potrf``, ``trtri``), so the
    inversion holds one K x K matrix beside the Hessian (numpy's cholesky and inv held three: 760 MB for
    a 5632-wide down projection). That matrix lives in an anonymous memory map: ``U`` in float32 is made
    in its first half (``_float32_reversed``) and the second half's pages are handed back, so ``U``
    costs half of it while GPTQ runs (a float64 matrix and a float32 copy beside it were 381 MB).
    """
    from scipy.linalg import lapack

    diag, reverse = diag[order], order[::-1]
    mean = float(np.mean(diag))
    k = len(diag)
    memory = mmap.mmap(-1, max(k * k * 8, 1))
    work = np.frombuffer(memory, np.float64, k * k).reshape(k, k)
    for attempt in range(DAMP_TRIES):
        _reversed(hessian, reverse, diag[::-1] + damp * 10**attempt * mean, work)
        # J h J is symmetric, so its transpose is the Fortran-ordered matrix LAPACK overwrites in place
        lower, info = lapack.dpotrf(work.T, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            continue
        inverse, info = lapack.dtrtri(lower, lower=1, overwrite_c=1)
        if info == 0 and np.isfinite(inverse).all():
            u = _float32_reversed(inverse)
            if np.shares_memory(u, work):
                _release(memory, u.nbytes)
            return u
    raise LLMCError(f"the Hessian is not positive definite even with dampening {damp * 10**(DAMP_TRIES - 1):g}",
                    hint="collect more calibration tokens, or check the activations for overflow")


def _reversed(hessian: np.ndarray, reverse: np.ndarray, diagonal: np.ndarray, out: np.ndarray) -> None:
    """``J h J`` into ``out`` (float64): the Hessian's rows and columns in ``reverse`` order, with ``diagonal``
    on its diagonal; a row at a time, so no temporary K x K matrix."""
    for i, row in enumerate(reverse):
        np.take(np.asarray(hessian[row], np.float64), reverse, out=out[i])
    out[np.diag_indices_from(out)] = diagonal


def _not_finite() -> LLMCError:
    return LLMCError("GPTQ got a Hessian or weights with inf/NaN",
                     hint="check the calibration activations and the model weights for overflow")


def _release(memory: mmap.mmap, keep: int) -> None:
    """Hand the pages of ``memory`` after its first ``keep`` bytes back to the system (they read as zeros)."""
    start = -(-keep // mmap.PAGESIZE) * mmap.PAGESIZE
    if hasattr(mmap, "MADV_DONTNEED") and start < len(memory):
        memory.madvise(mmap.MADV_DONTNEED, start, len(memory) - start)


def _float32_reversed(inverse: np.ndarray) -> np.ndarray:
    """``inverse[::-1, ::-1].astype(np.float32)`` (Fortran-ordered, as that makes it) written into the first
    half of ``inverse``'s own buffer, which the returned view keeps: no second K x K matrix beside the
    float64 one (127 MB more at a 5632-wide down projection). In Fortran order reversing both axes
    reverses the buffer, so this narrows the buffer in place, then reverses its float32 half in place."""
    if not inverse.flags.f_contiguous:
        return inverse[::-1, ::-1].astype(np.float32)
    wide = inverse.reshape(-1, order="F")  # a view
    narrow = wide.view(np.float32)[:wide.size]
    for start in range(0, wide.size, CONVERT_BLOCK):
        # float32 [start, end) lies over float64 [start / 2, end / 2): values read already (numpy copies
        # the source where one chunk overlaps itself)
        narrow[start:start + CONVERT_BLOCK] = wide[start:start + CONVERT_BLOCK]
    n = narrow.size
    for start in range(0, n // 2, CONVERT_BLOCK):
        end = min(start + CONVERT_BLOCK, n // 2)
        head = narrow[start:end].copy()
        narrow[start:end] = narrow[n - end:n - start][::-1]
        narrow[n - end:n - start] = head[::-1]
    return narrow.reshape(inverse.shape, order="F")
