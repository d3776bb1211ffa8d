"""Constant folding through the ops' numpy references."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import sympy

from llmc.errors import LLMCError, PassError
from llmc.ir.graph import Graph, Node
from llmc.ir.tensor import ArrayWeight
from llmc.passes.base import Pass, PassResult, register_pass
from llmc.passes.edit import is_output, replace_value, replacement_problem


@dataclass
class ConstantFoldOptions:
    """max_elements: the largest tensor folding may read or produce (elements, summed over inputs)."""

    max_elements: int = 1 << 20


@register_pass
class ConstantFold(Pass):
    """Replace nodes whose inputs are all constants by the constants they compute.

    A node folds when every input is a materialized constant (weights of a model captured
    without data never are), its shapes and attributes hold no symbols, it is read by
    something, it carries no quant/sparsity annotation, and it reads and writes at most
    ``max_elements``. The values come from the op's numpy reference, the interpreter's own::

        before:
          graph main(%x: f32[4]) {
            // 1 constants, 1 elements
            %s = sqrt(%two) : f32[]
            %d = div(%x, %s) : f32[4]
            return %d
          }
        after:
          graph main(%x: f32[4]) {
            // 2 constants, 2 elements
            %d = div(%x, %s_0) : f32[4]
            return %d
          }

    (``%two`` is left for DCE to remove.)
    """

    name = "constant_fold"
    invariant = "every value keeps the value the interpreter gives it; folded nodes become constants"
    Options = ConstantFoldOptions

    def run(self, graph: Graph) -> PassResult:
        folded: list[Node] = []
        skipped: Counter = Counter()
        for node in graph.nodes:
            if not all(v.is_const for v in node.inputs):
                continue
            reason = self.refusal(graph, node)
            if reason:
                skipped[reason] += 1
            elif self._fold(graph, node):
                folded.append(node)
            else:
                skipped["would rename a graph output"] += 1
        if folded:
            graph.remove_nodes(folded)
        return PassResult(graph, bool(folded), {"folded": len(folded), "skipped": dict(skipped)})

    def refusal(self, graph: Graph, node: Node) -> str | None:
        """Why a node whose inputs are all constants is not folded; None if it is foldable."""
        if not any(v.uses or is_output(graph, v) for v in node.outputs):
            return "dead"
        if node.meta.quant is not None or node.meta.sparsity is not None:
            return "annotated (quant/sparsity)"
        if node.op == "dequantize_packed":
            return "packed weight (kernels read the codes)"
        if not all(v.const.materialized for v in node.inputs):
            return "weights not materialized"
        if not all(v.type.is_static for v in [*node.inputs, *node.outputs]) or _has_symbols(node.attrs):
            return "symbolic shape"
        read = sum(v.type.numel for v in node.inputs)
        written = sum(v.type.numel for v in node.outputs)
        if max(read, written) > self.options.max_elements:
            return "too large"
        return None

    def _fold(self, graph: Graph, node: Node) -> bool:
        try:
            arrays = node.opdef.run([np.asarray(v.const.numpy()) for v in node.inputs], node.attrs)
        except LLMCError as e:
            raise type(e)(e.what, where=e.where or node.where, hint=e.hint) from None
        except (ValueError, IndexError, TypeError, FloatingPointError) as e:
            raise PassError(f"folding failed: the reference of {node.op} raised {e}", where=node.where) from e
        consts = []
        for v, a in zip(node.outputs, arrays):
            consts.append(graph.add_const(v.name, ArrayWeight(np.asarray(a, dtype=v.type.dtype.np), v.type.dtype)))
        if any(replacement_problem(graph, v, c) for v, c in zip(node.outputs, consts)):
            for c in consts:
                del graph.constants[c.name]
            return False
        for v, c in zip(node.outputs, consts):
            replace_value(graph, v, c)
        return True


def _has_symbols(attrs: dict) -> bool:
    def symbolic(v) -> bool:
        if isinstance(v, sympy.Expr):
            return True
        return isinstance(v, tuple) and any(symbolic(x) for x in v)

    return any(symbolic(v) for v in attrs.values())
