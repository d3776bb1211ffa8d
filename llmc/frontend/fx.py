"""The torch.fx frontend: a ``GraphModule`` from ``torch.fx.symbolic_trace`` -> llmc ``Graph``.

Shapes come from running the module once on the example inputs (``ShapeProp``), so the graph
is static. Each fx node is mapped onto the ATen converter table the torch frontend uses:
``call_module`` nodes through their module's type (``nn.Conv2d`` -> ``aten.conv2d``, with its
parameters as constants), ``call_function`` and ``call_method`` nodes through the ATen op of
the same meaning (``torch.flatten`` -> ``aten.flatten.using_ints``, ``x.view(...)`` ->
``aten.view``). Python values (``x.size(1)``, ``x.shape``) are folded to the numbers they were.
Origins are module paths: the called module's, or the module stack fx recorded.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from torch.fx.operator_schemas import normalize_function
from torch.fx.passes.shape_prop import ShapeProp

from llmc.errors import InputError
from llmc.frontend.torch.capture import eval_mode
from llmc.frontend.torch.emitter import NotConvertible
from llmc.frontend.torch.importer import output_names
from llmc.frontend.torch.ops import shape as shape_ops
from llmc.frontend.torch.walker import MISSING, Walker
from llmc.ir import Graph, NodeMeta, layer_of
from llmc.ir.tensor import TorchWeight

aten = torch.ops.aten

# torch-level functions and Tensor methods, by the ATen overload of the same meaning
_FUNCTIONS = {
    operator.add: aten.add.Tensor, operator.sub: aten.sub.Tensor, operator.mul: aten.mul.Tensor,
    operator.truediv: aten.div.Tensor, operator.neg: aten.neg.default, operator.matmul: aten.matmul.default,
    torch.add: aten.add.Tensor, torch.sub: aten.sub.Tensor, torch.mul: aten.mul.Tensor, torch.div: aten.div.Tensor,
    torch.matmul: aten.matmul.default, torch.cat: aten.cat.default, torch.flatten: aten.flatten.using_ints,
    torch.reshape: aten.reshape.default, torch.transpose: aten.transpose.int, torch.permute: aten.permute.default,
    torch.unsqueeze: aten.unsqueeze.default, torch.mean: aten.mean.dim, torch.sum: aten.sum.dim_IntList,
    torch.where: aten.where.self, torch.relu: aten.relu.default, torch.sigmoid: aten.sigmoid.default,
    torch.tanh: aten.tanh.default, torch.exp: aten.exp.default, torch.softmax: aten.softmax.int,
    F.relu: aten.relu.default, F.gelu: aten.gelu.default, F.silu: aten.silu.default, F.softmax: aten.softmax.int,
    F.log_softmax: aten.log_softmax.int, F.linear: aten.linear.default, F.conv2d: aten.conv2d.default,
    F.max_pool2d: aten.max_pool2d.default, F.avg_pool2d: aten.avg_pool2d.default,
    F.adaptive_avg_pool2d: aten.adaptive_avg_pool2d.default, F.layer_norm: aten.layer_norm.default,
    F.dropout: aten.dropout.default, F.scaled_dot_product_attention: aten.scaled_dot_product_attention.default,
}
_METHODS = {
    "view": aten.view.default, "reshape": aten.reshape.default, "flatten": aten.flatten.using_ints,
    "permute": aten.permute.default, "transpose": aten.transpose.int, "contiguous": aten.clone.default,
    "unsqueeze": aten.unsqueeze.default, "squeeze": aten.squeeze.dims, "expand": aten.expand.default,
    "repeat": aten.repeat.default, "mean": aten.mean.dim, "sum": aten.sum.dim_IntList, "softmax": aten.softmax.int,
    "relu": aten.relu.default, "sigmoid": aten.sigmoid.default, "tanh": aten.tanh.default,
    "add": aten.add.Tensor, "mul": aten.mul.Tensor, "float": aten._to_copy.default, "to": aten._to_copy.default,
}
_VARARGS = {"view", "reshape", "permute", "expand", "repeat"}  # x.view(2, 3) as well as x.view((2, 3))
_RENAMES = {"input": "self", "training": "train"}  # torch-level argument names -> ATen's
_NO_EFFECT = {"inplace", "_stacklevel"}  # arguments that do not change the result


def from_fx(gm: torch.fx.GraphModule, example_inputs: tuple, *, name: str | None = None) -> Graph:
    """Convert a traced ``GraphModule`` to a verified llmc graph, shaped by ``example_inputs``.

    The module runs in eval mode. Inputs are named after the placeholders (``forward()``'s
    parameters). Raises ``UnsupportedOpError`` listing every function, method or module llmc
    cannot convert.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(example_inputs) != len(placeholders):
        raise InputError(f"{type(gm).__name__} takes {len(placeholders)} inputs "
                         f"({', '.join(n.name for n in placeholders)}), got {len(example_inputs)} example inputs")
    return _FxImporter(gm, name or type(gm).__name__).run(tuple(example_inputs))


