"""Issue 19, rule W20: the low-positive flag (``low_positive_flag``): a window with more barely-positive calls
than the held-out rows is flagged; its settings (YAML / Python), what the profile, summary and guarantee say,
and bad input."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import ConfigError
from closedloop.core.stage import RunContext
from closedloop.monitoring import Monitor
from closedloop.monitoring.low_positive import LowPositiveFlag
from closedloop.monitoring.profile import ReferenceProfile
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.monitor.reference import profile_config
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import table_setup  # noqa: E402

FAST = {"calibration_windows": 40, "window_sizes": [50, 100], "permutations": 40}
FLAG = {"quantile": 0.1, "test": "fisher", "level": 0.002}


@pytest.fixture(scope="module")
def table():
    bundle, model = table_setup()
    return bundle, model, build_task_spec(DefineTaskConfig(), bundle)


def _profile(table, tmp: Path, **kw) -> tuple[BuildMonitorProfile, ReferenceProfile]:
    bundle, model, task = table
    stage = BuildMonitorProfile(**FAST, **kw)
    out = stage.execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp, seed=0))
    return stage, out.reference


def _barely_positive(profile: ReferenceProfile, win, share: float):
    """The window with ``share`` of its rows moved just over the threshold (under the reference's cut)."""
    thr = profile.info.threshold
    pos = profile.domain.proba[:, 1]
    low = thr + 0.25 * (np.quantile(pos[pos >= thr], 0.1) - thr)
    p = win.proba.copy()
    rows = np.arange(int(share * len(p)))
    p[rows] = [1 - low, low]
    return dataclasses.replace(win, proba=p)


def test_flag_marks_a_window_with_more_barely_positive_calls(table, tmp_path):
    bundle, model, _ = table
    _, profile = _profile(table, tmp_path / "on", low_positive_flag=FLAG)
    mon = Monitor(profile, model, seed=0, effects=False)
    win = mon.sample(mon.prepare(bundle.train.X.iloc[:150]))
    plain = mon.evaluate(win, seed=0)
    assert "low_positive" not in plain["estimate_flags"]
    res = mon.evaluate(_barely_positive(profile, win, 0.4), seed=0)
    assert "low_positive" in res["estimate_flags"] and not res["estimate_reliable"]
    assert "more barely-positive calls than the reference" in res["estimate_reason"]
    assert "fisher p=" in res["estimate_reason"] and "<= 0.002" in res["estimate_reason"]
    # off (the default): the same window is not flagged by it
    _, off = _profile(table, tmp_path / "off")
    mon_off = Monitor(off, model, seed=0, effects=False)
    assert "low_positive" not in mon_off.evaluate(_barely_positive(off, win, 0.4), seed=0)["estimate_flags"]


def test_flag_reaches_profile_summary_guarantee_and_rebuild(table, tmp_path):
    stage, profile = _profile(table, tmp_path / "on", low_positive_flag=FLAG)
    info = profile.info
    assert info.low_positive_flag == LowPositiveFlag(**FLAG)
    assert "more barely-positive calls than the held-out rows" in info.guarantee
    assert "one-sided fisher p <= 0.002" in info.guarantee
    ref = stage.summarize(type(stage).Outputs(reference=profile))["reference"]
    assert ref["low_positive_flag"] == FLAG
    assert profile_config(info).low_positive_flag == LowPositiveFlag(**FLAG)
    profile.save(tmp_path / "saved")
    assert ReferenceProfile.load(tmp_path / "saved").info.low_positive_flag == LowPositiveFlag(**FLAG)
    # a profile saved before the setting existed loads with the flag off
    meta = tmp_path / "saved" / "profile.json"
    raw = json.loads(meta.read_text())
    raw.pop("low_positive_flag")
    meta.write_text(json.dumps(raw))
    assert ReferenceProfile.load(tmp_path / "saved").info.low_positive_flag is None
    # off by default: nothing in the guarantee, null in the summary
    stage, off = _profile(table, tmp_path / "off")
    assert off.info.low_positive_flag is None and "barely-positive" not in off.info.guarantee
    assert stage.summarize(type(stage).Outputs(reference=off))["reference"]["low_positive_flag"] is None


def test_flag_bad_input_names_the_setting():
    for bad in (
        {"level": 0.7},
        {"quantile": 1.5},
        {"test": "t"},
        {"levle": 0.01},
        "often",
    ):
        with pytest.raises(ConfigError, match="low_positive_flag"):
            BuildMonitorProfile(low_positive_flag=bad)
