"""Temperature scaling (Guo et al. 2017) and the operating threshold, both fitted on validation."""

from __future__ import annotations

import numpy as np

from closedloop.models.trained import logits_to_proba


def _nll(logits: np.ndarray, y: np.ndarray, problem_type: str, temperature: float) -> float:
    p = logits_to_proba(logits, problem_type, temperature)
    eps = 1e-12
    if problem_type == "binary":
        yb = y.reshape(-1).astype(int)
        return float(-np.mean(np.log(np.clip(p[np.arange(len(yb)), yb], eps, 1))))
    if problem_type == "multilabel":
        yl = y.reshape(p.shape).astype(float)
        return float(-np.mean(yl * np.log(np.clip(p, eps, 1)) + (1 - yl) * np.log(np.clip(1 - p, eps, 1))))
    yk = y.reshape(-1).astype(int)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(yk)), yk], eps, 1))))


def fit_temperature(logits: np.ndarray, y: np.ndarray, problem_type: str) -> float:
    """The temperature T > 0 minimizing validation negative log-likelihood of ``softmax(z / T)``
    (regression: 1). A bounded 1-D search on log T: deterministic and cannot diverge."""
    if problem_type == "regression" or len(logits) == 0:
        return 1.0
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda lt: _nll(logits, y, problem_type, float(np.exp(lt))), bounds=(-3.0, 3.0), method="bounded"
    )
    return float(np.exp(res.x))


def expected_calibration_error(p_pos: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Binary ECE with equal-width bins."""
    y = y.reshape(-1).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p_pos, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p_pos[m].mean() - y[m].mean())
    return float(ece)


def choose_threshold(
    y_val: np.ndarray,
    p_pos: np.ndarray,
    *,
    rule: str,
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
    prevalence: float | None = None,
) -> tuple[float, str]:
    """Binary operating threshold chosen on validation. Returns (threshold, why).

    rule ``cost``: minimize expected cost with the task's costs (the statistics module's
    ``choose_threshold`` when available); ``youden``: maximize sensitivity + specificity, which does
    not depend on prevalence (the choice when the deployment class mix may differ); ``0.5``: fixed.
    """
    y = y_val.reshape(-1).astype(int)
    if rule == "fixed":
        return 0.5, "fixed at 0.5"
    if rule == "cost":
        try:
            from closedloop.stats.business import choose_threshold as stats_choose

            thr = float(stats_choose(y, p_pos, cost_fp=cost_fp, cost_fn=cost_fn, prevalence=prevalence))
            return thr, f"minimum expected cost on validation (cost FP {cost_fp:g}, FN {cost_fn:g})"
        except ImportError:
            pass
        cands = np.unique(np.concatenate([[0.5], p_pos]))
        costs = [
            cost_fp * np.sum((p_pos >= c) & (y == 0)) + cost_fn * np.sum((p_pos < c) & (y == 1))
            for c in cands
        ]
        return float(cands[int(np.argmin(costs))]), (
            f"minimum expected cost on validation (cost FP {cost_fp:g}, FN {cost_fn:g})"
        )
    # youden
    cands = np.unique(p_pos)
    pos, neg = max((y == 1).sum(), 1), max((y == 0).sum(), 1)
    j = [np.sum((p_pos >= c) & (y == 1)) / pos + np.sum((p_pos < c) & (y == 0)) / neg for c in cands]
    best = int(np.argmax(j))
    # midpoint to the next lower score: a threshold that does not sit exactly on one validation case
    lower = cands[best - 1] if best > 0 else 0.0
    thr = float((cands[best] + lower) / 2)
    return thr, "maximum sensitivity + specificity on validation (Youden's J; independent of prevalence)"
