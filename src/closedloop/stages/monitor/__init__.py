"""Drift monitor and data flywheel: reference profile (pipeline stage), production checks, label-free
performance estimates, review queues and challenger-vs-champion retraining. See docs/monitor.md."""

from closedloop.stages.monitor.drift import DRIFT_TESTS, DriftTest, DriftTestConfig
from closedloop.stages.monitor.monitor import Monitor, MonitorResult
from closedloop.stages.monitor.profile import ReferenceProfile
from closedloop.stages.monitor.stage import BuildMonitorProfile, BuildMonitorProfileConfig

__all__ = [
    "DRIFT_TESTS",
    "BuildMonitorProfile",
    "BuildMonitorProfileConfig",
    "DriftTest",
    "DriftTestConfig",
    "Monitor",
    "MonitorResult",
    "ReferenceProfile",
]
