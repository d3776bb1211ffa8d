"""Choosing the next token from logits: greedy, or temperature with top-k and top-p (nucleus)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.errors import InputError


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy (argmax); otherwise logits / temperature, cut to the ``top_k`` most
    likely tokens (0: no cut) and to the smallest set whose probability reaches ``top_p``, then drawn
    with a generator seeded by ``seed`` (the same seed gives the same tokens)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise InputError(f"temperature {self.temperature} is negative", hint="use 0 for greedy, or a value > 0")
        if self.top_k < 0:
            raise InputError(f"top-k {self.top_k} is negative", hint="use 0 to keep every token")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"top-p {self.top_p} is outside (0, 1]", hint="use 1.0 to keep every token")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def next_tokens(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of ``logits`` [batch, vocab]."""
    if sampling.greedy:
        return logits.argmax(axis=-1).astype(np.int64)
    x = logits.astype(np.float64) / sampling.temperature
    if 0 < sampling.top_k < x.shape[-1]:
        kth = np.partition(x, -sampling.top_k, axis=-1)[:, -sampling.top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    probs = np.exp(x - x.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if sampling.top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of the more likely tokens
        sorted_probs = np.where(before < sampling.top_p, sorted_probs, 0.0)
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, sorted_probs, axis=-1)
        probs /= probs.sum(axis=-1, keepdims=True)
    return np.array([rng.choice(p.shape[0], p=p) for p in probs], dtype=np.int64)
