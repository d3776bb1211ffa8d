"""The quality metric for llmc's LLM work: a fixed offline English corpus and strided perplexity.

``corpus()`` is English prose that every machine with CPython already has: the docstrings of a
fixed list of pure-Python standard-library modules, read with ``ast`` (nothing is imported).
Every fourth module of the sorted list goes to the calibration split, the rest to the evaluation
split, and calibration drops any paragraph the evaluation text also has: quantization calibrated
on ``corpus(split="calib")`` never sees the text it is scored on.

``perplexity(score, ids)`` runs the strided sliding-window evaluation of the Hugging Face
perplexity guide over any ``score`` function (an llmc artifact, ``transformers_scorer(model)``)::

    text = corpus().text
    ids = tokenize_corpus(tokenizer, text)
    result = perplexity(transformers_scorer(model), ids, window=512, stride=256)
    result.corpus_sha256 = corpus().sha256
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import math
import platform
import re
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from llmc.errors import LLMCError, ShapeError

EVALUATION = "eval"
CALIBRATION = "calib"

# Pure-Python stdlib modules (paths under the stdlib folder, without ".py") whose docstrings are
# mostly English prose. Sorted; changing it changes every corpus hash.
MODULES = (
    "abc", "asyncio/events", "asyncio/locks", "asyncio/queues", "asyncio/tasks", "base64", "bdb",
    "bisect", "cmd", "code", "codecs", "codeop", "concurrent/futures/_base", "contextlib", "copy",
    "difflib", "email/_policybase", "email/header", "email/headerregistry", "email/message",
    "email/policy", "email/utils", "filecmp", "fnmatch", "ftplib", "functools", "getopt", "graphlib",
    "hmac", "http/server", "importlib/abc", "importlib/metadata/__init__", "importlib/resources/abc",
    "ipaddress", "json/__init__", "json/decoder", "json/encoder", "logging/__init__",
    "logging/handlers", "mimetypes", "numbers", "operator", "os", "pathlib", "pkgutil", "poplib",
    "queue", "random", "re/__init__", "rlcompleter", "sched", "secrets", "shelve", "shutil", "site",
    "smtplib", "socket", "socketserver", "statistics", "symtable", "textwrap", "threading", "timeit",
    "traceback", "unittest/case", "unittest/result", "urllib/parse", "wave", "wsgiref/handlers",
    "xml/etree/ElementTree", "xml/sax/handler", "xml/sax/xmlreader",
)  # fmt: skip

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# "name(args)" or "name(args) -> result" on a paragraph's first line: a signature, not prose.
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")


@dataclass(frozen=True)
class Corpus:
    """A corpus text, the SHA-256 of its UTF-8 bytes, and how it was made."""

    text: str
    sha256: str
    source: str


def corpus(max_chars: int | None = None, split: str = EVALUATION) -> Corpus:
    """The ``split`` ("eval" or "calib") of the docstring corpus, cut to ``max_chars`` if given.

    The text depends only on the Python version's standard library sources; ``source`` names it.
    """
    if split not in (EVALUATION, CALIBRATION):
        raise LLMCError(f"unknown corpus split {split!r}", hint=f"Use {EVALUATION!r} or {CALIBRATION!r}")
    if max_chars is not None and max_chars < 1:
        raise LLMCError(f"max_chars must be positive, got {max_chars}")
    text = _split_text(split)[:max_chars]
    modules = len(_split_modules(split))
    source = f"python {platform.python_version()} stdlib docstrings, {modules} modules, {split} split"
    if max_chars is not None:
        source += f", first {max_chars} chars"
    return Corpus(text=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), source=source)


def _split_modules(split: str) -> tuple[str, ...]:
    """Every fourth module (indices 3, 7, ...) is calibration text, the others evaluation text."""
    return tuple(m for i, m in enumerate(MODULES) if (i % 4 == 3) == (split == CALIBRATION))


@functools.cache
def _split_text(split: str) -> str:
    """The split's paragraphs joined by blank lines; calibration drops any paragraph eval also has."""
    paragraphs = [p for module in _split_modules(split) for p in _module_paragraphs(module)]
    if split == CALIBRATION:
        scored = set(_split_text(EVALUATION).split("\n\n"))
        paragraphs = [p for p in paragraphs if p not in scored]
    return "\n\n".join(paragraphs)


