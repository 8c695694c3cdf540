"""Deprecated alias of :mod:`closedloop.stages.monitor.drift` (the drift tests moved there; this module
name read as a test file). Kept only so code written against the old path still imports."""

from closedloop.stages.monitor.drift.base import DriftContext as TestContext
from closedloop.stages.monitor.drift.base import DriftResult as TestResult
from closedloop.stages.monitor.drift.base import DriftTest, Sample
from closedloop.stages.monitor.drift.predictions import confidences, predicted_classes
from closedloop.stages.monitor.drift.stats import gaussian_kernel, median_bandwidth, single_threaded_blas
from closedloop.stages.monitor.drift.stats import sqdist as _sqdist

__test__ = False  # not a pytest module
__all__ = [
    "DriftTest",
    "Sample",
    "TestContext",
    "TestResult",
    "_sqdist",
    "confidences",
    "gaussian_kernel",
    "median_bandwidth",
    "predicted_classes",
    "single_threaded_blas",
]
