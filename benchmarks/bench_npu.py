"""The NPU target's numbers: placement, graphs, QDQ agreement, greedy tokens, perplexity, times.

For small-cnn, SqueezeNet 1.0 (the onnx package's zoo model, random weights), MiniLM and SmolLM2-135M-Instruct (``--chunk 128``) compiled for ``--target=npu``
(profile qnn-htp):
  - placement: fraction of nodes and of flops (at the prefill chunk's static sizes) on the NPU;
  - graphs: the ONNX files written (chunks x variants), NPU and CPU chunks;
  - QDQ agreement: every NPU op's output on ONNX Runtime against llmc's reference op running the
    same QDQ numerics on the same inputs, max |difference| in LSB of the output's step, per
    activation format, on the CPU provider and (with onnxruntime-qnn) the QNN EP's HTP simulator;
  - build time (``llmc.compile``) and load time (ONNX Runtime sessions of every chunk); with
    onnxruntime-qnn, whether every NPU chunk loads on the HTP with CPU fallback disabled.
SmolLM2 also gets:
  - greedy tokens: 32 new tokens for 3 prompts (one longer than a chunk) on the NPU artifact
    against llmc's float32 run of the same step graph (the reference interpreter): the tokens
    before the first difference, and the positions that agree;
  - perplexity (``llmc.runtime.perplexity.evaluate``) of the NPU recipe against float32, on a
    short prefix of the evaluation corpus (``--ppl-tokens``, windows of 256, stride 128), and of
    the recipe with one scale per linear weight instead of one per output channel;
  - attention softmax: relative error of the attention output when its probabilities are
    rounded to uint16 / uint8 (the reason qnn-htp keeps the softmax on the CPU).

    python benchmarks/bench_npu.py              # writes benchmarks/results/bench_npu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

import llmc
from llmc.codegen.target import get_target
from llmc.targets.npu.agreement import agreement
from llmc.targets.npu.build import make_plan
from llmc.targets.npu.profiles import get_profile
from llmc.targets.npu.runner import Session, StepRunner, qnn_available

RESULT = Path(__file__).parent / "results" / "bench_npu.json"
PROMPTS = (("chat", "What is the capital of France?"), ("chat", "Write a short poem about the sea."),
           ("text", None))  # None: the first 300 tokens of the evaluation corpus (3 chunks of 128)


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def plan_of(art):
    return make_plan(art.graph, get_target("npu").make_options(**art.manifest["target"]["options"]),
                     tokenizer=art.path / "tokenizer")


def facts(art, build_s: float) -> dict:
    payload = art.manifest["payload"]
    out = {"build_s": round(build_s, 2), "graphs": payload["graphs"], "chunks": payload["chunks"],
           "placement": {k: v for k, v in payload["placement"].items() if k != "cpu_ops"},
           "cpu_ops": payload["placement"]["cpu_ops"], "weights_bytes": payload["weights_bytes"], "on_chip": payload["on_chip"],
           "activations": payload["quantization"]["activations"]}
    for provider in ("cpu", "qnn") if qnn_available() else ("cpu",):
        session = Session(art.path, provider)
        start = time.perf_counter()
        for variant in session.schedule["variants"]:
            session.sessions(variant)
        out[f"load_s_{provider}"] = round(time.perf_counter() - start, 2)
    if qnn_available():
        out["qnn_all_npu_chunks_on_htp"] = True  # sessions above load with session.disable_cpu_ep_fallback=1
    return out


def lsb(plan, art, variant, feeds) -> dict:
    out = {}
    for provider in ("cpu", "qnn") if qnn_available() else ("cpu",):
        worst, by_op = agreement(plan, art.path, variant, feeds, provider)
        out[provider] = {"max_lsb": {k: round(v, 2) for k, v in worst.items()},
                         "by_op": {k: round(v, 2) for k, v in sorted(by_op.items())}}
    return out


def forward_case(name: str, feeds: dict, folder: Path, model=None) -> dict:
    np.savez(folder / f"{name}.npz", **feeds)
    start = time.perf_counter()
    art = llmc.compile(model or name, target="npu", output=folder / name, calib=str(folder / f"{name}.npz"))
    result = facts(art, time.perf_counter() - start)
    result["agreement"] = lsb(plan_of(art), art, "forward", feeds)
    got, ref = art.run(feeds), art.run(feeds, reference=True)
    result["output_cosine_vs_float32"] = {
        k: round(float((got[k] * ref[k]).sum() / np.linalg.norm(got[k]) / np.linalg.norm(ref[k])), 5) for k in got}
    return result


def squeezenet_case(folder: Path) -> dict:
    import sys

    import onnx

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from zoo import randomized_zoo_model

    (folder / "zoo").mkdir()
    path = randomized_zoo_model("squeezenet", folder / "zoo")
    first = onnx.load(str(path), load_external_data=False).graph.input[0]
    shape = [d.dim_value for d in first.type.tensor_type.shape.dim]
    feeds = {first.name: np.random.default_rng(0).random(shape).astype(np.float32)}
    return forward_case("squeezenet", feeds, folder, model=str(path))


def greedy(art, tokenizer_text_ids) -> list[dict]:
    rows = []
    for kind, text in PROMPTS:
        prompt = text if text is not None else tokenizer_text_ids[:300]
        npu = art.generate(prompt, max_new_tokens=32, chat=kind == "chat")
        ref = art.generate(prompt, max_new_tokens=32, chat=kind == "chat", reference=True)
        a, b = npu.ids[0], ref.ids[0]
        prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        rows.append({"prompt": text or "evaluation corpus, first 300 tokens", "chat": kind == "chat",
                     "prompt_tokens": npu.stats.prompt_tokens, "npu_tokens": len(a), "float32_tokens": len(b),
                     "matching_prefix": prefix, "matching_positions": sum(x == y for x, y in zip(a, b)),
                     "npu_text": npu.text, "float32_text": ref.text,
                     "npu_prefill_tokens_per_s": round(npu.stats.prefill_tokens_per_s, 1),
                     "npu_decode_tokens_per_s": round(npu.stats.decode_tokens_per_s, 2)})
        log(f"greedy {rows[-1]['matching_prefix']}/32 prefix: {npu.text!r} vs {ref.text!r}")
    return rows


def softmax_error(art, ids: np.ndarray) -> dict:
    """Attention outputs with the probabilities rounded to uint16 / uint8 (range [0, 1]) vs float32."""
    from llmc.passes.quantize.calibration import Calibration, stream

    graph = art.graph
    found: dict[str, list[float]] = {"uint16": [], "uint8": []}
    attention = [n for n in graph.nodes if n.op == "attention"]

    def hook(node, args):
        q, k, v, mask = args
        t = mask.shape[-1]
        k, v = k[:, :, :t], v[:, :, :t]
        group = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        keep = mask & (np.arange(t)[None, :] <= np.arange(q.shape[2])[:, None] + (t - q.shape[2]))
        scores = np.where(keep, scores, -np.inf)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        exact = p @ v
        for dtype, levels in (("uint16", 65535), ("uint8", 255)):
            err = np.linalg.norm(np.round(p * levels) / levels @ v - exact) / np.linalg.norm(exact)
            found[dtype].append(float(err))
        return None

    inputs = {"input_ids": ids, "position_ids": np.arange(ids.shape[1])[None].repeat(len(ids), 0),
              "attention_mask": np.ones(ids.shape, bool)}
    stream(graph, Calibration(inputs, "bench"), attention, hook)
    return {dtype: {"median_rel_error": float(np.median(e)), "max_rel_error": float(np.max(e))}
            for dtype, e in found.items()}


def smollm2_case(folder: Path, ppl_tokens: int) -> dict:
    from llmc.runtime.perplexity import corpus, evaluate, tokenize_corpus

    start = time.perf_counter()
    art = llmc.compile("smollm2-135m", target="npu", output=folder / "smollm2", chunk=128)
    result = facts(art, time.perf_counter() - start)
    log(f"smollm2 built in {result['build_s']} s: {result['graphs']} graphs")
    tok = art.generator().tokenizer
    text_ids = tokenize_corpus(tok, corpus().text)
    runner = StepRunner(Session(art.path))
    caches = runner.new_caches(art.generator().spec, 1)
    ids = text_ids[None, :128]
    variant, feeds = runner.feeds(ids, np.arange(128)[None], np.ones((1, 128), bool), caches)
    result["agreement_prefill"] = lsb(plan_of(art), art, variant, feeds)
    log(f"agreement {result['agreement_prefill']}")
    result["softmax_quantized"] = softmax_error(art, text_ids[None, :256])
    result["greedy"] = greedy(art, text_ids.tolist())
    kw = {"window": 256, "stride": 128, "max_tokens": ppl_tokens}
    npu = evaluate("smollm2-135m", target="npu", chunk=128, **kw)
    log(f"perplexity npu {npu.ppl:.3f}")
    per_tensor = folder / "per-tensor.json"  # qnn-htp with one scale per linear weight (llm.npu's choice)
    per_tensor.write_text(json.dumps({**get_profile("qnn-htp").to_json(), "name": "qnn-htp-per-tensor",
                                      "per_channel": ["conv2d"]}))
    tensor = evaluate("smollm2-135m", target="npu", chunk=128, device=str(per_tensor), **kw)
    log(f"perplexity npu, per-tensor linear weights {tensor.ppl:.3f}")
    ref = evaluate("smollm2-135m", target="reference", **kw)
    log(f"perplexity float32 {ref.ppl:.3f}")
    result["perplexity"] = {"npu": round(npu.ppl, 4), "float32": round(ref.ppl, 4),
                            "delta": round(npu.ppl - ref.ppl, 4), "relative": round(npu.ppl / ref.ppl - 1, 4),
                            "npu_per_tensor_linear_weights": round(tensor.ppl, 4),
                            "tokens": npu.tokens, "window": 256, "stride": 128, "corpus_sha256": npu.corpus_sha256}
    return result


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("llmc", "onnx", "onnxruntime", "onnxruntime-qnn", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small-cnn,squeezenet,minilm,smollm2-135m")
    parser.add_argument("--update", action="store_true", help="keep the other models' results already in --out")
    parser.add_argument("--ppl-tokens", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=RESULT)
    a = parser.parse_args()
    warnings.simplefilter("ignore")
    from llmc.examples import minilm_inputs

    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "device": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                          "cpus": __import__("os").cpu_count(), "npu_profile": "qnn-htp",
                          "qnn": "onnxruntime-qnn HTP backend (x86-64 simulator)" if qnn_available() else None},
               "versions": versions(), "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-npu-") as tmp:
        folder = Path(tmp)
        for name in a.models.split(","):
            log(f"{name}")
            if name == "small-cnn":
                x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
                results["models"][name] = forward_case(name, {"x": x}, folder)
            elif name == "minilm":
                ids, mask = minilm_inputs()
                results["models"][name] = forward_case(name, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()},
                                                       folder)
            elif name == "squeezenet":  # the onnx package's SqueezeNet 1.0 with random weights (tests/zoo.py)
                results["models"][name] = squeezenet_case(folder)
            elif name == "smollm2-135m":
                results["models"][name] = smollm2_case(folder, a.ppl_tokens)
            log(json.dumps(results["models"][name])[:400])
    if a.update and a.out.is_file():
        results["models"] = {**json.loads(a.out.read_text())["models"], **results["models"]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
