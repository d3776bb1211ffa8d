"""Normalizations written out in elementary ops, raised back to ``layer_norm`` and ``rms_norm``.

The core is raised first, then the scale and shift are absorbed into it, so a norm with or
without weight and bias is found by the same few rules::

    ONNX exporters' layer norm:
      %mean = reduce_mean(%x) {axes=[-1], keepdims=1}; %d = sub(%x, %mean)
      %var = reduce_mean(pow(%d, 2)) {axes=[-1], keepdims=1}
      %n = div(%d, sqrt(add(%var, %eps)))                      -> layer_norm(%x) {eps=...}
      %y = add(mul(%n, %w), %b)                                -> layer_norm(%x, %w, %b)

    Llama's RMSNorm (half-precision models compute it in f32 and cast back):
      %n = mul(%x, rsqrt(add(reduce_mean(pow(%x, 2)), %eps)))  -> rms_norm(%x) {eps=...}
      %h = cast(rms_norm(cast(%x16, f32)), f16)                -> rms_norm(%x16)
      %y = mul(%w, %n)                                         -> rms_norm(%x, %w)
"""

from __future__ import annotations

from llmc.ir.dtypes import DType
from llmc.passes.canonicalize.common import fits_normalized, is_float, scalar, trailing_axis
from llmc.passes.patterns import P, Pattern
from llmc.passes.rewrite import Match, Rule, RuleSet

x = P.any("x")
_eps = P.const("eps")


def _inverse_sqrt_times(num: Pattern, var: Pattern) -> Pattern:
    """num / sqrt(var + eps), num * rsqrt(var + eps), or num * (1 / sqrt(var + eps))."""
    den = P.op("add", var, _eps)
    return P.either(
        P.op("div", num, P.op("sqrt", den)),
        P.op("mul", num, P.op("rsqrt", den)),
        P.op("mul", num, P.op("reciprocal", P.op("sqrt", den))),
    )


def _square(v: Pattern) -> Pattern:
    return P.either(P.op("pow", v, P.const(value=2.0, tol=0.0)), P.op("mul", v, v))


def _reduction_axis(m: Match, *names: str) -> tuple[int | None, str | None]:
    """The common first axis of the keepdims mean(s) over the trailing axes, or a reason."""
    axes = {trailing_axis(m.node(n)) for n in names}
    if len(axes) != 1 or None in axes:
        return None, "the means are not keepdims reductions over the same trailing axes"
    return axes.pop(), None


def _eps_value(m: Match) -> tuple[float | None, str | None]:
    eps, reason = scalar(m, "eps", "epsilon")
    if reason is None and eps < 0:
        return None, f"epsilon {eps} is negative"
    return eps, reason


# -- layer norm -----------------------------------------------------------------------------

_d = P.op("sub", x, P.op("reduce_mean", x, name="mean"), name="d")
_var = P.op("reduce_mean", _square(_d), name="var")


def _check_layer_norm(m: Match) -> str | None:
    return is_float(m["x"]) or _reduction_axis(m, "mean", "var")[1] or _eps_value(m)[1]


def _layer_norm(m: Match):
    axis, _ = _reduction_axis(m, "mean", "var")
    rank = m["x"].type.rank
    return m.call("layer_norm", m["x"], axis=axis - rank, eps=m.scalar("eps"))


layer_norm = Rule("layer_norm", _inverse_sqrt_times(_d, _var), _layer_norm, check=_check_layer_norm)

# -- RMS norm -------------------------------------------------------------------------------


def _rms_core(v: Pattern) -> Pattern:
    return _inverse_sqrt_times(v, P.op("reduce_mean", _square(v), name="mean"))


def _check_rms(m: Match) -> str | None:
    return is_float(m["x"]) or _reduction_axis(m, "mean")[1] or _eps_value(m)[1]


def _rms_norm(m: Match):
    axis, _ = _reduction_axis(m, "mean")
    return m.call("rms_norm", m["x"], axis=axis - m["x"].type.rank, eps=m.scalar("eps"))


rms_norm = Rule("rms_norm", _rms_core(x), _rms_norm, check=_check_rms)

_LOW = (DType.f16, DType.bf16)


def _check_in_f32(m: Match) -> str | None:
    """cast(rms_norm(cast(x, f32)), x.dtype) is rms_norm(x): the op computes half inputs in f32."""
    if m["x"].type.dtype not in _LOW:
        return f"%{m['x'].name} is {m['x'].type.dtype}; only f16/bf16 inputs are normalized in f32"
    if m.root.attrs["dtype"] != m["x"].type.dtype:
        return f"the result is cast to {m.root.attrs['dtype']}, not back to {m['x'].type.dtype}"
    return None


rms_norm_in_f32 = Rule(
    "rms_norm_in_f32", P.op("cast", P.op("rms_norm", P.op("cast", x, dtype=DType.f32), name="norm")),
    lambda m: m.call("rms_norm", m["x"], **m.node("norm").attrs), check=_check_in_f32,
)

# -- scale and shift absorbed into a norm ---------------------------------------------------

_ln = P.op("layer_norm", x, name="norm")
_ln_w = P.op("layer_norm", x, P.any("w"), name="norm")
_rms = P.op("rms_norm", x, name="norm")


def _check_affine(param: str, what: str):
    def check(m: Match) -> str | None:
        norm = m.node("norm")
        return fits_normalized(m[param], m["x"], norm.attrs["axis"], what)

    return check


def _with(param: str):
    def rewrite(m: Match):
        norm = m.node("norm")
        return m.call(norm.op, *norm.inputs, m[param], **norm.attrs)

    return rewrite


layer_norm_weight = Rule("layer_norm_weight", P.op("mul", _ln, P.any("w")), _with("w"),
                         check=_check_affine("w", "weight"))
layer_norm_bias = Rule("layer_norm_bias", P.op("add", _ln_w, P.any("b")), _with("b"),
                       check=_check_affine("b", "bias"))
rms_norm_weight = Rule("rms_norm_weight", P.op("mul", _rms, P.any("w")), _with("w"),
                       check=_check_affine("w", "weight"))

RULES = RuleSet("norms", (layer_norm, rms_norm, rms_norm_in_f32, layer_norm_weight, layer_norm_bias, rms_norm_weight))
