"""The FPGA target's op table: for each supported op, its fixed-point emulation and its kernel call.

One entry per op (``@kernel("linear")``) holds both halves, so the numerics the emulation
defines and the C++ call that must reproduce them sit side by side:

    emulate(node, args, P) -> [codes]   int64 codes of the outputs (``llmc.targets.fpga.fixed``)
    calls(node, P) -> [Call]            the llmc HLS library calls that compute them

A ``Call`` names a template function of the llmc HLS library (``hls/*.h``) and the fields of its
config struct; the emitter writes the struct and the call, never a kernel body. ``Call.macs``
and ``Call.weights`` feed the estimates (``llmc.targets.fpga.estimate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from llmc.ir import shapes as S
from llmc.ir.graph import Node
from llmc.targets.fpga.fixed import Fixed
from llmc.targets.fpga.precision import Precision

Codes = np.ndarray


@dataclass
class Arg:
    """One argument of a kernel call: an activation array (``act``), the integer codes of a
    weight (``code``), a constant read as a typed array (``const``), a C++ expression such as the
    runtime ``ctx`` (``expr``), or a null pointer (``none``)."""

    kind: str
    name: str = ""


@dataclass
class Call:
    """One call ``llmc::<kernel><Config>(args...)`` of the top function."""

    kernel: str
    header: str
    types: dict[str, Fixed | str]
    ints: dict[str, int | bool | list[int]]
    args: list[Arg]
    macs: int = 0            # multiplications per inference
    reduce: int = 1          # length of each sum (adder tree depth ~ log2)
    outputs: int = 0         # output elements per inference
    weights: list[str] = field(default_factory=list)  # constants read as weights
    table_bits: int = 0      # bits of lookup tables this call holds on chip


@dataclass(frozen=True)
class KernelDef:
    op: str
    emulate: Callable[[Node, list[Codes], Precision], list[Codes]]
    calls: Callable[[Node, Precision], list[Call]]
    check: Callable[[Node], str | None] | None = None


KERNELS: dict[str, KernelDef] = {}


def kernel(*ops: str, check=None):
    """Register ``cls.emulate`` / ``cls.calls`` of a class as the entry of ``ops``."""

    def wrap(cls):
        for op in ops:
            KERNELS[op] = KernelDef(op, cls.emulate, cls.calls, check)
        return cls

    return wrap


def code_type(t: Fixed) -> str:
    """The C integer type that stores codes of ``t``."""
    for bits in (8, 16, 32):
        if t.width <= bits:
            return f"int{bits}_t" if t.signed or t.width < bits else f"uint{bits}_t"
    return "int64_t"


def dtype_of(t: Fixed) -> np.dtype:
    """The little-endian numpy dtype of ``code_type(t)`` (off-chip weight files)."""
    return np.dtype(code_type(t)[:-2]).newbyteorder("<")


# Sizes arrays take for runtime symbols (``ctx``: the KV buffer's capacity), set per graph by
# ``use_capacity`` before its calls are made or emulated (``llmc.targets.fpga.bind.capacity``).
CAPACITY: dict[str, int] = {}


def use_capacity(sizes: dict[str, int]) -> None:
    CAPACITY.clear()
    CAPACITY.update(sizes)


def shape(v) -> list[int]:
    """The array shape of ``v``: runtime symbols at their capacity."""
    return [d if isinstance(d, int) else S.evaluate(d, CAPACITY) for d in v.type.shape]


def numel(v) -> int:
    return int(np.prod(shape(v))) if shape(v) else 1


def act(v) -> Arg:
    return Arg("const" if v.const is not None else "act", v.name)


def strides(dims: list[int]) -> list[int]:
    out, step = [], 1
    for d in reversed(dims):
        out.append(step)
        step *= d
    return out[::-1]


def broadcast_strides(src: list[int], dst: list[int]) -> list[int]:
    """Element strides of an operand of shape ``src`` read at every index of ``dst`` (numpy broadcasting)."""
    src = [1] * (len(dst) - len(src)) + list(src)
    own = strides(src)
    return [0 if s == 1 and d != 1 else st for s, d, st in zip(src, dst, own)]


def unary_config(node: Node, P: Precision, kernel_name: str, header: str = "llmc_eltwise.h", **extra) -> Call:
    x, y = node.inputs[0], node.output
    n = numel(y)
    return Call(kernel_name, header, {"in_t": P.of(x), "out_t": P.of(y)}, {"size": n, "parallel": 1, **extra},
                [act(x), Arg("act", y.name)], outputs=n)
