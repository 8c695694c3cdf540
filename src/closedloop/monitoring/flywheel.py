"""The flywheel's first half: choose what to label next.

Production samples are ranked by two signals, each turned into a percentile so they can be averaged:

* uncertainty: normalized entropy of the calibrated probabilities (and the top-2 margin);
* drift contribution: how far a sample lies from the reference (distance to its nearest reference
  embeddings relative to the reference's own nearest-neighbour distances, and the largest robust
  z-score of its monitored features).

A selection strategy (``selection.py``, default diversity-aware, with a random control slice) picks
the queue from these scores. The queue is exported as image files (or rows) plus ``queue.csv`` with ids, predictions and scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop.monitoring.drift.base import Sample
from closedloop.monitoring.drift.predictions import predicted_classes
from closedloop.monitoring.drift.stats import sqdist
from closedloop.monitoring.profile import ReferenceProfile
from closedloop.monitoring.selection import Candidates, ReviewConfig, select


def uncertainty(proba: np.ndarray, problem: str) -> tuple[np.ndarray, np.ndarray]:
    """(normalized entropy in [0, 1], 1 - margin between the top two probabilities)."""
    p = np.clip(np.asarray(proba, np.float64), 1e-12, 1.0)
    if problem == "multilabel":
        ent = -(p * np.log(p) + (1 - p) * np.log(np.clip(1 - p, 1e-12, 1))).mean(axis=1) / np.log(2)
        margin = 1 - np.abs(2 * p - 1).min(axis=1)
        return ent, margin
    ent = -(p * np.log(p)).sum(axis=1) / np.log(max(p.shape[1], 2))
    top = np.sort(p, axis=1)[:, -2:]
    return ent, 1 - (top[:, -1] - top[:, 0])


def _knn_dist(A: np.ndarray, B: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    d = np.sqrt(sqdist(A.astype(np.float32), B.astype(np.float32)))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    k = min(k, d.shape[1] - (1 if exclude_self else 0))
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


def embedding_drift(ref: np.ndarray, win: np.ndarray, k: int = 5) -> np.ndarray:
    """Percentile of each window sample's mean distance to its ``k`` nearest reference embeddings
    among the reference's own nearest-neighbour distances (0 = as close as a typical reference point)."""
    own = _knn_dist(ref, ref, k, exclude_self=True)
    new = _knn_dist(win, ref, k)
    return np.searchsorted(np.sort(own), new) / len(own)


def drift_scores(profile: ReferenceProfile, win: Sample, k: int = 5) -> np.ndarray:
    """Per-sample drift contribution in [0, 1]: the larger of the embedding-distance and the feature
    z-score percentiles against the reference's own distribution."""
    ref = profile.reference
    scores = []
    if ref.embeddings is not None and win.embeddings is not None and ref.embeddings.shape[1]:
        scores.append(embedding_drift(ref.embeddings, win.embeddings, k))
    if ref.features.shape[1]:
        med = np.nanmedian(ref.features, axis=0)
        mad = np.nanmedian(np.abs(ref.features - med), axis=0) * 1.4826
        mad = np.where(mad > 0, mad, np.nanstd(ref.features, axis=0) + 1e-6)
        zr = np.nanmax(np.abs(ref.features - med) / mad, axis=1)
        zw = np.nan_to_num(np.nanmax(np.abs(win.features - med) / mad, axis=1), nan=0.0)
        scores.append(np.searchsorted(np.sort(np.nan_to_num(zr)), zw) / len(zr))
    if not scores:
        return np.zeros(len(win))
    return np.max(np.stack(scores), axis=0)


