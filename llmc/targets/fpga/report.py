"""The fpga artifact's tables: fit on the device and estimates per layer (report.md, inspect, compile)."""

from __future__ import annotations

from llmc.codegen.report import Table

RESOURCES = ("dsp", "bram36", "uram", "lut", "ff")


def tables(section: dict) -> list[Table]:
    est = section["estimates"]
    total, budget, util = est["total"], est["budget"], est["utilization"]
    fit = [[k.upper(), f"{total[k]:,}", f"{budget[k]:,}", f"{util[k]:.1%}"] for k in RESOURCES]
    fit.append(["latency", f"{est['latency_cycles']:,} cycles", f"at {est['clock_mhz']:g} MHz", f"{est['latency_s'] * 1e6:,.1f} us"])
    if section["offchip"]:
        fit.append(["off-chip weights", f"{est['offchip_weight_bytes'] / 2**20:,.2f} MiB", f"{len(section['offchip'])} tensors",
                    "bandwidth-bound" if est["bandwidth_bound"] else "compute-bound"])
    title = (f"fpga: fits {est['device']} ({section['part']}, {section['io']}, {section['bits']}-bit default precision; "
             f"calibration {section['calibration']})")
    layers = [[r["node"], r["op"], r["kernel"], str(r["reuse"]), f"{r['multipliers']:,}", f"{r['dsp']:,}", f"{r['bram36']:,}",
               f"{r['uram']:,}", f"{r['lut']:,}", f"{r['ff']:,}", f"{r['cycles']:,}",
               ("off chip" if r["offchip"] else "on chip") if r["weight_bits"] else "-"] for r in est["layers"]]
    return [Table(title, ["resource", "estimate", "usable", "of device"], fit),
            Table("fpga estimates per layer (before synthesis; formulas in llmc/targets/fpga/estimate.py)",
                  ["node", "op", "kernel", "reuse", "mults", "DSP", "BRAM36", "URAM", "LUT", "FF", "cycles", "weights"], layers)]
