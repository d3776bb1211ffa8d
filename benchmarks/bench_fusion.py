"""Kernels per Llama decoder block and per generation step: llmc -O2 (its own fusion) against
-O1 (TVM's FuseOps alone, on the same graph) and against torch.compile's inductor on this CPU.

llmc's counts come from the cpu artifacts' manifests (``payload.kernels_per_layer``: launched
TIR kernels computing nodes of the decoder layers, per layer, and those outside them). Inductor's
count is the launches in the ``call`` function of the code it generates for one Hugging Face
``LlamaDecoderLayer`` (generated C++ kernels, extern GEMMs and aten fallbacks such as SDPA),
at a prefill of ``--seq`` tokens with SmolLM2's and the tiny Llama's block shapes. llmc's counts
depend on the CPU: the panel width of float weights (recorded with the device) decides whether a
product needs a slice kernel dropping a padded panel.

    python benchmarks/bench_fusion.py      # writes benchmarks/results/bench_fusion.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

RESULT = Path(__file__).parent / "results" / "bench_fusion.json"
MODELS = ("tiny-llama", "smollm2-135m")
LAUNCH = re.compile(r"^\s+(?:\w+ = )?(cpp_fused_\w+|extern_kernels\.\w+|torch\.ops\.\w+\.\w+(?:\.\w+)?)\(", re.MULTILINE)


def llmc_counts(name: str, level: str, out: Path) -> dict:
    """Kernels per call of each entry and per decoder layer, of the cpu generation artifact."""
    import llmc
    from llmc import examples

    model = examples.tiny_llama()[0] if name == "tiny-llama" else name
    art = llmc.compile(model, target="cpu", output=out / f"{name}-{level}", generation=True, max_seq_len=256,
                       opt_level=level)
    payload = art.manifest["payload"]
    per_layer = payload["kernels_per_layer"]
    fused = [r["stats"].get("fused", {}) for r in art.manifest["passes"] if r["name"] == "fuse"]
    return {
        "kernels_per_call": payload["kernels_per_call"],
        "kernels_per_block": {entry: row["per_layer"] for entry, row in per_layer.items()},
        "kernels_outside_blocks": {entry: row["outside"] for entry, row in per_layer.items()},
        "fused_groups": fused[0] if fused else {},
    }


def inductor_block(name: str, seq: int) -> dict:
    """Launches per call of inductor's code for one decoder block (prefill of ``seq`` tokens)."""
    import torch
    from torch._inductor.utils import run_and_get_code
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    config = LlamaConfig(**_block_config(name))
    config._attn_implementation = "sdpa"
    layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    rotary = LlamaRotaryEmbedding(config)
    x = torch.randn(1, seq, config.hidden_size)
    positions = torch.arange(seq)[None]
    cos_sin = rotary(x, positions)

    def block(h):
        out = layer(h, attention_mask=None, position_ids=positions, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out

    torch._dynamo.reset()
    with torch.no_grad():
        _, codes = run_and_get_code(torch.compile(block), x)
    calls = [code[code.index("def call("):] for code in codes if "def call(" in code]
    launches = [m for call in calls for m in LAUNCH.findall(call.split("\ndef ", 1)[0])]
    return {"kernels_per_block": len(launches), "launches": launches, "shape": f"batch 1, seq {seq}, float32"}


def _block_config(name: str) -> dict:
    if name == "tiny-llama":
        from llmc.examples import tiny_llama_config

        c = tiny_llama_config()
        return {k: getattr(c, k) for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                           "num_key_value_heads", "rms_norm_eps", "vocab_size")}
    return {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
            "rms_norm_eps": 1e-5, "vocab_size": 49152}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--seq", type=int, default=16, help="prefill length of inductor's block")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    import tvm

    from llmc.targets.gpu.cpu import host_cpu
    from llmc.targets.gpu.cpu_rules import panel_width

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            row = {level: llmc_counts(name, level, Path(tmp)) for level in ("O1", "O2")}
            row["inductor"] = inductor_block(name, args.seq)
            results[name] = row
            print(name, json.dumps({k: v.get("kernels_per_block") for k, v in row.items()}), file=sys.stderr)
    doc = {
        "benchmark": "kernels per Llama block and per generation step: llmc -O2 vs -O1 (TVM FuseOps) vs inductor",
        "date": datetime.date.today().isoformat(),
        "device": {"cpu": platform.processor() or platform.machine(), "machine": platform.machine(),
                   "llvm_cpu": host_cpu(), "panel_width": panel_width(tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()}))},
        "versions": {p: version(p) for p in ("llmc", "apache-tvm", "torch", "transformers")},
        "method": "llmc: cpu generation artifacts, kernels computing decoder-layer nodes divided by the layer "
                  "count, from the manifest; inductor: launches in the generated call() of one LlamaDecoderLayer",
        "results": results,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