def build_queue(
    profile: ReferenceProfile,
    win: Sample,
    ids: np.ndarray | None,
    k: int = 50,
    review: ReviewConfig | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The ``k`` samples most worth labeling, highest priority first (priority = mean of the two
    percentiles), chosen by the ``review`` strategy with its random control slice (``selected_by``)."""
    info = profile.info
    n = len(win)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    df = pd.DataFrame({"id": ids})
    if win.proba is not None and info.problem_type != "regression":
        ent, margin = uncertainty(win.proba, info.problem_type)
        df["entropy"] = ent
        df["margin"] = margin
        if info.problem_type in ("binary", "multiclass", "ordinal"):
            pred = predicted_classes(win.proba, info.problem_type, info.threshold)
            df["predicted"] = [info.label_names[c] if c < len(info.label_names) else str(c) for c in pred]
            df["confidence"] = (
                win.proba[np.arange(n), pred]
                if info.problem_type != "binary"
                else np.where(pred == 1, win.proba[:, 1], win.proba[:, 0])
            )
        unc_rank = pd.Series(ent).rank(pct=True).to_numpy()
    else:
        unc_rank = np.zeros(n)
    df["drift_score"] = drift_scores(profile, win)
    drift_rank = pd.Series(df["drift_score"]).rank(pct=True).to_numpy()
    df["priority"] = 0.5 * unc_rank + 0.5 * drift_rank
    df["reason"] = np.where(unc_rank >= drift_rank, "uncertain", "drifted")
    emb, ref = win.embeddings, profile.reference.embeddings
    if emb is None or not emb.shape[1]:  # no model embeddings: standardized monitored features instead
        mu, sd = np.nanmean(profile.reference.features, axis=0), np.nanstd(profile.reference.features, axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        emb = np.nan_to_num((win.features - mu) / sd)
        ref = np.nan_to_num((profile.reference.features - mu) / sd)
    chosen = select(Candidates(df["priority"].to_numpy(), emb, ref), k, review, seed=seed)
    out = df.iloc[chosen.indices].assign(selected_by=chosen.selected_by)
    return out.sort_values("priority", ascending=False, kind="stable").reset_index(drop=True)


def export_queue(
    queue: pd.DataFrame,
    raw: Any,
    keep: np.ndarray | None,
    profile: ReferenceProfile,
    out_dir: Path,
    proba: np.ndarray | None = None,
) -> Path:
    """Write ``queue.csv`` and the samples (PNG images, or ``rows.csv`` for tables) into ``out_dir``.

    With ``proba`` (rows aligned with ``raw``), ``queue.csv`` gains one ``p_<class>`` column per class
    so a labeling tool can show the model's top classes; ``queue.json`` records the class names and
    problem type, which the labeling page (``closedloop label``) reads.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    queue = queue.copy()
    pos = {int(v): i for i, v in enumerate(keep if keep is not None else range(len(raw)))}
    info = profile.info
    if proba is not None and info.problem_type != "regression":
        rows = np.asarray(proba)[[pos[int(s)] for s in queue["id"]]]
        names = list(info.label_names) or [str(c) for c in range(rows.shape[1])]
        if rows.shape[1] == len(names):
            for c, name in enumerate(names):
                queue[f"p_{name}"] = np.round(rows[:, c], 6)
    meta = {
        "kind": info.kind,
        "problem_type": info.problem_type,
        "label_names": list(info.label_names),
        "threshold": info.threshold,
    }
    (out_dir / "queue.json").write_text(json.dumps(meta, indent=2))
    if profile.info.kind == "images":
        from PIL import Image

        img_dir = out_dir / "images"
        img_dir.mkdir(exist_ok=True)
        files = []
        for sid in queue["id"]:
            arr = np.asarray(raw[pos[int(sid)]])
            arr = np.clip(arr, 0, 255).astype(np.uint8)
            img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            name = f"images/{int(sid):07d}.png"
            img.save(out_dir / name)
            files.append(name)
        queue["file"] = files
    else:
        rows = raw.iloc[[pos[int(s)] for s in queue["id"]]].copy()
        rows.insert(0, "id", queue["id"].to_numpy())
        rows.to_csv(out_dir / "rows.csv", index=False)
    queue.to_csv(out_dir / "queue.csv", index=False)
    return out_dir / "queue.csv"
