"""Simplifications: identities disappear, chains of shape ops collapse.

    %a = reshape(%x) {shape=[4,8]}; %b = reshape(%a) {shape=[32]}   ->  %b = reshape(%x) {shape=[32]}
    %t = transpose(%x) {perm=[1,0]}; %u = transpose(%t) {perm=[1,0]} ->  %x
    %y = mul(%x, %one)                                                ->  %x
"""

from __future__ import annotations

from llmc.ir import shapes as S
from llmc.ir.dtypes import DType
from llmc.ir.graph import Node, same_type
from llmc.passes.canonicalize.common import keeps_type, same_shape
from llmc.passes.patterns import P
from llmc.passes.rewrite import Match, Rule, RuleSet

x = P.any("x")


def _identity(node: Node) -> bool:
    return same_type(node.inputs[0].type, node.outputs[0].type)


def _keep_x(m: Match):
    return m["x"]


# -- identities -----------------------------------------------------------------------------

identity_reshape = Rule("identity_reshape", P.op("reshape", x, where=_identity), _keep_x)
identity_expand = Rule("identity_expand", P.op("expand", x, where=_identity), _keep_x)
identity_cast = Rule("identity_cast", P.op("cast", x, where=_identity), _keep_x)
identity_transpose = Rule(
    "identity_transpose", P.op("transpose", x, perm=lambda p: list(p) == list(range(len(p)))), _keep_x
)

# Casts that lose nothing: the wide type holds every value of the narrow one exactly.
_EXACT_WIDENING = {
    DType.f16: {DType.f32, DType.f64}, DType.bf16: {DType.f32, DType.f64}, DType.f32: {DType.f64},
    DType.i8: {DType.i32, DType.i64, DType.f32, DType.f64}, DType.u8: {DType.i32, DType.i64, DType.f32, DType.f64},
    DType.i32: {DType.i64, DType.f64}, DType.bool: {DType.i8, DType.u8, DType.i32, DType.i64, DType.f32},
}


def _round_trip(node: Node) -> bool:
    inner = node.inputs[0].producer
    src = inner.inputs[0].type.dtype
    return node.attrs["dtype"] == src and inner.attrs["dtype"] in _EXACT_WIDENING.get(src, ())


cast_round_trip = Rule("cast_round_trip", P.op("cast", P.op("cast", x), where=_round_trip), _keep_x)


def _neutral(name: str, op: str, value: float) -> Rule:
    """``x op value`` is x (so is ``value op x`` for commutative ops) when nothing broadcasts."""
    return Rule(name, P.op(op, x, P.const(value=value, tol=0.0)), _keep_x, check=lambda m: keeps_type(m, "x"))


mul_one = _neutral("mul_one", "mul", 1.0)
div_one = _neutral("div_one", "div", 1.0)
add_zero = _neutral("add_zero", "add", 0.0)
sub_zero = _neutral("sub_zero", "sub", 0.0)

# -- chains of shape ops --------------------------------------------------------------------

reshape_of_reshape = Rule(
    "reshape_of_reshape", P.op("reshape", P.op("reshape", x)),
    lambda m: m.call("reshape", m["x"], shape=m.root.attrs["shape"]),
)


def _compose(m: Match):
    inner, outer = m.node("inner").attrs["perm"], m.root.attrs["perm"]
    perm = [inner[p] for p in outer]
    return m["x"] if perm == list(range(len(perm))) else m.call("transpose", m["x"], perm=perm)


transpose_of_transpose = Rule(
    "transpose_of_transpose", P.op("transpose", P.op("transpose", x, name="inner")), _compose
)


