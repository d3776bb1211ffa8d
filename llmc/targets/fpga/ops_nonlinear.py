"""Kernel table entries of the nonlinear ops: lookup-table activations, softmax, layer/rms norm.

Numerics (each ``->`` is an assignment: round half up, saturate, as the type says):

    gelu/silu/tanh/sigmoid/exp/erf   y = table[index of x]  (``llmc.targets.fpga.tables``)
    softmax       d = x - max (exact), e = exp table[d] -> exp_t, s = sum e (exact),
                  inv = 1/s by the normalized table -> inv_t, y = e * inv -> out
    layer_norm    mean = sum x * (1/n) -> mean_t, d = x - mean (exact), var = sum d^2 * (1/n) -> var_t,
                  r = rsqrt(var + eps) -> rs_t, y = d * r -> norm_t, out = y * gamma + beta -> out
    rms_norm      var = sum x^2 * (1/n) -> var_t, r as above, y = x * r -> norm_t, out = y * w -> out

Internal types follow from the input type and the node (``SoftmaxTypes``, ``NormTypes``), so the
emulation and the config struct always agree. Sums of squares and their scaled means are
computed on Python integers: they exceed 64 bits, which ``ap_fixed`` handles in C++.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from llmc.ir.graph import Node
from llmc.targets.fpga import tables
from llmc.targets.fpga.fixed import Fixed
from llmc.targets.fpga.kernels import KERNELS, Arg, Call, KernelDef, act, code_type, kernel, numel, shape
from llmc.targets.fpga.ops_core import INV_TYPE, inv_codes
from llmc.targets.fpga.precision import Precision

EXP_TYPE = Fixed(18, 1, signed=False)
INV_OUT = Fixed(26, 2, signed=False)


def _table_of(node: Node) -> str:
    if node.op == "gelu":
        return "gelu_tanh" if node.attrs.get("approximate") == "tanh" else "gelu"
    return node.op


@kernel("gelu", "silu", "tanh", "sigmoid", "exp", "erf")
class Lookup:
    @staticmethod
    def table(node: Node, P: Precision) -> tables.Uniform:
        return tables.Uniform(_table_of(node), P.of(node.inputs[0]), P.of(node.output))

    @staticmethod
    def emulate(node, args, P):
        return [Lookup.table(node, P).lookup(args[0])]

    @staticmethod
    def calls(node, P):
        t = Lookup.table(node, P)
        x, y = node.inputs[0], node.output
        cfg = t.config()
        return [Call("lookup", "llmc_table.h", {"in_t": P.of(x), "out_t": P.of(y)}, {"size": numel(y), **cfg},
                     [act(x), Arg("act", y.name)], outputs=numel(y), table_bits=cfg["n_table"] * P.of(y).width)]


@dataclass(frozen=True)
class SoftmaxTypes:
    """The internal types of a softmax over ``n`` values of type ``src``."""

    src: Fixed
    n: int

    @property
    def diff(self) -> Fixed:
        return Fixed(self.src.width + 1, self.src.integer + 1, True, "TRN", "WRAP")

    @property
    def exp(self) -> Fixed:
        return EXP_TYPE

    @property
    def sum(self) -> Fixed:
        g = max(math.ceil(math.log2(max(self.n, 2))), 1)
        return Fixed(EXP_TYPE.width + g, EXP_TYPE.integer + g, False, "TRN", "WRAP")

    def table(self) -> tables.Uniform:
        return tables.Uniform("exp", self.diff, EXP_TYPE)

    def types(self) -> dict:
        return {"diff_t": self.diff, "exp_t": self.exp, "sum_t": self.sum, "inv_t": INV_OUT}

    def ints(self) -> dict:
        cfg = self.table().config()
        return {"n_max": self.n, "step_bits": cfg["step_bits"], "diff_frac": self.diff.frac, "lo_index": cfg["lo_index"],
                "n_table": cfg["n_table"], "table": cfg["table"], "sum_frac": self.sum.frac, "inv_frac": INV_OUT.frac,
                "inv_max": INV_OUT.hi, "index_bits": tables.INDEX_BITS, "table_frac": tables.TABLE_TYPE.frac,
                "recip": tables.normalized_table(rsqrt=False).tolist()}

    def rows(self, x: np.ndarray, fx: int, keep: np.ndarray, out: Fixed) -> np.ndarray:
        """Softmax of the last axis of codes ``x`` (at ``fx``) where ``keep``; codes of ``out``."""
        low = np.iinfo(np.int64).min
        m = np.max(np.where(keep, x, low), axis=-1, keepdims=True)
        any_kept = keep.any(axis=-1, keepdims=True)
        d = self.diff.cast(x - np.where(any_kept, m, 0), fx)
        e = np.where(keep, self.table().lookup(d), 0)
        s = e.sum(axis=-1, keepdims=True)
        inv = tables.normalized_lookup(s, self.sum.frac, False, INV_OUT)
        return np.where(any_kept, out.cast(e * inv, EXP_TYPE.frac + INV_OUT.frac), 0)


def _last_axis(node: Node) -> str | None:
    axis = node.attrs.get("axis", -1)
    return None if axis % len(node.inputs[0].type.shape) == len(node.inputs[0].type.shape) - 1 else "only the last axis is supported"


@kernel("softmax", check=_last_axis)
class Softmax:
    @staticmethod
    def emulate(node, args, P):
        x = args[0]
        st = SoftmaxTypes(P.of(node.inputs[0]), x.shape[-1])
        return [st.rows(x, P.of(node.inputs[0]).frac, np.ones(x.shape, bool), P.of(node.output))]

    @staticmethod
    def calls(node, P):
        x, y = node.inputs[0], node.output
        n = shape(x)[-1]
        st = SoftmaxTypes(P.of(x), n)
        types = {"in_t": P.of(x), "out_t": P.of(y), **st.types()}
        ints = {"rows": numel(x) // n, "n": n, **st.ints()}
        return [Call("softmax", "llmc_softmax.h", types, ints, [act(x), Arg("act", y.name)], macs=numel(y), reduce=n,
                     outputs=numel(y), table_bits=(ints["n_table"] + len(ints["recip"])) * 18)]


# -- normalization --------------------------------------------------------------------------

RS_TYPE = Fixed(32, 12, signed=False)


@dataclass(frozen=True)
class NormTypes:
    src: Fixed
    n: int
    rms: bool

    @property
    def mean(self) -> Fixed:
        return Fixed(self.src.width + 2, self.src.integer)

    @property
    def diff(self) -> Fixed:
        if self.rms:
            return self.src
        return Fixed(self.src.width + 3, self.src.integer + 1, True, "TRN", "WRAP")

    @property
    def sq(self) -> Fixed:
        g = math.ceil(math.log2(max(self.n, 2)))
        d = self.diff
        return Fixed(2 * d.width + g, 2 * d.integer + g, True, "TRN", "WRAP")

    @property
    def var(self) -> Fixed:
        d = self.diff
        return Fixed(48, max(2 * d.integer, 1), False)

    @property
    def norm(self) -> Fixed:
        return Fixed(self.src.width + 4, max(math.ceil(math.log2(math.sqrt(self.n))) + 2, 2))

    def types(self) -> dict:
        return {"mean_t": self.mean, "diff_t": self.diff, "sq_t": self.sq, "var_t": self.var, "rs_t": RS_TYPE,
                "norm_t": self.norm, "inv_t": INV_TYPE}


def _norm_check(node: Node) -> str | None:
    if _last_axis(node):
        return "only the last axis is supported"
    if any(v.const is None for v in node.inputs[1:]):
        return "its weight and bias must be constants"
    return None


def _norm_emulate(node, args, P, rms: bool):
    x = args[0]
    tx, out = P.of(node.inputs[0]), P.of(node.output)
    n = x.shape[-1]
    nt = NormTypes(tx, n, rms)
    inv = inv_codes(range(n, n + 1))[0]
    obj = x.astype(object)
    if rms:
        d, fd = x, tx.frac
    else:
        mean = _big_cast(obj.sum(axis=-1, keepdims=True) * inv, tx.frac + INV_TYPE.frac, nt.mean)
        d = (x << np.int64(nt.mean.frac - tx.frac)) - mean
        fd = nt.mean.frac
    sq = (d.astype(object) ** 2).sum(axis=-1, keepdims=True)
    var = _big_cast(sq * inv, 2 * fd + INV_TYPE.frac, nt.var)
    eps = int(nt.var.quantize(node.attrs["eps"]))
    rs = tables.normalized_lookup(var + eps, nt.var.frac, True, RS_TYPE)
    y = nt.norm.cast(d * rs, fd + RS_TYPE.frac)
    return [_affine(node, args, P, y, nt.norm.frac, out)]


def _big_cast(values, frac: int, to: Fixed) -> np.ndarray:
    """Python-integer codes ``values`` at ``frac`` bits assigned to ``to`` (round half up, overflow mode)."""
    shift = frac - to.frac
    flat = [(int(v) + (1 << (shift - 1))) >> shift if shift > 0 else int(v) << -shift for v in np.asarray(values).reshape(-1)]
    clipped = [min(max(v, to.lo), to.hi) if to.overflow == "SAT" else v for v in flat]
    out = np.array([((v - to.lo) % (1 << to.width)) + to.lo if to.overflow == "WRAP" and to.signed else
                    (v % (1 << to.width) if to.overflow == "WRAP" else v) for v in clipped], np.int64)
    return out.reshape(np.shape(values))


def _affine(node, args, P, y, fy, out: Fixed):
    if len(node.inputs) < 2:
        return out.cast(y, fy)
    w, tw = args[1], P.of(node.inputs[1])
    prod, f = y * w, fy + tw.frac
    if len(node.inputs) > 2:
        b, tb = args[2], P.of(node.inputs[2])
        g = max(f, tb.frac)
        return out.cast((prod << np.int64(g - f)) + (b << np.int64(g - tb.frac)), g)
    return out.cast(prod, f)


def _norm_calls(node, P, rms: bool):
    x, y = node.inputs[0], node.output
    n = shape(x)[-1]
    nt = NormTypes(P.of(x), n, rms)
    w = P.of(node.inputs[1]) if len(node.inputs) > 1 else Fixed(8, 8)
    b = P.of(node.inputs[2]) if len(node.inputs) > 2 else Fixed(8, 8)
    types = {"in_t": P.of(x), "out_t": P.of(y), **nt.types(), "weight_t": w, "bias_t": b, "wcode_t": code_type(w),
             "bcode_t": code_type(b)}
    ints = {"rows": numel(x) // n, "n": n, "inv_code": inv_codes(range(n, n + 1))[0], "eps_code": int(nt.var.quantize(node.attrs["eps"])),
            "var_frac": nt.var.frac, "rs_frac": RS_TYPE.frac, "rs_max": RS_TYPE.hi, "has_weight": len(node.inputs) > 1,
            "has_bias": len(node.inputs) > 2, "index_bits": tables.INDEX_BITS, "table_frac": tables.TABLE_TYPE.frac,
            "rsqrt": tables.normalized_table(rsqrt=True).tolist()}
    args = [act(x), Arg("act", y.name), Arg("code", node.inputs[1].name) if len(node.inputs) > 1 else Arg("none"),
            Arg("code", node.inputs[2].name) if len(node.inputs) > 2 else Arg("none")]
    return [Call("rms_norm" if rms else "layer_norm", "llmc_norm.h", types, ints, args, macs=3 * numel(x), reduce=n,
                 outputs=numel(y), weights=[v.name for v in node.inputs[1:]], table_bits=len(ints["rsqrt"]) * 18)]


for _op, _rms in (("layer_norm", False), ("rms_norm", True)):
    KERNELS[_op] = KernelDef(_op, functools.partial(_norm_emulate, rms=_rms), functools.partial(_norm_calls, rms=_rms),
                             _norm_check)
