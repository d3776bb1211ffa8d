"""The IR: a ``Graph`` of ``Node``s that read and write single-assignment ``Value``s.

The graph keeps its own books: setting a node's inputs updates the users of the old and new
values; ``replace_uses`` redirects every user at once; ``remove_nodes`` removes a set of nodes
only if nothing outside the set still reads them. ``verify()`` checks all of it and re-infers
every type from the op registry.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from llmc.errors import VerifyError
from llmc.ir import shapes as S
from llmc.ir.meta import NodeMeta
from llmc.ir.tensor import ArrayWeight, Weight
from llmc.ir.types import TensorType


class Value:
    """A tensor: a graph input, a constant (``const`` holds its weight), or a node output."""

    __slots__ = ("name", "type", "producer", "const", "uses")

    def __init__(self, name: str, type: TensorType, producer: Node | None = None, const: Weight | None = None):
        self.name = name
        self.type = type
        self.producer = producer
        self.const = const
        self.uses: list[tuple[Node, int]] = []

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def users(self) -> list[Node]:
        return list(dict.fromkeys(n for n, _ in self.uses))

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application. ``attrs`` follow the op's registry entry; ``meta`` is typed metadata."""

    __slots__ = ("name", "op", "_inputs", "outputs", "attrs", "meta")

    def __init__(self, name: str, op: str, inputs: Sequence[Value], attrs: dict, meta: NodeMeta):
        self.name = name
        self.op = op
        self._inputs: tuple[Value, ...] = ()
        self.outputs: list[Value] = []
        self.attrs = attrs
        self.meta = meta
        self.inputs = inputs

    @property
    def inputs(self) -> tuple[Value, ...]:
        return self._inputs

    @inputs.setter
    def inputs(self, values: Sequence[Value]) -> None:
        for i, v in enumerate(self._inputs):
            v.uses.remove((self, i))
        self._inputs = tuple(values)
        for i, v in enumerate(self._inputs):
            v.uses.append((self, i))

    def set_input(self, index: int, value: Value) -> None:
        new = list(self._inputs)
        new[index] = value
        self.inputs = new

    @property
    def output(self) -> Value:
        return self.outputs[0]

    @property
    def opdef(self):
        from llmc.ir.ops import registry

        return registry.get(self.op)

    @property
    def where(self) -> str:
        return f"{self.op} {self.name}" + (f" from {self.meta.origin}" if self.meta.origin else "")

    def __repr__(self) -> str:
        return f"<Node {self.name}: {self.op}>"


class Graph:
    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, Value] = {}
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._counter = itertools.count()

    # -- building ---------------------------------------------------------------------------

    def fresh(self, hint: str, *, taken: set[str] | None = None) -> str:
        """A value name (or a name in ``taken``) not used in this graph yet, derived from ``hint``.

        Names keep the characters model formats use in tensor names (``gpu_0/data_0``,
        ``input:0``, ``layer-1``), so inputs and outputs carry the source model's names.
        """
        taken = self._names if taken is None else taken
        base = "".join(c if c.isalnum() or c in "._/:-" else "_" for c in hint) or "v"
        name = base
        while name in taken:
            name = f"{base}_{next(self._counter)}"
        taken.add(name)
        return name

    def add_input(self, name: str, type: TensorType) -> Value:
        v = Value(self.fresh(name), type)
        self.inputs.append(v)
        return v

    def add_const(self, name: str, weight: Weight | np.ndarray) -> Value:
        if not isinstance(weight, Weight):
            weight = ArrayWeight(weight)
        v = Value(self.fresh(name), weight.type, const=weight)
        self.constants[v.name] = v
        return v

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value],
        attrs: dict | None = None,
        *,
        meta: NodeMeta | None = None,
        name: str | None = None,
        out_names: Sequence[str] | None = None,
        before: Node | None = None,
    ) -> Node:
        """Add a node, inferring its output types from the registry. Appends unless ``before``."""
        from llmc.ir.ops import registry

        opdef = registry.get(op)
        attrs = opdef.complete_attrs(attrs or {}, where=name or op)
        node = Node(self.fresh(name or op, taken=self._node_names), op, inputs, attrs, meta or NodeMeta())
        out_types = opdef.infer_node(node)
        names = out_names or [node.name if len(out_types) == 1 else f"{node.name}.{i}" for i in range(len(out_types))]
        node.outputs = [Value(self.fresh(n), t, producer=node) for n, t in zip(names, out_types)]
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    def call(self, op: str, *inputs: Value, meta: NodeMeta | None = None, before: Node | None = None, **attrs):
        """Builder form of ``add_node``: returns the output value (a tuple if several)."""
        node = self.add_node(op, inputs, attrs, meta=meta, before=before)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    # -- editing ----------------------------------------------------------------------------

    def replace_uses(self, old: Value, new: Value) -> None:
        """Every reader of ``old`` (nodes and graph outputs) reads ``new`` instead."""
        if old is new:
            return
        for node, i in list(old.uses):
            node.set_input(i, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Remove ``nodes`` together; refuses (changing nothing) if anything else reads them."""
        doomed = set(nodes)
        for n in doomed:
            for v in n.outputs:
                outside = [u for u, _ in v.uses if u not in doomed]
                if outside or v in self.outputs:
                    reader = outside[0].where if outside else "a graph output"
                    raise VerifyError(
                        f"cannot remove {n.where}: its output %{v.name} is still read by {reader}",
                        hint="replace the uses first (graph.replace_uses)",
                    )
        for n in doomed:
            n.inputs = ()
        self.nodes = [n for n in self.nodes if n not in doomed]

    def remove_unused_constants(self) -> int:
        dead = [k for k, v in self.constants.items() if not v.uses and v not in self.outputs]
        for k in dead:
            del self.constants[k]
        return len(dead)

    def sort(self) -> None:
        """Restore a topological order, keeping the current order wherever it is already valid."""
        ready = {id(v) for v in self.inputs} | {id(v) for v in self.constants.values()}
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            rest = []
            for n in pending:
                if all(id(v) in ready for v in n.inputs):
                    ordered.append(n)
                    ready.update(id(v) for v in n.outputs)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                raise VerifyError(f"the graph has a cycle through {rest[0].where}")
            pending = rest
        self.nodes = ordered

    # -- reading ----------------------------------------------------------------------------

    def values(self) -> Iterable[Value]:
        yield from self.inputs
        yield from self.constants.values()
        for n in self.nodes:
            yield from n.outputs

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise KeyError(name)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def symbols(self) -> list[str]:
        """The symbolic dimensions of the graph's inputs, in order of appearance."""
        out: dict[str, None] = {}
        for v in self.inputs:
            for d in v.type.shape:
                if not isinstance(d, int):
                    out.update(dict.fromkeys(sorted(str(s) for s in d.free_symbols)))
        return list(out)

    def parameter_count(self) -> int:
        total = 0
        for v in self.constants.values():
            n = v.type.numel
            total += n if isinstance(n, int) else 0
        return total

    def weight_bytes(self) -> int:
        return int(sum(v.type.nbytes() for v in self.constants.values()))

    def op_histogram(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.op] = out.get(n.op, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    # -- checking ---------------------------------------------------------------------------

    def verify(self) -> None:
        """Check structure and re-infer every type; raise ``VerifyError`` naming the node."""
        from llmc.ir.verify import verify

        verify(self)

    def __str__(self) -> str:
        from llmc.ir.printer import format_graph

        return format_graph(self)


def same_type(a: TensorType, b: TensorType) -> bool:
    return a.dtype == b.dtype and a.rank == b.rank and all(S.same(x, y) for x, y in zip(a.shape, b.shape))
