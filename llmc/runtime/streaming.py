"""The weight-streaming runtime: a generation step run group by group as ``schedule.json`` says.

    runner = StreamingRunner(artifact_folder)       # resident groups are read here, once
    logits = runner(ids, positions, mask, caches)   # llmc.runtime.generate's runner contract
    runner.close()

The step graph is cut into one subgraph per layer group (``llmc.passes.schedule.split``) and
each runs on the reference interpreter. A resident group's weights are read once into memory.
A streamed group's weights are one region of weights.safetensors: a background thread reads
the streamed groups in step order (cyclically, step after step) into fresh anonymous buffers,
at most ``prefetch + 1`` held at a time, the one computing included; the compute thread takes
each group's buffer when it needs it and drops it when the group is done. Reads are ``preadv``
calls of 16 MiB with ``O_DIRECT`` (the disk writes into the buffer; nothing passes through the
page cache), or, where the file system has no direct I/O, buffered reads whose pages are then
evicted (``posix_fadvise(DONTNEED)``): the page cache is memory too, and a budget that left the
model in it would be a budget in name only. Weights only gathered from (embedding tables) are
memory-mapped and pay for the rows they touch.

Memory is therefore bounded by the plan: resident groups + the window + KV cache + activations
(``schedule.json``'s ``memory``), plus the process's fixed overhead (Python, numpy, llmc, the
tokenizer, the graph's own objects), which ``baseline_rss`` measures once the graph is loaded and
split, before any weight is read.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import queue
import threading
from pathlib import Path

import numpy as np

from llmc.errors import ArtifactError
from llmc.ir.interpreter import run_graph
from llmc.ir.tensor import ArrayWeight, read_safetensors
from llmc.passes.schedule.layer_groups import SCHEDULE, VERSION, WEIGHTS
from llmc.passes.schedule.split import Part, run_parts, split
from llmc.passes.schedule.storage import drop_cache, read_into

PAGE = 4096  # direct I/O reads whole pages into page-aligned buffers


def read_schedule(artifact: Path) -> dict | None:
    """The artifact's schedule.json, or None when it has none."""
    path = Path(artifact) / SCHEDULE
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    if doc.get("version") != VERSION:
        raise ArtifactError(f"{path} has version {doc.get('version')}; this llmc reads {VERSION}",
                            hint="compile the model again with this version of llmc")
    return doc


def rss_bytes() -> int:
    """This process's resident set now (``/proc/self/statm``; 0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class StreamingRunner:
    """One generation step over a scheduled artifact (see the module docstring)."""

    def __init__(self, artifact: Path):
        from llmc.ir import serialize

        artifact = Path(artifact)
        self.schedule = read_schedule(artifact)
        if self.schedule is None:
            raise ArtifactError(f"{artifact} has no {SCHEDULE}", hint="compile it with --memory-budget")
        self.graph = serialize.load(artifact)
        groups = self.schedule["groups"]
        self.parts = split(self.graph, [tuple(g["units"]) for g in groups])
        self.baseline_rss = rss_bytes()  # the fixed overhead: the process and the graph, no weight read yet
        self.layers = sum(1 for u in self.schedule["units"] if u.startswith("layer."))
        self.path = artifact / WEIGHTS
        self.fd, self.direct = _open_direct(self.path)
        self.size = os.fstat(self.fd).st_size
        self.pool: list[np.ndarray] = []  # buffers of streamed groups kept for reuse (no page faults)
        self.out = 0  # bytes of streamed groups' buffers read or being read and not yet given back
        self.lock = threading.Lock()
        stored = read_safetensors(self.path)
        self.groups = [_Group(g, part, stored, self.direct) for g, part in zip(groups, self.parts)]
        for g in self.groups:
            if g.resident and g.length:
                g.bind(self._read(g))
        self.streamed = [g for g in self.groups if not g.resident and g.length]
        self.reader: _Reader | None = None
        self.window = int(self.schedule["memory"]["window"]) + 4 * PAGE * (int(self.schedule["prefetch"]) + 1)

    def new_caches(self, spec, batch: int) -> list:
        return [np.zeros((batch, *spec.cache_shape), np.float32) for _ in range(2 * spec.layers)]

    def __call__(self, ids: np.ndarray, positions: np.ndarray, mask: np.ndarray, caches: list) -> np.ndarray:
        names = [v.name for v in self.graph.inputs]
        values = dict(zip(names, [ids, positions, mask, *caches]))
        if self.reader is None and self.streamed:
            self.reader = _Reader(self, int(self.schedule["prefetch"]) + 1)
        try:
            out = run_parts(self.parts, values, self._run)
        except BaseException:
            self._stop_reader()  # the reader ran ahead of a step that did not finish: start it again
            raise
        return out["logits"]

    def _run(self, part: Part, arrays: list) -> list:
        group = self.groups[self.parts.index(part)]
        if group.resident or not group.length:
            return run_graph(part.graph, arrays)
        buffer = self.reader.take(group)
        group.bind(buffer)
        try:
            return run_graph(part.graph, arrays)
        finally:
            group.unbind()
            self._release(buffer)
            del buffer
            self.reader.done()

    def _read(self, group: _Group) -> np.ndarray:
        """The group's region (from ``group.begin``: whole pages with O_DIRECT) in a page-aligned
        buffer: for a streamed group a kept one of its size when there is one, else a fresh one
        (kept ones are freed first as far as the window needs)."""
        size = group.span(self.direct, self.size)
        buffer = np.frombuffer(mmap.mmap(-1, size), np.uint8) if group.resident else self._buffer(size)
        begin = group.begin(self.direct)
        read_into(self.fd, memoryview(buffer)[:size], begin, need=group.offset + group.length - begin)
        if not self.direct:
            drop_cache(self.fd, group.offset, group.length)
        return buffer

    def _buffer(self, size: int) -> np.ndarray:
        with self.lock:  # a kept buffer fits if at most a page or two larger (groups differ by page rounding)
            buffer = next((b for b in self.pool if size <= len(b) <= size + 2 * PAGE), None)
            if buffer is not None:
                self.pool.remove(buffer)
            else:
                while self.pool and self.out + sum(len(b) for b in self.pool) + size + PAGE > self.window:
                    self.pool.pop(0)
            self.out += len(buffer) if buffer is not None else size + PAGE
        return buffer if buffer is not None else np.frombuffer(mmap.mmap(-1, size + PAGE), np.uint8)

    def _release(self, buffer: np.ndarray) -> None:
        """A streamed group is done with ``buffer``: keep it for the next read of its size while
        the buffers out and kept stay within the schedule's window, else free it."""
        with self.lock:
            self.out -= len(buffer)
            if self.out + sum(len(b) for b in self.pool) + len(buffer) <= self.window:
                self.pool.append(buffer)

    def _stop_reader(self) -> None:
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
            self.out = 0  # what it had read is dropped

    def close(self) -> None:
        self._stop_reader()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown, modules may be gone
            self.close()


