"""``closedloop monitor RUN_DIR LOG_DIR``: windows over a server's request log, feedback, review queue."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.append(str(Path(__file__).parents[1] / "serving"))
from livelog_fixtures import feedback, request, tiny_run, write  # noqa: E402

from closedloop.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _log(tmp: Path, run) -> tuple[Path, list[str]]:
    """200 clean rows, then 100 from a darker scanner; 2 workers, a rotation, feedback for 60 rows."""
    log = tmp / "log"
    X = np.concatenate([run.X[:200], (run.X[200:300].astype(float) * 0.5).astype(np.uint8)])
    recs, ids = [], []
    for k in range(0, 300, 2):
        rid = f"q{k:04d}"
        ids += [rid, rid]
        recs.append(
            request(
                X[k : k + 2], run.proba[k : k + 2], t=k, request_id=rid, names=run.names, version=run.run.name
            )
        )
    write(log, "requests-a-000000.jsonl", recs[0:100:2])
    write(log, "requests-a-000001.jsonl", recs[100::2])
    write(log, "requests-b-000000.jsonl", recs[1::2], tail='{"kind": "request", "reque')
    write(log, "requests-b-000000.jsonl", [])
    # every 5th row labeled at random (marked so); every 7th not on it labeled by someone else's choice
    fb = [
        feedback(ids[r], run.names[int(run.y[r])], t=400 + r, index=r % 2, random=True)
        for r in range(0, 300, 5)
    ]
    fb += [
        feedback(ids[r], run.names[int(run.y[r])], t=800 + r, index=r % 2) for r in range(0, 300, 7) if r % 5
    ]
    write(log, "feedback-c-000000.jsonl", fb)
    return log, ids


def test_monitor_reads_a_log_directory(run, tmp_path, capsys):
    log, ids = _log(tmp_path, run)
    out, queue_dir = tmp_path / "monitor.json", tmp_path / "queue"
    rc = main(
        [
            "monitor",
            str(run.run),
            str(log),
            "--window",
            "100",
            "--review",
            "12",
            "--review-dir",
            str(queue_dir),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["summary"]["n_windows"] == 3 and res["log"]["n_rows"] == 300
    assert [w["alert"] for w in res["windows"]][2] == "alarm"
    assert res["windows"][0]["alert"] != "alarm"
    assert "embedding_mmd" in res["windows"][0]["p_values"]  # offline: every test of the profile
    # feedback on every 5th row: realized accuracy of the served probabilities, per window
    w0 = res["windows"][0]
    truth = float((run.proba[0:100:5].argmax(1) == run.y[0:100:5]).mean())
    assert w0["n_labeled"] == 20 and w0["realized"]["acc"] == pytest.approx(truth)
    # labels not marked random never enter realized metrics (they are counted and named)
    assert w0["n_labeled_not_random"] == len([r for r in range(0, 100, 7) if r % 5])
    assert res["log"]["n_labeled_not_random"] == len([r for r in range(0, 300, 7) if r % 5])
    assert any("not marked random" in w for w in res["log"]["warnings"])
    assert res["log"]["n_labeled"] == 60 and any("truncated" in w for w in res["log"]["warnings"])
    assert "never trained on" in res["evaluated_on"]
    # the review queue: unlabeled rows only, with what POST /feedback needs
    q = pd.read_csv(queue_dir / "queue.csv", dtype={"request_id": str})
    assert len(q) == 12 and {"request_id", "index", "file", "priority"} <= set(q.columns)
    assert all(i % 5 for i in q["id"])
    assert all(ids[i] == r for i, r in zip(q["id"], q["request_id"], strict=True))
    assert all((queue_dir / f).is_file() for f in q["file"])
    printed = capsys.readouterr().out
    assert "3 window(s) of 100" in printed and "realized acc=" in printed


def test_monitor_log_errors(run, tmp_path, capsys):
    only_feedback = tmp_path / "fb"
    write(only_feedback, "feedback-a-000000.jsonl", [feedback("x", "1", t=0)])
    assert main(["monitor", str(run.run), str(only_feedback)]) != 0
    assert "no request log files" in capsys.readouterr().err
    no_inputs = tmp_path / "noinputs"
    write(no_inputs, "requests-a-000000.jsonl", [request(None, run.proba[:5], t=0)])
    assert main(["monitor", str(run.run), str(no_inputs)]) != 0
    assert "no inputs" in capsys.readouterr().err
    assert main(["monitor", str(run.run), str(no_inputs), "--shadow", str(run.run)]) != 0
    assert "closedloop compare-live" in capsys.readouterr().err
