"""The ``sparsity`` section of a manifest as a table for report.md and ``llmc inspect``."""

from __future__ import annotations

from llmc.codegen.report import Table, nbytes


def _us(times: dict | None, size: str) -> str:
    if not times or size not in times:
        return "-"
    t = times[size]
    return f"{t['dense'] * 1e6:.0f} / {t['sparse'] * 1e6:.0f}"


def sparsity_table(section: dict) -> Table:
    """One row per pruned weight: storage, density, format of the kept values, error, bytes (the
    composed size for sparse + low-bit), the decision and the kernel times behind it (dense /
    sparse microseconds, measured on the cpu, else predicted)."""
    sizes = list(section["sizes"])
    rows = []
    for r in section["layers"]:
        times = r["measured"] or r["predicted"]
        rows.append([r["origin"], str(r["layer"] if r["layer"] is not None else "-"), r["storage"],
                     f"{r['density']:.3f}", r.get("format") or "float32", f"{r['error']:.2e} ({r['metric']})",
                     nbytes(r["bytes"]), r["kernel"] or "dense weights", r["reason"], *(_us(times, s) for s in sizes)])
    opts = section["options"]
    quant = f" + {section['quant']}" if section.get("quant") else ""
    sparse = sum(r["kernel"] == "sparse" for r in section["layers"])
    runs = f"{sparse} of {len(section['layers'])} weights run a sparse kernel"
    title = (f"sparsity: {opts['method']} {opts['pattern']}{quant} at density {opts['density']:g} for "
             f"{opts['goal']} on {section['target']}; {runs}, "
             f"{section['stored_sparse']} stored compressed; {nbytes(section['bytes'])} of pruned-layer weights, "
             f"{section['bytes'] / max(section['float_bytes'], 1):.3f}x float32")
    return Table(title, ["weight", "layer", "storage", "density", "format", "error", "bytes", "kernel", "decision",
                         *(f"{s} us dense/sparse (rows {section['sizes'][s]})" for s in sizes)], rows)
