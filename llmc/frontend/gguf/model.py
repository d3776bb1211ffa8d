"""A GGUF file as a decoder: its config from the metadata, its weights by role, its tokenizer.

llama.cpp names tensors ``token_embd``, ``blk.N.attn_q`` ...; the roles of
``llmc.frontend.decoder`` map onto them, and node origins keep the GGUF names. Weights stay in
the file (dequantized when read); a Q4_0/Q4_1/Q8_0 tensor keeps its packed bits and its exact
``QuantSpec`` on the weight (``GGUFWeight.raw()`` and ``.spec``), for a quantization pass to keep.

llama.cpp's converter stores Llama's q/k projections with the rows of each head permuted so that
rotary embedding rotates adjacent pairs; the graph uses interleaved rope on the stored rows
instead of un-permuting them (attention scores are the same), so no weight is rewritten.
Qwen2 keeps Hugging Face's layout and rotates halves.
"""

from __future__ import annotations

from pathlib import Path

from llmc.errors import ModelLoadError
from llmc.frontend.decoder import DecoderConfig, Source
from llmc.frontend.gguf.reader import GGUFFile

# architecture -> rotates adjacent pairs (llama.cpp's "norm" rope) rather than halves ("neox")
ARCHITECTURES = {"llama": True, "qwen2": False}

_ROLES = {
    "embed": "token_embd", "norm": "output_norm", "lm_head": "output",
    "attn_norm": "attn_norm", "q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
    "ffn_norm": "ffn_norm", "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down",
}


def gguf_config(f: GGUFFile) -> DecoderConfig:
    """The decoder config of a GGUF file; ``ModelLoadError`` for architectures llmc does not build."""
    arch = f.architecture
    if arch not in ARCHITECTURES:
        raise ModelLoadError(f"{f.path.name} holds a {arch!r} model; llmc builds GGUF models of the "
                             f"architectures {', '.join(ARCHITECTURES)}",
                             hint="convert a supported model, or load the original Hugging Face folder")
    heads = int(f.get(f"{arch}.attention.head_count"))
    hidden = int(f.get(f"{arch}.embedding_length"))
    embed = f.tensors.get("token_embd.weight")
    vocab = int(f.get(f"{arch}.vocab_size", embed.shape[0] if embed is not None else 0))
    scaling = f.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", "linear") or float(f.get(f"{arch}.rope.scaling.factor", 1.0)) != 1.0:
        raise ModelLoadError(f"{f.path.name} uses rope scaling {scaling!r}, which llmc does not build yet",
                             hint="use a model without rope scaling")
    eos = f.get("tokenizer.ggml.eos_token_id", None)
    bos = f.get("tokenizer.ggml.bos_token_id", None)
    return DecoderConfig(
        arch=arch, layers=int(f.get(f"{arch}.block_count")), hidden=hidden, heads=heads,
        kv_heads=int(f.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(f.get(f"{arch}.attention.key_length", f.get(f"{arch}.rope.dimension_count", hidden // heads))),
        ffn=int(f.get(f"{arch}.feed_forward_length")), vocab=vocab,
        norm_eps=float(f.get(f"{arch}.attention.layer_norm_rms_epsilon")),
        rope_theta=float(f.get(f"{arch}.rope.freq_base", 10000.0)), rope_interleaved=ARCHITECTURES[arch],
        max_positions=int(f.get(f"{arch}.context_length", 2048)),
        qkv_bias="blk.0.attn_q.bias" in f.tensors,
        bos_token_id=None if bos is None else int(bos), eos_token_ids=() if eos is None else (int(eos),),
    )


def gguf_weights(f: GGUFFile):
    """``role -> Source`` for ``decoder_graph``: the GGUF tensor of each role, or None."""

    def lookup(role: str) -> Source | None:
        parts = role.split(".")
        if parts[0] == "layers":
            base = parts[2].removesuffix("_bias")
            name = f"blk.{parts[1]}.{_ROLES[base]}.{'bias' if base != parts[2] else 'weight'}"
        else:
            name = f"{_ROLES[role]}.weight"
        weight = f.tensors.get(name)
        return None if weight is None else Source(weight, name)

    return lookup


def save_gguf_tokenizer(path: Path, out: Path) -> None:
    """The file's tokenizer (vocabulary, merges, chat template) as Hugging Face tokenizer files in ``out``."""
    from transformers import PreTrainedTokenizerFast  # AutoTokenizer also parses the file for a config: 3x slower

    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, OSError) as e:
        raise ModelLoadError(f"cannot read the tokenizer of {path.name}: {str(e).splitlines()[0]}",
                             hint="generate from token ids (--prompt-ids) or use a GGUF file with a tokenizer") from None
    tokenizer.save_pretrained(str(out))
