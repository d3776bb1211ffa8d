"""Static sizes for the FPGA: the ``bind_sizes`` pass, and the capacity of the runtime ``ctx``.

An FPGA design has fixed array sizes. ``bind_sizes`` replaces the symbols it is given (by
default a generation step's ``batch`` and ``seq``: one sequence, one token per decode step)
by numbers in every value's shape and every attribute::

    %mask = reshape(%attention_mask) {shape=[batch,1,1,ctx]} : bool[batch,1,1,ctx]
        ==>
    %mask = reshape(%attention_mask) {shape=[1,1,1,ctx]} : bool[1,1,1,ctx]

The one symbol left is ``ctx`` (positions in the KV buffer after this step): it is a runtime
argument of the top function, and arrays whose shape uses it are laid out at the buffer's
capacity (``capacity``), the caches' length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from llmc.ir import shapes as S
from llmc.ir.graph import Graph
from llmc.ir.types import TensorType
from llmc.passes.base import Pass, PassResult, register_pass

RUNTIME = "ctx"


def _sub(value, env: dict):
    if isinstance(value, sympy.Expr):
        out = value.subs({S.sym(k): v for k, v in env.items()})
        return int(out) if out.is_Integer else out
    if isinstance(value, tuple):
        return tuple(_sub(v, env) for v in value)
    return value


@dataclass
class BindSizesOptions:
    """sizes: symbol -> size (symbols the graph does not use are ignored)."""

    sizes: dict = field(default_factory=lambda: {"batch": 1, "seq": 1})


@register_pass
class BindSizes(Pass):
    """Give symbols fixed sizes in every shape and attribute (see the module docstring)."""

    name = "bind_sizes"
    invariant = "outputs keep their values for inputs of the bound sizes; only the named symbols disappear"
    Options = BindSizesOptions

    def run(self, graph: Graph) -> PassResult:
        env = {k: int(v) for k, v in self.options.sizes.items()}
        changed = 0
        values = [*graph.inputs, *(v for n in graph.nodes for v in n.outputs)]
        for v in values:
            shape = tuple(_sub(d, env) for d in v.type.shape)
            if shape != tuple(v.type.shape):
                v.type = TensorType(v.type.dtype, shape)
                changed += 1
        for node in graph.nodes:
            attrs = {k: _sub(a, env) for k, a in node.attrs.items()}
            if attrs != node.attrs:
                node.attrs = attrs
                changed += 1
        return PassResult(graph, changed > 0, {"bound": {k: v for k, v in env.items()}, "changed": changed})


def capacity(graph: Graph) -> dict[str, int]:
    """The most each runtime symbol can be: ``ctx`` is the KV caches' length."""
    caches = [v for v in graph.inputs if v.name.startswith("cache_k.")]
    return {RUNTIME: int(caches[0].type.shape[2])} if caches else {}


def runtime_symbols(graph: Graph) -> set[str]:
    found: set[str] = set()
    for v in [*graph.inputs, *(o for n in graph.nodes for o in n.outputs)]:
        found |= S.symbols(v.type.shape)
    return found
