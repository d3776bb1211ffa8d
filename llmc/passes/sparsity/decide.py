"""Whether a pruned weight pays: its sparse kernel against the dense one, at the compiled sizes.

For each pruned weight and each size the artifact is compiled for (a generation artifact: a
decode step, one row per sequence, and a prefill chunk; otherwise the graph's own rows), the
decision compares

- the cost model's roofline time (``llmc.codegen.cost``: the op registry's flops and bytes of
  ``linear`` against the sparse op, on the target's device), and
- on the cpu, the measured time of the two kernels built at those sizes (``bench.measure``,
  cached under ``$LLMC_CACHE``; tests pass their own ``measure``).

A weight whose kept values are quantized (``linear_nm_q``) is compared with the dense weight
packed on the same grid (what the quantization pass would store), not with float32. Under
``size`` on the cpu such a weight, when not applied, still runs its sparse kernel: expanding it
at load time would hold it in float32 (8x the memory of its codes) and read all of that per step.

The sparse kernel is applied only where both say it is faster at every size. Otherwise the
weight is "not applied: no speedup on TARGET at these sizes": under ``--sparsity-for speed`` it
keeps its dense weights; under ``size`` it is stored compressed anyway and expanded at load time
(``kernel="dense"``). The cuda target has no sparse kernel (TVM 0.27 emits no sparse tensor-core
code), so every cuda weight is not applied; the reference interpreter has no kernels to time and
applies every weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llmc.codegen.cost import roofline
from llmc.ir.dtypes import DType
from llmc.ir.ops import registry
from llmc.ir.ops.registry import Cost
from llmc.ir.types import TensorType
from llmc.passes.sparsity.storage import Stored

Measure = Callable[[Stored, dict[str, int]], dict[str, dict[str, float]]]  # -> size -> {dense, sparse} seconds


@dataclass
class Decision:
    applied: bool
    kernel: str | None        # sparse, dense (expanded at load time) or None (dense weights kept)
    reason: str
    predicted: dict[str, dict[str, float]] = field(default_factory=dict)  # size -> {dense, sparse} seconds
    measured: dict[str, dict[str, float]] | None = None

    def to_json(self) -> dict:
        return {"applied": self.applied, "kernel": self.kernel, "reason": self.reason, "predicted": self.predicted,
                "measured": self.measured}


def predict(stored: Stored, rows: int, device) -> dict[str, float]:
    """Roofline seconds of the dense ``linear`` (its weight at ``stored.dense_nbytes``) and of the
    sparse op for ``rows`` input rows."""
    n, k = stored.shape
    x, y = TensorType(DType.f32, (rows, k)), TensorType(DType.f32, (rows, n))
    dense = registry.get("linear").cost([x, TensorType(DType.f32, (n, k))], [y], {})
    dense = Cost(dense.flops, dense.bytes - n * k * 4 + stored.dense_nbytes)
    types = [x, *(TensorType(DType.from_numpy(t.dtype), t.shape) for t in stored.tensors.values())]
    attrs = {**stored.attrs, **({"kernel": "sparse"} if stored.op != "linear_csr" else {})}
    sparse = registry.get(stored.op).cost(types, [y], attrs)
    return {name: max(*roofline(device, float(c.flops), float(c.bytes), DType.f32, matrix=True)) + device.launch
            for name, c in (("dense", dense), ("sparse", sparse))}


def decide(stored: Stored, target: str, sizes: dict[str, int], device, goal: str,
           measure: Measure | None) -> Decision:
    """Apply the sparse kernel or not (see the module docstring)."""
    fallback = None if goal == "speed" else "sparse" if stored.grid is not None and target == "cpu" else "dense"
    if target == "reference":
        return Decision(True, "sparse", "applied: the interpreter runs every storage")
    if target != "cpu":
        return Decision(False, fallback, f"not applied: no sparse kernel on {target} (expanded at load time)")
    predicted = {size: predict(stored, rows, device) for size, rows in sizes.items()} if device is not None else {}
    model_says = all(t["sparse"] < t["dense"] for t in predicted.values())
    if not model_says:
        slow = [s for s, t in predicted.items() if t["sparse"] >= t["dense"]]
        return Decision(False, fallback, f"not applied: no speedup on {target} at these sizes (cost model: "
                        f"{', '.join(slow)})" + _kept_sparse(fallback), predicted)
    measured = measure(stored, sizes) if measure is not None else None
    if measured is not None:
        slow = [s for s, t in measured.items() if t["sparse"] >= t["dense"]]
        if slow:
            return Decision(False, fallback, f"not applied: no speedup on {target} at these sizes (measured: "
                            f"{', '.join(slow)})" + _kept_sparse(fallback), predicted, measured)
    return Decision(True, "sparse", "applied: faster than dense at " + ", ".join(sizes) +
                    (" (cost model and measured)" if measured is not None else " (cost model)"), predicted, measured)


def _kept_sparse(kernel: str | None) -> str:
    return "; run by its sparse kernel for size (no float32 expansion)" if kernel == "sparse" else ""
