"""Matrix products: ``linear`` stays ``linear``; ``mm``/``bmm``/``matmul`` become ``matmul``;
``addmm``/``baddbmm`` (GPT-2's Conv1D) become ``matmul`` plus a scaled ``add``."""

from __future__ import annotations

from llmc.frontend.torch.emitter import Emitter
from llmc.frontend.torch.ops import aten
from llmc.frontend.torch.ops.math import arith


@aten("linear.default")
def linear(cx: Emitter, input, weight, bias=None):
    return cx.call("linear", input, weight) if bias is None else cx.call("linear", input, weight, bias)


@aten("mm.default", "bmm.default", "matmul.default")
def matmul(cx: Emitter, self, other=None, mat2=None):
    return cx.call("matmul", self, mat2 if other is None else other)


@aten("addmm.default", "baddbmm.default")
def addmm(cx: Emitter, self, beta=1, alpha=1, mat1=None, mat2=None, batch1=None, batch2=None):
    """beta * self + alpha * (mat1 @ mat2)."""
    product = cx.call("matmul", mat1 if mat1 is not None else batch1, mat2 if mat2 is not None else batch2)
    if alpha != 1:
        product = arith(cx, "mul", product, alpha)
    if beta == 0:
        return product
    return arith(cx, "add", product, self if beta == 1 else arith(cx, "mul", self, beta))
