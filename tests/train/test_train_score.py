"""Training scores validation with the one metrics implementation (closedloop.stats.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.models.trained import logits_to_proba
from closedloop.stages.train.engine import score
from closedloop.stats.metrics import compute_metrics


@pytest.mark.parametrize(
    ("problem", "k", "metric"),
    [
        ("binary", 1, "auc"),
        ("binary", 1, "f1"),
        ("multiclass", 4, "balanced_accuracy"),
        ("regression", 1, "mae"),
    ],
)
def test_score_is_the_stats_metric(problem: str, k: int, metric: str) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, k)).astype(np.float32)
    y = rng.normal(size=50) if problem == "regression" else rng.integers(0, max(k, 2), 50)
    want = compute_metrics([metric], y, logits_to_proba(logits, problem), problem)[metric]
    assert score(metric, y, logits, problem) == want


def test_an_undefined_metric_is_nan_not_another_metric() -> None:
    # PR AUC over 3 classes with one class present: undefined. (The removed fallback returned accuracy.)
    logits = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    assert np.isnan(score("pr_auc", np.zeros(20, int), logits, "multiclass"))
    assert np.isnan(score("auc", np.ones(20, int), logits[:, :1], "binary"))
