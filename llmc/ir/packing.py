"""Low-bit weights as llmc stores them: integer codes packed into 32-bit words, float16 scales.

A weight ``W[n, k]`` (``n`` output features, ``k`` the reduction axis) in a ``Grid`` of
``bits`` bits and ``group`` consecutive ``k`` per scale (0: one group per row) is

    words    i32 [N, ceil(K / per)]  per = 32 // bits codes per word (8, 10, 16 or 4)
             code of (n, k) = (words[n, k // per] >> (bits * (k % per))) & (2**bits - 1)
    scale    f16 [N, ceil(K / group)]
    minimum  f16 [N, ceil(K / group)]  asymmetric grids only

    symmetric:   W[n, k] = (code - 2**(bits-1)) * scale[n, k // group]
    asymmetric:  W[n, k] = code * scale[n, k // group] + minimum[n, k // group]

When ``group`` does not divide ``K`` the last group of each row is shorter. A row's codes are
contiguous words, so a kernel reading consecutive ``k`` loads consecutive words (and panels of
rows re-laid out at load time read ``per`` codes of each row from one word). The asymmetric
grid is llama.cpp's Q4_1 (``d * q + m``) and the symmetric one its Q4_0/Q8_0, so those GGUF
blocks repack here without requantizing.

Codes are always computed against the float16-rounded scale and minimum, so what a kernel
computes from the stored tensors is exactly what quantization measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.errors import LLMCError

BITS = (2, 3, 4, 8)
F16_TINY = float(np.finfo(np.float16).smallest_normal)
CLIP_SHRINKS = tuple(1.0 - 0.03 * i for i in range(16))  # 1.0 down to 0.55: the ranges ``fit`` tries
FIT_BLOCK = 1 << 20  # elements of ``w`` whose clipping ``fit`` weighs at once


@dataclass(frozen=True)
class Grid:
    """How one weight matrix is quantized: bits, group along the reduction axis, symmetric or not."""

    bits: int
    group: int = 0
    sym: bool = True

    def __post_init__(self):
        if self.bits not in BITS:
            raise LLMCError(f"weights cannot be packed in {self.bits} bits", hint=f"use one of {BITS}")
        if self.group < 0:
            raise LLMCError(f"quantization group {self.group} must be >= 0", hint="use 0 for one group per row")

    @property
    def per_word(self) -> int:
        return 32 // self.bits

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def group_size(self, k: int) -> int:
        return self.group or k

    def groups(self, k: int) -> int:
        return -(-k // self.group_size(k))

    def words(self, k: int) -> int:
        return -(-k // self.per_word)


def fit(w: np.ndarray, grid: Grid, importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The scale (and minimum) of each row of ``w`` ([rows, g]: one group), exact in float16.

    Without ``importance`` the grid spans the row's min/max (absolute max). With ``importance`` [g] (per
    column, GPTQ's ``H[k, k]``: the inputs' mean square) the range is also tried shrunk by each of
    ``CLIP_SHRINKS`` and each row keeps the one with the least ``sum_k importance[k] (q[k] - w[k])^2``: clipping
    a few large weights buys every other weight of the group a finer step. Weight error alone is the
    wrong measure for it (unweighted, SmolLM2's w3g128 RTN perplexity rose from 676 to 828)."""
    if importance is None:
        return _range_grid(w.astype(np.float32), grid, 1.0)
    weights = np.asarray(importance, np.float32)
    # a block of rows at a time, so a per-row (w8) grid of a large head makes no [N, K] temporaries
    rows = max(1, FIT_BLOCK // max(np.shape(w)[-1], 1))
    parts = [_clipped(np.asarray(w[i:i + rows], np.float32), grid, weights) for i in range(0, len(w), rows)]
    minimum = None if grid.sym else np.concatenate([m for _, m in parts])
    return np.concatenate([s for s, _ in parts]), minimum


def _clipped(w: np.ndarray, grid: Grid, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per row, the range of ``CLIP_SHRINKS`` with the least weighted error (see ``fit``)."""
    scale, minimum = _range_grid(w, grid, 1.0)
    best = _weighted_error(w, scale, minimum, grid, weights)
    for shrink in CLIP_SHRINKS[1:]:  # ties keep the wider range
        s, m = _range_grid(w, grid, shrink)
        error = _weighted_error(w, s, m, grid, weights)
        better = error < best
        best = np.where(better, error, best)
        scale = np.where(better, s, scale)
        if m is not None:
            minimum = np.where(better, m, minimum)
    return scale, minimum


def _range_grid(w: np.ndarray, grid: Grid, shrink: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The grid spanning ``shrink`` times each row's min/max (absolute max when symmetric)."""
    if grid.sym:
        half = grid.levels // 2
        scale = np.abs(w).max(axis=-1) * shrink / (half - 1 if grid.bits > 2 else half)
        return _f16(np.maximum(scale, F16_TINY)), None
    minimum = _f16(w.min(axis=-1) * shrink)
    scale = _f16(np.maximum((w.max(axis=-1) * shrink - minimum) / (grid.levels - 1), F16_TINY))
    return scale, minimum


def _weighted_error(w, scale, minimum, grid: Grid, weights: np.ndarray) -> np.ndarray:
    d = decode(encode(w, scale, minimum, grid), scale, minimum, grid) - w
    return (d * d) @ weights


def encode(w: np.ndarray, scale: np.ndarray, minimum: np.ndarray | None, grid: Grid) -> np.ndarray:
    """Codes (uint8) of ``w`` [rows, g] on the grid of per-row ``scale``/``minimum`` (round half to even)."""
    s = scale.astype(np.float32)[:, None]
    if grid.sym:
        q = np.round(w / s) + grid.levels // 2
    else:
        q = np.round((w - minimum.astype(np.float32)[:, None]) / s)
    return np.clip(q, 0, grid.levels - 1).astype(np.uint8)


def decode(codes: np.ndarray, scale: np.ndarray, minimum: np.ndarray | None, grid: Grid) -> np.ndarray:
    """The float32 values of ``codes`` [rows, g] under per-row ``scale``/``minimum``."""
    s = scale.astype(np.float32)[:, None]
    if grid.sym:
        return (codes.astype(np.float32) - grid.levels // 2) * s
    return codes.astype(np.float32) * s + minimum.astype(np.float32)[:, None]


def _f16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -65504, 65504).astype(np.float16).astype(np.float32)


@dataclass
class Packed:
    """One packed weight matrix: the tensors the artifact stores and the grid they follow."""

    words: np.ndarray             # int32 [N, words]
    scale: np.ndarray             # float16 [N, groups]
    minimum: np.ndarray | None    # float16 [N, groups] (asymmetric grids)
    grid: Grid
    k: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.words.shape[0], self.k

    @property
    def nbytes(self) -> int:
        return self.words.nbytes + self.scale.nbytes + (0 if self.minimum is None else self.minimum.nbytes)

    def codes(self) -> np.ndarray:
        return unpack(self.words, self.grid.bits, self.k)

    def dequantize(self) -> np.ndarray:
        return dequantize(self.words, self.scale, self.minimum, self.grid, self.k)

    def rows(self, start: int, end: int) -> Packed:
        """Output features [start, end) (views of the packed tensors)."""
        minimum = None if self.minimum is None else self.minimum[start:end]
        return Packed(self.words[start:end], self.scale[start:end], minimum, self.grid, self.k)

    def error(self, w: np.ndarray) -> float:
        """``||W - Q|| / ||W||`` (Frobenius) against the float matrix ``w``, a block of rows at a time:
        dequantizing a 32000 x 2048 embedding whole took five float32 copies of it (1.3 GB)."""
        num = den = 0.0
        step = _block_rows(self.k)
        for start in range(0, self.shape[0], step):
            part = np.asarray(w[start:start + step], np.float32)
            num += float(np.sum(np.square(self.rows(start, start + step).dequantize() - part)))
            den += float(np.sum(np.square(part)))
        return float(np.sqrt(num) / max(np.sqrt(den), 1e-30))


BLOCK_ELEMENTS = 1 << 22  # elements per block of rows in the row-blocked loops (16 MiB of float32)


def _block_rows(k: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(k, 1))


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes [N, K] (< 2**bits) -> int32 words [N, ceil(K / (32 // bits))], low bits first."""
    per = 32 // bits
    n, k = codes.shape
    words = np.empty((n, -(-k // per)), np.int32)
    shifts = np.arange(per, dtype=np.uint32) * bits
    step = _block_rows(k)
    for start in range(0, n, step):  # a block of rows at a time: the uint32 temporaries are 4x the codes
        block = codes[start:start + step]
        padded = np.zeros((len(block), words.shape[1] * per), np.uint32)
        padded[:, :k] = block
        words[start:start + step] = np.bitwise_or.reduce(padded.reshape(len(block), -1, per) << shifts, axis=-1).view(np.int32)
    return words


def unpack(words: np.ndarray, bits: int, k: int) -> np.ndarray:
    """int32 words -> codes (uint8) [N, k]."""
    per = 32 // bits
    w = words.view(np.uint32)[:, :, None] >> (np.arange(per, dtype=np.uint32) * bits)
    return (w & np.uint32((1 << bits) - 1)).reshape(words.shape[0], -1)[:, :k].astype(np.uint8)


def dequantize(words, scale, minimum, grid: Grid, k: int) -> np.ndarray:
    """The float32 matrix [N, k] that packed tensors stand for (what every kernel computes), made a
    block of rows at a time: whole, the codes, scales and products took four float32 copies of it."""
    words, scale = np.asarray(words), np.asarray(scale, np.float32)
    minimum = None if minimum is None else np.asarray(minimum, np.float32)
    g = grid.group_size(k)
    out = np.empty((words.shape[0], k), np.float32)
    step = _block_rows(k)
    for start in range(0, len(out), step):
        rows = slice(start, start + step)
        codes = unpack(words[rows], grid.bits, k).astype(np.float32)
        s = np.repeat(scale[rows], g, axis=1)[:, :k]
        if grid.sym:
            out[rows] = (codes - grid.levels // 2) * s
        else:
            out[rows] = codes * s + np.repeat(minimum[rows], g, axis=1)[:, :k]
    return out


def from_codes(codes: np.ndarray, scale: np.ndarray, minimum: np.ndarray | None, grid: Grid) -> Packed:
    """Pack codes [N, K] with their per-group scale (and minimum) [N, groups]."""
    return Packed(pack(codes, grid.bits), scale.astype(np.float16),
                  None if minimum is None else minimum.astype(np.float16), grid, codes.shape[1])


def quantize(w: np.ndarray, grid: Grid) -> Packed:
    """Round-to-nearest: each group's own min/max (or absolute max) sets its grid."""
    n, k = w.shape
    g = grid.group_size(k)
    codes = np.empty((n, k), np.uint8)
    scales, minimums = [], []
    for start in range(0, k, g):
        block = w[:, start:start + g].astype(np.float32)
        scale, minimum = fit(block, grid)
        codes[:, start:start + g] = encode(block, scale, minimum, grid)
        scales.append(scale)
        minimums.append(minimum)
    return from_codes(codes, np.stack(scales, 1), None if grid.sym else np.stack(minimums, 1), grid)
