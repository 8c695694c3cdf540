"""User drift tests for the registry tests, named by import path (``drift_plugins:...``)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from closedloop.monitoring.drift import DriftResult, DriftTest, DriftTestConfig


class FirstColumnShift(DriftTest):
    """p = 0 when the first feature's mean moved by more than ``tolerance``, else 1."""

    name = "first_column_shift"
    description = "first column: mean moved beyond a tolerance"
    covariate = True

    class Config(DriftTestConfig):
        tolerance: float = Field(1.0, gt=0)

    def run(self, ref, win, ctx) -> DriftResult:  # noqa: ANN001
        gap = abs(float(np.nanmean(win.features[:, 0]) - np.nanmean(ref.features[:, 0])))
        return DriftResult(p_value=0.0 if gap > self.config.tolerance else 1.0, statistic=gap)


class AllPositive(DriftTest):
    """A label test: fires when every label of the window is 1."""

    name = "all_positive"
    description = "labels: every label is positive"
    label_evidence = "only positives arrived"
    needs_labels = True
    uses = frozenset({"labels"})

    def run(self, ref, win, ctx) -> DriftResult:  # noqa: ANN001
        return DriftResult(p_value=0.0 if np.all(win.labels == 1) else 1.0, statistic=0.0)


class EmbeddingNorm(DriftTest):
    """Reads only the embeddings: p = 0 when their mean norm moved by more than 1."""

    name = "embedding_norm"
    description = "embeddings: mean norm moved"
    uses = frozenset({"embeddings"})

    def run(self, ref, win, ctx) -> DriftResult:  # noqa: ANN001
        gap = abs(
            float(
                np.linalg.norm(win.embeddings, axis=1).mean() - np.linalg.norm(ref.embeddings, axis=1).mean()
            )
        )
        return DriftResult(p_value=0.0 if gap > 1 else 1.0, statistic=gap)