def _open_direct(path: Path) -> tuple[int, bool]:
    """``path`` opened for direct I/O (reads skip the page cache), or buffered where the file
    system refuses it (tmpfs); whether it is direct."""
    flag = getattr(os, "O_DIRECT", 0)
    if flag:
        try:
            return os.open(path, os.O_RDONLY | flag), True
        except OSError:
            pass
    return os.open(path, os.O_RDONLY), False


class _Group:
    """One group's subgraph and where its loaded weights lie in the file."""

    def __init__(self, entry: dict, part: Part, stored: dict, direct: bool):
        self.label = entry["label"]
        self.resident = bool(entry["resident"])
        self.offset = int(entry.get("offset", 0))
        self.length = int(entry["bytes"]) if entry.get("tensors") else 0
        self.shift = self.offset - self.begin(direct)  # where the region starts in its buffer
        self.slots = []  # (graph constant, its file weight, offset in the region)
        for name in entry.get("tensors", []):
            value = part.graph.constants.get(name)
            if value is None or name not in stored:
                raise ArtifactError(f"schedule.json names weight {name} that group {self.label} does not hold",
                                    hint="the artifact is damaged; compile it again")
            self.slots.append((value, stored[name], stored[name].offset - self.offset))

    def begin(self, direct: bool) -> int:
        """Where the group's read starts: its offset, rounded down to a page for direct I/O."""
        return self.offset - self.offset % PAGE if direct else self.offset

    def span(self, direct: bool, file_size: int) -> int:
        """Bytes of the group's read: whole pages (ending at the file's last page at most) for direct I/O."""
        if not direct:
            return self.length
        end = min(-(-(self.offset + self.length) // PAGE), -(-file_size // PAGE)) * PAGE
        return end - self.begin(direct)

    def bind(self, buffer: np.ndarray) -> None:
        """The group's weights read from ``buffer`` (views, no copy)."""
        for value, weight, at in self.slots:
            count = int(np.prod(weight.shape, dtype=np.int64))
            array = np.frombuffer(buffer, weight.dtype.np, count, self.shift + at).reshape(weight.shape)
            value.const = ArrayWeight(array, weight.dtype)

    def unbind(self) -> None:
        for value, weight, _ in self.slots:
            value.const = weight


class _Reader:
    """The prefetch thread: reads the streamed groups in order, cyclically, ``slots`` at most held."""

    def __init__(self, runner: StreamingRunner, slots: int):
        self.runner = runner
        self.free = threading.Semaphore(slots)
        self.ready: queue.Queue = queue.Queue()
        self.stopped = threading.Event()
        self.slots = slots
        self.thread = threading.Thread(target=self._loop, name="llmc-prefetch", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        groups = self.runner.streamed
        i = 0
        while True:
            self.free.acquire()
            if self.stopped.is_set():
                return
            group = groups[i % len(groups)]
            try:
                self.ready.put((group, self.runner._read(group)))
            except OSError as e:
                self.ready.put((group, e))
                return
            i += 1

    def take(self, group: _Group) -> np.ndarray:
        got, buffer = self.ready.get()
        if isinstance(buffer, OSError):
            raise ArtifactError(f"cannot read the weights of group {got.label} from {self.runner.path}: {buffer}",
                                hint="the artifact's weights file is missing or truncated; compile it again")
        if got is not group:
            raise ArtifactError(f"the prefetch thread read group {got.label} where {group.label} was due",
                                hint="a bug in llmc's streaming runtime: please report it")
        return buffer

    def done(self) -> None:
        self.free.release()

    def stop(self) -> None:
        self.stopped.set()
        self.free.release()
        self.thread.join(timeout=10)
