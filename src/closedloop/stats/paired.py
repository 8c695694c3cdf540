"""Paired comparison of two models scored on the same examples.

* :func:`compare` - any metric: paired bootstrap of the difference ``a - b`` (same resamples for
  both models), its percentile interval and a bootstrap p-value. ``method="auto"`` keeps the
  bootstrap interval but takes the p-value from DeLong (binary ROC AUC) or McNemar (accuracy).
* :func:`delong` - DeLong's test for two correlated ROC AUCs (binary).
* :func:`mcnemar` - McNemar's test for two classifiers' accuracies (exact below 25 discordant pairs).

Example:
    >>> import numpy as np
    >>> from closedloop.stats.paired import compare
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> good = np.clip(0.5 * y + 0.5 * rng.random(300), 0, 1)
    >>> weak = rng.random(300)
    >>> r = compare("auc", y, good, weak, "binary", n_resamples=300)
    >>> r.delta > 0 and r.p_value < 0.05
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as _st

from closedloop.stats.bootstrap import percentile_ci, strata_for, weight_chunks
from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import Convention, make_metric, prepare

CompareMethod = Literal["bootstrap", "auto"]


@dataclass(frozen=True)
class PairedResult:
    """Model ``a`` against model ``b`` on the same examples; ``delta = value_a - value_b``."""

    metric: str
    delta: float
    ci95: list[float]
    p_value: float
    """Two-sided: H0 'no difference'."""
    method: str
    n: int
    value_a: float
    value_b: float
    higher_is_better: bool
    p_one_sided: float
    """One-sided: H0 '``a`` is not better than ``b``' (direction from ``higher_is_better``)."""
    bound_one_sided: float = float("nan")
    """One-sided (1 - alpha) bootstrap bound on ``delta`` on the side of '``a`` is better': a lower
    bound when higher is better, an upper bound otherwise (the interval of a one-sided claim)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DelongResult:
    auc_a: float
    auc_b: float
    delta: float
    se: float
    z: float
    p_value: float
    ci95: list[float]


@dataclass(frozen=True)
class McNemarResult:
    a_only_correct: int
    """Examples ``a`` gets right and ``b`` wrong."""
    b_only_correct: int
    statistic: float
    p_value: float
    method: str


def _midrank(x: np.ndarray) -> np.ndarray:
    return _st.rankdata(x, method="average")


def delong(y_true: Any, score_a: Any, score_b: Any) -> DelongResult:
    """DeLong's test of ``AUC(a) - AUC(b)`` on the same binary labels (two-sided p-value).

    Scores may be ``(N,)`` P(pos) or ``(N, 2)`` probabilities.
    """
    y, sa = prepare(y_true, score_a, "binary")
    _, sb = prepare(y_true, score_b, "binary")
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        raise StatsError(
            f"DeLong's test needs positives and negatives; y_true has {m} positive(s) and {n} negative(s)"
        )
    aucs, v10s, v01s = [], [], []
    for s in (sa, sb):
        sp, sn = s[pos], s[neg]
        tz = _midrank(np.concatenate([sp, sn]))
        tx, ty = _midrank(sp), _midrank(sn)
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10s.append((tz[:m] - tx) / n)  # per positive: share of negatives ranked below
        v01s.append(1.0 - (tz[m:] - ty) / m)  # per negative: share of positives ranked above
    s10 = np.cov(np.vstack(v10s)) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack(v01s)) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    delta = float(aucs[0] - aucs[1])
    if var <= 1e-300:
        z, p, se = 0.0, 1.0 if delta == 0 else 0.0, 0.0
    else:
        se = float(np.sqrt(var))
        z = delta / se
        p = float(2 * _st.norm.sf(abs(z)))
    half = 1.959963984540054 * se
    return DelongResult(float(aucs[0]), float(aucs[1]), delta, se, float(z), p, [delta - half, delta + half])


def mcnemar(y_true: Any, pred_a: Any, pred_b: Any) -> McNemarResult:
    """McNemar's test for two classifiers' hard predictions on the same examples (two-sided).

    Exact binomial test when there are fewer than 25 discordant pairs, else chi-square with
    continuity correction.
    """
    y = np.asarray(y_true).reshape(len(y_true), -1)
    a = np.asarray(pred_a).reshape(len(pred_a), -1)
    b = np.asarray(pred_b).reshape(len(pred_b), -1)
    if not (y.shape == a.shape == b.shape):
        raise StatsError(f"McNemar needs predictions shaped like y_true; got {y.shape}, {a.shape}, {b.shape}")
    ca = np.all(a == y, axis=1)
    cb = np.all(b == y, axis=1)
    n01 = int(np.sum(ca & ~cb))
    n10 = int(np.sum(~ca & cb))
    k = n01 + n10
    if k == 0:
        return McNemarResult(n01, n10, 0.0, 1.0, "exact")
    if k < 25:
        p = float(min(1.0, 2 * _st.binom.cdf(min(n01, n10), k, 0.5)))
        return McNemarResult(n01, n10, float(min(n01, n10)), p, "exact")
    stat = (abs(n01 - n10) - 1) ** 2 / k
    return McNemarResult(n01, n10, float(stat), float(_st.chi2.sf(stat, 1)), "chi2")


