"""The test gate's decision record: the model against the best baseline on the once-opened test split.

Computed by :mod:`closedloop.stats.gate`; recorded in the train stage's
:class:`~closedloop.artifacts.evaluation.EvaluationReport` (``beats_baseline``) and read back by the
report, compare and the tracker as this type.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class TestComparison(BaseModel):
    """One paired comparison made on test: model vs one baseline on one metric."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    baseline: str
    delta: float
    """``model - baseline``."""
    ci95: list[float]
    bound95: float
    """One-sided 95% bound on ``delta`` on the side of "the model is better" (lower bound when higher
    is better): the interval of the one-sided claim."""
    p_value: float
    """One-sided (H0: the model is not better), this comparison alone."""
    p_two_sided: float
    p_adjusted: float
    """Holm over the test comparisons made (equals ``p_value`` when there is one)."""
    model_value: float
    baseline_value: float
    higher_is_better: bool
    method: str
    n: int
    n_groups: int | None = None
    """Groups (``data.group``) the ``n`` rows come in, resampled whole; None: rows resampled."""

    @property
    def better(self) -> bool:
        return self.delta > 0 if self.higher_is_better else self.delta < 0


class GateResult(BaseModel):
    """The gate's decision on the declared comparison, with every test comparison made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    baseline: str
    delta: float
    ci95: list[float]
    bound95: float
    """One-sided 95% bound of the declared comparison (see :class:`TestComparison`)."""
    p_value: float
    """One-sided p-value of the declared comparison, uncorrected."""
    p_two_sided: float
    p_adjusted: float
    """The p-value the decision uses: ``p_value``, or Holm over several test comparisons."""
    correction: str
    """"none" (one declared comparison) or "Holm over K test comparisons"."""
    n_test_comparisons: int
    n_configs: int
    """Configurations scored on validation before the choice (reported, not corrected for here)."""
    significant: bool
    model_value: float
    baseline_value: float
    higher_is_better: bool
    method: str
    n: int
    n_groups: int | None = None
    """Groups (``data.group``) the ``n`` test rows come in, resampled whole; None: rows resampled."""
    alpha: float
    evaluated_on: Literal["test"] = "test"
    comparisons: list[TestComparison]
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for artifacts and summary.json)."""
        return self.model_dump(mode="json")
