"""The Hugging Face frontend: a model folder or a ``transformers`` model -> llmc ``Graph``.

Capture goes through torch.export, never the network. A folder is read with transformers'
config classes only; the model is built with its parameters on the ``meta`` device (buffers
such as rotary tables stay real), exported there, and each parameter constant then points
straight into the folder's safetensors files (memory-mapped, nothing copied). A folder with a
``config.json`` and no weights is captured the same way with shape-only ``MetaWeight``s, so a
7B model can be inspected without downloading or allocating its weights.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
from pathlib import Path

import torch

from llmc.errors import InputError, ModelLoadError, UnsafeModelError
from llmc.frontend.torch.capture import decompose, export
from llmc.frontend.torch.importer import import_program
from llmc.frontend.torch_dtypes import dtype_from_torch
from llmc.ir import Graph, MetaWeight, TensorType
from llmc.ir.tensor import TorchWeight, Weight, read_safetensors

# The wrapper's attribute that holds the model; removed again from module paths and weight names.
PREFIX = "model"
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class MainOutputs(torch.nn.Module):
    """Calls a transformers model without KV cache; returns its tensor outputs by name.

    ``{"logits": ...}`` for causal LMs, ``{"last_hidden_state": ..., "pooler_output": ...}`` for
    BERT-likes. A KV-cache capture would add ``past_key_values`` here, flattened to tensors.
    """

    INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "pixel_values")

    def __init__(self, model):
        super().__init__()
        self.model = model
        self._no_cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, pixel_values=None):
        given = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     position_ids=position_ids, pixel_values=pixel_values)
        out = self.model(**{k: v for k, v in given.items() if v is not None}, **self._no_cache, return_dict=True)
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def is_transformers_model(model) -> bool:
    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def export_wrapper(model, example_inputs: tuple):
    """(module, args, kwargs, prefix) that export ``model`` called with ``example_inputs``."""
    try:
        names = list(inspect.signature(model.forward).bind_partial(*example_inputs).arguments)
    except TypeError as e:
        raise InputError(f"the example inputs do not fit {type(model).__name__}.forward: {e}") from None
    unknown = [n for n in names if n not in MainOutputs.INPUTS]
    if unknown:
        raise InputError(f"llmc cannot pass {unknown} to a Hugging Face model",
                         hint=f"give only {', '.join(MainOutputs.INPUTS)}")
    return MainOutputs(model), (), dict(zip(names, example_inputs)), PREFIX


def is_hf_folder(path) -> bool:
    """True if ``path`` is a folder holding a ``config.json`` (a Hugging Face model folder)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def from_hf(model, *, batch: int = 1, seq: int = 16, dynamic: dict[str, dict[int, str]] | None = None) -> Graph:
    """Capture a Hugging Face model folder (or a ``PreTrainedModel``) into a verified llmc graph.

    The example inputs are ``input_ids`` of shape ``[batch, seq]``, plus an all-ones
    ``attention_mask`` for models that are not causal LMs. ``dynamic`` names symbolic sizes
    (``{"input_ids": {1: "seq"}}``); the attention mask gets the same ones. A folder's weights
    stay in its files; a folder without weights gives ``MetaWeight`` constants.
    """
    if isinstance(model, torch.nn.Module) and not is_transformers_model(model):
        raise InputError(f"{type(model).__name__} is not a transformers model",
                         hint="capture it with llmc.frontend.torch.from_torch")
    if is_transformers_model(model):
        device = next(model.parameters()).device
        inputs, dynamic = _example_inputs(_is_causal(model.config, type(model)), batch, seq, dynamic, device)
        ep = export(MainOutputs(model), (), inputs, dynamic)
        return import_program(decompose(ep), name=type(model).__name__, dynamic=dynamic, module_prefix=PREFIX)
    return _from_folder(Path(model), batch, seq, dynamic)


def _from_folder(folder: Path, batch: int, seq: int, dynamic) -> Graph:
    config = read_config(folder)
    files = folder_weights(folder)
    cls = _model_class(config)
    module, weights = _build_without_parameters(cls, config, files)
    inputs, dynamic = _example_inputs(_is_causal(config, None), batch, seq, dynamic, torch.device("meta"))
    ep = export(MainOutputs(module), (), inputs, dynamic)
    name = (config.architectures or [type(module).__name__])[0]
    return import_program(decompose(ep), name=name, dynamic=dynamic, weight_for=weights.lookup, module_prefix=PREFIX)


# -- reading a folder -------------------------------------------------------------------------


