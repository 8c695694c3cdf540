"""Export, quantize, prune and distill; see :class:`~closedloop.stages.export.stage.ExportModel`."""

from closedloop.stages.export.errors import ExportError, ParityError
from closedloop.stages.export.stage import ExportBundle, ExportModel, ExportModelConfig

__all__ = ["ExportBundle", "ExportError", "ExportModel", "ExportModelConfig", "ParityError"]
