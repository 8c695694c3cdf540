"""Issue 19: per-deployment alarm thresholds, the stream test beside the per-window alerts, bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import DataError, RunDirError
from closedloop.core.stage import RunContext
from closedloop.monitoring import Monitor, ReferenceProfile
from closedloop.monitoring.stream import StreamTest
from closedloop.stages.monitor import BuildMonitorProfile
from closedloop.stages.task import DefineTaskConfig, build_task_spec

sys.path.insert(0, str(Path(__file__).parent))
from monitor_helpers import digits_setup  # noqa: E402

from run_fixtures import save_artifact  # noqa: E402

FAST = {"calibration_windows": 40, "window_sizes": [50, 100], "permutations": 40}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    bundle, model = digits_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    tmp = tmp_path_factory.mktemp("guarantee")
    stage = BuildMonitorProfile(**FAST)
    out = stage.execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp, seed=0))
    run = tmp / "run"
    save_artifact(run, "05_train", "model", model)
    save_artifact(run, "07_monitor", "reference", out.reference)
    return bundle, model, task, stage, out.reference, run


def test_alarm_threshold_is_the_per_deployment_level(digits):
    *_, stage, profile, run = digits
    info = profile.info
    assert info.delta == 0.1 and info.stream_alpha == 0.05
    for thr in info.thresholds.values():
        # alpha*delta quantile of the same null draws: never looser than the marginal alpha quantile
        assert 0 < thr["alarm"] <= thr["alarm_marginal"] <= thr["warn"]
    assert "probability >= 0.9" in info.guarantee and "exchangeable" in info.guarantee
    assert "Markov" in info.guarantee
    assert profile.guarantee_for(100).startswith("false-alarm rate <= 5%")
    assert profile.guarantee_for(1000).startswith("extrapolated")
    # the stream test ranks production against every held-out row, saved with the profile
    loaded = ReferenceProfile.load(run / "stages/07_monitor/artifacts/reference")
    assert set(loaded.stream) == {"confidence"}  # digits: multiclass
    assert len(loaded.stream["confidence"]) == info.reference_size + info.calibration_size
    summary = stage.summarize(type(stage).Outputs(reference=profile))["reference"]
    assert summary["delta"] == 0.1 and summary["guarantee"] == info.guarantee


def test_stream_result_beside_the_windows_in_python_json_and_cli(digits, tmp_path, capsys):
    from closedloop.stages.monitor.cli import main

    bundle, *_, run = digits
    X = np.concatenate([bundle.val.X[:100], (bundle.val.X[100:300] * 0.5).astype(np.uint8)])
    res = Monitor.load(run).check_stream(X, window=100)
    assert all("stream" in w for w in res.windows)
    assert res.windows[0]["stream"]["n"] == 100 and res.windows[-1]["stream"]["n"] == 300
    # a dark stream: the evidence accumulates and the stream alarm is raised, after the first window
    assert res.stream["alarm"] and res.stream["alarm_at"] > 100
    assert res.stream["e_value"] >= res.stream["threshold"] == pytest.approx(200.0)  # 1/(alpha*delta)
    assert res.summary()["stream_alarm"] is True
    assert res.windows[0]["guarantee"].startswith("false-alarm rate <= 5%")
    np.savez(tmp_path / "prod.npz", images=X[..., 0])
    out = tmp_path / "res.json"
    assert main(["monitor", str(run), str(tmp_path / "prod.npz"), "--window", "100", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # looks at row 200 and at the end of the file, row 300
    assert "stream test over all 300 row(s) against the fixed reference, 2 look(s), last p=" in text
    assert ": ALARM (raised at row 200)" in text
    assert "(alarm at 200; false-alarm rate <= 0.05 for this reference with probability >= 0.9" in text
    assert "guarantee: For this deployment's reference" in text
    saved = json.loads(out.read_text())
    assert saved["stream"]["alarm"] is True and saved["summary"]["stream_alarm"] is True


def test_stream_test_false_alarms_and_power_on_synthetic_scores():
    """Ville's inequality over many looks: in-distribution streams rarely alarm, a shifted one does."""
    rng = np.random.default_rng(0)
    alarms = 0
    for run in range(60):
        ref = rng.normal(size=150)
        st = StreamTest({"score": ref}, alpha=0.05, seed=run)
        for _ in range(5):  # read after every chunk: the rate holds however often it is read
            st.update({"score": rng.normal(size=60)})
        alarms += st.status().alarm
    assert alarms <= 8  # 5% of 60 is 3; a binomial 3 + 5 is beyond 0.99
    detected = 0
    for run in range(20):
        st = StreamTest({"score": rng.normal(size=150)}, alpha=0.05, seed=run)
        st.update({"score": rng.normal(0.6, 1, size=300)})
        detected += st.status().alarm
    assert detected >= 17
    with pytest.raises(ValueError, match="scores \\['score'\\] are missing"):
        StreamTest({"score": np.zeros(5)}).update({"other": np.zeros(3)})


def test_reference_too_small_for_a_required_guarantee(digits):
    bundle, model, task, *_ = digits
    small = BuildMonitorProfile(**{**FAST, "window_sizes": [400], "require_guarantee": True})
    with pytest.raises(DataError) as err:
        small.execute({"data": bundle, "task": task, "model": model}, RunContext("m", Path("/tmp"), seed=0))
    msg = str(err.value)
    assert "400 held-out samples are too few" in msg and "needs at least 450" in msg
    assert "marginal" in msg and "require_guarantee: false" in msg
    # without require_guarantee it degrades, and says so
    ok = BuildMonitorProfile(**{**FAST, "window_sizes": [500]})
    out = ok.execute({"data": bundle, "task": task, "model": model}, RunContext("m2", Path("/tmp"), seed=0))
    assert out.reference.info.guarantee.startswith("No calibrated guarantee: 400 held-out samples")


def test_a_format_2_profile_asks_for_a_rebuild(digits, tmp_path):
    *_, run = digits
    dst = tmp_path / "old"
    shutil.copytree(run / "stages/07_monitor/artifacts/reference", dst)
    meta = json.loads((dst / "profile.json").read_text())
    meta["format_version"] = 2
    (dst / "profile.json").write_text(json.dumps(meta))
    with pytest.raises(
        RunDirError, match=r"format 2 is not supported \(expected 3: per-deployment .*rebuild it"
    ):
        ReferenceProfile.load(dst)
