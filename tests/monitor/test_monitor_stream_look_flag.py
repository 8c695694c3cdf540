"""Issue 19, rule F19: the non-sticky look flag (``stream_look_flag``): the window that holds a low stream look
is flagged, that window only; its settings (YAML / Python), what the profile, summary and guarantee say, and
bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from closedloop.core.errors import ConfigError
from closedloop.monitoring import Monitor
from closedloop.monitoring.profile import ReferenceProfile
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.monitor.reference import profile_config

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_task_setup, fix_window_domain, stage_profile  # noqa: E402

FAST = {"calibration_windows": 40, "window_sizes": [50, 100], "permutations": 40}


@pytest.fixture(scope="module")
def digits():
    return digits_task_setup()


def _monitor(digits, tmp: Path, monkeypatch, **kw) -> tuple[Monitor, ReferenceProfile]:
    """A monitor whose window domain check finds nothing (p 0.5), so only the stream speaks."""
    _, model, _ = digits
    _, profile = stage_profile(digits, tmp, FAST, **kw)
    mon = Monitor(profile, model, seed=0, effects=False)
    fix_window_domain(mon, monkeypatch, 0.5, auc=0.5)
    return mon, profile


def _status(n: int, looks: int, p: float, evidence_at: int | None = None) -> dict:
    """A reference stream test's status after ``n`` rows, ``looks`` looks every 200 rows, the last at ``p``."""
    return {
        "n": n,
        "alarm": False,
        "alarm_at": None,
        "evidence_at": evidence_at,
        "max_e_value": 30.0,
        "p_value": p,
        "looks": looks,
        "look_rows": 200,
    }


def _flags(mon: Monitor, X, stream) -> tuple[list[str], str, bool]:
    res = mon.evaluate(mon.sample(mon.prepare(X)), seed=0, stream=stream)
    return res["estimate_flags"], res["estimate_reason"], res["estimate_reliable"]


def test_look_flag_marks_only_the_window_that_holds_the_look(digits, tmp_path, monkeypatch):
    bundle, _, _ = digits
    X = bundle.val.X[:100]
    mon, _ = _monitor(digits, tmp_path / "runs", monkeypatch, stream_look_flag="over_runs")
    # look 2 at row 400, p 0.005: under the level over runs there (0.05/6), above the W17 budget (0.0021)
    flags, reason, reliable = _flags(mon, X, _status(400, 2, 0.005))  # rows 300-400 hold the look
    assert "stream_look" in flags and "stream" not in flags and not reliable
    assert "the stream's look 2 at row 400 (p=0.005 <= 0.0083, the level over runs)" in reason
    # the next window (rows 400-500) does not hold a look: not flagged, the estimate is back
    flags, _, reliable = _flags(mon, X, _status(500, 2, 0.005))
    assert "stream_look" not in flags and reliable
    # a look above the level: nothing; the level shrinks with the look (0.05/12 at look 3)
    assert "stream_look" not in _flags(mon, X, _status(600, 3, 0.005))[0]
    assert "stream_look" in _flags(mon, X, _status(600, 3, 0.004))[0]
    # a finished stream's last look at its end (row 312, look 2)
    assert "stream_look" in _flags(mon, X, _status(312, 2, 0.005))[0]
    # a number: that level at every look
    mon, _ = _monitor(digits, tmp_path / "num", monkeypatch, stream_look_flag=0.01)
    flags, reason, _ = _flags(mon, X, _status(1000, 5, 0.009))
    assert "stream_look" in flags and "p=0.009 <= 0.01, the look flag's level" in reason
    assert "stream_look" not in _flags(mon, X, _status(1000, 5, 0.011))[0]
    # off: the same window is not flagged; no stream, or the conformal test's status: nothing
    mon, _ = _monitor(digits, tmp_path / "off", monkeypatch, stream_look_flag=None)
    assert "stream_look" not in _flags(mon, X, _status(400, 2, 0.005))[0]
    mon, _ = _monitor(digits, tmp_path / "runs", monkeypatch, stream_look_flag="over_runs")
    assert "stream_look" not in _flags(mon, X, None)[0]
    assert "stream_look" not in _flags(mon, X, {**_status(400, 2, 0.005), "p_value": None})[0]


def test_look_flag_reaches_profile_summary_guarantee_and_rebuild(digits, tmp_path):
    # the default since session 19 (rule F19)
    stage, profile = stage_profile(digits, tmp_path / "on", FAST)
    info = profile.info
    assert info.stream_look_flag == "over_runs"
    assert "that window only, when the look's p-value is at or under the level over runs" in info.guarantee
    ref = stage.summarize(type(stage).Outputs(reference=profile))["reference"]
    assert ref["stream_look_flag"] == "over_runs"
    assert profile_config(info).stream_look_flag == "over_runs"
    # a profile saved before the setting existed loads with the flag off
    profile.save(tmp_path / "old")
    meta = tmp_path / "old" / "profile.json"
    raw = json.loads(meta.read_text())
    raw.pop("stream_look_flag")
    meta.write_text(json.dumps(raw))
    assert ReferenceProfile.load(tmp_path / "old").info.stream_look_flag is None
    _, num = stage_profile(digits, tmp_path / "num", FAST, stream_look_flag=0.01)
    assert num.info.stream_look_flag == 0.01 and "at or under 0.01" in num.info.guarantee
    _, off = stage_profile(digits, tmp_path / "off", FAST, stream_look_flag=None)
    assert off.info.stream_look_flag is None and "holds a stream look" not in off.info.guarantee


def test_look_flag_bad_input_names_the_setting():
    for bad in (0.7, 0.0, "sometimes"):
        with pytest.raises(ConfigError, match="stream_look_flag"):
            BuildMonitorProfile(stream_look_flag=bad)
