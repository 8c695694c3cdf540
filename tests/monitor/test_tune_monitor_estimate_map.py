"""Rule E18's scoring (benchmarks/tune_monitor_estimate_map.py): the shipped candidate is the monitor's own
estimate, the Platt map's delta-method s.d. is its spread over draws of the held-out rows, and the precision
flag follows the estimate's own noise."""

from __future__ import annotations

import numpy as np
from tests.audit.test_bench_audit_common import load_bench

from closedloop.monitoring.estimate import estimate, realized
from closedloop.monitoring.recalibrate import fit_estimate_calibration

E18 = load_bench("tune_monitor_estimate_map")
THRESHOLD = 0.3


def population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model whose probabilities are miscalibrated (too confident, shifted): the true log-odds is ``z``, the
    model says ``1.6 z + 0.4``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(1.2, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    p1 = 1 / (1 + np.exp(-(1.6 * z + 0.4)))
    return np.stack([1 - p1, p1], axis=1), y


def test_heldout_platt_candidate_is_the_monitor_estimate() -> None:
    proba, y = population(700, 0)
    pool, win = np.arange(262), np.arange(262, 462)
    row = E18.Deployment(proba[pool], y[pool], THRESHOLD).window(proba[win], y[win])
    cal = fit_estimate_calibration("heldout_platt", proba[pool], y[pool], THRESHOLD)
    assert cal is not None
    est = estimate(cal.proba(proba[win]), "binary", cal.threshold(THRESHOLD), ["auc", "acc"])
    real = realized(["auc", "acc"], y[win], proba[win], "binary", THRESHOLD)
    for m in ("auc", "acc"):
        assert abs(row["heldout_platt"][m] - abs(est[m]["value"] - real[m])) < 1e-9
    # the uncalibrated model is off by more than the map: the scoring sees the difference
    raw = estimate(proba[win], "binary", THRESHOLD, ["acc"])["acc"]["value"]
    assert abs(raw - real["acc"]) > row["heldout_platt"]["acc"]


def test_delta_method_sd_is_the_spread_over_held_out_draws() -> None:
    proba, y = population(20_000, 1)
    win = np.arange(200)
    rng = np.random.default_rng(2)
    estimates, sds = [], []
    for _ in range(150):
        pool = rng.choice(np.arange(200, len(y)), 262, replace=False)
        row = E18.Deployment(proba[pool], y[pool], THRESHOLD).window(proba[win], y[win])
        estimates.append(row["acc_signed"])  # the window is fixed: only the map moves
        sds.append(row["sd_map"])
    spread = float(np.std(estimates, ddof=1))
    assert 0.7 < float(np.mean(sds)) / spread < 1.4, (np.mean(sds), spread)


def test_precision_flag_follows_the_estimates_own_noise() -> None:
    proba, y = population(12_000, 3)
    few = E18.Deployment(proba[:262], y[:262], THRESHOLD)
    many = E18.Deployment(proba[:6000], y[:6000], THRESHOLD)
    small = few.window(proba[6000:6040], y[6000:6040])  # 40 rows: the realized accuracy's own s.d. is large
    large = many.window(proba[6040:], y[6040:])  # a map from 6,000 rows, a window of 5,960
    assert small["sd_window"] > large["sd_window"] * 5 and small["sd_map"] > large["sd_map"] * 3
    assert small["precision_95"]["flag"] and small["precision_90"]["flag"]
    assert not large["precision_90"]["flag"]
    total = np.hypot(large["sd_window"], large["sd_map"])
    assert large["precision_95"]["flag"] == bool(1.96 * total > E18.TOLERANCE)
