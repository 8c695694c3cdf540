"""The baseline stage: the bar every model must beat. One class per baseline (``builtin.py``), their
contract and registry (``base.py``), the stage config (``config.py``), fitting (``fit.py``), and the
stage that scores and reports them (``stage.py``)."""

from closedloop.stages.baseline import builtin  # noqa: F401  (registers the built-in baselines)
from closedloop.stages.baseline.base import BASELINES, Baseline, BaselineParams, resolve_baseline
from closedloop.stages.baseline.config import FitBaselinesConfig
from closedloop.stages.baseline.fit import BaselineModel, configured_baselines, fit_baseline
from closedloop.stages.baseline.stage import BaselineReport, BaselineResult, FitBaselines, MetricCI

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
