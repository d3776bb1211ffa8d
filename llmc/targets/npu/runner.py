"""Runs an NPU artifact's ``schedule.json`` on ONNX Runtime, chunk by chunk.

    session = Session(artifact)                       # CPU provider for every chunk
    session = Session(artifact, provider="qnn")       # NPU chunks on the QNN EP's HTP backend
    outputs = session.run("forward", {"x": x})        # every value the chunks made, by name

``provider="qnn"`` (or ``LLMC_NPU_EP=qnn``) loads each NPU chunk on ONNX Runtime's QNN
execution provider (the ``onnxruntime-qnn`` plugin: on x86-64 its HTP backend is a simulator)
with ``session.disable_cpu_ep_fallback=1``: a chunk any of whose nodes the HTP does not take
fails to load instead of running partly on the CPU. A chunk compiled ahead of time
(``--option qnn_context=1``: ``chunks/NAME_ctx.onnx``, an EPContext model) is loaded from its
context binary. CPU chunks always use the CPU provider.

``StepRunner`` is ``llmc.runtime.generate``'s runner over the ``prefill`` and ``decode``
variants: batch 1; a prompt piece of any length runs as chunks of the compiled ``chunk``
tokens, the last padded (pad rows are written after the context, where the cache has
``chunk`` spare rows, and no real query sees them); one token runs the decode graph. An
artifact compiled with ``all_logits`` returns the logits of every real token. The KV
caches are the runner's float32 arrays, inputs and outputs of the CPU chunks.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from llmc.errors import InputError, TargetError

SCHEDULE = "schedule.json"
PROVIDERS = ("cpu", "qnn")


def qnn_available() -> bool:
    try:
        import onnxruntime_qnn  # noqa: F401
    except ImportError:
        return False
    return True


def qnn_session_options():
    """Session options that put a whole graph on the QNN EP's HTP backend, or refuse to load it."""
    import onnxruntime as ort

    if not qnn_available():
        raise TargetError("running NPU chunks on the QNN execution provider needs the onnxruntime-qnn package",
                          hint="pip install 'llmc[npu]' (or pip install onnxruntime-qnn)")
    import onnxruntime_qnn

    name = onnxruntime_qnn.get_ep_name()
    if not any(d.ep_name == name for d in ort.get_ep_devices()):
        ort.register_execution_provider_library(name, onnxruntime_qnn.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    options.add_provider_for_devices(devices[:1], {"backend_path": onnxruntime_qnn.get_qnn_htp_path()})
    return options


class Session:
    """ONNX Runtime sessions of an artifact's chunks (created when a variant is first run)."""

    def __init__(self, artifact: Path, provider: str | None = None):
        self.path = Path(artifact)
        self.schedule = json.loads((self.path / SCHEDULE).read_text())
        self.provider = provider or os.environ.get("LLMC_NPU_EP", "cpu")
        if self.provider not in PROVIDERS:
            raise TargetError(f"unknown NPU provider {self.provider!r}", hint=f"use one of {PROVIDERS}")
        self._sessions: dict[str, list] = {}
        self.load_seconds = 0.0
        self.models: dict[str, bytes] = {}  # chunk file -> a rewritten model to load instead (agreement checks)

    def sessions(self, variant: str) -> list:
        if variant not in self._sessions:
            import onnxruntime as ort

            start = time.perf_counter()
            made = []
            for chunk in self.schedule["variants"][variant]["chunks"]:
                qnn = chunk["device"] == "npu" and self.provider == "qnn"
                options = qnn_session_options() if qnn else ort.SessionOptions()
                options.log_severity_level = 3
                # dozens of sessions run one after another: threads that spin between runs starve the next one
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                model = self.models.get(chunk["file"])
                if model is None:
                    model = str(self.path / (chunk.get("qnn_context", chunk["file"]) if qnn else chunk["file"]))
                else:  # from memory: its external data is beside the chunk files
                    folder = str((self.path / chunk["file"]).parent)
                    options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
                made.append(ort.InferenceSession(model, options, **({} if qnn else {"providers": ["CPUExecutionProvider"]})))
            self._sessions[variant] = made
            self.load_seconds += time.perf_counter() - start
        return self._sessions[variant]

    def run(self, variant: str, feeds: dict[str, np.ndarray], *, keep_all: bool = False) -> dict[str, np.ndarray]:
        """Run every chunk of ``variant`` in order; the values by name (chunk outputs; inputs too)."""
        values = dict(feeds)
        chunks = self.schedule["variants"][variant]["chunks"]
        for chunk, session in zip(chunks, self.sessions(variant)):
            names = chunk["inputs"] + chunk["extra_inputs"]
            missing = [n for n in names if n not in values]
            if missing:
                raise InputError(f"chunk {chunk['file']} needs {missing}", hint="give every input of the model")
            outs = session.run(chunk["outputs"], {n: values[n] for n in names})
            values.update(zip(chunk["outputs"], outs))
        return values


class StepRunner:
    """A generation step (``llmc.runtime.generate``'s runner) on the prefill / decode chunk graphs."""

    def __init__(self, session: Session):
        self.session = session
        loop = session.schedule["loop"]
        self.chunk, self.cache_len, self.max_seq_len = loop["chunk"], loop["cache_len"], loop["max_seq_len"]
        self.layers, self.all_logits = loop["layers"], loop["all_logits"]

    def new_caches(self, spec, batch: int) -> list:
        if batch != 1:
            raise InputError(f"NPU artifacts run one sequence at a time (got a batch of {batch})",
                             hint="generate for one prompt at a time")
        kv_heads, _, head_dim = spec.cache_shape
        return [np.zeros((1, kv_heads, self.cache_len, head_dim), np.float32) for _ in range(2 * spec.layers)]

    def __call__(self, ids: np.ndarray, positions: np.ndarray, mask: np.ndarray, caches: list) -> np.ndarray:
        if ids.shape[0] != 1:
            raise InputError(f"NPU artifacts run one sequence at a time (got a batch of {ids.shape[0]})")
        n, ctx = ids.shape[1], mask.shape[1]
        parts = []
        for begin in range(0, n, self.chunk):
            end = min(begin + self.chunk, n)
            parts.append(self._piece(ids[:, begin:end], positions[:, begin:end], mask[:, : ctx - n + end], caches))
        return np.concatenate(parts, axis=1) if self.all_logits else parts[-1]

    def _piece(self, ids, positions, mask, caches) -> np.ndarray:
        m = ids.shape[1]
        variant, feeds = self.feeds(ids, positions, mask, caches)
        values = self.session.run(variant, feeds)
        for i in range(self.layers):
            caches[2 * i], caches[2 * i + 1] = values[f"present_k.{i}"], values[f"present_v.{i}"]
        logits = values["logits"]
        return logits[:, :m] if logits.shape[1] == len(feeds["slots"]) else logits  # all positions: the real ones

    def feeds(self, ids, positions, mask, caches) -> tuple[str, dict[str, np.ndarray]]:
        """The variant and the static inputs of one piece of at most ``chunk`` tokens."""
        m, ctx = ids.shape[1], mask.shape[1]
        variant, size = ("decode", 1) if m == 1 else ("prefill", self.chunk)
        pad = size - m
        feeds = {
            "input_ids": np.pad(ids.astype(np.int64), ((0, 0), (0, pad))),
            "position_ids": np.minimum(np.concatenate([positions, positions[:, -1:] + np.arange(1, pad + 1)], axis=1),
                                       self.max_seq_len - 1).astype(np.int64),
            "attention_mask": np.pad(mask.astype(bool), ((0, 0), (0, self.cache_len - ctx))),
            "slots": np.arange(ctx - m, ctx - m + size, dtype=np.int64),
            "last": np.array([m - 1], np.int64),
        }
        for i in range(self.layers):
            feeds[f"cache_k.{i}"], feeds[f"cache_v.{i}"] = caches[2 * i], caches[2 * i + 1]
        return variant, feeds
