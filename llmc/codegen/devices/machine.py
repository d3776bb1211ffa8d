"""The CPU llmc runs on, measured: memory bandwidth and float32 matmul peak.

A short numpy micro-benchmark (well under two seconds): bandwidth from copies of a 64 MiB
array (each byte read once and written once), peak from a 1024 x 1024 float32 matmul with all
of BLAS's threads and with one (per core; without ``threadpoolctl`` the total divided by the
cores). The result is cached per machine in ``$LLMC_CACHE/devices/<cpu-slug>.json`` (default
``~/.cache/llmc``) with the date it was measured; ``refresh=True`` measures again.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

from llmc.codegen.devices.spec import Device

COPY_BYTES = 64 * 2**20
MATMUL_N = 1024
REPEATS = 5
LAUNCH = 2e-6  # one TVM parallel kernel on the CPU (the smallest kernels benchmarks/cost_model.py times)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cache_path(cache: Path | None = None) -> Path:
    """Where this machine's measurement is kept: ``<cache>/devices/<cpu-slug>-<cores>c.json``."""
    root = Path(cache) if cache else Path(os.environ.get("LLMC_CACHE") or Path.home() / ".cache" / "llmc")
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-") or "cpu"
    return root / "devices" / f"{slug}-{os.cpu_count() or 1}c.json"


def host(cache: Path | None = None, *, refresh: bool = False) -> Device:
    """This machine's CPU as a ``Device`` (measured once, then read from the cache)."""
    path = cache_path(cache)
    facts = None if refresh or not path.is_file() else json.loads(path.read_text())
    if facts is None:
        facts = measure()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
    peak = max(facts["peak_f32"], facts["peak_f32_core"])  # all threads can lose to one (SMT siblings, a busy machine)
    return Device("cpu", f"{facts['cpu']} ({facts['cores']} cores, measured)", "cpu",
                  peak={"f32": peak, "f16": peak, "bf16": peak}, vector=peak, bandwidth=facts["bandwidth"],
                  onchip=_cache_bytes(), memory=_memory_bytes(), launch=LAUNCH,
                  source=f"measured {facts['date']} ({path})", facts=facts)


def measure() -> dict:
    """Copy bandwidth and matmul peak of this machine, best of ``REPEATS`` runs each."""
    src = np.ones(COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)
    copy = _best(lambda: np.copyto(dst, src))
    a = np.random.default_rng(0).standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    flops = 2 * MATMUL_N**3
    total = flops / _best(lambda: a @ a)
    cores = os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        per_core = total / cores
    else:
        with threadpool_limits(limits=1, user_api="blas"):
            per_core = flops / _best(lambda: a @ a)
    return {"cpu": cpu_name(), "cores": cores, "date": datetime.date.today().isoformat(),
            "bandwidth": 2 * COPY_BYTES / copy, "peak_f32": total, "peak_f32_core": per_core,
            "method": f"numpy copy of {COPY_BYTES >> 20} MiB; float32 matmul {MATMUL_N}^3; best of {REPEATS}"}


def _best(fn) -> float:
    fn()  # warm-up: page faults, BLAS thread start
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _cache_bytes() -> int:
    """The last-level cache (``/sys`` on Linux; 32 MiB when it cannot be read)."""
    index = Path("/sys/devices/system/cpu/cpu0/cache")
    sizes = []
    for level in index.glob("index*/size"):
        text = level.read_text().strip()
        unit = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * unit)
    return max(sizes, default=32 * 2**20)


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
