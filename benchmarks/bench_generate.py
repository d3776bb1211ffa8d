"""Generation speed of SmolLM2-135M-Instruct on this CPU: llmc's cpu artifact beside transformers
eager, torch.compile and llama.cpp (llama-cpp-python on the Q4_1 GGUF file), against the
machine's memory roofline measured in the same run.

For each runner, in its own child process with every core:
  - prefill: time to first token for prompts of 128 and 512 tokens (tokens/s = prompt / time);
  - decode at batch 1: 128 new tokens after a 128-token prompt (tokens/s = 1 / median step);
  - decode at batch 8 where the runner batches (tokens/s = 8 / median step);
  - decode step time at context 10 and at context 1000 (32 steps each, medians), and their ratio.
Greedy throughout; the prompts are tokens of the calibration split of llmc's offline corpus.

The roofline: float32 decode reads every weight once per token, so its ceiling is the measured
read bandwidth divided by the bytes of weights a decode step reads (llama.cpp reads its Q4_1
file's bytes instead).

    python benchmarks/bench_generate.py                 # writes benchmarks/results/bench_generate.json
    python benchmarks/bench_generate.py --runners llmc-cpu,llama.cpp
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from capture_7b import cpu_model  # benchmarks/ is on the path when a script here runs

RESULT = Path(__file__).parent / "results" / "bench_generate.json"
RUNNERS = ("llmc-cpu", "transformers", "torch.compile", "llama.cpp")
NEW_TOKENS, CONTEXT_STEPS = 128, 32


def prompt_ids(n: int) -> list[int]:
    from transformers import AutoTokenizer

    from llmc.examples import SMOLLM2_FILE, smollm2_135m
    from llmc.runtime.perplexity import CALIBRATION, corpus, tokenize_corpus

    path = smollm2_135m()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=SMOLLM2_FILE)
    return tokenize_corpus(tokenizer, corpus(split=CALIBRATION).text)[:n].tolist()


# -- runners: prefill(ids [batch, n]) -> state with .token; step(state) -> state ------------------


class LlmcRunner:
    def __init__(self, artifact: str):
        import llmc

        self.gen = llmc.load(artifact).generator()

    def prefill(self, ids: np.ndarray):
        caches = self.gen.runner.new_caches(self.gen.spec, ids.shape[0])
        mask = np.ones(ids.shape, bool)
        logits = self.gen.prefill(ids, mask, caches)
        return {"caches": caches, "mask": mask, "token": logits[:, -1].argmax(-1)}

    def step(self, s):
        s["mask"] = np.ones((s["mask"].shape[0], s["mask"].shape[1] + 1), bool)
        positions = np.full((s["mask"].shape[0], 1), s["mask"].shape[1] - 1, np.int64)
        s["token"] = self.gen.runner(s["token"][:, None], positions, s["mask"], s["caches"])[:, -1].argmax(-1)
        return s


class TransformersRunner:
    def __init__(self, compiled: bool):
        import torch
        from transformers import AutoModelForCausalLM

        from llmc.examples import SMOLLM2_FILE, smollm2_135m

        path = smollm2_135m()
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=SMOLLM2_FILE,
                                                          dtype=torch.float32).eval()
        self.compiled = compiled
        self.forward = torch.compile(self.model.forward, dynamic=False) if compiled else self.model.forward

    def prefill(self, ids: np.ndarray):
        from transformers import StaticCache

        torch = self.torch
        n = ids.shape[1]
        cache = StaticCache(config=self.model.config, max_cache_len=n + NEW_TOKENS + CONTEXT_STEPS + 8) \
            if self.compiled else None
        with torch.no_grad():
            out = self.forward(input_ids=torch.from_numpy(ids), past_key_values=cache, use_cache=True,
                               cache_position=torch.arange(n), logits_to_keep=1)
        return {"past": out.past_key_values, "n": n, "token": out.logits[:, -1].argmax(-1)}

    def step(self, s):
        torch = self.torch
        with torch.no_grad():
            out = self.forward(input_ids=s["token"][:, None], past_key_values=s["past"], use_cache=True,
                               cache_position=torch.tensor([s["n"]]), logits_to_keep=1)
        s.update(past=out.past_key_values, n=s["n"] + 1, token=out.logits[:, -1].argmax(-1))
        return s


class LlamaCppRunner:
    batched = False

    def __init__(self):
        from llama_cpp import Llama

        from llmc.examples import smollm2_135m

        threads = os.cpu_count() or 1
        self.llm = Llama(str(smollm2_135m()), n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads,
                         verbose=False)

    def prefill(self, ids: np.ndarray):
        if ids.shape[0] != 1:
            raise NotImplementedError("llama-cpp-python's Llama decodes one sequence")
        self.llm.reset()
        self.llm.eval(ids[0].tolist())
        return {"token": self._argmax()}

    def step(self, s):
        self.llm.eval([int(s["token"])])
        s["token"] = self._argmax()
        return s

    def _argmax(self):
        """The last position's logits, read from llama.cpp's context (the wrapper keeps them only with logits_all)."""
        return int(np.argmax(np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))))


def make_runner(name: str, artifact: str | None):
    if name == "llmc-cpu":
        return LlmcRunner(artifact)
    if name == "llama.cpp":
        return LlamaCppRunner()
    return TransformersRunner(compiled=name == "torch.compile")


# -- measuring ------------------------------------------------------------------------------


def measure(name: str, artifact: str | None, ids: list[int]) -> dict:
    """Child process: every measurement of one runner."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    runner = make_runner(name, artifact)
    out: dict = {"load_s": time.perf_counter() - start}
    warm = runner.prefill(np.array([ids[:16]]))  # first call: builds/compiles what the runner builds lazily
    runner.step(warm)
    for n in (128, 512):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            runner.prefill(np.array([ids[:n]]))
            times.append(time.perf_counter() - t0)
        out[f"prefill_{n}"] = {"ttft_ms": 1e3 * statistics.median(times), "tokens_per_s": n / statistics.median(times)}
    out["decode_batch1"] = decode(runner, np.array([ids[:128]]), NEW_TOKENS)
    try:
        out["decode_batch8"] = decode(runner, np.array([ids[:128]] * 8), 32)
    except NotImplementedError as e:
        out["decode_batch8"] = {"skipped": str(e)}
    short, long = decode(runner, np.array([ids[:10]]), CONTEXT_STEPS), decode(runner, np.array([ids[:1000]]), CONTEXT_STEPS)
    out["context"] = {"step_ms_at_10": short["step_ms"], "step_ms_at_1000": long["step_ms"],
                      "ratio_1000_to_10": long["step_ms"] / short["step_ms"]}
    return out


