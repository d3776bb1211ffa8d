"""Resource and latency estimates before synthesis, and the planner that uses them.

Formulas (per kernel call; ``M`` parallel multipliers, ``R`` reuse factor, ``S`` pipeline steps:
rows of a dense layer, output pixels of a convolution, elements of anything else):

    M        = ceil(products per step / R)              (products per step: n_in * n_out, or
                                                          c_in/groups * k_h * k_w * c_out; 1 for
                                                          elementwise products)
    DSP      = M * dsp_per_mult(a, b)                   DSP48E2 multiplies 27 x 18 bits: 1 when the
                                                          operands fit, ceil(a/27) * ceil(b/18)
                                                          otherwise, 0 when both are <= 10 bits
                                                          (small products go to LUTs, as FINN does)
    LUT      = M * (a * b / 2 if LUT multipliers) + M * acc_bits (adder tree) + 100 (control)
    FF       = M * (acc_bits + max(a, b)) + 100
    BRAM36   on-chip weights read M at a time: max(ceil(M * w / 72), ceil(weight bits / 36 Kb))
               blocks (two 36-bit ports each) when R > 1 (R = 1: weights are constants folded into
               the logic, LUT += weight bits / 4; tables read one row at a time, as embeddings, are ROMs); URAM instead (two 72-bit ports, 288 Kb:
               max(ceil(M * w / 144), ceil(bits / 288 Kb))) for weights over 1 Mb where the device
               has it; off-chip weights need one burst buffer (256 x 512 bits: 4 blocks);
               activations over 1 Kb: ceil(bits / 36 Kb) blocks each (io_parallel keeps every
               intermediate buffer), over 1 Mb in URAM where the device has it (ceil(bits / 288 Kb));
               lookup tables: ceil(table bits / 36 Kb)
    cycles   = S * R + depth,  depth = ceil(log2(sum length)) + 4
               off-chip weights: max(S * R, weight bytes / (bandwidth / clock)) + depth + 64 (burst latency)

The design runs its calls in sequence (io_parallel): latency = sum of cycles, at the clock.

Planner (``plan``): start fully parallel (R = 1) with every weight on chip; while DSP or LUT
exceed the usable budget, double R of the call using the most; while BRAM/URAM exceed it, move
the largest on-chip weight off chip (m_axi bursts, the FlightLLM approach) and raise that call's
R until its multipliers do not outrun the bandwidth. Then, while it stays within budget, halve R
of the slowest call. A model still over budget is refused (``FitError``) naming the largest users
of the resource short and by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmc.errors import TargetError
from llmc.targets.fpga.devices import FpgaDevice
from llmc.targets.fpga.fixed import Fixed
from llmc.targets.fpga.kernels import Call

BRAM_BITS = 36 * 1024
BURST_BRAM = 4  # one m_axi burst (256 beats of 512 bits) buffered on chip per off-chip weight stream
URAM_BITS = 288 * 1024
RESOURCES = ("dsp", "bram36", "uram", "lut", "ff")


class FitError(TargetError):
    """The model cannot fit the chosen device even with off-chip weights and maximal reuse."""


def dsp_per_mult(a: int, b: int) -> int:
    if max(a, b) <= 10:
        return 0
    a, b = max(a, b), min(a, b)
    return min(math.ceil(a / 27) * math.ceil(b / 18), math.ceil(b / 27) * math.ceil(a / 18))


def _width(t) -> int:
    return t.width if isinstance(t, Fixed) else 32


@dataclass
class Unit:
    """One call's share of the plan: what the estimate formulas read and the planner changes."""

    node: str
    op: str
    call: Call
    steps: int
    per_step: int
    weight_bits: int
    offchip: bool = False
    reuse: int = 1
    estimate: dict = field(default_factory=dict)
    origin: str = ""

    @property
    def mults(self) -> int:
        return math.ceil(self.per_step / self.reuse) if self.per_step else 0

    @property
    def max_reuse(self) -> int:
        return max(self.per_step, 1)


def unit_of(node, call: Call, weight_bits: int) -> Unit:
    ints = call.ints
    if call.kernel == "dense":
        steps, per = ints["rows"], ints["n_in"] * ints["n_out"]
    elif call.kernel == "conv2d":
        steps = ints["batch"] * ints["h_out"] * ints["w_out"]
        per = call.macs // max(steps, 1)
    else:
        steps, per = max(call.outputs, 1), (math.ceil(call.macs / max(call.outputs, 1)) if call.macs else 0)
    return Unit(node.name, node.op, call, steps, per, weight_bits, origin=node.meta.origin or "")


