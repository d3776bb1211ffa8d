"""The op registry: one ``OpDef`` per op, holding everything llmc knows about it.

An entry declares the op's inputs, its attributes (kind and default), its type inference, its
numpy reference implementation and its cost (flops and bytes moved). Frontends map onto these
ops, passes rewrite between them, targets lower from them; nothing describes an op elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from llmc.errors import LLMCError, ShapeError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.types import TensorType

REQUIRED = object()

# Attribute kinds: how a value is checked and written to JSON.
ATTR_KINDS = ("int", "float", "bool", "str", "ints", "dims", "floats", "dtype", "graph", "dim")


@dataclass(frozen=True)
class Attr:
    kind: str
    default: Any = REQUIRED
    doc: str = ""


@dataclass(frozen=True)
class Cost:
    """Work of one node: floating/integer operations and bytes read plus written."""

    flops: S.Dim = 0
    bytes: S.Dim = 0


InferFn = Callable[[list[TensorType], dict], list[TensorType]]
RefFn = Callable[[list[np.ndarray], dict], Any]
CostFn = Callable[[list[TensorType], list[TensorType], dict], Cost]


@dataclass
class OpDef:
    name: str
    doc: str
    inputs: tuple[str, ...]
    infer: InferFn
    reference: RefFn
    attrs: dict[str, Attr] = field(default_factory=dict)
    optional: int = 0
    variadic: bool = False
    kind: str = "other"
    flops_per_element: float = 1.0
    cost_fn: CostFn | None = None

    # -- attributes -------------------------------------------------------------------------

    def complete_attrs(self, attrs: dict, *, where: str) -> dict:
        out = {}
        for key in attrs:
            if key not in self.attrs:
                raise LLMCError(f"op {self.name} has no attribute {key!r}", where=where, hint=f"known: {sorted(self.attrs)}")
        for key, spec in self.attrs.items():
            if key in attrs:
                out[key] = _normalize(attrs[key], spec.kind, f"{self.name}.{key}", where)
            elif spec.default is REQUIRED:
                raise LLMCError(f"op {self.name} needs attribute {key!r}", where=where)
            else:
                out[key] = spec.default
        return out

    def check_attrs(self, attrs: dict, *, where: str) -> None:
        missing = set(self.attrs) - set(attrs)
        extra = set(attrs) - set(self.attrs)
        if missing or extra:
            raise LLMCError(f"attributes of {self.name} are wrong: missing {sorted(missing)}, unknown {sorted(extra)}", where=where)

    # -- types ------------------------------------------------------------------------------

    def check_arity(self, n: int, where: str) -> None:
        lo = len(self.inputs) - self.optional
        if n < lo or (not self.variadic and n > len(self.inputs)):
            want = f"{lo}+" if self.variadic else (f"{lo}-{len(self.inputs)}" if self.optional else str(lo))
            raise ShapeError(f"{self.name} takes {want} inputs ({', '.join(self.inputs)}), got {n}", where=where)

    def infer_types(self, types: Sequence[TensorType], attrs: dict, where: str = "") -> list[TensorType]:
        self.check_arity(len(types), where)
        try:
            out = self.infer(list(types), attrs)
        except ShapeError as e:
            if e.where or not where:
                raise
            raise ShapeError(e.what, where=where, hint=e.hint) from None
        return out if isinstance(out, list) else [out]

    def infer_node(self, node) -> list[TensorType]:
        return self.infer_types([v.type for v in node.inputs], node.attrs, node.where)

    # -- execution and cost -----------------------------------------------------------------

    def run(self, inputs: Sequence[np.ndarray], attrs: dict) -> list[np.ndarray]:
        out = self.reference(list(inputs), attrs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def cost(self, in_types: Sequence[TensorType], out_types: Sequence[TensorType], attrs: dict) -> Cost:
        if self.cost_fn is not None:
            return self.cost_fn(list(in_types), list(out_types), attrs)
        moved = sum(t.numel * t.dtype.itemsize for t in [*in_types, *out_types])
        work = sum(t.numel for t in out_types) * self.flops_per_element
        return Cost(flops=S.dim(work), bytes=S.dim(moved))


def _normalize(value, kind: str, name: str, where: str):
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return bool(value)
        if kind == "str":
            return str(value)
        if kind == "ints":
            return tuple(int(v) for v in value)
        if kind == "floats":
            return tuple(float(v) for v in value)
        if kind == "dim":
            return S.dim(value)
        if kind == "dims":
            return tuple(S.dim(v) for v in value)
        if kind == "dtype":
            return value if isinstance(value, DType) else DType.parse(str(value))
        if kind == "graph":
            return value
    except (TypeError, ValueError) as e:
        raise LLMCError(f"attribute {name}={value!r} is not a valid {kind} ({e})", where=where) from None
    raise LLMCError(f"unknown attribute kind {kind}")


def substitute(attrs: dict, env: dict[str, int]) -> dict:
    """Attributes with every symbolic dimension replaced by its size in ``env``."""

    def sub(v):
        if isinstance(v, sympy.Expr):
            return S.evaluate(v, env)
        if isinstance(v, tuple):
            return tuple(sub(x) for x in v)
        return v

    return {k: sub(v) for k, v in attrs.items()}


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise LLMCError(f"op {opdef.name} is registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LLMCError(f"unknown op {name!r}", hint="see llmc.ir.ops.registry.names()") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def op(name: str, *, inputs: tuple[str, ...], attrs: dict[str, Attr] | None = None, **kw):
    """Decorator: ``@op("softmax", inputs=("x",), attrs=...)`` on a class with ``infer`` and
    ``reference`` (and optionally ``cost``) static methods; the docstring is the op's doc."""

    def wrap(cls):
        register(
            OpDef(
                name=name,
                doc=(cls.__doc__ or "").strip(),
                inputs=inputs,
                attrs=attrs or {},
                infer=cls.infer,
                reference=cls.reference,
                **{"cost_fn": getattr(cls, "cost", None), **kw},
            )
        )
        return cls

    return wrap


def same_dtype(types: Sequence[TensorType], opname: str) -> DType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise ShapeError(f"{opname} needs inputs of one dtype, got {', '.join(sorted(map(str, dtypes)))}", hint="insert a cast")
    return types[0].dtype


def norm_axis(axis: int, rank: int, opname: str) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{opname}: axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0
