"""The cpu micro-benchmark behind a sparsity decision: a weight's sparse kernel and the dense one,
built for this machine and timed at the artifact's sizes, cached so later compiles do not re-time.

``measure(stored, sizes)`` builds, per size, two one-op graphs with an input of ``rows`` x K:
``linear`` over a random dense [N, K] matrix (packed on the same grid when the kept values are
quantized), and the stored op over a random matrix of the same shape, storage, density and grid
(the kernels' speed depends on those, not on the values). Each is compiled for the cpu target as an artifact would be and timed with the
Relax VM's ``time_evaluator``: the median of ``REPEATS`` calls, each after the weights were
flushed from the CPU caches (``cache_flush_cpu_non_first_arg``). A decode step streams every
weight of the model from memory, so a kernel timed with its weights hot in L2 would favour
compute over bytes, which is the wrong way round for sparse storage. Medians keep one busy
moment of a shared machine from moving a result much (the numbers are still noisy there).

Results are kept in ``$LLMC_CACHE/sparsity/<cpu>-<cores>c.json`` (default ``~/.cache/llmc``) by
llmc version, storage, shape, density (to 0.01) and rows ("cold": weights flushed before each call).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llmc.passes.sparsity.storage import Stored, store

REPEATS = 15
FLUSH = "cache_flush_cpu_non_first_arg"  # TVM's cache flush of every argument but the input


def cache_file() -> Path:
    from llmc.targets.gpu.cpu import host_cpu

    root = Path(os.environ.get("LLMC_CACHE") or Path.home() / ".cache" / "llmc")
    return root / "sparsity" / f"{host_cpu()}-{os.cpu_count() or 1}c.json"


def cache_key(stored: Stored, rows: int) -> str:
    from llmc import __version__

    n, k = stored.shape
    return f"llmc{__version__}/cold/{stored.label()}/{n}x{k}/d{stored.density:.2f}/rows{rows}"


def measure(stored: Stored, sizes: dict[str, int]) -> dict[str, dict[str, float]]:
    """Seconds per call of the dense and the sparse kernel at each size (see the module docstring)."""
    path = cache_file()
    cache = json.loads(path.read_text()) if path.is_file() else {}
    missing = {size: rows for size, rows in sizes.items() if cache_key(stored, rows) not in cache}
    if missing:
        timed = _time(stored, sorted(set(missing.values())))
        for rows, result in timed.items():
            cache[cache_key(stored, rows)] = result
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        scratch.replace(path)
    return {size: dict(cache[cache_key(stored, rows)]) for size, rows in sizes.items()}


def _time(stored: Stored, rows: list[int]) -> dict[int, dict[str, float]]:
    import llmc
    from llmc.targets.gpu.runtime import Session

    rng = np.random.default_rng(0)
    n, k = stored.shape
    dense = rng.standard_normal((n, k)).astype(np.float32)
    pruned = store(_like(dense, stored, rng), stored.pattern, stored.grid)
    out: dict[int, dict[str, float]] = {r: {} for r in rows}
    with tempfile.TemporaryDirectory(prefix="llmc-sparse-bench-") as folder:
        for r in rows:  # static rows, as each entry of a generation artifact is compiled (decode: seq = 1)
            for name, graph in (("dense", _graph(dense, None, r, stored.grid)), ("sparse", _graph(None, pruned, r))):
                art = llmc.compile(graph, target="cpu", output=Path(folder) / f"{name}{r}")
                session = Session(art.path)
                timer = session.vm.time_evaluator("main", session.device, number=1, repeat=REPEATS, f_preproc=FLUSH)
                x = session._to_device(rng.standard_normal((1, r, k)).astype(np.float32), session.spec["inputs"][0], {})
                out[r][name] = float(np.median(timer(x, *session.params).results))
    return out


def _like(w: np.ndarray, stored: Stored, rng) -> np.ndarray:
    """``w`` pruned to ``stored``'s pattern and density at random positions."""
    if stored.storage == "nm":
        n, m = stored.attrs["n"], stored.attrs["m"]
        groups = w.reshape(w.shape[0], -1, m)
        drop = np.argsort(rng.random(groups.shape), axis=-1)[..., n:]
        np.put_along_axis(groups, drop, 0.0, axis=-1)
        return groups.reshape(w.shape)
    return np.where(rng.random(w.shape) < stored.density, w, 0.0).astype(np.float32)


def _graph(dense: np.ndarray | None, stored: Stored | None, rows: int, grid=None):
    from llmc.ir import DType, Graph, TensorType
    from llmc.ir.packing import quantize

    k = (dense if dense is not None else np.empty(stored.shape)).shape[1]
    g = Graph("sparsity_bench")
    x = g.add_input("x", TensorType(DType.f32, (1, rows, k)))
    if stored is None and grid is not None:  # the dense weight packed on the grid, as the quantization pass stores it
        q = quantize(dense, grid)
        tensors = [g.add_const(f"weight.{i}", t) for i, t in enumerate([q.words, q.scale, q.minimum])]
        w = g.call("dequantize_packed", *tensors, bits=grid.bits, group=grid.group, k=q.k)
        y = g.call("linear", x, w)
    elif stored is None:
        y = g.call("linear", x, g.add_const("weight", dense))
    else:
        attrs = {**stored.attrs, **({"kernel": "sparse"} if stored.op != "linear_csr" else {})}
        y = g.call(stored.op, x, *(g.add_const(f"weight.{key}", t) for key, t in stored.tensors.items()), **attrs)
    g.outputs = [y]
    return g
