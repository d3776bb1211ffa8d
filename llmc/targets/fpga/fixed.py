"""Fixed-point types and the integer arithmetic that defines the FPGA target's numerics.

A ``Fixed(width, integer)`` is Vivado's ``ap_fixed<W, I, Q, O>``: a two's-complement (or, with
``signed=False``, unsigned) integer *code* ``c`` standing for ``c * 2**-frac`` with
``frac = W - I``. Values are held as int64 numpy arrays of codes; every operation of the
emulation (``llmc.targets.fpga.emulate``) is integer arithmetic on codes, so the generated C++,
which computes with ``ap_fixed`` full-precision products and sums and rounds only when a value is
assigned to a narrower type, gives exactly the same codes.

Rounding and overflow are explicit, never the headers' defaults (truncation and wrap-around:
100.0 in a plain ``ap_fixed<16,6>`` reads as -28):

    RND  round half towards +infinity: floor(v + 1/2 LSB)    (AP_RND)
    TRN  floor                                                 (AP_TRN)
    SAT  clamp to the type's range                             (AP_SAT)
    WRAP keep the low W bits                                   (AP_WRAP)

Invariants: ``W <= 62`` so that every code and every exact product of two 31-bit codes fits int64;
casts shift by the difference of fractional bits and then apply the overflow mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from llmc.errors import LLMCError

MAX_WIDTH = 62
ROUNDING = {"RND": "AP_RND", "TRN": "AP_TRN"}
OVERFLOW = {"SAT": "AP_SAT", "WRAP": "AP_WRAP"}


class PrecisionError(LLMCError):
    """A fixed-point type or a precision override that cannot be used (says which and why)."""


@dataclass(frozen=True)
class Fixed:
    """``ap_fixed<width, integer, rounding, overflow>`` (``ap_ufixed`` when not ``signed``)."""

    width: int
    integer: int
    signed: bool = True
    rounding: str = "RND"
    overflow: str = "SAT"

    def __post_init__(self):
        if not 1 <= self.width <= MAX_WIDTH:
            raise PrecisionError(f"fixed-point width {self.width} is outside 1..{MAX_WIDTH}", hint="use e.g. fixed<16,6>")
        if self.rounding not in ROUNDING or self.overflow not in OVERFLOW:
            raise PrecisionError(f"unknown rounding/overflow mode {self.rounding}/{self.overflow}",
                                 hint=f"rounding: {', '.join(ROUNDING)}; overflow: {', '.join(OVERFLOW)}")

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def lo(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def max_value(self) -> float:
        return self.hi * 2.0 ** -self.frac

    def cpp(self) -> str:
        kind = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{kind}<{self.width},{self.integer},{ROUNDING[self.rounding]},{OVERFLOW[self.overflow]}>"

    def __str__(self) -> str:
        kind = "fixed" if self.signed else "ufixed"
        return f"{kind}<{self.width},{self.integer},{self.rounding},{self.overflow}>"

    @classmethod
    def parse(cls, text: str) -> Fixed:
        """``fixed<16,6>``, ``ufixed<8,0,TRN,WRAP>`` or the C++ spelling ``ap_fixed<16,6,AP_RND,AP_SAT>``."""
        m = re.fullmatch(r"\s*(?:ap_)?(u?)fixed\s*<\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(?:AP_)?(\w+)\s*)?(?:,\s*(?:AP_)?(\w+)\s*)?>\s*",
                         str(text))
        if m is None:
            raise PrecisionError(f"cannot read the fixed-point type {text!r}",
                                 hint="write fixed<W,I> or fixed<W,I,RND|TRN,SAT|WRAP> (ufixed for unsigned)")
        return cls(int(m[2]), int(m[3]), not m[1], (m[4] or "RND").upper(), (m[5] or "SAT").upper())

    def with_(self, **changes) -> Fixed:
        return Fixed(**{**self.__dict__, **changes})

    # -- numpy codes --------------------------------------------------------------------------

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Codes of float values (rounding and overflow of this type), as ``ap_fixed`` assigns a double."""
        scaled = np.asarray(x, np.float64) * 2.0 ** self.frac
        codes = np.floor(scaled + 0.5) if self.rounding == "RND" else np.floor(scaled)
        codes = np.clip(codes, -2.0 ** 62, 2.0 ** 62).astype(np.int64)
        return self.overflowed(codes)

    def overflowed(self, codes: np.ndarray) -> np.ndarray:
        """Codes brought into range by this type's overflow mode."""
        if self.overflow == "SAT":
            return np.clip(codes, self.lo, self.hi)
        span = np.int64(1) << np.int64(self.width)
        wrapped = np.mod(codes, span)
        return wrapped - span * (wrapped > self.hi) if self.signed else wrapped

    def cast(self, codes: np.ndarray, frac: int) -> np.ndarray:
        """Codes of exact values ``codes * 2**-frac`` assigned to this type."""
        return self.overflowed(shift(codes, self.frac - frac, self.rounding))

    def value(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, np.float64) * 2.0 ** -self.frac

    def fits(self, frac: int, lo: int, hi: int) -> bool:
        """Whether exact values with codes in [lo, hi] at ``frac`` fractional bits are held exactly."""
        return frac <= self.frac and lo << (self.frac - frac) >= self.lo and hi << (self.frac - frac) <= self.hi


def shift(codes: np.ndarray, by: int, rounding: str = "RND") -> np.ndarray:
    """``codes * 2**by`` as integers: exact left shift, or right shift rounded by ``rounding``."""
    codes = np.asarray(codes, np.int64)
    if by >= 0:
        return codes << np.int64(by)
    r = np.int64(-by)
    if rounding == "RND":
        return (codes + (np.int64(1) << (r - 1))) >> r
    return codes >> r


def bits_for(value: float) -> int:
    """Integer bits (sign included) a signed type needs to hold magnitudes up to ``value``."""
    if value <= 0:
        return 1
    return max(1, int(np.floor(np.log2(value))) + 2)


def accumulator(a: Fixed, b: Fixed, terms: int) -> Fixed:
    """The type that holds a sum of ``terms`` exact products of ``a`` and ``b`` without loss."""
    growth = int(np.ceil(np.log2(max(terms, 1))))
    integer = a.integer + b.integer + growth + (0 if a.signed or b.signed else 1)
    frac = a.frac + b.frac
    if integer + frac > MAX_WIDTH:
        raise PrecisionError(f"an accumulator of {terms} products of {a} and {b} needs {integer + frac} bits "
                             f"(more than {MAX_WIDTH})", hint="use narrower operand types (--fpga-bits)")
    return Fixed(integer + frac, integer, True, "TRN", "WRAP")
