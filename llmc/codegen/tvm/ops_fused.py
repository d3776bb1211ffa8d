"""``fused``: the body graph becomes one Relax function marked ``Primitive``, called once.

``lower`` builds that function before ``main`` (see ``lower._build_fused_bodies``); this lowering
only calls it. TVM's ``FuseOps`` leaves primitive functions alone and ``FuseTIR`` merges each
into a single TIR PrimFunc, so a fused IR node is exactly one kernel whatever its body holds.
Weights inside the body are parameters of ``main`` passed to the function as extra arguments,
as stored or in the layout the body's kernels read (computed here, in ``main``, so TVM lifts it
into the load-time weight transform; see ``lower._build_fused_bodies``). A node whose output is
only written into a KV cache also takes the cache and returns it updated (``lower.cache_writes``).
"""

from __future__ import annotations

from tvm import relax

from llmc.codegen.tvm.registry import lowers
from llmc.codegen.tvm.trace import WEIGHT_SUFFIX


@lowers("fused")
def fused(ctx, node, args):
    function, weights, write = ctx.fused[id(node)]
    tag = ctx.current_tag
    ctx.begin_node(f"{tag}{WEIGHT_SUFFIX}")  # the body's own bindings already use the node's names
    extra = []
    for how, key, *layout in weights:
        weight = ctx.consts[key]
        if how == "layout":
            name, index_map, pad_value = layout
            weight = ctx.weight_layout(weight, index_map, layout=name, pad_value=pad_value)
        extra.append(weight)
    if write is not None:  # the cache its kernel writes the output into, and the write position's symbols
        extra += [ctx.lookup(write.node.inputs[0]), *(relax.prim_value(v) for v in write.symbols(ctx))]
    ctx.begin_node(tag)
    call = ctx.emit(relax.Call(function, [*args, *extra]))
    if len(node.outputs) == 1:
        return call
    return [relax.TupleGetItem(call, i) for i in range(len(node.outputs))]
