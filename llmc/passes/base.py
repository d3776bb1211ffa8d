"""The pass contract and the registry of passes by name.

A pass is a class with a ``name``, a one-line ``invariant`` it keeps, its ``Options`` as a
dataclass, and a docstring that shows a small graph before and after in the printer's text
form. ``run(graph)`` rewrites the graph (in place, or by returning a new one) and returns a
``PassResult`` saying whether anything changed, with counters for the log::

    @register_pass
    class DeadCodeElimination(Pass):
        '''...before/after IR...'''
        name = "dce"
        invariant = "the outputs keep their values; only nodes and constants no output reads are removed"

        def run(self, graph):
            ...
            return PassResult(graph, changed=removed > 0, stats={"nodes_removed": removed})

``get_pass("dce")`` returns the class; ``get_pass("dce")(**options)`` makes a runnable pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llmc.errors import PassError
from llmc.ir.graph import Graph


@dataclass
class NoOptions:
    """A pass without options."""


@dataclass
class PassResult:
    """What one run of a pass did: the graph after it, whether it changed, and its counters."""

    graph: Graph
    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)


class Pass:
    """Base class of passes; subclasses set ``name``, ``invariant``, ``Options`` and ``run``."""

    name: ClassVar[str]
    invariant: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None, **values):
        if options is not None and values:
            raise PassError(f"pass {self.name}: give options either as an object or as keywords, not both")
        if options is None:
            known = {f.name for f in dataclasses.fields(self.Options)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise PassError(f"pass {self.name} has no option(s) {unknown}",
                                hint=f"its options are {sorted(known) or 'none'}")
            options = self.Options(**values)
        self.options = options

    def run(self, graph: Graph) -> PassResult:
        raise NotImplementedError(f"pass {self.name} does not implement run()")

    def __repr__(self) -> str:
        return f"<pass {self.name} {self.options}>"


_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: checks the contract and makes the pass reachable by name."""
    for attr in ("name", "invariant"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise PassError(f"pass class {cls.__name__} must set a non-empty {attr!r}")
    if not dataclasses.is_dataclass(cls.Options):
        raise PassError(f"pass {cls.name}: Options must be a dataclass")
    if not (cls.__doc__ or "").strip():
        raise PassError(f"pass {cls.name} needs a docstring showing the IR before and after")
    if cls.name in _PASSES and _PASSES[cls.name] is not cls:
        other = _PASSES[cls.name].__qualname__
        raise PassError(f"pass {cls.name} is registered twice ({other} and {cls.__qualname__})")
    _PASSES[cls.name] = cls
    return cls


def get_pass(name: str) -> type[Pass]:
    """The pass class registered as ``name``."""
    try:
        return _PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass {name!r}", hint=f"known passes: {', '.join(pass_names())}") from None


def pass_names() -> list[str]:
    return sorted(_PASSES)
