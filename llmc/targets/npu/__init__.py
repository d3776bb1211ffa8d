"""The NPU target (``--target=npu``): see ``llmc.targets.npu.target`` and docs/targets/npu.md."""

from llmc.targets.npu import target  # noqa: F401  (registers the target)
