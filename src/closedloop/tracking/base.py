"""The tracker interface: every hook a no-op, so a backend (MLflow, Weights & Biases offline, ...) is one
subclass registered under a name that ``tracking.backend`` selects.

Example:
    >>> from closedloop.tracking.base import TRACKERS, Tracker, register_tracker
    >>> @register_tracker("print")
    ... class PrintTracker(Tracker):
    ...     def log_metrics(self, metrics, step=None):
    ...         print(sorted(metrics))
    >>> "print" in TRACKERS.names()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from closedloop.core.registry import Registry

if TYPE_CHECKING:
    from closedloop.tracking.config import TrackingSpec

T = TypeVar("T")

# The MLflow backend's module imports mlflow only inside its methods, so listing it here is cheap.
TRACKERS = Registry("tracking backend", builtin_modules=("closedloop.tracking.mlflow_backend",))


def register_tracker(key: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: select a :class:`Tracker` in YAML as ``tracking: {backend: <key>}``."""
    return TRACKERS.register(key)


@register_tracker("none")
class Tracker:
    """An experiment-tracking backend. The default does nothing; a backend overrides what it supports.

    One instance follows one pipeline run: :meth:`start`, then any number of ``log_*`` calls, then
    :meth:`finish`. The model-registry methods may be called without :meth:`start` (alias moves).
    Any exception a method raises is caught by the caller and reported as "tracking failed".
    """

    out_of_process: bool = False
    """True: a pipeline run talks to this backend through a helper process (its library is heavy to
    import; see :mod:`closedloop.tracking.worker`). The class must then live in an importable module."""

    def __init__(self, spec: TrackingSpec) -> None:
        self.spec = spec

    @classmethod
    def prepare(cls) -> None:
        """Called when a run starts, in a background thread or the helper process: load heavy libraries
        early (no I/O to the tracking store, no state shared with the run)."""

    def start(self, experiment: str, run_name: str, tags: dict[str, str]) -> str | None:
        """Open a run; return its id (``None`` when the backend has no runs)."""
        return None

    def log_params(self, params: dict[str, str]) -> None:
        """Record configuration values (already flattened to dotted keys and strings)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record numbers; ``step`` orders points of a curve (epochs)."""

    def log_curve(self, key: str, points: list[tuple[int, float]]) -> None:
        """One metric over steps (a training curve); by default one :meth:`log_metrics` call per step."""
        for step, value in points:
            self.log_metrics({key: value}, step=step)

    def log_artifact(self, path: Path, folder: str = "") -> None:
        """Upload one file under ``folder`` of the run's artifacts."""

    def register_model(self, name: str, folder: str, tags: dict[str, str]) -> str | None:
        """Register the run's artifact ``folder`` as a new version of model ``name``; return the version."""
        return None

    def find_version(self, name: str, run_dir: str) -> str | None:
        """The version of model ``name`` registered from the run directory ``run_dir``, if any."""
        return None

    def get_alias(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at, if set."""
        return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of model ``name`` at ``version``."""

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from model ``name`` (no error when it is not set)."""

    def url(self) -> str | None:
        """Where a person can look at the run (a web address or a store path), if known."""
        return None

    def finish(self, ok: bool) -> None:
        """Close the run, marked finished or failed."""
