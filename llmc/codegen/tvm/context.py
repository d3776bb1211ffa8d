"""What every op lowering reads and writes: the Relax block builder, symbolic dims, dtypes, names.

A ``LowerContext`` is handed to each lowering function together with the node being lowered.
It converts llmc's dims (ints and sympy expressions) into TIR expressions over one ``tirx.Var``
per symbol, maps llmc dtypes to TVM dtypes (applying the target's float dtype), and emits
Relax bindings whose names identify the node they came from (``n12``, ``n12_1``, ...), which
is how kernels are traced back to IR nodes after TVM has fused them (see ``origins``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import sympy
from tvm import relax, tirx

from llmc.errors import TargetError
from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Node
from llmc.ir.types import TensorType

TVM_DTYPES = {
    DType.f32: "float32", DType.f16: "float16", DType.bf16: "bfloat16", DType.f64: "float64",
    DType.i64: "int64", DType.i32: "int32", DType.i8: "int8", DType.u8: "uint8",
    DType.i4: "int8", DType.u4: "uint8", DType.bool: "bool", DType.f8e4m3: "float8_e4m3fn",
}


@dataclass(frozen=True)
class LowerOptions:
    """How the graph is lowered.

    float_dtype: every f32 tensor (inputs, weights, intermediates) becomes this dtype
                 (cuda ``--dtype float16``); None keeps the graph's dtypes.
    pack_weights: lay constant ``linear`` weights out as panels of this many output features
                 ([out/p, in, p], transformed once at load time); 0 keeps torch's [out, in].
    pack_step:   a float weight whose output features are not a multiple of ``pack_weights`` takes
                 the widest panel of a multiple of this many features that divides them (whole
                 vectors), so the product has no zero-padded panel to drop afterwards (a slice,
                 one more kernel); 0 always takes ``pack_weights``.
    fast_math:   float32 exp, erf, tanh and softmax use TVM's vectorizable approximations
                 (``topi.fast_*``, relative error below 5e-6) instead of scalar libm calls;
                 gelu is written with erf/tanh so it gets them too.
    """

    float_dtype: DType | None = None
    pack_weights: int = 0
    pack_step: int = 0
    fast_math: bool = False

    def dtype(self, dtype: DType) -> DType:
        return self.float_dtype if (self.float_dtype is not None and dtype == DType.f32) else dtype


def node_tag(index: int) -> str:
    """The binding name prefix of the ``index``-th lowered node."""
    return f"n{index}"


class LowerContext:
    """State shared by the lowering functions while one graph is lowered into one Relax function."""

    def __init__(self, bb: relax.BlockBuilder, options: LowerOptions, symbols: dict[str, tirx.Var]):
        self.bb = bb
        self.options = options
        self.symbols = symbols
        self.consts: dict[str, relax.Expr] = {}  # weights-file key -> parameter or inlined constant
        self.tags: dict[int, str] = {}            # id(node) -> binding-name prefix
        self.fused: dict[int, tuple] = {}         # id(fused node) -> (Relax function, weight keys, cache write)
        self.written: set[int] = set()            # ids of kv_update nodes a fused node's kernel does
        self.lookup: Callable[[object], relax.Expr] | None = None  # IR value -> Relax value (set while emitting)
        self.body_weights = None  # inside a fused body: its weights, whose layouts the caller computes
        self.name_prefix = ""     # binding names are unique module-wide: "e1" for a second entry, "b" in bodies
        self._layouts: list[tuple[relax.Expr, str, relax.Var]] = []
        self._tag = "v"
        self._count = 0

    # -- naming -----------------------------------------------------------------------------

    def begin_node(self, tag: str) -> None:
        """Name the bindings emitted from now on ``tag``, ``tag_1``, ``tag_2``, ..."""
        self._tag = tag
        self._count = 0

    def derive(self, bb: relax.BlockBuilder | None = None, **option_changes) -> LowerContext:
        """A context on the same tables (and builder, unless ``bb``), with some lowering options changed."""
        other = LowerContext(bb or self.bb, dataclasses.replace(self.options, **option_changes), self.symbols)
        other.consts, other.tags, other.fused, other.written = dict(self.consts), self.tags, self.fused, self.written
        other.name_prefix = self.name_prefix
        return other

    @property
    def current_tag(self) -> str:
        return self._tag

    def _name(self) -> str:
        name = self.name_prefix + (self._tag if self._count == 0 else f"{self._tag}_{self._count}")
        self._count += 1
        return name

    def emit(self, expr: relax.Expr) -> relax.Var:
        """Bind ``expr`` under the current node's name."""
        return self.bb.emit(expr, name_hint=self._name())

    def weight_layout(self, expr: relax.Expr, index_map: Callable, *, layout: str, pad_value=0) -> relax.Expr:
        """``expr`` re-laid out by ``index_map`` (``layout`` names the map; one computation per value
        and layout). In a function's own weights TVM lifts it into the load-time transform; in a fused
        body the caller computes the layout of a body weight and passes it in (see ``lower``), so
        the kernel reads the re-laid-out weight as it would outside a fused node."""
        if self.body_weights is not None:
            hoisted = self.body_weights.prepared(expr, layout, index_map, pad_value)
            if hoisted is not None:
                return hoisted
        for seen, name, var in self._layouts:
            if seen.same_as(expr) and name == layout:
                return var
        var = self.emit(relax.op.layout_transform(expr, index_map, pad_value=pad_value))
        self._layouts.append((expr, layout, var))
        if self.body_weights is not None:
            self.body_weights.emitted(expr, layout, var)
        return var

    def panel_width(self, features: int) -> int:
        """Output features per panel of a float weight with ``features`` of them (``LowerOptions.pack_step``)."""
        p, step = self.options.pack_weights, self.options.pack_step
        if not step or features % p == 0:
            return p
        return next((w for w in range(p - step, 0, -step) if features % w == 0), p)

    def panels(self, weight: relax.Expr, *, transposed: bool = False, width: int = 0) -> relax.Expr:
        """A weight as panels of ``width`` (default ``pack_weights``) output features, zero-padded: [N, X]
        (words, scales and minimums too) -> [N/P, X, P]; [K, N] with ``transposed`` -> [N/P, K, P]; a bias [N] -> [N/P, P]."""
        p = width or self.options.pack_weights
        if weight.ty.ndim == 1:
            return self.weight_layout(weight, lambda j: (j // p, j % p), layout=f"panels:{p}")
        if transposed:
            return self.weight_layout(weight, lambda k, n: (n // p, k, n % p), layout=f"panels_kn:{p}")
        return self.weight_layout(weight, lambda n, k: (n // p, k, n % p), layout=f"panels:{p}")

    def emit_te(self, fn: Callable, *args, name: str, **kwargs) -> relax.Var:
        """Emit a TE compute as a TIR kernel called from the Relax function."""
        return self.bb.emit_te(fn, *args, primfunc_name_hint=name, name_hint=self._name(), **kwargs)

    # -- types ------------------------------------------------------------------------------

    def dtype(self, dtype: DType) -> str:
        """The TVM dtype that stores llmc ``dtype`` in this lowering."""
        return TVM_DTYPES[self.options.dtype(dtype)]

    def dim(self, d: S.Dim) -> tirx.PrimExpr:
        return prim_expr(d, self.symbols)

    def shape(self, dims: Sequence[S.Dim]) -> list[tirx.PrimExpr]:
        return [self.dim(d) for d in dims]

    def struct(self, t: TensorType) -> relax.TensorType:
        return relax.TensorType(self.shape(t.shape), self.dtype(t.dtype))

    def out_type(self, node: Node, index: int = 0) -> TensorType:
        t = node.outputs[index].type
        return t.with_dtype(self.options.dtype(t.dtype))

    def const(self, value, dtype: DType) -> relax.Constant:
        return relax.const(np.asarray(value, dtype=self.options.dtype(dtype).np), self.dtype(dtype))


def prim_expr(d: S.Dim, symbols: dict[str, tirx.Var]) -> tirx.PrimExpr:
    """A TIR int64 expression for an llmc dim: ints, symbols, +, *, exact division, floor, ceiling."""
    if isinstance(d, int):
        return tirx.IntImm("int64", d)
    e = sympy.sympify(d)
    if e.is_Integer:
        return tirx.IntImm("int64", int(e))
    if e.is_Symbol:
        name = str(e)
        if name not in symbols:
            raise TargetError(f"symbolic dim {name} is not a dimension of any model input",
                              hint="give the model's inputs shapes that name every symbol directly")
        return symbols[name]
    if e.is_Add:
        return _fold(lambda a, b: a + b, [prim_expr(a, symbols) for a in e.args])
    if isinstance(e, (sympy.floor, sympy.ceiling)):
        num, den = sympy.fraction(sympy.together(e.args[0]))
        div = tirx.floordiv if isinstance(e, sympy.floor) else tirx.ceildiv
        return div(prim_expr(num, symbols), prim_expr(den, symbols))
    num, den = sympy.fraction(sympy.together(e))
    if den != 1:
        return tirx.floordiv(prim_expr(num, symbols), prim_expr(den, symbols))
    if e.is_Mul:
        return _fold(lambda a, b: a * b, [prim_expr(a, symbols) for a in e.args])
    if e.is_Pow and e.exp.is_Integer and e.exp > 0:
        return _fold(lambda a, b: a * b, [prim_expr(e.base, symbols)] * int(e.exp))
    if isinstance(e, (sympy.Max, sympy.Min)):
        pick = tirx.max if isinstance(e, sympy.Max) else tirx.min
        return _fold(pick, [prim_expr(a, symbols) for a in e.args])
    raise TargetError(f"cannot express the dimension {S.dim_str(d)} in TVM", hint="simplify the model's shape arithmetic")


def _fold(fn, items):
    out = items[0]
    for item in items[1:]:
        out = fn(out, item)
    return out


def as_f32(v) -> tirx.PrimExpr:
    """``v`` (a PrimExpr or a TE tensor element) as float32: TE kernels compute in float32, as the reference does."""
    v = v.asobject() if hasattr(v, "asobject") else v
    return v if str(v.ty) == "float32" else tirx.Cast("float32", v)
