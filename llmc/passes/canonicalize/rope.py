"""Rotary position embedding written with Hugging Face's ``rotate_half``, raised back to ``rope``.

    %x1 = slice(%x) {axes=[-1], starts=[0], ends=[h]}      (or split(%x) into two halves)
    %x2 = slice(%x) {axes=[-1], starts=[h], ends=[end]}
    %r = concat(neg(%x2), %x1) {axis=-1}
    %y = add(mul(%x, %cos), mul(%r, %sin))                 -> rope(%x, %cos, %sin)
"""

from __future__ import annotations

from llmc.ir import shapes as S
from llmc.passes.canonicalize.common import broadcasts_to, is_float, keeps_type
from llmc.passes.patterns import P
from llmc.passes.rewrite import Match, Rule, RuleSet

x = P.any("x")
_first = P.either(P.op("slice", x, name="x1"), P.op("split", x, output=0, name="x1"))
_second = P.either(P.op("slice", x, name="x2"), P.op("split", x, output=1, name="x2"))
_negated = P.either(P.op("neg", _second), P.op("mul", _second, P.const(value=-1.0, tol=0.0)))
_rotated = P.op("concat", _negated, _first, name="rot")
_pattern = P.op("add", P.op("mul", x, P.any("cos")), P.op("mul", _rotated, P.any("sin")))


def _bounds(node, rank: int) -> tuple[int, int] | None:
    """(start, end) of a unit-step slice of the last axis with static bounds; None for anything else."""
    attrs = node.attrs
    if [a % rank for a in attrs["axes"]] != [rank - 1] or attrs["steps"] not in ((), (1,)):
        return None
    (lo,), (hi,) = attrs["starts"], attrs["ends"]
    return (lo, hi) if isinstance(lo, int) and isinstance(hi, int) else None


def _halves_reason(m: Match) -> str | None:
    rank, d = m["x"].type.rank, m["x"].type.shape[-1]
    if not isinstance(d, int) or d % 2:
        return f"the last axis of %{m['x'].name} ({S.dim_str(d)}) is not a static even size"
    half = d // 2
    x1, x2 = m.node("x1"), m.node("x2")
    if x1.op == "split":
        ok = x1 is x2 and x1.attrs["axis"] % rank == rank - 1 and tuple(x1.attrs["sizes"]) == (half, half)
    else:
        first, second = _bounds(x1, rank), _bounds(x2, rank) if x2.op == "slice" else None
        ok = first == (0, half) and second is not None and second[0] == half and second[1] >= d
    if not ok:
        return f"the two halves are not x[..., :{half}] and x[..., {half}:]"
    if m.node("rot").attrs["axis"] % rank != rank - 1:
        return "the halves are not concatenated along the last axis"
    return None


def _tables_reason(m: Match) -> str | None:
    xt = m["x"].type
    for name in ("cos", "sin"):
        t = m[name].type
        if t.dtype != xt.dtype or not broadcasts_to(t.shape, xt.shape):
            return f"%{m[name].name}: {t} does not broadcast to %{m['x'].name}: {xt}"
    return None


def _check(m: Match) -> str | None:
    return is_float(m["x"]) or _halves_reason(m) or _tables_reason(m) or keeps_type(m, "x")


rope = Rule("rope", _pattern, lambda m: m.call("rope", m["x"], m["cos"], m["sin"], interleaved=False), check=_check)

RULES = RuleSet("rope", (rope,))
