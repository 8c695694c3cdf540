"""``summary.json`` read back as a typed record: the run's status and each stage's entry.

``core.records.build_summary`` writes it (each stage's entry: status, seconds, folder, artifact paths,
timings, plus the keys of the stage's own ``summarize``); callbacks add to it (``tracking``,
``callback_errors``). Readers of a finished run use :meth:`RunSummary.read` instead of keys. The
well-known stage keys are typed here (the data stage's split sizes, the export stage's shipped
variant); a user stage's own keys stay in ``model_extra``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

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


class TrackingStatus(BaseModel):
    """What the tracker received (``summary.json: tracking``, written by ``tracking/run.py``);
    ``error`` says why when it failed."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    ok: bool = False
    error: str | None = None
    uri: str | None = None
    experiment: str | None = None
    run_id: str | None = None
    url: str | None = None
    registered_model: str | None = None
    model_version: str | None = None
    n_params: int = 0
    n_metrics: int = 0
    n_curve_points: int = 0
    n_artifacts: int = 0
    seconds: float = 0.0
    """Time spent sending (not counting writing the run's own files)."""


class CallbackError(BaseModel):
    """A pipeline callback that raised (``summary.json: callback_errors``, ``core/callbacks.py``)."""

    model_config = ConfigDict(extra="allow")

    callback: str
    """``module:Class`` of the callback."""
    hook: str
    error: str


class TestOpening(BaseModel):
    """One opening of the sealed test split (``summary.json: test_openings``, the test ledger)."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="allow")

    time: str | None = None
    stage: str | None = None
    purpose: str | None = None
    reason: str | None = None
    unsealed: bool | None = None
    unseal_reason: str | None = None


class RunSummary(BaseModel):
    """``summary.json``."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    status: str = "?"
    run_dir: str = ""
    seconds: float = 0.0
    seed: int | None = None
    stages: dict[str, StageSummary] = Field(default_factory=dict)
    test_openings: list[TestOpening] = Field(default_factory=list)
    n_validation_configs: int | None = None
    tracking: TrackingStatus | None = None
    """The tracker's outcome (``tracking/callback.py``), when the run has a ``tracking:`` section."""
    callback_errors: list[CallbackError] = Field(default_factory=list)

    @classmethod
    def read(cls, run_dir: str | Path) -> Self:
        """The summary of a finished run; a folder without one is a :class:`RunDirError`."""
        path = Path(run_dir) / SUMMARY
        if not path.is_file():
            raise RunDirError(f"{run_dir}: no {SUMMARY}; it is not a finished closedloop run directory")
        return cls.model_validate(read_json(path))
