"""The errors llmc raises. Every one says what went wrong, where, and what to do.

The CLI prints ``str(error)`` as one line and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations


class LLMCError(Exception):
    """Base of every error llmc raises on purpose."""

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        text = self.what
        if self.where:
            text += f" (at {self.where})"
        if self.hint:
            text += f". {self.hint}"
        return text


class ModelLoadError(LLMCError):
    """A model file or folder could not be read: missing, truncated, malformed, not a model."""


class UnsafeModelError(ModelLoadError):
    """A model file asks for something llmc refuses to do (a path outside its folder, pickles)."""


class UnsupportedOpError(LLMCError):
    """One or more ops of the source model have no llmc equivalent; lists all of them."""

    def __init__(self, unsupported: dict[str, list[str]], *, source: str):
        self.unsupported = unsupported
        parts = []
        for op, origins in sorted(unsupported.items()):
            shown = ", ".join(origins[:3]) + (f" and {len(origins) - 3} more" if len(origins) > 3 else "")
            parts.append(f"{op} at {shown}")
        super().__init__(
            f"{len(unsupported)} unsupported {source} op(s): " + "; ".join(parts),
            hint="Rewrite these parts of the model with supported ops, or open an issue naming them",
        )


class ShapeError(LLMCError):
    """Shapes or dtypes disagree: between an op's inputs, or between given inputs and the model."""


class InputError(LLMCError):
    """Inputs given to a run or a compile do not match the model's signature."""


class VerifyError(LLMCError):
    """The IR breaks one of its invariants (found by ``Graph.verify``)."""


class WeightsNotMaterialized(LLMCError):
    """A weight has a shape but no data (a model built on the ``meta`` device, a weightless folder)."""


class PassError(LLMCError):
    """A pass failed, or left the graph invalid."""


class TargetError(LLMCError):
    """A target cannot lower or build the graph (missing tool, unsupported op or dtype)."""


class ArtifactError(LLMCError):
    """An artifact folder is missing files, corrupted, or of an unknown schema version."""
