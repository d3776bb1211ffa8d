"""Torch's symbolic sizes -> llmc dimensions.

``torch.export`` names every dynamic size with its own symbols (``s0``, ``s53``) and writes
size arithmetic with its own sympy functions (``FloorDiv``, ``Mod``, ...). ``SymbolTable``
renames those symbols after the user's names (``seq``) and rewrites the functions into plain
sympy, so a size such as ``FloorDiv(s53, 2)`` becomes ``floor(seq/2)`` in the IR.
"""

from __future__ import annotations

import sympy
import torch
from torch.utils._sympy import functions as tf

from llmc.errors import InputError
from llmc.ir import shapes as S

# torch's sympy functions, each as the plain sympy expression it stands for.
_REWRITES = {
    tf.FloorDiv: lambda a, b: sympy.floor(a / b),
    tf.CeilDiv: lambda a, b: sympy.ceiling(a / b),
    tf.CleanDiv: lambda a, b: a / b,
    tf.IntTrueDiv: lambda a, b: a / b,
    tf.FloatTrueDiv: lambda a, b: a / b,
    tf.Mod: sympy.Mod,
    tf.PythonMod: sympy.Mod,
    tf.ModularIndexing: lambda base, div, mod: sympy.Mod(sympy.floor(base / div), mod),
    tf.Max: sympy.Max,
    tf.Min: sympy.Min,
    tf.PowByNatural: sympy.Pow,
    tf.FloorToInt: sympy.floor,
    tf.CeilToInt: sympy.ceiling,
    tf.TruncToInt: lambda a: sympy.sign(a) * sympy.floor(abs(a)),
    tf.ToFloat: lambda a: a,
    tf.Identity: lambda a: a,
}


class DataDependentSize(Exception):
    """A size that depends on tensor values (an unbacked symbol), which the IR cannot express."""


class SymbolTable:
    """Maps torch's size symbols to named llmc symbols."""

    def __init__(self):
        self._names: dict[sympy.Symbol, sympy.Symbol] = {}
        self._where: dict[str, str] = {}

    def name(self, torch_symbol: sympy.Symbol, name: str, where: str) -> None:
        """Call ``torch_symbol`` ``name``; ``where`` (``input_ids axis 1``) is for error messages."""
        known = self._names.get(torch_symbol)
        if known is not None and str(known) != name:
            raise InputError(
                f"{where} is named {name!r}, but the model makes it the same size as {self._where[str(known)]} "
                f"named {str(known)!r}",
                hint="give both axes one symbol name",
            )
        self._names[torch_symbol] = S.sym(name)
        self._where.setdefault(name, where)

    def knows(self, torch_symbol: sympy.Symbol) -> bool:
        return torch_symbol in self._names

    def dim(self, value) -> S.Dim:
        """An int, ``SymInt`` or torch sympy expression as an llmc dimension."""
        if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            value = value.node.expr
        if isinstance(value, (bool, int, float)):
            return value
        unknown = value.free_symbols - set(self._names)
        if unknown:
            raise DataDependentSize(", ".join(sorted(map(str, unknown))))
        expr = value.xreplace(self._names)
        for fn, rewrite in _REWRITES.items():
            expr = expr.replace(fn, rewrite)
        if isinstance(expr, sympy.logic.boolalg.BooleanAtom):
            return bool(expr)
        if expr.is_Number and not expr.is_Integer:
            return float(expr)
        return S.dim(expr)

    def shape(self, sizes) -> S.Shape:
        return tuple(self.dim(d) for d in sizes)
