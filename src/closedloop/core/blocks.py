"""Report building blocks: the vocabulary of :meth:`~closedloop.core.stage.Stage.report`.

A stage returns a list of these; whoever renders the run (the default is :mod:`closedloop.report.html`)
turns them into a page. They live in core because the stage contract speaks them: a stage must be able
to describe itself without importing the renderer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass
class Paragraph:
    text: str


@dataclass
class Callout:
    """A highlighted sentence: ``level`` info (blue), warning (amber) or error (red)."""

    text: str
    level: Literal["info", "ok", "warning", "error"] = "info"


@dataclass
class KeyValues:
    items: dict[str, Any]
    title: str | None = None


@dataclass
class Table:
    rows: list[dict[str, Any]]
    title: str | None = None
    columns: list[str] | None = None
    max_rows: int = 50


@dataclass
class Figure:
    """An image file (PNG/SVG); a relative path is taken from the stage's folder."""

    path: Path | str
    caption: str = ""


@dataclass
class Html:
    """Raw HTML for what the other blocks cannot say (kept small; no scripts)."""

    html: str


@dataclass
class Section:
    """A sub-heading grouping blocks."""

    title: str
    blocks: list[Any] = field(default_factory=list)


Block = Paragraph | Callout | KeyValues | Table | Figure | Html | Section
