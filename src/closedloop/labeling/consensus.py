"""One label per item from several annotators, a quality score per item and per annotator.

The default, Dawid & Skene's EM with the model's out-of-sample probabilities as each item's prior,
learns one confusion matrix per annotator (class-dependent mistakes included) and combines every label
an item has with the model's belief (``dawid_skene``). CROWDLAB (cleanlab's
``get_label_quality_multiannotator``, the field's reference, ``method="crowdlab"``) weighs each annotator by how often they
agree with the others and the model, and the model by how well it agrees with the annotators, so a
reliable annotator's single label counts for more than an unreliable one's; it needs the model's
*out-of-sample* probabilities for the items (a review queue's ``p_<class>`` columns are predictions on
production data the model never trained on; a human-baseline folder's ``heldback.csv`` holds them for
validation rows it never trained on). Without probabilities: majority vote (ties: lowest class index),
the baseline. ``benchmarks/bench_annotators.py`` compares the three.

``closedloop label QUEUE --consensus`` writes ``QUEUE/consensus.csv`` (``id, label, quality,
n_annotations, agreement, method``) and ``QUEUE/annotators.csv`` (``annotator, quality,
agreement_with_consensus, n_labeled``); items whose quality is below ``--adjudicate-below`` go back to
the queue: assigned to ``--adjudicator NAME`` in ``assignments.csv``, whose label then joins the next
consensus. ``--export`` uses the consensus whenever several annotators labeled the queue.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import DataError
from closedloop.core.io import write_text_atomic
from closedloop.labeling.assign import write_assignments
from closedloop.labeling.queue import LabelQueue, load_queue
from closedloop.labeling.store import LabelStore

CONSENSUS = "consensus.csv"
ANNOTATORS = "annotators.csv"
Method = Literal["crowdlab", "dawid_skene", "majority_vote"]
COLLAPSED = 1e-3
COLLAPSE_NOTE = (
    "CROWDLAB weighted every annotator ~0 (their agreement was no better than always answering the most "
    "frequent class), so its consensus would be the model's own prediction; majority vote used instead"
)


class Consensus(BaseModel):
    """Consensus over a label matrix (arrays aligned with its rows and columns)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    method: Method
    labels: np.ndarray
    """Consensus class index per item."""
    quality: np.ndarray
    """Per item, 0..1: how much to trust the consensus label (CROWDLAB's consensus quality score;
    majority vote: share of annotators agreeing)."""
    agreement: np.ndarray
    """Per item: share of its annotators who gave the consensus label."""
    annotator_quality: np.ndarray
    """Per annotator, 0..1 (CROWDLAB's annotator quality; majority vote: agreement with consensus)."""
    annotator_agreement: np.ndarray
    """Per annotator: share of their labels equal to the consensus."""
    model_weight: float | None = None
    """CROWDLAB's weight of the model relative to the annotators."""
    note: str = ""
    """Why the method differs from the one asked for (CROWDLAB's annotator weights collapsed)."""


def majority_vote(L: np.ndarray, n_classes: int) -> np.ndarray:
    """Most chosen class per item (ties: lowest class index); items need at least one label."""
    from closedloop.stats.agreement import category_counts

    return category_counts(L, n_classes).argmax(axis=1)


