"""``load_causal_lm``: a decoder-only LLM as a generation step graph, its config and its tokenizer.

    lm = load_causal_lm("smollm2-135m")             # built-in example (a GGUF file)
    lm = load_causal_lm("model.gguf", max_seq_len=1024)
    lm = load_causal_lm("path/to/llama-folder")     # Hugging Face folder of a Llama-family model
    lm = load_causal_lm(transformers_model)         # LlamaForCausalLM, Qwen2ForCausalLM, ...

See ``llmc.frontend.decoder`` for the graph. ``max_seq_len`` sizes the preallocated KV cache
(default: the model's context length, capped at ``DEFAULT_MAX_SEQ_LEN``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmc.errors import InputError, ModelLoadError
from llmc.frontend.decoder import DecoderConfig, decoder_graph
from llmc.ir.graph import Graph

DEFAULT_MAX_SEQ_LEN = 2048
DEFAULT_PREFILL_CHUNK = 256


@dataclass
class CausalLM:
    """A generation step graph and what a generation loop needs beside it.

    ``save_tokenizer(folder)`` writes Hugging Face tokenizer files; None when the model came
    without a tokenizer (generation then works from token ids).
    """

    graph: Graph
    config: DecoderConfig
    max_seq_len: int
    save_tokenizer: Callable[[Path], None] | None = None


def is_gguf(model) -> bool:
    return isinstance(model, (str, os.PathLike)) and (Path(model).suffix.lower() == ".gguf" or _gguf_in(Path(model)))


def load_causal_lm(model, *, max_seq_len: int | None = None, all_logits: bool = False) -> CausalLM:
    """The generation graph of ``model`` (see the module docstring); ``ModelLoadError`` if it is not
    a decoder-only LLM llmc can build one for."""
    from llmc.examples import GGUF_EXAMPLES

    if isinstance(model, str) and model in GGUF_EXAMPLES:
        model = GGUF_EXAMPLES[model]()
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelLoadError(f"{path} does not exist", hint="check the path")
        if is_gguf(path):
            return _from_gguf(_gguf_in(path) or path, max_seq_len, all_logits)
        return _from_hf_folder(path, max_seq_len, all_logits)
    transformers = sys.modules.get("transformers")
    if transformers is not None and isinstance(model, transformers.PreTrainedModel):
        return _from_hf_object(model, max_seq_len, all_logits)
    raise ModelLoadError(f"llmc builds generation graphs from GGUF files, Hugging Face folders and transformers "
                         f"models, not from {type(model).__name__}",
                         hint="give a .gguf file, a Llama-family Hugging Face folder or model object")


def _gguf_in(path: Path) -> Path | None:
    """The one .gguf file in a folder without a config.json, if that is what ``path`` is."""
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise ModelLoadError(f"folder {path} holds {len(found)} GGUF files", hint="name the .gguf file to use")
    return found[0] if found else None


def _cache_length(config: DecoderConfig, max_seq_len: int | None) -> int:
    if max_seq_len is None:
        return min(config.max_positions, DEFAULT_MAX_SEQ_LEN)
    if not 1 <= max_seq_len <= config.max_positions:
        raise InputError(f"--max-seq-len {max_seq_len} is outside 1..{config.max_positions}, the model's context length",
                         hint=f"give at most {config.max_positions}")
    return max_seq_len


def _from_gguf(path: Path, max_seq_len, all_logits) -> CausalLM:
    from llmc.frontend.gguf import read_gguf
    from llmc.frontend.gguf.model import gguf_config, gguf_weights, save_gguf_tokenizer

    f = read_gguf(path)
    config = gguf_config(f)
    length = _cache_length(config, max_seq_len)
    graph = decoder_graph(config, gguf_weights(f), name=path.stem, max_seq_len=length, all_logits=all_logits)
    tokenizer = (lambda out: save_gguf_tokenizer(path, out)) if "tokenizer.ggml.tokens" in f.metadata else None
    return CausalLM(graph, config, length, tokenizer)


def _from_hf_folder(folder: Path, max_seq_len, all_logits) -> CausalLM:
    from llmc.frontend.hf import folder_weights, read_config
    from llmc.frontend.hf_decoder import hf_config, hf_weights

    hf = read_config(folder)
    config = hf_config(hf)
    length = _cache_length(config, max_seq_len)
    lookup = hf_weights(folder_weights(folder), bool(getattr(hf, "tie_word_embeddings", False)))
    graph = decoder_graph(config, lookup, name=folder.name, max_seq_len=length, all_logits=all_logits)
    return CausalLM(graph, config, length, _folder_tokenizer(folder))


def _from_hf_object(model, max_seq_len, all_logits) -> CausalLM:
    from llmc.frontend.hf_decoder import hf_config, hf_weights, object_weights

    config = hf_config(model.config)
    length = _cache_length(config, max_seq_len)
    lookup = hf_weights(object_weights(model), bool(getattr(model.config, "tie_word_embeddings", False)))
    graph = decoder_graph(config, lookup, name=type(model).__name__, max_seq_len=length, all_logits=all_logits)
    return CausalLM(graph, config, length)


def _folder_tokenizer(folder: Path) -> Callable[[Path], None] | None:
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None

    def save(out: Path) -> None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(folder), local_files_only=True).save_pretrained(str(out))

    return save


def is_generation_model(model) -> bool:
    """True for what ``llmc compile`` turns into a generation artifact by default: GGUF files and
    the built-in LLM examples."""
    from llmc.examples import GGUF_EXAMPLES

    return (isinstance(model, str) and model in GGUF_EXAMPLES) or (is_gguf(model) and Path(model).exists())


TOKENIZER = "tokenizer"


def generation_section(lm: CausalLM, prefill_chunk: int | None, all_logits: bool) -> Callable[[Path], dict]:
    """The artifact's ``generation`` manifest section; writes the tokenizer files into ``tokenizer/``.

    ``prefill_chunk`` defaults to ``DEFAULT_PREFILL_CHUNK`` tokens, or the whole cache if shorter."""
    if prefill_chunk is None:
        prefill_chunk = min(DEFAULT_PREFILL_CHUNK, lm.max_seq_len)
    if not 1 <= prefill_chunk <= lm.max_seq_len:
        raise InputError(f"--prefill-chunk {prefill_chunk} is outside 1..{lm.max_seq_len} (the cache length)",
                         hint="give a chunk no longer than --max-seq-len")
    c = lm.config

    def write(folder: Path) -> dict:
        if lm.save_tokenizer is not None:
            lm.save_tokenizer(folder / TOKENIZER)
        return {
            "layers": c.layers, "cache_shape": [c.kv_heads, lm.max_seq_len, c.head_dim], "cache_dtype": "float32",
            "prefill_chunk": prefill_chunk, "max_seq_len": lm.max_seq_len, "all_logits": all_logits,
            "eos_token_ids": list(c.eos_token_ids), "bos_token_id": c.bos_token_id,
            "tokenizer": TOKENIZER if lm.save_tokenizer is not None else None, "config": c.to_json(),
        }

    return write
