"""The monitor's class-mix estimate: production's class shares from the model's decisions alone (no
labels), with intervals, the accuracy at that mix, and a line in ``closedloop monitor``'s output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from closedloop.cli import main
from closedloop.monitoring.class_mix import estimate_class_mix

from .test_adapt_multiclass import _champion, _rows


def test_the_estimate_recovers_a_mix_and_says_when_it_cannot() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 4000)
    pred = np.where(rng.random(4000) < 0.75, y, rng.integers(0, 3, 4000))
    y2 = rng.choice(3, 3000, p=[0.1, 0.3, 0.6])
    pred2 = np.where(rng.random(3000) < 0.75, y2, rng.integers(0, 3, 3000))
    m = estimate_class_mix(np.eye(3)[pred], y, np.eye(3)[pred2], "multiclass", None)
    assert m is not None
    assert np.allclose(m.estimated, [0.1, 0.3, 0.6], atol=0.04)
    assert all(lo <= t <= hi for lo, t, hi in zip(m.low, [0.1, 0.3, 0.6], m.high, strict=True))
    recall = [np.mean(pred[y == c] == c) for c in range(3)]
    assert m.acc_at_mix == pytest.approx(float(np.dot(m.estimated, recall)))
    assert m.acc_low <= np.mean(pred2 == y2) <= m.acc_high
    same = estimate_class_mix(np.eye(3)[pred], y, np.eye(3)[pred[:1000]], "multiclass", None)
    assert same is not None  # the held-out rows' own decisions: their own mix
    assert all(lo <= r <= hi for lo, r, hi in zip(same.low, same.reference, same.high, strict=True))
    blind = np.zeros(4000, int)  # a model that always says class 0 cannot tell a mix
    assert estimate_class_mix(np.eye(3)[blind], y, np.eye(3)[pred2], "multiclass", None) is None
    assert estimate_class_mix(np.eye(3)[pred], None, np.eye(3)[pred2], "multiclass", None) is None
    assert estimate_class_mix(np.eye(3)[pred], y, np.eye(3)[pred2], "regression", None) is None
    p_bin = np.stack([1 - (pred > 0), pred > 0], 1).astype(float)  # binary: decisions at the threshold
    assert estimate_class_mix(p_bin, (y > 0).astype(int), p_bin[:500], "binary", 0.5) is not None


def test_closedloop_monitor_estimates_production_class_mix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _champion(
        tmp_path,
        {},
        train={"preset": "quick", "family": "lgbm", "n_bootstrap": 100},
        after=({"kind": "monitor", "params": {"calibration_windows": 100, "permutations": 50}},),
        sizes=(700, 600, 200),
    )
    prod = _rows(600, [0.8, 0.1, 0.1], 3)
    prod.drop(columns=["label"]).to_csv(tmp_path / "prod.csv", index=False)
    capsys.readouterr()
    out = tmp_path / "mon.json"
    assert main(["monitor", str(run), str(tmp_path / "prod.csv"), "--window", "300", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    windows = json.loads(out.read_text())["windows"]
    for w in windows:
        mix = w["class_mix"]
        assert mix["low"][0] <= 0.8 <= mix["high"][0] + 0.05 and mix["estimated"][0] > 0.6
        assert abs(mix["reference"][0] - 1 / 3) < 0.1  # the held-out rows' own mix
    assert "class mix estimated from decisions (if only the mix changed): 0" in printed
    assert all(any(e.startswith("class mix") for e in w["evidence"]) for w in windows)
