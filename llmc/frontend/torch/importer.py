"""``ExportedProgram`` (core ATen) -> llmc ``Graph``.

Walks the exported graph once. Parameters, buffers and lifted constants become constants with
lazy storage; user inputs become graph inputs named as in ``forward()``; size arithmetic
(``sym_size``, ``SymInt`` math) is folded into symbolic dims, never emitted as tensors; every
other op goes through its converter (``llmc.frontend.torch.ops``). Each emitted node records
its module path and layer. Unsupported ops are collected over the whole graph and reported
together. After each op the converted types are checked against the types torch computed.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

import torch
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind, OutputKind

from llmc.errors import InputError, ModelLoadError
from llmc.frontend.torch.ops import IGNORED, converter
from llmc.frontend.torch.symbols import DataDependentSize
from llmc.frontend.torch.walker import MISSING, Walker
from llmc.frontend.torch_dtypes import dtype_from_torch
from llmc.ir import Graph, MetaWeight, NodeMeta, TensorType, Value, layer_of
from llmc.ir.tensor import TorchWeight, Weight

WeightSource = Callable[[str, torch.Tensor], Weight]
_SCALARS = (bool, int, float, torch.SymInt, torch.SymFloat, torch.SymBool)


def default_weight(target: str, tensor: torch.Tensor) -> Weight:
    """A parameter's storage: the torch tensor itself (lazy), or shape only for meta tensors."""
    if tensor.is_meta:
        return MetaWeight(TensorType(dtype_from_torch(tensor.dtype), tuple(tensor.shape)))
    return TorchWeight(tensor)


def import_program(
    ep: torch.export.ExportedProgram,
    *,
    name: str = "main",
    dynamic: dict[str, dict[int, str]] | None = None,
    weight_for: WeightSource = default_weight,
    module_prefix: str = "",
) -> Graph:
    """Convert ``ep`` (already decomposed to the ops llmc converts) to a verified llmc graph.

    ``dynamic`` names the symbolic input sizes (``{"input_ids": {1: "seq"}}``); unnamed ones
    are called ``<input>_<axis>``. ``weight_for(target, tensor)`` gives each parameter's
    storage. ``module_prefix`` (``"model"``) is removed from module paths and weight names,
    for models captured through a wrapper module.
    """
    return _Importer(ep, name, dynamic or {}, weight_for, module_prefix).run()


