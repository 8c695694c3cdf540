"""Business framing: choose the operating threshold by expected cost (on validation, never on test)
and turn it into "per day: N caught, M missed, K false alarms" with intervals.

Both functions are for binary tasks; ``p_pos`` is P(pos) as ``(N,)`` or the ``(N, 2)`` convention.
The decision rule is ``predict positive if p_pos >= threshold``.

Example:
    >>> import numpy as np
    >>> from closedloop.stats.business import choose_threshold, per_day
    >>> y = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    >>> p = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.65, 0.8, 0.9])
    >>> t = choose_threshold(y, p, cost_fp=1, cost_fn=5)
    >>> round(t, 3)
    0.325
    >>> per_day(y, p, t, {"cases_per_day": 100, "prevalence": 0.1}, n_resamples=100)["sentence"]
    'per day: 10 caught, 0 missed, 22 false alarms (100 cases, 10.0% positive)'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.stats.bootstrap import percentile_ci, weight_chunks
from closedloop.stats.errors import StatsError
from closedloop.stats.metrics import prepare


def _costs(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, cost_fp: float, cost_fn: float, prev: float):
    sp = np.sort(p[y == 1])
    sn = np.sort(p[y == 0])
    # positives / negatives with p >= t
    tpr = (len(sp) - np.searchsorted(sp, thresholds, "left")) / len(sp)
    fpr = (len(sn) - np.searchsorted(sn, thresholds, "left")) / len(sn)
    return cost_fn * prev * (1 - tpr) + cost_fp * (1 - prev) * fpr


def choose_threshold(
    y_val: Any,
    p_pos_val: Any,
    *,
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
    prevalence: float | None = None,
) -> float:
    """The threshold minimizing expected cost per case on validation data.

    Expected cost = ``cost_fn * prevalence * (1 - sensitivity) + cost_fp * (1 - prevalence) * FPR``,
    with ``prevalence`` the production prevalence (default: the validation prevalence), so the
    choice is re-weighted to production. Candidates lie midway between consecutive distinct scores;
    among equally cheap candidates the one closest to 0.5 wins.
    """
    y, p = prepare(y_val, p_pos_val, "binary")
    if cost_fp < 0 or cost_fn < 0 or cost_fp + cost_fn == 0:
        raise StatsError(
            f"costs must be non-negative and not both zero; got cost_fp={cost_fp}, cost_fn={cost_fn}"
        )
    if y.min() == y.max():
        raise StatsError(
            f"choosing a threshold needs positives and negatives in the validation labels; all are {int(y[0])}"
        )
    prev = float(y.mean()) if prevalence is None else float(prevalence)
    if not 0 < prev < 1:
        raise StatsError(f"prevalence must be within (0, 1), got {prevalence}")
    u = np.unique(p)
    top = (u[-1] + 1.0) / 2 if u[-1] < 1.0 else 1.0
    candidates = np.concatenate([[0.0], (u[1:] + u[:-1]) / 2, [top]])
    cost = _costs(y, p, candidates, cost_fp, cost_fn, prev)
    best = np.flatnonzero(cost <= cost.min() + 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def youden_threshold(y_val: Any, p_pos_val: Any) -> float:
    """The threshold maximizing sensitivity + specificity (Youden's J) on validation data; it does not
    depend on prevalence. It sits midway to the next lower score, not exactly on one validation case.

    >>> round(youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 3)
    0.225
    """
    y = np.asarray(y_val).reshape(-1).astype(int)
    p = np.asarray(p_pos_val, dtype=float).reshape(-1)
    cands = np.unique(p)
    pos, neg = max((y == 1).sum(), 1), max((y == 0).sum(), 1)
    j = [np.sum((p >= c) & (y == 1)) / pos + np.sum((p < c) & (y == 0)) / neg for c in cands]
    best = int(np.argmax(j))
    lower = cands[best - 1] if best > 0 else 0.0
    return float((cands[best] + lower) / 2)


def _fmt_count(x: float) -> str:
    if not np.isfinite(x):
        return "?"
    return f"{x:,.1f}" if abs(x) < 10 and round(x, 1) != round(x) else f"{x:,.0f}"


def per_day(
    y_true: Any,
    p_pos: Any,
    threshold: float,
    business: Any,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Caught / missed / false alarms per day at ``threshold``, with 95% bootstrap intervals.

    ``business`` is a :class:`closedloop.stages.task.Business` (or a dict with ``cases_per_day``,
    ``prevalence``, ``positive_name``). Sensitivity and false-positive rate are measured on
    ``(y_true, p_pos)``; volume and prevalence are taken from ``business`` (production), so counts
    are re-weighted to the production prevalence. Without ``cases_per_day`` the counts are per
    1,000 cases.
    """
    y, p = prepare(y_true, p_pos, "binary")
    b = business.model_dump() if hasattr(business, "model_dump") else dict(business or {})
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise StatsError(f"per-day counts need positives and negatives; got {n_pos} and {n_neg}")
    cases = b.get("cases_per_day")
    unit = "day" if cases else "1,000 cases"
    cases = float(cases) if cases else 1000.0
    prev = b.get("prevalence")
    prev = float(prev) if prev is not None else n_pos / len(y)
    pred = (p >= threshold).astype(np.float64)
    posf, negf = y.astype(np.float64), 1.0 - y

    def rates(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (W @ (posf * pred)) / (W @ posf), (W @ (negf * pred)) / (W @ negf)

    tpr0, fpr0 = (float(v[0]) for v in rates(np.ones((1, len(y)))))
    tprs, fprs = [], []
    for W in weight_chunks(len(y), n_resamples, seed, y):
        t, f = rates(W)
        tprs.append(t)
        fprs.append(f)
    tpr_b, fpr_b = np.concatenate(tprs), np.concatenate(fprs)
    pos_day, neg_day = cases * prev, cases * (1 - prev)

    def item(point: float, boot: np.ndarray) -> dict[str, Any]:
        return {"value": float(point), "ci95": list(percentile_ci(boot))}

    out: dict[str, Any] = {
        "unit": unit,
        "cases": cases,
        "prevalence": prev,
        "threshold": float(threshold),
        "positive_name": b.get("positive_name"),
        "sensitivity": item(tpr0, tpr_b),
        "false_positive_rate": item(fpr0, fpr_b),
        "caught": item(pos_day * tpr0, pos_day * tpr_b),
        "missed": item(pos_day * (1 - tpr0), pos_day * (1 - tpr_b)),
        "false_alarms": item(neg_day * fpr0, neg_day * fpr_b),
        "flagged": item(pos_day * tpr0 + neg_day * fpr0, pos_day * tpr_b + neg_day * fpr_b),
    }
    what = b.get("positive_name") or "positive"
    head = "per day" if unit == "day" else "per 1,000 cases"
    vol = f"{_fmt_count(cases)} cases, " if unit == "day" else ""
    out["sentence"] = (
        f"{head}: {_fmt_count(out['caught']['value'])} caught, {_fmt_count(out['missed']['value'])} missed, "
        f"{_fmt_count(out['false_alarms']['value'])} false alarms ({vol}{prev:.1%} {what})"
    )
    ci = {k: out[k]["ci95"] for k in ("caught", "missed", "false_alarms")}
    out["sentence_with_intervals"] = (
        out["sentence"]
        + "; 95% intervals: "
        + ", ".join(f"{k.replace('_', ' ')} {_fmt_count(v[0])}-{_fmt_count(v[1])}" for k, v in ci.items())
    )
    return out