def estimate_unit(u: Unit, device: FpgaDevice, activation_bits: int) -> dict:
    """The formulas of the module docstring for one call."""
    t = u.call.types
    a = _width(t.get("in_t", t.get("a_t")))
    b = _width(t.get("weight_t", t.get("b_t", t.get("inv_t", t.get("in_t")))))
    acc = _width(t.get("accum_t", t.get("out_t")))
    m = u.mults
    lut_mult = dsp_per_mult(a, b) == 0 and m > 0
    est = {"dsp": m * dsp_per_mult(a, b), "lut": int(m * (a * b / 2 if lut_mult else 0) + m * acc + 100),
           "ff": int(m * (acc + max(a, b)) + 100), "bram36": 0, "uram": 0}
    w_bits = u.weight_bits
    word = _width(t.get("weight_t")) if "weight_t" in t else 0
    if w_bits and u.offchip:
        est["bram36"] += BURST_BRAM
    elif w_bits and u.reuse == 1 and u.per_step:
        est["lut"] += w_bits // 4
    elif w_bits and w_bits > 1 << 20 and device.uram:
        est["uram"] += max(math.ceil(m * word / 144), math.ceil(w_bits / URAM_BITS))
    elif w_bits:
        est["bram36"] += max(math.ceil(m * word / 72), math.ceil(w_bits / BRAM_BITS))
    if activation_bits > 1 << 20 and device.uram:
        est["uram"] += math.ceil(activation_bits / URAM_BITS)
    elif activation_bits > 1024:
        est["bram36"] += math.ceil(activation_bits / BRAM_BITS)
    else:
        est["ff"] += activation_bits
    est["bram36"] += math.ceil(u.call.table_bits / BRAM_BITS) if u.call.table_bits else 0
    depth = math.ceil(math.log2(max(u.call.reduce, 1))) + 4
    cycles = u.steps * u.reuse + depth
    if u.offchip:
        per_cycle = device.bandwidth / (device.clock_mhz * 1e6)
        cycles = max(u.steps * u.reuse, math.ceil(w_bits / 8 / per_cycle)) + depth + 64
    est.update(cycles=int(cycles), reuse=u.reuse, multipliers=m, offchip=u.offchip, weight_bits=w_bits)
    return est


@dataclass
class Plan:
    device: FpgaDevice
    units: list[Unit]
    activation_bits: dict[str, int]

    def offchip(self) -> set[str]:
        return {w for u in self.units if u.offchip for w in u.call.weights}

    def refresh(self) -> dict:
        for u in self.units:
            u.estimate = estimate_unit(u, self.device, self.activation_bits.get(u.node, 0))
        return self.totals()

    def totals(self) -> dict:
        tot = {k: sum(u.estimate[k] for u in self.units) for k in RESOURCES}
        tot["cycles"] = sum(u.estimate["cycles"] for u in self.units)
        return tot

    def over(self, totals: dict) -> list[str]:
        budget = self.device.budget()
        return [k for k in RESOURCES if totals[k] > budget[k]]

    def apply(self) -> None:
        """Write the chosen reuse factors into the calls' configs."""
        for u in self.units:
            if "reuse" in u.call.ints:
                u.call.ints["reuse"] = u.reuse
                u.call.ints["n_mult"] = u.mults

    def section(self) -> dict:
        """The manifest's estimates: per layer, totals, budget, utilisation and time at the clock."""
        tot = self.totals()
        budget = self.device.budget()
        clock = self.device.clock_mhz * 1e6
        layers = [{"node": u.node, "op": u.op, "kernel": u.call.kernel,
                   **{k: u.estimate[k] for k in (*RESOURCES, "cycles", "reuse", "multipliers", "offchip", "weight_bits")}}
                  for u in self.units]
        offchip_bytes = sum(u.weight_bits for u in self.units if u.offchip) / 8
        return {"device": self.device.name, "clock_mhz": self.device.clock_mhz, "layers": layers,
                "total": tot, "budget": {k: int(v) for k, v in budget.items()},
                "utilization": {k: (tot[k] / getattr(self.device, k) if getattr(self.device, k) else 0.0) for k in RESOURCES},
                "latency_cycles": tot["cycles"], "latency_s": tot["cycles"] / clock,
                "offchip_weight_bytes": offchip_bytes,
                "offchip_time_s": offchip_bytes / self.device.bandwidth,
                "bandwidth_bound": sum(u.estimate["cycles"] for u in self.units if u.offchip and
                                       u.steps * u.reuse < u.estimate["cycles"] - 80) > tot["cycles"] / 2}


