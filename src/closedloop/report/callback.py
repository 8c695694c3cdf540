"""The HTML report as a pipeline callback (registered as ``report``): each time ``summary.json`` is
written, ``report.html`` (and its ``decision.json``) is rendered from it and the stages' report hooks."""

from __future__ import annotations

from closedloop.core.callbacks import Callback, RunState, register_callback
from closedloop.report.html import write_report


@register_callback("report")
class WriteReport(Callback):
    """Write ``report.html``: the decision first, then a section per stage."""

    def on_summary_written(self, run: RunState) -> None:
        write_report(run.run_dir, run.pipeline, run.records, run.outputs, run.summary)
