"""Label-free performance estimation from calibrated confidences (CBPE).

If the probabilities are calibrated, each sample's label is a draw from its predicted distribution.
The expected accuracy is then the mean probability of the predicted class, and the expected AUC is
the AUC computed with fractional labels. The interval comes from simulating labels from the
probabilities (the sampling spread of the realized metric on this window, *if* calibration holds).
Under covariate shift calibration usually degrades (models get over-confident), so the estimate is a
lower bound on trouble, not a guarantee; the drift tests are the primary alarm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from closedloop.monitoring.drift.predictions import confidences, predicted_classes
from closedloop.stats.metrics import ORDINAL_METRICS

SUPPORTED = ("acc", "auc", "balanced_accuracy", *ORDINAL_METRICS)
RANKED = ORDINAL_METRICS
"""Estimated for ordinal tasks only: distances between ranks."""


def _auc_from_ranks(ranks: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """AUC for each row of 0/1 labels ``Y`` (D, N) given score ranks (N,)."""
    npos = Y.sum(axis=1)
    nneg = Y.shape[1] - npos
    s = Y @ ranks
    with np.errstate(invalid="ignore", divide="ignore"):
        return (s - npos * (npos + 1) / 2.0) / (npos * nneg)


def expected_auc_binary(p: np.ndarray) -> float:
    """AUC with fractional labels: sum_{i!=j} p_i (1 - p_j) [s_i > s_j] / sum_{i!=j} p_i (1 - p_j),
    ties counting one half (scores are the probabilities themselves)."""
    p = np.asarray(p, dtype=np.float64)
    if len(p) < 2:
        return float("nan")
    uniq, inv = np.unique(p, return_inverse=True)
    P = np.bincount(inv, weights=p, minlength=len(uniq))
    Q = np.bincount(inv, weights=1 - p, minlength=len(uniq))
    self_pairs = np.bincount(inv, weights=p * (1 - p), minlength=len(uniq))
    below = np.concatenate([[0.0], np.cumsum(Q)[:-1]])
    num = float(np.sum(P * below) + 0.5 * np.sum(P * Q - self_pairs))
    den = float(p.sum() * (1 - p).sum() - np.sum(p * (1 - p)))
    return num / den if den > 0 else float("nan")


def _metric_from_labels(metric: str, y: np.ndarray, proba: np.ndarray, problem: str, thr: float) -> float:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    y = np.asarray(y).reshape(len(y), -1)
    if problem == "multilabel":
        if metric == "acc":
            return float(((proba >= 0.5) == y).mean())
        vals = [roc_auc_score(y[:, k], proba[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
        return float(np.mean(vals)) if vals else float("nan")
    yy = y.reshape(-1).astype(int)
    if metric in RANKED:
        if problem != "ordinal":
            return float("nan")
        from closedloop.stats.metrics import compute_metric

        return compute_metric(metric, yy, proba, "ordinal")
    pred = predicted_classes(proba, problem, thr)
    if metric == "acc":
        return float((pred == yy).mean())
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(yy, pred)) if len(np.unique(yy)) > 1 else float("nan")
    if metric == "auc":
        if len(np.unique(yy)) < 2:
            return float("nan")
        if problem == "binary":
            return float(roc_auc_score(yy, proba[:, 1]))
        present = np.unique(yy)
        vals = [roc_auc_score(yy == k, proba[:, k]) for k in present]
        return float(np.mean(vals))
    return float("nan")


def realized(
    metrics: list[str], y: np.ndarray, proba: np.ndarray, problem: str, thr: float
) -> dict[str, float]:
    """Metrics computed with the true labels."""
    return {m: _metric_from_labels(m, y, proba, problem, thr) for m in metrics if m in SUPPORTED}


def _simulate_labels(proba: np.ndarray, problem: str, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(D, N) sampled class indices (binary: 0/1), or (D, N, L) for multilabel."""
    if problem == "binary":
        return (rng.random((draws, len(proba))) < proba[None, :, 1]).astype(np.int64)
    if problem == "multilabel":
        return (rng.random((draws, *proba.shape)) < proba[None]).astype(np.int64)
    cum = np.cumsum(proba, axis=1)
    u = rng.random((draws, len(proba), 1))
    return np.minimum((u > cum[None]).sum(axis=2), proba.shape[1] - 1)


