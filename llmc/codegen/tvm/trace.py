"""Which IR nodes each TIR kernel computes, recovered across TVM's fusion.

The lowering names every Relax binding after its node (``n12``, ``n12_1``; see ``context``).
Bindings that Relax's normalizer creates for nested calls are named ``lv...``; they belong to
the next named binding (nested calls are emitted just before their parent). ``FuseOps`` keeps
the names of the bindings it moves into a fused function, except the function's result, which
it renames; that binding is found again by its callee and argument names, which ``FuseOps``
preserves (a fused function's parameters keep the names of the values passed to them).
"""

from __future__ import annotations

import re

from tvm import ir, relax

_TAG = re.compile(r"^(n\d+)(?:_\d+)?$")


def call_tir_keys(func: relax.Function) -> dict[tuple, str]:
    """(callee, argument names) -> node tag, for every ``call_tir`` binding of ``func``."""
    out: dict[tuple, str] = {}
    pending: list[tuple] = []
    for binding in _bindings(func):
        key = _call_key(binding.value)
        tag = _tag(binding.var.name)
        if tag is None:
            if key is not None:
                pending.append(key)
            continue
        for k in [*pending, *([key] if key is not None else [])]:
            out.setdefault(k, tag)
        pending = []
    return out


def kernel_tags(mod: ir.IRModule, keys: dict[tuple, str]) -> dict[str, set[str]]:
    """TIR kernel name -> node tags, for a module after ``FuseOps`` and before ``FuseTIR``.

    A fused Relax function (attribute ``Primitive``) becomes one kernel of the same name; a
    ``call_tir`` left in another function is a kernel of its callee's name.
    """
    out: dict[str, set[str]] = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        primitive = bool(func.attrs and func.attrs.get("Primitive"))
        for binding in _bindings(func):
            key = _call_key(binding.value)
            if key is None:
                continue
            tag = _tag(binding.var.name) or keys.get(key)
            kernel = gvar.name_hint if primitive else key[0]
            tags = out.setdefault(kernel, set())
            if tag is not None:
                tags.add(tag)
    return out


def tir_calls(func: relax.Function) -> list[str]:
    """The TIR kernels ``func`` calls, in order (one entry per launch)."""
    return [key[0] for b in _bindings(func) if (key := _call_key(b.value)) is not None]


def _bindings(func: relax.Function):
    body = func.body
    for block in body.blocks:
        yield from block.bindings


def _call_key(value) -> tuple | None:
    if not isinstance(value, relax.Call) or not isinstance(value.op, ir.Op) or value.op.name != "relax.call_tir":
        return None
    callee, args = value.args[0], value.args[1]
    names = tuple(a.name if isinstance(a, relax.Var) else "const" for a in getattr(args, "fields", [args]))
    return (callee.name_hint, names)


def _tag(name: str) -> str | None:
    m = _TAG.match(name)
    return m.group(1) if m else None
