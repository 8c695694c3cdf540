"""How optimistic is the winner's validation score? A bootstrap of the whole selection.

Picking the best of N configurations on one validation split inflates the winner's score: part of
its lead is noise that favoured it on these particular cases. That is where the search's multiple
testing lives (not on the test split, which is opened once for the chosen model). This module
estimates the inflation from the candidates' saved validation predictions:

1. resample the validation rows (stratified by class, seeded; the same resamples for every
   candidate);
2. in each resample, re-run the selection: pick the candidate with the best score on the resample;
3. the optimism of that resample is the picked candidate's score on the resample minus its score on
   the full validation sample (which plays the role of "new data" for the resample).

The mean optimism estimates how far the best-of-N validation score sits above what the chosen
configuration scores on new data from the same distribution; with one candidate it is about 0.
Early stopping on validation (choosing the epoch) adds a little more optimism that this does not see.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.selection import selection_bias
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> same = [np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1) for _ in range(10)]
    >>> sb = selection_bias("auc", y, same, "binary", n_resamples=200)
    >>> sb.optimism > 0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.stats.bootstrap import strata_for, weight_chunks
from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import Convention, make_metric

METHOD = (
    "bootstrap of the selection: validation rows resampled, the best configuration re-picked in each "
    "resample, its resample score minus its score on the full validation sample"
)


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
    optimism_range95: list[float]
    """2.5th and 97.5th percentiles of the per-resample optimism (its spread, not an interval of the mean)."""
    corrected_value: float
    """``winner_value`` with the optimism removed: roughly what to expect on new data."""
    winner_repick_rate: float
    """Share of resamples in which the selection picked the same winner (stability of the choice)."""
    higher_is_better: bool
    n_resamples: int
    method: str = METHOD
    sentence: str


def selection_bias(
    metric: str,
    y_true: Any,
    candidates: Sequence[Any],
    problem_type: str,
    *,
    names: Sequence[str] | None = None,
    winner: int | None = None,
    convention: Convention = "standard",
    threshold: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> SelectionBias:
    """Optimism of the best validation score among ``candidates`` (each a prediction array on the
    same validation rows ``y_true``). ``winner`` is the index actually chosen (default: the best)."""
    if len(candidates) == 0:
        raise StatsError("selection_bias needs at least one candidate's validation predictions")
    names = list(names) if names is not None else [f"configuration {i}" for i in range(len(candidates))]
    if len(names) != len(candidates):
        raise StatsError(f"{len(names)} names for {len(candidates)} candidates")
    m = make_metric(metric, problem_type, threshold=threshold, convention=convention)
    prepared = [m.prepare(y_true, p) for p in candidates]
    y = prepared[0][0]
    preds = [P for _, P in prepared]
    shapes = {P.shape for P in preds}
    if len(shapes) != 1:
        raise StatsError(f"candidates' validation predictions differ in shape: {sorted(shapes)}")
    m.check_defined(y, preds[0])
    sign = 1.0 if m.higher_is_better else -1.0
    ones = np.ones((1, len(y)))
    full = np.array([float(m.weighted(y, P, ones)[0]) for P in preds])
    s_full = np.where(np.isfinite(full), sign * full, -np.inf)
    best = int(np.argmax(s_full))
    win = best if winner is None else int(winner)
    if not 0 <= win < len(preds):
        raise StatsError(f"winner index {win} is outside the {len(preds)} candidates")
    optimism, picks = [], []
    for W in weight_chunks(len(y), n_resamples, seed, strata_for(y, problem_type)):
        S = np.stack([sign * m.weighted(y, P, W) for P in preds], axis=1)
        S = np.where(np.isfinite(S), S, -np.inf)
        k = np.argmax(S, axis=1)
        ok = np.isfinite(S[np.arange(len(k)), k]) & np.isfinite(s_full[k])
        optimism.append((S[np.arange(len(k)), k] - s_full[k])[ok])
        picks.append(k[ok])
    opt = np.concatenate(optimism)
    if len(opt) == 0:
        raise StatsError(f"selection bias of {metric!r}: the metric was undefined on every resample")
    bias = float(np.mean(opt))
    lo, hi = (float(v) for v in np.quantile(opt, [0.025, 0.975]))
    repick = float(np.mean(np.concatenate(picks) == win))
    value = float(full[win])
    corrected = value - sign * bias
    n = len(candidates)
    sentence = (
        f"validation {metric} {value:.4f} for the chosen configuration, selected among {n} "
        f"configuration{'s' if n != 1 else ''} on the same {len(y)} validation cases: the selection "
        f"alone flatters the best score by about {bias:.4f} (bootstrap of the selection, "
        f"{len(opt)} resamples; the same winner was re-picked in {repick:.0%} of them), so expect "
        f"about {corrected:.4f} on new data"
    )
    if win != best:
        sentence += " (the chosen configuration was not the best on validation: its score is less inflated)"
    return SelectionBias(
        metric=metric,
        n_candidates=n,
        n_validation=len(y),
        winner=names[win],
        winner_value=value,
        winner_is_best=win == best,
        optimism=bias,
        optimism_range95=[lo, hi],
        corrected_value=corrected,
        winner_repick_rate=repick,
        higher_is_better=m.higher_is_better,
        n_resamples=len(opt),
        sentence=sentence,
    )
