"""A figure as the stages record it: a value with its 95% interval, and the per-day business framing.

``metrics_with_ci`` (:mod:`closedloop.stats.bootstrap`) computes the values; the train stage adds the
decision rule a threshold-dependent figure was computed at (``decided_at``) and records them in its
:class:`~closedloop.artifacts.evaluation.EvaluationReport`. NaN is written as ``null`` (JSON has no
NaN), so a value or a bound may read back as None.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_Record):
    """A value with its bootstrap 95% interval."""

    value: float | None
    ci95: list[float | None] | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The interval as two numbers, or None when it is missing or a bound was undefined."""
        lo, hi = self.ci95 if self.ci95 is not None and len(self.ci95) == 2 else (None, None)
        return None if lo is None or hi is None else (float(lo), float(hi))


class Figure(Estimate):
    """A metric on one split, with the decision rule it was computed at."""

    decided_at: str | None = None
    """``threshold-free``, ``argmax``, ``shipped threshold 0.42`` or ``0.5 (MedMNIST convention ...)``."""


class PerDay(_Record):
    """Binary tasks: caught / missed / false alarms per day on test (``stats.business.per_day``)."""

    unit: str
    """``day`` (with ``cases_per_day``) or ``1,000 cases``."""
    cases: float
    prevalence: float
    threshold: float
    positive_name: str | None
    sensitivity: Estimate
    false_positive_rate: Estimate
    caught: Estimate
    missed: Estimate
    false_alarms: Estimate
    flagged: Estimate
    sentence: str
    sentence_with_intervals: str
    evaluated_on: str = "test"
