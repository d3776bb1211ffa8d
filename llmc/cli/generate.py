"""``llmc generate ARTIFACT|MODEL``: text (or token ids) in, tokens streamed out, speeds reported.

A MODEL that is not an artifact is compiled on first use into llmc's cache folder
(``$LLMC_CACHE``, default ``~/.cache/llmc``), keyed by the model file, the target and the
options, so the next call starts at once. The generated text goes to stdout as it is produced;
progress and the timing line go to stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from llmc.cli import show
from llmc.codegen.artifact import MANIFEST
from llmc.errors import InputError


def generate_cmd(a) -> int:
    if (a.prompt is None) == (a.prompt_ids is None):
        raise InputError("give the prompt as --prompt TEXT or as --prompt-ids 1,2,3 (one of them)")
    prompt = a.prompt if a.prompt is not None else _ids(a.prompt_ids)
    art = _artifact(a)
    if not a.reference and art.runtime() is None:
        show.stderr.print(f"note: {art.target} artifacts cannot run on this machine; generating with its graph on the "
                          "reference interpreter", highlight=False, soft_wrap=True)
    with show.status(f"loading {art.path}"):
        gen = art.generator(reference=a.reference, distributed=a.distributed)
    try:
        return _generate(a, art, gen, prompt)
    finally:
        if a.distributed:
            gen.runner.close()


def _generate(a, art, gen, prompt) -> int:
    from llmc.runtime.sampling import Sampling

    sampling = Sampling(a.temperature, a.top_k, a.top_p, a.seed)
    from llmc.runtime.generate import Stats

    stats = Stats()
    reason = None
    for piece in gen.stream(prompt, max_new_tokens=a.max_new_tokens, sampling=sampling, stop=a.stop or (),
                            chat=a.chat, stats=stats):
        shown = piece.text if gen.tokenizer is not None else ("" if piece.reason == "eos" else f"{piece.token} ")
        print(shown, end="", flush=True)
        reason = piece.reason
    print()
    target = art.runtime(reference=a.reference)
    runtime = "reference interpreter" if target is None or target.name == "reference" else f"{target.name} runtime"
    if a.distributed:
        from llmc.runtime.streaming import read_schedule

        runtime += f" in {len(read_schedule(art.path)['stages'])} stage processes"
    print(f"{stats.new_tokens} tokens ({reason}) on the {runtime}: time to first token {stats.ttft_s * 1e3:.0f} ms, "
          f"prefill {stats.prefill_tokens_per_s:.1f} tokens/s ({stats.prompt_tokens} tokens), "
          f"decode {stats.decode_tokens_per_s:.1f} tokens/s", file=sys.stderr)
    return 0


def _ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise InputError(f"--prompt-ids {text!r} is not a comma-separated list of integers",
                         hint="e.g. --prompt-ids 1,2,3") from None
    if not ids:
        raise InputError("--prompt-ids is empty", hint="give at least one token id")
    return ids


def _artifact(a):
    """The artifact at ``a.model``, or the cached compile of the model there (compiled now if missing)."""
    from llmc import api

    path = Path(a.model)
    if path.is_dir() and (path / MANIFEST).is_file():
        return api.load(path)
    from llmc.cli.commands import generation_options

    options = generation_options(a)
    out = cache_folder(a.model, {"target": a.target, **options})
    if (out / MANIFEST).is_file():
        return api.load(out)
    show.stderr.print(f"compiling {a.model} for {a.target} into {out} (first use)", highlight=False, soft_wrap=True)
    with show.status(f"compiling {a.model}") as update:
        return api.compile(a.model, a.target, output=out, generation=True, progress=update, **options)


def cache_folder(model: str, options: dict) -> Path:
    """Where ``llmc generate`` keeps its compile of ``model``: named after it, keyed by what changes the result."""
    from importlib.metadata import version

    from llmc.examples import GGUF_EXAMPLES

    path = GGUF_EXAMPLES[model]() if model in GGUF_EXAMPLES else Path(model)
    if not path.exists():
        raise InputError(f"{model} does not exist", hint="give an artifact folder, a model file or folder, or an example")
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, options, version("llmc")], sort_keys=True)
    root = Path(os.environ.get("LLMC_CACHE") or Path.home() / ".cache" / "llmc")
    return root / f"{path.stem}-{options['target']}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
