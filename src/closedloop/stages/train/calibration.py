"""Calibration and the operating threshold, both fitted on validation.

Temperature scaling (Guo et al. 2017) rescales logits; bias-corrected temperature scaling (BCTS,
Alexandari et al. 2020) also learns one offset per logit. The offset matters when training
re-weighted the classes (``class_weight: balanced``): re-weighting shifts every logit by about
log(prior ratio), which a temperature cannot undo, so probabilities thresholded at 0.5 (MedMNIST's
ACC) would favour the minority class. The offset is folded into the network's head bias
(:func:`fold_logit_bias`) so exported models and the serving predictor need nothing new.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from closedloop.models.trained import logits_to_proba
from closedloop.stats.business import choose_threshold as cost_threshold
from closedloop.stats.business import youden_threshold


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


def fit_bias_temperature(logits: np.ndarray, y: np.ndarray, problem_type: str) -> tuple[float, np.ndarray]:
    """Temperature T and per-logit offset b minimizing validation NLL of ``link((z + b) / T)``.

    Returns ``(T, b)`` with ``b`` of shape ``(n_logits,)`` (zeros for regression). L-BFGS-B on
    ``[log T, b]`` from T = 1, b = 0 with bounded parameters: deterministic and cannot diverge."""
    z = np.asarray(logits, dtype=np.float64)
    z = z.reshape(len(z), -1)
    k = z.shape[1]
    if problem_type == "regression" or len(z) == 0:
        return 1.0, np.zeros(k)
    from scipy.optimize import minimize

    def objective(theta: np.ndarray) -> float:
        return _nll(z + theta[1:], y, problem_type, float(np.exp(theta[0])))

    bounds = [(-3.0, 3.0)] + [(-10.0, 10.0)] * k
    res = minimize(objective, np.zeros(k + 1), method="L-BFGS-B", bounds=bounds)
    theta = res.x if np.isfinite(res.fun) and res.fun <= objective(np.zeros(k + 1)) else np.zeros(k + 1)
    bias = theta[1:]
    if problem_type in ("multiclass", "ordinal"):
        bias = bias - bias.mean()  # softmax ignores a common offset; keep the folded bias centred
    return float(np.exp(theta[0])), bias


def fold_logit_bias(network: Any, bias: np.ndarray) -> bool:
    """Add ``bias`` to the network's output layer (``network.head.bias``), so ``network(x) + bias``
    is what the network returns. Returns False (and changes nothing) for a network without a
    biased linear head of the right size (custom models), where only the temperature applies."""
    import torch

    head = getattr(network, "head", None)
    b = getattr(head, "bias", None)
    if b is None or b.numel() != len(bias):
        return False
    with torch.no_grad():
        b.add_(torch.as_tensor(np.asarray(bias), dtype=b.dtype, device=b.device))
    return True


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

    rule ``cost``: minimize expected cost with the task's costs (:func:`closedloop.stats.business.
    choose_threshold`, the one cost rule that adapt and recalibration use too); ``youden``: maximize
    sensitivity + specificity, which does not depend on prevalence (the choice when the deployment class
    mix may differ); ``fixed``: 0.5.
    """
    y = y_val.reshape(-1).astype(int)
    if rule == "fixed":
        return 0.5, "fixed at 0.5"
    if rule == "cost":
        thr = float(cost_threshold(y, p_pos, cost_fp=cost_fp, cost_fn=cost_fn, prevalence=prevalence))
        return thr, f"minimum expected cost on validation (cost FP {cost_fp:g}, FN {cost_fn:g})"
    return youden_threshold(y, p_pos), (
        "maximum sensitivity + specificity on validation (Youden's J; independent of prevalence)"
    )
