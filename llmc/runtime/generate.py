"""The generation loop: prompt in, tokens out, with the KV cache kept between steps.

    gen = Generator(runner, GenerationSpec.from_manifest(manifest), tokenizer)
    for piece in gen.stream("Hello", max_new_tokens=16):   # text as it is produced
        print(piece.text, end="")
    result = gen.generate([[1, 2, 3]], max_new_tokens=8)  # token ids in, ids (and text) out

A *runner* runs one step of the compiled graph (``llmc.frontend.decoder``'s signature): the
reference interpreter (``ReferenceRunner``) or a target's session. It owns nothing but the
compiled code; the loop allocates the caches once per generation (``runner.new_caches``) and
passes the same buffers to every step, which the step updates in place.

Prompts run in chunks of at most ``prefill_chunk`` tokens, then one token per step. Batches
of prompts of different lengths are left-padded: padded positions are masked out and positions
count real tokens only, as Hugging Face does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmc.errors import InputError
from llmc.runtime.sampling import Sampling, next_tokens


@dataclass(frozen=True)
class GenerationSpec:
    """What the loop needs to know of a generation artifact (its manifest's ``generation`` section)."""

    layers: int
    cache_shape: tuple[int, int, int]    # [kv_heads, max_seq_len, head_dim] of each cache, per sequence
    prefill_chunk: int
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    all_logits: bool = False    # the step returns logits of every position, not only the last

    @property
    def max_seq_len(self) -> int:
        return self.cache_shape[1]

    @classmethod
    def from_manifest(cls, section: dict) -> GenerationSpec:
        return cls(layers=section["layers"], cache_shape=tuple(section["cache_shape"]),
                   prefill_chunk=section["prefill_chunk"], eos_token_ids=tuple(section["eos_token_ids"]),
                   bos_token_id=section.get("bos_token_id"), all_logits=section.get("all_logits", False))


@dataclass
class Stats:
    """Timings of one generation: time to first token, prefill and decode rates."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    batch: int = 1
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0

    @property
    def ttft_s(self) -> float:
        return self.prefill_s

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.batch * self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.batch * self.decode_steps / self.decode_s if self.decode_s else 0.0

    def to_json(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens, "batch": self.batch,
                "ttft_s": self.ttft_s, "prefill_tokens_per_s": self.prefill_tokens_per_s,
                "decode_tokens_per_s": self.decode_tokens_per_s}


@dataclass
class Piece:
    """One step of a streamed generation (batch 1): the token, the text it adds, and whether it ended."""

    token: int
    text: str
    done: bool = False
    reason: str | None = None


@dataclass
class Generation:
    """The new tokens of each sequence, their text (with a tokenizer), why each stopped, and timings."""

    ids: list[list[int]]
    texts: list[str] | None
    reasons: list[str]
    stats: Stats = field(default_factory=Stats)

    @property
    def text(self) -> str | None:
        return None if self.texts is None else self.texts[0]


class ReferenceRunner:
    """One step on llmc's interpreter; caches are numpy arrays the step writes in place."""

    def __init__(self, graph):
        self.graph = graph

    def new_caches(self, spec: GenerationSpec, batch: int) -> list:
        return [np.zeros((batch, *spec.cache_shape), np.float32) for _ in range(2 * spec.layers)]

    def __call__(self, ids: np.ndarray, positions: np.ndarray, mask: np.ndarray, caches: list) -> np.ndarray:
        from llmc.ir.interpreter import run_graph

        return run_graph(self.graph, [ids, positions, mask, *caches])[0]


class Generator:
    """Generation over a runner; see the module docstring."""

    def __init__(self, runner, spec: GenerationSpec, tokenizer=None):
        self.runner = runner
        self.spec = spec
        self.tokenizer = tokenizer

    @property
    def all_logits(self) -> bool:
        return self.spec.all_logits

    # -- prompts --------------------------------------------------------------------------

    def encode(self, prompt: str, *, chat: bool = False) -> list[int]:
        """Token ids of ``prompt`` (with the chat template and a generation prompt when ``chat``)."""
        if self.tokenizer is None:
            raise InputError("this model has no tokenizer, so it cannot take text",
                             hint="give token ids instead (--prompt-ids 1,2,3)")
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise InputError("this model's tokenizer has no chat template", hint="leave out --chat")
            out = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                     tokenize=True)
            return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def _prompts(self, prompt, chat: bool) -> list[list[int]]:
        if isinstance(prompt, str):
            return [self.encode(prompt, chat=chat)]
        prompts = [list(prompt)] if prompt and np.isscalar(prompt[0]) else [list(p) for p in prompt]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise InputError("a prompt is empty", hint="give at least one token")
        return [self.encode(p, chat=chat) if isinstance(p, str) else [int(t) for t in p] for p in prompts]

    # -- the loop -------------------------------------------------------------------------

    def generate(self, prompt, *, max_new_tokens: int = 64, sampling: Sampling | None = None, stop: Sequence[str] = (),
                 chat: bool = False) -> Generation:
        """Generate for a prompt (text or ids) or a batch of them; returns every sequence's new tokens."""
        prompts = self._prompts(prompt, chat)
        sampling = sampling or Sampling()
        ids: list[list[int]] = [[] for _ in prompts]
        reasons = ["length"] * len(prompts)
        stats = Stats()
        for step in self._steps(prompts, max_new_tokens, sampling, stop, stats):
            for b, (token, reason) in enumerate(step):
                if token is not None:
                    ids[b].append(token)
                if reason is not None:
                    reasons[b] = reason
        texts = None if self.tokenizer is None else [self._cut(self.tokenizer.decode(s, skip_special_tokens=True), stop)
                                                    for s in ids]
        return Generation(ids, texts, reasons, stats)

    def stream(self, prompt, *, max_new_tokens: int = 64, sampling: Sampling | None = None, stop: Sequence[str] = (),
               chat: bool = False, stats: Stats | None = None) -> Iterator[Piece]:
        """Generate for one prompt, yielding each token and the text it adds as soon as it is chosen."""
        prompts = self._prompts(prompt, chat)
        sampling = sampling or Sampling()
        if len(prompts) != 1:
            raise InputError("streaming takes one prompt", hint="use generate() for a batch")
        ids: list[int] = []
        shown = ""
        for ((token, reason),) in self._steps(prompts, max_new_tokens, sampling, stop, stats or Stats()):
            if token is not None:
                ids.append(token)
            text = shown
            if self.tokenizer is not None:
                text = self._cut(self.tokenizer.decode(ids, skip_special_tokens=True), stop)
                if text.endswith("\ufffd") and reason is None:  # a character split across tokens: wait for the rest
                    text = shown
            yield Piece(token if token is not None else -1, text[len(shown):], reason is not None, reason)
            shown = text

    def _steps(self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling, stop: Sequence[str],
               stats: Stats) -> Iterator[list[tuple[int | None, str | None]]]:
        """Per step, ``(token or None, stop reason or None)`` for each sequence."""
        spec, batch = self.spec, len(prompts)
        longest = max(len(p) for p in prompts)
        if longest >= spec.max_seq_len:
            raise InputError(f"the prompt has {longest} tokens, and the artifact's cache holds {spec.max_seq_len}",
                             hint="shorten the prompt, or compile with a larger --max-seq-len")
        if stop and self.tokenizer is None:
            raise InputError("stop strings need a tokenizer", hint="leave out --stop")
        steps = min(max_new_tokens, spec.max_seq_len - longest)
        rng = np.random.default_rng(sampling.seed)
        caches = self.runner.new_caches(spec, batch)
        tokens = np.zeros((batch, longest), np.int64)
        mask = np.zeros((batch, longest), bool)
        for b, p in enumerate(prompts):
            tokens[b, longest - len(p):], mask[b, longest - len(p):] = p, True
        stats.prompt_tokens, stats.batch = longest, batch
        done = [False] * batch
        new_ids: list[list[int]] = [[] for _ in prompts]
        start = time.perf_counter()
        logits = self.prefill(tokens, mask, caches)
        for step in range(steps):
            chosen = next_tokens(logits[:, -1, :], sampling, rng)
            now = time.perf_counter()
            if step == 0:
                stats.prefill_s = now - start
            out = []
            for b in range(batch):
                if done[b]:
                    out.append((None, None))
                    continue
                token = int(chosen[b])
                new_ids[b].append(token)
                reason = self._finished(token, new_ids[b], stop)
                if reason is None and step == steps - 1:
                    reason = "length" if steps == max_new_tokens else "max_seq_len"
                done[b] = reason is not None
                out.append((token, reason))
            stats.new_tokens += sum(t is not None for t, _ in out)
            yield out
            if all(done):
                break
            t0 = time.perf_counter()
            mask = np.concatenate([mask, np.ones((batch, 1), bool)], axis=1)
            positions = mask.sum(axis=1, keepdims=True) - 1
            logits = self.runner(chosen[:, None], positions, mask, caches)
            stats.decode_s += time.perf_counter() - t0
            stats.decode_steps += 1

    def prefill(self, tokens: np.ndarray, mask: np.ndarray, caches: list, *, every_chunk: bool = False) -> np.ndarray:
        """Run ``tokens`` [batch, n] (``mask`` False on left padding) through the caches in chunks;
        the logits of the last chunk, or of every chunk joined along the sequence (``every_chunk``)."""
        chunk = self.spec.prefill_chunk
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        parts = []
        for begin in range(0, tokens.shape[1], chunk):
            end = min(begin + chunk, tokens.shape[1])
            parts.append(self.runner(tokens[:, begin:end], positions[:, begin:end], mask[:, :end], caches))
        return np.concatenate(parts, axis=1) if every_chunk else parts[-1]

    def _finished(self, token: int, ids: list[int], stop: Sequence[str]) -> str | None:
        if token in self.spec.eos_token_ids:
            return "eos"
        if stop and any(s in self.tokenizer.decode(ids, skip_special_tokens=True) for s in stop):
            return "stop"
        return None

    @staticmethod
    def _cut(text: str, stop: Sequence[str]) -> str:
        for s in stop:
            if s in text:
                text = text[: text.index(s)]
        return text

