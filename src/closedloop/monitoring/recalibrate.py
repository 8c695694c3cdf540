"""The label-free estimate's probabilities recalibrated on the deployment's own held-out rows.

The confidence-based estimate (``closedloop.monitoring.estimate``) is right on average only when the
model's probabilities are calibrated on the population production comes from. The train stage fits
its temperature on its own validation rows; the monitor profile keeps a different sample of held-out
rows with their labels (``ReferenceProfile.domain``). A Platt map (``sigmoid(a * logit(p) + b)``)
fitted on those rows corrects a bias of the model's confidence on unseen rows that one temperature
could not, at the price of two parameters estimated from a few hundred rows (its own noise).

The model's decisions do not change: a window's realized accuracy is the accuracy of the deployed
threshold on the original probabilities, so the estimate is computed on the recalibrated probabilities
at the **mapped** threshold (the map is increasing, so the same rows fall on each side of it).
Whether it helps at all is an empirical question, decided on development data
(``benchmarks/tune_monitor_deployments.py``; docs/monitor.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIP = 1e-6
"""Probabilities are clipped to [CLIP, 1 - CLIP] before the logit."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class PlattMap:
    """``p -> sigmoid(slope * logit(p) + intercept)`` on the positive class of a binary task."""

    slope: float
    intercept: float

    def positive(self, p1: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * _logit(p1) + self.intercept)))

    def proba(self, proba: np.ndarray) -> np.ndarray:
        """Recalibrated (N, 2) probabilities."""
        p1 = self.positive(np.asarray(proba, dtype=np.float64)[:, -1])
        return np.stack([1 - p1, p1], axis=1)

    def threshold(self, threshold: float) -> float:
        """The decision threshold on the recalibrated scale (the same decisions)."""
        return float(self.positive(np.asarray([threshold]))[0])


def fit_platt(proba: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> PlattMap | None:
    """Platt scaling fitted on labeled held-out rows (binary). None when it cannot be fitted honestly:
    a single class, or a map that is not increasing (it would reorder the model's decisions)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels).reshape(-1).astype(int)
    if len(np.unique(y)) < 2:
        return None
    x = _logit(np.asarray(proba, dtype=np.float64)[:, -1])[:, None]
    clf = LogisticRegression(C=1e4, max_iter=1000)
    clf.fit(x, y, sample_weight=weights)
    slope, intercept = float(clf.coef_[0, 0]), float(clf.intercept_[0])
    return PlattMap(slope, intercept) if slope > 0 else None
