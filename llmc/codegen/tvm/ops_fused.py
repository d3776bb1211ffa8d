"""``fused``: the body graph becomes one Relax function marked ``Primitive``, called once.

``lower`` builds that function before ``main`` (see ``lower._build_fused_bodies``); this lowering
only calls it. TVM's ``FuseOps`` leaves primitive functions alone and ``FuseTIR`` merges each
into a single TIR PrimFunc, so a fused IR node is exactly one kernel whatever its body holds.
Weights inside the body are parameters of ``main`` passed to the function as extra arguments
(and are not re-laid out: a parameter transform cannot be lifted out of a kernel).
"""

from __future__ import annotations

from tvm import relax

from llmc.codegen.tvm.registry import lowers


@lowers("fused")
def fused(ctx, node, args):
    function, weights = ctx.fused[id(node)]
    call = ctx.emit(relax.Call(function, [*args, *(ctx.consts[key] for key in weights)]))
    if len(node.outputs) == 1:
        return call
    return [relax.TupleGetItem(call, i) for i in range(len(node.outputs))]
