"""The ATen-op converter table: one function per source op, mapping it onto llmc's canonical ops.

A converter is registered for one or more overloads (``@aten("add.Tensor", "add.Scalar")``)
and is called with the op's arguments bound by name from the op's schema (defaults filled
in), tensors already replaced by llmc ``Value``s and symbolic sizes by llmc dims. It returns
the output ``Value`` (or a tuple for ops with several outputs) and raises ``NotConvertible``
for a case it does not cover. ``frontend.fx`` reuses the same table.
"""

from __future__ import annotations

from collections.abc import Callable

CONVERTERS: dict[str, Callable] = {}

# Ops that only assert facts torch already checked while exporting; they produce nothing.
IGNORED = frozenset({
    "aten._assert_tensor_metadata.default", "aten._assert_scalar.default", "aten._assert_async.msg",
    "aten.sym_constrain_range.default", "aten.sym_constrain_range_for_size.default",
})


def aten(*overloads: str):
    """Register the decorated function as the converter of ``aten.<overload>`` for each overload."""

    def register(fn):
        for name in overloads:
            key = f"aten.{name}"
            if key in CONVERTERS:
                raise ValueError(f"two converters for {key}")
            CONVERTERS[key] = fn
        return fn

    return register


def converter(target) -> Callable | None:
    return CONVERTERS.get(str(target))


def bind(target, args, kwargs) -> dict:
    """The arguments of a call to the ATen overload ``target``, by schema name, defaults included."""
    bound = {}
    positional = list(args)
    for arg in target._schema.arguments:
        if positional and not arg.kwarg_only:
            bound[arg.name] = positional.pop(0)
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


from llmc.frontend.torch.ops import index, linalg, math, nn, shape  # noqa: E402,F401  (fills CONVERTERS)
