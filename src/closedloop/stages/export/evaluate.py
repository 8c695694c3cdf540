"""Validation metrics of a variant, with a bootstrap interval and the paired difference to the reference.

Paired: every bootstrap resample scores both models on the same validation samples, so the interval
of the difference reflects the models' disagreement, not the sampling noise they share.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.artifacts.export import MetricComparison
from closedloop.stats.metrics import LOWER_IS_BETTER, compute_metric


def metric_value(
    name: str, y: np.ndarray, proba: np.ndarray, problem: str, threshold: float | None = None
) -> float:
    """One metric from labels and probabilities in the package's prediction convention."""
    from sklearn import metrics as M

    y = np.asarray(y)
    if problem == "regression":
        pred = proba.reshape(-1)
        err = pred - y.reshape(-1).astype(float)
        if name == "rmse":
            return float(np.sqrt(np.mean(err**2)))
        if name == "mae":
            return float(np.mean(np.abs(err)))
        raise KeyError(name)
    if problem == "multilabel":
        yy = y.reshape(len(y), -1)
        thr = 0.5 if threshold is None else threshold
        if name == "auc":
            cols = [j for j in range(yy.shape[1]) if 0 < yy[:, j].sum() < len(yy)]
            return (
                float(np.mean([M.roc_auc_score(yy[:, j], proba[:, j]) for j in cols]))
                if cols
                else float("nan")
            )
        if name == "acc":
            return float(np.mean((proba >= thr) == (yy > 0.5)))
        raise KeyError(name)
    yi = y.reshape(-1).astype(int)
    if len(np.unique(yi)) < 2 and name in ("auc", "pr_auc"):
        return float("nan")
    if problem == "binary":
        score = proba[:, 1]
        pred = (score >= (0.5 if threshold is None else threshold)).astype(int)
        table = {
            "auc": lambda: M.roc_auc_score(yi, score),
            "pr_auc": lambda: M.average_precision_score(yi, score),
            "acc": lambda: M.accuracy_score(yi, pred),
            "f1": lambda: M.f1_score(yi, pred, zero_division=0),
            "precision": lambda: M.precision_score(yi, pred, zero_division=0),
            "recall": lambda: M.recall_score(yi, pred, zero_division=0),
            "balanced_accuracy": lambda: M.balanced_accuracy_score(yi, pred),
        }
    else:
        pred = proba.argmax(axis=1)
        k = proba.shape[1]

        def _auc() -> float:
            present = [c for c in range(k) if 0 < (yi == c).sum() < len(yi)]
            return float(np.mean([M.roc_auc_score(yi == c, proba[:, c]) for c in present]))

        table = {
            "auc": _auc,
            "acc": lambda: M.accuracy_score(yi, pred),
            "f1": lambda: M.f1_score(yi, pred, average="macro", zero_division=0),
            "balanced_accuracy": lambda: M.balanced_accuracy_score(yi, pred),
            "precision": lambda: M.precision_score(yi, pred, average="macro", zero_division=0),
            "recall": lambda: M.recall_score(yi, pred, average="macro", zero_division=0),
        }
        if problem == "ordinal":  # distances in ranks, as the stats package defines them
            for rank_metric in ("rmse", "mae", "qwk"):
                table[rank_metric] = lambda m=rank_metric: compute_metric(m, yi, proba, "ordinal")
    if name not in table:
        raise KeyError(name)
    return float(table[name]())


def compare_metric(
    name: str,
    y: np.ndarray,
    proba: np.ndarray,
    proba_ref: np.ndarray,
    problem: str,
    threshold: float | None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> MetricComparison:
    """The variant's metric and its difference to the reference, with paired bootstrap intervals; with
    ``groups`` (``data.group``) each resample draws whole groups."""
    v = metric_value(name, y, proba, problem, threshold)
    r = metric_value(name, y, proba_ref, problem, threshold)
    rng = np.random.default_rng(seed)
    n = len(y)
    members: list[np.ndarray] = []
    if groups is not None:
        _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        members = [np.flatnonzero(codes == k) for k in range(int(codes.max()) + 1)] if n else []
    vals, diffs = [], []
    for _ in range(n_boot):
        if len(members) > 1:
            idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        else:
            idx = rng.integers(0, n, n)
        a = metric_value(name, y[idx], proba[idx], problem, threshold)
        b = metric_value(name, y[idx], proba_ref[idx], problem, threshold)
        if np.isfinite(a) and np.isfinite(b):
            vals.append(a)
            diffs.append(a - b)
    ci = (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))) if vals else (v, v)
    dci = (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if diffs else (v - r, v - r)
    sign = -1.0 if name in LOWER_IS_BETTER else 1.0
    return MetricComparison(
        metric=name, value=v, ci=ci, reference=r, diff=v - r, diff_ci=dci, loss=sign * (r - v)
    )


def all_metrics(
    names: list[str], y: np.ndarray, proba: np.ndarray, problem: str, threshold: float | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = metric_value(name, y, proba, problem, threshold)
        except KeyError:
            continue
    return out
