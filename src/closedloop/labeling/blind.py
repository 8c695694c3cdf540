"""Blind labeling: the person sees the sample and the class list, nothing the model said.

Two ways in:

* :func:`make_blind_queue` writes a queue drawn at random (seeded, recorded) from a labeled split; the
  queue folder holds only the samples (``queue.csv`` has ``id`` and ``file``, no prediction, no
  probability, no reason, no priority) and the held-back truth and model probabilities go to a
  sibling file the labeling server never reads (``heldback.csv``, outside the folder it serves).
* ``closedloop label QUEUE --blind`` on any queue: :func:`blind_items` strips every model field from
  the items and shows them in a seeded random order (queue order is priority order, itself a model
  output), recorded in ``QUEUE/blind.json`` so a restart resumes in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop.core.errors import DataError
from closedloop.core.io import write_json_atomic, write_text_atomic
from closedloop.labeling.queue import LabelQueue, QueueItem

BLIND_ORDER = "blind.json"
HELDBACK = "heldback.csv"
QUEUE_SUBDIR = "queue"


def strip(item: QueueItem) -> QueueItem:
    """The item as a blind page may see it: id, image file or feature values, nothing else."""
    return QueueItem(id=item.id, file=item.file, features=item.features)


def blind_items(queue: LabelQueue, seed: int | None = None) -> list[QueueItem]:
    """The queue's items without model output, in a seeded random order recorded in ``blind.json``
    (reused when it still lists exactly this queue's ids, so a restarted page keeps its order)."""
    seed = queue.seed if seed is None else int(seed)
    path = queue.dir / BLIND_ORDER
    ids = queue.ids
    order: list[str] | None = None
    if path.is_file():
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if rec.get("seed") == seed and sorted(rec.get("order", [])) == sorted(ids):
                order = [str(i) for i in rec["order"]]
        except (json.JSONDecodeError, AttributeError, TypeError):
            order = None
    if order is None:
        if queue.blind:
            order = ids  # drawn at random when the queue was made: keep that recorded order
        else:
            perm = np.random.default_rng([seed, 0xB11D]).permutation(len(ids))
            order = [ids[i] for i in perm]
        write_json_atomic(path, {"seed": seed, "order": order})
    by_id = {it.id: it for it in queue.items}
    return [strip(by_id[i]) for i in order]


def _labels_present(y: Any, where: str) -> np.ndarray:
    if y is None:
        raise DataError(
            f"{where}: this split has no labels; a blind human-level reference needs a split whose labels "
            "are known (and held back from the person labeling)"
        )
    arr = np.asarray(y)
    if arr.size == 0:
        raise DataError(f"{where}: the split is empty")
    flat = arr.reshape(len(arr), -1)[:, 0]
    if flat.dtype.kind == "f" and np.isnan(flat).any():
        n = int(np.isnan(flat).sum())
        raise DataError(
            f"{where}: {n} of {len(flat)} samples have no label (NaN); a blind queue needs labels"
        )
    if flat.dtype.kind in "iuf" and (flat < 0).any():
        n = int((flat < 0).sum())
        raise DataError(
            f"{where}: {n} of {len(flat)} samples have no label (negative); a blind queue needs labels"
        )
    return flat.astype(np.int64)


def make_blind_queue(
    X: Any,
    y: Any,
    label_names: list[str],
    out_dir: str | Path,
    *,
    n: int,
    seed: int = 0,
    pool: np.ndarray | None = None,
    proba: np.ndarray | None = None,
    problem_type: str = "binary",
    where: str = "split",
) -> tuple[Path, pd.DataFrame]:
    """Draw ``n`` samples at random from ``pool`` (row indices of ``X``; default all) and write
    ``out_dir/queue/`` (the blind queue) and ``out_dir/heldback.csv`` (``id, index, label`` and, with
    ``proba`` aligned with ``X``, the model's ``p_<class>``). Returns (queue folder, held-back table).

    Raises:
        DataError: the split has no labels, fewer rows than ``n``, or ``out_dir`` is not new.
    """
    labels = _labels_present(y, where)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: already exists and is not empty; choose a new folder for the blind queue")
    rows = np.arange(len(labels)) if pool is None else np.asarray(pool, dtype=np.int64)
    if n < 1:
        raise DataError(f"--n {n}: draw at least one item")
    if n > len(rows):
        raise DataError(f"--n {n}: {where} has only {len(rows)} samples to draw from")
    rng = np.random.default_rng([int(seed), 0x4B1D])
    drawn = rows[rng.permutation(len(rows))[:n]]  # the queue order is this random draw
    ids = [f"h{j:04d}" for j in range(n)]  # names say nothing about the sample or its label
    qdir = out / QUEUE_SUBDIR
    (qdir / "images").mkdir(parents=True, exist_ok=True)
    is_table = isinstance(X, pd.DataFrame)
    if is_table:
        feats = X.iloc[drawn].reset_index(drop=True)
        feats.insert(0, "id", ids)
        feats.to_csv(qdir / "rows.csv", index=False)
        (qdir / "images").rmdir()
        queue = pd.DataFrame({"id": ids})
    else:
        from PIL import Image

        files = []
        for item, row in zip(ids, drawn, strict=True):
            arr = np.clip(np.asarray(X[row]), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
            name = f"images/{item}.png"
            img.save(qdir / name)  # no text chunks: the file carries pixels only
            files.append(name)
        queue = pd.DataFrame({"id": ids, "file": files})
    write_text_atomic(qdir / "queue.csv", queue.to_csv(index=False))
    meta = {
        "kind": "table" if is_table else "images",
        "problem_type": problem_type,
        "label_names": list(label_names),
        "blind": True,
        "seed": int(seed),
    }
    write_json_atomic(qdir / "queue.json", meta)
    held = pd.DataFrame({"id": ids, "index": drawn, "label": [label_names[i] for i in labels[drawn]]})
    if proba is not None:
        p = np.asarray(proba)[drawn]
        for c, name in enumerate(label_names):
            held[f"p_{name}"] = np.round(p[:, c], 6)
    write_text_atomic(out / HELDBACK, held.to_csv(index=False))
    return qdir, held