def plan(units: list[Unit], device: FpgaDevice, activation_bits: dict[str, int]) -> Plan:
    """Reuse factors and on/off-chip weights that fit ``device`` (see the module docstring)."""
    p = Plan(device, units, activation_bits)
    budget = device.budget()
    tot = p.refresh()
    for _ in range(10_000):
        over = [k for k in ("dsp", "lut", "ff") if tot[k] > budget[k]]
        if not over:
            break
        k = over[0]
        cands = [u for u in units if u.mults > 1]
        if not cands:
            break
        worst = max(cands, key=lambda u: u.estimate[k])
        if worst.estimate[k] == 0:
            break
        worst.reuse = min(worst.reuse * 2, worst.max_reuse)
        tot = p.refresh()
    while tot["bram36"] > budget["bram36"] or tot["uram"] > budget["uram"]:
        if not _relieve_memory(p, device):
            break
        tot = p.refresh()
    _speed_up(p, budget)
    tot = p.refresh()
    offchip_bytes = sum(u.weight_bits for u in units if u.offchip) / 8
    if p.over(tot) or offchip_bytes > device.memory_bytes:
        raise _refusal(p, tot, offchip_bytes)
    p.apply()
    return p


def _relieve_memory(p: Plan, device: FpgaDevice) -> bool:
    """One step against on-chip memory use: the call using the most either reads its weights
    through fewer ports (doubled R), or keeps them off chip (R raised until its multipliers do
    not outrun the bandwidth; its burst buffer is fixed). False when no call can give anything back."""
    def use(u):
        return u.estimate["bram36"] + 8 * u.estimate["uram"]

    for u in sorted((u for u in p.units if u.weight_bits and not u.offchip), key=use, reverse=True):
        word = _width(u.call.types.get("weight_t"))
        port_bound = math.ceil(u.mults * word / 72) > math.ceil(u.weight_bits / BRAM_BITS)
        if port_bound and not u.offchip and u.reuse < u.max_reuse and u.mults > 1:
            u.reuse = min(u.reuse * 2, u.max_reuse)
            return True
        if not u.offchip and device.memory_bytes:
            u.offchip = True
            per_cycle = device.bandwidth / (device.clock_mhz * 1e6)  # bytes per cycle
            words = max(per_cycle * 8 / max(word, 1), 1)
            u.reuse = min(max(u.reuse, math.ceil(u.per_step / words)), u.max_reuse)
            return True
    return False


def _speed_up(p: Plan, budget: dict) -> None:
    """Halve the reuse factor of the slowest call while the design stays within budget."""
    tot = p.refresh()
    tried: set[int] = set()
    while True:
        cands = [u for u in p.units if u.reuse > 1 and id(u) not in tried]
        if not cands:
            return
        slow = max(cands, key=lambda u: u.estimate["cycles"])
        old = slow.reuse
        slow.reuse = max(1, old // 2)
        new = p.refresh()
        if p.over(new) or new["cycles"] >= tot["cycles"]:
            slow.reuse = old
            tried.add(id(slow))
            p.refresh()
        else:
            tot = new


def _refusal(p: Plan, tot: dict, offchip_bytes: float) -> FitError:
    budget, dev = p.device.budget(), p.device
    parts = []
    for k in p.over(tot):
        top = sorted(p.units, key=lambda u: -u.estimate[k])[:3]
        names = ", ".join(f"{u.node} ({u.op}{' at ' + u.origin if u.origin else ''}: {u.estimate[k]:,} {k})" for u in top)
        parts.append(f"{k}: needs {tot[k]:,} of {int(budget[k]):,} usable ({tot[k] - budget[k]:,.0f} short); largest: {names}")
    if offchip_bytes > dev.memory_bytes:
        top = sorted((u for u in p.units if u.offchip), key=lambda u: -u.weight_bits)[:3]
        names = ", ".join(f"{u.node} ({u.weight_bits / 8 / 2**20:.1f} MiB)" for u in top)
        parts.append(f"off-chip memory: weights need {offchip_bytes / 2**20:,.1f} MiB of {dev.memory_bytes / 2**20:,.0f} MiB "
                     f"({(offchip_bytes - dev.memory_bytes) / 2**20:,.1f} MiB short); largest: {names}")
    return FitError(f"the model does not fit {dev.description} even with weights off chip and maximal reuse: " + "; ".join(parts),
                    hint="choose a larger --device, fewer --fpga-bits, or a smaller input shape")
