"""Errors of the export stage (user-caused: a model or data the stage cannot ship)."""

from __future__ import annotations

from closedloop.core.errors import ClosedLoopError


class ExportError(ClosedLoopError):
    """The model cannot be exported, or an exported file does not check out."""


class ParityError(ExportError):
    """ONNX Runtime outputs differ from PyTorch beyond the configured tolerance."""
