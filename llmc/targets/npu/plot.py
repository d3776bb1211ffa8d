"""The NPU artifact's picture: flops per layer on the NPU and on the CPU (``placement.png``)."""

from __future__ import annotations

from pathlib import Path

from llmc.ir.graph import Graph
from llmc.targets.npu.partition import NPU, Placement


def plot_placement(graph: Graph, placement: dict[str, Placement], flops: dict[str, float], path: Path,
                   *, title: str) -> bool:
    """Write a PNG of stacked NPU / CPU flops per model layer (``-``: outside the blocks).
    Returns False (writing nothing) when matplotlib (the ``report`` extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers: dict[int | None, dict[str, float]] = {}
    for node in graph.nodes:
        row = layers.setdefault(node.meta.layer, {"npu": 0.0, "cpu": 0.0})
        row["npu" if placement[node.name].device == NPU else "cpu"] += flops.get(node.name, 0.0)
    keys = sorted(layers, key=lambda k: (k is None, k or 0))
    labels = ["-" if k is None else str(k) for k in keys]
    npu = [layers[k]["npu"] / 1e9 for k in keys]
    cpu = [layers[k]["cpu"] / 1e9 for k in keys]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(keys)), 3.2))
    ax.bar(range(len(keys)), npu, color="tab:green", label="NPU (QDQ)")
    ax.bar(range(len(keys)), cpu, bottom=npu, color="tab:gray", label="CPU (float32)")
    ax.set_xticks(range(len(keys)), labels, fontsize=7)
    ax.set_xlabel("layer (- = outside the blocks)")
    ax.set_ylabel("GFLOP per call")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return True