def decode(runner, ids: np.ndarray, steps: int) -> dict:
    state = runner.prefill(ids)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state = runner.step(state)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"step_ms": 1e3 * step, "tokens_per_s": ids.shape[0] / step, "steps": steps}


def warm_decode(runner, ids: list[int], steps: int = 128) -> dict:
    """``decode`` of ``steps`` tokens after the prompt ``ids`` (batch 1), after one short warm-up step."""
    runner.step(runner.prefill(np.array([ids[:16]])))
    return decode(runner, np.array([ids]), steps)


def read_bandwidth(gib: float = 1.0, repeats: int = 7) -> dict:
    """Bytes/s of summing a float32 array far larger than the caches, with torch on every core (median)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32)
    x.sum()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    return {"bytes_per_s": x.numel() * 4 / statistics.median(times), "array_gib": gib, "repeats": repeats}


def decode_weight_bytes(artifact: str) -> int:
    """Bytes of weights one decode step reads: every constant but the embedding table's rows not gathered
    (a tied embedding is read whole by the output projection)."""
    import llmc

    graph = llmc.load(artifact, verify=False).graph
    read = set()
    for node in graph.nodes:
        for i, v in enumerate(node.inputs):
            if v.is_const and not (node.op == "embedding" and i == 0):
                read.add(v.name)
    return sum(int(graph.constants[n].type.nbytes()) for n in read)


def compile_artifact(folder: Path) -> tuple[str, float]:
    import llmc

    start = time.perf_counter()
    art = llmc.compile("smollm2-135m", "cpu", output=folder / "smollm2-cpu", prefill_chunk=512)
    return str(art.path), time.perf_counter() - start


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runners", default=",".join(RUNNERS))
    p.add_argument("--out", type=Path, default=RESULT)
    p.add_argument("--timeout", type=int, default=1200, help="seconds per runner (torch.compile compiles every shape)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--artifact", help=argparse.SUPPRESS)
    args = p.parse_args()
    ids = prompt_ids(1000)
    if args.child:
        print(json.dumps(measure(args.child, args.artifact, ids)))
        return
    with tempfile.TemporaryDirectory(prefix="llmc-bench-") as tmp:
        artifact, compile_s = compile_artifact(Path(tmp))
        print(f"compiled the cpu artifact in {compile_s:.1f} s", file=sys.stderr)
        bandwidth = read_bandwidth()
        weights = decode_weight_bytes(artifact)
        gguf_bytes = os.path.getsize(__import__("llmc.examples").examples.smollm2_135m())
        results = {}
        for name in args.runners.split(","):
            print(f"measuring {name} ...", file=sys.stderr)
            try:
                proc = subprocess.run([sys.executable, __file__, "--child", name, "--artifact", artifact],
                                      capture_output=True, text=True, timeout=args.timeout, check=False)
            except subprocess.TimeoutExpired:
                results[name] = {"failed": [f"did not finish in {args.timeout} s"]}
                print(f"  {results[name]['failed'][0]}", file=sys.stderr)
                continue
            if proc.returncode != 0:
                results[name] = {"failed": proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]}
                print(f"  failed: {results[name]['failed']}", file=sys.stderr)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            read = gguf_bytes if name == "llama.cpp" else weights
            roofline = bandwidth["bytes_per_s"] / read
            r["roofline"] = {"weight_bytes_per_token": read, "tokens_per_s": roofline,
                             "fraction_reached_batch1": r["decode_batch1"]["tokens_per_s"] / roofline}
            results[name] = r
            print(f"  prefill 512: {r['prefill_512']['tokens_per_s']:.0f} tok/s, decode: "
                  f"{r['decode_batch1']['tokens_per_s']:.1f} tok/s ({100 * r['roofline']['fraction_reached_batch1']:.0f}% "
                  f"of roofline), context 1000/10: {r['context']['ratio_1000_to_10']:.2f}x", file=sys.stderr)
    out = {
        "benchmark": "bench_generate", "model": "smollm2-135m (SmolLM2-135M-Instruct.Q4_1.gguf)",
        "date": datetime.date.today().isoformat(),
        "device": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": {k: _version(k) for k in ("llmc", "torch", "transformers", "apache-tvm", "llama_cpp_python",
                                               "numpy")},
        "llmc_cpu_compile_s": compile_s, "read_bandwidth": bandwidth, "llmc_dtype": "float32",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
