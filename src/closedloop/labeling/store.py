"""``labels.csv``: the append-only record of every labeling decision, safe with several writers.

Columns: ``id, label, annotator, time, status, predicted``. ``status`` is ``labeled``, ``skipped``,
``unsure`` or ``undone`` (an undo appends a row instead of editing one, and withdraws the latest
decision for that id); ``label`` holds the class name (multi-label: names joined by ``;``). The
latest row for an id wins.

Why appends stay whole with two people labeling at once: every row is one ``os.write`` on a file
opened with ``O_APPEND`` (the kernel moves to the end and writes in one step), under an exclusive
``flock`` so the header is written exactly once and a reader never sees half a row; the row is
fsynced before the page is told it was saved.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import DataError

COLUMNS = ["id", "label", "annotator", "time", "status", "predicted"]
Status = Literal["labeled", "skipped", "unsure", "undone"]
STATUSES = ("labeled", "skipped", "unsure", "undone")
SEP = ";"
MAX_ANNOTATOR = 64


def check_annotator(name: str) -> str:
    """Return ``name`` if it can be recorded as an annotator, else raise ``ValueError`` saying why.

    Any printable text is fine (commas and quotes are CSV-quoted; the page shows names as text, never
    as HTML); control characters (a newline would split a row), surrounding spaces and empty or very
    long names are refused.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("annotator name is empty; give a name such as 'ada'")
    if name != name.strip():
        raise ValueError(f"annotator name {name!r} starts or ends with spaces")
    bad = sorted({c for c in name if not c.isprintable()})
    if bad:
        raise ValueError(
            f"annotator name {name!r} contains control character(s) {[hex(ord(c)) for c in bad]}; "
            "use printable text"
        )
    if len(name) > MAX_ANNOTATOR:
        raise ValueError(
            f"annotator name {name[:20]!r}... has {len(name)} characters (at most {MAX_ANNOTATOR})"
        )
    return name


class LabelsFileError(DataError):
    """``labels.csv`` cannot be read (for example after a hand edit); the message names the line."""


class LabelRow(BaseModel):
    """One decision as stored in ``labels.csv``."""

    model_config = ConfigDict(extra="forbid")

    id: str
    label: list[str]
    annotator: str
    time: str
    status: Status
    predicted: list[str]
    line: int = 0
    """Line number in labels.csv (1 = header), for messages."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LabelStore:
    """Append and read ``QUEUE_DIR/labels.csv``, checking rows against the queue's ids and classes."""

    def __init__(self, path: str | Path, ids: list[str], classes: list[str], multilabel: bool = False):
        self.path = Path(path)
        self.ids = set(ids)
        self.classes = list(classes)
        self.multilabel = multilabel

    def check_label(self, label: list[str], status: str) -> None:
        """Raise ``ValueError`` naming what is wrong with a label before it is written."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {list(STATUSES)}")
        unknown = [n for n in label if n not in self.classes]
        if unknown:
            raise ValueError(f"label {unknown} is not in the class list {self.classes}")
        if status == "labeled" and not self.multilabel and len(label) != 1:
            raise ValueError(f"a single-label queue needs exactly one class, got {label}")
        if status != "labeled" and label:
            raise ValueError(f"status {status!r} takes no label, got {label}")

    def append(
        self,
        item_id: str,
        label: list[str],
        status: str,
        annotator: str,
        predicted: list[str] | None = None,
        time: str | None = None,
    ) -> LabelRow:
        """Write one row durably (one write, fsynced) and return it."""
        if item_id not in self.ids:
            raise KeyError(item_id)
        self.check_label(label, status)
        check_annotator(annotator)
        row = LabelRow(
            id=item_id,
            label=list(label),
            annotator=annotator,
            time=time or now(),
            status=status,  # type: ignore[arg-type]
            predicted=list(predicted or []),
        )
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [row.id, SEP.join(row.label), row.annotator, row.time, row.status, SEP.join(row.predicted)]
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = buf.getvalue()
            if os.fstat(fd).st_size == 0:
                data = ",".join(COLUMNS) + "\n" + data
            os.write(fd, data.encode())
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return row

    def rows(self) -> list[LabelRow]:
        """Every row in file order; :class:`LabelsFileError` names the first line that is invalid."""
        if not self.path.is_file():
            return []
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # a writer holds LOCK_EX for its whole row
            with os.fdopen(os.dup(fd), encoding="utf-8", newline="") as fh:
                text = fh.read()
        finally:
            os.close(fd)
        if not text:
            return []
        where = f"{self.path}"
        if not text.endswith("\n"):
            n = text.count("\n") + 1
            raise LabelsFileError(f"{where} line {n}: the last line is incomplete (no newline at its end)")
        lines = text.split("\n")[:-1]
        if lines[0].split(",") != COLUMNS:
            raise LabelsFileError(f"{where} line 1: header is {lines[0]!r}, expected {','.join(COLUMNS)!r}")
        out = []
        for n, line in enumerate(lines[1:], start=2):
            out.append(self._parse(line, n, where))
        return out

    def _parse(self, line: str, n: int, where: str) -> LabelRow:
        fields = next(csv.reader([line]), [])
        if len(fields) != len(COLUMNS):
            raise LabelsFileError(
                f"{where} line {n}: {len(fields)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})"
            )
        item_id, label, annotator, time, status, predicted = fields
        if item_id not in self.ids:
            raise LabelsFileError(f"{where} line {n}: id {item_id!r} is not in queue.csv")
        if status not in STATUSES:
            raise LabelsFileError(f"{where} line {n}: status {status!r} is not one of {list(STATUSES)}")
        names = [x for x in label.split(SEP) if x] if label else []
        try:
            self.check_label(names, status)
        except ValueError as exc:
            raise LabelsFileError(f"{where} line {n}: {exc}") from None
        try:
            datetime.fromisoformat(time.replace("Z", "+00:00"))
        except ValueError:
            raise LabelsFileError(f"{where} line {n}: time {time!r} is not an ISO 8601 time") from None
        return LabelRow(
            id=item_id,
            label=names,
            annotator=annotator,
            time=time,
            status=status,  # type: ignore[arg-type]
            predicted=[x for x in predicted.split(SEP) if x],
            line=n,
        )

    def current(self) -> dict[str, LabelRow]:
        """The decision in force per id: the latest row wins; an ``undone`` row withdraws the latest
        decision still in force for its id (so the one before it, if any, applies again)."""
        stacks: dict[str, list[LabelRow]] = {}
        for row in self.rows():
            stack = stacks.setdefault(row.id, [])
            if row.status == "undone":
                if stack:
                    stack.pop()
            else:
                stack.append(row)
        return {i: s[-1] for i, s in stacks.items() if s}

    def current_by_annotator(self) -> dict[tuple[str, str], LabelRow]:
        """The decision in force per (id, annotator): as :meth:`current`, but each annotator's
        decisions stand on their own (an annotator who labels an item twice: the latest wins, both rows
        stay in the file; an ``undone`` row withdraws only its own annotator's latest decision)."""
        stacks: dict[tuple[str, str], list[LabelRow]] = {}
        for row in self.rows():
            stack = stacks.setdefault((row.id, row.annotator), [])
            if row.status == "undone":
                if stack:
                    stack.pop()
            else:
                stack.append(row)
        return {k: s[-1] for k, s in stacks.items() if s}
