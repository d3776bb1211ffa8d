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
from llmc.codegen.tvm.ops_transformer import write_rows
from llmc.codegen.tvm.registry import lowering
from llmc.errors import TargetError, UnsupportedOpError
from llmc.ir import shapes as S
from llmc.ir.graph import Graph, Node, Value
from llmc.ir.types import TensorType
from llmc.passes.edit import is_output
from llmc.passes.fusion.legality import REDUCING_KINDS

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
    for node in all_nodes(graph):
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
    for index, (entry, sizes) in enumerate(entries.items()):
        symbols = {**_symbols(graph), **{k: tirx.IntImm("int64", v) for k, v in sizes.items()}}
        ctx = LowerContext(bb, options, symbols)
        ctx.name_prefix = f"e{index}" if index else ""
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

    Each takes the body's inputs, then the body's weights: as stored, or re-laid out where the
    body's lowering asks for a weight layout (``LowerContext.weight_layout``). Those layouts are
    computed by the caller, in ``main``, where TVM lifts them into the load-time transform like
    every other weight layout; the body is lowered once to find them (into a scratch builder),
    then again to build the function. ``ctx.fused`` maps the node to the function and its weight
    arguments, for the ``fused`` lowering to call.
    """
    writes = cache_writes(graph)
    for node in graph.nodes:
        if node.op != "fused":
            continue
        fused_tag = tag or ctx.tags[id(node)]
        body, body_prefix = node.attrs["body"], f"{prefix}{node.name}/"
        _build_fused_bodies(ctx, body, body_prefix, fused_tag, entry)
        keys = [k for k in body_constants(body, body_prefix) if isinstance(ctx.consts[k], relax.Var)]
        write = CacheWrite.of(ctx, body, writes[id(node)]) if id(node) in writes else None
        probe = BodyWeights(ctx, keys)
        scratch = ctx.derive(bb=relax.BlockBuilder())
        gvar = _emit_body(scratch, probe, body, body_prefix, fused_tag, "probe", write)
        final = BodyWeights(ctx, keys, probe.layouts, probe.stored_reads(scratch.bb.get()[gvar]))
        gvar = _emit_body(ctx, final, body, body_prefix, fused_tag, f"{FUSED_PREFIX}{entry}{fused_tag}", write)
        ctx.fused[id(node)] = (gvar, final.arguments(), write)
        if write is not None:
            ctx.written.add(id(write.node))


def _emit_body(ctx: LowerContext, weights: BodyWeights, body: Graph, prefix: str, tag: str, name: str,
               write: CacheWrite | None = None):
    """``body`` as a private ``Primitive`` function of ``ctx``'s builder; returns its global var.
    With ``write``, the function also takes the cache (and the symbols of the write position)
    and returns the cache with the body's output written into it."""
    inner = ctx.derive()
    inner.body_weights = weights
    inner.name_prefix = ctx.name_prefix + "b"
    inner.consts.update(weights.vars)
    params = [relax.Var(f"x{i}", ctx.struct(v.type)) for i, v in enumerate(body.inputs)]
    tail = [] if write is None else [relax.Var("cache", ctx.struct(write.node.inputs[0].type)), *write.symbols(ctx)]
    with inner.bb.function(name, [*params, *weights.params(), *tail], attrs={"Primitive": True}, private=True):
        with inner.bb.dataflow():
            env = {id(v): p for v, p in zip(body.inputs, params)}
            outs = emit_nodes(inner, body, env, prefix=prefix, tag=tag)
            if write is not None:
                outs = [inner.emit(write_rows(inner, write.node, tail[0], outs[0]))]
            result = inner.bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        return inner.bb.emit_func_output(result)


def cache_writes(graph: Graph) -> dict[int, Node]:
    """id(fused node) -> the ``kv_update`` writing the node's one output into a cache, when the node's
    body is a layout (no reduction) and nothing else reads its output: the fused node's kernel
    then writes the rows into the cache in place itself (slice, head layout, rope and cache write
    in one kernel; the ``kv_update`` lowers to no kernel). The write is not part of the body graph
    because the reference interpreter sizes a body from its inputs, and the write position (the
    ``end`` attribute, ``ctx``) is no dimension of them; the kernel takes it as a scalar."""
    out = {}
    for node in graph.nodes:
        if node.op != "fused" or len(node.outputs) != 1 or is_output(graph, node.outputs[0]) \
                or any(n.opdef.kind in REDUCING_KINDS for n in node.attrs["body"].nodes):
            continue
        users = node.outputs[0].uses
        if len(users) == 1 and users[0][0].op == "kv_update" and users[0][1] == 1:
            out[id(node)] = users[0][0]
    return out


