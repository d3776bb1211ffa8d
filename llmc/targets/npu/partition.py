"""The NPU partitioner: tags each node ``npu`` or ``cpu`` and says why. It changes nothing.

    placement = partition(graph, profile)      # {node name: Placement("npu" | "cpu", reason)}

As ExecuTorch's partitioners, this only decides; ``chunker.cut`` cuts the graph afterwards.
Rules are tried in order and the first that answers decides (a rule returns None when it does
not apply): ops the profile keeps on the CPU by choice, tensors that are not float (int64 ids,
bool masks), ops the profile lacks (a warning names them: they run on the CPU in float32),
and otherwise the NPU. Invariant: every node of the graph gets exactly one placement.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

from llmc.errors import TargetError
from llmc.ir.dtypes import DType
from llmc.ir.graph import Graph, Node
from llmc.targets.npu.profiles import Profile

NPU, CPU = "npu", "cpu"
FLOATS = (DType.f32, DType.f16, DType.bf16)


class Placement(NamedTuple):
    device: str
    reason: str


class NpuFallbackWarning(UserWarning):
    """An op no profile rule lets on the NPU runs on the CPU in float32."""


Rule = Callable[[Node, Profile], Placement | None]


def _by_choice(node: Node, profile: Profile) -> Placement | None:
    reason = profile.cpu_by_choice.get(node.op)
    return Placement(CPU, reason) if reason else None


def _unsupported(node: Node, profile: Profile) -> Placement | None:
    if node.op in profile.ops:
        return None
    return Placement(CPU, f"unsupported: {node.op} is not an op of profile {profile.name}")


def _not_float(node: Node, profile: Profile) -> Placement | None:
    values = [v for v in (*node.inputs, *node.outputs) if not v.is_const]
    other = sorted({str(v.type.dtype) for v in values if v.type.dtype not in FLOATS})
    return Placement(CPU, f"{'/'.join(other)} tensors: the NPU runs quantized float data only") if other else None


RULES: tuple[Rule, ...] = (_by_choice, _not_float, _unsupported)


def partition(graph: Graph, profile: Profile) -> dict[str, Placement]:
    """Node name -> placement; warns (``NpuFallbackWarning``) once per op the profile does not run,
    and refuses a graph with no node on the NPU."""
    placement: dict[str, Placement] = {}
    fallback: dict[str, list[str]] = {}
    for node in graph.nodes:
        for rule in RULES:
            decided = rule(node, profile)
            if decided is not None:
                break
        else:
            decided = Placement(NPU, f"{node.op} is an op of profile {profile.name}")
        placement[node.name] = decided
        if decided.reason.startswith("unsupported"):
            fallback.setdefault(node.op, []).append(node.meta.origin or node.name)
    for op, where in sorted(fallback.items()):
        shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
        warnings.warn(f"op {op} is not supported by NPU profile {profile.name}: {len(where)} node(s) run on the CPU "
                      f"in float32 ({shown})", NpuFallbackWarning, stacklevel=2)
    if graph.nodes and not any(p.device == NPU for p in placement.values()):
        ops = sorted({n.op for n in graph.nodes})
        raise TargetError(f"NPU profile {profile.name} runs none of the ops of {graph.name} ({', '.join(ops)}): "
                          f"nothing would run on the NPU",
                          hint="use a profile that supports some of them (built-in: qnn-htp, generic-int8), "
                               "or compile for --target=cpu")
    return placement


def summary(graph: Graph, placement: dict[str, Placement], flops: dict[str, float]) -> dict:
    """Manifest facts: nodes and flops on the NPU (fractions), and the reason of every CPU op kind."""
    on_npu = [n for n in graph.nodes if placement[n.name].device == NPU]
    total = sum(flops.values()) or 1.0
    reasons: dict[str, str] = {}
    for n in graph.nodes:
        if placement[n.name].device == CPU:
            reasons.setdefault(n.op, placement[n.name].reason)
    return {
        "nodes": len(graph.nodes), "npu_nodes": len(on_npu),
        "npu_node_fraction": len(on_npu) / max(len(graph.nodes), 1),
        "npu_flop_fraction": sum(flops.get(n.name, 0.0) for n in on_npu) / total,
        "cpu_ops": dict(sorted(reasons.items())),
    }
