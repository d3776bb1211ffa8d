"""Shapes whose dimensions are integers or symbolic expressions (``batch``, ``seq``, ``past + seq``).

A dimension is an ``int`` or a ``sympy.Expr`` over positive integer symbols. Expressions stay
exact (``seq * 384 / 384`` simplifies back to ``seq``), so shape inference works through
reshapes of dynamic tensors. Concrete sizes are recovered by binding symbols at run time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache

import sympy

from llmc.errors import ShapeError

Dim = int | sympy.Expr
Shape = tuple[Dim, ...]


@lru_cache(maxsize=None)
def sym(name: str) -> sympy.Symbol:
    """The symbol for a named dimension; positive integer, so simplification is exact."""
    return sympy.Symbol(name, integer=True, positive=True)


def dim(value: int | str | sympy.Expr) -> Dim:
    """Normalize to an int or a sympy expression (strings are parsed: ``"past+seq"``)."""
    if isinstance(value, bool):
        raise ShapeError(f"{value!r} is not a dimension")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = value.strip()
        if value.lstrip("-").isdigit():
            return int(value)
        names = {n: sym(n) for n in _identifiers(value)}
        value = sympy.sympify(value, locals=names)
    if isinstance(value, sympy.Expr):
        if value.is_Integer:
            return int(value)
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ShapeError(f"{value!r} is not a dimension") from None


def _identifiers(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text + " ":
        if ch.isalnum() or ch == "_":
            cur += ch
        else:
            if cur and not cur[0].isdigit():
                out.append(cur)
            cur = ""
    return out


def shape(dims: Iterable[int | str | sympy.Expr]) -> Shape:
    return tuple(dim(d) for d in dims)


def is_static(s: Shape) -> bool:
    return all(isinstance(d, int) for d in s)


def symbols(s: Shape) -> set[str]:
    out: set[str] = set()
    for d in s:
        if not isinstance(d, int):
            out |= {str(x) for x in d.free_symbols}
    return out


def numel(s: Shape) -> Dim:
    return dim(math.prod(s, start=sympy.Integer(1))) if s else 1


def dim_str(d: Dim) -> str:
    return str(d).replace(" ", "")


def shape_str(s: Shape) -> str:
    return "[" + ",".join(dim_str(d) for d in s) + "]"


def same(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    diff = sympy.Integer(a) - b if isinstance(a, int) else a - b
    return diff == 0 or (bool(diff.free_symbols) and sympy.simplify(diff) == 0)


def evaluate(d: Dim, env: Mapping[str, int]) -> int:
    """A concrete size, with every symbol bound by ``env``."""
    if isinstance(d, int):
        return d
    missing = {str(x) for x in d.free_symbols} - set(env)
    if missing:
        raise ShapeError(f"dimension {d} has unbound symbol(s) {sorted(missing)}")
    value = d.subs({sym(k): v for k, v in env.items() if sym(k) in d.free_symbols})
    if not value.is_Integer:
        raise ShapeError(f"dimension {d} is not an integer for {dict(env)}")
    return int(value)


def evaluate_shape(s: Shape, env: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(evaluate(d, env) for d in s)


def bind(declared: Shape, actual: tuple[int, ...], env: dict[str, int], *, what: str) -> None:
    """Bind the symbols of ``declared`` from ``actual`` (into ``env``), checking every fixed size."""
    if len(declared) != len(actual):
        raise ShapeError(f"{what} has rank {len(actual)} but the model expects rank {len(declared)} {shape_str(declared)}")
    for axis, (d, a) in enumerate(zip(declared, actual)):
        if isinstance(d, sympy.Symbol):
            name = str(d)
            if env.setdefault(name, a) != a:
                raise ShapeError(f"{what} axis {axis} is {a}, but symbol {name} is already {env[name]}")
    for axis, (d, a) in enumerate(zip(declared, actual)):
        if not isinstance(d, sympy.Symbol) and evaluate(d, env) != a:
            raise ShapeError(
                f"{what} axis {axis} is {a} but the model expects {dim_str(d)} (full shape {shape_str(declared)})"
            )


def broadcast(a: Shape, b: Shape) -> Shape:
    """Numpy broadcasting over symbolic shapes."""
    out: list[Dim] = []
    for i in range(max(len(a), len(b))):
        x = a[len(a) - 1 - i] if i < len(a) else 1
        y = b[len(b) - 1 - i] if i < len(b) else 1
        if x == 1:
            out.append(y)
        elif y == 1 or same(x, y):
            out.append(x)
        elif isinstance(x, int) and isinstance(y, int):
            raise ShapeError(f"shapes {shape_str(a)} and {shape_str(b)} do not broadcast")
        else:
            out.append(y if isinstance(x, int) else x)
    return tuple(reversed(out))


def to_json(d: Dim) -> int | str:
    return d if isinstance(d, int) else dim_str(d)
