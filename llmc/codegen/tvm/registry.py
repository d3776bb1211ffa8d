"""The table op name -> lowering function, filled by the ``ops_*`` modules of this package.

A lowering function has the signature ``fn(ctx, node, args) -> relax.Expr | list[relax.Expr]``:
``args`` are the Relax values of the node's inputs in order, the result is one expression per
output (expressions are emitted by the caller under the node's name; a lowering may emit
intermediate bindings itself with ``ctx.emit``/``ctx.emit_te``).
"""

from __future__ import annotations

from collections.abc import Callable

LoweringFn = Callable[..., object]

_LOWERINGS: dict[str, LoweringFn] = {}


def lowers(*ops: str):
    """Decorator: register the function as the lowering of each op in ``ops``."""

    def wrap(fn: LoweringFn) -> LoweringFn:
        for op in ops:
            if op in _LOWERINGS:
                raise ValueError(f"op {op} has two TVM lowerings")
            _LOWERINGS[op] = fn
        return fn

    return wrap


def lowering(op: str) -> LoweringFn | None:
    _load()
    return _LOWERINGS.get(op)


def lowered_ops() -> set[str]:
    _load()
    return set(_LOWERINGS)


def _load() -> None:
    from llmc.codegen.tvm import (  # noqa: F401  (each module registers its lowerings)
        ops_elementwise,
        ops_fused,
        ops_linalg,
        ops_nn,
        ops_quant,
        ops_reduce,
        ops_shape,
        ops_sparse,
        ops_sparsity,
        ops_transformer,
    )
