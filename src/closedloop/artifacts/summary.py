"""``summary.json`` read back as a typed record: the run's status and each stage's entry.

``core.records.build_summary`` writes it (each stage's entry: status, seconds, folder, artifact paths,
timings, plus the keys of the stage's own ``summarize``); callbacks add to it (``tracking``,
``callback_errors``). Readers of a finished run use :meth:`RunSummary.read` instead of keys. The
well-known stage keys are typed here (the data stage's split sizes, the export stage's shipped
variant); a user stage's own keys stay in ``model_extra``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.errors import RunDirError
from closedloop.core.io import read_json

SUMMARY = "summary.json"


class SplitSizes(BaseModel):
    """Rows per split (the data stage's ``sizes``)."""

    model_config = ConfigDict(extra="allow")

    train: int | None = None
    val: int | None = None
    test: int | None = None


class StageSummary(BaseModel):
    """One stage's entry in ``summary.json``."""

    model_config = ConfigDict(extra="allow")

    status: str
    """``ok``, ``failed``, ``skipped`` or ``pending``."""
    seconds: float = 0.0
    dir: str = ""
    artifacts: dict[str, str] = Field(default_factory=dict)
    cached: bool = False
    error: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    """Wall times and measured latencies (``latency_ms.<variant>.p95``): never in artifacts."""
    sizes: SplitSizes | None = None
    """The data stage: rows per split."""
    shipped: str | None = None
    """The export stage: the variant that ships."""


class RunSummary(BaseModel):
    """``summary.json``."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    status: str = "?"
    run_dir: str = ""
    seconds: float = 0.0
    seed: int | None = None
    stages: dict[str, StageSummary] = Field(default_factory=dict)
    test_openings: list[dict[str, Any]] = Field(default_factory=list)
    n_validation_configs: int | None = None
    tracking: dict[str, Any] | None = None
    """The tracker's outcome (``tracking/callback.py``), when the run has a ``tracking:`` section."""
    callback_errors: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def read(cls, run_dir: str | Path) -> Self:
        """The summary of a finished run; a folder without one is a :class:`RunDirError`."""
        path = Path(run_dir) / SUMMARY
        if not path.is_file():
            raise RunDirError(f"{run_dir}: no {SUMMARY}; it is not a finished closedloop run directory")
        return cls.model_validate(read_json(path))
