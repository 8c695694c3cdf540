"""Issue 19: the estimate flag's levels for the stream's first window (``first_window_alpha``) and for the
stream's evidence (``stream_evidence``), their settings (YAML / Python) and bad input."""

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


def _profile(digits, tmp: Path, **kw):
    return stage_profile(digits, tmp, FAST, **kw)


def _domain_p(mon: Monitor, p: float, monkeypatch) -> None:
    """The window's domain check returns p (between the per-window level 0.005 and 0.05)."""
    fix_window_domain(mon, monkeypatch, p)


def _flags(mon: Monitor, X, stream) -> tuple[list[str], str]:
    res = mon.evaluate(mon.sample(mon.prepare(X)), seed=0, stream=stream)
    return res["estimate_flags"], res["estimate_reason"]


def _status(n: int, evidence_at: int | None = None, alarm_at: int | None = None) -> dict:
    return {
        "n": n,
        "alarm": alarm_at is not None,
        "alarm_at": alarm_at,
        "evidence_at": evidence_at,
        "max_e_value": 30.0,
    }


def test_first_window_alpha_flags_only_the_streams_first_window(digits, tmp_path, monkeypatch):
    bundle, model, _ = digits
    X = bundle.val.X[:100]
    _, profile = _profile(digits, tmp_path / "on", first_window_alpha=0.05)
    mon = Monitor(profile, model, seed=0, effects=False)
    _domain_p(mon, 0.02, monkeypatch)
    flags, reason = _flags(mon, X, _status(100))  # rows 0-100: before the first look at 200
    assert "first_window" in flags and "domain" not in flags
    assert "first window differs from the reference" in reason and "p=0.02 <= 0.05" in reason
    assert "first_window" in _flags(mon, X, _status(200))[0]  # rows 100-200: still before the look
    assert "first_window" not in _flags(mon, X, _status(300))[0]  # rows 200-300: the look has spoken
    assert "first_window" not in _flags(mon, X, None)[0]  # one window, no stream: no first window
    _domain_p(mon, 0.07, monkeypatch)
    assert "first_window" not in _flags(mon, X, _status(100))[0]  # above the level
    # off: the same first window is not flagged
    _, off = _profile(digits, tmp_path / "off", first_window_alpha=None)
    mon = Monitor(off, model, seed=0, effects=False)
    _domain_p(mon, 0.02, monkeypatch)
    assert off.info.first_window_alpha is None
    assert "first_window" not in _flags(mon, X, _status(100))[0]


def test_stream_evidence_per_deployment_withholds_only_on_the_alarm(digits, tmp_path, monkeypatch):
    bundle, model, _ = digits
    X = bundle.val.X[:100]
    # budget (rule W17): the stream test records evidence_at at its budget, and the monitor trusts it
    for value, on_evidence in [("over_runs", True), ("per_deployment", False), ("budget", True)]:
        _, profile = _profile(digits, tmp_path / value, stream_evidence=value)
        mon = Monitor(profile, model, seed=0, effects=False)
        _domain_p(mon, 0.5, monkeypatch)
        flags, reason = _flags(mon, X, _status(400, evidence_at=200))
        assert ("stream" in flags) is on_evidence
        assert ("since row 200" in reason) is on_evidence
        flags, reason = _flags(mon, X, _status(600, evidence_at=200, alarm_at=600))
        assert "stream" in flags and f"since row {200 if on_evidence else 600}" in reason


def test_flag_levels_reach_profile_summary_guarantee_and_rebuild(digits, tmp_path):
    # the defaults: the first window at 0.05 (rule W16, session 16), the stream evidence at a budget of 0.25
    # (rule W17, session 17)
    stage, profile = _profile(digits, tmp_path)
    info = profile.info
    assert (info.first_window_alpha, info.stream_evidence, info.stream_evidence_delta) == (
        0.05,
        "budget",
        0.25,
    )
    assert "first window (its first 200 rows since the reference" in info.guarantee
    assert "flagged at domain p <= 0.05" in info.guarantee
    assert "withholds the label-free estimate from the level 0.0125 (0.05*0.25" in info.guarantee
    assert "with probability >= 0.75 over the draw of the held-out rows" in info.guarantee
    ref = stage.summarize(type(stage).Outputs(reference=profile))["reference"]
    assert (ref["first_window_alpha"], ref["stream_evidence"], ref["stream_evidence_delta"]) == (
        0.05,
        "budget",
        0.25,
    )
    again = profile_config(info)
    assert (again.first_window_alpha, again.stream_evidence, again.stream_evidence_delta) == (
        0.05,
        "budget",
        0.25,
    )
    # a profile saved before the settings existed loads with the rule it was built with
    profile.save(tmp_path / "old")
    meta = tmp_path / "old" / "profile.json"
    raw = json.loads(meta.read_text())
    raw.pop("first_window_alpha")
    raw.pop("stream_evidence")
    raw.pop("stream_evidence_delta")
    meta.write_text(json.dumps(raw))
    old = ReferenceProfile.load(tmp_path / "old").info
    assert (old.first_window_alpha, old.stream_evidence, old.stream_evidence_delta) == (
        None,
        "over_runs",
        None,
    )
    # and the other settings stay available from YAML / Python
    _, before = _profile(digits, tmp_path / "before", first_window_alpha=None, stream_evidence="over_runs")
    assert (before.info.first_window_alpha, before.info.stream_evidence) == (None, "over_runs")
    assert before.info.stream_evidence_delta is None  # recorded only with the budget
    assert (
        "from the level 0.05 over runs" in before.info.guarantee
        and "first window" not in before.info.guarantee
    )


def test_flag_levels_bad_input_names_the_setting():
    with pytest.raises(ConfigError, match="first_window_alpha"):
        BuildMonitorProfile(first_window_alpha=0.7)
    with pytest.raises(ConfigError, match="stream_evidence"):
        BuildMonitorProfile(stream_evidence="sometimes")
    with pytest.raises(ConfigError, match="stream_evidence_delta"):
        BuildMonitorProfile(stream_evidence_delta=1.5)
    with pytest.raises(ConfigError, match=r"stream_evidence_delta: None with stream_evidence 'budget'"):
        BuildMonitorProfile(stream_evidence_delta=None)
    BuildMonitorProfile(stream_evidence="per_deployment", stream_evidence_delta=None)  # unused there: fine
