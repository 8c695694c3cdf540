"""The MLflow backend against a local SQLite tracking store (no server, no network)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
from fake_run import make_run  # noqa: E402

import toy_pkg  # noqa: E402
from closedloop import Pipeline  # noqa: E402
from closedloop.tracking import apply_promotion, move_alias, track_run  # noqa: E402
from closedloop.tracking.config import TrackingSpec  # noqa: E402

pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow  # importing MLflow and creating its SQLite schema take seconds

DATA = {"source": "toy_pkg:ToySource", "n": 30}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module: MLflow creates its schema once."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _exported_run(root: Path, name: str) -> Path:
    """A finished run with an exported model (ONNX file and model card) and training curves."""
    run = make_run(root, name=name)
    exported = run / "stages/06_export/artifacts/exported"
    (exported / "model_fp32.onnx").write_bytes(b"onnx bytes")
    (exported / "model_card.md").write_text("# Model card\n")
    (run / "report.html").write_text("<html>report</html>")
    return run


def _track(run: Path, spec: TrackingSpec) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    written: list[dict] = []
    track_run(spec, run, summary, {"name": summary["name"], "seed": 0, "stages": []}, written.append)
    assert written, "the run's files must always be written"
    return written[-1]["tracking"]


def test_pipeline_run_becomes_an_mlflow_run(store: str, runs_dir: Path) -> None:
    pipe = Pipeline(
        [toy_pkg.SumPixels(), toy_pkg.Double()],
        data=DATA,
        name="toy",
        tracking={"backend": "mlflow", "uri": store, "experiment": "toy-exp"},
    )
    res = pipe.run(progress=False)
    t = json.loads((res.run_dir / "summary.json").read_text())["tracking"]
    assert t["ok"], t
    run = _client(store).get_run(t["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["name"] == "toy"
    assert "sum_pixels/seconds" in run.data.metrics
    assert run.data.tags["closedloop.run_dir"] == str(res.run_dir.resolve())
    files = {f.path for f in _client(store).list_artifacts(t["run_id"])}
    assert {"report.html", "summary.json", "config.yaml"} <= files
    assert "Tracked in mlflow" in (res.run_dir / "report.html").read_text()


def test_model_registered_with_curves_and_files(store: str, tmp_path: Path) -> None:
    run = _exported_run(tmp_path, "pneumo")
    t = _track(run, TrackingSpec(backend="mlflow", uri=store))
    assert t["ok"] and t["model_version"] == "1" and t["registered_model"] == "pneumo"
    c = _client(store)
    history = c.get_metric_history(t["run_id"], "curves/final seed 0/train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.3)]
    assert c.get_run(t["run_id"]).data.metrics["train/seconds"] == pytest.approx(1.0)
    model_files = {Path(f.path).name for f in c.list_artifacts(t["run_id"], "model")}
    assert {"model_fp32.onnx", "model_card.md", "measurements.json"} <= model_files
    mv = c.get_model_version("pneumo", "1")
    assert mv.tags["closedloop.run_dir"] == str(run.resolve())


def test_aliases_move_only_on_promotion(store: str, tmp_path: Path) -> None:
    spec = TrackingSpec(backend="mlflow", uri=store, registered_model="breast")
    first = _exported_run(tmp_path / "1", "breast")
    second = _exported_run(tmp_path / "2", "breast")
    for r in (first, second):
        assert _track(r, spec)["ok"]
    c = _client(store)
    assert move_alias(spec, "champion", first).moved
    kept = apply_promotion(second, False, reasons=["not significant"], spec=spec)
    assert str(c.get_model_version_by_alias("breast", "champion").version) == "1"
    assert (
        kept[0]["alias"] == "challenger"
        and str(c.get_model_version_by_alias("breast", "challenger").version) == "2"
    )
    moved = apply_promotion(second, True, reasons=["auc +0.03"], spec=spec)
    assert moved[0]["moved"] and moved[0]["previous"] == "1"
    assert str(c.get_model_version_by_alias("breast", "champion").version) == "2"
    assert c.get_registered_model("breast").aliases.get("challenger") is None
    missing = move_alias(spec, "champion", tmp_path / "never-registered", model="breast")
    assert not missing.moved and "no version" in missing.error


def test_tracking_uri_from_the_environment(store: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    t = _track(_exported_run(tmp_path, "envrun"), TrackingSpec(backend="mlflow"))
    assert t["ok"] and t["uri"] == store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nobody listens there


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"http://127.0.0.1:{_closed_port()}", "127.0.0.1"),
        ("mlfow://typo", "unknown scheme 'mlfow'"),
        ("sqlite:////no/such/folder/mlflow.db", "folder of the SQLite file does not exist"),
    ],
    ids=[
        "closed-port",
        "unknown-scheme",
        "missing-sqlite-folder",
    ],  # stable ids: the port differs per process
)
def test_bad_tracking_uri_loses_nothing(uri: str, expected: str, runs_dir: Path) -> None:
    pipe = Pipeline(
        [toy_pkg.SumPixels()],
        data=DATA,
        name="toy",
        tracking={"backend": "mlflow", "uri": uri, "timeout_s": 2},
    )
    res = pipe.run(progress=False)
    assert res.ok
    t = json.loads((res.run_dir / "summary.json").read_text())["tracking"]
    assert t["ok"] is False and expected in t["error"]
    report = (res.run_dir / "report.html").read_text()
    assert "Tracking (mlflow) failed" in report
    for f in ("config.yaml", "manifest.json", "summary.json", "report.html"):
        assert (res.run_dir / f).is_file()


def test_helper_process_forwards_calls_and_errors(store: str, tmp_path: Path) -> None:
    """MLflow runs in a helper process during a pipeline run: results and errors come back as they would
    in-process, and a helper that died is reported, not waited on."""
    from closedloop.tracking.worker import RemoteTrackerError, TrackerProcess

    proc = TrackerProcess(TrackingSpec(backend="mlflow", uri=store))
    try:
        assert proc.call("uri") == store
        run_id = proc.call("start", "helper-exp", "r1", {"k": "v"})
        proc.call("log_metrics", {"a/b": 1.5}, None)
        proc.call("finish", True)
        assert _client(store).get_run(run_id).data.metrics["a/b"] == 1.5
    finally:
        proc.close()

    bad = TrackerProcess(TrackingSpec(backend="mlflow", uri="mlfow://typo"))
    with pytest.raises(RemoteTrackerError, match="unknown scheme 'mlfow'") as err:
        bad.call("start", "e", "r", {})
    assert err.value.kind == "ConfigError"
    bad._proc.kill()
    bad._proc.wait()
    with pytest.raises(RemoteTrackerError, match="helper process ended"):
        bad.call("url")
    bad.close()
