"""Recalibration challengers: a deployed binary model re-fitted to production from a few labels,
the network untouched (torch-free, seconds).

Each method maps the champion's P(pos) to a new P(pos) and an operating threshold at the task's
costs:

* ``threshold`` - probabilities unchanged; the threshold minimizing expected cost on the labels
  (:func:`closedloop.stats.business.choose_threshold`, the cost rule the train stage uses);
* ``platt`` - logistic regression on the champion's logit (slope and intercept), then the Bayes
  threshold ``cost_fp / (cost_fp + cost_fn)`` of calibrated probabilities;
* ``temperature`` - the logit divided by one fitted temperature (no intercept), Bayes threshold.

:func:`choose_recalibration` picks among them by stratified cross-validated expected cost on the
adaptation labels only, then refits the winner on all of them.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.recalibration import fit_recalibration
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> p = 1 / (1 + np.exp(-(3 * (y - 0.5) + rng.normal(size=200) + 2)))  # scores shifted up
    >>> r = fit_recalibration(y, p, "platt", costs=(1.0, 1.0))
    >>> r.threshold, round(float(np.mean((r.apply(p) >= r.threshold) == y)), 2) > round(float(np.mean((p >= 0.5) == y)), 2)
    (0.5, True)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.special import expit

from closedloop.stats.business import choose_threshold
from closedloop.stats.errors import StatsError

Method = Literal["threshold", "platt", "temperature"]
METHODS: tuple[Method, ...] = ("threshold", "platt", "temperature")
EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def _p_pos(proba: Any) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 2:
        if p.shape[1] != 2:
            raise StatsError(f"recalibration is for binary tasks; got probabilities of shape {p.shape}")
        p = p[:, 1]
    return p.reshape(-1)


class Recalibration(BaseModel):
    """``P'(pos) = sigmoid(slope * logit(P(pos)) + intercept)`` and the decision ``P' >= threshold``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method
    slope: float = 1.0
    intercept: float = 0.0
    threshold: float
    costs: tuple[float, float]
    """``(cost_false_positive, cost_false_negative)`` the threshold was chosen at."""
    n_fit: int
    """Labels it was fitted on."""

    def apply(self, proba: Any) -> np.ndarray:
        """Recalibrated P(pos) for the champion's probabilities (``(N,)`` or ``(N, 2)``)."""
        p = _p_pos(proba)
        if self.method == "threshold":
            return p
        return expit(self.slope * _logit(p) + self.intercept)

    def decide(self, proba: Any) -> np.ndarray:
        return self.apply(proba) >= self.threshold


def _fit_logistic(z: np.ndarray, y: np.ndarray, *, intercept: bool) -> tuple[float, float]:
    """Maximum likelihood ``(slope, intercept)`` of ``y ~ sigmoid(slope * z + intercept)``
    (Newton steps with a tiny ridge, so separable labels still give finite values)."""
    w = np.array([1.0, 0.0])
    X = np.column_stack([z, np.ones_like(z)]) if intercept else z[:, None]
    w = w[: X.shape[1]]

    def loss(w: np.ndarray) -> float:
        m = X @ w
        return float(np.sum(np.logaddexp(0, m) - y * m) + 0.5e-3 * np.sum(w * w))

    current = loss(w)
    for _ in range(50):
        q = expit(X @ w)
        grad = X.T @ (q - y) + 1e-3 * w
        H = (X * (q * (1 - q))[:, None]).T @ X + 1e-3 * np.eye(len(w))
        step = np.linalg.solve(H, grad)
        # damped: a full Newton step on nearly separable labels overshoots to absurd slopes
        t = 1.0
        while t > 1e-6 and loss(w - t * step) > current:
            t /= 2
        w = w - t * step
        new = loss(w)
        if np.max(np.abs(t * step)) < 1e-8 or current - new < 1e-12 * max(1.0, abs(current)):
            break
        current = new
    return float(w[0]), float(w[1]) if intercept else 0.0