class _Recorder(ShapeProp):
    """ShapeProp that also keeps every non-tensor result (sizes, shapes) of the example run."""

    def __init__(self, gm):
        super().__init__(gm)
        self.python_values: dict[torch.fx.Node, object] = {}

    def run_node(self, n):
        result = super().run_node(n)
        if not any(isinstance(x, torch.Tensor) for x in pytree.tree_leaves(result)):
            self.python_values[n] = result
        return result


class _FxImporter(Walker):
    def __init__(self, gm: torch.fx.GraphModule, name: str):
        super().__init__(name)
        self.gm = gm
        self.params: dict[str, object] = {}

    def run(self, example_inputs: tuple) -> Graph:
        recorder = _Recorder(self.gm)
        with eval_mode(self.gm), torch.no_grad():
            recorder.propagate(*example_inputs)
            return self._walk(recorder)

    def _walk(self, recorder: _Recorder) -> Graph:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = self.graph.add_input(node.name, self.type_of(node.meta["tensor_meta"]))
            elif node.op == "output":
                leaves, spec = pytree.tree_flatten(node.args[0])
                values = [self.env.get(x) if isinstance(x, torch.fx.Node) else None for x in leaves]
                return self.finish(list(zip(values, output_names(spec, len(leaves)))))
            elif node in recorder.python_values:
                self.env[node] = recorder.python_values[node]
            elif node.op == "get_attr":
                self.env[node] = self._param(node.target, _attr(self.gm, node.target))
            else:
                self._call(node)
        raise InputError(f"{type(self.gm).__name__} has no output node")

    def _call(self, node: torch.fx.Node) -> None:
        origin = self._origin(node)
        unknown = self._unknown(node)
        if unknown:
            return self.report(node, unknown, origin)
        resolved = self.resolve(node)
        if resolved is None:
            self.env[node] = MISSING  # an input was not converted; its op is reported already
            return
        args, kwargs = resolved
        val = node.meta.get("tensor_meta")
        try:
            if node.op == "call_module":
                target, args, kwargs = self._module_call(node.target, args, kwargs)
            elif node.target is operator.getitem:
                self.env[node] = self._getitem(args[0], args[1], origin)
                return
            elif node.op == "call_method":
                target, args, kwargs = self._method_call(node.target, args, kwargs)
            else:
                target, args, kwargs = self._function_call(node.target, args, kwargs)
        except NotConvertible as e:
            return self.report(node, e.reason, origin)
        self.apply(node, target, args, kwargs, origin, val)

    # -- mapping fx calls onto ATen -------------------------------------------------------------

    def _unknown(self, node: torch.fx.Node) -> str | None:
        """The name of the module type, method or function ``node`` calls, if llmc does not map it."""
        if node.op == "call_module":
            kind = type(self.gm.get_submodule(node.target))
            return None if kind in _MODULES else f"{kind.__module__}.{kind.__name__}"
        if node.op == "call_method":
            return None if node.target in _METHODS else f"Tensor.{node.target}"
        if node.target is operator.getitem or node.target in _FUNCTIONS:
            return None
        return getattr(node.target, "__name__", str(node.target))

    def _function_call(self, fn, args, kwargs):
        target = _FUNCTIONS[fn]
        if fn.__module__ == "_operator":
            return target, args, kwargs
        normalized = normalize_function(fn, args, kwargs, normalize_to_only_use_kwargs=True)
        if normalized is None:
            raise NotConvertible(f"{fn.__name__} (arguments not understood)")
        return target, (), _aten_kwargs(target, normalized.kwargs, fn.__name__)

    def _method_call(self, method: str, args, kwargs):
        target = _METHODS[method]
        if method in _VARARGS and len(args) > 1 and not isinstance(args[1], (list, tuple)):
            args = (args[0], list(args[1:]))
        if method in ("float", "to"):
            args, kwargs = args[:1], {}  # the result dtype comes from the example run
        return target, args, kwargs

    def _module_call(self, path: str, args, kwargs):
        module = self.gm.get_submodule(path)
        convert = _MODULES[type(module)]
        params = {k: self._param(f"{path}.{k}", v) for k, v in module.named_parameters(recurse=False)}
        params |= {k: self._param(f"{path}.{k}", v) for k, v in module.named_buffers(recurse=False)}
        return convert(module, args[0], params)

    def _getitem(self, x, index, origin):
        """``x[index]``: pick from a tuple, or slice a tensor (ints, slices, None, ...)."""
        if isinstance(x, (tuple, list)):
            return x[index]
        self.cx.meta = NodeMeta(origin=origin, layer=layer_of(origin))
        items = index if isinstance(index, tuple) else (index,)
        if any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items):
            raise NotConvertible("getitem (indexing a tensor with tensors)")
        axis = 0
        for i, item in enumerate(items):
            if item is Ellipsis:
                axis = x.type.rank - sum(1 for it in items[i + 1:] if it is not None)
            elif item is None:
                x, axis = shape_ops.unsqueeze(self.cx, x, axis), axis + 1
            elif isinstance(item, int):
                x = shape_ops.select(self.cx, x, axis, item)
            else:
                x = shape_ops.slice_(self.cx, x, axis, item.start, item.stop, item.step or 1)
                axis += 1
        return x

    # -- constants and origins ------------------------------------------------------------------

    def _param(self, path: str, tensor):
        if tensor is None:
            return None
        if path not in self.params:
            self.params[path] = self.graph.add_const(path, TorchWeight(tensor.detach()))
        return self.params[path]

    def _origin(self, node: torch.fx.Node) -> str:
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack")
        return list(stack.values())[-1][0] if stack else ""