def _check_batched_transpose(m: Match) -> str | None:
    """reshape(transpose(reshape(x, [N, a, b]), [0, 2, 1]), [*lead, b, a]) with x: [*batch, a, b]
    and N = prod(batch) = prod(lead): a transpose of the last two axes, batch dims regrouped."""
    xs, flat, out = m["x"].type.shape, m["flat"].type.shape, m.root.outputs[0].type.shape
    if len(xs) < 3 or len(flat) != 3 or len(out) < 3:
        return f"%{m['x'].name} is not flattened to 3-D batches of matrices"
    (n, a, b) = flat
    if not same_shape(xs[-2:], (a, b)) or not S.same(S.numel(xs[:-2]), n):
        return f"the first reshape does more than merge the batch dims of {m['x'].type}"
    if not same_shape(out[-2:], (b, a)) or not S.same(S.numel(out[:-2]), n):
        return "the last reshape does more than split the batch dims"
    return None


def _batched_transpose(m: Match):
    xs, out = m["x"].type.shape, m.root.outputs[0].type.shape
    lead = out[:-2]
    y = m["x"] if same_shape(xs[:-2], lead) else m.call("reshape", m["x"], shape=(*lead, *xs[-2:]))
    return m.call("transpose", y, perm=[*range(len(lead)), len(lead) + 1, len(lead)])


batched_transpose = Rule(
    "batched_transpose",
    P.op("reshape", P.op("transpose", P.op("reshape", x, name="flat"), perm=(0, 2, 1))),
    _batched_transpose, check=_check_batched_transpose,
)


def _check_batched_matmul(m: Match) -> str | None:
    """reshape(matmul(reshape(a, [N, M, K]), reshape(b, [N, K, P])), [*batch, M, P]), a/b: [*batch, ...]."""
    a, b = m["a"].type.shape, m["b"].type.shape
    fa, fb = m["fa"].type.shape, m["fb"].type.shape
    if len(a) < 3 or len(fa) != 3 or len(fb) != 3 or not same_shape(a[:-2], b[:-2]):
        return "the operands are not 3-D flattenings of matrices with the same batch dims"
    batch, n = a[:-2], S.numel(a[:-2])
    if not same_shape(fa, (n, *a[-2:])) or not same_shape(fb, (n, *b[-2:])):
        return "the reshapes do more than merge the batch dims"
    if not same_shape(m.root.outputs[0].type.shape, (*batch, a[-2], b[-1])):
        return "the result is not reshaped back to the batch dims"
    return None


batched_matmul = Rule(
    "batched_matmul",
    P.op("reshape", P.op("matmul", P.op("reshape", P.any("a"), name="fa"), P.op("reshape", P.any("b"), name="fb"))),
    lambda m: m.call("matmul", m["a"], m["b"]), check=_check_batched_matmul,
)


def _check_row_flatten(m: Match) -> str | None:
    """reshape(f(reshape(x, [N, K]), w...), [*lead, O]) with x: [*lead, K], N = prod(lead)."""
    xs, flat, out = m["x"].type.shape, m["flat"].type.shape, m.root.outputs[0].type.shape
    if m.node("mm").op == "matmul" and m["w"].type.rank != 2:
        return f"the matmul's right operand %{m['w'].name} is not a matrix"
    if len(xs) < 2 or len(flat) != 2 or not same_shape(flat, (S.numel(xs[:-1]), xs[-1])):
        return f"%{m['flat'].name} does not flatten the leading axes of {m['x'].type}"
    if not same_shape(out, (*xs[:-1], out[-1])) or len(out) != len(xs):
        return "the result is not reshaped back to the leading axes"
    return None


def _unflatten(m: Match):
    mm = m.node("mm")
    return m.call(mm.op, m["x"], *mm.inputs[1:], **mm.attrs)


_flat = P.op("reshape", x, name="flat")
_w = P.any("w")
row_flatten = Rule(
    "row_flatten",
    P.op("reshape", P.either(P.op("matmul", _flat, _w, name="mm"), P.op("linear", _flat, _w, name="mm"),
                             P.op("linear", _flat, _w, P.any("bias"), name="mm"))),
    _unflatten, check=_check_row_flatten,
)

RULES = RuleSet("simplify", (
    identity_reshape, identity_expand, identity_cast, identity_transpose, cast_round_trip,
    mul_one, div_one, add_zero, sub_zero,
    reshape_of_reshape, transpose_of_transpose, batched_transpose, batched_matmul, row_flatten,
))
