"""Rank suspected label errors again, with the trained model's out-of-sample predictions.

The audit ranks labels with quick models before any training; after training, the chosen
configuration's predictions on samples its fitted copy never saw are a better judge (the data
flywheel: the first model finds the data's problems). :func:`rerank_label_issues` is the plain
ranking (confident learning, as in the audit check); :func:`review_after_training` finds those
predictions in the train stage's work folder and saves the list beside the model.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    >>> P = np.full((10, 2), 0.05); P[np.arange(10), y] = 0.95
    >>> P[9] = [0.97, 0.03]          # labelled 1, the model is sure it is 0
    >>> out = rerank_label_issues(y, P, [("val", i) for i in range(10)])
    >>> [(i.split, i.index, i.given_label, i.suggested_label) for i in out.issues]
    [('val', 9, 1, 0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from closedloop.artifacts.training import LabelIssue, LabelIssueList
from closedloop.stages.audit.label_issues import FilterBy, flag_label_issues

FILE = "label_issues_after_training.csv"


def rerank_label_issues(
    labels: np.ndarray,
    oof_proba: np.ndarray,
    ids: Sequence[tuple[str, int]],
    *,
    filter_by: FilterBy = "ranked_noise_rate",
    evaluated_on: str = "out_of_fold",
    source: str = "",
) -> LabelIssueList:
    """Confident learning on out-of-sample probabilities: the flagged samples, most suspicious first.

    Args:
        labels: (N,) given integer class labels; column ``c`` of ``oof_proba`` is class ``c``.
        oof_proba: (N, K) class probabilities from models that did not train on the sample.
        ids: (split, row) of each sample, in the same order.
        filter_by: which samples are flagged (as in the audit's check, :func:`flag_label_issues`).
        evaluated_on, source: recorded with the list (which data, which model).
    """
    from cleanlab.count import estimate_joint

    y = np.asarray(labels).reshape(-1)
    P = np.asarray(oof_proba, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != len(y) or len(ids) != len(y):
        raise ValueError(
            f"rerank_label_issues: labels ({len(y)}), oof_proba {P.shape} and ids ({len(ids)}) must "
            "describe the same samples: oof_proba must be (n_samples, n_classes)"
        )
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise ValueError("rerank_label_issues: labels must be integer class indices, got fractional values")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= P.shape[1]):
        raise ValueError(
            f"rerank_label_issues: labels must lie in 0..{P.shape[1] - 1} (one probability column per "
            f"class), got {int(y.min())}..{int(y.max())}"
        )
    present, y_enc = np.unique(y, return_inverse=True)
    if len(present) < 2:
        raise ValueError("rerank_label_issues: need at least two classes among the labels")
    Q = np.clip(P[:, present], 1e-6, None)  # cleanlab wants every class present and no zero rows
    Q = Q / Q.sum(1, keepdims=True)
    order = flag_label_issues(y_enc, Q, filter_by)
    noise = float(1.0 - np.trace(estimate_joint(y_enc, Q)))
    suggested = present[Q.argmax(1)]
    score = 1.0 - Q[np.arange(len(y)), y_enc]
    issues = [
        LabelIssue(
            split=str(ids[i][0]),
            index=int(ids[i][1]),
            given_label=int(y[i]),
            suggested_label=int(suggested[i]),
            score=round(float(score[i]), 5),
        )
        for i in order
    ]
    return LabelIssueList(
        issues=issues,
        n_examined=len(y),
        n_flagged=len(issues),
        estimated_noise_rate=round(noise, 4),
        evaluated_on=evaluated_on,
        source=source,
    )


def review_after_training(
    work: Path, tuned: dict[str, Any], data: Any, problem_type: str, out_dir: Path
) -> LabelIssueList | None:
    """The train stage's second ranking, from predictions it already has (no extra fit).

    With a k-fold protocol the chosen configuration's cross-validation left out-of-fold predictions
    for every train and val sample; otherwise the chosen configuration, fitted on train, predicted
    val (val only is re-ranked). Saves ``out_dir/label_issues_after_training.csv``. None when the
    task is not single-label classification or no such predictions exist.
    """
    from closedloop.core.io import atomic_path
    from closedloop.models.trained import logits_to_proba
    from closedloop.stages.audit.features import class_labels

    if problem_type not in ("binary", "multiclass", "ordinal"):
        return None
    n_train = len(data.train)
    if tuned.get("calibration_logits_file"):  # cross-validation on train+val (train rows first)
        logits = np.load(work / tuned["calibration_logits_file"])
        y = class_labels(np.load(work / tuned["calibration_labels_file"]))
        ids = [("train", i) for i in range(n_train)] + [("val", i) for i in range(len(y) - n_train)]
        evaluated_on, note = "out_of_fold", ""
        source = "the chosen configuration's k-fold cross-validation on train+val (each sample predicted by the fold model that did not train on it)"
    elif tuned.get("val_logits_file") and (work / tuned["val_logits_file"]).is_file():
        logits = np.load(work / tuned["val_logits_file"])
        y = class_labels(data.val.y)
        ids = [("val", i) for i in range(len(data.val))]
        evaluated_on = "validation"
        source = "the chosen configuration fitted on train, predicting val"
        note = (
            "only val is re-ranked: the task's protocol is a hold-out split, so no out-of-sample predictions "
            "exist for train (a k-fold protocol re-ranks train too)"
        )
    else:
        return None
    if y is None or len(y) < 2 or len(np.unique(y)) < 2:
        return None
    proba = logits_to_proba(logits, problem_type)
    if proba.shape[1] <= int(y.max()):
        return None
    out = rerank_label_issues(y, proba, ids, evaluated_on=evaluated_on, source=source)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / FILE) as tmp:
        out.to_frame().to_csv(tmp, index=False)
    return out.model_copy(update={"note": note, "file": f"{out_dir.name}/{FILE}"})


def review_summary(review: dict[str, Any] | None) -> dict[str, Any] | None:
    """summary.json view of the train stage's second ranking (None when there is none)."""
    if not review:
        return None
    r = LabelIssueList.model_validate(review)
    return {
        "n_flagged": r.n_flagged,
        "n_examined": r.n_examined,
        "estimated_noise_rate": r.estimated_noise_rate,
        "evaluated_on": r.evaluated_on,
        "file": r.file,
        "top": [i.model_dump() for i in r.issues[:5]],
    }


def review_blocks(review: dict[str, Any] | None, top: int = 20) -> list[Any]:
    """Report blocks for the train stage's second ranking (a section; nothing when absent)."""
    from closedloop.core.blocks import Paragraph, Section, Table

    if not review:
        return []
    r = LabelIssueList.model_validate(review)
    text = (
        f"{r.n_flagged} suspected label error(s) among {r.n_examined} samples "
        f"(estimated noise rate {r.estimated_noise_rate:.1%}), ranked on {r.evaluated_on} predictions of "
        f"{r.source}. The audit ranked the same labels before training with quick models; this list is "
        f"the trained configuration's view. Full list: {r.file}."
    )
    body: list[Any] = [Paragraph(text)]
    if r.note:
        body.append(Paragraph(f"Left out: {r.note}."))
    if r.issues:
        body.append(
            Table([i.model_dump() for i in r.issues[:top]], title="Most suspicious labels", max_rows=top)
        )
    return [Section("Label review after training", body)]
