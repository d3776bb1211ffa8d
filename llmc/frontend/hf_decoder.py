"""Llama-family Hugging Face models (folders and transformers objects) as decoders.

``llmc.frontend.decoder`` builds their generation graph from the config and the weights by
name (``model.layers.3.self_attn.q_proj.weight``); node origins are the module paths. Weights
of a folder stay memory-mapped in its safetensors files; an object's stay in its tensors. The step
graph computes in float32: float16 and bfloat16 weights are widened one tensor at a time when read.
"""

from __future__ import annotations

from llmc.errors import ModelLoadError
from llmc.frontend.decoder import DecoderConfig, Source
from llmc.ir.dtypes import DType
from llmc.ir.tensor import CastWeight, TorchWeight, Weight

FAMILIES = ("llama", "mistral", "qwen2")

_LAYER = {
    "attn_norm": "input_layernorm", "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
    "o": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm", "gate": "mlp.gate_proj",
    "up": "mlp.up_proj", "down": "mlp.down_proj",
}
_TOP = {"embed": "model.embed_tokens", "norm": "model.norm", "lm_head": "lm_head"}


def is_decoder_config(config) -> bool:
    return getattr(config, "model_type", None) in FAMILIES


def hf_config(config) -> DecoderConfig:
    """The decoder config of a transformers config of a Llama-family model."""
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise ModelLoadError(f"llmc builds generation graphs for {', '.join(FAMILIES)} models, not {family!r}",
                             hint="compile it without --generation to get its forward graph")
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelLoadError(f"the model uses rope scaling {rope.get('rope_type', rope.get('type'))!r}, "
                             "which llmc does not build yet", hint="use a model without rope scaling")
    heads = config.num_attention_heads
    eos = config.eos_token_id
    return DecoderConfig(
        arch=family, layers=config.num_hidden_layers, hidden=config.hidden_size, heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        ffn=config.intermediate_size, vocab=config.vocab_size, norm_eps=float(config.rms_norm_eps),
        rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))), rope_interleaved=False,
        max_positions=config.max_position_embeddings, qkv_bias=family == "qwen2",
        bos_token_id=config.bos_token_id,
        eos_token_ids=tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,)),
    )


def hf_weights(tensors: dict[str, Weight], tied: bool):
    """``role -> Source`` over a model's weights keyed by their state-dict names."""

    def lookup(role: str) -> Source | None:
        parts = role.split(".")
        if parts[0] == "layers":
            base = parts[2].removesuffix("_bias")
            name = f"model.layers.{parts[1]}.{_LAYER[base]}.{'bias' if base != parts[2] else 'weight'}"
        elif role == "lm_head" and tied:
            return None
        else:
            name = f"{_TOP[role]}.weight"
        weight = tensors.get(name)
        return None if weight is None else Source(_float32(weight), name)

    return lookup


def _float32(weight: Weight) -> Weight:
    """A 16-bit float weight read as float32 (converted when read, so nothing is widened ahead)."""
    return CastWeight(weight, DType.f32) if weight.dtype in (DType.f16, DType.bf16) else weight


def object_weights(model) -> dict[str, Weight]:
    return {name: TorchWeight(t) for name, t in model.state_dict().items()}
