"""The labeling page and its small JSON API (FastAPI, the same web stack as ``closedloop serve``).

Routes: ``GET /`` the page, ``GET /static/*`` its script and style, ``GET /api/queue`` the queue,
the decisions in force and where to resume, ``GET /api/image/{id}``, ``POST /api/label`` and
``POST /api/undo`` (each answers only after the row is on disk, so the page shows the next image
only once the label is saved). The page holds no state the file does not: reopening it resumes at
the first undecided item.

Blind mode (``blind=True`` or a queue declared blind): the items carry no prediction, confidence,
top-3 or reason, the page is served without its model and "why queued" panels or the accept key, and
``labels.csv`` records no prediction; anything the browser can fetch is free of model output.
Independent mode (blind or assigned queues): ``GET /api/queue?annotator=NAME`` lists only NAME's
items and NAME's own decisions, so no one sees another person's label.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.errors import ConfigError
from closedloop.labeling.blind import blind_items
from closedloop.labeling.queue import LabelQueue, QueueItem, load_queue
from closedloop.labeling.store import LabelRow, LabelsFileError, LabelStore, check_annotator

STATIC = Path(__file__).parent / "static"
MODEL_PANELS = re.compile(r"<!--model-->.*?<!--/model-->", re.S)
"""Parts of index.html that show model output; removed from the page served in blind mode."""
BLIND_FIELDS = ("id", "file", "features")
"""The only item fields a blind page receives."""


class LabelRequest(BaseModel):
    """A decision on one item, as the page posts it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    status: Literal["labeled", "skipped", "unsure"]
    label: list[str] = Field(default_factory=list)
    annotator: str | None = None


class UndoRequest(BaseModel):
    """Withdraw the latest decision on one item."""

    model_config = ConfigDict(extra="forbid")

    id: str
    annotator: str | None = None


class Decision(BaseModel):
    """The decision in force for one item."""

    model_config = ConfigDict(extra="forbid")

    status: str
    label: list[str]
    annotator: str
    time: str


class QueueView(BaseModel):
    """Everything the page needs to draw the queue."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    multilabel: bool
    blind: bool
    independent: bool
    """Only this annotator's items and decisions are listed."""
    classes: list[str]
    annotator: str
    items: list[QueueItem]
    decisions: dict[str, Decision]
    resume: int
    """Index of the first undecided item; -1 when every item has a decision."""


class SavedView(BaseModel):
    """The answer to a label or undo: the row written and the decisions now in force."""

    model_config = ConfigDict(extra="forbid")

    saved: LabelRow
    decisions: dict[str, Decision]


def _decisions(store: LabelStore, who: str | None = None) -> dict[str, Decision]:
    """Decisions in force: everyone's (latest per id), or with ``who`` that annotator's own."""
    rows = (
        store.current()
        if who is None
        else {i: r for (i, a), r in store.current_by_annotator().items() if a == who}
    )
    return {
        i: Decision(status=r.status, label=r.label, annotator=r.annotator, time=r.time)
        for i, r in rows.items()
    }


