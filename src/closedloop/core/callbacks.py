"""Pipeline callbacks: what runs around the stages without being one (the HTML report, the tracker).

The pipeline owns the loop and calls each callback's hooks at fixed points; every hook is a no-op by
default, so a callback overrides only the ones it needs (the Lightning idea). Core never imports a
consumer: the defaults are found by name in :data:`CALLBACKS` (``report``, ``tracking``), registered by
their own packages, exactly as stages are found in :data:`~closedloop.core.registry.STAGES`.

The order of the hooks in one run::

    on_run_start
    on_stage_start, on_stage_end        (each stage that runs, cached or not, in pipeline order)
    on_run_end                          (the summary is built, nothing of it written: add to it)
    on_summary_written                  (summary.json is on disk: derive files from it, upload them)

``on_summary_written`` runs again whenever a callback calls :meth:`RunState.write_summary` to record
something it learnt late (the tracker does when its upload fails).

A callback that raises never stops the run: the hook's failure is logged once, written to
``summary.json`` under ``callback_errors`` and the callback gets no further calls in that run.

Example:
    >>> class Count(Callback):
    ...     def __init__(self) -> None:
    ...         self.stages = 0
    ...     def on_stage_end(self, run, stage, record) -> None:
    ...         self.stages += 1
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.core.io import write_json_atomic
from closedloop.core.registry import Registry

log = logging.getLogger("closedloop")

HOOKS = ("on_run_start", "on_stage_start", "on_stage_end", "on_run_end", "on_summary_written")


class Callback:
    """Hooks the pipeline calls around its stages; subclass and override the ones you need."""

    def on_run_start(self, run: RunState) -> None:
        """The run directory exists and its config is written; no stage ran yet."""

    def on_stage_start(self, run: RunState, stage: Any, record: Any) -> None:
        """``stage`` (a :class:`~closedloop.core.stage.Stage`) is about to run or be reused."""

    def on_stage_end(self, run: RunState, stage: Any, record: Any) -> None:
        """``record.status`` says ``ok`` or ``failed``; the outputs are in ``run.outputs``."""

    def on_run_end(self, run: RunState) -> None:
        """Every stage ran; ``run.summary`` is complete but not yet written: a callback may add to it."""

    def on_summary_written(self, run: RunState) -> None:
        """``summary.json`` was (re)written: write what derives from it, send it somewhere."""


@dataclass
class RunState:
    """What the hooks see: the pipeline, the run directory and what the run made so far."""

    pipeline: Any
    run_dir: Path
    records: list[Any] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    _hooks: CallbackList | None = None

    def write_summary(self) -> None:
        """Write ``summary.json`` atomically, then call every callback's ``on_summary_written``."""
        write_json_atomic(self.run_dir / "summary.json", self.summary)
        if self._hooks is not None:
            self._hooks.call("on_summary_written", self)


class CallbackList:
    """Calls the callbacks in order and keeps a failing one from touching the run again."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)
        self.errors: list[dict[str, str]] = []
        self._failed: set[int] = set()

    def call(self, hook: str, run: RunState, *args: Any) -> None:
        for i, cb in enumerate(self.callbacks):
            if i in self._failed:
                continue
            method: Callable[..., None] = getattr(cb, hook)
            try:
                method(run, *args)
            except Exception as exc:  # a callback is never worth a run: report it once and go on
                self._failed.add(i)
                name = f"{type(cb).__module__}:{type(cb).__qualname__}"
                error = f"{type(exc).__name__}: {exc}".strip()[:1000]
                self.errors.append({"callback": name, "hook": hook, "error": error})
                log.warning(
                    "callback %s failed in %s: %s; it is skipped for the rest of the run", name, hook, error
                )
                if run.summary:
                    run.summary["callback_errors"] = list(self.errors)


CALLBACKS = Registry(
    "callback",
    # the packages that register the defaults; loaded by name, so core imports neither
    builtin_modules=("closedloop.report.callback", "closedloop.tracking.callback"),
)


def register_callback(key: str) -> Callable[[type], type]:
    """Class decorator: name a :class:`Callback` for ``callbacks: [<key>]`` in the pipeline YAML."""
    return CALLBACKS.register(key)


def resolve_callback(name: str, *, where: str = "callbacks") -> Callback:
    """A callback instance from a registry key or an import path (``my_pkg.hooks:Notify``)."""
    from closedloop.core.errors import ConfigError

    cls = CALLBACKS.resolve(name, where=where)
    if not (isinstance(cls, type) and issubclass(cls, Callback)):
        raise ConfigError(f"{where}: {name!r} is not a closedloop.core.callbacks.Callback subclass")
    return cls()
