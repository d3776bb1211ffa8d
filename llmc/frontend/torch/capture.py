"""``nn.Module`` -> ``ExportedProgram`` at the op level llmc imports.

Capture is ``torch.export.export(strict=False)`` in inference mode, followed by
``run_decompositions`` with torch's default table minus the ops llmc keeps first-class
(``KEEP``): ``linear`` stays ``linear`` rather than ``permute + addmm``,
``scaled_dot_product_attention`` stays one op rather than its math, and so on.
"""

from __future__ import annotations

import contextlib
import inspect

import torch

from llmc.errors import InputError, ModelLoadError

aten = torch.ops.aten

# High-level ops that map 1:1 onto llmc ops and must not be decomposed.
KEEP = (
    aten.linear.default, aten.matmul.default, aten.scaled_dot_product_attention.default, aten.layer_norm.default,
    aten.embedding.default, aten.silu.default, aten.gelu.default, aten.softmax.int, aten.log_softmax.int,
    aten.conv2d.default, aten.conv2d.padding, aten.max_pool2d.default, aten.avg_pool2d.default,
    aten.adaptive_avg_pool2d.default, aten._native_batch_norm_legit_no_training.default, aten.hardtanh.default,
    aten.leaky_relu.default, aten.flatten.using_ints, aten.unflatten.int,
)


def decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Core ATen, except the ops in ``KEEP``."""
    table = torch.export.default_decompositions()
    for op in KEEP:
        table.pop(op, None)
    return ep.run_decompositions(table)


def export(
    module: torch.nn.Module,
    args: tuple = (),
    kwargs: dict | None = None,
    dynamic: dict[str, dict[int, str]] | None = None,
) -> torch.export.ExportedProgram:
    """Export ``module`` in eval mode; the axes named in ``dynamic`` get dynamic sizes.

    ``dynamic`` maps ``forward()`` parameter names to ``{axis: symbol name}``; the names are
    given to the IR's symbols later (``import_program``), torch only learns which axes vary.
    """
    kwargs = dict(kwargs or {})
    names = list(_bind(module, args, kwargs))
    unknown = set(dynamic or {}) - set(names)
    if unknown:
        raise InputError(f"dynamic sizes are given for {sorted(unknown)}, which are not inputs of the model",
                         hint=f"the model's inputs are {names}")
    shapes = {n: {axis: torch.export.Dim.DYNAMIC for axis in (dynamic or {}).get(n, {})} or None for n in names}
    with eval_mode(module), torch.no_grad():
        try:
            return torch.export.export(module, tuple(args), kwargs, dynamic_shapes=shapes, strict=False)
        except Exception as e:  # torch raises many types here; each becomes one clear error
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"torch.export could not capture {type(module).__name__}: {first}",
                hint="check that the example inputs run through the model; dynamic axes need example sizes >= 2",
            ) from e


def _bind(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict:
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
    except TypeError as e:
        raise InputError(f"the example inputs do not fit {type(module).__name__}.forward: {e}") from None
    return bound.arguments


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Run the block with ``module`` in eval mode (dropout off, batch norm on running statistics)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training
