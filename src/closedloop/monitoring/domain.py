"""Is the window distinguishable from the reference, and can the reference still speak for it?

A **domain classifier** is trained to tell reference rows from window rows, on what the monitor
already has for both: the model's positive-class log-odds and confidence, the PCA-reduced
embeddings (when the profile has them) and the monitored summary features (images: intensity
statistics and a grid of mean intensities; tables: the columns). The reference side is every
held-out row the profile keeps (``ReferenceProfile.domain``), not only the reference half. On the
development half of PneumoniaMNIST's test split, both changes made the classifier see the
acquisition shift the outputs barely show (``benchmarks/tune_monitor_domain.py``). Its scores are cross-fitted (each row scored by a model
that did not see it), which gives two things:

* the **domain AUC** and a one-sided Mann-Whitney p-value: 0.5 when the window looks like the
  reference, above when a classifier can separate them (the covariate shift CBPE cannot see when the
  confidences keep their marginal distribution);
* **importance weights** for the labeled reference rows, ``w(x) = p(window | x) / p(reference | x)``
  (times the size ratio), the density ratio that turns the reference into a stand-in for the window.
  Their **effective sample size** ``(sum w)^2 / sum w^2`` says how many reference rows still speak for
  the window; when a few rows carry the weight (small ESS fraction, or one row with a large share),
  no reweighting of the reference can be trusted and the estimate is flagged.

The reweighted reference gives a **weighted calibration**: Platt scaling of the positive-class
log-odds fitted on the labeled reference rows with the importance weights, applied to the window's
probabilities before the confidence-based estimate (binary tasks). Under covariate shift (the label
given the inputs unchanged) this is the window's calibration; under concept shift nothing label-free
is, and the domain AUC and the drift tests are what flag it.

What it rests on: the reference rows' labels are correct and the reference is held out from
training; the classifier is small (L2 logistic regression, a handful of inputs), so with a reference
of ~100 rows it detects marked shifts, not subtle ones.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.stats import mannwhitneyu

from closedloop.monitoring.drift.base import Sample

FOLDS = 2
"""Cross-fitting folds of the domain classifier. Two: each half's Mann-Whitney test on scores from a
classifier fitted on the other half is exact (given that half, its rows are exchangeable under no
shift), and the two are combined by Bonferroni; a Mann-Whitney test over scores pooled from several
folds is not (the folds share rows), and with some 40 inputs it flagged clean windows."""
MIN_ROWS = 10
"""Fewest reference rows and window rows the check runs on."""
C = 0.1
"""Inverse L2 strength of the domain classifier (inputs standardized)."""
MAX_EMBEDDING_DIMS = 8
"""Leading PCA components of the embeddings given to the domain classifier (more overfit ~100 rows)."""
CLIP = 1e-4
WINSORIZE = 3.0
"""Standardized inputs are clipped at this many standard deviations: one outlying image (a summary
feature far in the tail) would otherwise get an extreme score and an importance weight that leaves
the reference a handful of effective rows."""


class DomainCheck(BaseModel):
    """The domain classifier's verdict on one window (JSON: ``domain`` in each window's result)."""

    model_config = ConfigDict(extra="forbid")

    auc: float
    """Cross-fitted AUC of telling window rows from reference rows (0.5: indistinguishable)."""
    p_value: float
    """One-sided p-value of the window's rows scoring above the reference's: a Mann-Whitney test per
    cross-fitting fold (exact: scored by a classifier fitted on the other fold), Bonferroni over folds."""
    ess: float
    """Effective sample size of the reference under the importance weights."""
    ess_fraction: float
    """``ess`` / reference rows (1: the reference speaks for the window as it is)."""
    max_weight_share: float
    """Largest single reference row's share of the total weight."""
    inputs: list[str]
    n_reference: int
    n_window: int


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, CLIP, 1 - CLIP)
    return np.log(p / (1 - p))


def domain_inputs(
    s: Sample, problem_type: str, embeddings: bool = True, features: bool = False
) -> tuple[np.ndarray, list[str]]:
    """The classifier's inputs for a sample: positive-class log-odds / per-class log-probabilities and
    confidence, (``embeddings``) the leading embedding components when present, and (``features``)
    the monitored summary features (missing values stay NaN here; :func:`domain_check` fills them)."""
    if s.proba is None:
        raise ValueError("domain check: the sample has no probabilities")
    p = np.asarray(s.proba, dtype=np.float64)
    cols: list[np.ndarray] = []
    names: list[str] = []
    if problem_type == "binary":
        cols.append(_logit(p[:, -1])[:, None])
        names.append("positive_log_odds")
    else:
        cols.append(np.log(np.clip(p, CLIP, 1.0)))
        names += [f"log_p{k}" for k in range(p.shape[1])]
    conf = p.max(axis=1) if problem_type != "binary" else np.maximum(p[:, -1], 1 - p[:, -1])
    cols.append(_logit(np.clip(conf, 0.5, 1 - CLIP))[:, None])
    names.append("confidence_log_odds")
    if embeddings and _has_embeddings(s):
        e = np.asarray(s.embeddings, dtype=np.float64)[:, :MAX_EMBEDDING_DIMS]
        cols.append(e)
        names += [f"embedding_pc{k}" for k in range(e.shape[1])]
    if features and _has_features(s):
        cols.append(np.asarray(s.features, dtype=np.float64))
        names += [f"feature{k}" for k in range(s.features.shape[1])]
    return np.concatenate(cols, axis=1), names


