"""The torch frontend: ``nn.Module`` or ``ExportedProgram`` -> llmc ``Graph`` through torch.export.

    graph = from_torch(model, (input_ids,), dynamic={"input_ids": {1: "seq"}})

The pieces: ``capture`` (export and decompositions), ``importer`` (the graph walk), ``ops``
(one converter per ATen op), ``symbols`` (torch's size symbols as llmc dims).
"""

from __future__ import annotations

import torch

from llmc.frontend.torch.capture import decompose, export
from llmc.frontend.torch.importer import import_program
from llmc.ir import Graph

__all__ = ["from_torch"]


def from_torch(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: tuple = (),
    *,
    dynamic: dict[str, dict[int, str]] | None = None,
    name: str | None = None,
) -> Graph:
    """Capture ``model`` into a verified llmc graph.

    ``model`` is an ``nn.Module`` (exported with ``example_inputs``, in eval mode) or an
    ``ExportedProgram`` (``llmc.frontend.load`` reads ``.pt2`` files). Hugging Face models are called
    with ``use_cache=False`` and their tensor outputs named as in the model's output
    (``logits``, ``last_hidden_state``). ``dynamic`` names symbolic sizes by input and axis:
    ``{"input_ids": {1: "seq"}}``. Graph inputs and outputs carry the model's names.
    Raises ``UnsupportedOpError`` listing every op llmc cannot convert, with module paths.
    """
    prefix = ""
    if isinstance(model, torch.export.ExportedProgram):
        ep = model
        name = name or "main"
    else:
        name = name or type(model).__name__
        module, args, kwargs, prefix = _prepare(model, tuple(example_inputs))
        ep = export(module, args, kwargs, dynamic)
    return import_program(decompose(ep), name=name, dynamic=dynamic, module_prefix=prefix)


def _prepare(model: torch.nn.Module, example_inputs: tuple):
    """(module, args, kwargs, module prefix) to export: HF models go through their export wrapper."""
    from llmc.frontend import hf

    inputs = _on_device_of(model, example_inputs)
    if hf.is_transformers_model(model):
        return hf.export_wrapper(model, inputs)
    return model, inputs, {}, ""


def _on_device_of(model: torch.nn.Module, inputs: tuple) -> tuple:
    """Inputs moved to the meta device when the model lives there (weightless capture)."""
    params = list(model.parameters())
    if params and all(p.is_meta for p in params):
        return tuple(x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs)
    return inputs
