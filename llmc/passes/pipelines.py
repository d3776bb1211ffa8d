"""Pipelines are data: a named list of pass names you can print, store in a manifest, or edit.

An entry is a pass name, or ``fixpoint(a, b, ...)``: the group runs again and again until a
whole round changes nothing, at most ``FIXPOINT_MAX_ROUNDS`` rounds (``fixpoint[3](...)``
sets another bound). A string names a pipeline (``"O1"``, ``"-O1"``) or is itself a
comma-separated pipeline (``"canonicalize, dce"``)::

    >>> PIPELINES["O1"]
    ['fixpoint(canonicalize, constant_fold, cse, dce)']
    >>> PIPELINES["O2"]          # -O1, then llmc's fusion (``llmc.passes.fusion``)
    ['fixpoint(canonicalize, constant_fold, cse, dce)', 'fuse', 'dce']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from llmc.errors import PassError

FIXPOINT_MAX_ROUNDS = 8

PIPELINES: dict[str, list[str]] = {
    "O0": ["dce"],
    "O1": ["fixpoint(canonicalize, constant_fold, cse, dce)"],
    "O2": ["fixpoint(canonicalize, constant_fold, cse, dce)", "fuse", "dce"],
}
# Passes that run after quantization when a compile quantizes (they see the packed weights).
AFTER_QUANTIZATION = frozenset({"fuse"})


@dataclass(frozen=True)
class PassStep:
    """Run the pass registered as ``name`` once."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Fixpoint:
    """Run ``steps`` in rounds until a round changes nothing, at most ``max_rounds`` rounds."""

    steps: tuple[Step, ...]
    max_rounds: int = FIXPOINT_MAX_ROUNDS

    def __str__(self) -> str:
        bound = "" if self.max_rounds == FIXPOINT_MAX_ROUNDS else f"[{self.max_rounds}]"
        return f"fixpoint{bound}(" + ", ".join(map(str, self.steps)) + ")"


Step = PassStep | Fixpoint


def resolve(pipeline: str | Sequence[str]) -> list[Step]:
    """The steps of a pipeline given by name (``"O1"``/``"-O1"``), as text, or as a list of entries."""
    if isinstance(pipeline, str):
        key = pipeline.strip().lstrip("-")
        entries = PIPELINES[key] if key in PIPELINES else [pipeline]
    else:
        entries = list(pipeline)
    steps: list[Step] = []
    for entry in entries:
        steps.extend(_Parser(entry).entries())
    return steps


def split_for_quantization(steps: Sequence[Step]) -> tuple[list[Step], list[Step]]:
    """(steps before quantization, steps after): the pipeline is cut at its first top-level
    pass in ``AFTER_QUANTIZATION`` (fusion sees packed weights, so it follows quantization)."""
    for i, s in enumerate(steps):
        if isinstance(s, PassStep) and s.name in AFTER_QUANTIZATION:
            return list(steps[:i]), list(steps[i:])
    return list(steps), []


def pass_names_in(steps: Sequence[Step]) -> list[str]:
    """Every pass name a pipeline mentions, in order (fixpoint groups flattened)."""
    out: list[str] = []
    for s in steps:
        out.extend(pass_names_in(s.steps) if isinstance(s, Fixpoint) else [s.name])
    return out


_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][\w.]*)|(?P<int>\d+)|(?P<punct>[(),\[\]]))")


class _Parser:
    """Recursive descent over ``entry := name | fixpoint ['[' int ']'] '(' entry (',' entry)* ')'``."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                self._fail(f"unexpected character {text[pos:].strip()[:1]!r}")
            self.tokens.append(m.group(m.lastgroup))
            pos = m.end()
        self.i = 0

    def _fail(self, what: str):
        raise PassError(f"bad pipeline {self.text!r}: {what}",
                        hint="write pass names separated by commas, groups as fixpoint(a, b)")

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        tok = self._peek()
        if tok is None or (expected is not None and tok != expected):
            self._fail(f"expected {expected or 'more'} at token {self.i}, found {tok!r}")
        self.i += 1
        return tok

    def entries(self) -> list[Step]:
        out = self._list()
        if self._peek() is not None:
            self._fail(f"unexpected {self._peek()!r}")
        return out

    def _list(self) -> list[Step]:
        out = [self._entry()]
        while self._peek() == ",":
            self._take(",")
            out.append(self._entry())
        return out

    def _entry(self) -> Step:
        name = self._take()
        if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
            self._fail(f"expected a pass name, found {name!r}")
        if name != "fixpoint":
            return PassStep(name)
        bound = FIXPOINT_MAX_ROUNDS
        if self._peek() == "[":
            self._take("[")
            text = self._take()
            if not text.isdigit() or int(text) < 1:
                self._fail(f"fixpoint bound must be a positive integer, found {text!r}")
            bound = int(text)
            self._take("]")
        self._take("(")
        steps = self._list()
        self._take(")")
        return Fixpoint(tuple(steps), bound)
