"""The baseline stage: the bar every model must beat. One class per baseline (``builtin.py``), a
registry (``base.py``), and the stage that fits, scores and reports them (``stage.py``)."""

from closedloop.stages.baseline import builtin  # noqa: F401  (registers the built-in baselines)
from closedloop.stages.baseline.base import BASELINES, Baseline, BaselineParams, resolve_baseline
from closedloop.stages.baseline.stage import (
    BaselineModel,
    BaselineReport,
    BaselineResult,
    FitBaselines,
    FitBaselinesConfig,
    MetricCI,
    configured_baselines,
    fit_baseline,
)

__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineModel",
    "BaselineParams",
    "BaselineReport",
    "BaselineResult",
    "FitBaselines",
    "FitBaselinesConfig",
    "MetricCI",
    "configured_baselines",
    "fit_baseline",
    "resolve_baseline",
]
