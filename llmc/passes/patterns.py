"""The pattern language of rewrite rules, written like the IR builder.

    x = P.any("x")
    P.op("mul", x, P.const("half", value=0.5))        # x * 0.5 or 0.5 * x (mul commutes)
    P.op("reduce_mean", x, name="mean", keepdims=True) # attribute equal to a value ...
    P.op("transpose", x, perm=lambda p: len(p) == 4)   # ... or accepted by a predicate
    P.op("reshape", x, where=lambda node: ...)         # any condition on the matched node
    P.either(P.op("div", x, P.const(value=2.0)), P.op("mul", x, P.const(value=0.5)))
    P.product(x, P.const(value=0.5), y)                # x * 0.5 * y in any association

A pattern matches a ``Value``. ``name`` captures what matched; a name met twice must match the
same value both times (so ``sub(x, mean(x))`` reads one ``x``). Binary ops in ``COMMUTATIVE``
match their inputs in both orders. Matching backtracks through alternatives and orders and
yields every way the pattern fits; the engine (``llmc.passes.rewrite``) takes the first one a
rule's check accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from llmc.ir.graph import Node, Value

COMMUTATIVE = frozenset({"add", "mul", "maximum", "minimum", "equal", "and", "or"})

# A constant is read (to compare its value) only when it has at most this many elements.
SMALL_CONSTANT = 4096


class MatchState:
    """Bindings while matching: captured values by name, and the matched nodes (root first)."""

    def __init__(self):
        self.captures: dict[str, Value] = {}
        self.nodes: list[Node] = []

    def bind(self, name: str | None, value: Value, rest: Callable[[], Iterator[None]]) -> Iterator[None]:
        """Bind ``name`` to ``value`` (or check an earlier binding) and go on matching with ``rest``."""
        if name is None:
            yield from rest()
            return
        bound = self.captures.get(name)
        if bound is not None:
            if bound is value:
                yield
            return
        self.captures[name] = value
        try:
            yield from rest()
        finally:
            del self.captures[name]


class Pattern:
    """Base of patterns. ``match(value, state)`` yields once per way the pattern fits ``value``."""

    name: str | None = None

    def match(self, value: Value, state: MatchState) -> Iterator[None]:
        raise NotImplementedError

    def root_ops(self) -> frozenset[str] | None:
        """The ops a matched value's producer can have (None: anything), for indexing rules."""
        return None


def _nothing() -> Iterator[None]:
    yield


class AnyValue(Pattern):
    """Any value: an input, a constant, or a node output; ``where`` may restrict it."""

    def __init__(self, name: str | None = None, where: Callable[[Value], bool] | None = None):
        self.name = name
        self.where = where

    def match(self, value, state):
        if self.where is None or self.where(value):
            yield from state.bind(self.name, value, _nothing)

    def __str__(self):
        return f"%{self.name or '_'}"


def small_array(value: Value) -> np.ndarray | None:
    """The data of a small, materialized constant; None for anything else (never reads big weights)."""
    if not value.is_const or not value.const.materialized:
        return None
    n = value.type.numel
    if not isinstance(n, int) or n > SMALL_CONSTANT:
        return None
    return np.asarray(value.const.numpy())


class Constant(Pattern):
    """A graph constant; with ``value``, a small one whose every element is ``value`` (relative ``tol``)."""

    def __init__(self, name: str | None = None, value: float | None = None, tol: float = 1e-3):
        self.name = name
        self.value = value
        self.tol = tol

    def match(self, value, state):
        if not value.is_const:
            return
        if self.value is not None:
            data = small_array(value)
            if data is None or data.size == 0:
                return
            diff = np.abs(data.astype(np.float64) - self.value)
            if not np.all(diff <= self.tol * max(1.0, abs(self.value))):
                return
        yield from state.bind(self.name, value, _nothing)

    def __str__(self):
        return f"{self.value}" if self.value is not None else f"%{self.name or '_'}:const"