@dataclass(frozen=True)
class CacheWrite:
    """A ``kv_update`` done by the kernel of the fused node computing its rows (``cache_writes``);
    ``scalars``: the symbols of its write position that no tensor argument of the kernel binds."""

    node: Node
    scalars: tuple[str, ...]

    @classmethod
    def of(cls, ctx: LowerContext, body: Graph, node: Node) -> CacheWrite:
        bound = {str(d) for v in [*body.inputs, node.inputs[0]] for d in v.type.shape if isinstance(d, sympy.Symbol)}
        used = {str(s) for s in sympy.sympify(node.attrs["end"]).free_symbols}
        return cls(node, tuple(sorted(s for s in used - bound if isinstance(ctx.symbols.get(s), tirx.Var))))

    def symbols(self, ctx: LowerContext) -> list[tirx.Var]:
        """The scalar parameters of the kernel: the symbols' TIR variables themselves, so the body's
        expressions over them (``ctx.dim``) are bound by the function's signature."""
        return [ctx.symbols[s] for s in self.scalars]


class BodyWeights:
    """The weights of a fused body (by weights-file key), passed to its function as stored or re-laid out.

    Probe (``layouts`` None): every weight is a parameter as stored, and each layout the
    lowering asks for is computed in the body and recorded: (key, layout) -> (index map, pad
    value, type). Final: parameters for the weights the probe read as stored (``stored``), then
    one per recorded layout, which ``weight_layout`` returns instead of computing the layout.
    """

    def __init__(self, ctx: LowerContext, keys: list[str], layouts: dict | None = None,
                 stored: list[str] | None = None):
        self.vars = {k: relax.Var(f"w{i}", ctx.consts[k].ty) for i, k in enumerate(keys)}
        self.probing = layouts is None
        self.layouts: dict[tuple[str, str], tuple] = {} if layouts is None else dict(layouts)
        self.stored = list(keys) if stored is None else stored
        self.laid_out = {key: relax.Var(f"l{i}", spec[2]) for i, (key, spec) in enumerate(self.layouts.items())}
        self._pending: tuple = ()
        self._layout_vars: list[relax.Var] = []

    def _key(self, expr) -> str | None:
        return next((k for k, var in self.vars.items() if var.same_as(expr)), None)

    def params(self) -> list[relax.Var]:
        return [*(self.vars[k] for k in self.stored), *self.laid_out.values()]

    def prepared(self, expr, layout: str, index_map, pad_value):
        """The parameter holding weight ``expr`` in ``layout``; None to compute it here (probe, or not a weight)."""
        key = self._key(expr)
        if key is None:
            return None
        if self.probing:
            self._pending = (index_map, pad_value)
            return None
        return self.laid_out[(key, layout)]

    def emitted(self, expr, layout: str, var: relax.Var) -> None:
        """Record (probe) that weight ``expr`` was re-laid out into ``var``."""
        key = self._key(expr)
        if key is not None and self.probing:
            self.layouts[(key, layout)] = (*self._pending, var.ty)
            self._layout_vars.append(var)

    def stored_reads(self, function: relax.Function) -> list[str]:
        """Keys of the weights the probed ``function`` reads other than through a recorded layout."""
        used: list = []
        for block in function.body.blocks:
            for binding in block.bindings:
                if not any(binding.var.same_as(v) for v in self._layout_vars):
                    used.extend(relax.analysis.free_vars(binding.value))
        return [k for k, var in self.vars.items() if any(var.same_as(u) for u in used)]

    def arguments(self) -> list[tuple]:
        """What the caller passes after the body's inputs: ("stored", key) or ("layout", key, layout, map, pad)."""
        return [*(("stored", k) for k in self.stored),
                *(("layout", key, layout, spec[0], spec[1]) for (key, layout), spec in self.layouts.items())]


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


def all_nodes(graph: Graph):
    for node in graph.nodes:
        yield node
        if node.op == "fused":
            yield from all_nodes(node.attrs["body"])


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
