"""The ``monitor`` stage (the reference profile a run ships with) and the ``monitor`` / ``retrain``
commands. The monitor library itself (drift tests, profile, estimates, review queues, the request log,
the live monitor) is :mod:`closedloop.monitoring`; see docs/monitor.md.

The names below are loaded on first use (the stage imports torch). ``Monitor``, ``ReferenceProfile``
and the drift-test names are re-exported from :mod:`closedloop.monitoring` for code written before
the library moved there.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DRIFT_TESTS": "closedloop.monitoring.drift",
    "DriftTest": "closedloop.monitoring.drift",
    "DriftTestConfig": "closedloop.monitoring.drift",
    "Monitor": "closedloop.monitoring.monitor",
    "MonitorResult": "closedloop.monitoring.monitor",
    "ReferenceProfile": "closedloop.monitoring.profile",
    "BuildMonitorProfile": "closedloop.stages.monitor.stage",
    "BuildMonitorProfileConfig": "closedloop.stages.monitor.stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
