"""Out-of-fold class probabilities from quick models, averaged: what confident learning ranks on.

Which models (``auto``; the defaults are measured in benchmarks/bench_audit_label_noise.py, the
alternatives tried are listed in docs/audit.md):

* images: a small CNN cross-fitted on the pixels (:mod:`quick_cnn`), averaged with an RBF SVC
  (Platt-scaled; up to ``svc_max_samples``), a distance-weighted kNN and an L2 logistic regression
  on standardized PCA features (the linear model is nearly free and smooths the average).
  The PCA models alone rank digits well but not chest X-rays; the CNN alone is weaker on tiny sets.
* tables: gradient-boosted trees (HistGradientBoosting) averaged with a kNN, both on the imputed,
  standardized columns.

Every model sees the same folds, so the average is still out-of-fold.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

ModelName = Literal["cnn", "hgb", "svc", "knn", "logreg"]
AUTO: dict[str, list[ModelName]] = {"images": ["cnn", "svc", "knn", "logreg"], "table": ["hgb", "knn"]}


def _sklearn_model(name: str, n_train: int, seed: int) -> Any:
    if name == "svc":
        from sklearn.svm import SVC

        return SVC(C=10, gamma="scale", probability=True, random_state=seed)
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=min(10, n_train), weights="distance")
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        # few, shallow-ish trees with a large min leaf: it should not memorize flipped labels
        return HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.08, min_samples_leaf=20, l2_regularization=1.0, random_state=seed
        )
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500, C=0.1)


def sklearn_oof(
    X: np.ndarray,
    y: np.ndarray,
    name: str,
    folds: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    n_classes: int,
) -> np.ndarray:
    """Out-of-fold probabilities of one scikit-learn model (a class absent from a fold's training
    part gets probability 0 there)."""
    from threadpoolctl import threadpool_limits

    P = np.zeros((len(y), n_classes), np.float64)
    for tr, te in folds:
        m = _sklearn_model(name, len(tr), seed)
        # one OpenMP thread (boosted trees): spinning workers on a shared small machine ran 20x slower
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"):
            warnings.simplefilter("ignore")
            m.fit(X[tr], y[tr])
            P[np.ix_(te, m.classes_)] = m.predict_proba(X[te])
    return P


def average_oof(parts: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the models' probabilities, clipped away from 0 and renormalized (cleanlab takes logs)."""
    P = np.mean(list(parts.values()), axis=0)
    P = np.clip(P, 1e-6, None)
    return P / P.sum(1, keepdims=True)