def fit_recalibration(
    y_true: Any, proba: Any, method: Method, *, costs: tuple[float, float]
) -> Recalibration:
    """Fit one recalibration method on labeled production cases (module docstring)."""
    y = np.asarray(y_true).reshape(-1).astype(int)
    p = _p_pos(proba)
    if len(y) != len(p):
        raise StatsError(f"{len(y)} labels but {len(p)} predictions")
    if set(np.unique(y)) - {0, 1}:
        raise StatsError(f"recalibration needs binary labels 0/1; got {sorted(set(np.unique(y)))}")
    if y.min() == y.max():
        raise StatsError(f"recalibration needs both classes among the labels; all {len(y)} are {y[0]}")
    cost_fp, cost_fn = (float(c) for c in costs)
    bayes = cost_fp / (cost_fp + cost_fn)
    if method == "threshold":
        t = choose_threshold(y, p, cost_fp=cost_fp, cost_fn=cost_fn, prevalence=float(y.mean()))
        return Recalibration(method=method, threshold=t, costs=(cost_fp, cost_fn), n_fit=len(y))
    if method not in METHODS:
        raise StatsError(f"unknown recalibration method {method!r}; expected one of {METHODS}")
    z = _logit(p)
    if np.ptp(z) < 1e-6:  # e.g. saturated scores: a slope on a constant is not identified
        raise StatsError(
            f"{method}: the champion's scores are all equal on these {len(y)} labels (P(pos) = {p[0]:.6g}); "
            "nothing to recalibrate"
        )
    slope, icpt = _fit_logistic(z, y.astype(float), intercept=method == "platt")
    return Recalibration(
        method=method, slope=slope, intercept=icpt, threshold=bayes, costs=(cost_fp, cost_fn), n_fit=len(y)
    )


def expected_cost(y: np.ndarray, decisions: np.ndarray, costs: tuple[float, float]) -> float:
    """Mean cost per case: ``cost_fp`` per false alarm, ``cost_fn`` per miss."""
    y = np.asarray(y).astype(int)
    d = np.asarray(decisions).astype(bool)
    return float((costs[0] * np.sum(d & (y == 0)) + costs[1] * np.sum(~d & (y == 1))) / max(len(y), 1))


class RecalibrationChoice(BaseModel):
    """The chosen method, refitted on every adaptation label, and what the choice was based on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chosen: Recalibration
    cv_cost: dict[str, float]
    """Cross-validated expected cost per case of each method (adaptation labels only)."""
    folds: int


def stratified_folds(y: np.ndarray, folds: int, seed: int, *, what: str) -> tuple[np.ndarray, int]:
    """Each label's fold index (classes spread evenly, seeded) and the fold count actually used
    (``folds``, fewer when a class has fewer labels; at least 2, else a StatsError naming ``what``).
    Classes are ``0..max(y)`` (at least 0 and 1): each needs 2 labels."""
    counts = np.bincount(y, minlength=2)
    k = int(min(folds, counts.min()))
    if k < 2:
        raise StatsError(f"{what} needs at least 2 labels of each class; got {counts.tolist()}")
    rng = np.random.default_rng([seed, 31])
    fold = np.empty(len(y), int)
    for c in range(len(counts)):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold, k


def choose_recalibration(
    y_true: Any,
    proba: Any,
    *,
    costs: tuple[float, float],
    methods: tuple[Method, ...] = METHODS,
    folds: int = 5,
    seed: int = 0,
) -> RecalibrationChoice:
    """Pick the method with the lowest stratified ``folds``-fold expected cost (ties: the order of
    ``methods``, simplest first), then refit it on all the labels."""
    y = np.asarray(y_true).reshape(-1).astype(int)
    p = _p_pos(proba)
    fold, k = stratified_folds(y, folds, seed, what="choosing a recalibration")
    cv: dict[str, float] = {}
    for m in methods:
        cost = 0.0
        for f in range(k):
            tr, te = fold != f, fold == f
            try:
                r = fit_recalibration(y[tr], p[tr], m, costs=costs)
            except StatsError:
                cost = float("inf")
                break
            cost += expected_cost(y[te], r.decide(p[te]), costs) * te.sum()
        cv[m] = cost / len(y)
    best = min(methods, key=lambda m: (cv[m], methods.index(m)))
    return RecalibrationChoice(chosen=fit_recalibration(y, p, best, costs=costs), cv_cost=cv, folds=k)
