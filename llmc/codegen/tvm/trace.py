"""Which IR nodes each TIR kernel computes, recovered across TVM's fusion.

The lowering names every Relax binding after its node (``n12``, ``n12_1``; see ``context``).
Bindings that Relax's normalizer creates for nested calls are named ``lv...``; they belong to
the next named binding (nested calls are emitted just before their parent). ``FuseOps`` keeps
the names of the bindings it moves into a fused function, except the function's result, which
it renames; that binding is found again by its callee and argument names, which ``FuseOps``
preserves (a fused function's parameters keep the names of the values passed to them).
``FuseOps`` also shares one function between identical groups (``absorbed_tags``).
"""

from __future__ import annotations

import re

from tvm import ir, relax

WEIGHT_SUFFIX = "_w"  # bindings of a fused node's weight layouts, computed in its caller: n12_w, n12_w_1
# A binding name: [e<entry>][b]n<node>[_w][_<count>] (``LowerContext._name``: "e1" marks a second
# entry function, "b" a fused body, so names never collide and TVM never renames them).
_TAG = re.compile(rf"^(?:e\d+)?b?(n\d+)(?:{WEIGHT_SUFFIX})?(?:_\d+)?$")
_CALLS = ("relax.call_tir", "relax.call_tir_inplace")  # a kernel launch (in place: KV-cache writes)


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


def absorbed_tags(mod: ir.IRModule, before: relax.Function, after: relax.Function,
                  keys: dict[tuple, str]) -> dict[str, set[str]]:
    """Fused function -> tags of the bindings ``FuseOps`` absorbed into each call of it.

    ``FuseOps`` makes one function for identical groups (the same block in every layer), so a
    function body names only its first group's nodes. Each call's group is found in ``before``
    (the caller before ``FuseOps``): walking its vanished bindings in order, those computed from
    the call's arguments and from the group's earlier members, as many as the body has bindings.
    """
    kept = {b.var.name for b in _bindings(after)}
    absorbed = [(b.var.name, b.value) for b in _bindings(before) if b.var.name not in kept]
    claimed: set[str] = set()
    out: dict[str, set[str]] = {}
    for binding in _bindings(after):
        value = binding.value
        if not (isinstance(value, relax.Call) and isinstance(value.op, ir.GlobalVar)):
            continue
        size = sum(1 for _ in _bindings(mod[value.op]))
        known, members = _var_uses(value), []
        for name, member in absorbed:
            uses = _var_uses(member)
            if name not in claimed and uses and uses <= known:
                members.append((name, member))
                known.add(name)
                if len(members) == size:
                    break
        claimed.update(name for name, _ in members)
        tags = {t for name, member in members if (t := _tag(name) or keys.get(_call_key(member))) is not None}
        out.setdefault(value.op.name_hint, set()).update(tags)
    return out


def _var_uses(value) -> set[str]:
    args = value.args if isinstance(value, relax.Call) else getattr(value, "fields", [])
    out = set()
    for a in args:
        for item in getattr(a, "fields", [a]):
            if isinstance(item, relax.Var):
                out.add(item.name)
    return out


def tir_calls(func: relax.Function) -> list[str]:
    """The TIR kernels ``func`` calls, in order (one entry per launch)."""
    return [key[0] for b in _bindings(func) if (key := _call_key(b.value)) is not None]


def _bindings(func: relax.Function):
    body = func.body
    for block in body.blocks:
        yield from block.bindings


def _call_key(value) -> tuple | None:
    if not isinstance(value, relax.Call) or not isinstance(value.op, ir.Op) or value.op.name not in _CALLS:
        return None
    callee, args = value.args[0], value.args[1]
    names = tuple(a.name if isinstance(a, relax.Var) else "const" for a in getattr(args, "fields", [args]))
    return (callee.name_hint, names)


def _tag(name: str) -> str | None:
    m = _TAG.match(name)
    return m.group(1) if m else None
