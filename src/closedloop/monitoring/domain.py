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

The window's **p-value** (what flags the estimate) is a permutation test on the same inputs,
standardized on both sides together: the ridge-regularized Hotelling statistic
``D' (S + RIDGE I)^-1 D`` of the difference ``D`` between the window's and the reference's mean
inputs (``S``: their correlation matrix), against ``PERMUTATIONS`` random relabellings of which rows are
the window. It uses every row for both the direction and the test, where the classifier's cross-fitted
p-value tests each half on its own and pays a factor 2 for the two; it is exact (``(1 + #{T_b >= T}) /
(B + 1)`` is a valid p-value when the rows are exchangeable). On the development half of
PneumoniaMNIST's test split (``benchmarks/tune_monitor_first_window.py``) it flagged every first
window of a test-distribution stream at p <= 0.005 (the cross-fitted classifier: 87%) with the same
in-distribution flag rate. Its smallest p-value is ``1 / (PERMUTATIONS + 1)``, too coarse for the stream
test's late looks (``alpha / (k (k + 1))``): ``stream_look_test: mean_shift`` (the monitor stage's default
since session 15) gives each look enough relabellings, stopped early (``stop_after``, Besag-Clifford);
``classifier`` uses the classifier's p-value (``p_classifier``).

What it rests on: the reference rows' labels are correct and the reference is held out from
training; the classifier is small (L2 logistic regression, a handful of inputs), so with a reference
of ~100 rows it detects marked shifts, not subtle ones.
"""

from __future__ import annotations

from typing import Literal

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
PERMUTATIONS = 1999
"""Relabellings of the window's mean-shift permutation test (smallest p-value 1/2000, ten times below
the per-deployment domain level 0.005; about 0.1 s for a window of 200 against 262 rows)."""
RIDGE = 1.0
"""Ridge added to the inputs' correlation matrix in the mean-shift statistic (read off the development
half: 0.1 and 1 gave the same power, 10 less; 1 flagged fewer in-distribution windows)."""
CHUNK = 500
"""Relabellings drawn at a time (bounds the memory of the permutation test on long streams)."""
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
    """The window's p-value, the one the estimate is flagged on: ``test`` names it (``mean_shift``: the
    permutation test of the module doc; ``classifier``: ``p_classifier``)."""
    p_classifier: float
    """One-sided p-value of the window's rows scoring above the reference's: a Mann-Whitney test per
    cross-fitting fold (exact: scored by a classifier fitted on the other fold), Bonferroni over folds
    (the stream test's looks use it: it reaches far below the permutation test's 1/2000)."""
    test: Literal["mean_shift", "classifier"] = "classifier"
    """Which test gave ``p_value``."""
    permutations: int = 0
    """Relabellings of the mean-shift test (0: not run)."""
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


def mean_shift_test(
    X: np.ndarray,
    n_reference: int,
    rng: np.random.Generator,
    permutations: int = PERMUTATIONS,
    ridge: float = RIDGE,
    stop_after: int | None = None,
) -> float:
    """Permutation p-value of the ridge-regularized Hotelling statistic between the first
    ``n_reference`` rows of ``X`` and the rest (module doc). Inputs are standardized and clipped on
    both sides together, so the statistic of any relabelling is computed the same way (exact test).

    ``stop_after`` (Besag and Clifford's sequential Monte Carlo p-value, 1991): stop at the ``l``-th
    relabelling that brings the exceedances to ``stop_after`` and return ``stop_after / l``; without
    that many in ``permutations``, ``(1 + exceedances) / (permutations + 1)`` as before. Still a valid
    p-value (``P(p <= u) <= u`` under exchangeability), and a window like the reference stops after a few
    dozen relabellings, so ``permutations`` can be large enough for a small level at little cost."""
    if permutations < 1:
        raise ValueError(f"mean-shift test: permutations={permutations}: expected at least 1")
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"mean-shift test: stop_after={stop_after}: expected at least 1 or None")
    n, nw = len(X), len(X) - n_reference
    if min(n_reference, nw) < 1 or X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"mean-shift test: {n_reference} reference and {nw} window rows of {X.shape} inputs")
    Z = np.clip((X - X.mean(axis=0)) / (X.std(axis=0) + 1e-12), -WINSORIZE, WINSORIZE)
    Z = Z - Z.mean(axis=0)  # total zero: the mean difference is the window's sum times 1/nw + 1/nr
    A = np.linalg.inv(np.atleast_2d(np.cov(Z, rowvar=False)) + ridge * np.eye(Z.shape[1]))

    def stat(window_sums: np.ndarray) -> np.ndarray:
        D = window_sums * (1.0 / nw + 1.0 / n_reference)
        return np.einsum("bi,ij,bj->b", D, A, D)

    Zf = Z.astype(np.float32)  # the relabellings' sums in float32, the observed one the same way
    observed = float(stat(Zf[n_reference:].sum(axis=0, dtype=np.float32)[None, :].astype(np.float64))[0])
    exceed, done = 0, 0
    while done < permutations:
        b = min(CHUNK, permutations - done)
        u = rng.random((b, n))
        kth = np.partition(u, nw - 1, axis=1)[:, nw - 1 : nw]
        window = (u <= kth).astype(np.float32)  # a random set of nw rows plays the window
        hits = stat((window @ Zf).astype(np.float64)) >= observed * (1 - 1e-6)  # float32 sums: a tie is a tie
        if stop_after is not None and exceed + int(hits.sum()) >= stop_after:
            # the relabelling (1-based, over all chunks) at which the exceedances reach stop_after
            at = done + int(np.flatnonzero(np.cumsum(hits) == stop_after - exceed)[0]) + 1
            return stop_after / at
        exceed += int(hits.sum())
        done += b
    return (1 + exceed) / (permutations + 1)


def fill_missing(X: np.ndarray) -> np.ndarray:
    """``X`` (reference rows then window rows) with each missing table value replaced by its column's
    mean over both sides (0 for a column missing everywhere), so a missing value is no evidence of a
    shift by itself.

    >>> fill_missing(np.array([[1.0, np.nan], [3.0, np.nan]])).tolist()
    [[1.0, 0.0], [3.0, 0.0]]
    """
    missing = ~np.isfinite(X)
    if not missing.any():
        return X
    with np.errstate(all="ignore"):
        fill = np.nan_to_num(np.nanmean(np.where(missing, np.nan, X), axis=0))
    return np.where(missing, fill[None, :], X)


def domain_matrix(
    ref: Sample, win: Sample, problem_type: str, features: bool = True
) -> tuple[np.ndarray, list[str]]:
    """The reference's rows then the window's, as the domain tests see them: missing values filled
    with the column's mean over both sides, inputs constant over both dropped."""
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
    X = fill_missing(np.concatenate([Xr, Xw]))
    varies = X.std(axis=0) > 0  # a constant input (a column that never changes) tells nothing apart
    X, names = X[:, varies], [n for n, v in zip(names, varies, strict=True) if v]
    return X, names


def domain_check(
    ref: Sample,
    win: Sample,
    problem_type: str,
    rng: np.random.Generator,
    features: bool = True,
    permutations: int = PERMUTATIONS,
    stop_after: int | None = None,
) -> tuple[DomainCheck, np.ndarray]:
    """The verdict and the importance weights of the reference rows (normalized to mean 1).
    ``features``: give the classifier the summary features too (when both sides have the same ones).
    ``permutations``: relabellings of the mean-shift test that gives ``p_value`` (0: the classifier's
    cross-fitted p-value is ``p_value``, as the stream test's looks use it); ``stop_after``: stop the
    relabellings early (:func:`mean_shift_test`)."""
    X, names = domain_matrix(ref, win, problem_type, features)
    nr, nw = len(ref), len(win)
    z = np.concatenate([np.zeros(nr, dtype=int), np.ones(nw, dtype=int)])
    s, fold = _cross_fitted_scores(X, z, rng)
    sr, sw = s[:nr], s[nr:]
    auc = float(mannwhitneyu(sw, sr).statistic / (nr * nw))
    # the p-value: one exact test per fold (scores of rows the classifier did not see), Bonferroni
    per_fold = [
        mannwhitneyu(s[(fold == f) & (z == 1)], s[(fold == f) & (z == 0)], alternative="greater").pvalue
        for f in range(FOLDS)
    ]
    p_classifier = min(1.0, FOLDS * float(min(per_fold)))
    p_value = (
        mean_shift_test(X, nr, rng, permutations, stop_after=stop_after) if permutations > 0 else p_classifier
    )
    sr = np.clip(sr, CLIP, 1 - CLIP)
    w = sr / (1 - sr) * (nr / nw)
    w = w / w.mean()
    ess = float(w.sum() ** 2 / np.sum(w**2))
    check = DomainCheck(
        auc=auc,
        p_value=p_value,
        p_classifier=p_classifier,
        test="mean_shift" if permutations > 0 else "classifier",
        permutations=max(0, int(permutations)),
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
