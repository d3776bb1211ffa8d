"""Calibration data and the streaming executor that feeds quantization its statistics.

Data comes from an ``.npz`` of model inputs, from a text file tokenized with the model's own
tokenizer (``samples`` windows of ``length`` tokens), or ``builtin``: the calibration split of
llmc's offline corpus (``llmc.runtime.perplexity.corpus``), disjoint from the text perplexity
is scored on. Everything is checked (names, shapes, dtypes, token ids against the vocabulary)
before any statistics are collected.

``stream`` runs a graph node by node with the reference ops, the way the interpreter does, but
calls a hook before each node (which may replace its arguments: a layer quantized already is
run quantized, so later layers see the error of earlier ones) and computes only what some
hooked node still needs. Values are freed after their last use and a generation graph's KV
caches are created when first read, so peak memory is about one layer's activations and weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.errors import InputError, LLMCError
from llmc.ir import interpreter
from llmc.ir import shapes as S
from llmc.ir.graph import Graph, Node
from llmc.ir.ops.registry import substitute

BUILTIN = "builtin"
DEFAULT_SAMPLES = 32
DEFAULT_LENGTH = 256


@dataclass
class Calibration:
    """Model inputs to calibrate on (missing generation caches are made when read) and where they came from."""

    inputs: dict[str, np.ndarray]
    source: str

    @property
    def tokens(self) -> int:
        ids = self.inputs.get("input_ids")
        return int(ids.size) if ids is not None else 0


def load_calibration(graph: Graph, spec: str | Path, *, tokenizer: Callable[[str], list[int]] | None = None,
                     vocab: int | None = None, samples: int = DEFAULT_SAMPLES,
                     length: int = DEFAULT_LENGTH) -> Calibration:
    """Calibration inputs for ``graph`` from ``spec`` (``builtin``, a ``.txt`` or an ``.npz`` file)."""
    from llmc.frontend.decoder import is_step_graph

    step = is_step_graph(graph)
    if str(spec) == BUILTIN or str(spec).endswith(".txt"):
        if not step or tokenizer is None:
            raise InputError(f"calibration text needs an LLM with a tokenizer; {graph.name} has none",
                             hint="give an .npz of the model's inputs (--calibration inputs.npz)")
        text, source = _text(spec)
        ids = _windows(tokenizer(text), samples, length, source)
        arrays = {"input_ids": ids}
    elif str(spec).endswith(".npz"):
        arrays, source = _npz(Path(spec)), str(spec)
    else:
        raise InputError(f"unknown calibration data {spec!r}",
                         hint="use 'builtin', a .txt file or an .npz of model inputs")
    if step:
        arrays = _step_inputs(graph, arrays, source)
    _check(graph, arrays, source, vocab)
    return Calibration(arrays, source)


def _text(spec) -> tuple[str, str]:
    if str(spec) == BUILTIN:
        from llmc.runtime.perplexity import CALIBRATION, corpus

        c = corpus(split=CALIBRATION)
        return c.text, c.source
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"calibration file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise InputError(f"calibration file {path} is empty", hint="give a text file of typical model input")
    return text, str(path)


def _windows(ids: list[int], samples: int, length: int, source: str) -> np.ndarray:
    """``samples`` windows of ``length`` tokens, spread evenly over ``ids`` (fewer if the text is short)."""
    if samples < 1 or length < 1:
        raise InputError(f"calibration needs at least one sample of one token (got {samples} x {length})")
    if len(ids) < length:
        raise InputError(f"calibration text {source} has {len(ids)} tokens, fewer than one sample of {length}",
                         hint="give a longer text or a smaller --calibration-length")
    count = min(samples, len(ids) // length)
    starts = np.linspace(0, len(ids) - length, count).astype(int)
    return np.stack([np.asarray(ids[s:s + length], np.int64) for s in starts])


def _npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"calibration file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as e:
        raise InputError(f"calibration file {path} is not a readable .npz: {e}") from None


def _step_inputs(graph: Graph, arrays: dict, source: str) -> dict[str, np.ndarray]:
    """A generation step's inputs from token ids alone: positions 0.., every position visible, caches made when read."""
    if "input_ids" not in arrays:
        raise InputError(f"calibration data {source} has no input_ids", hint=f"its arrays are {sorted(arrays)}")
    ids = arrays["input_ids"]
    if ids.ndim != 2 or ids.shape[1] < 1 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"calibration input_ids must be integers [samples, tokens], got {ids.dtype}{list(ids.shape)}")
    extra = set(arrays) - {"input_ids"}
    if extra:
        raise InputError(f"calibration data {source} has arrays {sorted(extra)} a generation step does not take",
                         hint="give only input_ids [samples, tokens]")
    samples, length = ids.shape
    return {"input_ids": ids.astype(np.int64), "position_ids": np.tile(np.arange(length, dtype=np.int64), (samples, 1)),
            "attention_mask": np.ones((samples, length), bool)}


