"""Moved to :mod:`closedloop.monitoring.drift`. This name stays so drift-test plug-ins written against
``closedloop.stages.monitor.drift`` (the path docs/extending.md gave before the move) keep importing;
new code imports ``closedloop.monitoring.drift``."""

from closedloop.monitoring.drift import (
    DEFAULT_LABEL_TESTS,
    DEFAULT_TESTS,
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
