"""The reference interpreter: runs any graph on numpy. The oracle for every pass and target.

Annotations are honoured: a node whose ``meta.quant`` is set reads its weight as the
quantize-dequantize round trip of that spec, exactly what a target must compute.
Values are freed after their last use, so peak memory follows the live set, not the graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import sympy

from llmc.errors import InputError, LLMCError, ShapeError
from llmc.ir import shapes as S
from llmc.ir.graph import Graph, Value
from llmc.ir.ops.registry import substitute


def bind_inputs(graph: Graph, arrays: Sequence[np.ndarray]) -> dict[str, int]:
    """Check ``arrays`` against the graph's inputs; return the sizes of its symbols."""
    if len(arrays) != len(graph.inputs):
        raise InputError(f"the model takes {len(graph.inputs)} inputs ({', '.join(v.name for v in graph.inputs)}), got {len(arrays)}")
    env: dict[str, int] = {}
    # inputs whose dims are numbers or plain symbols first, so ``seq + 1`` is checked with ``seq`` known
    pairs = sorted(zip(graph.inputs, arrays), key=lambda p: not all(isinstance(d, (int, sympy.Symbol)) for d in p[0].type.shape))
    for v, a in pairs:
        if np.dtype(a.dtype) != v.type.dtype.np:
            raise InputError(f"input {v.name} has dtype {a.dtype} but the model expects {v.type.dtype}",
                             hint="convert the array before running")
        try:
            S.bind(v.type.shape, tuple(a.shape), env, what=f"input {v.name}")
        except ShapeError as e:
            raise InputError(e.what, hint="give inputs of the shape the model was compiled for") from None
    return env


def run_graph(graph: Graph, arrays: Sequence[np.ndarray], *, progress=None) -> list[np.ndarray]:
    """Run ``graph`` on positional inputs; returns its outputs in order."""
    arrays = [np.asarray(a) for a in arrays]
    env = bind_inputs(graph, arrays)
    values: dict[int, np.ndarray] = {id(v): a for v, a in zip(graph.inputs, arrays)}
    last_use = _last_uses(graph)
    keep = {id(v) for v in graph.outputs}
    for step, node in enumerate(graph.nodes):
        args = [_read(v, values, node) for v in node.inputs]
        if node.meta.quant is not None:
            from llmc.ir.fake_quant import apply_weight_quant

            args = apply_weight_quant(node, args)
        try:
            outs = node.opdef.run(args, substitute(node.attrs, env))
        except LLMCError as e:
            raise type(e)(e.what, where=e.where or node.where, hint=e.hint) from None
        except (ValueError, IndexError, TypeError, FloatingPointError) as e:
            raise LLMCError(f"reference execution failed: {e}", where=node.where) from e
        for v, out in zip(node.outputs, outs):
            values[id(v)] = np.asarray(out, dtype=v.type.dtype.np)
        for v in node.inputs:
            if last_use.get(id(v)) == step and id(v) not in keep and v.const is None:
                values.pop(id(v), None)
        if progress is not None:
            progress(step + 1, len(graph.nodes))
    return [_read(v, values, None) for v in graph.outputs]


def _read(v: Value, values: dict[int, np.ndarray], node) -> np.ndarray:
    if id(v) in values:
        return values[id(v)]
    if v.const is not None:
        return np.asarray(v.const.numpy())
    raise LLMCError(f"value %{v.name} was read before being computed", where=node.where if node else None)


def _last_uses(graph: Graph) -> dict[int, int]:
    out: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            out[id(v)] = i
    return out


def run(graph: Graph, inputs: Mapping[str, np.ndarray], **kw) -> dict[str, np.ndarray]:
    """Run ``graph`` on inputs keyed by name; returns outputs keyed by name."""
    names = [v.name for v in graph.inputs]
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise InputError(
            f"inputs do not match the model: missing {missing}, unexpected {extra}",
            hint=f"the model's inputs are {names}",
        )
    outs = run_graph(graph, [inputs[n] for n in names], **kw)
    return {v.name: o for v, o in zip(graph.outputs, outs)}
