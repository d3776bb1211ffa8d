"""Checking a transformation: the IR before and after, and the interpreter's outputs unchanged."""

from __future__ import annotations

from llmc.ir import Graph, run
from llmc.testing import assert_close


def transformed(g: Graph, inputs: dict, transform, *, rtol: float = 1e-5):
    """Apply ``transform(g)`` (in place) and check the outputs keep their names and values.

    Returns ``(before, after, result)``: the printed IR before and after, and what ``transform``
    returned (a pass result or a rewrite report) for the test to inspect.
    """
    g.verify()
    before = str(g)
    expected = run(g, inputs)
    result = transform(g)
    g.verify()
    got = run(g, inputs)
    assert list(got) == list(expected), "graph outputs were renamed"
    for name, value in expected.items():
        assert_close(got[name], value, rtol)
    return before, str(g), result
