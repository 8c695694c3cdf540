"""Bootstrap confidence intervals: stratified, seeded and vectorized.

A resample is represented by how often each example was drawn (a row of a weight matrix), so one
pass of a weighted metric scores many resamples at once; AUC is computed from tie-grouped ranks per
resample rather than by calling scikit-learn 1,000 times. Stratified resampling draws within each
class, so every resample keeps the class counts (and AUC stays defined).

Rows that come in groups (``data.group``: a classroom's pupils, a patient's visits) are not independent:
a resample of rows treats 40 pupils of one classroom as 40 pieces of evidence and gives an interval too
narrow. With ``clusters`` a resample draws whole groups with replacement, each row weighted by how often
its group was drawn (the cluster bootstrap); class strata are then not kept.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.bootstrap import metrics_with_ci
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    >>> r = metrics_with_ci(["auc"], y, p, "binary", n_resamples=200)
    >>> r["auc"]["ci95"][0] < r["auc"]["value"] < r["auc"]["ci95"][1]
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import Convention, Metric, make_metric, prepare

_MAX_CELLS = 4_000_000
"""Largest weight matrix (resamples x examples) held at once: bounds memory to ~32 MB per matrix."""


def strata_for(y: np.ndarray, problem_type: str) -> np.ndarray | None:
    """Stratification labels: the class for classification, none for multi-label and regression."""
    if problem_type in ("binary", "multiclass", "ordinal"):
        return np.asarray(y).reshape(len(y)).astype(np.int64)
    return None


def weight_chunks(
    n: int,
    n_resamples: int,
    seed: int,
    strata: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Yield weight matrices ``(b, n)`` (draw counts) totalling ``n_resamples`` rows.

    Deterministic for a given ``(n, n_resamples, seed, strata, clusters)``: two models scored with the
    same arguments see the same resamples (that is what makes a comparison paired). With ``clusters``
    (one id per row) whole clusters are drawn and ``strata`` is ignored.

    Example (two groups of three rows: each resample weighs a group's rows alike):
        >>> import numpy as np
        >>> W = next(weight_chunks(6, 4, seed=0, clusters=np.array([0, 0, 0, 1, 1, 1])))
        >>> bool((W[:, :3] == W[:, :1]).all() and (W.sum(1) == 6).all())
        True
    """
    if n_resamples < 1:
        raise StatsError(f"n_resamples must be at least 1, got {n_resamples}")
    if clusters is not None:
        yield from _cluster_weight_chunks(n, n_resamples, seed, clusters)
        return
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
    chunk = max(1, min(n_resamples, _MAX_CELLS // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        draws = np.concatenate([g[rng.integers(0, len(g), size=(b, len(g)))] for g in groups], axis=1)
        flat = (draws + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def usable_clusters(groups: Any) -> np.ndarray | None:
    """``groups`` as cluster ids for a resample of whole groups, or None (rows resampled) when there are none or
    only one: a single group cannot vary between resamples, and a split of few groups can hold just one.

    Example:
        >>> usable_clusters(["a", "a", "b"]).tolist(), usable_clusters(["a", "a"]), usable_clusters(None)
        (['a', 'a', 'b'], None, None)
    """
    if groups is None:
        return None
    ids = np.asarray(groups)
    return ids if len(np.unique(ids.astype(str))) >= 2 else None


def _cluster_weight_chunks(n: int, n_resamples: int, seed: int, clusters: np.ndarray) -> Iterator[np.ndarray]:
    """Weight matrices of the cluster bootstrap: each resample draws as many clusters as there are, with
    replacement; a row's weight is how often its cluster was drawn."""
    ids = np.asarray(clusters).reshape(-1)
    if len(ids) != n:
        raise StatsError(f"clusters has {len(ids)} ids for {n} rows")
    _, codes = np.unique(ids.astype(str), return_inverse=True)
    k = int(codes.max()) + 1 if n else 0
    if k < 2:
        raise StatsError(f"a cluster bootstrap needs at least 2 groups, got {k}")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _MAX_CELLS // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        draws = rng.integers(0, k, size=(b, k)) + (np.arange(b) * k)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * k).reshape(b, k)
        yield counts[:, codes].astype(np.float64)
        done += b


def percentile_ci(samples: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap values; (nan, nan) when most are undefined."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0 or len(s) < 0.5 * len(np.asarray(samples)):
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(s, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def bootstrap_distribution(
    metric: Metric,
    y: np.ndarray,
    P: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    stratify: bool = True,
    clusters: np.ndarray | None = None,
) -> np.ndarray:
    """The metric on each resample (``(n_resamples,)``; NaN where undefined). ``y, P`` prepared."""
    strata = strata_for(y, metric.problem_type) if stratify else None
    parts = [metric.weighted(y, P, W) for W in weight_chunks(len(y), n_resamples, seed, strata, clusters)]
    return np.concatenate(parts)


def bootstrap_ci(
    metric_fn: Metric | Callable[[Any, Any], float],
    y_true: Any,
    proba: Any,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    stratify: bool = True,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` at level ``1 - alpha``.

    ``metric_fn`` is a :class:`~closedloop.stats.metrics.Metric` (from ``make_metric``; vectorized)
    or any ``f(y_true, proba) -> float`` (evaluated once per resample: slower). Stratification is
    by class when ``y_true`` is a 1-D vector of class labels.
    """
    if not 0 < alpha < 1:
        raise StatsError(f"alpha must be within (0, 1), got {alpha}")
    if isinstance(metric_fn, Metric):
        y, P = metric_fn.prepare(y_true, proba)
        metric_fn.check_defined(y, P)
        dist = bootstrap_distribution(metric_fn, y, P, n_resamples=n_resamples, seed=seed, stratify=stratify)
        return percentile_ci(dist, alpha)
    y = np.asarray(y_true)
    P = np.asarray(proba)
    if len(y) != len(P):
        raise StatsError(f"y_true has {len(y)} rows but predictions have {len(P)}")
    strata = None
    if (
        stratify
        and y.ndim == 1
        and (y.dtype.kind in "iub" or np.all(np.mod(y, 1) == 0))
        and len(np.unique(y)) <= 100
    ):
        strata = y.astype(np.int64)
    vals = []
    for W in weight_chunks(len(y), n_resamples, seed, strata):
        for row in W:
            idx = np.repeat(np.arange(len(y)), row.astype(np.int64))
            try:
                vals.append(float(metric_fn(y[idx], P[idx])))
            except ValueError:
                vals.append(float("nan"))
    return percentile_ci(np.array(vals), alpha)


def metrics_with_ci(
    names: Sequence[str],
    y_true: Any,
    proba: Any,
    problem_type: str,
    *,
    threshold: float | None = None,
    convention: Convention = "standard",
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    clusters: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """``{name: {"value": v, "ci95": [lo, hi]}}`` for each metric, all on the same resamples (of whole
    ``clusters`` where given)."""
    metrics = [make_metric(n, problem_type, threshold=threshold, convention=convention) for n in names]
    y, P = prepare(y_true, proba, problem_type)
    ones = np.ones((1, len(y)))
    values = {}
    for m in metrics:
        m.check_defined(y, P)
        values[m.name] = float(m.weighted(y, P, ones)[0])
    dists: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics}
    for W in weight_chunks(len(y), n_resamples, seed, strata_for(y, problem_type), clusters):
        for m in metrics:
            dists[m.name].append(m.weighted(y, P, W))
    out = {}
    for m in metrics:
        lo, hi = percentile_ci(np.concatenate(dists[m.name]), alpha)
        out[m.name] = {"value": values[m.name], "ci95": [lo, hi]}
    return out