def create_app(
    queue_dir: str | Path,
    annotator: str = "anonymous",
    classes: list[str] | None = None,
    multilabel: bool | None = None,
    blind: bool = False,
    seed: int | None = None,
) -> Any:
    """An ASGI app serving the labeling page for ``queue_dir`` (checked now: a bad queue raises
    :class:`~closedloop.core.errors.DataError` before any server starts).

    ``blind`` hides every model output (a queue declared blind is always blind); ``seed`` orders a
    blind page's items (default: the queue's recorded seed)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    try:
        check_annotator(annotator)
    except ValueError as exc:
        raise ConfigError(f"--annotator: {exc}") from None
    queue: LabelQueue = load_queue(queue_dir, classes=classes, multilabel=multilabel)
    blind = blind or queue.blind
    independent = blind or queue.independent
    items = blind_items(queue, seed) if blind else queue.items
    store = LabelStore(queue.dir / "labels.csv", queue.ids, queue.classes, queue.multilabel)
    app = FastAPI(title="closedloop label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    app.state.items = items
    app.state.blind = blind
    app.state.store = store
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    page_html = (STATIC / "index.html").read_text(encoding="utf-8")
    if blind:
        page_html = MODEL_PANELS.sub("", page_html).replace("<body ", '<body data-blind="1" ', 1)

    def who_of(name: str | None) -> str:
        who = name or annotator
        try:
            return check_annotator(who)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    def assigned(who: str) -> list[QueueItem]:
        if not queue.assignments:
            return items
        if who not in queue.assignments:
            raise HTTPException(
                403,
                f"annotator {who!r} has no items in {queue.dir}/assignments.csv; declared annotators: "
                f"{sorted(queue.assignments)}",
            )
        mine = set(queue.assignments[who])
        return [it for it in items if it.id in mine]

    def check_item(item_id: str, who: str) -> QueueItem:
        try:
            item = queue.item(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id!r} in {queue.dir}/queue.csv") from None
        if queue.assignments and item_id not in set(queue.assignments.get(who, [])):
            raise HTTPException(403, f"item {item_id!r} is not assigned to annotator {who!r}")
        return item

    @app.exception_handler(LabelsFileError)
    def _bad_labels(request: Any, exc: LabelsFileError) -> JSONResponse:
        # the page shows this message as it is: it names the file and the line to fix
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return page_html

    @app.get("/api/queue", response_model=None)
    def get_queue(annotator: str | None = None) -> Any:
        who = who_of(annotator)
        mine = assigned(who) if independent else items
        decisions = _decisions(store, who if independent else None)
        if independent:
            ids = {it.id for it in mine}
            decisions = {i: d for i, d in decisions.items() if i in ids}
        resume = next((i for i, it in enumerate(mine) if it.id not in decisions), -1)
        view = QueueView(
            name=queue.dir.name,
            kind=queue.kind,
            multilabel=queue.multilabel,
            blind=blind,
            independent=independent,
            classes=queue.classes,
            annotator=who,
            items=mine,
            decisions=decisions,
            resume=resume,
        )
        if not blind:
            return view
        data = view.model_dump(mode="json")
        # blind: the item objects carry only what a person may see; no model field, not even empty
        data["items"] = [{k: it[k] for k in BLIND_FIELDS} for it in data["items"]]
        return JSONResponse(data)

    @app.get("/api/image/{item_id}")
    def image(item_id: str) -> FileResponse:
        try:
            item = queue.item(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id!r} in {queue.dir}/queue.csv") from None
        if item.file is None:
            raise HTTPException(404, f"item {item_id!r} is a table row, not an image")
        return FileResponse(queue.dir / item.file)

    def view(row: LabelRow, who: str) -> Any:
        if not independent:
            return SavedView(saved=row, decisions=_decisions(store))
        ids = {it.id for it in assigned(who)}
        mine = {i: d for i, d in _decisions(store, who).items() if i in ids}
        saved = SavedView(saved=row, decisions=mine)
        if not blind:
            return saved
        return JSONResponse(saved.model_dump(mode="json", exclude={"saved": {"predicted"}}))

    @app.post("/api/label", response_model=None)
    def label(req: LabelRequest) -> Any:
        who = who_of(req.annotator)
        item = check_item(req.id, who)
        store.rows()  # refuse to append to a file that is already invalid (409 names the line)
        predicted = [] if blind else item.predicted
        try:
            row = store.append(item.id, req.label, req.status, who, predicted)
        except ValueError as exc:
            raise HTTPException(422, f"item {req.id!r}: {exc}") from None
        return view(row, who)

    @app.post("/api/undo", response_model=None)
    def undo(req: UndoRequest) -> Any:
        who = who_of(req.annotator)
        item = check_item(req.id, who)
        store.rows()
        row = store.append(item.id, [], "undone", who, [] if blind else item.predicted)
        return view(row, who)

    return app
