"""llmc: an ahead-of-time compiler for LLMs.

    import llmc
    art = llmc.compile("tiny-llama", target="reference", output="out/tiny-llama")
    outputs = llmc.load("out/tiny-llama").run({"input_ids": ids})

The public names are imported lazily, so ``import llmc`` stays fast (no numpy, torch or TVM
until something is used).
"""

from __future__ import annotations

_API = {"compile": "llmc.api", "load": "llmc.api", "Artifact": "llmc.api", "load_model": "llmc.frontend.load"}

__all__ = ["Artifact", "__version__", "compile", "load", "load_model"]


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import version

        return version("llmc")
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'llmc' has no attribute {name!r}")
