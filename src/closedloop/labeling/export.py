"""Labeled samples out of a queue folder, in the layout ``closedloop retrain --add-labeled`` reads.

Images (single-label): ``DIR/<class>/<image>.png``. Tables: ``DIR/labeled.csv`` (feature columns plus
``label``, the class name; pass that file to ``--add-labeled``). Multi-label images: ``DIR/images/`` plus
``DIR/labels.csv`` (``file, labels`` joined by ``;``), a layout ``--add-labeled`` does not read yet.
Every export also writes ``DIR/not_exported.csv`` (skipped, unsure and undecided items, listed and
not exported) and ``DIR/export.json`` (the counts). The folder appears whole or not at all.

When several annotators labeled a single-label queue, the export uses the consensus label
(``consensus.py``: CROWDLAB with the queue's probabilities, else majority vote; recomputed when
``labels.csv`` is newer than ``consensus.csv``); items whose consensus quality is below
``adjudicate_below`` are not exported (status ``adjudicate``) until someone adjudicates them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import DataError
from closedloop.labeling.consensus import consensus_rows, queue_consensus, several_annotators
from closedloop.labeling.queue import load_queue
from closedloop.labeling.store import SEP, LabelStore


class NotExported(BaseModel):
    """An item left out of the export, and why."""

    model_config = ConfigDict(extra="forbid")

    id: str
    status: str
    """``skipped``, ``unsure``, ``unlabeled`` or ``adjudicate`` (consensus quality too low)."""


class Decided(NamedTuple):
    """The decision an export acts on: from labels.csv, or the consensus of several annotators."""

    status: str
    label: list[str]


class ExportResult(BaseModel):
    """What ``export_labels`` wrote."""

    model_config = ConfigDict(extra="forbid")

    out_dir: Path
    add_labeled: Path
    """What to pass to ``closedloop retrain --add-labeled``."""
    n_exported: int
    per_class: dict[str, int]
    not_exported: list[NotExported]
    labels_from: str = "labels.csv"
    """``labels.csv`` (latest decision per item) or ``consensus.csv`` (several annotators)."""


def export_labels(
    queue_dir: str | Path,
    out_dir: str | Path,
    classes: list[str] | None = None,
    multilabel: bool | None = None,
    adjudicate_below: float = 0.5,
) -> ExportResult:
    """Write the items labeled in ``queue_dir/labels.csv`` to ``out_dir`` (which must not exist or be
    empty); skipped, unsure and undecided items are listed in ``not_exported.csv``. With several
    annotators, the consensus labels (see the module docstring)."""
    queue = load_queue(queue_dir, classes=classes, multilabel=multilabel)
    store = LabelStore(queue.dir / "labels.csv", queue.ids, queue.classes, queue.multilabel)
    current = {i: Decided(r.status, r.label) for i, r in store.current().items()}
    labels_from = "labels.csv"
    if not queue.multilabel and several_annotators(queue):
        agreed = consensus_rows(queue)
        if agreed is None:
            queue_consensus(queue.dir)
            agreed = consensus_rows(queue) or {}
        labels_from = "consensus.csv"
        for i, (label, quality, model_only) in agreed.items():
            ok = quality >= adjudicate_below and not model_only
            current[i] = Decided("labeled", [label]) if ok else Decided("adjudicate", [])
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"--export {out}: already exists and is not an empty folder; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        per_class: Counter[str] = Counter()
        left: list[NotExported] = []
        rows: list[dict[str, str]] = []
        for it in queue.items:
            d = current.get(it.id)
            if d is None or d.status != "labeled":
                left.append(NotExported(id=it.id, status=d.status if d else "unlabeled"))
                continue
            per_class.update(d.label)
            if queue.kind == "table":
                rows.append({**it.features, "label": SEP.join(d.label)})
            elif queue.multilabel:
                assert it.file is not None
                (tmp / "images").mkdir(exist_ok=True)
                shutil.copy2(queue.dir / it.file, tmp / "images" / Path(it.file).name)
                rows.append({"file": f"images/{Path(it.file).name}", "labels": SEP.join(d.label)})
            else:
                assert it.file is not None
                (tmp / d.label[0]).mkdir(exist_ok=True)
                shutil.copy2(queue.dir / it.file, tmp / d.label[0] / Path(it.file).name)
        if rows:
            name = "labeled.csv" if queue.kind == "table" else "labels.csv"
            with open(tmp / name, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        with open(tmp / "not_exported.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "status"])
            w.writerows([[n.id, n.status] for n in left])
        n = sum(1 for it in queue.items if (d := current.get(it.id)) and d.status == "labeled")
        add = out / "labeled.csv" if queue.kind == "table" else out
        result = ExportResult(
            out_dir=out,
            add_labeled=add,
            n_exported=n,
            per_class=dict(per_class),
            not_exported=left,
            labels_from=labels_from,
        )
        (tmp / "export.json").write_text(
            json.dumps({"queue": str(queue.dir.resolve()), **result.model_dump(mode="json")}, indent=2)
        )
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
