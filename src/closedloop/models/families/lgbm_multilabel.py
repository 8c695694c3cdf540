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
from concurrent.futures import ThreadPoolExecutor
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

    def column(self, k: int) -> PerLabelLogistic:
        """The objective of label ``k`` alone (its targets and weights): a single-label booster's. Its
        gradient is elementwise the same floating-point operations as column ``k`` of this one's."""
        out = PerLabelLogistic.__new__(PerLabelLogistic)
        out.y = np.ascontiguousarray(self.y[:, [k]])
        out.w = None if self.w is None else np.ascontiguousarray(self.w[:, [k]])
        return out


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


def joint_text(texts: list[str]) -> str:
    """One custom-objective model text with K trees a round, as a ``num_class=K`` fit writes it, from K
    single-label boosters' texts (:class:`LabelBoosters`): label ``k``'s tree ``i`` becomes tree
    ``i K + k``. The header and parameters are label 0's with the class count set to K; the
    ``feature_importances`` section (label 0's alone) is left out: LightGBM computes importances from
    the trees, not from that section."""
    k = len(texts)
    if k < 2:
        raise ValueError("joint_text: a multi-label model has at least 2 labels")
    trees: list[list[str]] = []
    for text in texts:
        body = text[text.index("\nTree=0\n") + 1 : text.index("end of trees")]
        trees.append(re.split(r"(?m)^Tree=\d+\n", body)[1:])
    rounds = {len(t) for t in trees}
    if len(rounds) != 1:
        raise ValueError(f"joint_text: the labels' boosters have different round counts {sorted(rounds)}")
    first = texts[0]
    head = first[: first.index("\nTree=0\n") + 1]
    head = re.sub(r"(?m)^num_class=1$", f"num_class={k}", head, count=1)
    head = re.sub(r"(?m)^num_tree_per_iteration=1$", f"num_tree_per_iteration={k}", head, count=1)
    head = re.sub(r"tree_sizes=[^\n]*\n", "", head)  # byte offsets of label 0's text; optional when absent
    body = "".join(f"Tree={i * k + j}\n{trees[j][i]}" for i in range(rounds.pop()) for j in range(k))
    tail = first[first.index("end of trees") :]
    if "\nparameters:" in tail:
        tail = "end of trees\n\n" + tail[tail.index("parameters:") :]
    tail = tail.replace("[num_class: 1]", f"[num_class: {k}]")
    return head + body + tail


class LabelBoosters:
    """A multi-label fit as K single-label boosters (one per label, each with one OpenMP thread) that
    advance in lockstep, on up to ``threads`` Python threads at once (LightGBM releases the GIL while it
    grows a tree). Label ``k``'s booster gets column ``k`` of the joint fit's gradient, so it grows the
    trees column ``k`` of a ``num_class=K`` fit grows, except where LightGBM's column sampling
    (``feature_fraction < 1``) draws: the joint fit draws once per tree of every label in turn, a
    single-label booster once per tree of its own. The boosters, hence the model, do not depend on
    ``threads`` (each label's booster is the same object fed the same gradients in the same order).

    Args:
        params: LightGBM parameters of the fit (``num_class`` is set to 1 here).
        datasets: one LightGBM Dataset per label, its init score that label's start.
        objective: the joint fit's :class:`PerLabelLogistic`.
        threads: Python threads that grow labels at once (1: one after another in the caller's).
    """

    def __init__(
        self, params: dict[str, Any], datasets: list[Any], objective: PerLabelLogistic, threads: int
    ):
        import lightgbm as lgb

        self.objectives = [objective.column(k) for k in range(len(datasets))]
        self.boosters: list[Any] = []
        p = {**params, "objective": "none", "num_class": 1}
        for ds in datasets:  # what lgb.train does before it builds its booster
            ds._update_params(p)._set_predictor(None)
            try:
                self.boosters.append(lgb.Booster(params=p, train_set=ds))
            finally:
                ds._reverse_update_params()
        self.pool = ThreadPoolExecutor(min(threads, len(datasets))) if threads > 1 else None

    def _grow(self, k: int, rounds: int) -> None:
        booster, objective = self.boosters[k], self.objectives[k]

        def fobj(preds: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
            grad, hess = objective(preds, data)
            return grad.reshape(-1), hess.reshape(-1)

        for _ in range(rounds):
            booster.update(fobj=fobj)

    def advance(self, rounds: int) -> None:
        """Every label's booster grows ``rounds`` more rounds."""
        if self.pool is None:
            for k in range(len(self.boosters)):
                self._grow(k, rounds)
        else:
            list(self.pool.map(lambda k: self._grow(k, rounds), range(len(self.boosters))))

    def current_iteration(self) -> int:
        return int(self.boosters[0].current_iteration())

    def raw(self, x: np.ndarray, start: int, rounds: int) -> np.ndarray:
        """``(N, K)`` raw scores of rounds ``[start, start + rounds)`` on ``x``."""
        cols = [
            b.predict(x, raw_score=True, start_iteration=start, num_iteration=rounds) for b in self.boosters
        ]
        return np.column_stack([np.asarray(c, np.float64).reshape(-1) for c in cols])

    def train_raw(self) -> np.ndarray:
        """``(N, K)`` raw scores of the training rows, init score in (what the joint fit's metric reads)."""
        got: list[np.ndarray] = []

        def grab(preds: np.ndarray, data: Any) -> tuple[str, float, bool]:
            got.append(np.asarray(preds, np.float64).reshape(-1))
            return "raw", 0.0, False

        for b in self.boosters:
            b.eval_train(feval=grab)
        return np.column_stack(got)

    def text(self, num_iteration: int | None = None) -> str:
        """The joint custom-objective model text of the first ``num_iteration`` rounds (:func:`joint_text`)."""
        return joint_text([b.model_to_string(num_iteration=num_iteration) for b in self.boosters])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
