"""Quantization formats and recipes: which format each weight gets, checked before any work.

A format is named ``w<bits>[g<group>]`` (weight-only: ``w8`` per output channel, ``w4g128``
groups of 128 along the reduction axis), ``w8a8`` (SmoothQuant: int8 weights per channel, int8
activations scaled per token, integer matmuls; ``w8a8s`` with one static activation scale) or
``fp16`` (weights stored as float16). 8-bit weight-only grids are symmetric; 4, 3 and 2 bits are
asymmetric (``code * scale + minimum``, llama.cpp's Q4_1 form).

A recipe is ``{"default": FORMAT, "override": {KEY: FORMAT}}``. A key is an op kind
(``linear``, ``embedding``) or a glob over node names: a node's origin (``blk.3.ffn_down``,
``model.layers.3.mlp.down_proj``) and, for GGUF origins, its Hugging Face name. The most
specific match wins: a glob, then an op kind, then the default. ``float`` keeps a weight float.

Outliers (``llmc.passes.quantize.outliers``): ``w3g128+o0.005`` keeps the 0.5% most important
weights of each matrix exact in float16, in a CSR matrix beside the low-bit codes; the recipe key
``"outliers": 0.005`` gives every low-bit format without its own ``+o`` that fraction, and
``"reorder": true`` groups outlier input channels together where a permutation folds into the
producer. ``mixed`` (``--quant mixed``) is not a format: the allocation
(``llmc.passes.quantize.allocate``) chooses one per weight under a budget.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from llmc.errors import LLMCError
from llmc.ir.graph import Graph, Node
from llmc.ir.packing import Grid

NAMED = ("w8", "w4g32", "w4g128", "w3g128", "w2g64", "w8a8", "w8a8s", "fp16")
KEEP = "float"
METHODS = ("rtn", "gptq", "awq", "awq+gptq")  # awq: scales searched and folded, then RTN (or GPTQ)
_FORMAT_RE = re.compile(r"w(?P<bits>\d+)(?:g(?P<group>\d+))?")
_OUTLIER_RE = re.compile(r"(?P<base>.+)\+o(?P<fraction>[0-9.e-]+)")
MAX_OUTLIERS = 0.1  # a larger fraction is a sparse matrix, not outliers
# Which input of an op is the weight a format applies to.
WEIGHT_SLOT = {"linear": 1, "embedding": 0}
# GGUF tensor names -> their Hugging Face names, so one recipe fits both.
_GGUF_ALIASES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}


@dataclass(frozen=True)
class Format:
    """One format: its name, the weight grid (None: float16 storage) and whether activations are int8."""

    name: str
    grid: Grid | None
    act8: bool = False
    static: bool = False  # W8A8 with one calibrated activation scale per linear, not one per token
    outliers: float = 0.0  # fraction of the weights kept in float16 beside the codes (CSR)

    @property
    def bits(self) -> float:
        return 16 if self.grid is None else self.grid.bits

    @property
    def label(self) -> str:
        """The name with its outlier fraction: ``w3g128+o0.005`` (``name`` alone is what a target must run)."""
        return f"{self.name}+o{self.outliers:g}" if self.outliers else self.name

    def with_outliers(self, fraction: float) -> Format:
        if fraction and (self.grid is None or self.act8):
            raise LLMCError(f"format {self.name} cannot keep outliers",
                            hint="outliers go with weight-only low-bit formats (w8, w4g128, w3g128, w2g64, ...)")
        if not 0.0 <= fraction <= MAX_OUTLIERS:
            raise LLMCError(f"outlier fraction {fraction:g} must be in [0, {MAX_OUTLIERS:g}]",
                            hint="e.g. 0.005 keeps 0.5% of the weights in float16")
        return Format(self.name, self.grid, self.act8, self.static, float(fraction))

    @classmethod
    def parse(cls, text: str) -> Format:
        name = text.strip().lower()
        m = _OUTLIER_RE.fullmatch(name)
        if m:
            try:
                fraction = float(m["fraction"])
            except ValueError:
                raise LLMCError(f"bad outlier fraction in format {text!r}", hint="e.g. w3g128+o0.005") from None
            return cls.parse(m["base"]).with_outliers(fraction)
        if name == "fp16":
            return cls(name, None)
        if name in ("w8a8", "w8a8s"):
            return cls(name, Grid(8, 0, sym=True), act8=True, static=name == "w8a8s")
        m = _FORMAT_RE.fullmatch(name)
        bits = int(m["bits"]) if m else 0
        if not m or bits not in (2, 3, 4, 8) or (m["group"] is not None and int(m["group"]) < 8):
            raise LLMCError(f"unknown quantization format {text!r}",
                            hint=f"use one of {', '.join(NAMED)} (or w<bits>g<group>: bits 2, 3, 4, 8; group >= 8)")
        return cls(name, Grid(bits, int(m["group"] or 0), sym=bits == 8))


@dataclass
class Recipe:
    """The format of every quantizable weight (see the module docstring) and the method that rounds them."""

    default: Format | None
    override: dict[str, Format | None] = field(default_factory=dict)
    method: str = "rtn"
    reorder: bool = False  # group outlier input channels (``outliers.reorder``) before quantizing

    def __post_init__(self):
        if self.method not in METHODS:
            raise LLMCError(f"unknown quantization method {self.method!r}", hint=f"use one of {', '.join(METHODS)}")

    @classmethod
    def of(cls, quant: str | None = None, recipe: str | Path | dict | None = None, method: str = "rtn") -> Recipe:
        """From ``--quant FORMAT`` and/or ``--recipe FILE`` (a path or the parsed dict); the file's
        default wins over ``quant`` only when ``quant`` is not given."""
        data = _read_recipe(recipe) if recipe is not None else {}
        unknown = set(data) - {"default", "override", "method", "outliers", "reorder"}
        if unknown:
            raise LLMCError(f"unknown recipe keys {sorted(unknown)}",
                            hint="a recipe has 'default', 'override', 'method', 'outliers' and 'reorder'")
        default = quant if quant is not None else data.get("default")
        if not isinstance(data.get("override", {}), dict):
            raise LLMCError("the recipe's 'override' must map node globs or op kinds to formats")
        fraction = data.get("outliers", 0.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise LLMCError(f"the recipe's 'outliers' must be a fraction, got {fraction!r}", hint='"outliers": 0.005')

        def parse(value):
            fmt = _format(value)
            if fmt is None or fmt.outliers or not fraction or fmt.grid is None or fmt.act8:
                return fmt
            return fmt.with_outliers(fraction)

        override = {str(k): parse(v) for k, v in data.get("override", {}).items()}
        return cls(parse(default) if default is not None else None, override, data.get("method", method),
                   bool(data.get("reorder", False)))

    def format_of(self, node: Node) -> Format | None:
        names = aliases(node.meta.origin or node.name, node.op)
        for key, fmt in self.override.items():
            if key not in WEIGHT_SLOT and any(fnmatch.fnmatchcase(n, key) for n in names):
                return fmt
        if node.op in self.override:
            return self.override[node.op]
        return self.default

    @property
    def awq(self) -> bool:
        return self.method.startswith("awq")

    def to_json(self) -> dict:
        def name(f):
            return KEEP if f is None else f.label

        out = {"default": name(self.default), "override": {k: name(v) for k, v in self.override.items()},
               "method": self.method}
        return {**out, "reorder": True} if self.reorder else out

    @property
    def formats(self) -> set[str]:
        return {f.name for f in [self.default, *self.override.values()] if f is not None}


def aliases(origin: str, op: str = "") -> list[str]:
    """A node's names for recipe globs: its origin, for GGUF names the Hugging Face one, and
    ``lm_head`` for an output projection that reads the (tied) embedding table."""
    out = [origin]
    if op == "linear" and origin in ("token_embd", "model.embed_tokens"):
        out.append("lm_head")
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", origin)
    if m and m[2] in _GGUF_ALIASES:
        out.append(f"model.layers.{m[1]}.{_GGUF_ALIASES[m[2]]}")
    elif origin in ("token_embd", "output"):
        out.append("model.embed_tokens" if origin == "token_embd" else "lm_head")
    return out


def quantizable(graph: Graph) -> list[Node]:
    """Nodes whose weight a format can apply to: a ``linear`` reading a 2-D constant, and an
    ``embedding`` of the token ids (``input_ids``) or of a table a linear also reads (tied weights).
    Other tables (rotary sin/cos, position embeddings) stay float."""
    out = []
    for node in graph.nodes:
        slot = WEIGHT_SLOT.get(node.op)
        if slot is None or not node.inputs[slot].is_const or node.inputs[slot].type.rank != 2:
            continue
        if node.op == "embedding" and node.inputs[1].name != "input_ids" \
                and not any(user.op == "linear" for user in node.inputs[0].users):
            continue
        out.append(node)
    return out


def check_recipe(graph: Graph, recipe: Recipe, target_formats: set[str] | None, target: str) -> dict[str, Format]:
    """The format of each quantizable node (by name); refuses what cannot work before any calibration."""
    nodes = quantizable(graph)
    if target_formats is not None:
        bad = sorted(recipe.formats - target_formats)
        if bad:
            layers = [node.meta.origin or node.name for node in nodes
                      if (fmt := recipe.format_of(node)) is not None and fmt.name in bad]
            where = f" (layer {layers[0]}" + (f" and {len(layers) - 1} more)" if len(layers) > 1 else ")") if layers else ""
            raise LLMCError(f"target {target} cannot run the formats {bad}{where}",
                            hint=f"it runs {', '.join(sorted(target_formats)) or 'none'} (see `llmc targets`)")
    names = [n for node in nodes for n in aliases(node.meta.origin or node.name, node.op)]
    for key in (k for k in recipe.override if k not in WEIGHT_SLOT):
        if not any(fnmatch.fnmatchcase(n, key) for n in names):
            raise LLMCError(f"the recipe's override {key!r} matches no quantizable weight of {graph.name}",
                            hint=f"names look like {', '.join(names[:3]) or '-'}")
    chosen = {}
    for node in nodes:
        fmt = recipe.format_of(node)
        if fmt is None:
            continue
        if fmt.act8 and node.op == "embedding":
            fmt = Format("w8", fmt.grid)  # a table lookup has no activations to quantize
        chosen[node.name] = fmt
    return chosen


def _format(value) -> Format | None:
    if value is None or value == KEEP:
        return None
    if not isinstance(value, str):
        raise LLMCError(f"a quantization format must be a name, got {value!r}", hint=f"use one of {', '.join(NAMED)}")
    return Format.parse(value)


def _read_recipe(recipe) -> dict:
    if isinstance(recipe, dict):
        return recipe
    if str(recipe).lstrip().startswith("{"):  # the JSON itself
        try:
            data = json.loads(str(recipe))
        except json.JSONDecodeError as e:
            raise LLMCError(f"the recipe is not valid JSON: {e}") from None
        return _read_recipe(data) if isinstance(data, dict) else {}
    path = Path(recipe)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LLMCError(f"recipe file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LLMCError(f"recipe file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise LLMCError(f"recipe file {path} must hold a JSON object", hint='{"default": "w4g128", "override": {...}}')
    return data
