"""The quantization report's picture: per-layer error and bits, one bar per quantized weight."""

from __future__ import annotations

from pathlib import Path


def plot_layers(layers, path: Path, *, title: str) -> bool:
    """Write a PNG: error (and, for mixed recipes, sensitivity) per weight (log scale, top) and stored bits
    per weight (bottom), in graph order.
    Returns False (writing nothing) when matplotlib (the ``report`` extra) is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.origin for r in layers]
    bits = [8 * r.bytes / (r.float_bytes / 4) for r in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, len(layers) * 0.09), 6), sharex=True)
    top.bar(range(len(layers)), [max(r.error, 1e-9) for r in layers], color="tab:red", label="error")
    top.set_yscale("log")
    metric = {r.metric for r in layers}
    top.set_ylabel("relative output error" if metric == {"output"} else "relative error")
    sensitive = [(i, r.sensitivity) for i, r in enumerate(layers) if r.sensitivity is not None]
    if sensitive:  # --quant mixed: what the allocation minimized (squared relative output error)
        top.scatter(*zip(*[(i, max(s, 1e-12)) for i, s in sensitive]), color="black", s=6, label="sensitivity")
        top.legend(fontsize=7)
    top.set_title(title)
    colors = ["tab:orange" if r.outliers else "tab:blue" for r in layers]
    bottom.bar(range(len(layers)), bits, color=colors)
    bottom.set_ylabel("bits per weight (scales, outliers\nincluded; orange: with outliers)")
    step = max(1, len(layers) // 40)
    bottom.set_xticks(range(0, len(layers), step), names[::step], rotation=90, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