def _has_features(s: Sample) -> bool:
    return s.features is not None and s.features.ndim == 2 and s.features.shape[1] > 0


def _has_embeddings(s: Sample) -> bool:
    return s.embeddings is not None and s.embeddings.ndim == 2 and s.embeddings.shape[1] > 0


def _cross_fitted_scores(
    X: np.ndarray, z: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold P(window | x) for every row (stratified folds), and each row's fold."""
    from sklearn.linear_model import LogisticRegression

    fold = np.empty(len(z), dtype=int)
    for cls in (0, 1):
        idx = np.flatnonzero(z == cls)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % FOLDS
    out = np.empty(len(z))
    for f in range(FOLDS):
        test = fold == f
        train = ~test
        mu, sd = X[train].mean(axis=0), X[train].std(axis=0) + 1e-9
        clf = LogisticRegression(C=C, max_iter=200)
        clf.fit(np.clip((X[train] - mu) / sd, -WINSORIZE, WINSORIZE), z[train])
        out[test] = clf.predict_proba(np.clip((X[test] - mu) / sd, -WINSORIZE, WINSORIZE))[:, 1]
    return out, fold


def domain_check(
    ref: Sample, win: Sample, problem_type: str, rng: np.random.Generator, features: bool = True
) -> tuple[DomainCheck, np.ndarray]:
    """The verdict and the importance weights of the reference rows (normalized to mean 1).
    ``features``: give the classifier the summary features too (when both sides have the same ones)."""
    # embeddings only when both sides have them (the live monitor sees the served outputs only), and
    # features only when both have the same columns (a live window logged without inputs has none)
    both = _has_embeddings(ref) and _has_embeddings(win)
    feats = (
        features
        and _has_features(ref)
        and _has_features(win)
        and ref.features.shape[1] == win.features.shape[1]
    )
    Xr, names = domain_inputs(ref, problem_type, both, feats)
    Xw, names_w = domain_inputs(win, problem_type, both, feats)
    if names != names_w:
        raise ValueError(f"domain check: reference inputs {names} differ from the window's {names_w}")
    nr, nw = len(Xr), len(Xw)
    if min(nr, nw) < MIN_ROWS:
        raise ValueError(
            f"domain check: {nr} reference and {nw} window rows; at least {MIN_ROWS} of each are needed"
        )
    X = np.concatenate([Xr, Xw])
    missing = ~np.isfinite(X)
    if missing.any():  # a missing table value: the column's mean over both sides (all missing: 0)
        with np.errstate(all="ignore"):
            fill = np.nan_to_num(np.nanmean(np.where(missing, np.nan, X), axis=0))
        X = np.where(missing, fill[None, :], X)
    varies = X.std(axis=0) > 0  # a constant input (a column that never changes) tells nothing apart
    X, names = X[:, varies], [n for n, v in zip(names, varies, strict=True) if v]
    z = np.concatenate([np.zeros(nr, dtype=int), np.ones(nw, dtype=int)])
    s, fold = _cross_fitted_scores(X, z, rng)
    sr, sw = s[:nr], s[nr:]
    auc = float(mannwhitneyu(sw, sr).statistic / (nr * nw))
    # the p-value: one exact test per fold (scores of rows the classifier did not see), Bonferroni
    per_fold = [
        mannwhitneyu(s[(fold == f) & (z == 1)], s[(fold == f) & (z == 0)], alternative="greater").pvalue
        for f in range(FOLDS)
    ]
    p_value = min(1.0, FOLDS * float(min(per_fold)))
    sr = np.clip(sr, CLIP, 1 - CLIP)
    w = sr / (1 - sr) * (nr / nw)
    w = w / w.mean()
    ess = float(w.sum() ** 2 / np.sum(w**2))
    check = DomainCheck(
        auc=auc,
        p_value=p_value,
        ess=ess,
        ess_fraction=ess / nr,
        max_weight_share=float(w.max() / w.sum()),
        inputs=names,
        n_reference=nr,
        n_window=nw,
    )
    return check, w


def weighted_platt(
    ref_proba: np.ndarray, ref_labels: np.ndarray, weights: np.ndarray, win_proba: np.ndarray
) -> np.ndarray:
    """The window's binary probabilities recalibrated by Platt scaling fitted on the reference rows
    with importance weights (the reference's calibration, reweighted to look like the window)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(ref_labels).reshape(-1).astype(int)
    if len(np.unique(y)) < 2:
        raise ValueError("weighted calibration: the reference labels hold a single class")
    x = _logit(np.asarray(ref_proba, dtype=np.float64)[:, -1])[:, None]
    clf = LogisticRegression(C=1e4, max_iter=500)
    clf.fit(x, y, sample_weight=weights)
    p1 = clf.predict_proba(_logit(np.asarray(win_proba, dtype=np.float64)[:, -1])[:, None])[:, 1]
    return np.stack([1 - p1, p1], axis=1)
