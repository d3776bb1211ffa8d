"""``fused``: the body graph becomes one Relax function marked ``Primitive``, called once.

TVM's ``FuseOps`` leaves primitive functions alone and ``FuseTIR`` merges each into a single
TIR PrimFunc, so a fused IR node is exactly one kernel whatever its body holds. Weights inside
the body are parameters of ``main`` (see ``lower``), passed to the function as extra arguments.
Weights are not re-laid out inside a body: a parameter transform cannot be lifted out of a kernel.
"""

from __future__ import annotations

import dataclasses

from tvm import relax

from llmc.codegen.tvm.context import LowerContext
from llmc.codegen.tvm.registry import lowers


@lowers("fused")
def fused(ctx, node, args):
    from llmc.codegen.tvm.lower import body_constants, emit_nodes

    body = node.attrs["body"]
    prefix = f"{node.name}/"
    weights = [key for key, v in body_constants(body, prefix).items() if isinstance(ctx.consts[key], relax.Var)]
    inner = LowerContext(relax.BlockBuilder(), dataclasses.replace(ctx.options, pack_weights=0), ctx.symbols)
    params = [relax.Var(f"x{i}", ctx.struct(v.type)) for i, v in enumerate(body.inputs)]
    params += [relax.Var(f"w{i}", ctx.consts[key].ty) for i, key in enumerate(weights)]
    inner.consts = {**ctx.consts, **dict(zip(weights, params[len(body.inputs):]))}
    tag = ctx.current_tag
    with inner.bb.function("body", params, attrs={"Primitive": True}, private=True):
        with inner.bb.dataflow():
            env = {id(v): p for v, p in zip(body.inputs, params)}
            outs = emit_nodes(inner, body, env, prefix=prefix, origins={tag: ""}, tag=tag)
            result = inner.bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        inner.bb.emit_func_output(result)
    gvar = ctx.bb.add_func(inner.bb.get()["body"], f"fused_{tag}")
    call = ctx.emit(relax.Call(gvar, [*args, *(ctx.consts[key] for key in weights)]))
    if len(node.outputs) == 1:
        return call
    return [relax.TupleGetItem(call, i) for i in range(len(node.outputs))]