def dawid_skene(
    L: np.ndarray,
    n_classes: int,
    pred_probs: np.ndarray | None = None,
    n_iter: int = 100,
    smoothing: float = 1.0,
) -> Consensus:
    """Dawid & Skene's EM: one confusion matrix per annotator (so class-dependent mistakes are learned),
    the posterior of each item's class combining every label it has; with ``pred_probs`` the model's
    out-of-sample probabilities are each item's prior (otherwise one class prior for all items).
    Item quality: the posterior of the consensus class; annotator quality: their estimated accuracy
    (prior-weighted diagonal of their confusion matrix)."""
    from closedloop.stats.agreement import category_counts

    L = np.asarray(L, dtype=np.int64)
    labeled = L >= 0
    n, m = L.shape
    counts = category_counts(L, n_classes).astype(float)
    base = None if pred_probs is None else np.clip(np.asarray(pred_probs, dtype=float), 1e-6, 1.0)
    T = counts + (base if base is not None else 0.0)
    T /= T.sum(axis=1, keepdims=True)
    C = np.ones((m, n_classes, n_classes)) / n_classes
    for _ in range(n_iter):
        for j in range(m):  # M-step: each annotator's confusion C[j][true, given], Laplace-smoothed
            rows = labeled[:, j]
            onehot = np.eye(n_classes)[L[rows, j]]
            Cj = T[rows].T @ onehot + smoothing
            C[j] = Cj / Cj.sum(axis=1, keepdims=True)
        prior = T.mean(axis=0)
        logT = np.log(base) if base is not None else np.tile(np.log(prior), (n, 1))
        for j in range(m):  # E-step: posterior of each item's class given every label it has
            rows = labeled[:, j]
            logT[rows] += np.log(C[j][:, L[rows, j]]).T
        new = np.exp(logT - logT.max(axis=1, keepdims=True))
        new /= new.sum(axis=1, keepdims=True)
        done = np.abs(new - T).max() < 1e-6
        T = new
        if done:
            break
    labels = T.argmax(axis=1)
    match = (labels[:, None] == L) & labeled
    prior = T.mean(axis=0)
    return Consensus(
        method="dawid_skene",
        labels=labels,
        quality=T.max(axis=1),
        agreement=(match.sum(axis=1) / labeled.sum(axis=1)),
        annotator_quality=np.array([float(prior @ np.diag(C[j])) for j in range(m)]),
        annotator_agreement=match.sum(axis=0) / np.maximum(labeled.sum(axis=0), 1),
    )