def _attr(root, dotted: str):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _aten_kwargs(target, kwargs: dict, what: str) -> dict:
    """torch-level keyword arguments renamed to ``target``'s schema; refuses ones that matter but it lacks."""
    names = {a.name for a in target._schema.arguments}
    out = {}
    for key, value in kwargs.items():
        key = _RENAMES.get(key, key) if key not in names else key
        if key in names:
            out[key] = value
        elif key not in _NO_EFFECT and value not in (None, False):
            raise NotConvertible(f"{what} with {key}={value!r}")
    return out


# -- modules: (module, input, its parameters) -> (ATen overload, args, kwargs) ---------------------


def _conv2d(m, x, p):
    if m.padding_mode != "zeros":
        raise NotConvertible(f"Conv2d with padding_mode={m.padding_mode!r}")
    overload = aten.conv2d.padding if isinstance(m.padding, str) else aten.conv2d.default
    return overload, (x, p["weight"], p.get("bias"), m.stride, m.padding, m.dilation, m.groups), {}


def _batch_norm(m, x, p):
    if m.training or p.get("running_mean") is None:
        raise NotConvertible(f"{type(m).__name__} in training mode (call model.eval())")
    return aten.batch_norm.default, (x, p.get("weight"), p.get("bias"), p["running_mean"], p["running_var"],
                                     False, 0.0, m.eps, False), {}


def _max_pool2d(m, x, p):
    if m.return_indices:
        raise NotConvertible("MaxPool2d with return_indices=True")
    return aten.max_pool2d.default, (x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode), {}


_MODULES = {
    nn.Linear: lambda m, x, p: (aten.linear.default, (x, p["weight"], p.get("bias")), {}),
    nn.Conv2d: _conv2d,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.MaxPool2d: _max_pool2d,
    nn.AvgPool2d: lambda m, x, p: (aten.avg_pool2d.default, (x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                                            m.count_include_pad, m.divisor_override), {}),
    nn.AdaptiveAvgPool2d: lambda m, x, p: (aten.adaptive_avg_pool2d.default, (x, m.output_size), {}),
    nn.Flatten: lambda m, x, p: (aten.flatten.using_ints, (x, m.start_dim, m.end_dim), {}),
    nn.LayerNorm: lambda m, x, p: (aten.layer_norm.default, (x, m.normalized_shape, p.get("weight"), p.get("bias"),
                                                            m.eps), {}),
    nn.Embedding: lambda m, x, p: (aten.embedding.default, (p["weight"], x), {}),
    nn.Softmax: lambda m, x, p: (aten.softmax.int, (x, m.dim), {}),
    nn.ReLU: lambda m, x, p: (aten.relu.default, (x,), {}),
    nn.ReLU6: lambda m, x, p: (aten.hardtanh.default, (x, 0.0, 6.0), {}),
    nn.Hardtanh: lambda m, x, p: (aten.hardtanh.default, (x, m.min_val, m.max_val), {}),
    nn.LeakyReLU: lambda m, x, p: (aten.leaky_relu.default, (x, m.negative_slope), {}),
    nn.GELU: lambda m, x, p: (aten.gelu.default, (x,), {"approximate": m.approximate}),
    nn.SiLU: lambda m, x, p: (aten.silu.default, (x,), {}),
    nn.Sigmoid: lambda m, x, p: (aten.sigmoid.default, (x,), {}),
    nn.Tanh: lambda m, x, p: (aten.tanh.default, (x,), {}),
    nn.Dropout: lambda m, x, p: (aten.dropout.default, (x, m.p, m.training), {}),
    nn.Identity: lambda m, x, p: (aten.alias.default, (x,), {}),
}