def _hard_predictions(
    scores: np.ndarray, problem_type: str, threshold: float | None, convention: str
) -> np.ndarray:
    t = 0.5 if threshold is None else threshold
    if problem_type in ("binary", "multilabel"):
        return (scores > t) if convention == "medmnist" else (scores >= t)
    return np.argmax(scores, axis=1)


def compare(
    metric: str,
    y_true: Any,
    proba_a: Any,
    proba_b: Any,
    problem_type: str,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    convention: Convention = "standard",
    threshold: float | None = None,
    alpha: float = 0.05,
    method: CompareMethod = "bootstrap",
    clusters: np.ndarray | None = None,
    row_weights: np.ndarray | None = None,
) -> PairedResult:
    """Paired bootstrap of ``metric(a) - metric(b)``: the difference, its interval and p-values.

    Both models are scored on identical (stratified, seeded) resamples, so the interval reflects
    the uncertainty of the *difference*, which is much narrower than that of either score. With
    ``clusters`` (a group id per row) the resamples draw whole groups. ``row_weights`` (one per row) weigh
    each row in every score and resample: e.g. a test split reweighted to another class mix (its
    resamples are stratified by class, so each class keeps its weight).
    """
    m = make_metric(metric, problem_type, threshold=threshold, convention=convention)
    y, Pa = prepare(y_true, proba_a, problem_type)
    _, Pb = prepare(y_true, proba_b, problem_type)
    if Pa.shape != Pb.shape:
        raise StatsError(f"the two models' predictions differ in shape: {Pa.shape} vs {Pb.shape}")
    m.check_defined(y, Pa)
    rw = np.ones(len(y)) if row_weights is None else np.asarray(row_weights, np.float64).reshape(-1)
    if len(rw) != len(y) or not np.all(np.isfinite(rw)) or np.any(rw < 0) or not rw.any():
        raise StatsError(f"row_weights: {len(rw)} finite non-negative weights expected for {len(y)} rows")
    ones = rw[None, :]
    va, vb = float(m.weighted(y, Pa, ones)[0]), float(m.weighted(y, Pb, ones)[0])
    diffs = [
        m.weighted(y, Pa, W * rw) - m.weighted(y, Pb, W * rw)
        for W in weight_chunks(len(y), n_resamples, seed, strata_for(y, problem_type), clusters)
    ]
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    delta = va - vb
    lo, hi = percentile_ci(d, alpha)
    b = len(d)
    hib = m.higher_is_better
    bound = float(np.quantile(d, alpha if hib else 1 - alpha)) if b else float("nan")
    if b == 0:
        raise StatsError(f"paired bootstrap of {metric!r}: the metric was undefined on every resample")
    # p-values from the bootstrap distribution of the difference (+1 so that p is never 0)
    n_le, n_ge = int(np.sum(d <= 0)), int(np.sum(d >= 0))
    p_two = min(1.0, 2 * min(n_le + 1, n_ge + 1) / (b + 1))
    p_one = (n_le + 1) / (b + 1) if hib else (n_ge + 1) / (b + 1)
    label = "paired bootstrap" if clusters is None else "paired bootstrap of whole groups"
    label += "" if row_weights is None else ", rows weighted"
    # DeLong and McNemar count rows as independent and alike: with groups or weights the bootstrap's p-value stands
    if method == "auto" and clusters is None and row_weights is None:
        better = delta > 0 if hib else delta < 0
        if metric == "auc" and problem_type == "binary":
            p_two = delong(y, Pa, Pb).p_value
            label = "DeLong (interval: paired bootstrap)"
        elif metric == "acc" and problem_type in ("binary", "multiclass", "ordinal"):
            p_two = mcnemar(
                y,
                _hard_predictions(Pa, problem_type, None, convention),
                _hard_predictions(Pb, problem_type, None, convention),
            ).p_value
            label = "McNemar (interval: paired bootstrap)"
        if label != "paired bootstrap":
            p_one = p_two / 2 if better else 1 - p_two / 2
    elif method not in ("bootstrap", "auto"):
        raise StatsError(f"unknown comparison method {method!r}; expected 'bootstrap' or 'auto'")
    return PairedResult(
        metric=metric,
        delta=float(delta),
        ci95=[lo, hi],
        p_value=float(p_two),
        method=label,
        n=len(y),
        value_a=va,
        value_b=vb,
        higher_is_better=hib,
        p_one_sided=float(p_one),
        bound_one_sided=bound,
    )
