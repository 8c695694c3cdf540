"""A domain test against the training rows, on model-free inputs: a reference that no deployment's draw decides.

The domain flag (``closedloop.monitoring.domain``) tells a window from the deployment's held-out rows,
a few hundred at most. Its false flags are bounded per deployment, its power is not: a deployment whose
held-out rows happen to lean toward a shift sees that shift as its own distribution (issue 19,
``docs/results/monitor_last_window_explain.txt``: one draw in ten, domain AUC 0.526 against the test
distribution where the others had 0.60-0.66).

The training rows are many and fixed by the model, not by the deployment's luck. In the model's own
outputs they are not exchangeable with unseen rows (the model memorized them), but in the **inputs'
summary features** they are: the monitored features (images: intensity statistics and a 4x4 grid of
mean intensities; tables: the columns) are computed without the model. So the profile keeps a random
sample of training rows' summary features (``train_features``), and each window's features are tested
against them with the same exact permutation test of a ridge-regularized mean shift
(:func:`closedloop.monitoring.domain.mean_shift_test`).

The flag spends the per-deployment domain level with the held-out test (a union: this test at
``train_reference_share`` of the level, the held-out test at the rest), so the stated guarantee is unchanged.
Its exactness is over the draw of the training set, which every deployment of one model shares: for one
training set its own false-flag rate can sit above its share (docs/monitor_decisions.md, "Why the training-rows union
over-flags"); a smaller share bounds that. What it rests on: the training rows and production come from the
same population (the held-out rows' exchangeability assumption, extended to train); a training set
drawn from elsewhere (another site, another period) makes this test flag every window, and the profile
then needs ``train_reference_rows: 0``.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.monitoring.domain import MIN_ROWS, PERMUTATIONS, fill_missing, mean_shift_test


class TrainReferenceCheck(BaseModel):
    """A window against the training rows' features (JSON: ``train_reference`` in each window's result)."""

    model_config = ConfigDict(extra="forbid")

    p_value: float
    """Exact permutation p-value of the window's mean summary features differing from the training rows'."""
    n_train: int
    """Training rows the window was compared with."""
    n_window: int
    features: int
    """Summary features the test used (constant ones dropped)."""


def train_reference_check(
    train_features: np.ndarray,
    window_features: np.ndarray | None,
    rng: np.random.Generator,
    permutations: int = PERMUTATIONS,
) -> TrainReferenceCheck | None:
    """The window's test against the training rows; None when the window has no features of the same
    columns (a live window logged without inputs) or too few rows."""
    if window_features is None or np.ndim(window_features) != 2:
        return None
    tr, win = np.asarray(train_features, np.float64), np.asarray(window_features, np.float64)
    if tr.ndim != 2 or tr.shape[1] != win.shape[1] or tr.shape[1] == 0 or min(len(tr), len(win)) < MIN_ROWS:
        return None
    X = fill_missing(np.concatenate([tr, win]))
    X = X[:, X.std(axis=0) > 0]
    if X.shape[1] == 0:
        return None
    p = mean_shift_test(X, len(tr), rng, permutations)
    return TrainReferenceCheck(p_value=p, n_train=len(tr), n_window=len(win), features=int(X.shape[1]))
