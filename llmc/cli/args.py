"""Parsers for the CLI's repeated ``NAME=VALUE`` flags. Each raises ``argparse.ArgumentTypeError``
(argparse turns it into a usage error, exit code 2) on text it cannot read."""

from __future__ import annotations

import argparse
import re

_NAME = r"[A-Za-z_][\w.\-/]*"


def input_shape(text: str) -> tuple[str, tuple[int | str, ...]]:
    """``input_ids=1x128`` -> ``("input_ids", (1, 128))``. A dim may be a symbol (``1xseq``);
    separate with commas when a symbol's name contains an x (``1,max_seq``)."""
    name, sep, dims = text.partition("=")
    parts = (dims.split(",") if "," in dims else dims.split("x")) if dims else []
    if not sep or not re.fullmatch(_NAME, name) or not all(re.fullmatch(r"\d+|[A-Za-z_]\w*", d) for d in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=DIMS (e.g. input_ids=1x128)")
    return name, tuple(int(d) if d.isdigit() else d for d in parts)


def dynamic_dim(text: str) -> tuple[str, int, str]:
    """``input_ids:1=seq`` -> ``("input_ids", 1, "seq")``."""
    m = re.fullmatch(rf"({_NAME}):(\d+)=([A-Za-z_]\w*)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:AXIS=SYMBOL (e.g. input_ids:1=seq)")
    return m.group(1), int(m.group(2)), m.group(3)


def option(text: str) -> tuple[str, str]:
    """``arch=sm_90`` -> ``("arch", "sm_90")`` (the target converts the value)."""
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. arch=sm_90)")
    return key, value


def size(text: str) -> tuple[str, int]:
    """``seq=128`` -> ``("seq", 128)``: the size of a symbolic dim."""
    m = re.fullmatch(r"([A-Za-z_]\w*)=(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not SYMBOL=SIZE (e.g. seq=128)")
    return m.group(1), int(m.group(2))


def shapes_dict(items) -> dict[str, tuple] | None:
    return dict(items) if items else None


def dynamic_dict(items) -> dict[str, dict[int, str]] | None:
    if not items:
        return None
    out: dict[str, dict[int, str]] = {}
    for name, axis, symbol in items:
        out.setdefault(name, {})[axis] = symbol
    return out
