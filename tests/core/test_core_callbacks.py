"""Pipeline callbacks: the hooks come in a fixed order, the report and the tracker are callbacks like
any other, a callback that raises never stops the run (reported once), and YAML names extra ones."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import toy_pkg
from closedloop import Pipeline
from closedloop.core.callbacks import Callback, RunState
from closedloop.core.errors import ConfigError

DATA = {"source": "toy_pkg:ToySource", "n": 30}
SEEN: list[str] = []


class Recorder(Callback):
    """Writes down every hook it is called with (and what the run held at that moment)."""

    def on_run_start(self, run: RunState) -> None:
        SEEN.append(f"run_start:{(run.run_dir / 'config.yaml').is_file()}")

    def on_stage_start(self, run: RunState, stage: Any, record: Any) -> None:
        SEEN.append(f"start:{stage.name}")

    def on_stage_end(self, run: RunState, stage: Any, record: Any) -> None:
        SEEN.append(f"end:{stage.name}:{record.status}")

    def on_run_end(self, run: RunState) -> None:
        SEEN.append(f"run_end:{(run.run_dir / 'summary.json').is_file()}")
        run.summary["recorder"] = "was here"

    def on_summary_written(self, run: RunState) -> None:
        # the report callback comes first, so the page is already there
        SEEN.append(f"written:{(run.run_dir / 'report.html').is_file()}")


class Explodes(Callback):
    calls = 0

    def on_stage_end(self, run: RunState, stage: Any, record: Any) -> None:
        Explodes.calls += 1
        raise RuntimeError("the notification server is down")


def _pipeline(**kw: Any) -> Pipeline:
    return Pipeline([toy_pkg.SumPixels(), toy_pkg.Double()], data=DATA, name="toy", **kw)


def test_hooks_are_called_in_order(runs_dir: Path) -> None:
    SEEN.clear()
    res = _pipeline(callbacks=[Recorder()]).run(progress=False)
    assert res.ok
    assert SEEN == [
        "run_start:True",
        "start:data",
        "end:data:ok",
        "start:sum_pixels",
        "end:sum_pixels:ok",
        "start:double",
        "end:double:ok",
        "run_end:False",
        "written:True",
    ]
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["recorder"] == "was here"  # added in on_run_end, before the summary was written
    assert "callback_errors" not in summary


def test_the_report_is_a_default_callback(runs_dir: Path) -> None:
    p = _pipeline()
    assert [type(c).__name__ for c in p.run_callbacks()] == ["WriteReport"]
    tracked = _pipeline(tracking={"backend": "none"}, callbacks=[Recorder()])
    assert [type(c).__name__ for c in tracked.run_callbacks()] == ["WriteReport", "TrackRun", "Recorder"]


def test_a_callback_that_raises_is_reported_once(runs_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    Explodes.calls = 0
    with caplog.at_level(logging.WARNING, logger="closedloop"):
        res = _pipeline(callbacks=[Explodes()]).run(progress=False)
    assert res.ok  # the stages all ran
    assert Explodes.calls == 1  # no further calls after its first failure
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    (err,) = summary["callback_errors"]
    assert err["hook"] == "on_stage_end" and err["callback"].endswith(":Explodes")
    assert "notification server is down" in err["error"]
    warnings = [r for r in caplog.records if "Explodes" in r.getMessage()]
    assert len(warnings) == 1
    page = (res.run_dir / "report.html").read_text()
    assert page.count("the notification server is down") == 1


def test_a_failure_after_the_summary_is_written_is_still_recorded(runs_dir: Path) -> None:
    class LateFailure(Callback):
        def on_summary_written(self, run: RunState) -> None:
            raise OSError("disk full on the share")

    res = _pipeline(callbacks=[LateFailure()]).run(progress=False)
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["callback_errors"][0]["hook"] == "on_summary_written"


def test_yaml_names_extra_callbacks_by_import_path(runs_dir: Path) -> None:
    raw = {
        "name": "toy",
        "data": DATA,
        "stages": [{"kind": "toy_pkg:SumPixels"}],
        "callbacks": ["toy_pkg:CountStages"],
    }
    toy_pkg.CountStages.ended.clear()
    p = Pipeline.from_dict(raw)
    assert p.resolved_config()["callbacks"] == ["toy_pkg:CountStages"]
    p.run(progress=False)
    assert toy_pkg.CountStages.ended == ["data", "SumPixels"]
    raw["callbacks"] = ["toy_pkg:SumPixels"]
    with pytest.raises(ConfigError, match=r"callbacks.*not a closedloop.core.callbacks.Callback"):
        Pipeline.from_dict(raw)
    raw["callbacks"] = ["reprot"]
    with pytest.raises(ConfigError, match=r"unknown callback 'reprot'.*Did you mean 'report'"):
        Pipeline.from_dict(raw)


def test_no_callbacks_key_keeps_config_yaml_as_before(runs_dir: Path) -> None:
    assert "callbacks" not in _pipeline().resolved_config()