def _module_paragraphs(module: str) -> list[str]:
    """The prose paragraphs of one module's docstrings (module, classes, functions) in source order."""
    path = Path(sysconfig.get_paths()["stdlib"]) / f"{module}.py"
    if not path.is_file():
        raise LLMCError(
            f"the perplexity corpus needs the standard library file {path}, which is missing",
            hint="Use a CPython build that ships its pure-Python standard library sources",
        )
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, _DOCUMENTED)), key=lambda n: getattr(n, "lineno", 0))
    paragraphs = []
    for node in nodes:
        doc = ast.get_docstring(node, clean=False)
        if doc:
            paragraphs += [p for p in _paragraphs(inspect.cleandoc(doc)) if _is_prose(p)]
    return paragraphs


def _paragraphs(doc: str) -> list[str]:
    """Blank-line separated blocks of ``doc``, trailing whitespace removed from every line."""
    blocks, lines = [], []
    for line in [*doc.splitlines(), ""]:
        line = line.rstrip()
        if line:
            lines.append(line)
        elif lines:
            blocks.append("\n".join(lines))
            lines = []
    return blocks


def _is_prose(paragraph: str) -> bool:
    """False for doctests, signatures and indented (code or literal) blocks."""
    lines = paragraph.splitlines()
    if any(line.lstrip().startswith(">>>") for line in lines):
        return False
    if _SIGNATURE.match(lines[0].strip()):
        return False
    return not all(line[0].isspace() for line in lines)


@dataclass
class Perplexity:
    """The result of ``perplexity``: ``ppl = exp(nll)``, ``nll`` in nats per scored token.

    ``corpus_sha256`` is for the caller to fill in: the hash of the text the ids came from.
    """

    ppl: float
    nll: float
    tokens: int
    window: int
    stride: int
    corpus_sha256: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


class Window(NamedTuple):
    """One call of the scorer: it sees ``ids[begin:end]`` and scores targets ``first..end-1``."""

    begin: int
    end: int
    first: int


def windows(n: int, window: int, stride: int) -> list[Window]:
    """The strided plan over ``n`` tokens: starts at 0, stride, 2*stride, ... until one reaches the end.

    Each window scores the targets the previous one did not; the first scores all but token 0.
    Every token 1..n-1 is scored exactly once, each with at least ``window - stride`` tokens of
    context once the first window is past.
    """
    if n < 2:
        raise LLMCError(f"perplexity needs at least 2 tokens, got {n}")
    if not 0 < stride < window:
        raise LLMCError(
            f"perplexity needs 0 < stride < window, got window={window}, stride={stride}",
            hint="With stride == window the first token of every window after the first would go unscored",
        )
    plan, begin, first = [], 0, 1
    while True:
        end = min(begin + window, n)
        plan.append(Window(begin, end, first))
        if end == n:
            return plan
        begin, first = begin + stride, end


def perplexity(
    score: Callable[[np.ndarray], np.ndarray],
    ids: np.ndarray,
    *,
    window: int = 512,
    stride: int = 256,
    max_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Perplexity:
    """Perplexity of ``ids`` (1-D token ids) under ``score``, by strided sliding windows.

    ``score(window_ids)`` takes int64 ids of shape [1, L], L <= window, and returns logits
    [1, L, V]. ``max_tokens`` keeps only the first ``max_tokens`` ids. ``progress(done, total)``
    is called after each window. Log-softmax and the sum run in float64.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ShapeError(
            f"perplexity takes 1-D token ids, got shape {ids.shape}", hint="Pass ids[0] for a batch of one"
        )
    ids = ids[:max_tokens]
    plan = windows(len(ids), window, stride)
    total = 0.0
    for done, (begin, end, first) in enumerate(plan, start=1):
        logits = np.asarray(score(ids[None, begin:end]))
        if logits.ndim != 3 or logits.shape[:2] != (1, end - begin):
            raise ShapeError(
                f"score returned logits of shape {logits.shape} for ids of shape (1, {end - begin})",
                where=f"window {done} of {len(plan)}, tokens {begin}..{end - 1}",
                hint="score must return [1, L, V] logits",
            )
        if ids[first:end].max() >= logits.shape[2]:
            raise ShapeError(
                f"token id {ids[first:end].max()} is outside the scorer's vocabulary of {logits.shape[2]}",
                where=f"window {done} of {len(plan)}, tokens {begin}..{end - 1}",
                hint="Tokenize with the model's own tokenizer",
            )
        # Row i predicts token begin + i + 1.
        total += _nll_sum(logits[0, first - begin - 1 : end - begin - 1], ids[first:end])
        if progress is not None:
            progress(done, len(plan))
    tokens = len(ids) - 1
    nll = total / tokens
    return Perplexity(ppl=math.exp(nll), nll=nll, tokens=tokens, window=window, stride=stride)


def _nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Sum over rows of -log softmax(row)[target], through a max-shifted logsumexp in float64."""
    rows = logits.astype(np.float64)
    peak = rows.max(axis=-1, keepdims=True)
    logsumexp = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=-1))
    return float((logsumexp - rows[np.arange(len(targets)), targets]).sum())


