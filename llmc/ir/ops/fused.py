"""``fused``: one node that owns a subgraph, executed (and later compiled) as one kernel."""

from __future__ import annotations

from llmc.errors import ShapeError
from llmc.ir import shapes as S
from llmc.ir.ops.registry import Attr, Cost, OpDef, register


def _infer(types, attrs):
    body = attrs["body"]
    if len(types) != len(body.inputs):
        raise ShapeError(f"fused body takes {len(body.inputs)} inputs, got {len(types)}")
    for t, v in zip(types, body.inputs):
        if t.dtype != v.type.dtype or t.rank != v.type.rank:
            raise ShapeError(f"fused input {t} does not match body input %{v.name}: {v.type}")
    return [v.type for v in body.outputs]


def _reference(xs, attrs):
    from llmc.ir.interpreter import run_graph

    body = attrs["body"]
    return run_graph(body, xs)


def _cost(types, outs, attrs):
    body = attrs["body"]
    flops = sum((n.opdef.cost([v.type for v in n.inputs], [v.type for v in n.outputs], n.attrs).flops
                 for n in body.nodes), 0)
    moved = sum(t.numel * t.dtype.itemsize for t in [*types, *outs])
    return Cost(flops=S.dim(flops), bytes=S.dim(moved))


register(
    OpDef(
        name="fused", doc="Runs its `body` graph as one unit (one kernel on targets).", inputs=("xs",),
        optional=1, variadic=True, attrs={"body": Attr("graph")}, infer=_infer, reference=_reference,
        kind="fused", cost_fn=_cost,
    )
)
