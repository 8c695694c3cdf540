"""Monitoring a deployed model, without torch: the reference profile, the drift tests, windows -> tests ->
alert (:class:`Monitor`), label-free performance estimates, what to label (review queues), the request
log's format (one writer, one reader), the live monitor inside the server and compare-live's statistics.

It sits below both the pipeline stages and the server: the ``monitor`` stage (``closedloop.stages.monitor``)
builds the reference profile with it, the server (``closedloop.serving``) writes the request log and runs
the live monitor with it, and neither of those two imports the other (``tests/test_layers.py``). See
docs/monitor.md.

The names below are loaded on first use, so ``import closedloop.monitoring`` stays light.
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
    "LiveMonitor": "live",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"closedloop.monitoring.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
