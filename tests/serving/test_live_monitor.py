"""The live monitor over a request log: levels, skipped tests, realized metrics, torch-freeness."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from livelog_fixtures import feedback, request, tiny_run, write  # noqa: E402

from closedloop.monitoring.live import LiveMonitor, LiveStatus  # noqa: E402

VERSION = "20261130-200000-abcd1234"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


def _traffic(
    log: Path,
    run,
    X: np.ndarray,
    proba: np.ndarray,
    *,
    batch: int = 1,
    workers: int = 2,
    t0: float = 0.0,
    prefix: str = "r",
    inputs: bool = True,
) -> list[str]:
    ids = []
    per: dict[int, list] = {w: [] for w in range(workers)}
    for k, i in enumerate(range(0, len(X), batch)):
        rid = f"{prefix}{k}"
        ids.append(rid)
        per[k % workers].append(
            request(
                X[i : i + batch] if inputs else None,
                proba[i : i + batch],
                t=t0 + k,
                request_id=rid,
                names=run.names,
            )
        )
    for w, recs in per.items():
        write(log, f"requests-w{w}-000000.jsonl", recs)
    return ids


def test_clean_window_ok_and_status_fields(run, tmp_path):
    _traffic(tmp_path, run, run.X[:200], run.proba[:200], batch=2)
    status = LiveMonitor(run.run, tmp_path, window=200).status()
    assert isinstance(status, LiveStatus)
    assert status.level != "alarm" and status.n_rows == 200 and status.n_records == 100
    assert set(status.p_values) == {"features", "bbsd", "predicted_class", "confidence"}
    assert "embedding_mmd" in status.tests_skipped and "ONNX" in status.tests_skipped["embedding_mmd"]
    assert 0 < status.estimated["acc"] <= 1 and status.realized == {} and status.n_feedback == 0
    assert status.model_version == VERSION and "never trained on" in status.evaluated_on
    json.dumps(status.model_dump())  # what GET /monitor returns must be plain JSON


def test_darker_scanner_alarms_on_the_latest_window(run, tmp_path):
    mon = LiveMonitor(run.run, tmp_path, window=100)
    _traffic(tmp_path, run, run.X[:100], run.proba[:100])
    first = mon.status()
    assert first.level != "alarm"
    assert mon.status() is first  # nothing new: the cached status
    # a darker scanner: the inputs drift (the logged probabilities stay those of clean images)
    dark = (run.X[100:200].astype(float) * 0.5).astype(np.uint8)
    _traffic(tmp_path, run, dark, run.proba[100:200], t0=1000, prefix="d")
    shifted = mon.status()
    assert shifted.level == "alarm" and shifted.p_values["features"] < 1e-6
    assert shifted.n_records == 200 and shifted.n_rows == 100
    assert shifted.window_start.startswith("2026-11-30T21:16:40")  # only the newest 100 rows
    # the stream test follows every row since the monitor started, beside the window's level
    assert shifted.stream is not None and shifted.stream.n == 200
    # against the fixed reference: one look at 200 rows, on the served outputs the log holds
    assert shifted.stream.test == "reference" and shifted.stream.looks == 1
    assert first.stream is not None and first.stream.n == 100 and not first.stream.alarm


def test_live_stream_uses_the_profiles_look_test(run, tmp_path):
    """stream_look_test reaches GET /monitor: the live stream test is built from the profile."""
    import shutil

    copy = tmp_path / "copy" / run.run.name  # the run's name is the logged model version
    shutil.copytree(run.run, copy)
    meta = next(copy.glob("stages/*_monitor/artifacts/reference/profile.json"))
    raw = json.loads(meta.read_text())
    assert raw["stream_look_test"] == "mean_shift"  # the default (session 15)
    _traffic(tmp_path / "log", run, run.X[:200], run.proba[:200], batch=2)
    status = LiveMonitor(copy, tmp_path / "log", window=200).status()
    assert status.stream is not None and status.stream.looks == 1 and status.stream.look_test == "mean_shift"
    assert json.loads(json.dumps(status.model_dump()))["stream"]["look_test"] == "mean_shift"
    # a profile that records the classifier looks (built before, or chosen) keeps them live
    raw["stream_look_test"] = "classifier"
    meta.write_text(json.dumps(raw))
    status = LiveMonitor(copy, tmp_path / "log", window=200).status()
    assert status.stream is not None and status.stream.looks == 1 and status.stream.look_test == "classifier"


def test_realized_metrics_from_feedback(run, tmp_path):
    ids = _traffic(tmp_path, run, run.X[:120], run.proba[:120])
    names = run.names
    # feedback for the first 80 requests, written by another worker, one of them a name the model lacks
    fb = [feedback(ids[i], names[int(run.y[i])], t=500 + i, random=True) for i in range(80)]
    fb.append(feedback(ids[80], "cat", t=600, random=True))
    # labels not chosen at random (all wrong here) never enter realized metrics
    fb += [feedback(ids[i], names[(int(run.y[i]) + 1) % len(names)], t=700 + i) for i in range(90, 100)]
    write(tmp_path, "feedback-w9-000000.jsonl", fb)
    status = LiveMonitor(run.run, tmp_path, window=200).status()
    truth = float((run.proba[:80].argmax(1) == run.y[:80]).mean())
    assert status.n_feedback == 91 and status.n_feedback_window == 80
    assert status.realized["acc"] == pytest.approx(truth)
    assert any("'cat'" in w for w in status.log_warnings)
    assert any("10 feedback label(s) not marked random" in w for w in status.log_warnings)


def test_cold_start_on_a_large_log_equals_reading_it_as_it_grew(run, tmp_path):
    cold_dir, warm_dir = tmp_path / "cold", tmp_path / "warm"
    warm = LiveMonitor(run.run, warm_dir, window=20)
    for log in (cold_dir, warm_dir):
        _traffic(log, run, run.X[:10], run.proba[:10])
    assert warm.status().n_records == 10
    for log in (cold_dir, warm_dir):  # the monitor that started early now reads only what is appended
        ids = _traffic(log, run, run.X[10:120], run.proba[10:120], t0=10, prefix="s")
        ids = [f"r{k}" for k in range(10)] + ids
        fb = [feedback(ids[i], run.names[int(run.y[i])], t=500 + i, random=True) for i in range(80)]
        write(log, "feedback-w9-000000.jsonl", fb)
    cold = LiveMonitor(run.run, cold_dir, window=20).status()
    grown = warm.status()
    assert cold.n_records == grown.n_records == 120 and cold.n_rows == 20
    assert cold.p_values == grown.p_values and cold.realized == grown.realized
    assert cold.n_feedback == grown.n_feedback == 80 and cold.n_feedback_window == 20
    # the realized metrics are on the latest 20 labeled rows, whose requests lie far before the window
    truth = float((run.proba[60:80].argmax(1) == run.y[60:80]).mean())
    assert cold.realized["acc"] == pytest.approx(truth)
    assert cold.window_start.startswith("2026-11-30T21:01:40")  # rows 100..119 only


def test_feedback_before_its_request_is_joined_later(run, tmp_path):
    write(tmp_path, "feedback-a-000000.jsonl", [feedback("late", run.names[int(run.y[0])], t=0)])
    write(tmp_path, "requests-a-000000.jsonl", [])
    mon = LiveMonitor(run.run, tmp_path, window=50)
    assert mon.status().level == "insufficient_data"
    write(tmp_path, "requests-a-000000.jsonl", [request(run.X[:1], run.proba[:1], t=1, request_id="late")])
    s = mon.status()
    assert s.n_feedback == 1 and s.level == "insufficient_data" and s.n_rows == 1


def test_without_logged_inputs_only_output_tests_run(run, tmp_path):
    _traffic(tmp_path, run, run.X[:60], run.proba[:60], inputs=False)
    status = LiveMonitor(run.run, tmp_path, window=60).status()
    assert "features" not in status.p_values and "bbsd" in status.p_values
    assert "input reduction 'none'" in status.tests_skipped["features"]


def test_other_model_versions_are_not_monitored(run, tmp_path):
    write(
        tmp_path,
        "requests-a-000000.jsonl",
        [request(run.X[i : i + 1], run.proba[i : i + 1], t=i, version="older") for i in range(30)],
    )
    status = LiveMonitor(run.run, tmp_path).status()
    assert status.n_records == 0 and status.n_other_versions == 30 and status.level == "insufficient_data"


def test_bad_arguments(run, tmp_path):
    from closedloop.core.errors import ConfigError, RunDirError

    with pytest.raises(ConfigError, match="window=5: at least 10 rows"):
        LiveMonitor(run.run, tmp_path, window=5)
    with pytest.raises(RunDirError, match="no reference profile.*kind: monitor"):
        LiveMonitor(tmp_path, tmp_path)
    assert LiveMonitor(run.run, tmp_path / "not-yet").status().level == "insufficient_data"


BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")
sys.meta_path.insert(0, _Block())
"""


def test_live_monitor_runs_without_torch(run, tmp_path):
    _traffic(tmp_path, run, run.X[:50], run.proba[:50])
    code = BLOCK_TORCH + textwrap.dedent(f"""
        from closedloop.monitoring.live import LiveMonitor
        from closedloop.monitoring.logreader import read_log
        from closedloop.monitoring import compare
        s = LiveMonitor({str(run.run)!r}, {str(tmp_path)!r}, window=50).status()
        assert s.level in ("ok", "warn", "alarm"), s
        assert len(read_log({str(tmp_path)!r}).champion) == 50
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", s.level)
    """)
    src = str(Path(__file__).parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")


def test_the_block_really_blocks_torch():
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import torch"], capture_output=True, text=True)
    assert out.returncode != 0 and "torch is blocked" in out.stderr
