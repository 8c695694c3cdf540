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


def test_heldout_bias_moves_the_accuracy_estimate_by_its_own_error_on_the_heldout_rows() -> None:
    from closedloop.monitoring.recalibrate import fit_estimate_calibration

    # an under-confident model: its confidence sits below its accuracy, in the held-out rows and the window
    rng = np.random.default_rng(3)
    z = rng.normal(0.5, 2.5, 6000)
    y = (rng.random(6000) < 1 / (1 + np.exp(-z))).astype(int)
    p1 = 1 / (1 + np.exp(-0.6 * z))
    proba = np.stack([1 - p1, p1], 1)
    ref, win = slice(0, 3000), slice(3000, None)
    thr = 0.5
    acc_win = float(np.mean((p1[win] >= thr) == y[win]))
    raw = estimate(proba[win], "binary", thr, ["acc", "auc"])
    for method in ("heldout_bias", "heldout_platt_bias"):
        cal = fit_estimate_calibration(method, proba[ref], y[ref], thr)
        assert cal is not None and cal.method == method
        conf = estimate(cal.proba(proba[ref]), "binary", cal.threshold(thr), ["acc"])["acc"]["value"]
        assert cal.acc_bias == pytest.approx(conf - np.mean((p1[ref] >= thr) == y[ref]))
        est = cal.correct(estimate(cal.proba(proba[win]), "binary", cal.threshold(thr), ["acc", "auc"]))
        plain = estimate(cal.proba(proba[win]), "binary", cal.threshold(thr), ["acc", "auc"])
        assert est["acc"]["value"] == pytest.approx(plain["acc"]["value"] - cal.acc_bias)
        assert est["acc"]["low"] == pytest.approx(plain["acc"]["low"] - cal.acc_bias)
        assert est["auc"] == plain["auc"]  # AUC is not corrected
        # the correction closes most of the gap CBPE leaves open (what is left: two samples' noise)
        assert abs(est["acc"]["value"] - acc_win) < (acc_win - raw["acc"]["value"]) / 3
    assert raw["acc"]["value"] < acc_win - 0.05
    assert fit_estimate_calibration("heldout_bias", proba[ref], y[ref], thr).platt is None
    assert fit_estimate_calibration("heldout_platt", proba[ref], y[ref], thr).acc_bias == 0.0
    assert fit_estimate_calibration("none", proba[ref], y[ref], thr) is None
    with pytest.raises(ValueError, match="isotonic"):
        fit_estimate_calibration("isotonic", proba[ref], y[ref], thr)


@pytest.mark.parametrize("method", ["heldout_bias", "heldout_platt_bias"])
def test_a_heldout_bias_calibration_reaches_the_summary_the_guarantee_and_each_window(method):
    import sys
    from pathlib import Path

    from closedloop.core.stage import RunContext
    from closedloop.monitoring import Monitor
    from closedloop.monitoring.recalibrate import fit_estimate_calibration
    from closedloop.stages.monitor import BuildMonitorProfile
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    sys.path.insert(0, str(Path(__file__).parent))
    from monitor_helpers import table_setup

    bundle, model = table_setup()
    task = build_task_spec(DefineTaskConfig(), bundle)
    fast = {"calibration_windows": 30, "window_sizes": [50, 100], "permutations": 60}
    stage = BuildMonitorProfile(**fast, estimate_calibration=method)
    out = stage.execute(
        {"data": bundle, "task": task, "model": model}, RunContext("monitor", Path("."), seed=0)
    )
    summary = stage.summarize(out)["reference"]
    assert summary["estimate_calibration"] == method and "corrected by a constant" in summary["guarantee"]
    prof = out.reference
    X, y = bundle.splits["test"].X, bundle.splits["test"].y
    res = Monitor(prof, model).check(X, labels=y)
    ref = prof.domain
    cal = fit_estimate_calibration(method, ref.proba, ref.labels, prof.info.threshold)
    m = res["estimate_calibration"]
    assert m["method"] == method and m["acc_bias"] == pytest.approx(cal.acc_bias) and m["acc_bias"] != 0
    # the same estimate without the constant: the accuracy moves by it, AUC and the decisions do not
    prof.info.estimate_calibration = "heldout_platt" if method == "heldout_platt_bias" else "none"
    base = Monitor(prof, model).check(X, labels=y)
    point = res["estimated"] or res["estimate_withheld"]
    base_point = base["estimated"] or base["estimate_withheld"]
    assert point["acc"] == pytest.approx(float(np.clip(base_point["acc"] - m["acc_bias"], 0, 1)))
    assert point["auc"] == base_point["auc"] and res["realized"] == base["realized"]