def tokenize_corpus(tokenizer, text: str) -> np.ndarray:
    """``text`` as int64 token ids from a transformers tokenizer, in one call, no special tokens.

    ``verbose=False`` silences the "sequence length is longer than the specified maximum"
    warning: the ids are cut into windows by ``perplexity``, never fed whole to a model.
    """
    return np.asarray(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)


def transformers_scorer(model) -> Callable[[np.ndarray], np.ndarray]:
    """A ``score`` function over a float32 transformers causal LM: eval mode, no grad, no KV cache.

    The model is put in eval mode; ids go to the model's device and logits come back as a
    float32 numpy array.
    """
    import torch

    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise LLMCError(
            f"transformers_scorer needs a float32 model, got parameters of {sorted(map(str, dtypes))}",
            hint="Load it with torch_dtype=torch.float32 so the reference is not rounded",
        )
    model.eval()

    def score(window_ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(input_ids=torch.from_numpy(window_ids).to(model.device), use_cache=False)
        return out.logits.float().cpu().numpy()

    return score


def generator_scorer(generator) -> Callable[[np.ndarray], np.ndarray]:
    """A ``score`` function over a generation artifact compiled with ``all_logits`` (see ``evaluate``):
    each window starts from an empty cache and runs in prefill chunks, whose logits are joined."""
    if not generator.all_logits:
        raise LLMCError("scoring needs logits of every position, and this artifact returns the last one only",
                        hint="compile it with all_logits=True (--all-logits)")

    def score(window_ids: np.ndarray) -> np.ndarray:
        caches = generator.runner.new_caches(generator.spec, 1)
        return generator.prefill(window_ids, np.ones(window_ids.shape, bool), caches, every_chunk=True)

    return score


def evaluate(model, *, target: str = "cpu", window: int = 512, stride: int = 256, max_tokens: int | None = None,
             reference: bool = False, progress: Callable[[int, int], None] | None = None,
             **compile_options) -> Perplexity:
    """Perplexity of an LLM on the evaluation corpus, through llmc: ``model`` (anything
    ``llmc.compile`` takes for generation, or a generation artifact compiled with ``all_logits``)
    is compiled for ``target`` with a cache of ``window`` positions, and scored with its own tokenizer.

    ``compile_options`` go to ``llmc.compile`` (a quantization recipe, target options). The
    result carries the corpus hash, so numbers from different runs are comparable only when it matches.
    """
    import tempfile

    import llmc

    with tempfile.TemporaryDirectory(prefix="llmc-ppl-") as tmp:
        if isinstance(model, llmc.Artifact):
            art = model
        else:
            art = llmc.compile(model, target, output=f"{tmp}/artifact", generation=True, all_logits=True,
                               max_seq_len=window, prefill_chunk=window, **compile_options)
        gen = art.generator(reference=reference)
        if gen.tokenizer is None:
            raise LLMCError(f"{model} has no tokenizer, so the corpus cannot be tokenized for it")
        text = corpus()
        ids = tokenize_corpus(gen.tokenizer, text.text)
        result = perplexity(generator_scorer(gen), ids, window=window, stride=stride, max_tokens=max_tokens,
                            progress=progress)
    result.corpus_sha256 = text.sha256
    return result
