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
(``benchmarks/tune_monitor_deployments.py``; docs/monitor_decisions.md).
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


METHODS = ("none", "heldout_platt", "heldout_bias", "heldout_platt_bias")
"""``estimate_calibration`` values. ``heldout_bias`` / ``heldout_platt_bias``: the accuracy estimate is also
moved by a constant, the estimate's own error on the held-out rows (session 13's candidates)."""


@dataclass(frozen=True)
class EstimateCalibration:
    """What the label-free estimate applies: an optional Platt map (probabilities and threshold), then a
    constant subtracted from the accuracy estimate (its bias on the held-out rows; 0: none)."""

    method: str
    platt: PlattMap | None
    acc_bias: float = 0.0

    def proba(self, proba: np.ndarray) -> np.ndarray:
        return proba if self.platt is None else self.platt.proba(proba)

    def threshold(self, threshold: float) -> float:
        return threshold if self.platt is None else self.platt.threshold(threshold)

    def correct(self, est: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """``estimate``'s output with the accuracy (value and interval) moved by ``-acc_bias``, kept in [0, 1]."""
        if not self.acc_bias or "acc" not in est:
            return est
        acc = {k: float(np.clip(v - self.acc_bias, 0.0, 1.0)) for k, v in est["acc"].items()}
        return {**est, "acc": acc}

    def record(self) -> dict[str, float | str]:
        """The window JSON's ``estimate_calibration`` (an identity map when no Platt map is applied)."""
        slope, intercept = (1.0, 0.0) if self.platt is None else (self.platt.slope, self.platt.intercept)
        return {"method": self.method, "slope": slope, "intercept": intercept, "acc_bias": self.acc_bias}


def fit_estimate_calibration(
    method: str, proba: np.ndarray, labels: np.ndarray, threshold: float
) -> EstimateCalibration | None:
    """The calibration ``method`` fitted on labeled held-out rows of a binary task (None for ``none``,
    or when a Platt map cannot be fitted honestly). The accuracy bias is the estimate's mean confidence
    minus the held-out rows' realized accuracy, both at the deployed decisions (the map's mapped
    threshold); it is measured on the same rows the map is fitted on."""
    from closedloop.monitoring.drift.predictions import confidences

    if method not in METHODS:
        raise ValueError(f"estimate_calibration {method!r}: expected one of {', '.join(METHODS)}")
    if method == "none":
        return None
    platt = None
    if method in ("heldout_platt", "heldout_platt_bias"):
        platt = fit_platt(proba, labels)
        if platt is None:
            return None
    cal = EstimateCalibration(method, platt)
    if method == "heldout_platt":
        return cal
    y = np.asarray(labels).reshape(-1).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    conf = confidences(cal.proba(proba), "binary", cal.threshold(threshold))
    acc = np.mean((proba[:, 1] >= threshold).astype(int) == y)
    return EstimateCalibration(method, platt, float(conf.mean() - acc))
