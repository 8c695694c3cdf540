"""Rule E19's scoring (benchmarks/tune_monitor_val_map.py): the pooled candidates are the monitor's own Platt fit
on more rows, their window errors are the monitor's estimate with that map, and rows the model trained on (more
accurate than its confidence says) pull the pooled estimate of accuracy up, which the scoring sees."""

from __future__ import annotations

import numpy as np
from tests.audit.test_bench_audit_common import load_bench

from closedloop.monitoring.estimate import estimate, realized
from closedloop.monitoring.recalibrate import EstimateCalibration, PlattMap, fit_platt

E19 = load_bench("tune_monitor_val_map")
THRESHOLD = 0.3


def population(n: int, seed: int, easier: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A miscalibrated model (true log-odds ``z``, the model says ``1.6 z + 0.4``); ``easier`` > 0: rows it was
    fitted on, whose labels follow ``(1 + easier) z`` (more often right than its confidence says)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(1.2, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1 + easier) * z))).astype(int)
    p1 = 1 / (1 + np.exp(-(1.6 * z + 0.4)))
    return np.stack([1 - p1, p1], axis=1), y


def test_pooled_fit_is_the_monitors_platt_on_the_rows_it_weights() -> None:
    pool, y_pool = population(262, 0)
    val, y_val = population(262, 1, easier=1.0)
    zero = E19.fit_pooled(pool, y_pool, val, y_val, 0.0)
    shipped = fit_platt(pool, y_pool)
    assert shipped is not None
    assert np.allclose(zero, (shipped.slope, shipped.intercept), atol=1e-3)
    full = fit_platt(np.concatenate([pool, val]), np.concatenate([y_pool, y_val]))
    assert full is not None
    one = E19.fit_pooled(pool, y_pool, val, y_val, 1.0)
    assert np.allclose(one, (full.slope, full.intercept), atol=1e-6)
    half = E19.fit_pooled(pool, y_pool, val, y_val, 0.5)
    assert zero[0] < half[0] < one[0]  # the easier rows steepen the map; half weight steepens it less


def test_candidate_error_is_the_estimate_with_its_map() -> None:
    pool, y_pool = population(262, 2)
    val, y_val = population(262, 3, easier=1.0)
    win, y_win = population(200, 4)
    dep = E19.ValDeployment(pool, y_pool, THRESHOLD, val, y_val)
    assert set(dep.maps) == set(E19.CANDIDATES)
    row = dep.window(win, y_win)
    real = realized(["auc", "acc"], y_win, win, "binary", THRESHOLD)
    for name in E19.CANDIDATES:
        cal = EstimateCalibration(name, PlattMap(*dep.maps[name]))
        est = estimate(cal.proba(win), "binary", cal.threshold(THRESHOLD), ["auc", "acc"])
        for m in ("auc", "acc"):
            assert abs(row[name][m] - abs(est[m]["value"] - real[m])) < 1e-9


def test_rows_the_model_trained_on_pull_the_accuracy_estimate_up() -> None:
    unseen, y_unseen = population(40_000, 5)
    rng = np.random.default_rng(6)
    shipped, pooled = [], []
    for _ in range(40):
        pool = rng.choice(20_000, 262, replace=False)
        val, y_val = population(262, int(rng.integers(1 << 30)), easier=1.5)
        dep = E19.ValDeployment(unseen[pool], y_unseen[pool], THRESHOLD, val, y_val)
        win = slice(20_000, 40_000)  # a large window: the map's own error, not the window's noise
        p, yw = unseen[win], y_unseen[win]
        acc = realized(["acc"], yw, p, "binary", THRESHOLD)["acc"]
        pred = p[:, 1] >= THRESHOLD
        for name, out in (("heldout_platt", shipped), ("heldout_val_platt", pooled)):
            q = E19.e18.positive(dep.maps[name], p[:, 1])
            out.append(float(np.mean(np.where(pred, q, 1 - q))) - acc)
    se = float(np.std(shipped, ddof=1) / np.sqrt(len(shipped)))
    assert abs(np.mean(shipped)) < 3 * se  # the shipped map is unbiased on unseen rows (within its noise)
    diff = np.asarray(pooled) - np.asarray(shipped)  # the same held-out rows and window: paired
    assert np.mean(diff) > max(0.004, 3 * float(np.std(diff, ddof=1) / np.sqrt(len(diff))))  # biased upward
    assert np.std(pooled) < np.std(shipped)  # and twice the rows make it less noisy
