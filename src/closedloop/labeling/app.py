"""The labeling page and its small JSON API (FastAPI, the same web stack as ``closedloop serve``).

Routes: ``GET /`` the page, ``GET /static/*`` its script and style, ``GET /api/queue`` the queue,
the decisions in force and where to resume, ``GET /api/image/{id}``, ``POST /api/label`` and
``POST /api/undo`` (each answers only after the row is on disk, so the page shows the next image
only once the label is saved). The page holds no state the file does not: reopening it resumes at
the first undecided item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from closedloop.labeling.queue import LabelQueue, QueueItem, load_queue
from closedloop.labeling.store import LabelRow, LabelsFileError, LabelStore

STATIC = Path(__file__).parent / "static"


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


def _decisions(store: LabelStore) -> dict[str, Decision]:
    return {
        i: Decision(status=r.status, label=r.label, annotator=r.annotator, time=r.time)
        for i, r in store.current().items()
    }


def create_app(
    queue_dir: str | Path,
    annotator: str = "anonymous",
    classes: list[str] | None = None,
    multilabel: bool | None = None,
) -> Any:
    """An ASGI app serving the labeling page for ``queue_dir`` (checked now: a bad queue raises
    :class:`~closedloop.core.errors.DataError` before any server starts)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    queue: LabelQueue = load_queue(queue_dir, classes=classes, multilabel=multilabel)
    store = LabelStore(queue.dir / "labels.csv", queue.ids, queue.classes, queue.multilabel)
    app = FastAPI(title="closedloop label", docs_url=None, redoc_url=None)
    app.state.queue = queue
    app.state.store = store
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(LabelsFileError)
    def _bad_labels(request: Any, exc: LabelsFileError) -> JSONResponse:
        # the page shows this message as it is: it names the file and the line to fix
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/api/queue", response_model=QueueView)
    def get_queue() -> QueueView:
        decisions = _decisions(store)
        resume = next((i for i, it in enumerate(queue.items) if it.id not in decisions), -1)
        return QueueView(
            name=queue.dir.name,
            kind=queue.kind,
            multilabel=queue.multilabel,
            classes=queue.classes,
            annotator=annotator,
            items=queue.items,
            decisions=decisions,
            resume=resume,
        )

    @app.get("/api/image/{item_id}")
    def image(item_id: str) -> FileResponse:
        try:
            item = queue.item(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id!r} in {queue.dir}/queue.csv") from None
        if item.file is None:
            raise HTTPException(404, f"item {item_id!r} is a table row, not an image")
        return FileResponse(queue.dir / item.file)

    @app.post("/api/label", response_model=SavedView)
    def label(req: LabelRequest) -> SavedView:
        try:
            item = queue.item(req.id)
        except KeyError:
            raise HTTPException(404, f"no item {req.id!r} in {queue.dir}/queue.csv") from None
        store.rows()  # refuse to append to a file that is already invalid (409 names the line)
        try:
            row = store.append(item.id, req.label, req.status, req.annotator or annotator, item.predicted)
        except ValueError as exc:
            raise HTTPException(422, f"item {req.id!r}: {exc}") from None
        return SavedView(saved=row, decisions=_decisions(store))

    @app.post("/api/undo", response_model=SavedView)
    def undo(req: UndoRequest) -> SavedView:
        try:
            item = queue.item(req.id)
        except KeyError:
            raise HTTPException(404, f"no item {req.id!r} in {queue.dir}/queue.csv") from None
        store.rows()
        row = store.append(item.id, [], "undone", req.annotator or annotator, item.predicted)
        return SavedView(saved=row, decisions=_decisions(store))

    return app
