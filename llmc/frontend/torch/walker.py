"""What the torch.export and torch.fx importers share.

A ``Walker`` holds the llmc graph under construction, the value of every source node
converted so far (an llmc ``Value``, a tuple of them, a Python number or a symbolic dim), the
record of unsupported ops, and ``apply``: run one ATen converter for one source node, with
the node's origin, and check what it built against the types torch computed.
"""

from __future__ import annotations

import inspect
from collections import defaultdict

import torch
import torch.utils._pytree as pytree

from llmc.errors import LLMCError, UnsupportedOpError, VerifyError
from llmc.frontend.torch.emitter import Emitter, NotConvertible
from llmc.frontend.torch.ops import bind, converter
from llmc.frontend.torch.symbols import DataDependentSize, SymbolTable
from llmc.frontend.torch_dtypes import dtype_from_torch
from llmc.ir import Graph, NodeMeta, TensorType, Value, layer_of
from llmc.ir import shapes as S

MISSING = object()  # the value of a source node that could not be converted


class Walker:
    def __init__(self, name: str):
        self.graph = Graph(name)
        self.cx = Emitter(self.graph)
        self.symbols = SymbolTable()
        self.env: dict[torch.fx.Node, object] = {}
        self.unsupported: dict[str, list[str]] = defaultdict(list)

    def type_of(self, val) -> TensorType:
        """The llmc type of a tensor, fake tensor or fx ``TensorMetadata``."""
        return TensorType(dtype_from_torch(val.dtype), self.symbols.shape(val.shape))

    def resolve(self, node: torch.fx.Node):
        """``(args, kwargs)`` of ``node`` with source nodes replaced by their values; None if one is missing."""
        args = pytree.tree_map_only(torch.fx.Node, lambda n: self.env.get(n, MISSING), (node.args, node.kwargs))
        return None if any(a is MISSING for a in pytree.tree_leaves(args)) else args

    def report(self, node: torch.fx.Node, what: str, origin: str) -> None:
        """Record ``node`` as unsupported (``what`` names the op and why) and mark its value missing."""
        self.unsupported[what].append(origin or f"{node.name} (top level)")
        self.env[node] = MISSING

    def apply(self, node: torch.fx.Node, target, args: tuple, kwargs: dict, origin: str, val) -> None:
        """Convert ``node`` as the ATen overload ``target`` called with ``args``/``kwargs``.

        ``val`` is what torch computed for the node (fake tensors, or fx ``TensorMetadata``).
        """
        key = str(target)
        fn = converter(target)
        if fn is None:
            return self.report(node, key, origin)
        try:
            self.cx.expected = self._expected(val)
            bound = bind(target, args, kwargs)
            _check_signature(fn, bound)
            self.cx.meta = NodeMeta(origin=origin, layer=layer_of(origin))
            out = fn(self.cx, **bound)
        except NotConvertible as e:
            return self.report(node, f"{key} ({e.reason})", origin)
        except LLMCError as e:
            raise type(e)(e.what, where=e.where or f"{key} at {origin or node.name}", hint=e.hint) from None
        self._check(node, key, origin, out)
        self.env[node] = out

    def finish(self, outputs: list[tuple[object, str]]) -> Graph:
        """Raise for unsupported ops; else set the outputs (value, name) and return the verified graph."""
        if self.unsupported:
            raise UnsupportedOpError(dict(self.unsupported), source="torch")
        chosen: list[Value] = []
        for value, name in outputs:
            if not isinstance(value, Value):
                continue  # None or a Python number: not part of the tensor signature
            if value.producer is not None and value not in chosen:
                value.name = self.graph.fresh(name)
            chosen.append(value)
        self.graph.outputs = chosen
        self.graph.remove_unused_constants()
        self.graph.verify()
        return self.graph

    def _expected(self, val) -> list[TensorType | None]:
        """The types torch computed for an op's outputs (None where an output is not a tensor)."""
        vals = [val] if _is_tensor_like(val) or not isinstance(val, (tuple, list)) else val
        try:
            return [self.type_of(v) if _is_tensor_like(v) else None for v in vals]
        except DataDependentSize as e:
            raise NotConvertible(f"its output shape depends on tensor data ({e})") from None
        except LLMCError as e:
            raise NotConvertible(e.what) from None

    def _check(self, node, key: str, origin: str, out) -> None:
        outs = out if isinstance(out, tuple) else (out,)
        for got, want in zip(outs, self.cx.expected):
            if want is None or got is None:
                continue
            same = got.type.dtype == want.dtype and got.type.rank == want.rank and all(
                S.same(a, b) for a, b in zip(got.type.shape, want.shape))
            if not same:
                raise VerifyError(
                    f"{key} converted to {got.type}, but torch computes {want}",
                    where=f"{node.name} at {origin or 'top level'}",
                    hint="this is a bug in llmc's torch frontend; please report it with the model",
                )


def _is_tensor_like(v) -> bool:
    """A tensor, fake tensor or fx ``TensorMetadata`` (a named tuple with a shape and a dtype)."""
    return hasattr(v, "dtype") and hasattr(v, "shape")


def _check_signature(fn, bound: dict) -> None:
    try:
        inspect.signature(fn).bind(None, **bound)
    except TypeError as e:
        raise NotConvertible(f"unexpected arguments {sorted(bound)}: {e}") from None
