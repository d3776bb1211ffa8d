"""llmc Graph -> Relax ``main(inputs..., params...)``.

The function takes the model's inputs, then its weights as parameters (attribute ``num_input``
marks the boundary), and returns a tuple of the model's outputs. Symbolic dims become
``tirx.Var``s, so one compiled module serves every size. Weights stay out of the module: each
non-scalar constant, including those inside ``fused`` bodies, is a parameter named by its key
in the artifact's ``weights.safetensors`` (``llmc.ir.serialize``'s keys: the constant's name,
``node/name`` inside a fused body); scalars are inlined as Relax constants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy
from tvm import ir, relax, tirx

from llmc.codegen.tvm.context import LowerContext, LowerOptions, node_tag
from llmc.codegen.tvm.registry import lowering
from llmc.errors import TargetError, UnsupportedOpError
from llmc.ir import shapes as S
from llmc.ir.graph import Graph, Value
from llmc.ir.types import TensorType

FUSED_PREFIX = "llmc_fused_"  # the kernel of a fused IR node: llmc_fused_<node tag>


@dataclass(frozen=True)
class TensorSpec:
    """A tensor at the boundary of the compiled module: its name, TVM dtype and shape (symbols as text)."""

    name: str
    dtype: str
    shape: tuple

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class Lowered:
    """The Relax module and what its callers need to know about it."""

    mod: ir.IRModule
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    params: list[TensorSpec]           # in parameter order; ``name`` is the weights-file key
    options: LowerOptions = field(default_factory=LowerOptions)
    origins: dict[str, str] = field(default_factory=dict)  # binding tag -> node origin
    entries: dict[str, dict[str, int]] = field(default_factory=lambda: {"main": {}})  # function -> fixed symbols


def check_lowerable(graph: Graph) -> None:
    """Raise ``UnsupportedOpError`` listing every op (with origins) that has no TVM lowering."""
    missing: dict[str, list[str]] = {}
    for node in _all_nodes(graph):
        if lowering(node.op) is None:
            missing.setdefault(node.op, []).append(node.meta.origin or node.name)
    if missing:
        raise UnsupportedOpError(missing, source="TVM lowering")


def lower_graph(graph: Graph, options: LowerOptions, entries: Mapping[str, Mapping[str, int]] | None = None) -> Lowered:
    """Lower ``graph`` into an IRModule whose ``main`` computes it (see the module docstring).

    ``entries`` names several functions over the same parameters instead, each with some symbols
    fixed (a generation graph's ``{"prefill": {}, "decode": {"seq": 1}}``), so each is compiled
    for its sizes while the weights are loaded once.
    """
    check_lowerable(graph)
    entries = dict(entries or {"main": {}})
    bb = relax.BlockBuilder()
    consts = body_constants(graph, "")
    param_values = [(key, v) for key, v in consts.items() if not _is_scalar(v)]
    tags = {id(node): node_tag(i) for i, node in enumerate(graph.nodes)}
    origins = {tags[id(node)]: node.meta.origin or node.name for node in graph.nodes}
    for entry, sizes in entries.items():
        symbols = {**_symbols(graph), **{k: tirx.IntImm("int64", v) for k, v in sizes.items()}}
        ctx = LowerContext(bb, options, symbols)
        inputs = [relax.Var(_ident(v.name), ctx.struct(v.type)) for v in graph.inputs]
        params = [relax.Var(_ident(key), ctx.struct(v.type)) for key, v in param_values]
        ctx.consts = {key: var for (key, _), var in zip(param_values, params)}
        ctx.consts.update({key: ctx.const(v.const.numpy(), v.type.dtype) for key, v in consts.items() if _is_scalar(v)})
        ctx.tags = tags
        _build_fused_bodies(ctx, graph, prefix="", entry="" if len(entries) == 1 else f"{entry}_")
        with bb.function(entry, [*inputs, *params], attrs={"num_input": len(inputs)}):
            with bb.dataflow():
                env = {id(v): var for v, var in zip(graph.inputs, inputs)}
                outs = emit_nodes(ctx, graph, env, prefix="")
                result = bb.emit_output(relax.Tuple(outs))
            bb.emit_func_output(result)
    return Lowered(
        mod=bb.get(),
        inputs=[_spec(ctx, v.name, v.type) for v in graph.inputs],
        outputs=[_spec(ctx, v.name, v.type) for v in graph.outputs],
        params=[_spec(ctx, key, v.type) for key, v in param_values],
        options=options,
        origins=origins,
        entries=entries,
    )


def emit_nodes(ctx: LowerContext, graph: Graph, env: dict[int, relax.Expr], *, prefix: str,
               tag: str | None = None) -> list[relax.Expr]:
    """Emit every node of ``graph`` into the current dataflow block; returns the graph's outputs.

    ``env`` maps ids of already-bound values (the graph's inputs) to Relax values; constants are
    looked up in ``ctx.consts`` under ``prefix + name``. Bindings are named after each node's
    tag (``ctx.tags``), or all after ``tag`` (the body of a fused node).
    """
    ctx.lookup = lambda v: _value(ctx, env, v, prefix)
    for node in graph.nodes:
        ctx.begin_node(tag or ctx.tags[id(node)])
        args = [ctx.lookup(v) for v in node.inputs]
        result = lowering(node.op)(ctx, node, args)
        results = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(results) != len(node.outputs):
            raise TargetError(f"the TVM lowering of {node.op} gave {len(results)} values for {len(node.outputs)} outputs",
                              where=node.where)
        for value, expr in zip(node.outputs, results):
            env[id(value)] = expr if isinstance(expr, relax.Var) else ctx.emit(expr)
    return [_value(ctx, env, v, prefix) for v in graph.outputs]


def _build_fused_bodies(ctx: LowerContext, graph: Graph, prefix: str, tag: str | None = None, entry: str = "") -> None:
    """Add one ``Primitive`` Relax function per fused node (innermost first), before ``main``.

    Each takes the body's inputs, then the body's weights; ``ctx.fused`` maps the node to the
    function and those weight keys, for the ``fused`` lowering to call.
    """
    for node in graph.nodes:
        if node.op != "fused":
            continue
        fused_tag = tag or ctx.tags[id(node)]
        body, body_prefix = node.attrs["body"], f"{prefix}{node.name}/"
        _build_fused_bodies(ctx, body, body_prefix, fused_tag, entry)
        weights = [k for k in body_constants(body, body_prefix) if isinstance(ctx.consts[k], relax.Var)]
        inner = ctx.derive(pack_weights=0)
        params = [relax.Var(f"x{i}", ctx.struct(v.type)) for i, v in enumerate(body.inputs)]
        params += [relax.Var(f"w{i}", ctx.consts[k].ty) for i, k in enumerate(weights)]
        inner.consts.update(zip(weights, params[len(body.inputs):]))
        with ctx.bb.function(f"{FUSED_PREFIX}{entry}{fused_tag}", params, attrs={"Primitive": True}, private=True):
            with ctx.bb.dataflow():
                env = {id(v): p for v, p in zip(body.inputs, params)}
                outs = emit_nodes(inner, body, env, prefix=body_prefix, tag=fused_tag)
                result = ctx.bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
            gvar = ctx.bb.emit_func_output(result)
        ctx.fused[id(node)] = (gvar, weights)


def body_constants(graph: Graph, prefix: str) -> dict[str, Value]:
    """Constants of ``graph`` and of the fused bodies inside it, keyed as ``llmc.ir.serialize`` keys them."""
    out = {prefix + name: v for name, v in graph.constants.items()}
    for node in graph.nodes:
        if node.op == "fused":
            out.update(body_constants(node.attrs["body"], f"{prefix}{node.name}/"))
    return out


def _value(ctx: LowerContext, env: dict, v: Value, prefix: str) -> relax.Expr:
    if v.is_const:
        return ctx.consts[prefix + v.name]
    return env[id(v)]


def _is_scalar(v: Value) -> bool:
    return v.type.numel == 1


def _all_nodes(graph: Graph):
    for node in graph.nodes:
        yield node
        if node.op == "fused":
            yield from _all_nodes(node.attrs["body"])


def _symbols(graph: Graph) -> dict[str, tirx.Var]:
    """One int64 TIR variable per symbol that is a whole dimension of some input."""
    out: dict[str, tirx.Var] = {}
    for v in graph.inputs:
        for d in v.type.shape:
            if isinstance(d, sympy.Symbol):
                out.setdefault(str(d), tirx.Var(str(d), "int64"))
    return out


def _spec(ctx: LowerContext, name: str, t: TensorType) -> TensorSpec:
    return TensorSpec(name, ctx.dtype(t.dtype), tuple(S.to_json(d) for d in t.shape))


def _ident(name: str) -> str:
    text = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return text if text and not text[0].isdigit() else f"v_{text}"
