"""Drift tests: one class per test, registered by name (like the audit's checks); see ``base``."""

from closedloop.monitoring.drift.base import (
    DRIFT_TESTS,
    DriftContext,
    DriftResult,
    DriftTest,
    DriftTestConfig,
    Sample,
    build_tests,
    resolve_drift_test,
    run_tests,
)
from closedloop.monitoring.drift.builtin import DEFAULT_LABEL_TESTS, DEFAULT_TESTS

__all__ = [
    "DEFAULT_LABEL_TESTS",
    "DEFAULT_TESTS",
    "DRIFT_TESTS",
    "DriftContext",
    "DriftResult",
    "DriftTest",
    "DriftTestConfig",
    "Sample",
    "build_tests",
    "resolve_drift_test",
    "run_tests",
]
