"""The selection-bias record: how optimistic the winner's validation score is after a search.

Computed by :mod:`closedloop.stats.selection`; recorded in the train stage's
:class:`~closedloop.artifacts.evaluation.EvaluationReport` (``selection``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

METHOD = (
    "bootstrap of the selection (.632): validation rows resampled, the best configuration re-picked in "
    "each resample; optimism = 0.632 x (resample score - out-of-bootstrap score) + 0.368 x (resample "
    "score - full-sample score)"
)
W_OOB = 0.632
"""Efron's .632 weight on the out-of-bootstrap part."""


class SelectionBias(BaseModel):
    """The estimated optimism of a validation score that won a selection among ``n_candidates``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    evaluated_on: Literal["validation"] = "validation"
    n_candidates: int
    """Configurations whose validation predictions entered the selection."""
    n_validation: int
    """Validation rows the selection was made on."""
    winner: str
    winner_value: float
    """The chosen configuration's score on the full validation sample."""
    winner_is_best: bool
    """False when the winner was not the best on validation (e.g. re-ranked by cross-validation)."""
    optimism: float
    """Mean inflation of the best-of-N score, in the metric's units, positive = looks better than it is."""
    optimism_out_of_bootstrap: float
    """Resample score minus out-of-bootstrap score of the re-picked candidate (overshoots)."""
    optimism_in_sample: float
    """Resample score minus full-sample score of the re-picked candidate (undershoots)."""
    corrected_value: float
    """``winner_value`` with the optimism removed: roughly what to expect on new data (a floor when the
    winner was not the best on validation, whose inflation the best-of-N optimism overstates)."""
    winner_repick_rate: float
    """Share of resamples in which the selection picked the same winner (stability of the choice)."""
    higher_is_better: bool
    n_resamples: int
    method: str = METHOD
    sentence: str
