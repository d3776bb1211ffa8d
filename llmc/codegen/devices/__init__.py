"""Device specs for the roofline cost model: data-sheet devices (``table``) and this machine's
CPU, measured (``host``). ``get(name)`` is the one way to look a device up by name."""

from __future__ import annotations

from pathlib import Path

from llmc.codegen.devices.machine import host
from llmc.codegen.devices.spec import Device
from llmc.codegen.devices.table import ARCH_DEVICES, DEVICES
from llmc.errors import InputError

HOST = "cpu"

__all__ = ["Device", "for_target", "get", "host", "names"]


def names() -> list[str]:
    """Every device name ``get`` accepts: the data-sheet devices, then ``cpu`` (this machine)."""
    return [*DEVICES, HOST]


def get(name: str, *, cache: Path | None = None) -> Device:
    """The device called ``name``; ``cpu`` is this machine, measured (and cached in ``cache``)."""
    key = name.strip().lower()
    if key == HOST:
        return host(cache)
    if key not in DEVICES:
        raise InputError(f"unknown device {name!r}", hint=f"known devices: {', '.join(names())}")
    return DEVICES[key]


def for_target(target: str, options: dict, *, cache: Path | None = None) -> Device | None:
    """The device a target's artifact is estimated on: ``cpu`` -> this machine, ``cuda`` -> the
    device of its ``arch`` (sm_90 -> h100, sm_80 -> a100, sm_89 -> rtx4090); None for targets and
    architectures llmc has no spec for."""
    if target == "cpu":
        return host(cache)
    if target == "cuda":
        arch = str(options.get("arch", ""))
        return DEVICES[ARCH_DEVICES[arch]] if arch in ARCH_DEVICES else None
    return None
