"""Typed metadata carried by every node: where it came from and what passes decided about it.

Frontends fill ``origin`` and ``layer``; quantization fills ``quant``; sparsity fills
``sparsity``; the scheduler fills ``stage`` and ``device``. Nothing else lives on a node.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

from llmc.errors import LLMCError

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block|encoder\.layer|decoder\.layers)\.(\d+)(?:\.|$)")

def layer_of(module_path: str) -> int | None:
    """The block index in a module path (``model.layers.3.mlp`` -> 3), or None outside blocks."""
    m = _LAYER_RE.search(module_path or "")
    return int(m.group(1)) if m else None

@dataclass(frozen=True)
class QuantSpec:
    """How a tensor is quantized: ``QuantSpec(bits=4, group=128, axis=1, sym=True)``.

    ``group`` is the number of consecutive elements along ``axis`` that share a scale
    (0 means the whole axis: per-channel). ``scheme`` names the algorithm that chose it.
    """

    bits: int
    group: int = 0
    axis: int = -1
    sym: bool = True
    scheme: Literal["rtn", "gptq", "awq", "smoothquant"] = "rtn"

    def __post_init__(self):
        if self.bits not in (2, 3, 4, 8, 16):
            raise LLMCError(f"quantization to {self.bits} bits is not supported", hint="use 2, 3, 4, 8 or 16 bits")
        if self.group < 0:
            raise LLMCError(f"quantization group {self.group} must be >= 0", hint="use 0 for per-channel")
        if self.scheme not in ("rtn", "gptq", "awq", "smoothquant"):
            raise LLMCError(f"unknown quantization scheme {self.scheme!r}")

@dataclass(frozen=True)
class SparsitySpec:
    """Which weights are zero: ``pattern`` is ``unstructured`` or ``n:m`` (e.g. 2:4)."""

    pattern: str
    density: float

    def __post_init__(self):
        if self.pattern != "unstructured" and not re.fullmatch(r"\d+:\d+", self.pattern):
            raise LLMCError(f"unknown sparsity pattern {self.pattern!r}", hint="use 'unstructured' or 'N:M' such as '2:4'")
        if not 0.0 < self.density <= 1.0:
            raise LLMCError(f"sparsity density {self.density} must be in (0, 1]")

@dataclass
class NodeMeta:
    """Metadata of one node.

    origin:   where the node came from, for errors and reports (``model.layers.3.mlp.down_proj``
              for torch, the ONNX node name for ONNX).
    layer:    the model block the node belongs to, parsed from the module path; None outside.
    quant:    set by quantization passes: how the node's weight is quantized.
    sparsity: set by sparsity passes: which of the node's weights are zero.
    stage:    set by the scheduler: the pipeline stage / layer group the node runs in.
    device:   set by partitioners: where the node runs (``npu``, ``cpu``, ``gpu``).
    """

    origin: str = ""
    layer: int | None = None
    quant: QuantSpec | None = None
    sparsity: SparsitySpec | None = None
    stage: int | None = None
    device: str | None = None

    def copy(self, **changes) -> NodeMeta:
        return replace(self, **changes)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or v == "":
                continue
            out[f.name] = asdict(v) if f.name in ("quant", "sparsity") else v
        return out

    @classmethod
    def from_json(cls, obj: dict) -> NodeMeta:
        obj = dict(obj)
        if "quant" in obj:
            obj["quant"] = QuantSpec(**obj["quant"])
        if "sparsity" in obj:
            obj["sparsity"] = SparsitySpec(**obj["sparsity"])
        return cls(**obj)