def consensus(
    L: np.ndarray, n_classes: int, pred_probs: np.ndarray | None = None, method: str = "crowdlab"
) -> Consensus:
    """CROWDLAB consensus with ``pred_probs`` (out-of-sample, ``(n_items, n_classes)``), else majority vote.

    ``L``: ``(n_items, n_annotators)`` class indices, ``-1`` where not labeled; every item and every
    annotator needs at least one label.
    """
    from closedloop.stats.agreement import category_counts

    L = np.asarray(L, dtype=np.int64)
    labeled = L >= 0
    if not labeled.any(axis=1).all():
        raise DataError(f"{int((~labeled.any(axis=1)).sum())} item(s) have no label; leave them out first")
    counts = category_counts(L, n_classes)
    if method == "dawid_skene":
        if pred_probs is not None and np.asarray(pred_probs).shape != (len(L), n_classes):
            raise DataError(
                f"model probabilities have shape {np.asarray(pred_probs).shape}, expected {(len(L), n_classes)}"
            )
        return dawid_skene(L, n_classes, pred_probs)
    if method not in ("crowdlab", "majority_vote"):
        raise DataError(f"consensus method {method!r}: expected crowdlab, dawid_skene or majority_vote")
    if pred_probs is None or method == "majority_vote":
        labels = counts.argmax(axis=1)
        agree = counts[np.arange(len(L)), labels] / counts.sum(axis=1)
        match = (labels[:, None] == L) & labeled
        per_annotator = match.sum(axis=0) / np.maximum(labeled.sum(axis=0), 1)
        return Consensus(
            method="majority_vote",
            labels=labels,
            quality=agree,
            agreement=agree,
            annotator_quality=per_annotator,
            annotator_agreement=per_annotator,
        )
    from cleanlab.multiannotator import get_label_quality_multiannotator

    P = np.asarray(pred_probs, dtype=float)
    if P.shape != (len(L), n_classes):
        raise DataError(f"model probabilities have shape {P.shape}, expected {(len(L), n_classes)}")
    frame = pd.DataFrame(np.where(labeled, L, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about annotators with few labels; we report counts
        res = get_label_quality_multiannotator(
            frame, P, verbose=False, return_detailed_quality=False, return_weights=True, calibrate_probs=True
        )
    weights = np.asarray(res.get("annotator_weight", np.ones(L.shape[1])), dtype=float)
    if (weights <= COLLAPSED).all():
        # every annotator weighted ~0: the "consensus" would be the model's own prediction, and training
        # on it would teach the model itself; fall back to the people (majority vote) and say so
        mv = consensus(L, n_classes, None)
        return mv.model_copy(
            update={"note": COLLAPSE_NOTE, "model_weight": float(res.get("model_weight", 0))}
        )
    lq = res["label_quality"]
    stats = res["annotator_stats"].reindex(frame.columns)
    labels = lq["consensus_label"].to_numpy().astype(np.int64)
    match = (labels[:, None] == L) & labeled
    return Consensus(
        method="crowdlab",
        labels=labels,
        quality=lq["consensus_quality_score"].to_numpy().astype(float),
        agreement=lq["annotator_agreement"].to_numpy().astype(float),
        annotator_quality=stats["annotator_quality"].to_numpy().astype(float),
        annotator_agreement=match.sum(axis=0) / np.maximum(labeled.sum(axis=0), 1),
        model_weight=float(res.get("model_weight", float("nan"))),
    )


# -- a queue folder ----------------------------------------------------------------------------------
class LabelMatrix(BaseModel):
    """The queue's current labels as a matrix: rows = labeled items, columns = annotators."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    ids: list[str]
    annotators: list[str]
    L: np.ndarray


def label_matrix(queue: LabelQueue) -> LabelMatrix:
    """Each annotator's decision in force per item (``labeled`` only; skipped/unsure are not labels).
    Multi-label queues are not supported (agreement here is on one class per item)."""
    if queue.multilabel:
        raise DataError(f"{queue.dir}: agreement and consensus are for single-label queues")
    store = LabelStore(queue.dir / "labels.csv", queue.ids, queue.classes, queue.multilabel)
    cur = {k: r for k, r in store.current_by_annotator().items() if r.status == "labeled"}
    annotators = sorted({a for _, a in cur})
    ids = [i for i in queue.ids if any((i, a) in cur for a in annotators)]
    L = np.full((len(ids), len(annotators)), -1, dtype=np.int64)
    for r, i in enumerate(ids):
        for c, a in enumerate(annotators):
            if (i, a) in cur:
                L[r, c] = queue.classes.index(cur[(i, a)].label[0])
    return LabelMatrix(ids=ids, annotators=annotators, L=L)


def read_probs(path: Path, ids: list[str], classes: list[str]) -> np.ndarray:
    """Model probabilities ``p_<class>`` for ``ids`` from a CSV with an ``id`` column (queue.csv,
    heldback.csv, or any file of that shape)."""
    df = pd.read_csv(path, dtype={"id": str})
    cols = [f"p_{c}" for c in classes]
    missing_cols = [c for c in ["id", *cols] if c not in df]
    if missing_cols:
        raise DataError(f"{path}: no column(s) {missing_cols}; expected id and p_<class> for {classes}")
    df = df.set_index("id")
    missing = [i for i in ids if i not in df.index]
    if missing:
        raise DataError(f"{path}: no probabilities for id(s) {missing[:5]}")
    P = df.loc[ids, cols].to_numpy(dtype=float)
    if not np.isfinite(P).all():
        raise DataError(f"{path}: missing or non-numeric probabilities for some of the labeled items")
    return P


class QueueConsensus(BaseModel):
    """What ``queue_consensus`` wrote."""

    model_config = ConfigDict(extra="forbid")

    method: Method
    probs_from: str | None
    n_items: int
    annotators: dict[str, float]
    """Annotator -> quality score."""
    to_adjudicate: list[str]
    adjudicator: str | None
    consensus_file: Path


def queue_consensus(
    queue_dir: str | Path,
    probs: str | Path | None = None,
    adjudicate_below: float = 0.5,
    adjudicator: str | None = None,
    method: str = "dawid_skene",
) -> QueueConsensus:
    """Consensus of every labeled item in the queue; writes ``consensus.csv`` and ``annotators.csv``.

    ``probs``: a CSV with ``id`` and ``p_<class>`` (default: the queue's own ``queue.csv`` when it has
    them); ``none``: no model (majority vote, or Dawid-Skene with one class prior). Items below
    ``adjudicate_below``, and items whose consensus label no annotator gave (the model overrode every
    person: not a label to train on), are assigned to ``adjudicator``.
    """
    queue = load_queue(queue_dir)
    m = label_matrix(queue)
    if not m.ids:
        raise DataError(f"{queue.dir}/labels.csv: no labeled items yet")
    src: Path | None
    if probs is None:
        has = all(f"p_{c}" in pd.read_csv(queue.dir / "queue.csv", nrows=0).columns for c in queue.classes)
        src = queue.dir / "queue.csv" if has and not queue.blind else None
    else:
        src = None if str(probs) == "none" else Path(probs)
    P = read_probs(src, m.ids, queue.classes) if src is not None else None
    res = consensus(m.L, len(queue.classes), P, method=method)
    n_ann = (m.L >= 0).sum(axis=1)
    model_only = res.agreement == 0
    rows = pd.DataFrame(
        {
            "id": m.ids,
            "label": [queue.classes[c] for c in res.labels],
            "quality": np.round(res.quality, 4),
            "n_annotations": n_ann,
            "agreement": np.round(res.agreement, 4),
            "model_only": model_only,
            "method": res.method,
        }
    )
    write_text_atomic(queue.dir / CONSENSUS, rows.to_csv(index=False))
    ann = pd.DataFrame(
        {
            "annotator": m.annotators,
            "quality": np.round(res.annotator_quality, 4),
            "agreement_with_consensus": np.round(res.annotator_agreement, 4),
            "n_labeled": (m.L >= 0).sum(axis=0),
        }
    )
    write_text_atomic(queue.dir / ANNOTATORS, ann.to_csv(index=False))
    low = [i for i, q, mo in zip(m.ids, res.quality, model_only, strict=True) if q < adjudicate_below or mo]
    if adjudicator and low:
        _assign_for_adjudication(queue, m, low, adjudicator)
    return QueueConsensus(
        method=res.method,
        probs_from=str(src) if src is not None else None,
        n_items=len(m.ids),
        annotators={a: float(q) for a, q in zip(m.annotators, res.annotator_quality, strict=True)},
        to_adjudicate=low,
        adjudicator=adjudicator,
        consensus_file=queue.dir / CONSENSUS,
    )


def _assign_for_adjudication(queue: LabelQueue, m: LabelMatrix, low: list[str], adjudicator: str) -> None:
    """Add (item, adjudicator) to assignments.csv; a queue without one first gets the pairs that were
    labeled (so nobody loses access to their own items)."""
    from closedloop.labeling.assign import check_annotators

    check_annotators([adjudicator], where="--adjudicator")
    if queue.assignments:
        pairs = {(i, a) for a, ids in queue.assignments.items() for i in ids}
    else:
        pairs = {(i, a) for r, i in enumerate(m.ids) for c, a in enumerate(m.annotators) if m.L[r, c] >= 0}
    pairs |= {(i, adjudicator) for i in low}
    assignment: dict[str, list[str]] = {}
    for i in queue.ids:
        people = sorted(a for (j, a) in pairs if j == i)
        if people:
            assignment[i] = people
    write_assignments(queue.dir, assignment)


def consensus_rows(queue: LabelQueue) -> dict[str, tuple[str, float, bool]] | None:
    """``consensus.csv`` as id -> (label, quality, model_only) when it is at least as new as ``labels.csv``."""
    path = queue.dir / CONSENSUS
    labels = queue.dir / "labels.csv"
    if not path.is_file() or (labels.is_file() and labels.stat().st_mtime_ns > path.stat().st_mtime_ns):
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        return {
            r["id"]: (r["label"], float(r["quality"]), r.get("model_only") == "True")
            for r in csv.DictReader(fh)
        }


def several_annotators(queue: LabelQueue) -> bool:
    store = LabelStore(queue.dir / "labels.csv", queue.ids, queue.classes, queue.multilabel)
    return len({a for (_, a), r in store.current_by_annotator().items() if r.status == "labeled"}) > 1