def read_config(folder: Path):
    """The transformers config of a model folder; ``ModelLoadError`` when it has none or it is unreadable."""
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder", hint="give a Hugging Face model folder (with config.json)")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a Hugging Face model folder: it has no config.json",
            hint="point at the folder that holds config.json and the *.safetensors weights, or at an .onnx/.pt2 file",
        )
    try:
        json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelLoadError(f"{folder / 'config.json'} is not valid JSON ({e})",
                             hint="re-download the model") from None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        raise ModelLoadError(
            f"transformers cannot read {folder / 'config.json'}: {str(e).splitlines()[0]}",
            hint="check its model_type; models that need trust_remote_code are not loaded",
        ) from None


def _is_causal(config, cls) -> bool:
    names = list(config.architectures or []) + ([cls.__name__] if cls is not None else [])
    return any(n.endswith(_CAUSAL_SUFFIXES) for n in names)


def _model_class(config):
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModelForCausalLM if _is_causal(config, None) else AutoModel


def folder_weights(folder: Path) -> dict[str, Weight]:
    """Every tensor in the folder's safetensors files (memory-mapped), or ``pytorch_model.bin``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise ModelLoadError(f"{index} is not a valid safetensors index ({e})",
                                 hint="re-download the model") from None
    else:
        names = sorted(p.name for p in folder.glob("*.safetensors"))
    weights: dict[str, Weight] = {}
    for name in names:
        weights.update(read_safetensors(_inside(folder, name)))
    if not names and (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True)
        weights = {k: TorchWeight(v) for k, v in state.items()}
    return weights


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if path.parent != folder.resolve():
        raise UnsafeModelError(f"the weights index of {folder} points outside the folder: {name!r}",
                               hint="weight files must sit next to config.json")
    if not path.is_file():
        raise ModelLoadError(f"weight file {name} listed in {folder} is missing", hint="re-download the model")
    return path


# -- building without weights -----------------------------------------------------------------


class _FolderWeights:
    """Where each constant of a folder's model comes from: its file, a real buffer, or nowhere (meta)."""

    def __init__(self, files: dict[str, Weight], buffers: dict[str, torch.Tensor], persistent: set[str],
                 aliases: dict[str, list[str]], base_prefix: str):
        self.files = files
        self.buffers = buffers
        self.persistent = persistent
        self.aliases = aliases
        self.base_prefix = base_prefix

    def find(self, target: str) -> Weight | None:
        for name in self.aliases.get(target, [target]):
            for key in (name, f"{self.base_prefix}.{name}", name.removeprefix(f"{self.base_prefix}.")):
                if key in self.files:
                    return self.files[key]
        return None

    def lookup(self, target: str, tensor: torch.Tensor) -> Weight:
        if target in self.buffers and (target not in self.persistent or self.find(target) is None):
            return TorchWeight(self.buffers[target])
        found = self.find(target)
        if found is not None:
            return found
        return MetaWeight(TensorType(dtype_from_torch(tensor.dtype), tuple(tensor.shape)))


def _build_without_parameters(cls, config, files: dict[str, Weight]):
    """The model with parameters on meta and buffers real, then all on meta; and its weight sources."""
    with _parameters_on_meta():
        model = cls.from_config(config, attn_implementation="sdpa")
    model.eval()
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    persistent = set(model.state_dict()) & set(buffers)
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    by_name = {n: names for names in aliases.values() for n in names}
    weights = _FolderWeights(files, buffers, persistent, by_name, getattr(model, "base_model_prefix", ""))
    if files:
        missing = [names[0] for names in aliases.values() if weights.find(names[0]) is None]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ModelLoadError(f"the folder's weights lack {len(missing)} parameter(s) of {cls.__name__}: {shown}",
                                 hint="load the model with transformers and pass the model object instead")
    return model.to("meta"), weights


@contextlib.contextmanager
def _parameters_on_meta():
    """Every ``nn.Parameter`` registered inside goes to the meta device (no memory, no init work)."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _example_inputs(causal: bool, batch: int, seq: int, dynamic, device):
    """``input_ids`` (and ``attention_mask`` for encoders), and the dynamic spec extended to the mask."""
    dynamic = {k: dict(v) for k, v in (dynamic or {}).items()}
    sizes = [batch, seq]
    for axis in dynamic.get("input_ids", {}):
        sizes[axis] = max(sizes[axis], 2)  # torch fixes sizes 0 and 1; a dynamic axis needs an example >= 2
    inputs = {"input_ids": torch.zeros(sizes, dtype=torch.long, device=device)}
    if not causal:
        inputs["attention_mask"] = torch.ones(sizes, dtype=torch.long, device=device)
        if "input_ids" in dynamic:
            dynamic.setdefault("attention_mask", dynamic["input_ids"])
    return inputs, dynamic or None
