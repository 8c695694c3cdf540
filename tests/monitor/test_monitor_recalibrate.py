"""The held-out Platt map behind the estimate's recalibration (closedloop.monitoring.recalibrate)."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop.monitoring.estimate import estimate
from closedloop.monitoring.recalibrate import fit_platt


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True probabilities, labels drawn from them, and a model's over-confident, biased probabilities."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    p_true = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < p_true).astype(int)
    p_model = 1 / (1 + np.exp(-(2.0 * z + 1.0)))
    return np.stack([1 - p_true, p_true], 1), y, np.stack([1 - p_model, p_model], 1)


def test_platt_on_heldout_rows_corrects_a_biased_confidence_and_keeps_the_decisions() -> None:
    _, y_ref, p_ref = _overconfident(3000, 0)
    p_true, y_win, p_win = _overconfident(400, 1)
    m = fit_platt(p_ref, y_ref)
    assert m is not None
    assert abs(m.slope - 0.5) < 0.1 and abs(m.intercept + 0.5) < 0.2  # the inverse of the model's distortion
    thr = 0.3
    before = p_win[:, 1] >= thr
    after = m.proba(p_win)[:, 1] >= m.threshold(thr)
    assert np.array_equal(before, after)  # the same decisions: the estimate is of the deployed model
    acc_real = float(np.mean(before == y_win))
    acc_raw = estimate(p_win, "binary", thr, ["acc"])["acc"]["value"]
    acc_cal = estimate(m.proba(p_win), "binary", m.threshold(thr), ["acc"])["acc"]["value"]
    # the over-confident model over-states its accuracy; the recalibrated estimate does not
    assert acc_raw - acc_real > 0.04
    assert abs(acc_cal - acc_real) < abs(acc_raw - acc_real) / 2


def test_platt_is_not_fitted_on_one_class() -> None:
    p = np.tile([[0.8, 0.2]], (50, 1))
    assert fit_platt(p, np.zeros(50, int)) is None


def test_estimate_calibration_heldout_platt_reaches_the_profile_summary_and_each_window(tmp_path):
    import sys
    from pathlib import Path

    from closedloop.core.errors import ConfigError
    from closedloop.core.stage import RunContext
    from closedloop.monitoring import Monitor
    from closedloop.stages.monitor import BuildMonitorProfile
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    sys.path.insert(0, str(Path(__file__).parent))
    from monitor_helpers import table_setup

    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    fast = {"calibration_windows": 30, "window_sizes": [50, 100], "permutations": 60}
    stage = BuildMonitorProfile(**fast, estimate_calibration="heldout_platt")
    out = stage.execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", Path("."), seed=0)
    )
    summary = stage.summarize(out)["reference"]
    assert (
        summary["estimate_calibration"] == "heldout_platt"
        and "recalibrated by Platt scaling" in summary["guarantee"]
    )
    out.reference.save(tmp_path)
    prof = type(out.reference).load(tmp_path)
    X, y = bundle.splits["test"].X, bundle.splits["test"].y
    cal = Monitor(prof, model).check(X, labels=y)
    prof.info.estimate_calibration = "none"
    raw = Monitor(prof, model).check(X, labels=y)
    m = cal["estimate_calibration"]
    assert m["method"] == "heldout_platt" and m["slope"] > 0 and raw["estimate_calibration"] is None
    point = cal["estimated"] or cal["estimate_withheld"]
    raw_point = raw["estimated"] or raw["estimate_withheld"]
    assert point["acc"] != raw_point["acc"]  # the estimate moved ...
    assert cal["realized"] == raw["realized"]  # ... the model's decisions did not
    # the shipped default (chosen on development deployments, docs/monitor.md); profiles built before: none
    assert BuildMonitorProfile().config.estimate_calibration == "heldout_platt"
    with pytest.raises(ConfigError, match="estimate_calibration"):
        BuildMonitorProfile(estimate_calibration="isotonic")
