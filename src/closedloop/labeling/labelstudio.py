"""Label Studio round trip: tasks with the model's predictions out, a JSON export back in.

Out (``--to-label-studio FILE``): ``FILE`` is a JSON list of tasks in Label Studio's import format,
each ``{"data": {...}, "predictions": [{"model_version", "score", "result": [...]}]}``; a result is a
``choices`` region (``from_name`` "label", ``to_name`` the object tag, ``value.choices`` the class names)
so Label Studio pre-fills the suggestion, and ``score`` (the model's confidence) lets its Data Manager
sort by it. ``FILE`` with suffix ``.xml`` is the labeling config: ``<Image>`` (or ``<Table>`` for rows)
plus ``<Choices>`` with one ``<Choice>`` per class. Each task's ``data`` carries ``closedloop_id`` and
``closedloop_queue`` (a fingerprint of ``queue.csv``) so an export can be matched to its queue.

In (``--from-label-studio EXPORT.json``): Label Studio's JSON export (a list of tasks with
``annotations``). Per task and per annotator (``completed_by``) the newest annotation (by
``updated_at``, then ``created_at``) that is not ``was_cancelled`` is appended to ``labels.csv`` as
``labelstudio:<user>``, so several annotators' labels stay side by side for agreement and consensus;
cancelled annotations are reported.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import DataError
from closedloop.labeling.queue import LabelQueue, load_queue
from closedloop.labeling.store import LabelStore, check_annotator

FROM_NAME = "label"


def queue_fingerprint(queue: LabelQueue) -> str:
    """Identifies the queue an export belongs to (first 12 hex digits of sha256 of queue.csv)."""
    return hashlib.sha256((queue.dir / "queue.csv").read_bytes()).hexdigest()[:12]


def labeling_config(queue: LabelQueue) -> str:
    """Label Studio labeling config (XML) for the queue's class list."""
    obj = "image" if queue.kind == "images" else "row"
    view = (
        '  <Image name="image" value="$image" zoom="true" zoomControl="true"/>'
        if queue.kind == "images"
        else '  <Table name="row" value="$row"/>'
    )
    choice = "multiple" if queue.multilabel else "single"
    lines = [
        "<View>",
        f"  <Header value={quoteattr('closedloop review queue ' + queue.dir.name)}/>",
        view,
        '  <Text name="reason" value="$reason"/>',
        f'  <Choices name="{FROM_NAME}" toName="{obj}" choice="{choice}" showInline="true">',
        *(f"    <Choice value={quoteattr(c)}/>" for c in queue.classes),
        "  </Choices>",
        "</View>",
    ]
    return "\n".join(lines) + "\n"


class ToLabelStudioResult(BaseModel):
    """What ``to_label_studio`` wrote."""

    model_config = ConfigDict(extra="forbid")

    tasks_file: Path
    config_file: Path
    n_tasks: int
    queue_fingerprint: str


