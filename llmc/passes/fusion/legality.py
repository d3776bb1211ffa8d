"""What one kernel of a target may contain, and the check every fused node must pass.

A target declares its ``KernelLimits`` (``Target.kernel_limits``); the fusion pass refuses a
group that breaks them (the refusal names the rule and the limit), and ``Target.check`` runs
the same check on every ``fused`` node of a graph before lowering, so a fused graph written by
hand or for another target is refused at compile time, naming the rule that made the node,
never at kernel build time.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from llmc.ir import shapes as S
from llmc.ir.graph import Graph

# Op kinds that reduce (a kernel's loop nest holds at most ``max_reductions`` of them).
REDUCING_KINDS = frozenset({"matmul", "norm", "reduction", "attention", "conv", "pool"})
# Elementwise ops whose value at an index reads its inputs at that index only (``rope`` reads pairs).
POINTWISE_EXCLUDED = frozenset({"rope", "trilu"})


@dataclass(frozen=True)
class KernelLimits:
    """What one kernel may contain.

    max_reductions: reducing ops (products, norms, softmax...) in one kernel.
    max_outputs:    tensors one kernel writes.
    epilogue_ops:   elementwise ops a product's epilogue may hold (its schedule computes them on
                    the register tile before writing it back).
    kinds:          op kinds a fused body may hold at all.
    """

    max_reductions: int = 1
    max_outputs: int = 2
    epilogue_ops: frozenset[str] = frozenset({
        "add", "sub", "mul", "div", "maximum", "minimum", "relu", "gelu", "silu", "sigmoid", "tanh", "erf",
        "exp", "neg", "clip", "leaky_relu", "cast",
    })
    kinds: frozenset[str] = frozenset({"elementwise", "shape", "matmul", "norm", "reduction", "quant", "conv"})


def is_pointwise(node) -> bool:
    return node.opdef.kind == "elementwise" and node.op not in POINTWISE_EXCLUDED


def kernel_problem(body: Graph, limits: KernelLimits) -> str | None:
    """Why ``body`` cannot be one kernel under ``limits``; None when it can."""
    unbound = sorted(_symbols_used(body) - {str(d) for v in body.inputs for d in v.type.shape
                                            if isinstance(d, sympy.Symbol)})
    if unbound:
        return f"its sizes use {', '.join(unbound)}, which no input of the kernel has as a dimension"
    kinds = sorted({n.opdef.kind for n in body.nodes} - limits.kinds)
    if kinds:
        ops = sorted({n.op for n in body.nodes if n.opdef.kind in kinds})
        return f"it holds {', '.join(ops)} ({', '.join(kinds)}), which this target does not put in a fused kernel"
    reducing = [n for n in body.nodes if n.opdef.kind in REDUCING_KINDS]
    if len(reducing) > limits.max_reductions:
        return (f"it holds {len(reducing)} reductions ({', '.join(n.op for n in reducing)}); "
                f"one kernel of this target holds at most {limits.max_reductions}")
    if len(body.outputs) > limits.max_outputs:
        return f"it writes {len(body.outputs)} tensors; one kernel of this target writes at most {limits.max_outputs}"
    products = [n for n in reducing if n.opdef.kind == "matmul"]
    if products:
        after = _downstream(products[0])
        bad = sorted({n.op for n in after if n.opdef.kind == "elementwise" and n.op not in limits.epilogue_ops})
        if bad:
            return f"its product's epilogue holds {', '.join(bad)}, which this target's matmul schedule does not accept"
    return None


def _symbols_used(body: Graph) -> set[str]:
    """Symbols in the body's value types and node attributes."""
    out: set[str] = set()
    for node in body.nodes:
        for v in node.outputs:
            out |= S.symbols(v.type.shape)
        for value in node.attrs.values():
            for item in value if isinstance(value, (list, tuple)) else [value]:
                out |= {str(s) for s in getattr(item, "free_symbols", ())}
    return out


def _downstream(node) -> list:
    """Nodes of the same body computed from ``node``'s outputs."""
    out, frontier, seen = [], list(node.outputs), set()
    while frontier:
        for user, _ in frontier.pop().uses:
            if id(user) not in seen:
                seen.add(id(user))
                out.append(user)
                frontier.extend(user.outputs)
    return out
