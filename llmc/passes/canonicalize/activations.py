"""Activations written out in elementary ops, raised back to ``gelu`` and ``silu``.

    erf GELU (BERT, ONNX exports):  x * 0.5 * (1 + erf(x / 1.4142))          -> gelu(x)
    tanh GELU (GPT-2's gelu_new):   0.5 * x * (1 + tanh(0.79788 * (x + 0.044715 * x^3)))
                                                                              -> gelu(x) {approximate=tanh}
    SiLU (Llama's act_fn):          x * sigmoid(x)                            -> silu(x)

Products match in any order and association; x / sqrt(2) may be x * 0.7071 and x^3 may be
x * x * x. Constants match to a relative 1e-3 (exporters print 1.4142, 0.7978846).
"""

from __future__ import annotations

import math

from llmc.passes.canonicalize.common import is_float, keeps_type
from llmc.passes.patterns import P
from llmc.passes.rewrite import Match, Rule, RuleSet

x = P.any("x")
_half = P.const(value=0.5)
_one = P.const(value=1.0)


def _check(m: Match) -> str | None:
    return is_float(m["x"]) or keeps_type(m, "x")


def _gelu(approximate: str):
    return lambda m: m.call("gelu", m["x"], approximate=approximate)


def _half_x_times(term):
    """0.5 * x * term in any association, or x * term / 2."""
    return P.either(P.product(x, _half, term), P.op("div", P.op("mul", x, term), P.const(value=2.0)))


_SQRT2 = math.sqrt(2.0)
_erf_arg = P.either(P.op("div", x, P.const(value=_SQRT2)), P.op("mul", x, P.const(value=1.0 / _SQRT2)))
gelu_erf = Rule("gelu_erf", _half_x_times(P.op("add", P.op("erf", _erf_arg), _one)), _gelu("none"), check=_check)

_cube = P.either(P.op("pow", x, P.const(value=3.0)), P.op("mul", x, P.op("mul", x, x)))
_inner = P.op("add", x, P.op("mul", P.const(value=0.044715), _cube))
_tanh_arg = P.op("mul", P.const(value=math.sqrt(2.0 / math.pi)), _inner)
gelu_tanh = Rule("gelu_tanh", _half_x_times(P.op("add", P.op("tanh", _tanh_arg), _one)), _gelu("tanh"),
                 check=_check)

silu = Rule("silu", P.op("mul", x, P.op("sigmoid", x)), lambda m: m.call("silu", m["x"]), check=_check)

RULES = RuleSet("activations", (gelu_erf, gelu_tanh, silu))
