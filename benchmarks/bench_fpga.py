"""llmc's fpga target side by side with hls4ml on the same PyTorch models (an MLP, the small CNN).

For each tool and model: the C-simulation's outputs against float32 (relative error, 8 inputs),
whether the C-simulation equals the tool's own numpy emulation bit for bit (hls4ml has none: its
C-simulation is its reference), resource/latency estimates before synthesis (hls4ml reports
them only after Vitis HLS synthesis), generated lines of C++ (the project minus the ap_types
headers; weights counted apart) and the time from the PyTorch model to a callable C-simulation.
Both tools get 16-bit fixed point: llmc its default (ranges from calibration, round-half-up,
saturation), hls4ml its default ``ap_fixed<16,6>`` (truncation, wrap-around).

    python benchmarks/bench_fpga.py     # writes benchmarks/results/bench_fpga.json
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

RESULT = Path(__file__).parent / "results" / "bench_fpga.json"
DEVICE, PART = "zcu102", "xczu9eg-ffvb1156-2-e"
SAMPLES = 8


def models():
    """(name, module, input shape without batch): the same modules go to both tools."""
    import torch
    from torch import nn

    from llmc.examples import small_cnn

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    cnn, _ = small_cnn()
    pooled, _ = small_cnn()  # the same weights; hls4ml has no AdaptiveAvgPool2d, AvgPool2d(8) is equal on 8x8 maps
    pooled.pool = nn.AvgPool2d(8)
    return [("mlp", mlp, (16,)), ("small-cnn", cnn, (3, 32, 32)), ("small-cnn-avgpool8", pooled, (3, 32, 32))]


def lines(folder: Path) -> dict:
    """Lines of generated C++ under ``folder`` (ap_types excluded): all, and in weight files."""
    total = weights = 0
    for p in folder.rglob("*"):
        if p.suffix not in (".h", ".cpp") or "ap_types" in p.parts:
            continue
        n = sum(1 for _ in p.open(errors="ignore"))
        total += n
        weights += n if "weights" in p.parts else 0
    return {"all": total, "weights": weights, "other": total - weights}


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a).reshape(b.shape) - b) / np.linalg.norm(b))


def run_llmc(name, model, shape, x, ref, out: Path) -> dict:
    import torch

    import llmc
    from llmc.targets.fpga import csim, emulate
    from llmc.targets.fpga.simulate import artifact_precision, simulate_codes

    start = time.perf_counter()
    art = llmc.compile(model, "fpga", example_inputs=(torch.from_numpy(x[:1]),), output=out / f"llmc-{name}", device=DEVICE)
    csim.build(art.path / "hls")
    seconds = time.perf_counter() - start
    P, _ = artifact_precision(art.path)
    key, outs, exact = art.graph.inputs[0].name, [], True
    for i in range(len(x)):
        feeds = {key: x[i:i + 1]}
        got = simulate_codes(art.path, feeds)
        want = emulate.run_codes(art.graph, P, emulate.input_codes(art.graph, P, feeds))
        exact &= all(np.array_equal(got[k], want[k]) for k in want)
        outs.append(emulate.decode(art.graph, P, got)[art.graph.outputs[0].name])
    est = art.manifest["payload"]["fpga"]["estimates"]
    return {"seconds_to_csim": round(seconds, 2), "rel_error_vs_float32": rel(np.concatenate(outs), ref),
            "bit_exact_to_own_emulation": bool(exact),
            "estimates": {**{k: est["total"][k] for k in ("dsp", "bram36", "lut", "ff")},
                          "latency_cycles": est["latency_cycles"], "latency_us": round(est["latency_s"] * 1e6, 2)},
            "generated_lines": lines(art.path / "hls")}


def run_hls4ml(name, model, shape, x, ref, out: Path) -> dict:
    import hls4ml

    start = time.perf_counter()
    try:
        cfg = hls4ml.utils.config_from_pytorch_model(model, input_shape=shape, granularity="name",
                                                     default_precision="ap_fixed<16,6>", backend="Vitis")
        hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(out / f"hls4ml-{name}"),
                                                          backend="Vitis", io_type="io_parallel", part=PART)
        hm.compile()
    except Exception as e:  # an unsupported layer is a result, not a crash
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    seconds = time.perf_counter() - start
    y = hm.predict(np.ascontiguousarray(x))
    return {"seconds_to_csim": round(seconds, 2), "rel_error_vs_float32": rel(y, ref),
            "bit_exact_to_own_emulation": None, "estimates": None,
            "generated_lines": lines(out / f"hls4ml-{name}" / "firmware")}


def main() -> None:
    import torch

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fpga-") as tmp:
        os.environ["LLMC_CACHE"] = str(Path(tmp) / "cache")  # no g++ build cached from an earlier run
        for name, model, shape in models():
            x = np.random.default_rng(1).standard_normal((SAMPLES, *shape)).astype(np.float32)
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            row = {"model": name, "input": list(shape)}
            for tool, fn in (("llmc", run_llmc), ("hls4ml", run_hls4ml)):
                row[tool] = fn(name, model, shape, x, ref, Path(tmp))
                print(name, tool, json.dumps(row[tool]), flush=True)
            results.append(row)
    doc = {"date": datetime.date.today().isoformat(), "device": f"{DEVICE} ({PART})", "machine": platform.processor() or
           platform.machine(), "versions": {k: version(k) for k in ("llmc", "hls4ml", "torch", "numpy")},
           "precision": {"llmc": "16-bit ap_fixed per tensor from calibration, AP_RND/AP_SAT",
                         "hls4ml": "ap_fixed<16,6> everywhere (AP_TRN/AP_WRAP)"},
           "results": results}
    RESULT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
