"""Drift monitor and data flywheel: reference profile (pipeline stage), production checks, label-free
performance estimates, review queues and challenger-vs-champion retraining. See docs/monitor.md.

The names below are loaded on first use: the live monitor inside the serving process imports
``closedloop.stages.monitor.drift``/``.profile``/``.estimate`` and must not pull in the pipeline stage
(which imports torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DRIFT_TESTS": "drift",
    "DriftTest": "drift",
    "DriftTestConfig": "drift",
    "Monitor": "monitor",
    "MonitorResult": "monitor",
    "ReferenceProfile": "profile",
    "BuildMonitorProfile": "stage",
    "BuildMonitorProfileConfig": "stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"closedloop.stages.monitor.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
