"""The ``llmc`` command: compile, inspect, run, generate, targets.

Exit codes: 0 success; 1 an llmc error (one line ``error: ...`` on stderr; ``--debug`` shows the
traceback) or outputs that differ under ``run --compare-with``; 2 a usage error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import warnings

from llmc.cli import args as A

# Target options common enough to have their own flags (any other: --option K=V).
TARGET_OPTION_FLAGS = {
    "arch": "GPU architecture (cuda: sm_80, sm_86, sm_89, sm_90, sm_90a)",
    "dtype": "compute dtype (float32, float16, bfloat16)",
    "cpu": "LLVM CPU name (cpu target; detected when omitted)",
    "device": "device profile (npu: qnn-htp, generic-int8; fpga: zcu102, u250, u280, pynq-z2)",
    "chunk": "prompt tokens per static NPU prefill graph (npu target, default 256)",
    "fpga_bits": "default fixed-point width where calibration chooses the precision (fpga target)",
}


def _parser() -> argparse.ArgumentParser:
    from llmc.cli.commands import compile_cmd, inspect_cmd, targets_cmd
    from llmc.cli.generate import generate_cmd
    from llmc.cli.run import run_cmd

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = argparse.ArgumentParser(prog="llmc", description="An ahead-of-time compiler for LLMs.", parents=[debug])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compile", parents=[debug], help="compile a model into an artifact folder")
    c.add_argument("model", help="a .onnx or .pt2 file, a Hugging Face folder, or a built-in example name")
    c.add_argument("-t", "--target", default="reference", help="target to compile for (see `llmc targets`)")
    c.add_argument("-o", "--output", required=True, help="artifact folder to write (replaced atomically)")
    c.add_argument("-O", dest="opt_level", default=None, metavar="LEVEL",
                   help="optimization level: -O0, -O1, -O2 (-O1 and fusion; the default for cpu and cuda)")
    c.add_argument("--verify", action="store_true", help="verify the graph after every pass")
    c.add_argument("--option", type=A.option, action="append", metavar="K=V", help="a target option")
    for flag, meaning in TARGET_OPTION_FLAGS.items():
        c.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"same as --option {flag}=VALUE: {meaning}")
    _shape_flags(c, dynamic=True)
    c.add_argument("--generation", action=argparse.BooleanOptionalAction, default=None,
                   help="compile an LLM's generation step with a KV cache (default: for GGUF files and LLM examples)")
    _generation_flags(c)
    c.add_argument("--all-logits", action="store_true", help="generation step returns logits of every position")
    _schedule_flags(c)
    _quant_flags(c)
    _sparsity_flags(c)
    c.set_defaults(func=compile_cmd)

    i = sub.add_parser("inspect", parents=[debug], help="show a model's or an artifact's structure and size")
    i.add_argument("model", metavar="MODEL|ARTIFACT")
    i.add_argument("--ir", action="store_true", help="print the IR instead of tables")
    i.add_argument("--json", action="store_true", help="print the facts (or the manifest) as JSON")
    i.add_argument("--device", metavar="NAME",
                   help="predict time per layer on a device (h100, h200, a100, rtx4090, l4, sd8gen3, u280, u250, "
                        "zcu102, cpu = this machine, measured); generation models: --size seq=N (prefill) ctx=C (decode)")
    _shape_flags(i, dynamic=True)
    i.add_argument("--memory-budget", metavar="SIZE",
                   help="pre-flight: does the LLM fit SIZE (e.g. 4GiB), and how fast, on this CPU and --device "
                        "(default h100); works on a config-only Hugging Face folder")
    _generation_flags(i)
    i.set_defaults(func=inspect_cmd)

    r = sub.add_parser("run", parents=[debug], help="run an artifact")
    r.add_argument("artifact")
    r.add_argument("--inputs", default="random", metavar="IN.npz|random", help="inputs keyed by name (default: random)")
    r.add_argument("--outputs", metavar="OUT.npz", help="write the outputs here, keyed by name")
    r.add_argument("--compare-with", metavar="MODEL", help="report the relative error against MODEL on the interpreter")
    r.add_argument("--rtol", type=float, default=1e-4, help="relative error --compare-with accepts (default 1e-4)")
    r.add_argument("--reference", action="store_true", help="run on the reference interpreter, not the target runtime")
    r.add_argument("--seed", type=int, default=0, help="seed of random inputs")
    _shape_flags(r, dynamic=False)
    r.set_defaults(func=run_cmd)

    g = sub.add_parser("generate", parents=[debug], help="generate text with an LLM (compiled on first use)")
    g.add_argument("model", metavar="ARTIFACT|MODEL", help="a generation artifact, a .gguf file, an LLM folder or example")
    g.add_argument("--prompt", help="the prompt text")
    g.add_argument("--prompt-ids", metavar="1,2,3", help="the prompt as token ids (models without a tokenizer)")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    g.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="stop after N new tokens (default 64)")
    g.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 (default) is greedy")
    g.add_argument("--top-k", type=int, default=0, metavar="K", help="sample from the K most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, default=1.0, metavar="P", help="sample from the smallest set of mass P")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop when the text contains TEXT (repeatable)")
    g.add_argument("-t", "--target", default="cpu", help="target to compile a model for on first use (default cpu)")
    g.add_argument("--reference", action="store_true", help="run on the reference interpreter")
    g.add_argument("--distributed", action="store_true",
                   help="run an artifact compiled with --stages N as N local torch.distributed processes")
    _generation_flags(g)
    g.set_defaults(func=generate_cmd)

    t = sub.add_parser("targets", parents=[debug], help="list targets and their options")
    t.set_defaults(func=targets_cmd)
    return p


def _generation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-seq-len", type=int, metavar="N", help="KV-cache length (default: the model's, at most 2048)")
    p.add_argument("--prefill-chunk", type=int, metavar="N", help="prompt tokens per prefill step (default 256)")


def _schedule_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("scheduling (generation, reference target)")
    s.add_argument("--memory-budget", metavar="SIZE", help="run within SIZE (e.g. 160MiB): layer groups, weights "
                   "streamed from disk; refused at once if nothing fits")
    s.add_argument("--stages", type=int, metavar="N", help="split into N pipeline stages (run with --distributed)")


def _sparsity_flags(p: argparse.ArgumentParser) -> None:
    from llmc.passes.sparsity.options import GOALS, METHODS, SCOPES

    s = p.add_argument_group("sparsity (docs/passes/sparsity.md)")
    s.add_argument("--sparsity", type=float, metavar="S", help="fraction of each block linear's weights set to zero, in [0, 1)")
    s.add_argument("--sparsity-pattern", metavar="unstructured|N:M", help="unstructured (default) or N:M such as 2:4, 4:8")
    s.add_argument("--sparsity-method", default="wanda", choices=METHODS,
                   help="which weights to zero (wanda and sparsegpt need --calibration)")
    s.add_argument("--sparsity-for", default="speed", choices=GOALS,
                   help="speed: store sparse only where the sparse kernel is faster on the target; size: everywhere")
    s.add_argument("--sparsity-scope", default="layer", choices=SCOPES,
                   help="one density per layer, or one over all pruned weights (unstructured)")


def _quant_flags(p: argparse.ArgumentParser) -> None:
    from llmc.passes.quantize.formats import METHODS

    q = p.add_argument_group("quantization")
    q.add_argument("--quant", metavar="FORMAT", help="weight format: w8, w4g32, w4g128, w3g128, w2g64, w8a8, fp16 "
                   "(+oFRACTION keeps outliers, e.g. w3g128+o0.005), or mixed (chosen per weight under a budget)")
    q.add_argument("--quant-method", choices=METHODS,
                   help="how weights are rounded (default rtn; gptq with --quant mixed)")
    q.add_argument("--recipe", metavar="RECIPE.json", help='per-node formats, as JSON or a file of it: {"default": "w4g128", "override": {...}}')
    q.add_argument("--calibration", metavar="builtin|FILE.txt|FILE.npz", help="calibration data (gptq and awq need it)")
    q.add_argument("--calibration-samples", type=int, metavar="N", help="samples cut from a calibration text (default 32)")
    q.add_argument("--calibration-length", type=int, metavar="L", help="tokens per calibration sample (default 256)")
    m = p.add_argument_group("mixed precision (--quant mixed: one budget)")
    m.add_argument("--avg-bits", type=float, metavar="BITS", help="average stored bits per weight parameter, e.g. 4.25")
    m.add_argument("--weight-budget", metavar="SIZE", help="stored bytes of the quantizable weights, e.g. 60MiB")
    m.add_argument("--latency-budget", metavar="TIME", help="predicted decode step, e.g. 8ms (on --device, e.g. h100)")
    m.add_argument("--sensitivity", choices=("end-to-end", "output", "proxy"),
                   help="local output error weighted by its measured effect on the model output (default for "
                        "LLMs), the local output error alone (default otherwise), or the activation-weighted weight error")
    m.add_argument("--outliers", type=float, metavar="FRACTION", help="also try keeping this fraction in float16, e.g. 0.005")
    m.add_argument("--reorder-channels", action="store_true", help="group outlier input channels where it folds")
    m.add_argument("--tie-groups", action="store_true", help="one format for the linears that read one input")


def _shape_flags(p: argparse.ArgumentParser, *, dynamic: bool) -> None:
    p.add_argument("--input-shape", type=A.input_shape, action="append", metavar="NAME=DxD", help="e.g. input_ids=1x128")
    if dynamic:
        p.add_argument("--dynamic", type=A.dynamic_dim, action="append", metavar="NAME:AXIS=SYM",
                       help="make an input axis symbolic, e.g. input_ids:1=seq")
    p.add_argument("--size", type=A.size, action="append", metavar="SYM=N", help="size of a symbolic dim, e.g. seq=128")


def main(argv: list[str] | None = None) -> int:
    from llmc.cli import show
    from llmc.errors import LLMCError

    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error (argparse printed it)
        return int(e.code or 0)
    debug = getattr(a, "debug", False)
    try:
        with warnings.catch_warnings():
            if not debug:  # libraries' deprecation notices are not the user's business
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
            return a.func(a)
    except LLMCError as e:
        if debug:
            raise
        show.error(_without_listing(e))
        return 1
    except KeyboardInterrupt:
        show.error("interrupted")
        return 130
    except Exception as e:
        if debug:
            raise
        show.error(f"unexpected {type(e).__name__}: {e} (a bug in llmc: please report it with the traceback from --debug)")
        return 1


def _without_listing(e) -> str:
    """The error's text with only the first line of its ``where`` (a verify error lists the neighbourhood)."""
    text = str(e)
    if e.where and "\n" in e.where:
        text = text.replace(e.where, e.where.splitlines()[0])
    return text
