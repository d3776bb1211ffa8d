"""``load_model``: every model form llmc accepts, captured into a verified ``Graph``.

    load_model("tiny-llama")                          # a built-in example (llmc.examples)
    load_model("model.onnx", input_shapes={"x": (1, 128)})
    load_model("program.pt2")                         # torch.export.save'd; nothing else is unpickled
    load_model("path/to/hf-folder", dynamic={"input_ids": {1: "seq"}})
    load_model(module, example_inputs=(x,))           # nn.Module, ExportedProgram, fx.GraphModule,
    load_model(onnx_model_proto)                      # onnx.ModelProto, transformers model, llmc Graph

A bare name (no path separator) that names a built-in example is the example, even if a file
of that name exists; write ``./NAME`` for the file. Frontends are imported only when needed.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmc.errors import InputError, ModelLoadError, ShapeError
from llmc.ir import shapes as S
from llmc.ir.graph import Graph

InputShapes = Mapping[str, Sequence[int | str]]
Dynamic = Mapping[str, Mapping[int, str]]


def load_model(model, *, example_inputs=None, input_shapes: InputShapes | None = None,
               dynamic: Dynamic | None = None) -> Graph:
    """Capture ``model`` into a verified llmc ``Graph`` whose inputs and outputs carry the model's names.

    ``input_shapes`` fixes input sizes (ONNX free dims; new example inputs of that shape for torch
    models; batch and sequence length for Hugging Face models). ``dynamic`` maps an input name to
    ``{axis: symbol}``. Raises ``ModelLoadError`` for anything that is not a readable model.
    """
    if isinstance(model, Graph):
        if input_shapes or dynamic:
            raise InputError("input shapes and dynamic dims cannot be applied to an already captured Graph",
                             hint="capture the source model again with them")
        model.verify()
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_named(model, input_shapes, dynamic)
    return _load_object(model, example_inputs, input_shapes, dynamic)


def _load_named(model: str | os.PathLike, input_shapes, dynamic) -> Graph:
    from llmc.examples import EXAMPLES, GGUF_EXAMPLES

    text = os.fspath(model)
    names = ", ".join([*EXAMPLES, *GGUF_EXAMPLES])
    if isinstance(model, str) and text in EXAMPLES:
        return _load_example(text, input_shapes, dynamic)
    if isinstance(model, str) and text in GGUF_EXAMPLES:
        return _load_gguf(GGUF_EXAMPLES[text](), input_shapes, dynamic)
    path = Path(text)
    if path.is_dir():
        return _load_folder(path, input_shapes, dynamic)
    if path.is_file():
        return _load_file(path, input_shapes, dynamic)
    if path.suffix or os.sep in text or "/" in text:
        raise ModelLoadError(f"{text} does not exist", hint="check the path (it is relative to the current folder)")
    raise ModelLoadError(f"{text} is neither a file or folder here nor a built-in example",
                         hint=f"give a model file or folder, or one of: {names}")


def _load_gguf(path: Path, input_shapes, dynamic) -> Graph:
    """A GGUF file's generation step graph (``llmc.frontend.decoder``): its inputs are fixed."""
    from llmc.frontend.causal import load_causal_lm

    if input_shapes or dynamic:
        raise InputError(f"{path.name} is an LLM captured as its generation step, whose inputs are fixed",
                         hint="leave out --input-shape and --dynamic")
    return load_causal_lm(path).graph


def _load_example(name: str, input_shapes, dynamic) -> Graph:
    from llmc.examples import build
    from llmc.frontend.torch import from_torch

    module, inputs = build(name)
    if input_shapes:
        inputs = _resized_inputs(module.forward, inputs, input_shapes)
    return from_torch(module, inputs, dynamic=dynamic, name=name)


def _load_folder(path: Path, input_shapes, dynamic) -> Graph:
    from llmc.frontend.hf import from_hf, is_hf_folder

    if (path / "manifest.json").is_file():
        raise ModelLoadError(f"{path} is an llmc artifact, not a model",
                             hint="use `llmc run` / `llmc inspect` on it, or llmc.load() in Python")
    if not is_hf_folder(path):
        raise ModelLoadError(
            f"folder {path} is not a model (no Hugging Face config.json in it)",
            hint="point at a Hugging Face model folder (config.json + *.safetensors), a .onnx or a .pt2 file",
        )
    return from_hf(path, **_hf_sizes(input_shapes), dynamic=dynamic)


def _load_file(path: Path, input_shapes, dynamic) -> Graph:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from llmc.frontend.onnx import from_onnx

        return from_onnx(path, input_shapes=input_shapes, dynamic=dynamic)
    if suffix == ".gguf":
        return _load_gguf(path, input_shapes, dynamic)
    if suffix == ".pt2":
        from llmc.frontend.torch import from_torch

        return _checked(from_torch(_read_pt2(path), dynamic=dynamic, name=path.stem), input_shapes)
    raise ModelLoadError(f"{path}: llmc does not read {suffix or 'extension-less'} files",
                         hint="give a .onnx, .pt2 or .gguf file, or a Hugging Face model folder")


def _read_pt2(path: Path):
    """``torch.export.load``: the only unpickling llmc does for a .pt2 (weights_only inside)."""
    import torch

    try:
        return torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 -- torch raises many types for a damaged archive; all mean "unreadable"
        raise ModelLoadError(f"{path} is not a readable torch.export archive ({type(e).__name__}: {e})",
                             hint="re-create it with torch.export.save") from None


