"""NPU device profiles: what a device's NPU runs, as data.

A profile lists the llmc ops the NPU runs (each through the ONNX ops its emitter writes, which
the device's compiler must accept), the ops kept on the CPU by choice and why, the integer
formats of activations and weights, where weights may be per channel, and the on-chip memory.
Adding a device is adding a profile: a ``Profile`` here, or a JSON file with the same fields
given as ``--device path/to/profile.json``.

Invariant: a profile never names an op the emitter cannot write (``lowerings.LOWERINGS``), so a
node the partitioner places on the NPU always has an ONNX form.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmc.errors import TargetError

ACTIVATION_DTYPES = ("uint8", "uint16")
WEIGHT_DTYPES = ("int8", "uint8")

# The float ops ONNX Runtime's QNN execution provider places on the HTP inside QDQ node units
# (checked on the x86 HTP simulator of onnxruntime-qnn 2.7.0, QNN 2.51), as llmc ops.
_HTP_OPS = ("linear", "matmul", "conv2d", "batch_norm", "max_pool2d", "avg_pool2d", "reduce_mean",
            "layer_norm", "rms_norm", "add", "sub", "mul", "relu", "gelu", "silu", "sigmoid", "tanh", "softmax",
            "reshape", "transpose", "slice", "concat", "gather")

_ATTENTION = ("attention: runs in float32 on the CPU, beside the float32 KV cache it reads (the cache lives "
              "outside the NPU graphs); a uint16 softmax alone would cost 1e-4 relative error of its output on "
              "SmolLM2 (bench_npu)")
_ATTENTION_INT8 = ("attention: a uint8 softmax costs 4% (median) to 6.5% relative error of the attention output "
                   "on SmolLM2 (bench_npu), so it runs in float32 on the CPU")
_CACHE = "kv_update: the KV cache lives outside the NPU graphs (float32, owned by the runner)"
_ROPE = "rope: feeds the float KV cache, so it runs beside kv_update on the CPU"
_TABLE = "embedding: a table lookup by int64 ids, no arithmetic to accelerate"


@dataclass(frozen=True)
class Profile:
    """One NPU device as the partitioner and the quantizer see it.

    ``activation``: the activation format per model kind (``llm``: transformer layers, ``cnn``:
    convolutional models). ``per_channel``: ops whose weights may have a scale per output channel
    (every other weight has one scale). ``cpu_by_choice``: op -> why it stays on the CPU although
    the device could run it. ``sram_bytes``: on-chip memory; an NPU chunk whose weights exceed it
    streams them from DRAM (the manifest counts such chunks).
    """

    name: str
    description: str
    ops: frozenset[str]
    activation: dict[str, str] = field(default_factory=lambda: {"llm": "uint16", "cnn": "uint8"})
    weight: str = "int8"
    per_channel: frozenset[str] = frozenset({"conv2d"})
    cpu_by_choice: dict[str, str] = field(default_factory=dict)
    static_shapes: bool = True
    control_flow: bool = False
    sram_bytes: int = 0

    def __post_init__(self):
        for kind, dtype in self.activation.items():
            if dtype not in ACTIVATION_DTYPES:
                raise TargetError(f"profile {self.name}: activation format {dtype!r} for {kind} is not one of "
                                  f"{ACTIVATION_DTYPES}")
        if self.weight not in WEIGHT_DTYPES:
            raise TargetError(f"profile {self.name}: weight format {self.weight!r} is not one of {WEIGHT_DTYPES}")
        from llmc.targets.npu.lowerings import LOWERINGS

        unknown = sorted(set(self.ops) - set(LOWERINGS))
        if unknown:
            raise TargetError(f"profile {self.name} names ops the NPU emitter cannot write: {unknown}",
                              hint=f"a profile's ops are among {sorted(LOWERINGS)}")

    def activation_dtype(self, kind: str) -> str:
        return self.activation.get(kind, self.activation.get("llm", "uint16"))

    def to_json(self) -> dict:
        out = asdict(self)
        out["ops"], out["per_channel"] = sorted(self.ops), sorted(self.per_channel)
        return out

    @classmethod
    def from_json(cls, obj: dict, source: str) -> Profile:
        known = {f for f in cls.__dataclass_fields__}
        extra = sorted(set(obj) - known)
        if extra or "name" not in obj or "ops" not in obj:
            raise TargetError(f"NPU profile {source} is malformed (unknown fields {extra}, or no name/ops)",
                              hint=f"a profile has the fields {sorted(known)}")
        obj = dict(obj, ops=frozenset(obj["ops"]), per_channel=frozenset(obj.get("per_channel", ("conv2d",))))
        obj.setdefault("description", f"profile from {source}")
        return cls(**obj)


PROFILES: dict[str, Profile] = {}


def _register(profile: Profile) -> None:
    PROFILES[profile.name] = profile


_register(Profile(
    name="qnn-htp",
    description="Qualcomm Hexagon HTP through ONNX Runtime's QNN execution provider: QDQ graphs with static "
                "shapes, uint8/uint16 activations, int8 weights per output channel (convolutions and Gemm), "
                "no Loop/If",
    ops=frozenset(_HTP_OPS),
    # The QNN EP of onnxruntime-qnn 2.7.0 places Gemm with per-channel int8 weights on the HTP (checked with
    # CPU fallback disabled); per-tensor linear weights cost SmolLM2 +9.6% perplexity, per channel +1.2%.
    per_channel=frozenset({"conv2d", "linear"}),
    cpu_by_choice={"attention": _ATTENTION, "kv_update": _CACHE, "rope": _ROPE, "embedding": _TABLE},
    sram_bytes=8 * 2**20,  # HTP VTCM of a Snapdragon 8 Gen 2/3
))
_register(Profile(
    name="generic-int8",
    description="a conservative int8 NPU: uint8 activations and int8 per-tensor weights for every model, "
                "matrix products, convolutions, pooling and simple elementwise ops only",
    ops=frozenset({"linear", "matmul", "conv2d", "max_pool2d", "avg_pool2d", "add", "mul", "relu", "reshape",
                   "transpose"}),
    activation={"llm": "uint8", "cnn": "uint8"},
    per_channel=frozenset(),
    cpu_by_choice={"attention": _ATTENTION_INT8, "kv_update": _CACHE, "rope": _ROPE, "embedding": _TABLE},
    sram_bytes=2 * 2**20,
))


def get_profile(name: str) -> Profile:
    """A built-in profile by name, or a JSON profile file (``--device my-npu.json``)."""
    if name in PROFILES:
        return PROFILES[name]
    path = Path(name)
    if path.suffix == ".json":
        if not path.is_file():
            raise TargetError(f"NPU profile file {path} does not exist")
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TargetError(f"NPU profile file {path} is not valid JSON: {e}") from None
        return Profile.from_json(obj, str(path))
    raise TargetError(f"unknown NPU device profile {name!r}",
                      hint=f"use one of {', '.join(sorted(PROFILES))}, or a profile .json file")
