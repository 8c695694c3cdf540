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
    """``1 / (1 + e^-z)`` as ``0.5 (1 + tanh(z / 2))``: no overflow warning for large ``|z|``. A new array
    (``z`` is not written)."""
    out = np.multiply(z, 0.5)
    np.tanh(out, out=out)
    np.add(out, 1.0, out=out)
    np.multiply(out, 0.5, out=out)
    return out


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
        """LightGBM's custom objective: gradient and hessian ``(N, K)`` of the log-loss at ``preds``.
        Computed in place in two arrays (the fit calls it once per boosting round: temporaries were
        half its cost); the same floating-point operations as ``p - y`` and ``max(p (1 - p), 1e-16)``."""
        p = _sigmoid(np.asarray(preds, np.float64).reshape(self.y.shape))
        hess = np.subtract(1.0, p)
        np.multiply(hess, p, out=hess)
        np.maximum(hess, 1e-16, out=hess)
        grad = np.subtract(p, self.y, out=p)
        if self.w is not None:
            np.multiply(grad, self.w, out=grad)
            np.multiply(hess, self.w, out=hess)
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


def one_vs_rest_text(text: str, init: np.ndarray) -> str:
    """A standard LightGBM model text from a per-label custom-objective fit's text (see the module doc):
    ``init`` (the per-label start the fit used) added to every leaf of each label's first tree, objective
    ``multiclassova``. Its raw score equals the fit's raw score plus ``init``: the logit of every label.

    Edited as text, not through ``Booster.set_leaf_output``: that path wrote and parsed the model three
    times per fit, and the tuning phase converts every trial's fit. The sums are the same doubles (a
    leaf value is written with 17 significant digits, so it reads back exactly, and ``repr`` writes the
    sum exactly), so the model predicts bit for bit what the ``set_leaf_output`` path gave
    (``tests/train/test_train_trees_multilabel.py``)."""
    init = np.asarray(init, np.float64).reshape(-1)
    k = len(init)
    if k < 2:
        raise ValueError("one_vs_rest_text: a multi-label model has at least 2 labels")
    start = text.find("\nTree=0\n")
    ends = [m.start() for m in re.finditer(r"(?m)^Tree=\d+$", text[start + 1 :])]
    if start < 0 or len(ends) < k:
        raise ValueError("one_vs_rest_text: the booster has no complete boosting round")
    head, body = text[: start + 1], text[start + 1 :]
    cut = ends[k] if len(ends) > k else body.index("end of trees")

    def shifted(tree: str, by: float) -> str:
        def add(m: re.Match[str]) -> str:
            return "leaf_value=" + " ".join(repr(float(v) + by) for v in m[1].split())

        return re.sub(r"(?m)^leaf_value=(.*)$", add, tree, count=1)

    first = [body[a:b] for a, b in zip(ends[:k], [*ends[1:k], cut], strict=True)]
    body = "".join(shifted(t, float(s)) for t, s in zip(first, init, strict=True)) + body[cut:]
    head = re.sub(r"(?m)^objective=[^\n]*\n", "", head)
    head = re.sub(
        r"(?m)^max_feature_idx=",
        f"objective=multiclassova num_class:{k} sigmoid:1\nmax_feature_idx=",
        head,
        count=1,
    )
    head = re.sub(r"tree_sizes=[^\n]*\n", "", head)  # byte offsets of the old text; optional when absent
    body = body.replace("[objective: custom]", "[objective: multiclassova]")
    body = body.replace("[metric: custom]", "[metric: multi_logloss]")
    return head + body


def one_vs_rest_booster(booster: Any, init: np.ndarray) -> Any:
    """:func:`one_vs_rest_text` of a trained ``lightgbm.Booster``, as a ``lightgbm.Booster``."""
    import lightgbm as lgb

    return lgb.Booster(model_str=one_vs_rest_text(booster.model_to_string(), init))
