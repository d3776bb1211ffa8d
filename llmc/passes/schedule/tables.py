"""The schedule as tables, for ``llmc inspect``: a pre-flight answer, and an artifact's schedule.json."""

from __future__ import annotations

from pathlib import Path

from llmc.codegen.report import Table
from llmc.passes.schedule.plan import show_bytes


def preflight_tables(answers: list) -> list[Table]:
    """One table of ``Preflight`` answers (one column per device)."""
    rows = [
        ["fits the budget", *("yes" if a.fits else "no" for a in answers)],
        ["budget", *(show_bytes(a.budget) for a in answers)],
        ["smallest budget that works", *(show_bytes(a.minimum) for a in answers)],
        ["weights", *(show_bytes(a.facts.weights) for a in answers)],
        ["KV cache", *(f"{show_bytes(a.facts.kv_cache)} (--max-seq-len {a.max_seq_len})" for a in answers)],
        ["activations (prefill chunk)", *(show_bytes(a.facts.activations) for a in answers)],
        ["streams from", *(f"{a.storage.name}, {a.storage.cold / 1e9:.2f} GB/s" for a in answers)],
        ["plan at the budget", *(_plan(a.plan) for a in answers)],
        ["decode at the budget", *(_rate(a.plan) for a in answers)],
        ["decode at the smallest budget", *(_rate(a.at_minimum) for a in answers)],
    ]
    return [Table(f"pre-flight: {answers[0].name}", ["", *(a.device.name for a in answers)], rows)]


def schedule_tables(folder: Path) -> list[Table]:
    """Summary and per-group table of the schedule.json in an artifact folder (none without one)."""
    from llmc.runtime.streaming import read_schedule

    doc = read_schedule(folder)
    if doc is None:
        return []
    if "stages" in doc:
        rows = [[str(i), s["label"], show_bytes(s["bytes"]), f"{s['compute_s'] * 1e3:.3f} ms"]
                for i, s in enumerate(doc["stages"])]
        return [Table(f"pipeline stages ({doc['device']})", ["stage", "units", "weights", "decode compute"], rows)]
    m = doc["memory"]
    summary = [["budget", show_bytes(doc["budget"])], ["device", doc["device"]],
               ["storage", (f"{doc['storage']['name']}: cold {doc['storage']['cold'] / 1e9:.2f} GB/s, "
                            f"warm {doc['storage']['warm'] / 1e9:.2f} GB/s")],
               ["memory", ", ".join(f"{k} {show_bytes(v)}" for k, v in m.items())],
               ["prefetch distance", str(doc["prefetch"])],
               ["predicted decode", f"{doc['predicted']['decode_tokens_per_s']:.3g} tokens/s"]]
    rows = [[str(i), g["label"], "resident" if g["resident"] else "streamed", show_bytes(g["bytes"]),
             str(g.get("offset", "-")), f"{g['compute_s'] * 1e3:.3f} ms"] for i, g in enumerate(doc["groups"])]
    return [Table("schedule", ["", ""], summary),
            Table("layer groups", ["group", "units", "residency", "bytes", "file offset", "decode compute"], rows)]


def _plan(plan) -> str:
    if plan is None:
        return "-"
    streamed = len(plan.streamed)
    return (f"{len(plan.groups)} groups, {streamed} streamed, prefetch {plan.prefetch}" if streamed
            else "everything resident")


def _rate(plan) -> str:
    return "-" if plan is None else f"{plan.tokens_per_s:.3g} tokens/s"
