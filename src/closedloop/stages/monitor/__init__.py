"""Drift monitor and data flywheel: reference profile (pipeline stage), production checks, label-free
performance estimates, review queues and challenger-vs-champion retraining. See docs/monitor.md."""

from closedloop.stages.monitor.monitor import Monitor, MonitorResult
from closedloop.stages.monitor.profile import ReferenceProfile
from closedloop.stages.monitor.stage import BuildMonitorProfile, BuildMonitorProfileConfig
from closedloop.stages.monitor.tests import TESTS, DriftTest

__all__ = [
    "TESTS",
    "BuildMonitorProfile",
    "BuildMonitorProfileConfig",
    "DriftTest",
    "Monitor",
    "MonitorResult",
    "ReferenceProfile",
]
