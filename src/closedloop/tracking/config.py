"""The ``tracking:`` section of a pipeline YAML and its check; it lives with the trackers it names so
that core, which only carries the raw section, never imports this package."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from closedloop.tracking.base import TRACKERS  # light module: no tracking library imported


class TrackingSpec(BaseModel):
    """Experiment tracking (``tracking:`` in the pipeline YAML); off unless a backend is named.

    The backend is looked up in :data:`closedloop.tracking.TRACKERS`; a tracking failure never stops
    the run: ``summary.json`` and the report say what failed and why.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    backend: str = "none"
    """``none`` or a registered tracker (``mlflow``)."""
    uri: str | None = None
    """Tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``, ``file:./mlruns``); default: the
    backend's environment variable (``MLFLOW_TRACKING_URI``)."""
    experiment: str | None = None
    """Experiment name; default: the pipeline name."""
    registered_model: str | None = None
    """Name under which the exported model is registered; default: the pipeline name."""
    timeout_s: float = Field(10.0, gt=0)
    """Per-request timeout for remote tracking servers; an unreachable server fails fast."""

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in TRACKERS.names() and ":" not in v:  # "my_pkg.module:MyTracker" resolves when used
            raise ValueError(f"a registered tracking backend ({', '.join(TRACKERS.names())})")
        return v
