"""Export, quantize, prune and distill; see :class:`~closedloop.stages.export.stage.ExportModel`."""

from closedloop.stages.export.bundle import ExportBundle
from closedloop.stages.export.config import DistillConfig, ExportModelConfig, LatencyConfig, PruneConfig
from closedloop.stages.export.errors import ExportError, ParityError
from closedloop.stages.export.stage import ExportModel

__all__ = [
    "DistillConfig",
    "ExportBundle",
    "ExportError",
    "ExportModel",
    "ExportModelConfig",
    "LatencyConfig",
    "ParityError",
    "PruneConfig",
]
