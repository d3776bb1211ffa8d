"""Where streamed weights come from, and how fast: the storage model of the schedule.

On the CPU, streamed weights are read from the artifact's disk. ``disk(folder)`` measures it
once (a few seconds): a 64 MiB file is written beside the folder, dropped from the page
cache (``posix_fadvise(POSIX_FADV_DONTNEED)``), then read in 16 MiB ``preadv`` calls cold (with
``O_DIRECT`` where the file system has it, as the streaming runtime reads) and again warm. The result is cached per file system in ``$LLMC_CACHE/devices/storage-<dev>.json``
(default ``~/.cache/llmc``), as ``llmc.codegen.devices.machine`` caches the CPU's figures.

On a GPU, weights the device memory does not hold stay in host memory and cross the host link
(``LINKS``: PCIe data-sheet rates per direction; a practical copy reaches about 80% of them).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.codegen.devices import Device
from llmc.codegen.devices.machine import cache_path

PROBE_BYTES = 64 * 2**20
REPEATS = 3  # the best of three reads of the probe, cold and warm
READ_BYTES = 16 * 2**20  # one preadv call; the streaming runtime reads a group in calls of this size
PCIE5, PCIE4 = 64e9, 32e9  # PCIe 5.0 / 4.0 x16, bytes/s per direction (PCI-SIG)
LINKS = {"h100": PCIE5, "h200": PCIE5, "a100": PCIE4, "rtx4090": PCIE4, "l4": PCIE4}


@dataclass(frozen=True)
class Storage:
    """Read bandwidth (bytes/s) of where streamed weights live: ``cold`` (from the device) and
    ``warm`` (already in the page cache); ``latency`` is the fixed cost of one read call."""

    name: str
    cold: float
    warm: float
    latency: float
    source: str

    def read_time(self, nbytes: float, *, warm: bool = False) -> float:
        calls = max(1, -(-int(nbytes) // READ_BYTES))
        return nbytes / (self.warm if warm else self.cold) + calls * self.latency

    def to_json(self) -> dict:
        return {"name": self.name, "cold": self.cold, "warm": self.warm, "latency": self.latency,
                "source": self.source}


def for_device(device: Device, folder: Path | None = None, *, cache: Path | None = None) -> Storage:
    """The storage a schedule for ``device`` streams from: this machine's disk under ``folder``
    for the CPU; the host link for a GPU with a known one."""
    if device.kind == "gpu" and device.name in LINKS:
        rate = 0.8 * LINKS[device.name]
        return Storage("host link", rate, rate, 10e-6,
                       f"PCIe x16 at {LINKS[device.name] / 1e9:.0f} GB/s per direction (data sheet), 80% reached")
    return disk(folder or Path.cwd(), cache=cache)


def disk(folder: Path, *, cache: Path | None = None, refresh: bool = False) -> Storage:
    """The measured disk under ``folder`` (measured once per file system, then read from the cache)."""
    folder = Path(folder)
    probe_dir = next((p for p in [folder, *folder.parents] if p.is_dir()), Path.cwd())
    device_id = os.stat(probe_dir).st_dev
    path = cache_path(cache).parent / f"storage-{device_id}.json"
    facts = None if refresh or not path.is_file() else json.loads(path.read_text())
    if facts is None:
        facts = measure(probe_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    return Storage("disk", facts["cold"], facts["warm"], facts["latency"], f"measured {facts['date']} ({path})")


def measure(folder: Path) -> dict:
    """Cold and warm read bandwidth of a probe file written in ``folder``, and one small read's latency."""
    probe = Path(folder) / f".llmc-storage-probe-{os.getpid()}"
    data = np.random.default_rng(0).integers(0, 256, PROBE_BYTES, dtype=np.uint8)
    try:
        with open(probe, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        cold = max(_read_rate(probe, drop=True) for _ in range(REPEATS))
        warm = max(_read_rate(probe, drop=False) for _ in range(REPEATS))
        latency = _small_read(probe)
    finally:
        probe.unlink(missing_ok=True)
    return {"cold": cold, "warm": warm, "latency": latency, "date": datetime.date.today().isoformat(),
            "method": f"{PROBE_BYTES >> 20} MiB probe, {READ_BYTES >> 20} MiB preadv calls, cache dropped by fadvise"}


def drop_cache(fd: int, offset: int = 0, length: int = 0) -> None:
    """Evict a file's pages (of ``[offset, offset + length)``; all with 0) from the page cache."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def read_into(fd: int, buffer: memoryview, offset: int, *, need: int | None = None) -> None:
    """Fill ``buffer`` from ``fd`` at ``offset`` in ``READ_BYTES`` calls; the file may end after the
    first ``need`` bytes (default all), else an OSError."""
    need = len(buffer) if need is None else need
    done = 0
    while done < len(buffer):
        n = os.preadv(fd, [buffer[done:done + READ_BYTES]], offset + done)
        if n <= 0:
            if done >= need:
                return
            raise OSError(f"short read at byte {offset + done}")
        done += n


def _read_rate(path: Path, *, drop: bool) -> float:
    """Read the probe whole: cold with direct I/O (as the streaming runtime reads) or after dropping
    it from the page cache; warm through the page cache."""
    import mmap

    fd = -1
    if drop and hasattr(os, "O_DIRECT"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        except OSError:
            fd = -1
    if fd < 0:
        fd = os.open(path, os.O_RDONLY)
    try:
        if drop:
            drop_cache(fd)
        buffer = memoryview(mmap.mmap(-1, PROBE_BYTES))  # page-aligned, as direct I/O needs
        start = time.perf_counter()
        read_into(fd, buffer, 0)
        return PROBE_BYTES / (time.perf_counter() - start)
    finally:
        os.close(fd)


def _small_read(path: Path) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        drop_cache(fd)
        buffer = memoryview(bytearray(4096))
        start = time.perf_counter()
        for i in range(16):
            os.preadv(fd, [buffer], i * (PROBE_BYTES // 16))
        return (time.perf_counter() - start) / 16
    finally:
        os.close(fd)