class Op(Pattern):
    """A value produced by ``op`` whose inputs match ``inputs`` (same count), whose attributes
    equal (or satisfy, for callables) ``attrs``, and whose node passes ``where`` (asked once the
    inputs matched, so it may rely on their structure). ``output`` picks the output of
    multi-output ops. Unlike a rule's check, these conditions fail silently: use them for what
    merely makes a node a different pattern (an identity reshape or not)."""

    def __init__(self, op: str, inputs: Sequence[Pattern], *, name: str | None = None, output: int = 0,
                 attrs: dict[str, Any] | None = None, where: Callable[[Node], bool] | None = None):
        self.op = op
        self.inputs = tuple(inputs)
        self.name = name
        self.output = output
        self.attrs = attrs or {}
        self.where = where

    def root_ops(self):
        return frozenset({self.op})

    def match(self, value, state):
        node = value.producer
        if node is None or node.op != self.op or len(node.inputs) != len(self.inputs):
            return
        if len(node.outputs) <= self.output or node.outputs[self.output] is not value:
            return
        for key, want in self.attrs.items():
            have = node.attrs.get(key)
            if not (want(have) if callable(want) else have == want):
                return
        yield from state.bind(self.name, value, lambda: self._match_node(node, state))

    def _match_node(self, node: Node, state: MatchState) -> Iterator[None]:
        state.nodes.append(node)
        try:
            orders = [self.inputs]
            if self.op in COMMUTATIVE and len(self.inputs) == 2:
                orders.append(self.inputs[::-1])
            for pats in orders:
                for _ in _match_all(pats, node.inputs, state):
                    if self.where is None or self.where(node):
                        yield
        finally:
            state.nodes.pop()

    def __str__(self):
        args = ", ".join(map(str, self.inputs))
        attrs = "".join(f", {k}={'<check>' if callable(v) else v}" for k, v in self.attrs.items())
        return f"{self.op}({args}{attrs})"


def _match_all(pats: Sequence[Pattern], values: Sequence[Value], state: MatchState) -> Iterator[None]:
    if not pats:
        yield
        return
    for _ in pats[0].match(values[0], state):
        yield from _match_all(pats[1:], values[1:], state)


class Either(Pattern):
    """Every way any of the alternatives matches, the first alternative first; ``name`` captures
    the value (so a pattern used twice is matched once and then only compared)."""

    def __init__(self, alternatives: Sequence[Pattern], name: str | None = None):
        self.alternatives = tuple(alternatives)
        self.name = name

    def root_ops(self):
        ops = [a.root_ops() for a in self.alternatives]
        return None if any(o is None for o in ops) else frozenset().union(*ops)

    def match(self, value, state):
        yield from state.bind(self.name, value, lambda: self._match_any(value, state))

    def _match_any(self, value: Value, state: MatchState) -> Iterator[None]:
        for alt in self.alternatives:
            yield from alt.match(value, state)

    def __str__(self):
        return "either(" + " | ".join(map(str, self.alternatives)) + ")"


class P:
    """Builders of patterns (the names rules are written with)."""

    @staticmethod
    def any(name: str | None = None, *, where: Callable[[Value], bool] | None = None) -> Pattern:
        return AnyValue(name, where)

    @staticmethod
    def const(name: str | None = None, *, value: float | None = None, tol: float = 1e-3) -> Pattern:
        return Constant(name, value, tol)

    @staticmethod
    def op(op: str, *inputs: Pattern, name: str | None = None, output: int = 0,
           where: Callable[[Node], bool] | None = None, **attrs) -> Pattern:
        return Op(op, inputs, name=name, output=output, attrs=attrs, where=where)

    @staticmethod
    def either(*alternatives: Pattern, name: str | None = None) -> Pattern:
        return Either(alternatives, name)

    @staticmethod
    def maybe(op: str, inner: Pattern, **attrs) -> Pattern:
        """``op(inner)`` or just ``inner`` (an optional cast, an optional scaling...)."""
        return Either((Op(op, (inner,), attrs=attrs), inner))

    @staticmethod
    def product(a: Pattern, b: Pattern, c: Pattern, *, name: str | None = None) -> Pattern:
        """a * b * c in any association and order."""
        return Either((
            Op("mul", (Op("mul", (a, b)), c)),
            Op("mul", (Op("mul", (a, c)), b)),
            Op("mul", (Op("mul", (b, c)), a)),
        ), name)
