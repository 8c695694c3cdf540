"""Multi-label gradient-boosted trees: one logistic booster per label, held as one LightGBM model.

LightGBM has no multi-label objective, but a model with ``num_class=K`` grows K trees per boosting round,
one per output column, and a custom objective may give each column its own gradient. With the per-label
logistic loss (:class:`PerLabelLogistic`) the gradient of column k depends on label k's score only, so
column k's trees are exactly the booster one would fit for label k alone: K independent binary boosters
that advance in lockstep (one early-stopping round, one epoch clock, one ledger row per configuration).

After training, :func:`one_vs_rest_booster` turns the custom-objective model into a standard LightGBM
model: each label's log-odds start (the init score the fit used) is added to that label's first tree, and
the objective is declared ``multiclassova`` (one-vs-rest: an independent sigmoid per column). The booster's
raw score is then the per-label logit, its ``predict`` the per-label probability, and onnxmltools converts
it as any multi-class LightGBM model (its post-transform is replaced by the identity, as for every tree
export: :func:`closedloop.models.lgbm_onnx.logits_onnx`).

Needs the optional extra ``closedloop[trees]`` (imported lazily).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|


class PerLabelLogistic:
    """The objective and metric of a multi-label fit: the binary log-loss of every label, with per-row,
    per-label weights (class weights: the weight of a negative and of a positive of each label).

    Args:
        y: ``(N, K)`` 0/1 targets of the rows LightGBM trains on (in the order of its Dataset).
        weights: ``(2, K)`` weight of a negative, of a positive, per label; None: all 1.
    """

    def __init__(self, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        self.y = np.asarray(y, np.float64).reshape(len(y), -1)
        if weights is None:
            self.w: np.ndarray | None = None
        else:
            w = np.asarray(weights, np.float64).reshape(2, -1)
            self.w = self.y * w[1][None, :] + (1.0 - self.y) * w[0][None, :]

    def __call__(self, preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """LightGBM's custom objective: gradient and hessian ``(N, K)`` of the log-loss at ``preds``."""
        p = _sigmoid(np.asarray(preds, np.float64).reshape(self.y.shape))
        grad, hess = p - self.y, np.maximum(p * (1.0 - p), 1e-16)
        if self.w is not None:
            grad, hess = grad * self.w, hess * self.w
        return grad, hess

    def loss(self, raw: np.ndarray) -> float:
        """Mean unweighted binary log-loss over rows and labels at raw scores ``raw`` ``(N, K)``."""
        z = np.asarray(raw, np.float64).reshape(self.y.shape)
        # log(1 + e^z) - y z, computed stably
        return float(np.mean(np.logaddexp(0.0, z) - self.y * z))

    def metric(self, preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
        """LightGBM's ``feval``: ``("multilabel_logloss", value, is_higher_better=False)``."""
        return "multilabel_logloss", self.loss(preds), False


def label_log_odds(y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Each label's (weighted) log-odds on the training rows: where a fit starts, as LightGBM's own
    ``boost_from_average`` does for one binary label (clipped away from 0 and 1)."""
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if weights is None:
        pos = y.mean(0)
    else:
        w = np.asarray(weights, np.float64).reshape(2, -1)
        wp, wn = (y * w[1]).sum(0), ((1 - y) * w[0]).sum(0)
        pos = wp / np.maximum(wp + wn, 1e-12)
    pos = np.clip(pos, 1e-6, 1 - 1e-6)
    return np.log(pos / (1 - pos))


def one_vs_rest_booster(booster: Any, init: np.ndarray) -> Any:
    """A standard LightGBM model from a per-label custom-objective fit (see the module doc): ``init``
    (the per-label start the fit used) added to each label's first tree, objective ``multiclassova``.
    Its raw score equals the fit's raw score plus ``init``: the logit of every label."""
    import lightgbm as lgb

    init = np.asarray(init, np.float64).reshape(-1)
    k = len(init)
    text = booster.model_to_string()
    if k < 2:
        raise ValueError("one_vs_rest_booster: a multi-label model has at least 2 labels")
    b = lgb.Booster(model_str=text)
    if b.num_trees() < k:
        raise ValueError("one_vs_rest_booster: the booster has no complete boosting round")
    leaves = [t["num_leaves"] for t in b.dump_model(num_iteration=1)["tree_info"][:k]]
    for tree, (n_leaves, start) in enumerate(zip(leaves, init, strict=True)):
        for leaf in range(n_leaves):
            b.set_leaf_output(tree, leaf, b.get_leaf_output(tree, leaf) + float(start))
    text = b.model_to_string()
    text = re.sub(r"(?m)^objective=[^\n]*\n", "", text)
    text = re.sub(
        r"(?m)^max_feature_idx=",
        f"objective=multiclassova num_class:{k} sigmoid:1\nmax_feature_idx=",
        text,
        count=1,
    )
    text = text.replace("[objective: custom]", "[objective: multiclassova]")
    text = text.replace("[metric: custom]", "[metric: multi_logloss]")
    text = re.sub(r"tree_sizes=[^\n]*\n", "", text)  # byte offsets of the old text; optional when absent
    return lgb.Booster(model_str=text)