class _Importer(Walker):
    def __init__(self, ep, name, dynamic, weight_for, module_prefix):
        super().__init__(name)
        self.ep = ep
        self.dynamic = dynamic
        self.weight_for = weight_for
        self.prefix = module_prefix

    def run(self) -> Graph:
        placeholders = [n for n in self.ep.graph.nodes if n.op == "placeholder"]
        specs = self.ep.graph_signature.input_specs
        self._name_symbols([n for n, s in zip(placeholders, specs) if s.kind == InputKind.USER_INPUT])
        for node, spec in zip(placeholders, specs):
            self._placeholder(node, spec)
        for node in self.ep.graph.nodes:
            if node.op == "call_function":
                self._call(node)
            elif node.op == "get_attr":
                self.env[node] = MISSING  # submodules of higher-order ops, reported where used
        return self.finish(self._outputs(next(n for n in self.ep.graph.nodes if n.op == "output")))

    # -- inputs and weights ---------------------------------------------------------------------

    def _name_symbols(self, user_inputs) -> None:
        """Name torch's size symbols: first the user's names, then ``<input>_<axis>`` for the rest."""
        known = {n.name for n in user_inputs}
        for input_name in self.dynamic:
            if input_name not in known:
                raise InputError(f"dynamic sizes are given for {input_name!r}, which is not an input",
                                 hint=f"the model's inputs are {sorted(known)}")
        for named_first in (True, False):
            for node in user_inputs:
                val = node.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    continue
                wanted = self.dynamic.get(node.name, {})
                for axis, size in enumerate(val.shape):
                    self._name_axis(node.name, axis, size, wanted.get(axis) if named_first else None)
                if named_first:
                    for axis in wanted:
                        if axis >= val.dim() or not isinstance(val.shape[axis], torch.SymInt):
                            raise InputError(f"{node.name} axis {axis} is not dynamic in the exported program",
                                             hint="export it with a dynamic size for that axis")

    def _name_axis(self, input_name, axis, size, name) -> None:
        if not isinstance(size, torch.SymInt):
            return
        expr = size.node.expr
        where = f"{input_name} axis {axis}"
        if name is not None:
            self.symbols.name(expr, name, where)
            return
        for s in sorted(expr.free_symbols, key=str):
            if not self.symbols.knows(s):
                self.symbols.name(s, f"{input_name}_{axis}" if s == expr else str(s), where)

    def _placeholder(self, node, spec) -> None:
        if spec.kind == InputKind.USER_INPUT:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                self.env[node] = self.graph.add_input(node.name, self.type_of(val))
            else:
                self.env[node] = self.symbols.dim(val) if isinstance(val, _SCALARS) else val
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            self.env[node] = self._weight(spec.target)
        else:
            self.report(node, f"{spec.kind.name.lower()} input", "")

    def _weight(self, target: str) -> Value:
        tensor = self.ep.state_dict.get(target)
        if tensor is None:
            tensor = self.ep.constants[target]
        weight = self.weight_for(self._strip(target), tensor)
        want = self.type_of(tensor)
        if tuple(weight.shape) != tuple(want.shape):
            raise ModelLoadError(
                f"weight {self._strip(target)} has shape {list(weight.shape)}, but the model expects "
                f"{list(want.shape)}", hint="the weights belong to another model")
        value = self.graph.add_const(self._strip(target), weight)
        if weight.dtype != want.dtype:
            origin = self._strip(target).rpartition(".")[0]
            meta = NodeMeta(origin=origin, layer=layer_of(origin))
            value = self.graph.call("cast", value, dtype=want.dtype, meta=meta)
        return value

    # -- ops ------------------------------------------------------------------------------------

    def _call(self, node) -> None:
        key = str(node.target)
        val = node.meta.get("val")
        origin = self._origin(node)
        if key in IGNORED:
            return
        if isinstance(val, _SCALARS):  # size arithmetic: fold into a dim
            try:
                self.env[node] = self.symbols.dim(val)
            except DataDependentSize as e:
                self.report(node, f"{key} (a size read from tensor data: {e})", origin)
            return
        resolved = self.resolve(node)
        if resolved is None:  # an input was not converted (and is reported); report this op too if unknown
            self.env[node] = MISSING
            if node.target is not operator.getitem and converter(node.target) is None:
                self.report(node, key, origin)
        elif node.target is operator.getitem:
            (values, index), _ = resolved
            self.env[node] = values[index]
        else:
            self.apply(node, node.target, *resolved, origin, val)

    # -- outputs and names ----------------------------------------------------------------------

    def _outputs(self, node) -> list[tuple[object, str]]:
        specs = self.ep.graph_signature.output_specs
        flat = [a for a, s in zip(node.args[0], specs) if s.kind == OutputKind.USER_OUTPUT]
        names = output_names(self.ep.call_spec.out_spec, len(flat))
        return [(self.env.get(a) if isinstance(a, torch.fx.Node) else None, n) for a, n in zip(flat, names)]

    def _origin(self, node) -> str:
        stack = node.meta.get("nn_module_stack")
        return self._strip(module_path(list(stack.values())[-1][0])) if stack else ""

    def _strip(self, path: str) -> str:
        if not self.prefix:
            return path
        if path == self.prefix:
            return ""
        return path[len(self.prefix) + 1:] if path.startswith(self.prefix + ".") else path


def module_path(raw: str) -> str:
    """A module path as ``model.layers.3.mlp`` from torch's spellings (``L['self'].layers[3].mlp``)."""
    path = re.sub(r"^L\['self'\]\.?", "", raw)
    path = re.sub(r"\._modules\['([^']+)'\]", r".\1", path)
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path)
    return path.lstrip(".")


def output_names(out_spec, count: int) -> list[str]:
    """Names of the flattened outputs from the output structure (``{"logits": ...}`` -> ``logits``)."""
    if out_spec is None:
        return [f"output_{i}" for i in range(count)]
    tree = pytree.tree_unflatten(list(range(out_spec.num_leaves)), out_spec)
    names = []
    for path, _ in pytree.tree_flatten_with_path(tree)[0]:
        parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", "")))) for k in path]
        if not parts:
            names.append("output")
        elif parts[0].isdigit():
            names.append("output_" + "_".join(parts))
        else:
            names.append("_".join(parts))
    return names
