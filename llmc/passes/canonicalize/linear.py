"""Products with a constant weight matrix, raised to ``linear`` (ONNX exports write ``nn.Linear``
as ``MatMul`` with the weight stored transposed, then ``Add`` of the bias)::

    %y = matmul(%x, %W)                  %W a constant [K, N]   ->  %y = linear(%x, %W.t)
    %y = matmul(%x, transpose(%w))       %w a constant [N, K]   ->  %y = linear(%x, %w)
    %z = add(linear(%x, %w), %b)         %b a constant of N     ->  %z = linear(%x, %w, %b)

``%W.t`` is ``W^T`` as a constant that transposes ``W`` when it is read
(``llmc.ir.tensor.TransposedWeight``: no copy is held), made once per weight however many
products read it. Targets lay ``linear`` weights out for their kernels (panels on the cpu, the
NT form dlight's rules take on cuda), and the quantizers take ``linear`` only.
"""

from __future__ import annotations

from llmc.ir import shapes as S
from llmc.ir.graph import Graph, Value
from llmc.ir.tensor import TransposedWeight
from llmc.passes.patterns import P
from llmc.passes.rewrite import Match, Rule, RuleSet

x, w, b = P.any("x"), P.const("w"), P.const("b")


def _check_matmul_weight(m: Match) -> str | None:
    weight = m["w"]
    if weight.type.rank != 2:
        return f"the right operand %{weight.name} is not a matrix: {weight.type}"
    if m["x"].type.rank < 1:
        return f"the left operand %{m['x'].name} is a scalar"
    others = [node.name for node, slot in weight.uses if node.op != "matmul" or slot != 1]
    if others:
        return f"the weight %{weight.name} is also read by {others[:3]}: a transposed copy would double it"
    return None


def _transposed(graph: Graph, weight: Value) -> Value:
    """``weight``'s transposed constant: an existing one, or a new lazy one."""
    for const in graph.constants.values():
        if isinstance(const.const, TransposedWeight) and const.const.weight is weight.const:
            return const
    return graph.add_const(f"{weight.name}.t", TransposedWeight(weight.const))


matmul_weight = Rule(
    "matmul_weight", P.op("matmul", x, w),
    lambda m: m.call("linear", m["x"], _transposed(m.graph, m["w"])), check=_check_matmul_weight,
)


def _check_transposed_weight(m: Match) -> str | None:
    if m["w"].type.rank != 2:
        return f"%{m['w'].name} is not a matrix: {m['w'].type}"
    return None


matmul_transposed_weight = Rule(
    "matmul_transposed_weight", P.op("matmul", x, P.op("transpose", w, perm=(1, 0))),
    lambda m: m.call("linear", m["x"], m["w"]), check=_check_transposed_weight,
)


def _check_bias(m: Match) -> str | None:
    """%b holds one value per output feature (shape [N], or [1, ..., N]) and adds nothing else."""
    y, bias = m["y"], m["b"]
    n = y.type.shape[-1]
    if bias.type.rank == 0 or not S.same(bias.type.shape[-1], n) or not S.same(bias.type.numel, n):
        return f"%{bias.name}: {bias.type} is not one value per output feature ({S.shape_str((n,))})"
    if bias.type.rank > y.type.rank or bias.type.dtype != y.type.dtype:
        return f"adding %{bias.name}: {bias.type} changes the type of %{y.name}: {y.type}"
    if len(y.users) != 1:
        return f"the product %{y.name} is also read without the bias"
    return None


def _with_bias(m: Match):
    bias = m["b"]
    if bias.type.rank != 1:
        bias = m.call("reshape", bias, shape=(m["y"].type.shape[-1],))
    return m.call("linear", m["x"], m["w_any"], bias)


linear_bias = Rule(
    "linear_bias", P.op("add", P.op("linear", x, P.any("w_any"), name="y"), b),
    _with_bias, check=_check_bias,
)

RULES = RuleSet("linear", (matmul_transposed_weight, matmul_weight, linear_bias))
