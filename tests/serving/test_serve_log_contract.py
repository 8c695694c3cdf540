"""What the service writes is what the log reader (``closedloop.monitoring.logreader``) reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import images


def test_the_log_reader_reads_what_the_service_writes(runs: dict[str, Path], tmp_path: Path) -> None:
    logreader = pytest.importorskip("closedloop.monitoring.logreader")
    from fastapi.testclient import TestClient

    from closedloop.serving.app import create_app

    X = images(seed=9, n=8)[0]
    app = create_app(runs["champion"], log_dir=str(tmp_path), shadow=str(runs["challenger"]))
    with TestClient(app) as c:
        body = {
            "id": "a1",
            "inputs": [
                {"name": "x", "shape": [3, 8, 8, 1], "datatype": "UINT8", "data": X[:3].ravel().tolist()}
            ],
        }
        assert c.post("/v2/models/shapes/infer", json=body).status_code == 200
        assert (
            c.post(
                "/predict", json=X[3:5].astype(np.float32).tolist(), headers={"X-Request-Id": "a2"}
            ).status_code
            == 200
        )
        assert c.post("/feedback", json={"request_id": "a1", "index": 1, "label": "4"}).status_code == 200
    # the last line of a file cut by a crash mid-write: skipped with a warning, the rest still read
    f = next(tmp_path.glob("requests-*.jsonl"))
    f.write_text(f.read_text() + json.dumps({"kind": "request", "request_id": "cut"})[:30])
    with pytest.warns(UserWarning):
        log = logreader.read_log(tmp_path)
    assert len(log.champion) == 5 and len(log.shadow) == 5  # rows: 3 + 2 inputs, scored by both
    assert set(log.champion.request_id) == {"a1", "a2"} == set(log.shadow.request_id)
    assert log.n_feedback_matched == 1 and list(log.champion.feedback).count("4") == 1
    np.testing.assert_array_equal(log.champion.inputs[:3], X[:3])
    lines = [json.loads(x) for x in f.read_text().splitlines()[:-1]]
    for line in lines:  # every written line validates against the reader's own line model
        logreader.RequestLine.model_validate(line)


@pytest.mark.slow  # trains the live monitor's tiny torch model once
def test_monitor_endpoint_runs_the_live_monitor(
    runs: dict[str, Path], tmp_path: Path, tmp_path_factory
) -> None:
    pytest.importorskip("closedloop.monitoring.live")
    fixtures = pytest.importorskip("livelog_fixtures")
    import shutil

    from fastapi.testclient import TestClient

    from closedloop.serving.app import create_app

    # the live monitor's tiny run (task, model, reference profile) plus an exported model to serve
    tiny = fixtures.tiny_run(tmp_path_factory)
    run = tmp_path / "runs" / tiny.run.name
    shutil.copytree(tiny.run, run)
    shutil.copytree(
        next(runs["champion"].glob("stages/*/artifacts/exported")),
        run / "stages/06_export/artifacts/exported",
    )
    from serve_fixtures import record_artifact

    record_artifact(run, "export", "exported", "closedloop.stages.export.bundle:ExportBundle")
    X = images(seed=12, n=240)[0]
    with TestClient(create_app(run, log_dir=str(tmp_path / "log"))) as c:
        for i in range(0, 240, 4):
            body = {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [4, 8, 8, 1],
                        "datatype": "UINT8",
                        "data": X[i : i + 4].ravel().tolist(),
                    }
                ]
            }
            assert c.post(f"/v2/models/{run.name}/infer", json=body).status_code == 200
        status = c.get("/monitor")
        metrics = c.get("/metrics").text
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["n_records"] == 60 and body["level"] in ("ok", "warn", "alarm")
    assert f"closedloop_monitor_level {({'ok': 0.0, 'warn': 1.0, 'alarm': 2.0})[body['level']]}" in metrics
    # the stream test beside the window's level: over every champion row since the monitor started
    assert body["stream"]["n"] == 240 and body["stream"]["threshold"] == pytest.approx(
        200.0
    )  # 1/(alpha*delta)
    assert f"closedloop_monitor_stream_alarm {float(body['stream']['alarm'])}" in metrics
    assert 'closedloop_monitor_value{field="stream.e_value"}' in metrics
