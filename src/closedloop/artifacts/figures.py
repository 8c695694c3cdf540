"""A figure as the stages record it: a value with its 95% interval, and the per-day business framing.

``metrics_with_ci`` (:mod:`closedloop.stats.bootstrap`) computes the values; the train stage adds the
decision rule a threshold-dependent figure was computed at (``decided_at``) and records them in its
:class:`~closedloop.artifacts.evaluation.EvaluationReport`. NaN is written as ``null`` (JSON has no
NaN), so a value or a bound may read back as None.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


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


class WithInterval(BaseModel):
    """Any record that carries a ``ci95`` beside its ``value`` (a figure, an estimate, a metric in a
    stage's summary or a report block), as read by the code that walks such records without knowing
    their type: the tracker's headline metrics, the report's value formatter. Other keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    value: Any = None
    ci95: list[Any] | None = None

    @classmethod
    def read(cls, obj: Any) -> WithInterval | None:
        """``obj`` as this view, or None when it is not a mapping with these fields' shapes."""
        if not isinstance(obj, dict):
            return None
        try:
            return cls.model_validate(obj)
        except ValidationError:
            return None

    @property
    def bounds(self) -> tuple[Any, Any] | None:
        """The interval's two bounds as written (either may be None), or None without two."""
        return (self.ci95[0], self.ci95[1]) if self.ci95 is not None and len(self.ci95) == 2 else None


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


class Confusion(_Record):
    """Single-label tasks: counts of (true class, predicted class) on one split, rows true, columns predicted.

    >>> c = Confusion(labels=["low", "mid", "high"], counts=[[5, 1, 0], [1, 4, 1], [0, 2, 6]], decided_at="argmax")
    >>> c.n, c.errors_by_distance()
    (20, {1: 5, 2: 0})
    """

    labels: list[str]
    counts: list[list[int]]
    decided_at: str
    """``argmax`` or ``shipped threshold 0.42``: the decision that made each prediction a class."""
    evaluated_on: str = "test"

    @property
    def n(self) -> int:
        return int(sum(map(sum, self.counts)))

    def errors_by_distance(self) -> dict[int, int]:
        """Wrong predictions by their distance in ranks from the true class (an ordinal task's reading)."""
        k = len(self.counts)
        return {
            d: sum(self.counts[i][j] for i in range(k) for j in range(k) if abs(i - j) == d)
            for d in range(1, k)
        }
