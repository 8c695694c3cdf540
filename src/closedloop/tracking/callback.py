"""The tracker as a pipeline callback (registered as ``tracking``): it starts loading the backend when
the run starts, logs the finished run before the summary is written (so the summary and the report say
what the tracker received), then uploads the summary and the report. A tracking failure never stops
the run: it is reported in ``summary.json["tracking"]`` and the report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from closedloop.core.callbacks import Callback, RunState, register_callback
from closedloop.core.config import validate_model
from closedloop.tracking.config import TrackingSpec
from closedloop.tracking.run import finish_tracking, log_tracking, prepare_tracking

if TYPE_CHECKING:
    from closedloop.tracking.run import TrackingSession


@register_callback("tracking")
class TrackRun(Callback):
    """Send the run to the configured tracker (``tracking:`` in the YAML)."""

    Config = TrackingSpec

    def __init__(
        self, spec: TrackingSpec | dict[str, Any], *, where: str = "tracking", prefix: str = ""
    ) -> None:
        self.spec: TrackingSpec = validate_model(TrackingSpec, spec, where=where, prefix=prefix)
        self._session: TrackingSession | None = None
        self._process: Any = None

    def on_run_start(self, run: RunState) -> None:
        self._process = prepare_tracking(self.spec)  # the tracking library loads while stages run

    def on_run_end(self, run: RunState) -> None:
        self._session = log_tracking(
            self.spec, run.run_dir, run.summary, run.pipeline.resolved_config(), self._process
        )

    def on_summary_written(self, run: RunState) -> None:
        session, self._session = self._session, None  # upload once; a rewrite after a failure skips it
        if session is not None and finish_tracking(session, run.summary):
            run.write_summary()
