"""A review queue folder as the labeling tools read it.

Layout (written by ``closedloop monitor ... --review K``, see ``monitoring/flywheel.py``)::

    QUEUE_DIR/
      queue.csv      id, predicted, confidence, reason, priority, ..., p_<class> per class, file (images)
      queue.json     {"kind", "problem_type", "label_names", "threshold"}  (older queues lack it)
      images/*.png   one image per queued sample (images), or
      rows.csv       id + the sample's feature columns (tables)
      labels.csv     written by the labeling page (see store.py)
      assignments.csv  optional: which annotator labels which item (see assign.py)

A *blind* queue (``queue.json`` ``"blind": true``, written by ``closedloop human-baseline``) carries
no model output at all; ``closedloop label QUEUE --blind`` hides it for any queue (see blind.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.errors import DataError

REASONS = {
    "uncertain": "the model is unsure between classes",
    "drifted": "unlike the data the model was trained on",
    "disagreement": "champion and challenger models disagree",
    "random": "random control sample (measures what the queue is worth)",
}


class ClassScore(BaseModel):
    """One class and the model's probability for it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    p: float


class QueueItem(BaseModel):
    """One sample to label, with what the model said about it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    file: str | None = None
    """Image path relative to the queue folder (images only)."""
    predicted: list[str] = Field(default_factory=list)
    """The model's suggestion: one class, or for multi-label every class above the threshold."""
    confidence: float | None = None
    top: list[ClassScore] = Field(default_factory=list)
    """Up to three most probable classes, best first."""
    reason: str = ""
    reason_text: str = ""
    features: dict[str, str] = Field(default_factory=dict)
    """Tables: the row's feature values, as text."""


class LabelQueue(BaseModel):
    """A whole queue folder: its classes and items, in queue order."""

    model_config = ConfigDict(extra="forbid")

    dir: Path
    kind: Literal["images", "table"]
    multilabel: bool
    classes: list[str]
    items: list[QueueItem]
    blind: bool = False
    """Declared blind in queue.json: the page never shows or sends model output."""
    seed: int = 0
    """Seed of the blind order (queue.json)."""
    assignments: dict[str, list[str]] = Field(default_factory=dict)
    """Annotator -> assigned item ids (assignments.csv); empty: anyone labels anything."""

    @property
    def independent(self) -> bool:
        """Each annotator sees only their own decisions (blind or assigned queues)."""
        return self.blind or bool(self.assignments)

    def item(self, item_id: str) -> QueueItem:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(item_id)

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]


def _text(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def load_queue(
    queue_dir: str | Path, classes: list[str] | None = None, multilabel: bool | None = None
) -> LabelQueue:
    """Read and check a queue folder; ``classes``/``multilabel`` override or fill in ``queue.json``.

    Raises:
        DataError: no ``queue.csv``, no ``id`` column, duplicate ids, image files that are missing,
            or no way to know the class list.
    """
    import pandas as pd

    qdir = Path(queue_dir)
    if not qdir.is_dir():
        raise DataError(f"{qdir}: no such queue folder (write one with 'closedloop monitor ... --review K')")
    qcsv = qdir / "queue.csv"
    if not qcsv.is_file():
        raise DataError(
            f"{qdir}: no queue.csv in this folder; expected the output of "
            "'closedloop monitor RUN DATA --review K --review-dir DIR'"
        )
    df = pd.read_csv(qcsv, dtype={"id": str}, keep_default_na=False, na_values=[""])
    if "id" not in df:
        raise DataError(f"{qcsv}: no 'id' column (columns: {list(df.columns)})")
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise DataError(f"{qcsv}: duplicate ids {dup[:5]}")
    meta = json.loads((qdir / "queue.json").read_text()) if (qdir / "queue.json").is_file() else {}
    pcols = [c for c in df.columns if c.startswith("p_")]
    names = classes or meta.get("label_names") or [c[2:] for c in pcols]
    if not names and "predicted" in df:
        names = sorted({_text(v) for v in df["predicted"] if _text(v)})
    if not names:
        raise DataError(
            f"{qdir}: cannot tell the class list (no queue.json, no p_<class> columns); "
            "give it with --classes a,b,c"
        )
    names = [str(n) for n in names]
    if multilabel is None:
        multilabel = meta.get("problem_type") == "multilabel"
    threshold = float(meta.get("threshold", 0.5))
    kind: Literal["images", "table"] = "images" if "file" in df else "table"
    if df.empty:
        raise DataError(f"{qcsv}: the queue has no items")
    if kind == "images":
        root = qdir.resolve()
        outside = [str(f) for f in df["file"] if not (qdir / str(f)).resolve().is_relative_to(root)]
        if outside:  # the page serves these files: nothing outside the queue folder
            raise DataError(f"{qcsv}: file(s) outside the queue folder: {outside[:5]}")
        missing = [str(f) for f in df["file"] if not (qdir / str(f)).is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(
                f"{qdir}: {len(missing)} image file(s) named in queue.csv are missing: "
                f"{', '.join(missing[:5])}{more}"
            )
        rows: dict[str, dict[str, str]] = {}
    else:
        rpath = qdir / "rows.csv"
        if not rpath.is_file():
            raise DataError(f"{qdir}: queue.csv has no 'file' column and there is no rows.csv (table rows)")
        rdf = pd.read_csv(rpath, dtype={"id": str}, keep_default_na=False, na_values=[""])
        rows = {
            _text(r["id"]): {k: _text(v) for k, v in r.items() if k != "id"} for r in rdf.to_dict("records")
        }
        missing = [i for i in df["id"] if i not in rows]
        if missing:
            raise DataError(f"{rpath}: no row for queued id(s) {missing[:5]}")
    items = []
    for r in df.to_dict("records"):
        scores = [ClassScore(name=c[2:], p=float(r[c])) for c in pcols if r[c] == r[c]]
        scores.sort(key=lambda s: -s.p)
        if multilabel:
            predicted = [s.name for s in scores if s.p >= threshold]
        else:
            pred = _text(r.get("predicted"))
            predicted = [pred] if pred else ([scores[0].name] if scores else [])
        conf = r.get("confidence")
        reason = _text(r.get("reason"))
        items.append(
            QueueItem(
                id=_text(r["id"]),
                file=_text(r["file"]) if kind == "images" else None,
                predicted=predicted,
                confidence=float(conf) if conf is not None and conf == conf else None,
                top=scores[:3],
                reason=reason,
                reason_text=REASONS.get(reason, reason),
                features=rows.get(_text(r["id"]), {}),
            )
        )
    from closedloop.labeling.assign import read_assignments

    ids = [it.id for it in items]
    return LabelQueue(
        dir=qdir,
        kind=kind,
        multilabel=multilabel,
        classes=names,
        items=items,
        blind=bool(meta.get("blind", False)),
        seed=int(meta.get("seed", 0)),
        assignments=read_assignments(qdir, ids),
    )