def estimate(
    proba: np.ndarray,
    problem: str,
    threshold: float,
    metrics: list[str],
    *,
    draws: int = 200,
    rng: np.random.Generator | None = None,
) -> dict[str, dict[str, float]]:
    """Estimated metric values with a 95% interval: ``{metric: {"value", "low", "high"}}``."""
    rng = rng or np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {}
    n = len(proba)
    if n == 0 or problem == "regression":
        return out
    sims = _simulate_labels(proba, problem, draws, rng)
    pred = predicted_classes(proba, problem, threshold) if problem != "multilabel" else None
    for m in metrics:
        if m not in SUPPORTED or (m in RANKED and problem != "ordinal"):
            continue
        if m in RANKED:
            value, dist = _expected_rank_metric(m, proba, pred, sims)
        elif m == "acc":
            if problem == "multilabel":
                value = float(np.maximum(proba, 1 - proba).mean())
                dist = ((proba[None] >= 0.5) == sims).mean(axis=(1, 2))
            else:
                value = float(confidences(proba, problem, threshold).mean())
                dist = (sims == pred[None]).mean(axis=1)
        elif m == "auc":
            if problem == "binary":
                value = expected_auc_binary(proba[:, 1])
                dist = _auc_from_ranks(rankdata(proba[:, 1]), sims.astype(np.float64))
            elif problem == "multilabel":
                L = proba.shape[1]
                value = float(np.nanmean([expected_auc_binary(proba[:, k]) for k in range(L)]))
                dist = np.nanmean(
                    [
                        _auc_from_ranks(rankdata(proba[:, k]), sims[:, :, k].astype(np.float64))
                        for k in range(L)
                    ],
                    axis=0,
                )
            else:
                K = proba.shape[1]
                value = float(np.nanmean([expected_auc_binary(proba[:, k]) for k in range(K)]))
                dist = np.nanmean(
                    [
                        _auc_from_ranks(rankdata(proba[:, k]), (sims == k).astype(np.float64))
                        for k in range(K)
                    ],
                    axis=0,
                )
        else:  # balanced accuracy: expected recall per class from the fractional confusion matrix
            if problem == "multilabel":
                continue
            K = proba.shape[1]
            onehot = np.eye(K)[pred]
            conf = proba.T @ onehot  # (true k, predicted j) expected counts
            with np.errstate(invalid="ignore", divide="ignore"):
                rec = np.diag(conf) / conf.sum(axis=1)
            value = float(np.nanmean(rec))
            hit = sims == pred[None]  # (D, N)
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls = np.stack(
                    [(hit & (sims == k)).sum(axis=1) / (sims == k).sum(axis=1) for k in range(K)], axis=1
                )
            dist = np.nanmean(recalls, axis=1)
        dist = dist[np.isfinite(dist)]
        low, high = np.quantile(dist, [0.025, 0.975]) if len(dist) else (np.nan, np.nan)
        out[m] = {"value": float(value), "low": float(low), "high": float(high)}
    return out


def _expected_rank_metric(
    metric: str, proba: np.ndarray, pred: np.ndarray, sims: np.ndarray
) -> tuple[float, np.ndarray]:
    """An ordinal task's mean absolute rank error or quadratic weighted kappa: the value from the expected
    confusion matrix (true rank drawn from each row's probabilities, the predicted rank fixed), the spread from
    the simulated labels ``sims`` (D, N)."""
    from closedloop.stats.metrics import make_metric

    k = proba.shape[1]
    ranks = np.arange(k)
    if metric == "mae":
        value = float((proba * np.abs(ranks[None, :] - pred[:, None])).sum(axis=1).mean())
        return value, np.abs(sims - pred[None]).mean(axis=1)
    qwk = make_metric("qwk", "ordinal")
    onehot_pred = np.eye(k)[pred]
    # the expected confusion matrix as weights: row b of W is one (true rank, predicted rank) cell per example
    expected = qwk.weighted(np.repeat(ranks, len(pred)), np.tile(onehot_pred, (k, 1)), proba.T.reshape(1, -1))
    per_draw = np.array(
        [qwk.weighted(sims[d], onehot_pred, np.ones((1, len(pred))))[0] for d in range(len(sims))]
    )
    return float(expected[0]), per_draw


def reliability(
    proba: np.ndarray, y: np.ndarray, problem: str, threshold: float, bins: int = 10
) -> dict[str, Any]:
    """Binned confidence vs. accuracy (the calibrated confidence-accuracy relation) and its ECE."""
    if problem in ("regression", "multilabel") or len(proba) == 0:
        return {}
    conf = confidences(proba, problem, threshold)
    correct = predicted_classes(proba, problem, threshold) == np.asarray(y).reshape(-1).astype(int)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    rows = {"bin_low": [], "bin_high": [], "confidence": [], "accuracy": [], "count": []}
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if not mask.any():
            continue
        rows["bin_low"].append(float(edges[b]))
        rows["bin_high"].append(float(edges[b + 1]))
        rows["confidence"].append(float(conf[mask].mean()))
        rows["accuracy"].append(float(correct[mask].mean()))
        rows["count"].append(int(mask.sum()))
        ece += mask.mean() * abs(conf[mask].mean() - correct[mask].mean())
    return {**rows, "ece": float(ece)}
