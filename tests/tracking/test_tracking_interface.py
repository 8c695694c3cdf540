"""The tracker interface without any tracking library: what a backend receives, failures that must
not stop a run, config errors, and that ``import closedloop`` never imports MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import toy_pkg
from closedloop import Pipeline
from closedloop.core.errors import ConfigError
from closedloop.tracking import TRACKERS, Tracker, register_tracker
from closedloop.tracking.run import config_params, headline_metrics

DATA = {"source": "toy_pkg:ToySource", "n": 30}
CALLS: list[tuple[str, Any]] = []


@register_tracker("recording")
class RecordingTracker(Tracker):
    """Keeps every call, as a W&B-offline or any other backend would receive it."""

    def start(self, experiment: str, run_name: str, tags: dict[str, str]) -> str | None:
        CALLS.append(("start", (experiment, run_name, tags)))
        return "run-1"

    def log_params(self, params: dict[str, str]) -> None:
        CALLS.append(("params", params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        CALLS.append(("metrics", metrics))

    def log_artifact(self, path: Path, folder: str = "") -> None:
        CALLS.append(("artifact", (Path(path).name, folder)))

    def finish(self, ok: bool) -> None:
        CALLS.append(("finish", ok))


@register_tracker("broken")
class BrokenTracker(Tracker):
    def start(self, experiment: str, run_name: str, tags: dict[str, str]) -> str | None:
        raise ConnectionError("tracking server at http://10.0.0.1:5000 refused the connection")


def _pipeline(backend: str, **kw: Any) -> Pipeline:
    return Pipeline(
        [toy_pkg.SumPixels(), toy_pkg.Double()],
        data=DATA,
        name="toy",
        tracking={"backend": backend, **kw},
    )


def test_backend_receives_config_metrics_and_files(runs_dir: Path) -> None:
    CALLS.clear()
    res = _pipeline("recording", experiment="exp-a").run(progress=False)
    assert res.ok
    kinds = [c[0] for c in CALLS]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    exp, run_name, tags = CALLS[0][1]
    assert exp == "exp-a" and run_name == res.run_dir.name
    assert tags["closedloop.run_dir"] == str(res.run_dir.resolve())
    params = next(c[1] for c in CALLS if c[0] == "params")
    assert params["name"] == "toy" and params["seed"] == "0"
    assert any(k.startswith("stages.sum_pixels.params") for k in params) or "stages.sum_pixels.kind" in params
    metrics = next(c[1] for c in CALLS if c[0] == "metrics")
    assert "sum_pixels/seconds" in metrics and "run/seconds" in metrics
    files = {c[1][0] for c in CALLS if c[0] == "artifact"}
    assert {"config.yaml", "summary.json", "report.html"} <= files
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["tracking"]["ok"] is True and summary["tracking"]["run_id"] == "run-1"
    assert "closedloop" in TRACKERS.names() or "recording" in TRACKERS.names()


def test_tracking_failure_never_stops_the_run(runs_dir: Path) -> None:
    res = _pipeline("broken").run(progress=False)
    assert res.ok  # the run itself is fine
    summary = json.loads((res.run_dir / "summary.json").read_text())
    t = summary["tracking"]
    assert t["ok"] is False and "refused the connection" in t["error"]
    report = (res.run_dir / "report.html").read_text()
    assert "Tracking (broken) failed" in report and "refused the connection" in report
    for f in ("config.yaml", "manifest.json", "summary.json", "report.html"):
        assert (res.run_dir / f).is_file()


def test_no_tracking_section_means_no_tracking(runs_dir: Path) -> None:
    res = Pipeline([toy_pkg.SumPixels()], data=DATA, name="toy").run(progress=False)
    assert "tracking" not in json.loads((res.run_dir / "summary.json").read_text())


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    raw = {
        "name": "t",
        "data": DATA,
        "stages": [{"kind": "toy_pkg:SumPixels"}],
        "tracking": {"backend": "mlfow"},
    }
    with pytest.raises(ConfigError, match=r"tracking\.backend.*mlfow.*mlflow, none"):
        Pipeline.from_dict(raw)
    raw["tracking"] = {"backend": "mlflow", "uri": "x", "experimnt": "e"}
    with pytest.raises(ConfigError, match="did you mean 'experiment'"):
        Pipeline.from_dict(raw)


def test_tracking_config_round_trips_through_config_yaml(runs_dir: Path) -> None:
    res = _pipeline("recording", experiment="exp-b").run(progress=False)
    again = Pipeline.from_yaml(res.run_dir / "config.yaml")
    assert again.tracking is not None and again.tracking.experiment == "exp-b"
    assert again.fingerprint() == _pipeline("none").fingerprint()  # tracking never changes results


def test_flatteners() -> None:
    params = config_params({"name": "p", "stages": [{"name": "train", "params": {"lr": 0.1, "k": None}}]})
    assert params == {"name": "p", "stages.train.params.lr": "0.1", "stages.train.params.k": ""}
    m = headline_metrics(
        {
            "seconds": 3,
            "stages": {
                "train": {
                    "status": "ok",
                    "seconds": 2,
                    "test": {"auc": {"value": 0.9, "ci95": [0.8, 0.95]}},
                    "significant": True,
                }
            },
        }
    )
    assert (
        m["train/test/auc/value"] == 0.9
        and m["train/test/auc/ci_low"] == 0.8
        and m["train/significant"] == 1.0
    )


def test_import_closedloop_does_not_import_mlflow(tmp_path: Path) -> None:
    code = (
        "import sys, closedloop\n"
        "import closedloop.tracking, closedloop.report.cli, closedloop.report.html\n"
        "from closedloop.tracking.config import TrackingSpec\n"
        "TrackingSpec(backend='mlflow', uri='sqlite:///x.db')\n"
        "print('mlflow' in sys.modules)\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": src},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