def _check(graph: Graph, arrays: dict, source: str, vocab: int | None) -> None:
    names = {v.name for v in graph.inputs}
    extra = sorted(set(arrays) - names)
    if extra:
        raise InputError(f"calibration data {source} has arrays {extra} that are not inputs of {graph.name}",
                         hint=f"the model's inputs are {sorted(names)}")
    missing = [v.name for v in graph.inputs if v.name not in arrays and not _made_when_read(v.name)]
    if missing:
        raise InputError(f"calibration data {source} lacks inputs {missing}",
                         hint=f"the model's inputs are {sorted(names)}")
    bind_sizes(graph, arrays)
    ids = arrays.get("input_ids")
    if vocab is not None and ids is not None and ids.size and (ids.min() < 0 or ids.max() >= vocab):
        bad = int(ids.max() if ids.max() >= vocab else ids.min())
        raise InputError(f"calibration token id {bad} is outside the vocabulary of {vocab} tokens",
                         hint="tokenize the calibration text with this model's tokenizer")


def _made_when_read(name: str) -> bool:
    return name.startswith(("cache_k.", "cache_v."))


Hook = Callable[[Node, list[np.ndarray]], list[np.ndarray] | None]


def stream(graph: Graph, calibration: Calibration, hooked: Iterable[Node], hook: Hook,
           progress: Callable[[int, int], None] | None = None) -> None:
    """Run ``graph`` on the calibration inputs, calling ``hook(node, args)`` before every ``hooked``
    node; a hook returning a list replaces the node's arguments. Only the nodes whose values some
    hooked node reads (directly or not) are executed; a hooked node's own output is computed only if needed."""
    hooked = {id(n) for n in hooked}
    needed = ancestors(graph, hooked)
    values: dict[int, np.ndarray] = {}
    for v in graph.inputs:
        if v.name in calibration.inputs:
            values[id(v)] = calibration.inputs[v.name]
    env = bind_sizes(graph, calibration.inputs)
    order = [n for n in graph.nodes if id(n) in needed or id(n) in hooked]
    last = {}
    for i, node in enumerate(order):
        for v in node.inputs:
            last[id(v)] = i
    for i, node in enumerate(order):
        args = [read_value(v, values, env) for v in node.inputs]
        if id(node) in hooked:
            args = hook(node, args) or args
        if id(node) in needed:
            try:
                outs = node.opdef.run(args, substitute(node.attrs, env))
            except (ValueError, IndexError, TypeError, FloatingPointError) as e:
                raise LLMCError(f"calibration failed: {e}", where=node.where) from e
            for v, out in zip(node.outputs, outs):
                values[id(v)] = np.asarray(out, dtype=v.type.dtype.np)
        for v in node.inputs:
            if last.get(id(v)) == i:
                values.pop(id(v), None)
        if progress is not None:
            progress(i + 1, len(order))


def bind_sizes(graph: Graph, arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """Check the given arrays against their inputs' types (the caches are made later); the symbols' sizes."""
    sub = Graph(graph.name)
    given = [v for v in graph.inputs if v.name in arrays]
    for v in given:
        sub.add_input(v.name, v.type)
    return interpreter.bind_inputs(sub, [arrays[v.name] for v in given])


def read_value(v, values, env) -> np.ndarray:
    if id(v) in values:
        return values[id(v)]
    if v.const is not None:
        return np.asarray(v.const.numpy())
    if v.producer is None and _made_when_read(v.name):  # a KV cache: empty until this step writes it
        values[id(v)] = np.zeros(S.evaluate_shape(v.type.shape, env), v.type.dtype.np)
        return values[id(v)]
    raise LLMCError(f"calibration has no value for %{v.name}")


def ancestors(graph: Graph, hooked: set[int]) -> set[int]:
    """Ids of the nodes whose outputs a hooked node reads, directly or through other nodes."""
    needed: set[int] = set()
    stack = [v.producer for n in graph.nodes if id(n) in hooked for v in n.inputs if v.producer is not None]
    while stack:
        node = stack.pop()
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(v.producer for v in node.inputs if v.producer is not None)
    return needed
