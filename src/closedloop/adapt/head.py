"""Last-layer fine-tuning: the champion's linear head refitted on a few production labels.

The new logit is ``slope * z + intercept + v · standardize(phi)``, where ``z`` is the champion's
logit (after its temperature) and ``phi`` the penultimate features (``TrainedModel.embed``). With
``v = 0`` it is Platt scaling; ``v`` lets the last layer re-weight features, pulled toward the
champion's own head by an L2 penalty ``l2 * |v|^2`` (a fine-tune that starts at and is shrunk toward
the champion's weights; ``l2`` is chosen by cross-validation on the adaptation labels, never on the
labels that judge). The fit is a penalized logistic regression (Newton steps, numpy): seconds, and
the body of the network is untouched, so the champion's features and reference profile keep their
meaning. Threshold: the Bayes threshold ``cost_fp / (cost_fp + cost_fn)`` of the refitted
probabilities, like Platt's.

Example:
    >>> import numpy as np
    >>> from closedloop.adapt.head import fit_head
    >>> rng = np.random.default_rng(0)
    >>> phi = rng.normal(size=(80, 4)); y = (phi[:, 0] > 0).astype(int); z = phi[:, 1]
    >>> h = fit_head(y, z, phi, l2=1.0, costs=(1.0, 1.0))
    >>> float(np.mean(h.decide(z, phi) == y)) > 0.9
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.special import expit

from closedloop.stats.errors import StatsError

L2_GRID = (0.3, 3.0, 30.0, 300.0)
"""Penalties tried for ``v`` (standardized features): from a free last layer to almost Platt."""


class HeadFit(BaseModel):
    """The refitted head (module docstring) and its decision ``P' >= threshold``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slope: float
    intercept: float
    delta: list[float]
    """``v``: change of the head's weights on the standardized features."""
    center: list[float]
    scale: list[float]
    """Standardization of the features, from the labels it was fitted on."""
    l2: float
    threshold: float
    costs: tuple[float, float]
    n_fit: int

    def logit(self, z: np.ndarray, phi: np.ndarray) -> np.ndarray:
        s = (np.asarray(phi, np.float64) - np.asarray(self.center)) / np.asarray(self.scale)
        return self.slope * np.asarray(z, np.float64) + self.intercept + s @ np.asarray(self.delta)

    def proba(self, z: np.ndarray, phi: np.ndarray) -> np.ndarray:
        return expit(self.logit(z, phi))

    def decide(self, z: np.ndarray, phi: np.ndarray) -> np.ndarray:
        return self.proba(z, phi) >= self.threshold


def fit_head(
    y_true: Any, z: Any, phi: Any, *, l2: float, costs: tuple[float, float], iters: int = 60
) -> HeadFit:
    """Penalized logistic fit of the head on labeled production cases (module docstring)."""
    y = np.asarray(y_true).reshape(-1).astype(np.float64)
    z = np.asarray(z, np.float64).reshape(-1)
    phi = np.asarray(phi, np.float64)
    if phi.ndim != 2 or len(phi) != len(y) or len(z) != len(y):
        raise StatsError(f"head fit: {len(y)} labels, {len(z)} logits, features of shape {phi.shape}")
    if y.min() == y.max():
        raise StatsError(f"head fit needs both classes among the labels; all {len(y)} are {int(y[0])}")
    center = phi.mean(axis=0)
    scale = phi.std(axis=0)
    scale[scale < 1e-8] = 1.0
    X = np.column_stack([z, np.ones_like(z), (phi - center) / scale])
    pen = np.full(X.shape[1], float(l2))
    pen[:2] = 1e-2  # slope and intercept nearly free (as in Platt scaling)
    w = np.zeros(X.shape[1])
    w[0] = 1.0

    def loss(w: np.ndarray) -> float:
        m = X @ w  # log(1 + e^m) - y m, stably, plus the penalty
        return float(np.sum(np.logaddexp(0, m) - y * m) + 0.5 * np.sum(pen * w * w))

    current = loss(w)
    for _ in range(iters):
        q = expit(X @ w)
        grad = X.T @ (q - y) + pen * w
        H = (X * (q * (1 - q))[:, None]).T @ X + np.diag(pen)
        step = np.linalg.solve(H, grad)
        # damped Newton: halve the step until the penalized loss falls (nearly separable labels
        # otherwise overshoot to huge weights)
        t = 1.0
        while t > 1e-6 and loss(w - t * step) > current:
            t /= 2
        w = w - t * step
        new = loss(w)
        if current - new < 1e-10 * max(1.0, abs(current)):
            break
        current = new
    cost_fp, cost_fn = (float(c) for c in costs)
    return HeadFit(
        slope=float(w[0]),
        intercept=float(w[1]),
        delta=w[2:].tolist(),
        center=center.tolist(),
        scale=scale.tolist(),
        l2=float(l2),
        threshold=cost_fp / (cost_fp + cost_fn),
        costs=(cost_fp, cost_fn),
        n_fit=len(y),
    )