def _load_object(obj, example_inputs, input_shapes, dynamic) -> Graph:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, (torch.nn.Module, torch.export.ExportedProgram)):
        return _load_torch_object(obj, example_inputs, input_shapes, dynamic)
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(obj, onnx.ModelProto):
        from llmc.frontend.onnx import from_onnx

        return from_onnx(obj, input_shapes=input_shapes, dynamic=dynamic)
    raise ModelLoadError(
        f"llmc cannot load a {type(obj).__module__}.{type(obj).__qualname__}",
        hint="give an nn.Module, ExportedProgram, fx.GraphModule, onnx.ModelProto, a model path or an example name",
    )


def _load_torch_object(obj, example_inputs, input_shapes, dynamic) -> Graph:
    import torch

    if isinstance(obj, torch.export.ExportedProgram):
        from llmc.frontend.torch import from_torch

        return _checked(from_torch(obj, dynamic=dynamic), input_shapes)
    if example_inputs is None and _is_hf_model(obj):
        from llmc.frontend.hf import from_hf

        return from_hf(obj, **_hf_sizes(input_shapes), dynamic=dynamic)
    if example_inputs is None:
        raise InputError(f"capturing a {type(obj).__name__} needs example inputs",
                         hint="pass example_inputs=(tensor, ...) in the order forward() takes them")
    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if input_shapes:
        inputs = _resized_inputs(obj.forward, inputs, input_shapes)
    if isinstance(obj, torch.fx.GraphModule):
        if dynamic:
            raise InputError("dynamic dims are not supported for an fx.GraphModule",
                             hint="capture the module with torch.export (pass the nn.Module) to get symbolic dims")
        from llmc.frontend.fx import from_fx

        return from_fx(obj, inputs)
    from llmc.frontend.torch import from_torch

    return from_torch(obj, inputs, dynamic=dynamic)


def _is_hf_model(obj) -> bool:
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(obj, transformers.PreTrainedModel)


# -- input shapes ---------------------------------------------------------------------------


def _checked(graph: Graph, input_shapes) -> Graph:
    """``graph`` if ``input_shapes`` fit it: an exported program's shapes were fixed at export,
    so given shapes can only confirm them (or pick sizes for its symbolic dims)."""
    names = [v.name for v in graph.inputs]
    unknown = sorted(set(input_shapes or {}) - set(names))
    if unknown:
        raise InputError(f"the model has no input(s) {unknown}", hint=f"its inputs are {names}")
    env: dict[str, int] = {}
    for v in graph.inputs:
        if v.name in (input_shapes or {}):
            try:
                S.bind(v.type.shape, _static(v.name, input_shapes[v.name]), env, what=f"input {v.name}")
            except ShapeError as e:
                raise ShapeError(e.what, hint="the program's shapes were fixed when it was exported; export it "
                                              "again with these shapes, or with this axis dynamic") from None
    return graph


def _static(name: str, shape: Sequence) -> tuple[int, ...]:
    if not all(isinstance(d, int) for d in shape):
        raise InputError(f"input shape of {name} has symbolic sizes {list(shape)}",
                         hint="give integer sizes here, and declare symbolic dims with `dynamic` / --dynamic")
    return tuple(shape)


def _hf_sizes(input_shapes) -> dict[str, int]:
    """``batch`` and ``seq`` for ``from_hf``, from shapes given as ``{input_name: (batch, seq)}``."""
    sizes: dict[str, int] = {}
    for name, shape in (input_shapes or {}).items():
        shape = _static(name, shape)
        if len(shape) != 2:
            raise ShapeError(f"input {name} of a Hugging Face language model is [batch, seq], "
                             f"but the given shape {list(shape)} has rank {len(shape)}",
                             hint="give it as BATCHxSEQ, e.g. input_ids=1x128")
        for key, size in zip(("batch", "seq"), shape):
            if sizes.setdefault(key, size) != size:
                raise ShapeError(f"input shapes disagree on {key}: {sizes[key]} and {size} (from {name})",
                                 hint="give every input the same batch and sequence length")
    return sizes


def _resized_inputs(forward, inputs: tuple, input_shapes) -> tuple:
    """``inputs`` with the ones named in ``input_shapes`` replaced by new tensors of those shapes.

    Names are the parameters of ``forward``. New float inputs are N(0, 1), integer inputs are drawn
    from the range the original example used (so ids stay inside the vocabulary), with a fixed seed.
    """
    import torch

    names = [p for p in inspect.signature(forward).parameters][: len(inputs)]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise InputError(f"the model has no input(s) {unknown}", hint=f"its inputs are {names}")
    gen = torch.Generator().manual_seed(0)
    out = []
    for name, x in zip(names, inputs):
        if name not in input_shapes:
            out.append(x)
            continue
        shape = _static(name, input_shapes[name])
        if len(shape) != x.dim():
            raise ShapeError(f"input {name} has rank {x.dim()} {list(x.shape)} in the model, "
                             f"but the given shape {list(shape)} has rank {len(shape)}",
                             hint="give a shape of the model's rank")
        if x.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(x.dtype))
        else:
            low, high = int(x.min()), int(x.max()) + 1
            out.append(torch.randint(low, high, shape, generator=gen).to(x.dtype))
    return tuple(out)
