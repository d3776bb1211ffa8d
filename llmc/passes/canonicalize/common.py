"""Checks shared by canonicalization rules. Each returns None when fine, else the reason."""

from __future__ import annotations

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.graph import Node, Value, same_type
from llmc.passes.rewrite import Match


def keeps_type(m: Match, name: str) -> str | None:
    """The root's result has the type of capture ``name`` (nothing broadcast it bigger)."""
    out = m.root.outputs[0]
    if same_type(out.type, m[name].type):
        return None
    return f"the result {out.type} is not of the type of %{m[name].name} ({m[name].type}): broadcasting changes it"


def is_float(v: Value) -> str | None:
    return None if v.type.dtype.is_float else f"%{v.name} is {v.type.dtype}, not a float"


def scalar(m: Match, name: str, what: str) -> tuple[float | None, str | None]:
    """The value of a one-element constant capture, or a reason why it is not one."""
    value = m.scalar(name)
    if value is None:
        return None, f"{what} %{m[name].name} is not a one-element constant"
    return value, None


def trailing_axis(node: Node) -> int | None:
    """For a keepdims reduction over exactly the trailing axes [k, rank): k. Otherwise None."""
    rank = node.inputs[0].type.rank
    axes = sorted(a % rank for a in (node.attrs["axes"] or range(rank)))
    if not node.attrs["keepdims"] or not axes or axes != list(range(axes[0], rank)):
        return None
    return axes[0]


def fits_normalized(w: Value, x: Value, axis: int, what: str) -> str | None:
    """``w`` has exactly the normalized shape x.shape[axis:] and x's dtype (a norm's weight/bias)."""
    want = x.type.shape[axis % x.type.rank:]
    if w.type.rank != len(want) or not all(S.same(a, b) for a, b in zip(w.type.shape, want)):
        return f"{what} %{w.name}: {w.type} does not have the normalized shape {S.shape_str(want)}"
    if w.type.dtype != x.type.dtype:
        return f"{what} %{w.name} is {w.type.dtype} but the input is {x.type.dtype}"
    return None


def same_shape(a, b) -> bool:
    return len(a) == len(b) and all(S.same(x, y) for x, y in zip(a, b))


def broadcasts_to(small, big) -> bool:
    """Broadcasting ``small`` against ``big`` gives ``big`` (small is at most as large)."""
    if len(small) > len(big):
        return False
    try:
        return same_shape(S.broadcast(small, big), big)
    except ShapeError:
        return False
