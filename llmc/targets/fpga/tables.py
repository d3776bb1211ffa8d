"""Lookup tables: built here, emitted as codes, read identically by the emulation and ``llmc_table.h``.

Uniform table of f over [lo, hi) (the function's range, narrowed to what the input type can
hold) in steps of 2**-step_bits (at most 4096 entries): entry i is f(lo + (i + 1/2) step)
in the output type; input code c at ``frac`` bits reads entry floor(c * 2**(step_bits - frac))
- lo * 2**step_bits. Normalized tables (1/x, 1/sqrt x) are indexed by the bits below the
input's leading one (see ``llmc_table.h``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from llmc.targets.fpga.fixed import Fixed

# name -> (f, lo, hi, below the table, above the table)
FUNCTIONS = {
    "exp": (np.exp, -16.0, 0.0, "zero", "last"),
    "gelu": (lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), -8.0, 8.0, "zero", "identity"),
    "gelu_tanh": (lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), -8.0, 8.0, "zero", "identity"),
    "silu": (lambda x: x / (1 + np.exp(-x)), -16.0, 16.0, "zero", "identity"),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), -16.0, 16.0, "zero", "last"),
    "tanh": (np.tanh, -8.0, 8.0, "first", "last"),
    "erf": (lambda x: _erf(x), -4.0, 4.0, "first", "last"),
}
MAX_ENTRIES = 4096
TABLE_TYPE = Fixed(18, 1, signed=False)  # entries of the normalized tables, in (0.5, 1]
INDEX_BITS = 10
MAX_LEFT = 40  # a result scaled up by more than 2^40 saturates (llmc_table.h does the same)


def _erf(x):
    from scipy.special import erf

    return erf(x)


@dataclass(frozen=True)
class Uniform:
    """A uniform table of ``function`` read from inputs of type ``src``, giving codes of ``out``."""

    function: str
    src: Fixed
    out: Fixed

    @property
    def span(self) -> tuple[float, float]:
        """The table's input range: the function's, narrowed to what ``src`` can hold (finer steps)."""
        _, lo, hi, _, _ = FUNCTIONS[self.function]
        reach = 2.0 ** (self.src.integer - 1) if self.src.signed else 2.0 ** self.src.integer
        return max(lo, -reach if self.src.signed else 0.0), min(hi, reach)

    @property
    def lo(self) -> float:
        return self.span[0]

    @property
    def step_bits(self) -> int:
        lo, hi = self.span
        return min(int(math.floor(math.log2(MAX_ENTRIES / (hi - lo)))), self.src.frac)

    @property
    def lo_index(self) -> int:
        return int(self.lo * 2 ** self.step_bits)

    def codes(self) -> np.ndarray:
        f = FUNCTIONS[self.function][0]
        lo, hi = self.span
        n = int((hi - lo) * 2 ** self.step_bits)
        centers = lo + (np.arange(n) + 0.5) * 2.0 ** -self.step_bits
        values = f(centers)
        if self.function == "exp":
            values = np.append(values, f(hi))  # exp(0) = 1 exactly at the top (softmax's maximum)
        return self.out.quantize(values)

    def config(self) -> dict:
        _, _, _, below, above = FUNCTIONS[self.function]
        table = self.codes()
        return {"step_bits": self.step_bits, "in_frac": self.src.frac, "lo_index": self.lo_index, "n_table": len(table),
                "table": table.tolist(), "low_zero": below == "zero", "high_identity": above == "identity"}

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Output codes (of ``out``) for input codes of ``src``."""
        _, _, _, below, above = FUNCTIONS[self.function]
        table = self.codes()
        idx = floor_shift(codes, self.step_bits - self.src.frac) - self.lo_index
        out = table[np.clip(idx, 0, len(table) - 1)]
        if below == "zero":
            out = np.where(idx < 0, 0, out)
        if above == "identity":
            out = np.where(idx >= len(table), self.out.cast(codes, self.src.frac), out)
        return out


def floor_shift(codes: np.ndarray, by: int) -> np.ndarray:
    codes = np.asarray(codes, np.int64)
    return codes << np.int64(by) if by >= 0 else codes >> np.int64(-by)


def normalized_table(rsqrt: bool) -> np.ndarray:
    """Codes (``TABLE_TYPE``) of 1/y (y in [1, 2)) or 1/sqrt(y) (y in [1, 4)) at each index's middle."""
    top = INDEX_BITS - 2 if rsqrt else INDEX_BITS
    m = np.arange(1 << top, (4 if rsqrt else 2) << top) + 0.5
    y = m / 2.0 ** top
    return TABLE_TYPE.quantize(1 / np.sqrt(y) if rsqrt else 1 / y)


def normalized_lookup(u: np.ndarray, frac: int, rsqrt: bool, out: Fixed) -> np.ndarray:
    """Codes of ``out`` for 1/x or 1/sqrt(x) of unsigned codes ``u`` at ``frac`` bits (0 gives ``out``'s maximum)."""
    u = np.asarray(u, np.int64)
    if np.any(u < 0) or np.any(u >= 1 << 52):
        raise ValueError("normalized lookups take codes in [0, 2^52)")
    table = normalized_table(rsqrt)
    safe = np.maximum(u, 1)
    p = np.frexp(safe.astype(np.float64))[1].astype(np.int64) - 1
    e = p - frac
    top = INDEX_BITS - 2 if rsqrt else INDEX_BITS
    if rsqrt:
        e = e - (e % 2)
    by = frac + e - top
    m = np.where(by >= 0, safe >> np.maximum(by, 0), safe << np.maximum(-by, 0))
    entry = table[m - (1 << top)]
    scale = out.frac - TABLE_TYPE.frac - (e // 2 if rsqrt else e)
    left = entry << np.clip(scale, 0, MAX_LEFT)
    r = np.maximum(-scale, 1)
    right = (entry + (np.int64(1) << (r - 1))) >> r
    result = np.where(scale >= 0, left, right)
    result = np.where(scale > MAX_LEFT, out.hi, result)  # the value is beyond any type's range
    return np.where(u == 0, out.hi, out.overflowed(result))


def table_config(rsqrt: bool) -> dict:
    return {"index_bits": INDEX_BITS, "table_frac": TABLE_TYPE.frac, "table": normalized_table(rsqrt).tolist()}