def to_label_studio(
    queue_dir: str | Path,
    out_file: str | Path,
    image_url_prefix: str | None = None,
    model_version: str = "closedloop",
    classes: list[str] | None = None,
    multilabel: bool | None = None,
) -> ToLabelStudioResult:
    """Write Label Studio tasks (with predictions) to ``out_file`` and the labeling config next to it.

    Image URLs are ``image_url_prefix + <file in the queue>``; the default,
    ``/data/local-files/?d=<queue folder name>/``, works with Label Studio's local file serving when
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` is the queue folder's parent.
    """
    queue = load_queue(queue_dir, classes=classes, multilabel=multilabel)
    fp = queue_fingerprint(queue)
    prefix = image_url_prefix if image_url_prefix is not None else f"/data/local-files/?d={queue.dir.name}/"
    obj = "image" if queue.kind == "images" else "row"
    tasks = []
    for it in queue.items:
        data: dict[str, Any] = {
            "closedloop_id": it.id,
            "closedloop_queue": fp,
            "reason": f"{it.reason}: {it.reason_text}" if it.reason else "",
        }
        if queue.kind == "images":
            data["image"] = prefix + str(it.file)
        else:
            data["row"] = it.features
        task: dict[str, Any] = {"data": data}
        choices = [c for c in it.predicted if c in queue.classes]
        if choices:
            score = it.confidence if it.confidence is not None else (it.top[0].p if it.top else None)
            pred: dict[str, Any] = {
                "model_version": model_version,
                "result": [
                    {"from_name": FROM_NAME, "to_name": obj, "type": "choices", "value": {"choices": choices}}
                ],
            }
            if score is not None:
                pred["score"] = round(float(score), 6)
            task["predictions"] = [pred]
        tasks.append(task)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = out.with_suffix(".xml")
    for path, text in ((out, json.dumps(tasks, indent=2)), (cfg, labeling_config(queue))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return ToLabelStudioResult(tasks_file=out, config_file=cfg, n_tasks=len(tasks), queue_fingerprint=fp)


class Cancelled(BaseModel):
    """A cancelled (skipped in Label Studio) annotation, reported and not imported."""

    model_config = ConfigDict(extra="forbid")

    id: str
    annotation: str
    annotator: str


class FromLabelStudioResult(BaseModel):
    """What ``from_label_studio`` appended to ``labels.csv``."""

    model_config = ConfigDict(extra="forbid")

    n_imported: int
    n_unchanged: int
    """Annotations already in labels.csv (an export read twice is not counted twice)."""
    n_tasks: int
    n_without_annotation: int
    cancelled: list[Cancelled]


def _who(ann: dict[str, Any]) -> str:
    by = ann.get("completed_by")
    if isinstance(by, dict):
        by = by.get("email") or by.get("id")
    return f"labelstudio:{by}" if by is not None else "labelstudio"


def _when(ann: dict[str, Any]) -> str:
    """The annotation's ISO time (``updated_at``, else ``created_at``), or "" when it has none."""
    raw = str(ann.get("updated_at") or ann.get("created_at") or "")
    try:
        datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return raw


def _order(ann: dict[str, Any]) -> tuple[datetime, str]:
    when = _when(ann)
    t = datetime.fromisoformat(when.replace("Z", "+00:00")) if when else datetime.min.replace(tzinfo=UTC)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t, str(ann.get("id", ""))


def from_label_studio(
    export_file: str | Path,
    queue_dir: str | Path,
    classes: list[str] | None = None,
    multilabel: bool | None = None,
) -> FromLabelStudioResult:
    """Append the newest non-cancelled annotation of each task in a Label Studio JSON export to
    ``labels.csv``. Everything is checked before anything is written.

    Raises:
        DataError: not a JSON list of tasks, tasks from another project or queue, unknown ids or
            class names (each named).
    """
    path = Path(export_file)
    queue = load_queue(queue_dir, classes=classes, multilabel=multilabel)
    fp = queue_fingerprint(queue)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"--from-label-studio {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"--from-label-studio {path}: not JSON ({exc})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DataError(
            f"--from-label-studio {path}: expected a JSON list of tasks (Label Studio's 'JSON' export), "
            f"got {type(tasks).__name__}"
        )
    foreign = [t.get("id", i) for i, t in enumerate(tasks) if "closedloop_id" not in (t.get("data") or {})]
    if foreign:
        raise DataError(
            f"--from-label-studio {path}: task(s) {foreign[:5]} have no data.closedloop_id; this export is "
            f"from another Label Studio project (import tasks made by 'closedloop label {queue.dir} "
            "--to-label-studio FILE')"
        )
    other = sorted({str(t["data"].get("closedloop_queue")) for t in tasks} - {fp})
    if other:
        raise DataError(
            f"--from-label-studio {path}: tasks belong to queue {other}, not to {queue.dir} ({fp}); "
            "this export is for another project or an older queue"
        )
    known = set(queue.ids)
    unknown_ids = [t["data"]["closedloop_id"] for t in tasks if str(t["data"]["closedloop_id"]) not in known]
    if unknown_ids:
        raise DataError(f"--from-label-studio {path}: ids {unknown_ids[:5]} are not in {queue.dir}/queue.csv")
    chosen: list[tuple[str, list[str], str, str]] = []
    cancelled: list[Cancelled] = []
    bad: dict[str, list[str]] = {}
    empty = 0
    for t in tasks:
        item_id = str(t["data"]["closedloop_id"])
        anns = [a for a in t.get("annotations") or [] if isinstance(a, dict)]
        for a in anns:
            if a.get("was_cancelled"):
                cancelled.append(Cancelled(id=item_id, annotation=str(a.get("id", "")), annotator=_who(a)))
        live = [a for a in anns if not a.get("was_cancelled")]
        if not live:
            empty += 1
            continue
        by_who: dict[str, list[dict[str, Any]]] = {}
        for a in live:
            by_who.setdefault(_who(a), []).append(a)
        for who, theirs in by_who.items():
            ann = max(theirs, key=_order)
            try:
                check_annotator(who)
            except ValueError as exc:
                raise DataError(
                    f"--from-label-studio {path}: task {t.get('id')}: annotation {ann.get('id')}: {exc}"
                ) from None
            names: list[str] = []
            for r in ann.get("result") or []:
                if r.get("type") == "choices" and r.get("from_name") == FROM_NAME:
                    names += [str(c) for c in (r.get("value") or {}).get("choices", [])]
            unknown = [n for n in names if n not in queue.classes]
            if unknown:
                bad[item_id] = unknown
                continue
            if not names or (not queue.multilabel and len(names) != 1):
                raise DataError(
                    f"--from-label-studio {path}: task {t.get('id')} (closedloop_id {item_id}): annotation "
                    f"{ann.get('id')} has choices {names}; expected "
                    f"{'at least one' if queue.multilabel else 'exactly one'} of {queue.classes} "
                    f"in a '{FROM_NAME}' Choices result"
                )
            chosen.append((item_id, names, who, _when(ann)))
    if bad:
        listed = "; ".join(f"id {k}: {v}" for k, v in list(bad.items())[:5])
        raise DataError(
            f"--from-label-studio {path}: class names not in this queue's class list {queue.classes}: {listed}"
        )
    store = LabelStore(queue.dir / "labels.csv", queue.ids, queue.classes, queue.multilabel)
    current = store.current_by_annotator()
    n_new = 0
    for item_id, names, who, when in chosen:
        d = current.get((item_id, who))
        if d and d.status == "labeled" and d.label == names and d.annotator == who and d.time == when:
            continue
        store.append(item_id, names, "labeled", who, queue.item(item_id).predicted, time=when or None)
        n_new += 1
    return FromLabelStudioResult(
        n_imported=n_new,
        n_unchanged=len(chosen) - n_new,
        n_tasks=len(tasks),
        n_without_annotation=empty,
        cancelled=cancelled,
    )
